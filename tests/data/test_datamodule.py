"""Tests for recforge.data.datamodule: windows and evaluation batches on a hand-made dataset, item counts,
the on-disk cache (hit, damaged file rebuilt) and the errors of over-filtering."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from recforge.data.datamodule import (
    EvalSamples,
    SequenceDataModule,
    TrainWindows,
    _load_cache,
)
from recforge.data.readers import S3RecSequences
from recforge.data.splits import GlobalTemporal, LeaveOneOut, TemporalRatio
from recforge.errors import RecforgeError


class InMemoryReader:
    """Reader-protocol stand-in holding its rows (user, item, timestamp, rating) in memory."""

    has_timestamps = True

    def __init__(self, rows: list[tuple]) -> None:
        self.rows = tuple(rows)

    def read(self) -> pd.DataFrame:
        df = pd.DataFrame(list(self.rows), columns=["user", "item", "timestamp", "rating"])
        df["timestamp"] = df["timestamp"].astype(np.int64)
        df["rating"] = df["rating"].astype(np.float64)
        return df

    def item_text(self) -> None:
        return None

    def source_files(self) -> list:
        return []


# u1: a b c d e f g (ts 1..7, given out of order), u2: b c, u3: c h a
# item ids by first appearance in (user, time) order: a=1 b=2 c=3 d=4 e=5 f=6 g=7 h=8
ROWS = [
    ("u1", "c", 3, 4.0), ("u1", "a", 1, 5.0), ("u1", "b", 2, 3.0), ("u1", "g", 7, 1.0),
    ("u3", "c", 1, 5.0), ("u3", "h", 2, 2.0), ("u3", "a", 3, 4.0),
    ("u1", "e", 5, 4.0), ("u1", "d", 4, 2.0), ("u1", "f", 6, 5.0),
    ("u2", "b", 1, 1.0), ("u2", "c", 2, 2.0),
]


def make_dm(tmp_path: Path | None = None, rows=ROWS, name: str = "tiny", **kwargs) -> SequenceDataModule:
    kwargs.setdefault("split", LeaveOneOut())
    kwargs.setdefault("max_len", 3)
    return SequenceDataModule(name=name, reader=InMemoryReader(rows),
                              cache_dir=str(tmp_path / "cache") if tmp_path else None, **kwargs)


def left_pad(batch: torch.Tensor, width: int) -> torch.Tensor:
    """Left-pad (B, T) with 0 to (B, width). Batches may drop leading columns that are padding in every row
    (trim_left_padding), so content is compared after padding back to the full window width."""
    assert batch.shape[1] <= width
    return torch.cat([torch.zeros(batch.shape[0], width - batch.shape[1], dtype=batch.dtype), batch], dim=1)


def count_builds(dm: SequenceDataModule) -> list:
    calls: list = []
    original = dm._build

    def wrapped():
        calls.append(1)
        return original()

    dm._build = wrapped  # type: ignore[method-assign]
    return calls


# ------------------------------------------------------------------------- sequences, windows, samples


def test_sequences_of_tiny_dataset():
    dm = make_dm()
    seqs = dm.load_sequences()
    assert seqs.user_ids.tolist() == ["u1", "u2", "u3"]
    assert seqs.item_ids.tolist() == ["", "a", "b", "c", "d", "e", "f", "g", "h"]
    # u1: 1..7, u2: b c = 2 3, u3: c h a = 3 8 1
    assert seqs.items.tolist() == [1, 2, 3, 4, 5, 6, 7, 2, 3, 3, 8, 1]
    assert seqs.indptr.tolist() == [0, 7, 9, 12]
    assert dm.num_items == 8
    # 3 users, 8 items, 12 interactions: density 12 / 24 = 0.5, mean length 4, max 7
    assert dm.stats == {"users": 3, "items": 8, "interactions": 12, "density": 0.5,
                        "mean_length": 4.0, "max_length": 7, "duplicates_removed": 0}


def test_train_windows_tensor():
    dm = make_dm()
    dm.setup("fit")
    # LeaveOneOut on lengths [7, 2, 3]: train lengths [5, 0, 1]
    # u1 train items 1..5 (4 transitions), max_len 3 -> windows [2,3,4,5] and [pad,pad,1,2]
    # u2 (dropped) and u3 (one training item, no transition) give no window
    assert isinstance(dm.train_set, TrainWindows)
    assert dm.train_set.windows.dtype == torch.int64
    assert dm.train_set.windows.tolist() == [[2, 3, 4, 5], [0, 0, 1, 2]]
    assert len(dm.train_set) == 2
    assert left_pad(dm.train_set.__getitems__([1, 0])["items"], 4).tolist() == [[0, 0, 1, 2], [2, 3, 4, 5]]
    # a batch of the padded window alone may be trimmed, but keeps at least its 2 real items
    alone = dm.train_set.__getitems__([1])["items"]
    assert alone.shape[1] >= 2 and left_pad(alone, 4).tolist() == [[0, 0, 1, 2]]
    assert dm.stats["train_windows"] == 2 and dm.stats["val_samples"] == 2 and dm.stats["test_samples"] == 2


def test_eval_samples_batches():
    dm = make_dm()
    dm.setup("fit")
    # validation: (u1, pos 5) target f=6, (u3, pos 1) target h=8
    val = dm.val_set.__getitems__([0, 1])
    assert set(val) == {"input", "target", "history", "index", "user"}
    assert left_pad(val["input"], 3).tolist() == [[3, 4, 5], [0, 0, 3]]  # last 3 items before the target
    assert val["target"].tolist() == [6, 8]
    # history: every earlier item, right-padded with 0 to the batch's longest (5)
    assert val["history"].tolist() == [[1, 2, 3, 4, 5], [3, 0, 0, 0, 0]]
    assert val["index"].tolist() == [0, 1]
    # test: (u1, pos 6) target g=7, (u3, pos 2) target a=1; requested in reverse order
    test = dm.test_set.__getitems__([1, 0])
    assert left_pad(test["input"], 3).tolist() == [[0, 3, 8], [4, 5, 6]]
    assert test["target"].tolist() == [1, 7]
    assert test["history"].tolist() == [[3, 8, 0, 0, 0, 0], [1, 2, 3, 4, 5, 6]]
    assert test["index"].tolist() == [1, 0]
    # a single sample at position 0 has no history: one padding column
    single = EvalSamples(torch.tensor([4, 5]), torch.tensor([0, 2]), torch.tensor([[0, 0]]), 3)[0]
    assert single["input"].shape[1] >= 1 and left_pad(single["input"], 3).tolist() == [[0, 0, 0]]
    assert single["target"].tolist() == [4]
    assert single["history"].tolist() == [[0]]


def test_dataloaders_yield_the_same_dicts():
    dm = make_dm(batch_size=8, eval_batch_size=1)
    dm.setup("fit")
    batches = list(dm.val_dataloader())
    # shortest history first: sample 1 (one earlier item) before sample 0 (five)
    assert [b["index"].tolist() for b in batches] == [[1], [0]]
    assert [b["target"].tolist() for b in batches] == [[8], [6]]
    assert batches[0]["history"].tolist() == [[3]]  # width is the batch's own longest history
    assert left_pad(batches[0]["input"], 3).tolist() == [[0, 0, 3]]
    train = list(dm.train_dataloader())
    assert len(train) == 1 and sorted(left_pad(train[0]["items"], 4).tolist()) == [[0, 0, 1, 2], [2, 3, 4, 5]]


def test_item_counts_only_training_items():
    dm = make_dm()
    dm.setup("fit")
    # training items: u1 positions 0..4 = a b c d e (1..5), u2 none (dropped), u3 position 0 = c (3)
    # b in u2 and f, g, h (val/test targets) are not counted
    assert dm.item_counts.tolist() == [0, 1, 1, 2, 1, 1, 0, 0, 0]


def test_batches_carry_the_user_row_and_training_data_is_the_training_prefix():
    dm = make_dm()
    dm.setup("fit")
    assert dm.num_users == 3
    # both training windows are u1's (row 0); u2 and u3 have none
    assert dm.train_set.users.tolist() == [0, 0]
    assert dm.train_set.__getitems__([1, 0])["user"].tolist() == [0, 0]
    # validation (u1, u3) and test requested in reverse order (u3, u1)
    assert dm.val_set.__getitems__([0, 1])["user"].tolist() == [0, 2]
    assert dm.test_set.__getitems__([1, 0])["user"].tolist() == [2, 0]
    # training prefixes: u1 a..e, u2 nothing (dropped by the split), u3 c
    data = dm.training_data
    assert data.indptr.tolist() == [0, 5, 5, 6] and data.items.tolist() == [1, 2, 3, 4, 5, 3]
    assert data.num_users == 3 and torch.equal(data.item_counts, dm.item_counts)


def test_every_training_window_belongs_to_its_user():
    rng = np.random.default_rng(3)
    rows = [(f"u{u}", f"i{rng.integers(30)}", t, 1.0) for u in range(12) for t in range(int(rng.integers(1, 14)))]
    dm = make_dm(rows=rows, max_len=3)
    dm.setup("fit")
    seqs, data = dm.load_sequences(), dm.training_data
    assert len(set(dm.train_set.users.tolist())) > 5  # many users have windows
    for window, user in zip(dm.train_set.windows.tolist(), dm.train_set.users.tolist()):
        real = [item for item in window if item > 0]
        train = data.items[data.indptr[user]:data.indptr[user + 1]].tolist()
        assert train == seqs.items[seqs.indptr[user]:seqs.indptr[user] + len(train)].tolist()
        # the window's items are a contiguous run of its user's training items
        assert any(train[s:s + len(real)] == real for s in range(len(train) - len(real) + 1)), (window, user)
    batch = dm.train_set.__getitems__([4, 0, 2])
    assert batch["user"].tolist() == [dm.train_set.users[i].item() for i in (4, 0, 2)]


def test_eval_samples_parity_with_loop():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 15, 40)
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    items = rng.integers(1, 50, int(indptr[-1]))
    samples = np.array([(u, p) for u in range(40) for p in range(lengths[u])])
    max_len = 4
    ds = EvalSamples(torch.from_numpy(items), torch.from_numpy(indptr), torch.from_numpy(samples), max_len)
    index = rng.permutation(len(samples))[:25].tolist()
    batch = ds.__getitems__(index)
    width = max(1, max(int(samples[i, 1]) for i in index))
    for row, i in enumerate(index):
        u, p = samples[i]
        seq = items[indptr[u]:indptr[u + 1]].tolist()
        before = seq[:p]
        want_input = ([0] * max_len + before)[-max_len:]
        want_history = before + [0] * (width - len(before))
        assert left_pad(batch["input"][row:row + 1], max_len)[0].tolist() == want_input
        assert batch["history"][row].tolist() == want_history
        assert int(batch["target"][row]) == seq[p]
        assert int(batch["index"][row]) == i


def test_temporal_ratio_split_through_datamodule():
    # u1 (7 items): floor(4.2) = 4 train, floor(1.4) = 1 val (pos 4 = e = 5), test pos 5, 6 (f = 6, g = 7)
    # u2 (2 items): max(1, floor(1.2)) = 1 train + max(1, floor(0.4)) = 1 val leaves no test -> dropped
    # u3 (3 items): 1 train, 1 val (pos 1 = h = 8), 1 test (pos 2 = a = 1)
    dm = make_dm(split=TemporalRatio(0.6, 0.2))
    dm.setup("fit")
    assert dm.val_set.__getitems__([0, 1])["target"].tolist() == [5, 8]
    assert dm.test_set.__getitems__([0, 1, 2])["target"].tolist() == [6, 7, 1]
    # u1 train 1..4 (3 transitions, one window [1,2,3,4]); u3 train 1 item -> no window
    assert dm.train_set.windows.tolist() == [[1, 2, 3, 4]]


# the hand case of tests/data/test_splits.py (GLOBAL_*) as rows: times 1..16, cuts at 8.5 and 12.25
GLOBAL_ROWS = [
    ("u0", "a", 1, 1.0), ("u0", "b", 3, 1.0), ("u0", "c", 9, 1.0), ("u0", "a", 13, 1.0), ("u0", "d", 14, 1.0),
    ("u0", "d", 15, 1.0), ("u1", "d", 2, 1.0), ("u1", "e", 4, 1.0), ("u1", "f", 5, 1.0), ("u1", "g", 6, 1.0),
    ("u2", "h", 10, 1.0), ("u2", "b", 11, 1.0), ("u2", "e", 16, 1.0), ("u3", "c", 7, 1.0), ("u3", "e", 8, 1.0),
    ("u3", "f", 12, 1.0),
]


def test_global_temporal_split_through_datamodule(tmp_path):
    # ids a=1 b=2 c=3 d=4 e=5 f=6 g=7 h=8; val samples: u0 (input a b, targets {c}), u3 (input c e, targets {f});
    # test samples: u0 (input a b c, targets {a, d}: a repeats an input item), u2 (input h b, targets {e})
    dm = make_dm(tmp_path, rows=GLOBAL_ROWS, split=GlobalTemporal(val=0.25, test=0.25))
    dm.setup("fit")
    val = dm.val_set.__getitems__([0, 1])
    assert set(val) == {"input", "targets", "history", "index", "user"}  # no single "target"
    assert val["targets"].tolist() == [[3], [6]] and val["user"].tolist() == [0, 3]
    assert left_pad(val["input"], 3).tolist() == [[0, 1, 2], [0, 3, 5]]
    test = dm.test_set.__getitems__([0, 1])
    assert test["targets"].tolist() == [[1, 4], [5, 0]]  # right-padded with 0
    assert left_pad(test["input"], 3).tolist() == [[1, 2, 3], [0, 8, 2]]  # the validation period is test input
    assert test["history"].tolist() == [[1, 2, 3], [8, 2, 0]]
    # training: u0 [a b], u1 [d e f g], u3 [c e]; windows of max_len + 1 = 4 cut from each end
    assert dm.train_set.windows.tolist() == [[0, 0, 1, 2], [4, 5, 6, 7], [0, 0, 3, 5]]
    assert dm.training_data.item_counts.tolist() == [0, 1, 1, 1, 1, 2, 1, 1, 0]
    stats = {key: dm.stats[key] for key in dm.stats if key.startswith(("val_", "test_"))}
    assert stats == {"val_samples": 2, "test_samples": 2, "val_targets": 2, "test_targets": 3,
                     "val_cut_time": 8.5, "test_cut_time": 12.25,
                     "val_users_without_target": 1, "val_users_without_input": 1,
                     "test_users_without_target": 2, "test_users_without_input": 0,
                     "val_repeated_targets": 0, "test_repeated_targets": 1}
    # the timestamps survive the cache
    cached = make_dm(tmp_path, rows=GLOBAL_ROWS, split=GlobalTemporal(val=0.25, test=0.25))
    built = count_builds(cached)
    times = cached.load_sequences().timestamps
    assert built == [] and times.tolist() == [1, 3, 9, 13, 14, 15, 2, 4, 5, 6, 10, 11, 16, 7, 8, 12]


def test_global_temporal_split_of_a_dataset_without_timestamps(tmp_path):
    path = tmp_path / "Tiny.txt"
    path.write_text("1 4 83 165\n2 83 4 7\n")
    dm = SequenceDataModule("tiny", S3RecSequences(str(path)), GlobalTemporal(), max_len=5)
    assert np.isnan(dm.load_sequences().timestamps).all()
    with pytest.raises(RecforgeError) as err:
        dm.setup("fit")
    assert str(err.value) == f"dataset.split=global_temporal needs timestamps; dataset 'tiny' ({path}) has none."


# ------------------------------------------------------------------------- cache


def assert_same_sequences(a, b) -> None:
    np.testing.assert_array_equal(a.items, b.items)
    np.testing.assert_array_equal(a.indptr, b.indptr)
    np.testing.assert_array_equal(a.ratings, b.ratings)
    np.testing.assert_array_equal(a.timestamps, b.timestamps)
    assert a.user_ids.tolist() == b.user_ids.tolist()
    assert a.item_ids.tolist() == b.item_ids.tolist()


def test_cache_round_trip(tmp_path):
    first = make_dm(tmp_path)
    built = count_builds(first)
    seqs = first.load_sequences()
    assert len(built) == 1
    files = list((tmp_path / "cache").glob("tiny-*.npz"))
    assert len(files) == 1
    assert not list((tmp_path / "cache").glob("*.tmp"))  # temp file renamed away

    second = make_dm(tmp_path)  # a fresh reader with the same rows -> the same cache key
    rebuilt = count_builds(second)
    cached = second.load_sequences()
    assert rebuilt == []  # loaded from the .npz, not rebuilt
    assert_same_sequences(seqs, cached)
    assert second.stats == first.stats

    # different preprocessing options -> a different key, so a second file
    third = make_dm(tmp_path, min_rating=2.0)
    third_built = count_builds(third)
    third.load_sequences()
    assert len(third_built) == 1
    assert len(list((tmp_path / "cache").glob("tiny-*.npz"))) == 2


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "bitflip", "inconsistent"])
def test_damaged_cache_is_rebuilt(tmp_path, damage):
    reference = make_dm(tmp_path).load_sequences()
    path = next((tmp_path / "cache").glob("tiny-*.npz"))
    raw = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "garbage":
        path.write_bytes(b"not a zip file at all" * 20)
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "bitflip":
        # flip a byte inside the stored items array: item ids 1..7 of u1 are stored as int64 [1, 2, 3, ...]
        offset = raw.find(np.array([1, 2, 3], dtype=np.int64).tobytes())
        assert offset > 0
        flipped = bytearray(raw)
        flipped[offset + 8] ^= 0x40  # 2 -> 66
        path.write_bytes(bytes(flipped))
    else:
        # a readable file whose CSR does not match its items (indptr[-1] = 99 != 12)
        np.savez(path, items=reference.items, indptr=np.array([0, 7, 9, 99]), ratings=reference.ratings,
                 user_ids=reference.user_ids.astype(str), item_ids=reference.item_ids.astype(str))

    dm = make_dm(tmp_path)
    built = count_builds(dm)
    seqs = dm.load_sequences()
    assert len(built) == 1  # damage detected -> rebuilt from the reader
    assert_same_sequences(reference, seqs)
    # and the cache file has been rewritten in good shape
    cached, removed = _load_cache(path)
    assert_same_sequences(reference, cached)
    assert removed == 0


# ------------------------------------------------------------------------- errors


def test_min_rating_leaving_nothing_names_the_dataset():
    dm = make_dm(name="tiny-ratings", min_rating=6.0)  # every rating is <= 5
    with pytest.raises(RecforgeError, match="dataset 'tiny-ratings'.*min_rating=6.0"):
        dm.load_sequences()


def test_k_core_leaving_nothing_names_the_dataset(tmp_path):
    dm = make_dm(tmp_path, name="tiny-kcore", user_k=8)  # the longest user has 7 items
    with pytest.raises(RecforgeError, match="dataset 'tiny-kcore'.*user_k=8"):
        dm.setup("fit")
    assert not list(tmp_path.rglob("*.npz"))  # nothing was cached


def test_max_len_below_two_rejected():
    with pytest.raises(RecforgeError, match="max_len=1"):
        make_dm(max_len=1)


def test_min_rating_and_k_core_through_datamodule():
    # min_rating 3 drops (u1,b,3.0 kept), (u1,g,1.0), (u1,d,2.0), (u3,h,2.0), (u2,b,1.0), (u2,c,2.0)
    # left: u1: a(1) b(2) c(3) e(5) f(6); u3: c(1) a(3); item_k=2 keeps items seen >= 2 times: a, c
    #   pass 1 counts: a=2, b=1, c=2, e=1, f=1 -> drop b, e, f; u1: a c, u3: c a
    #   pass 2: users 2 and 2, items a=2, c=2 -> stable
    dm = make_dm(min_rating=3.0, item_k=2)
    seqs = dm.load_sequences()
    assert seqs.user_ids.tolist() == ["u1", "u3"]
    assert seqs.item_ids[seqs.items].tolist() == ["a", "c", "c", "a"]


def test_length_bucket_sampler_yields_every_index_once_in_length_sorted_pools():
    from torch.utils.data import RandomSampler

    from recforge.data.datamodule import LengthBucketBatchSampler

    torch.manual_seed(0)
    lengths = torch.randint(1, 51, (1000,))
    sampler = LengthBucketBatchSampler(RandomSampler(range(1000)), batch_size=32, drop_last=False,
                                       lengths=lengths, bucket_batches=4)
    batches = list(sampler)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(1000))  # every window exactly once per epoch
    assert len(batches) == 32  # 31 full batches and one of 8
    # inside a pool of 4 batches, lengths are sorted, so each batch spans a narrow length range:
    spread = sum(int(lengths[b].max() - lengths[b].min()) for b in batches) / len(batches)
    random_spread = 46  # expected max - min of 32 uniform draws from 1..50 is about 47
    assert spread < random_spread / 3


def test_length_bucket_sampler_order_changes_between_epochs():
    from torch.utils.data import RandomSampler

    from recforge.data.datamodule import LengthBucketBatchSampler

    torch.manual_seed(1)
    sampler = LengthBucketBatchSampler(RandomSampler(range(200)), 16, False, torch.randint(1, 9, (200,)), 5)
    assert list(sampler) != list(sampler)


def test_length_sorted_sampler_is_a_stable_sort_every_epoch():
    from recforge.data.datamodule import LengthSortedSampler

    sampler = LengthSortedSampler(torch.tensor([5, 1, 4, 1, 3, 9, 2]))
    # lengths 1 (indices 1, 3 in index order), 2 (6), 3 (4), 4 (2), 5 (0), 9 (5)
    assert len(sampler) == 7
    assert list(sampler) == [1, 3, 6, 4, 2, 0, 5]
    assert list(sampler) == [1, 3, 6, 4, 2, 0, 5]


@pytest.mark.parametrize("bucket", [True, False])
def test_eval_loader_covers_every_sample_once_and_sorts_by_history_with_buckets(tmp_path, bucket):
    dm = make_dm(tmp_path, bucket_by_length=bucket, eval_batch_size=2)
    dm.setup("fit")
    for loader, samples in ((dm.val_dataloader(), dm.val_set), (dm.test_dataloader(), dm.test_set)):
        batches = list(loader)
        index = torch.cat([b["index"] for b in batches])  # (S,)
        assert sorted(index.tolist()) == list(range(len(samples)))  # every sample exactly once
        history = torch.cat([samples.positions[b["index"]] for b in batches])  # (S,)
        if bucket:  # shortest history first, and each batch trimmed to its own longest input
            assert history.tolist() == sorted(history.tolist())
        else:
            assert index.tolist() == list(range(len(samples)))  # sample order
        for b in batches:
            assert b["input"].shape[1] == max(1, int((b["input"] > 0).sum(dim=1).max()))


def _damage_arrays(reference, change: str) -> dict:
    """The cache arrays of ``reference`` with one inconsistency (each a readable, CRC-valid npz)."""
    arrays = {"items": reference.items, "indptr": reference.indptr, "ratings": reference.ratings,
              "timestamps": reference.timestamps, "user_ids": reference.user_ids.astype(str),
              "item_ids": reference.item_ids.astype(str), "duplicates_removed": np.int64(0)}
    if change == "item_out_of_range":
        arrays["items"] = np.where(reference.items == 8, 9, reference.items)  # only 8 items exist
    elif change == "item_zero":
        arrays["items"] = np.where(reference.items == 1, 0, reference.items)  # 0 is padding, never an item
    elif change == "indptr_length":
        arrays["indptr"] = reference.indptr[:-1]  # 3 users need 4 offsets
    elif change == "indptr_decreasing":
        arrays["indptr"] = np.array([0, 9, 7, 12])
    elif change == "ratings_length":
        arrays["ratings"] = reference.ratings[:-1]
    elif change == "float_items":
        arrays["items"] = reference.items.astype(np.float64)
    elif change == "no_duplicates_count":
        del arrays["duplicates_removed"]
    elif change == "timestamps_length":
        arrays["timestamps"] = reference.timestamps[:-1]
    return arrays


@pytest.mark.parametrize("change", ["item_out_of_range", "item_zero", "indptr_length", "indptr_decreasing",
                                    "ratings_length", "float_items", "no_duplicates_count", "timestamps_length"])
def test_inconsistent_cache_arrays_are_rebuilt_with_a_warning(tmp_path, caplog, change):
    reference = make_dm(tmp_path).load_sequences()
    path = next((tmp_path / "cache").glob("tiny-*.npz"))
    with open(path, "wb") as fh:
        np.savez(fh, **_damage_arrays(reference, change))
    dm = make_dm(tmp_path)
    built = count_builds(dm)
    with caplog.at_level("WARNING", logger="recforge.data.datamodule"):
        seqs = dm.load_sequences()
    assert len(built) == 1
    assert_same_sequences(reference, seqs)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and warnings[0].startswith(f"dataset cache {path} is damaged (")
    assert warnings[0].endswith("); rebuilding it")


def test_cache_write_is_atomic_and_leaves_no_temp_file_on_failure(tmp_path, monkeypatch):
    dm = make_dm(tmp_path)

    def failing_savez(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", failing_savez)
    with pytest.raises(OSError, match="disk full"):
        dm.load_sequences()
    assert list((tmp_path / "cache").iterdir()) == []  # neither a cache file nor a temp file


# 3 repeats of a (user, item, timestamp) already in ROWS; the last one with another rating
DUPLICATED = ROWS + [("u1", "c", 3, 4.0), ("u3", "h", 2, 2.0), ("u1", "c", 3, 1.0)]


def test_duplicates_are_removed_counted_and_cached(tmp_path, caplog):
    dm = make_dm(tmp_path, rows=DUPLICATED)
    with caplog.at_level("INFO", logger="recforge.data.datamodule"):
        seqs = dm.load_sequences()
    assert dm.stats["duplicates_removed"] == 3
    assert dm.stats["interactions"] == 12 and seqs.items.tolist() == [1, 2, 3, 4, 5, 6, 7, 2, 3, 3, 8, 1]
    assert seqs.ratings[2] == 4.0  # the first of the repeated rows is kept
    assert "dataset tiny: removed 3 duplicate interactions (same user, item and timestamp)" in caplog.messages
    cached = make_dm(tmp_path, rows=DUPLICATED)
    rebuilt = count_builds(cached)
    cached.load_sequences()
    assert rebuilt == [] and cached.stats == dm.stats  # the count survives the cache


def test_filtering_messages_name_dataset_source_and_settings(tmp_path):
    class FileReader(InMemoryReader):
        def source_files(self) -> list:
            return [tmp_path / "events.csv"]

    dm = SequenceDataModule(name="events", reader=FileReader(ROWS), split=LeaveOneOut(), max_len=3, user_k=3, item_k=4)
    with pytest.raises(RecforgeError) as info:
        dm.load_sequences()
    assert str(info.value) == (
        f"dataset 'events': filtering removed all 12 interactions read from {tmp_path / 'events.csv'} "
        "(dataset.min_rating=None, dataset.user_k=3, dataset.item_k=4: every user needs at least 3 and every item "
        "at least 4 interactions); lower these values."
    )
    dm = SequenceDataModule(name="events", reader=FileReader(ROWS), split=LeaveOneOut(), max_len=3, min_rating=9)
    with pytest.raises(RecforgeError) as info:
        dm.load_sequences()
    assert str(info.value) == (
        f"dataset 'events': none of the 12 interactions read from {tmp_path / 'events.csv'} has a rating >= "
        "dataset.min_rating=9; lower dataset.min_rating or set it to null."
    )


def test_split_leaving_no_sample_names_the_dataset():
    short = [("u1", "a", 1, 1.0), ("u1", "b", 2, 1.0), ("u2", "a", 1, 1.0)]
    with pytest.raises(RecforgeError) as info:
        make_dm(rows=short, name="short").setup("fit")
    assert str(info.value) == (
        "dataset 'short' (2 users, the longest with 2 interactions): split.leave_one_out: no user has the 3 "
        "interactions it needs (train, validation, test)."
    )
    with pytest.raises(RecforgeError) as info:
        make_dm(rows=short, name="short", split=TemporalRatio(0.5, 0.3)).setup("fit")
    assert str(info.value) == (
        "dataset 'short' (2 users, the longest with 2 interactions): the split leaves no validation and no test "
        "sample; no user has enough interactions for a training, a validation and a test part."
    )


# ------------------------------------------------------------------------- preprocess() and cache_path()


def test_preprocess_of_read_frame_equals_load_sequences(tmp_path):
    dm = make_dm(tmp_path, rows=ROWS + [("u1", "c", 3, 4.0)])  # one exact repeat
    seqs, removed = dm.preprocess(dm.reader.read())
    assert removed == 1
    loaded = make_dm(tmp_path, rows=ROWS + [("u1", "c", 3, 4.0)]).load_sequences()
    assert_same_sequences(seqs, loaded)
    assert seqs.items.tolist() == [1, 2, 3, 4, 5, 6, 7, 2, 3, 3, 8, 1]


def test_cache_path_is_the_file_load_sequences_writes(tmp_path):
    assert make_dm().cache_path() is None
    dm = make_dm(tmp_path)
    path = dm.cache_path()
    assert path is not None and not path.exists()
    dm.load_sequences()
    assert list((tmp_path / "cache").glob("*.npz")) == [path]
    assert path.name.startswith("tiny-") and make_dm(tmp_path, min_rating=2.0).cache_path() != path


def test_overlapping_training_windows_carry_how_many_targets_they_own(tmp_path):
    # u1's training items a b c d e (ids 1..5; f and g are validation and test): with max_len 3 and stride 2 the
    # windows end at e and at c; each owns its last 2 transitions (c->d d->e | a->b b->c)
    dm = make_dm(tmp_path, train_stride=2)
    dm.setup("fit")
    windows = dm.train_set.windows.tolist()
    assert [2, 3, 4, 5] in windows and [0, 1, 2, 3] in windows
    assert dm.train_set.new_targets[windows.index([2, 3, 4, 5])] == 2
    assert dm.train_set.new_targets[windows.index([0, 1, 2, 3])] == 2
    batch = dm.train_set.__getitems__([0, 1])
    assert batch["new_targets"].tolist() == dm.train_set.new_targets[:2].tolist()
    # stride = max_len is the default layout, with no new_targets key
    default, same = make_dm(tmp_path), make_dm(tmp_path, train_stride=3)
    default.setup("fit"), same.setup("fit")
    assert torch.equal(default.train_set.windows, same.train_set.windows) and same.train_set.new_targets is None
    assert "new_targets" not in same.train_set.__getitems__([0])
    with pytest.raises(RecforgeError, match=r"^dataset.train_stride=4 must be between 1 and dataset.max_len=3 "):
        make_dm(tmp_path, train_stride=4)


# ------------------------------------------------------------------------------- batches by a target budget


def test_budget_cuts_split_the_targets_into_equal_shares_by_hand():
    from recforge.data.datamodule import budget_cuts

    # 4 windows of 5 targets, 2 batches: 10 and 10
    assert budget_cuts(torch.tensor([5, 5, 5, 5]), 2).tolist() == [2]
    # one long window (10 targets) and ten of 1: middles 5, 10.5, 11.5, ...; the share is 10, so the cut is after
    # the long window: batches of 10 and 10 targets
    assert budget_cuts(torch.tensor([10] + [1] * 10), 2).tolist() == [1]
    # shares 34 and 68 both fall in the last window (middle 52): cuts pushed back so no batch is empty
    assert budget_cuts(torch.tensor([1, 1, 100]), 3).tolist() == [1, 2]
    # more batches asked than windows: one window each
    assert budget_cuts(torch.tensor([3, 3]), 5).tolist() == [1]
    assert budget_cuts(torch.tensor([3, 3]), 1).tolist() == []


def test_target_budget_sampler_gives_every_window_once_in_batches_of_about_the_budget():
    from torch.utils.data import RandomSampler

    from recforge.data.datamodule import TargetBudgetBatchSampler

    torch.manual_seed(0)
    lengths = torch.randint(2, 52, (1000,))  # (W,) items per window
    targets = lengths - 1  # (W,) non-overlapping windows train every position but the first
    sampler = TargetBudgetBatchSampler(RandomSampler(range(1000)), 500, targets, lengths, bucket_batches=4)
    total = int(targets.sum())
    assert len(sampler) == -(-total // 500)  # ceil(targets / budget) batches
    batches = list(sampler)
    assert len(batches) == len(sampler)
    assert sorted(i for b in batches for i in b) == list(range(1000))  # every window exactly once
    sizes = torch.tensor([int(targets[b].sum()) for b in batches])
    share = total / len(batches)
    # each batch holds its share of the targets within one window's worth (a window is never split)
    assert int(sizes.min()) >= share - 50 and int(sizes.max()) <= share + 50
    # windows of similar length share a batch (sorted inside pools), so short windows come many to a batch
    spread = sum(int(lengths[b].max() - lengths[b].min()) for b in batches) / len(batches)
    assert spread < 49 / 3
    assert list(sampler) != batches  # a new order every epoch


def test_target_budget_sampler_makes_the_same_number_of_steps_on_every_ddp_process():
    from torch.utils.data import DistributedSampler

    from recforge.data.datamodule import TargetBudgetBatchSampler

    torch.manual_seed(0)
    targets = torch.randint(1, 51, (999,))
    data = list(range(999))
    counts = []
    for rank in (0, 1):
        shard = DistributedSampler(data, num_replicas=2, rank=rank, shuffle=True, seed=3)
        sampler = TargetBudgetBatchSampler(shard, 256, targets)  # no length bucketing
        batches = list(sampler)
        assert len(batches) == len(sampler) and all(batches)
        counts.append(len(batches))
    # 500 windows per process x the mean targets per window / 256, the same on both processes
    assert counts[0] == counts[1] == -(-int(500 * float(targets.float().mean())) // 256)


def test_datamodule_batch_targets_cuts_training_batches_by_targets(tmp_path):
    # u1 trains on a b c d e (f validation, g test); with max_len 3 its windows are [b c d e] (3 targets) and
    # [_ _ a b] (1 target); u2 and u3 have nothing to train. 4 targets at a budget of 3: 2 batches, one window each,
    # where batch_size=1000 alone would make one batch
    dm = make_dm(tmp_path, batch_targets=3, batch_size=1000)
    dm.setup()
    assert dm.train_set.windows.tolist() == [[2, 3, 4, 5], [0, 0, 1, 2]]
    batches = list(dm.train_dataloader())
    assert sorted(int(((b["items"] > 0).sum(dim=1) - 1).sum()) for b in batches) == [1, 3]
    # overlapping windows (stride 1) own one new target each, and those are what the budget counts: 4 windows of
    # 1 target at a budget of 3 make ceil(4 / 3) = 2 batches of 2
    dm = make_dm(tmp_path, batch_targets=3, train_stride=1)
    dm.setup()
    assert dm.train_set.new_targets.tolist() == [1, 1, 1, 1]
    assert sorted(int(b["new_targets"].sum()) for b in dm.train_dataloader()) == [2, 2]


def test_a_budget_below_one_window_is_refused_naming_the_key(tmp_path):
    with pytest.raises(RecforgeError, match=r"^dataset.batch_targets=2 must be >= dataset.max_len=3: one training "
                                            r"window holds up to max_len targets"):
        make_dm(tmp_path, batch_targets=2)


def test_lightning_swaps_the_target_budget_samplers_sampler_for_a_distributed_one(tmp_path):
    from lightning.fabric.utilities.data import _replace_dunder_methods
    from lightning.pytorch.utilities.data import _update_dataloader
    from torch.utils.data import BatchSampler, DataLoader, DistributedSampler

    from recforge.data.datamodule import TargetBudgetBatchSampler

    dm = make_dm(tmp_path, batch_targets=3, train_stride=1)
    dm.setup()
    with _replace_dunder_methods(DataLoader, "dataset"), _replace_dunder_methods(BatchSampler):
        loader = dm.train_dataloader()  # as Lightning's trainer requests it (recording the init arguments)
    shard = DistributedSampler(dm.train_set, num_replicas=2, rank=1, shuffle=True, seed=0)
    loader = _update_dataloader(loader, shard)  # what Lightning does under DDP
    assert isinstance(loader.batch_sampler, TargetBudgetBatchSampler) and loader.batch_sampler.sampler is shard
    assert loader.batch_sampler.budget == 3
    # this process's 2 of the 4 one-target windows: ceil(2 / 3) = 1 batch holding both
    assert [int(b["new_targets"].sum()) for b in loader] == [2]
