"""Frozen item text embeddings cached on disk, one pair of files per (model, texts):

``<directory>/<key>.npy`` (N, D) float32 and ``<key>.json`` (what was encoded: model, count, size, key), where
``key`` is the sha256 of the encoder's identity (model files' hash or hub name + revision, pooling, max_length)
and of every text in order. Both files are written atomically (temp file + rename); a damaged or inconsistent
pair is reported with a warning and rebuilt.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

log = logging.getLogger(__name__)
CACHE_VERSION = 1


class Encodes(Protocol):
    """What the cache needs of an encoder (TextEncoder has it)."""

    name: str

    def identity(self) -> dict[str, Any]: ...
    def encode(self, texts: Sequence[str], batch_size: int | None = None, progress: bool = True) -> Tensor: ...


def embedding_key(identity: dict[str, Any], texts: Sequence[str]) -> str:
    """sha256 hex of the encoder identity and the texts (each length-prefixed, so boundaries count)."""
    digest = hashlib.sha256(json.dumps({"version": CACHE_VERSION, "encoder": identity}, sort_keys=True).encode())
    for text in texts:
        data = text.encode("utf-8")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


def _write_atomic(path: Path, write: Callable[[Any], None]) -> None:
    """Write through ``write(handle)`` to a temp file beside ``path``, renamed over it only when complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{path.stem}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class EmbeddingCache:
    """A directory of cached embedding matrices keyed by :func:`embedding_key`."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory).expanduser()

    def paths(self, key: str) -> tuple[Path, Path]:
        stem = self.directory / f"text-{key[:32]}"
        return stem.with_suffix(".npy"), stem.with_suffix(".json")

    def load(self, key: str, num_texts: int) -> Tensor | None:
        """The cached (num_texts, D) embeddings, or None when absent or damaged (then with a warning)."""
        array_path, meta_path = self.paths(key)
        if not array_path.exists() and not meta_path.exists():
            return None
        try:
            meta = json.loads(meta_path.read_text())
            array = np.load(array_path, allow_pickle=False)
            problem = _problem(array, meta, key, num_texts)
            if problem is not None:
                raise ValueError(problem)
            return torch.from_numpy(np.ascontiguousarray(array))
        except Exception as exc:  # noqa: BLE001 - any failure to read a cache entry means: rebuild it
            log.warning("text embedding cache %s is damaged (%s: %s); rebuilding it", array_path,
                        type(exc).__name__, exc)
            return None

    def save(self, key: str, embeddings: Tensor, meta: dict[str, Any]) -> None:
        array_path, meta_path = self.paths(key)
        array = embeddings.detach().cpu().float().numpy()
        record = {**meta, "key": key, "num_texts": int(array.shape[0]), "dim": int(array.shape[1])}
        _write_atomic(array_path, lambda handle: np.save(handle, array, allow_pickle=False))
        _write_atomic(meta_path, lambda handle: handle.write(json.dumps(record, indent=1).encode()))


def _problem(array: np.ndarray, meta: dict[str, Any], key: str, num_texts: int) -> str | None:
    """What is inconsistent between a loaded entry and what was asked for, or None."""
    if meta.get("key") != key:
        return "its key differs from the requested one"
    if array.dtype != np.float32 or array.ndim != 2 or array.shape != (num_texts, meta.get("dim")):
        return f"array {array.dtype} {array.shape} does not hold {num_texts} embeddings of size {meta.get('dim')}"
    if not np.isfinite(array).all():
        return "it holds non-finite values"
    return None


def cached_encode(encoder: Encodes, texts: Sequence[str], cache: EmbeddingCache | None,
                  progress: bool = True) -> Tensor:
    """``encoder.encode(texts)`` (N, D), through ``cache`` when given (hit: no model is loaded)."""
    if cache is None:
        return encoder.encode(texts, progress=progress)
    identity = encoder.identity()
    key = embedding_key(identity, texts)
    hit = cache.load(key, len(texts))
    if hit is not None:
        log.info("item text embeddings of %s: cache hit %s", encoder.name, cache.paths(key)[0])
        return hit
    embeddings = encoder.encode(texts, progress=progress)
    cache.save(key, embeddings, {"model": encoder.name, "encoder": identity})
    log.info("item text embeddings of %s: %d texts encoded, cached in %s", encoder.name, len(texts),
             cache.paths(key)[0])
    return embeddings
