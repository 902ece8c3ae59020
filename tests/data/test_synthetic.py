"""The synthetic generator: pinned output (the embedded default dataset must never drift), counts,
determinism, and the scaled path (ML-20M sized settings) against the reference semantics."""
from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from recforge.data.synthetic import SyntheticSequences


def _digest(df: pd.DataFrame) -> str:
    """A hash of the frame's values spelled as text (independent of pandas' own hashing)."""
    text = "|".join(df["user"]) + "#" + "|".join(df["item"]) + "#" + ",".join(map(str, df["timestamp"]))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# pinned before the generator was made to scale; these must never change
PINNED = [
    ({}, 35257, "55ac1a9e32ff223a", ["194", "84", "279"]),
    ({"num_users": 120, "num_items": 60, "max_length": 20}, 1850, "79fc04166a7c56b6", ["51", "4", "45"]),
    ({"num_users": 200, "num_items": 100, "seed": 3, "follow_prob": 0.5, "zipf_exponent": 0.8, "min_length": 3,
      "max_length": 7}, 1006, "e75808de4fc8239d", ["92", "80", "53"]),
]


@pytest.mark.parametrize(("params", "rows", "digest", "items"), PINNED)
def test_output_is_pinned(params, rows, digest, items):
    df = SyntheticSequences(**params).read()
    assert len(df) == rows
    assert _digest(df) == digest
    assert df["item"].iloc[[0, 1, -1]].tolist() == items


def test_default_frame_contract():
    df = SyntheticSequences().read()
    assert list(df.columns) == ["user", "item", "timestamp", "rating"]
    assert df["user"].iloc[0] == "0" and df["user"].iloc[-1] == "999"
    assert df["timestamp"].dtype == np.int64 and int(df["timestamp"].iloc[0]) == 1_600_000_000
    assert int(df["timestamp"].iloc[1]) == 1_600_003_600 and df["rating"].isna().all()


def test_item_text_is_pinned():
    text = SyntheticSequences().item_text()
    joined = "#".join("|".join(text[c]) for c in ("item", "title", "category", "text"))
    assert hashlib.sha256(joined.encode()).hexdigest()[:16] == "ad26ca279c3761be"
    assert text.iloc[0].tolist() == ["0", "red lotion no. 0", "beauty", "red lotion no. 0. Category: beauty."]


def _reference_read(gen: SyntheticSequences) -> pd.DataFrame:
    """The generator as first written (a (U, T) table filled step by step, ids spelled with astype(str))."""
    rng = np.random.default_rng(gen.seed)
    _, popularity, successors = gen._structure(rng)
    lengths = rng.integers(gen.min_length, gen.max_length + 1, gen.num_users)
    steps = int(lengths.max())
    seq = np.empty((gen.num_users, steps), dtype=np.int64)
    seq[:, 0] = rng.choice(gen.num_items, gen.num_users, p=popularity)
    for t in range(1, steps):
        follow = rng.random(gen.num_users) < gen.follow_prob
        nxt = successors[seq[:, t - 1], rng.integers(0, 2, gen.num_users)]
        seq[:, t] = np.where(follow, nxt, rng.choice(gen.num_items, gen.num_users, p=popularity))
    valid = np.arange(steps)[None, :] < lengths[:, None]
    users = np.broadcast_to(np.arange(gen.num_users)[:, None], seq.shape)[valid]
    times = np.broadcast_to(np.arange(steps)[None, :], seq.shape)[valid]
    return pd.DataFrame({
        "user": users.astype(str), "item": seq[valid].astype(str),
        "timestamp": (1_600_000_000 + 3600 * times).astype(np.int64), "rating": np.nan,
    })


@pytest.mark.parametrize("params", [
    {}, {"num_users": 1, "num_items": 3, "min_length": 1, "max_length": 1},
    {"num_users": 57, "num_items": 2000, "min_length": 20, "max_length": 270, "seed": 5},
    {"num_users": 300, "num_items": 11, "min_length": 2, "max_length": 9, "follow_prob": 0.0, "zipf_exponent": 2.0},
])
def test_vectorised_generator_equals_the_reference(params):
    gen = SyntheticSequences(**params)
    pd.testing.assert_frame_equal(gen.read(), _reference_read(gen))


def test_counts_lengths_and_ids():
    gen = SyntheticSequences(num_users=500, num_items=70, min_length=4, max_length=9, seed=2)
    users, items, steps = gen.interactions()
    lengths = np.bincount(users, minlength=500)
    assert users.dtype == items.dtype == steps.dtype == np.int64
    assert lengths.min() >= 4 and lengths.max() <= 9 and len(users) == lengths.sum()
    assert (np.diff(users) >= 0).all() and items.min() >= 0 and items.max() < 70
    # steps restart at 0 for every user and count up by one
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    np.testing.assert_array_equal(steps, np.arange(len(users)) - np.repeat(starts, lengths))
    df = gen.read()
    assert len(df) == len(users) and df["user"].nunique() == 500
    assert df["timestamp"].tolist()[:3] == [1_600_000_000, 1_600_003_600, 1_600_007_200]


def test_same_seed_same_data_other_seed_other_data():
    a, b = SyntheticSequences(num_users=50, seed=1).read(), SyntheticSequences(num_users=50, seed=1).read()
    c = SyntheticSequences(num_users=50, seed=2).read()
    pd.testing.assert_frame_equal(a, b)
    assert not (len(a) == len(c) and (a["item"] == c["item"]).all())


def test_ml20m_sized_lengths_average_145():
    # the synthetic_20m settings at 1/1000 of the users: uniform lengths 20..270, mean 145 (ML-20M: 144.4)
    users, _, _ = SyntheticSequences(num_users=138, num_items=27000, min_length=20, max_length=270).interactions()
    lengths = np.bincount(users)
    assert 20 <= lengths.min() and lengths.max() <= 270 and 130 < lengths.mean() < 160
