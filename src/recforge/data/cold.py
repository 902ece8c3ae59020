"""Cold-start split: a fraction of the item catalogue is held out of training entirely.

Protocol (``dataset.cold_items`` > 0, leave-one-out split only):

- :func:`choose_cold_items` draws ``round(fraction * N)`` item ids uniformly at random with ``dataset.cold_seed``,
  independent of the training seed, so every model and every seed sees the same cold set.
- :func:`hold_out_items` removes cold items from every user's sequence except at the last ``keep_last``
  positions (leave-one-out: 2, the validation and the test target), so a cold item is only ever an evaluation
  target; the validation target is part of the test input, as in any leave-one-out. A user left with fewer than
  3 items is then dropped by the split as usual.
- Training never scores a cold item: it is in no training window, its logit is -inf in a full-softmax loss and
  negative samplers never draw it (see :class:`recforge.models.module.NextItemModule`). Evaluation ranks over
  all items as usual, and metrics are reported over all targets and separately over warm and cold targets.
- A cold item's id row is never trained. ``NextItemModule(cold_id_neighbours=k)`` replaces it before every
  evaluation by :func:`recforge.models.embedders.text_neighbour_rows` (the mean id row of its k most text-similar warm items) in models
  whose items also have text (hybrid); ID-only models keep the random initial rows.
"""
from __future__ import annotations

import numpy as np

from recforge.data.preprocess import Sequences


def choose_cold_items(num_items: int, fraction: float, seed: int) -> np.ndarray:
    """Mask (N+1,) bool of ``round(fraction * N)`` cold item ids drawn uniformly from 1..N; id 0 (padding) is
    never cold. ``fraction`` in [0, 1)."""
    if not 0 <= fraction < 1:
        raise ValueError(f"fraction={fraction} must be in [0, 1)")
    cold = np.zeros(num_items + 1, dtype=bool)
    count = round(fraction * num_items)
    if count:
        cold[1 + np.random.default_rng(seed).choice(num_items, size=count, replace=False)] = True
    return cold


def hold_out_items(seqs: Sequences, cold: np.ndarray, keep_last: int) -> Sequences:
    """``seqs`` without the cold items (``cold``: (N+1,) bool) at any position before each user's last
    ``keep_last``; users, their order and the item ids stay the same (a user may end up shorter or empty)."""
    lengths = seqs.lengths  # (U,)
    users = np.repeat(np.arange(seqs.num_users), lengths)  # (n,) user row of each interaction
    from_end = seqs.indptr[users + 1] - np.arange(len(seqs.items))  # (n,) 1 = the user's last item
    keep = ~cold[seqs.items] | (from_end <= keep_last)  # (n,)
    indptr = np.zeros_like(seqs.indptr)
    np.cumsum(np.bincount(users[keep], minlength=seqs.num_users), out=indptr[1:])
    return Sequences(items=seqs.items[keep], indptr=indptr, ratings=seqs.ratings[keep], user_ids=seqs.user_ids,
                     item_ids=seqs.item_ids, timestamps=seqs.timestamps[keep])


def cold_target_counts(items: np.ndarray, indptr: np.ndarray, samples: np.ndarray,
                       cold: np.ndarray) -> tuple[int, int]:
    """(warm, cold) numbers of evaluation samples ``samples`` (S, 2) rows of (user, target position)."""
    targets = items[indptr[samples[:, 0]] + samples[:, 1]]  # (S,)
    n_cold = int(cold[targets].sum())
    return len(targets) - n_cold, n_cold
