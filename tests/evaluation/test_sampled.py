"""Sampled ranking (recforge.evaluation.sampled): the drawn candidates, the popularity weights, the rank among
candidates (ties and NaN as in full ranking) and the part's checks, on hand-made cases."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from recforge.errors import RecforgeError
from recforge.evaluation.metrics import target_ranks
from recforge.evaluation.ranking import rank_targets
from recforge.evaluation.sampled import (
    PopularityCandidates,
    SampledRanking,
    UniformCandidates,
    available_items,
    draw_negatives,
    sampled_ranks,
    stream_uniforms,
)
from recforge.rules import ArgumentError


def csr(sequences: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """(indptr (U+1,), items (n,)) of the users' whole sequences."""
    indptr = np.concatenate([[0], np.cumsum([len(s) for s in sequences])]).astype(np.int64)
    return indptr, np.concatenate([np.asarray(s, dtype=np.int64) for s in sequences])


def random_data(users: int = 300, items: int = 80, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Users with 3..30 items (repeats allowed), one sample per user (its last position)."""
    rng = np.random.default_rng(seed)
    sequences = [rng.integers(1, items + 1, rng.integers(3, 31)).tolist() for _ in range(users)]
    indptr, flat = csr(sequences)
    rows = np.arange(users)
    return rows, np.diff(indptr) - 1, indptr, flat, np.bincount(flat, minlength=items + 1)


def uniform(items: int) -> np.ndarray:
    return UniformCandidates().weights(torch.zeros(items + 1, dtype=torch.long))


# ------------------------------------------------------------------------------------------- samplers


def test_sampler_weights():
    counts = torch.tensor([0, 5, 0, 2])
    assert UniformCandidates().weights(counts).tolist() == [0.0, 1.0, 1.0, 1.0]
    assert PopularityCandidates().weights(counts).tolist() == [0.0, 5.0, 0.0, 2.0]
    assert counts.tolist() == [0, 5, 0, 2]  # not modified


# ------------------------------------------------------------------------------------------- drawing


@pytest.mark.parametrize("sampler", [UniformCandidates(), PopularityCandidates()], ids=["uniform", "popularity"])
def test_candidates_are_distinct_and_never_the_users_items_or_padding(sampler):
    users, positions, indptr, items, counts = random_data()
    weights = sampler.weights(torch.from_numpy(counts))
    drawn = draw_negatives(users, positions, indptr, items, weights, 40, seed=3)
    assert drawn.shape == (300, 40) and drawn.dtype == np.int64
    for row, user in enumerate(users):
        own = set(items[indptr[user]:indptr[user + 1]].tolist())
        assert len(set(drawn[row].tolist())) == 40  # without replacement
        assert not own & set(drawn[row].tolist()) and 0 not in drawn[row]
        assert (weights[drawn[row]] > 0).all()  # popularity: never an item without training interactions


def test_the_only_items_left_are_the_candidates():
    indptr, items = csr([[1, 2, 3, 2], [6]])
    drawn = draw_negatives(np.array([0, 1]), np.array([3, 0]), indptr, items, uniform(6), 3, seed=0)
    assert sorted(drawn[0].tolist()) == [4, 5, 6]  # all that user 0 leaves, in a drawn order
    assert set(drawn[1].tolist()) <= {1, 2, 3, 4, 5}


def test_drawing_is_a_function_of_seed_user_and_position_only():
    users, positions, indptr, items, counts = random_data()
    weights = counts.astype(np.float64)
    first = draw_negatives(users, positions, indptr, items, weights, 30, seed=7)
    assert np.array_equal(first, draw_negatives(users, positions, indptr, items, weights, 30, seed=7))  # re-drawn
    # any chunking (batch of samples drawn together), any subset of samples, any order: the same rows
    assert np.array_equal(first, draw_negatives(users, positions, indptr, items, weights, 30, seed=7, chunk=13))
    pick = np.array([250, 3, 17, 17])
    assert np.array_equal(first[pick], draw_negatives(users[pick], positions[pick], indptr, items, weights, 30, 7))
    # the first N of N' > N negatives are the N negatives
    assert np.array_equal(first[:, :10], draw_negatives(users, positions, indptr, items, weights, 10, seed=7))
    other_seed = draw_negatives(users, positions, indptr, items, weights, 30, seed=8)
    assert (other_seed != first).any(axis=1).mean() > 0.99
    other_position = draw_negatives(users, positions - 1, indptr, items, weights, 30, seed=7)  # another split's
    assert (other_position != first).any(axis=1).mean() > 0.99


def test_streams_are_counter_based_uniforms():
    keys = np.array([1, 2**63 + 5], dtype=np.uint64)
    whole = stream_uniforms(keys, np.array([0, 0]), 1000)  # (2, 1000)
    assert np.array_equal(whole[:, 400:], stream_uniforms(keys, np.array([400, 400]), 600))
    assert ((whole >= 0) & (whole < 1)).all()
    assert abs(whole.mean() - 0.5) < 0.02 and abs(whole.var() - 1 / 12) < 0.01


def test_popularity_frequencies_follow_the_weights():
    """One user owning items 1 and 2; weights 10, 20, 30, 40 on items 3..6: 20,000 samples of one negative each
    follow (0.1, 0.2, 0.3, 0.4); with two negatives (without replacement) item j is in the pair with probability
    p_j + sum_i p_i w_j / (W - w_i)."""
    indptr, items = csr([[1, 2]])
    weights = np.array([0, 50, 50, 10, 20, 30, 40], dtype=np.float64)
    samples = 20_000
    users, positions = np.zeros(samples, dtype=np.int64), np.arange(samples)
    one = draw_negatives(users, positions, indptr, items, weights, 1, seed=0)[:, 0]
    observed = np.bincount(one, minlength=7)
    assert observed[:3].sum() == 0
    expected = samples * np.array([0.1, 0.2, 0.3, 0.4])
    assert chisquare(observed[3:], expected).pvalue > 0.01
    pairs = draw_negatives(users, positions, indptr, items, weights, 2, seed=0)
    w = weights[3:]
    p = w / w.sum()
    inclusion = p + np.array([sum(p[i] * w[j] / (w.sum() - w[i]) for i in range(4) if i != j) for j in range(4)])
    assert inclusion.sum() == pytest.approx(2.0)
    frequency = np.bincount(pairs.ravel(), minlength=7)[3:] / samples
    assert np.abs(frequency - inclusion).max() < 0.012  # ~3.5 standard errors at n = 20,000


def test_available_items():
    indptr, items = csr([[1, 2, 2], [5], [1, 2, 3, 4, 5, 6]])
    weights = np.array([0, 1, 1, 1, 0, 1, 1], dtype=np.float64)  # item 4 is never drawn
    assert available_items(np.array([0, 1, 2, 0]), indptr, items, weights).tolist() == [3, 4, 0, 3]


# ------------------------------------------------------------------------------------------- ranking

SCORES = torch.tensor([
    [0.5, 0.5, 0.1, 0.9],  # a tie counts against the target: rank 3
    [0.2, 0.1, 0.1, 0.1],  # best: rank 1
    [math.nan, 0.1, 0.2, 0.3],  # a NaN target ranks last: N + 1
    [0.3, math.nan, 0.1, 0.2],  # a NaN negative is not below the target: rank 2
])


def test_rank_among_candidates_by_hand():
    assert sampled_ranks(SCORES).tolist() == [3, 1, 4, 2]
    assert sampled_ranks(SCORES).tolist() == target_ranks(SCORES, torch.zeros(4, dtype=torch.long)).tolist()
    masked = torch.tensor([False, True, False, False])
    assert sampled_ranks(SCORES, masked).tolist() == [3, 4, 4, 2]  # a repeated target at -inf: unreachable
    assert sampled_ranks(SCORES, masked, fill=0.0).tolist() == [3, 4, 4, 2]  # S3-Rec's 0 is below 0.1
    assert sampled_ranks(SCORES, masked, fill=0.15).tolist() == [3, 1, 4, 2]
    equal = torch.zeros(2, 101)  # a model scoring everything alike never gets a hit
    assert sampled_ranks(equal).tolist() == [101, 101]


def test_rank_with_every_other_item_as_negative_is_the_full_rank():
    """Same tie rule as full ranking: with all items outside the history as candidates, the two ranks agree."""
    rng = np.random.default_rng(1)
    scores = torch.from_numpy(rng.integers(0, 5, size=(64, 21)).astype(np.float32))  # many ties; ids 0..20
    history = torch.from_numpy(rng.integers(1, 21, size=(64, 4)))
    targets = torch.from_numpy(rng.integers(1, 21, size=64))
    full = rank_targets(scores, targets, history)
    for row in range(64):
        others = [i for i in range(1, 21) if i != targets[row] and i not in history[row].tolist()]
        candidates = torch.tensor([int(targets[row]), *others])
        masked = (history[row] == targets[row]).any().reshape(1)
        assert int(sampled_ranks(scores[row, candidates][None], masked)[0]) == min(int(full[row]), len(candidates))


# ------------------------------------------------------------------------------------------- the part


class Samples:
    """An evaluation set as EvalSamples holds it."""

    def __init__(self, sequences: list[list[int]], users: list[int], positions: list[int]) -> None:
        indptr, items = csr(sequences)
        self.indptr, self.items = torch.from_numpy(indptr), torch.from_numpy(items)
        self.users, self.positions = torch.tensor(users), torch.tensor(positions)


def test_part_draws_once_per_stage_and_saves_target_and_negatives(tmp_path):
    samples = Samples([[1, 2, 3], [4, 5, 6, 7]], users=[1, 0], positions=[3, 2])
    part = SampledRanking(negatives=2, sampler=PopularityCandidates(), seed=5)
    counts = torch.tensor([0, 3, 3, 3, 3, 1, 1, 1, 9])
    part.fit(counts, {"test": ("val", samples)})
    batch = part.negatives_for("test", torch.tensor([1, 0]), tmp_path)  # (B, N)
    table = np.load(tmp_path / "val_popularity_n2_seed5.npy")
    assert table.shape == (2, 3) and table.dtype == np.uint8
    assert table[:, 0].tolist() == [7, 3]  # the targets
    assert batch.tolist() == table[[1, 0], 1:].tolist()
    expected = draw_negatives(np.array([1, 0]), np.array([3, 2]), samples.indptr.numpy(), samples.items.numpy(),
                              PopularityCandidates().weights(counts), 2, seed=5)
    assert np.array_equal(table[:, 1:], expected)


def test_too_few_items_left_is_one_line():
    samples = Samples([[1, 2, 3], [1]], users=[0, 1], positions=[2, 0])
    part = SampledRanking(negatives=3, sampler=UniformCandidates())
    with pytest.raises(RecforgeError) as err:
        part.fit(torch.zeros(6, dtype=torch.long), {"test": ("test", samples)})
    assert str(err.value) == (
        "evaluation.sampled.negatives=3 is more than the items left to draw for 1 of 2 test samples (the fewest: 2, "
        "after the user's own items and the items the uniform sampler never draws); lower evaluation.sampled.negatives.")


def test_argument_rules():
    with pytest.raises(ArgumentError, match=r"^evaluation\.sampled\.negatives=0 must be an integer >= 1 \(or null\)\.$"):
        SampledRanking(negatives=0, sampler=UniformCandidates())
    with pytest.raises(ArgumentError, match=r"^evaluation\.sampled\.seed=-1 must be an integer >= 0\.$"):
        SampledRanking(negatives=5, sampler=UniformCandidates(), seed=-1)
    assert SampledRanking(negatives=None, sampler=UniformCandidates()).negatives is None
