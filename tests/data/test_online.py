"""The cut of recforge.data.online on hand-made sequences: events before a time or position, prefixes, the
extended item map, training windows from the cut on, and the datamodule's since/until options."""
from __future__ import annotations

import numpy as np
import pytest
from hydra.utils import instantiate

from recforge.data.online import (
    events_before,
    extend_item_map,
    keep_prefixes,
    windows_since,
)
from recforge.data.preprocess import Sequences
from recforge.errors import RecforgeError


def sequences(timestamps: bool = True) -> Sequences:
    """user u0: a b c d (t 10 20 30 40), user u1: c e (t 15 35), user u2: f (t 50); raw ids by first appearance."""
    return Sequences(items=np.array([1, 2, 3, 4, 3, 5, 6]), indptr=np.array([0, 4, 6, 7]),
                     ratings=np.full(7, np.nan, dtype=np.float32), user_ids=np.array(["u0", "u1", "u2"], dtype=object),
                     item_ids=np.array(["", "a", "b", "c", "d", "e", "f"], dtype=object),
                     timestamps=np.array([10, 20, 30, 40, 15, 35, 50.0]) if timestamps else None)


def test_events_before_a_time_or_a_position() -> None:
    assert events_before(sequences(), 30).tolist() == [2, 1, 0]  # strictly before
    assert events_before(sequences(), 100).tolist() == [4, 2, 1]
    assert events_before(sequences(timestamps=False), -2).tolist() == [2, 0, 0]  # each user's last 2 after the cut
    with pytest.raises(RecforgeError, match=r"dataset.since=30: this dataset has no timestamps, so the cut is a "
                                            r"position: a negative integer -n"):
        events_before(sequences(timestamps=False), 30)


def test_keep_prefixes_drops_empty_users_and_unseen_items_and_renumbers_by_first_appearance() -> None:
    kept = keep_prefixes(sequences(), np.array([2, 1, 0]))  # u0: a b, u1: c
    assert kept.items.tolist() == [1, 2, 3] and kept.indptr.tolist() == [0, 2, 3]
    assert kept.item_ids.tolist() == ["", "a", "b", "c"] and kept.user_ids.tolist() == ["u0", "u1"]
    assert kept.timestamps.tolist() == [10, 20, 15]
    later_first = Sequences(items=np.array([2, 1, 2]), indptr=np.array([0, 1, 3]), ratings=np.zeros(3, np.float32),
                            user_ids=np.array(["x", "y"], dtype=object), item_ids=np.array(["", "p", "q"], dtype=object))
    assert keep_prefixes(later_first, np.array([1, 1])).item_ids.tolist() == ["", "q", "p"]


def test_the_extended_item_map_keeps_every_old_id_and_appends_new_items_by_first_appearance() -> None:
    # sequences() numbered a..f 1..6; the earlier run knew z, c, a (ids 1, 2, 3): z no longer occurs
    extended, new = extend_item_map(sequences(), ["", "z", "c", "a"])
    assert new == 4
    assert extended.item_ids.tolist() == ["", "z", "c", "a", "b", "d", "e", "f"]
    assert extended.items.tolist() == [3, 4, 2, 5, 2, 6, 7]  # a b c d | c e | f
    raw = extended.item_ids[extended.items].tolist()
    assert raw == sequences().item_ids[sequences().items].tolist()  # the same events, only renumbered


def test_windows_since_count_only_targets_from_the_cut_on() -> None:
    # user 0: cut at position 3, windows ending at positions 9 and 5 owning 4 targets each; user 1: cut 0
    keep, counted = windows_since(starts=np.array([3, 0]), window_end=np.array([9, 5, 1, 4]),
                                  owned=np.array([4, 4, 4, 4]), window_users=np.array([0, 0, 0, 1]))
    assert keep.tolist() == [True, True, False, True]
    assert counted.tolist() == [4, 3, 0, 4]  # 6..9 | 3..5 | none (1 < 3) | 1..4 (position 0 is never a target)


def test_the_datamodule_reads_until_and_trains_since_the_cut(compose_train) -> None:
    start = 1_600_000_000  # the synthetic reader's t-th event of a user is t hours after it
    base = ["dataset.reader.num_users=30", "dataset.reader.num_items=80", "dataset.max_len=5",
            "dataset.reader.min_length=8", "dataset.reader.max_length=12"]
    full = instantiate(compose_train(*base).dataset)
    full.setup("fit")
    before = instantiate(compose_train(*base, f"dataset.until={start + 3 * 3600}").dataset)  # events t = 0, 1, 2
    before.setup("fit")
    assert before.load_sequences().lengths.tolist() == [3] * 30
    assert before.stats["interactions"] == 90 and before.num_items < full.num_items
    since = instantiate(compose_train(*base, f"dataset.since={start + 5 * 3600}").dataset)
    since.base_item_ids = [str(i) for i in before.load_sequences().item_ids]
    since.setup("fit")
    seqs = since.load_sequences()
    assert seqs.item_ids[:before.num_items + 1].tolist() == before.load_sequences().item_ids.tolist()
    assert since.stats["new_items"] == full.num_items - before.num_items
    # leave-one-out trains on all but the last 2 events: targets at positions 5 .. length - 3
    assert since.stats["training_targets_since"] == int((seqs.lengths - 2 - 5).sum())
    assert int(since.train_set.new_targets.sum()) == since.stats["training_targets_since"]
    # the same test events as without the cut: users, positions and raw target ids
    assert since.test_set.users.tolist() == full.test_set.users.tolist()
    assert since.test_set.positions.tolist() == full.test_set.positions.tolist()
    assert raw_test_targets(since) == raw_test_targets(full)


def raw_test_targets(datamodule) -> list[str]:
    test = datamodule.test_set
    return datamodule.load_sequences().item_ids[test.items[test.indptr[test.users] + test.positions]].tolist()
