"""The on-disk cache of frozen text embeddings: keys, hits, misses and damaged files."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from recforge.models.text_cache import EmbeddingCache, cached_encode, embedding_key


class CountingEncoder:
    """Stand-in encoder: text -> [len(text), number of spaces, 1]; counts how many texts it encoded."""

    name = "counting"

    def __init__(self, identity: dict | None = None) -> None:
        self._identity = identity or {"model": "counting", "pooling": "mean"}
        self.encoded: list[str] = []

    def identity(self) -> dict:
        return self._identity

    def encode(self, texts, batch_size=None, progress=True) -> torch.Tensor:
        self.encoded += list(texts)
        return torch.tensor([[len(t), t.count(" "), 1.0] for t in texts])


TEXTS = ["red novel", "a quiet album here", ""]
EXPECTED = torch.tensor([[9.0, 1.0, 1.0], [18.0, 3.0, 1.0], [0.0, 0.0, 1.0]])


def test_key_depends_on_identity_texts_order_and_boundaries():
    base = embedding_key({"model": "m"}, ["ab", "c"])
    assert len(base) == 64 and base == embedding_key({"model": "m"}, ["ab", "c"])
    assert base != embedding_key({"model": "m2"}, ["ab", "c"])  # another model
    assert base != embedding_key({"model": "m", "max_length": 64}, ["ab", "c"])  # other settings
    assert base != embedding_key({"model": "m"}, ["c", "ab"])  # order
    assert base != embedding_key({"model": "m"}, ["a", "bc"])  # same characters, other boundaries
    assert base != embedding_key({"model": "m"}, ["ab", "c", ""])  # one more (empty) text


def test_miss_then_hit(tmp_path):
    cache = EmbeddingCache(tmp_path / "emb")
    encoder = CountingEncoder()
    first = cached_encode(encoder, TEXTS, cache)
    torch.testing.assert_close(first, EXPECTED)
    assert encoder.encoded == TEXTS  # miss: encoded once
    key = embedding_key(encoder.identity(), TEXTS)
    array_path, meta_path = cache.paths(key)
    meta = json.loads(meta_path.read_text())
    assert meta["key"] == key and meta["num_texts"] == 3 and meta["dim"] == 3 and meta["model"] == "counting"
    assert np.load(array_path).dtype == np.float32
    assert not list(array_path.parent.glob("*.tmp"))  # atomic writes leave no temp files

    second = cached_encode(encoder, TEXTS, cache)
    torch.testing.assert_close(second, EXPECTED)
    assert encoder.encoded == TEXTS  # hit: nothing encoded again

    cached_encode(encoder, TEXTS[:2], cache)  # other texts: a miss
    assert encoder.encoded == TEXTS + TEXTS[:2]
    assert len(list((tmp_path / "emb").glob("*.npy"))) == 2


def test_without_cache_always_encodes():
    encoder = CountingEncoder()
    cached_encode(encoder, TEXTS, None)
    cached_encode(encoder, TEXTS, None)
    assert encoder.encoded == TEXTS * 2


@pytest.mark.parametrize("damage", ["garbage_array", "truncated_array", "wrong_shape", "bad_meta", "no_meta", "nan"])
def test_damaged_entry_is_rebuilt_with_a_warning(tmp_path, damage, caplog):
    cache = EmbeddingCache(tmp_path)
    encoder = CountingEncoder()
    cached_encode(encoder, TEXTS, cache)
    array_path, meta_path = cache.paths(embedding_key(encoder.identity(), TEXTS))
    if damage == "garbage_array":
        array_path.write_bytes(b"not a numpy file")
    elif damage == "truncated_array":
        array_path.write_bytes(array_path.read_bytes()[:-8])
    elif damage == "wrong_shape":
        np.save(array_path, np.zeros((2, 3), dtype=np.float32))
    elif damage == "bad_meta":
        meta_path.write_text("{")
    elif damage == "no_meta":
        meta_path.unlink()
    else:
        np.save(array_path, np.full((3, 3), np.nan, dtype=np.float32))
    with caplog.at_level(logging.WARNING, logger="recforge.models.text_cache"):
        rebuilt = cached_encode(encoder, TEXTS, cache)
    torch.testing.assert_close(rebuilt, EXPECTED)
    assert encoder.encoded == TEXTS * 2  # encoded again
    assert any("is damaged" in r.getMessage() and "rebuilding" in r.getMessage() for r in caplog.records)
    # the rebuilt entry is whole again: a hit, no warning
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="recforge.models.text_cache"):
        torch.testing.assert_close(cached_encode(encoder, TEXTS, cache), EXPECTED)
    assert encoder.encoded == TEXTS * 2 and not caplog.records


def test_entry_under_another_key_is_not_used(tmp_path):
    # a file whose meta names another key (a 32-character prefix collision) is treated as damaged
    cache = EmbeddingCache(tmp_path)
    encoder = CountingEncoder()
    key = embedding_key(encoder.identity(), TEXTS)
    array_path, meta_path = cache.paths(key)
    cache.save(key, EXPECTED, {"model": "counting"})
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "key": "0" * 64}))
    assert cache.load(key, 3) is None
