"""Cold-start split (recforge.data.cold): choosing the cold items, holding them out of every sequence but the
last two positions, and the datamodule with dataset.cold_items on the synthetic data."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from recforge.data.cold import (
    choose_cold_items,
    cold_target_counts,
    hold_out_items,
)
from recforge.data.datamodule import SequenceDataModule
from recforge.data.preprocess import Sequences
from recforge.data.splits import LeaveOneOut, TemporalRatio
from recforge.data.synthetic import SyntheticSequences
from recforge.errors import RecforgeError
from recforge.models.embedders import text_neighbour_rows


def sequences(rows: list[list[int]], num_items: int) -> Sequences:
    """CSR sequences of the given item-id lists; ratings are the flat positions (to follow what is kept)."""
    lengths = np.array([len(r) for r in rows], dtype=np.int64)
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    items = np.array([i for r in rows for i in r], dtype=np.int64)
    return Sequences(items=items, indptr=indptr, ratings=np.arange(len(items), dtype=np.float32),
                     user_ids=np.array([f"u{i}" for i in range(len(rows))], dtype=object),
                     item_ids=np.array([""] + [f"i{i}" for i in range(1, num_items + 1)], dtype=object))


def mask(cold_ids: list[int], num_items: int) -> np.ndarray:
    cold = np.zeros(num_items + 1, dtype=bool)
    cold[cold_ids] = True
    return cold


# ------------------------------------------------------------------------------------------- choose_cold_items


def test_choose_cold_items_draws_round_fraction_of_ids_and_never_padding():
    cold = choose_cold_items(1682, 0.2, seed=0)
    assert cold.shape == (1683,) and cold.dtype == bool
    assert cold.sum() == 336 and not cold[0]  # round(0.2 * 1682) = 336
    assert np.array_equal(cold, choose_cold_items(1682, 0.2, seed=0))  # the seed fixes the set
    assert not np.array_equal(cold, choose_cold_items(1682, 0.2, seed=1))
    assert choose_cold_items(7, 0.5, seed=3).sum() == 4  # round(3.5) = 4 (banker's rounding of 3.5 -> 4)
    assert not choose_cold_items(10, 0.0, seed=0).any()
    with pytest.raises(ValueError, match="must be in"):
        choose_cold_items(10, 1.0, seed=0)


def test_choose_cold_items_is_uniform_over_item_ids():
    counts = sum(choose_cold_items(10, 0.3, seed=s).astype(int) for s in range(3000))  # (11,)
    assert counts[0] == 0
    assert np.abs(counts[1:] / 3000 - 0.3).max() < 0.04  # each id cold in ~30 % of the draws


# ------------------------------------------------------------------------------------------- hold_out_items


def test_hold_out_items_keeps_cold_items_only_among_the_last_two():
    seqs = sequences([[1, 2, 3, 4, 5], [3, 1, 3], [2, 3], [], [3, 3, 3, 3]], num_items=5)
    out = hold_out_items(seqs, mask([3], 5), keep_last=2)
    rows = [out.items[out.indptr[u]:out.indptr[u + 1]].tolist() for u in range(out.num_users)]
    assert rows == [[1, 2, 4, 5], [1, 3], [2, 3], [], [3, 3]]
    assert out.ratings.tolist() == [0, 1, 3, 4, 6, 7, 8, 9, 12, 13]  # each kept item keeps its own rating
    assert list(out.user_ids) == list(seqs.user_ids) and list(out.item_ids) == list(seqs.item_ids)
    # the last two items (leave-one-out targets) are unchanged for every user
    assert all(r[-2:] == s[-2:] for r, s in zip(rows, [[1, 2, 3, 4, 5], [3, 1, 3], [2, 3], [], [3, 3, 3, 3]]))


def test_hold_out_items_matches_a_per_user_loop():
    rng = np.random.default_rng(0)
    rows = [rng.integers(1, 21, size=rng.integers(0, 15)).tolist() for _ in range(200)]
    seqs, cold = sequences(rows, 20), choose_cold_items(20, 0.3, seed=1)
    for keep_last in (0, 1, 2, 5):
        out = hold_out_items(seqs, cold, keep_last)
        expected = [[i for p, i in enumerate(r) if not cold[i] or p >= len(r) - keep_last] for r in rows]
        assert [out.items[out.indptr[u]:out.indptr[u + 1]].tolist() for u in range(200)] == expected
    assert hold_out_items(seqs, mask([], 20), 2).items.tolist() == seqs.items.tolist()


def test_cold_target_counts():
    seqs = sequences([[1, 2, 3], [3, 1, 2, 4]], num_items=4)
    samples = np.array([[0, 2], [1, 0], [1, 3], [0, 0]])  # targets 3, 3, 4, 1
    assert cold_target_counts(seqs.items, seqs.indptr, samples, mask([3], 4)) == (2, 2)
    assert cold_target_counts(seqs.items, seqs.indptr, samples, mask([], 4)) == (4, 0)


def test_text_neighbour_rows_average_the_most_text_similar_warm_rows():
    text = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.1], [0.1, 1.0], [1.0, 1.0]])  # ids 0..5
    rows = torch.tensor([[0.0], [10.0], [20.0], [30.0], [40.0], [50.0]])  # (N+1, 1)
    cold = torch.tensor([False, False, False, True, True, False])  # items 3 and 4
    # item 3 is nearest to 1 (cos .995), then 5 (.77); item 4 to 2, then 5; never to each other or padding
    assert text_neighbour_rows(rows, text, cold, k=1).tolist() == [[10.0], [20.0]]
    assert text_neighbour_rows(rows, text, cold, k=2).tolist() == [[30.0], [35.0]]
    torch.testing.assert_close(text_neighbour_rows(rows, text, cold, k=9), torch.full((2, 1), 80 / 3))  # 3 warm


# ------------------------------------------------------------------------------------------- datamodule


def synthetic_dm(**kwargs) -> SequenceDataModule:
    reader = SyntheticSequences(num_users=300, num_items=80, min_length=5, max_length=40, seed=0)
    kwargs.setdefault("split", LeaveOneOut())
    dm = SequenceDataModule(name="synthetic", reader=reader, max_len=10, batch_size=64, **kwargs)
    dm.setup("fit")
    return dm


def eval_targets(dataset) -> torch.Tensor:
    return dataset.__getitems__(list(range(len(dataset))))["target"]


def test_datamodule_holds_cold_items_out_of_training_only():
    dm = synthetic_dm(cold_items=0.25, cold_seed=3)
    cold = dm.cold_items
    assert cold.dtype == torch.bool and cold.shape == (81,) and int(cold.sum()) == 20 and not cold[0]
    assert torch.equal(cold, torch.from_numpy(choose_cold_items(80, 0.25, seed=3)))
    assert not cold[dm.train_set.windows].any()  # no cold item in any training window (input or target)
    assert int(dm.item_counts[cold].sum()) == 0 and int(dm.item_counts[~cold].sum()) > 0
    stats = dm.stats
    for stage, dataset in (("val", dm.val_set), ("test", dm.test_set)):
        targets = eval_targets(dataset)
        n_cold = int(cold[targets].sum())
        assert n_cold > 20  # cold targets are evaluated
        assert (stats[f"{stage}_cold_samples"], stats[f"{stage}_warm_samples"]) == (n_cold, len(targets) - n_cold)
        assert stats[f"{stage}_samples"] == len(targets)
    # a validation target is in the test input (leave-one-out), but no cold item is before it
    batch = dm.test_set.__getitems__(list(range(len(dm.test_set))))
    assert torch.equal(batch["input"][:, -1], eval_targets(dm.val_set))
    assert not cold[batch["input"][:, :-1]].any()
    lengths = (batch["history"] > 0).sum(1)  # (S,) history is right-padded; its last item is the val target
    last = batch["history"].gather(1, (lengths - 1).unsqueeze(1))[:, 0]
    assert not cold[batch["history"].scatter(1, (lengths - 1).unsqueeze(1), 0)].any()
    assert torch.equal(last, eval_targets(dm.val_set))
    assert stats["cold_items"] == 20 and stats["cold_interactions_removed"] > 0
    assert stats["interactions"] == synthetic_dm().stats["interactions"]  # statistics of the data as read
    assert dm.load_sequences().num_items == 80  # item ids unchanged: cold items keep theirs


def test_cold_items_zero_changes_nothing():
    before, off = synthetic_dm(), synthetic_dm(cold_items=0.0, cold_seed=5)
    assert torch.equal(before.train_set.windows, off.train_set.windows)
    for stage in ("val_set", "test_set"):
        a, b = getattr(before, stage), getattr(off, stage)
        batch_a, batch_b = a.__getitems__(list(range(len(a)))), b.__getitems__(list(range(len(b))))
        assert batch_a.keys() == batch_b.keys() and all(torch.equal(batch_a[k], batch_b[k]) for k in batch_a)
    assert torch.equal(before.item_counts, off.item_counts)
    assert before.stats == off.stats and "val_cold_samples" not in off.stats
    assert off.cold_items.shape == (81,) and not off.cold_items.any()


def test_cold_items_need_leave_one_out_and_a_fraction():
    needs = r"^dataset.cold_items=0.2 needs dataset/split=leave_one_out .*, not TemporalRatio\.$"
    with pytest.raises(RecforgeError, match=needs):
        synthetic_dm(cold_items=0.2, split=TemporalRatio())
    with pytest.raises(RecforgeError, match=r"^dataset.cold_items=1.0 must be a fraction in \[0, 1\)\.$"):
        synthetic_dm(cold_items=1.0)
