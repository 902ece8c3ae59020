"""Learning from new events: the cut between the events a model has seen and the later ones (pure functions).

A cut (``dataset.until``, ``dataset.since``) splits every user's time-ordered sequence into a prefix (the events
before the cut) and the rest:

- a dataset with timestamps: the cut is a time in seconds (Unix time for MovieLens); events strictly before it
  form the prefix;
- a dataset without timestamps (S3-Rec sequence files: only an order): the cut is a per-user position, given as a
  negative integer ``-n``: each user's last ``n`` events are after the cut (a user with ``n`` or fewer events has
  all of them after it).

``until`` keeps only the prefixes (the world a model trained before the cut saw, with its own item map).
``since`` keeps everything as input but makes only the events from the cut on training targets; with
``base_item_ids`` (an earlier run's map, ``init_from``) the item map extends the earlier one: its items keep their
ids, new items follow in order of first appearance.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from recforge.data.preprocess import Sequences
from recforge.errors import RecforgeError


def events_before(seqs: Sequences, cut: float, key: str = "dataset.since") -> np.ndarray:
    """(U,) how many of each user's first events lie before ``cut`` (see the module docstring)."""
    if seqs.has_timestamps:
        users = np.repeat(np.arange(seqs.num_users), seqs.lengths)  # (n,)
        return np.bincount(users[seqs.timestamps < cut], minlength=seqs.num_users).astype(np.int64)  # (U,)
    if cut >= 0 or cut != int(cut):
        raise RecforgeError(f"{key}={cut}: this dataset has no timestamps, so the cut is a position: a negative "
                            "integer -n puts each user's last n events after it.")
    return np.maximum(seqs.lengths + int(cut), 0).astype(np.int64)  # (U,)


def keep_prefixes(seqs: Sequences, counts: np.ndarray) -> Sequences:
    """The first ``counts[u]`` events of each user; users left without events and items no longer seen are
    dropped, items renumbered from 1 by first appearance (as :func:`recforge.data.preprocess.to_sequences`)."""
    counts = np.minimum(counts, seqs.lengths)  # (U,)
    keep = np.arange(len(seqs.items)) - np.repeat(seqs.indptr[:-1], seqs.lengths) < np.repeat(counts, seqs.lengths)
    users = counts > 0
    codes, uniques = pd.factorize(seqs.items[keep])  # (n',) 0-based, by first appearance
    indptr = np.concatenate([[0], np.cumsum(counts[users])]).astype(np.int64)
    return Sequences(items=(codes + 1).astype(np.int64), indptr=indptr, ratings=seqs.ratings[keep],
                     user_ids=seqs.user_ids[users], item_ids=np.concatenate([seqs.item_ids[:1], seqs.item_ids[uniques]]),
                     timestamps=seqs.timestamps[keep])


def extend_item_map(seqs: Sequences, base_item_ids: list[str]) -> tuple[Sequences, int]:
    """``seqs`` renumbered so that the raw ids of ``base_item_ids`` (entry 0 = padding) keep their internal ids
    and the other items follow from ``len(base_item_ids)`` in order of first appearance; the catalogue keeps the
    base items that no longer occur. Returns the sequences and the number of new items."""
    base = {raw: i for i, raw in enumerate(base_item_ids) if i > 0}
    raw = np.asarray([str(r) for r in seqs.item_ids], dtype=object)  # (N+1,)
    known = np.array([base.get(r, 0) for r in raw], dtype=np.int64)  # (N+1,) base id, 0 for new items
    new = np.flatnonzero(known == 0)[1:]  # internal ids of new items (entry 0 is padding)
    order = np.argsort(first_positions(seqs.items, len(raw))[new], kind="stable")  # by first appearance
    mapping = known.copy()
    mapping[new[order]] = len(base_item_ids) + np.arange(len(new))
    item_ids = np.concatenate([np.asarray(base_item_ids, dtype=object), raw[new[order]]])
    return Sequences(items=mapping[seqs.items], indptr=seqs.indptr, ratings=seqs.ratings, user_ids=seqs.user_ids,
                     item_ids=item_ids, timestamps=seqs.timestamps), len(new)


def first_positions(items: np.ndarray, size: int) -> np.ndarray:
    """(size,) the first flat position of each item id (len(items) for ids that never occur)."""
    first = np.full(size, len(items), dtype=np.int64)
    np.minimum.at(first, items, np.arange(len(items)))
    return first


def windows_since(starts: np.ndarray, window_end: np.ndarray, owned: np.ndarray,
                  window_users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For training windows ending at position ``window_end`` (W,) of user ``window_users`` (W,) and owning their
    last ``owned`` (W,) targets: which windows still own a target at a position >= the user's cut ``starts`` (U,)
    (keep, (W,) bool), and how many of their last targets count (W,)."""
    first_new = np.maximum(starts[window_users], 1)  # (W,) position 0 is never a target
    counted = np.minimum(owned, window_end - first_new + 1)  # (W,)
    return counted > 0, np.maximum(counted, 0)
