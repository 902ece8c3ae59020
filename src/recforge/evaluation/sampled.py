"""Sampled ranking metrics (``evaluation.sampled``), only to reproduce papers that report them.

Each evaluation target is ranked among itself and N negatives instead of among all items. Such metrics overstate
quality and can change the order of models (Krichene & Rendle, "On Sampled Metrics for Item Recommendation",
KDD 2020); full ranking stays the default (``evaluation.sampled.negatives: null``).

The protocol (as RecBole's ``uni100``/``pop100``):

- negatives are never the user's own items: every item of the user's whole sequence (training, validation and
  test items) is excluded; the target is the positive. Never padding id 0.
- within a sample they are distinct (drawn without replacement); a :class:`CandidateSampler` gives each item id
  a weight: :class:`UniformCandidates` (every item alike) or :class:`PopularityCandidates` (training
  interactions; an item never seen in training is never drawn).
- drawn once per sample, as a pure function of (seed, user row, target position, the user's items, the weights):
  every model evaluated on the same data, at any batch size, on one process or many, meets the same candidates.
  Sample i's random numbers come from its own counter-based stream (SplitMix64 over a key of seed, user and
  position), and its negatives are the first N acceptable draws of that stream (weighted draws with replacement,
  skipping the user's items and repeats: exactly sequential weighted sampling without replacement). They do not
  depend on which other samples are drawn, nor on how the draws are batched, and the first N of N' > N negatives
  are the N negatives.
- ranked like full ranking: rank = candidates not strictly below the target (the target included), so ties
  count against the target and a NaN target ranks last (:func:`recforge.evaluation.metrics.target_ranks`).
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from recforge.errors import RecforgeError
from recforge.evaluation.metrics import target_ranks
from recforge.rules import check_arguments, int_at_least, optional, rule_table

log = logging.getLogger(__name__)

CANDIDATES_DIR = "sampled_candidates"  # beside the run (recforge-train) or in recforge-eval's output directory


# ------------------------------------------------------------------------------------------- samplers


class CandidateSampler:
    """Role: how likely each item id is drawn as a negative. ``weights(item_counts)``: (N+1,) training
    interactions per id -> (N+1,) float64 weights, 0 = never drawn (always so for padding id 0). ``name`` labels
    the candidate files."""

    name = ""

    def weights(self, item_counts: Tensor) -> np.ndarray:
        raise NotImplementedError


class UniformCandidates(CandidateSampler):
    """Every item id 1..N alike."""

    name = "uniform"

    def weights(self, item_counts: Tensor) -> np.ndarray:
        weights = np.ones(len(item_counts), dtype=np.float64)  # (N+1,)
        weights[0] = 0.0
        return weights


class PopularityCandidates(CandidateSampler):
    """Item ids in proportion to their training interactions (items never seen in training are never drawn)."""

    name = "popularity"

    def weights(self, item_counts: Tensor) -> np.ndarray:
        weights = item_counts.double().cpu().numpy().copy()  # (N+1,)
        weights[0] = 0.0
        return weights


# ------------------------------------------------------------------------------------------- random streams

GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # SplitMix64's increment
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser of uint64 values (wrapping arithmetic), elementwise."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * _M1
        x = (x ^ (x >> np.uint64(27))) * _M2
        return x ^ (x >> np.uint64(31))


def stream_keys(seed: int, users: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """The key of each sample's random stream, from (seed, user row, target position). (S,) uint64."""
    with np.errstate(over="ignore"):
        key = mix64(np.full(len(users), seed, dtype=np.uint64) + GOLDEN)  # (S,)
        key = mix64(key ^ (users.astype(np.uint64) * GOLDEN))
        return mix64(key ^ (positions.astype(np.uint64) * GOLDEN + np.uint64(1)))


def stream_uniforms(keys: np.ndarray, start: np.ndarray, count: int) -> np.ndarray:
    """Draws ``start .. start + count - 1`` of each stream as floats in [0, 1). keys, start: (R,) -> (R, count)."""
    steps = start.astype(np.uint64)[:, None] + np.arange(1, count + 1, dtype=np.uint64)[None, :]  # (R, count)
    with np.errstate(over="ignore"):
        bits = mix64(keys[:, None] + steps * GOLDEN)  # (R, count)
    return (bits >> np.uint64(11)).astype(np.float64) * 2.0 ** -53


# ------------------------------------------------------------------------------------------- drawing


def owned_keys(indptr: np.ndarray, items: np.ndarray, num_ids: int) -> np.ndarray:
    """Sorted distinct ``user * num_ids + item`` of every user's whole sequence (CSR ``indptr`` (U+1,), ``items``)."""
    users = np.repeat(np.arange(len(indptr) - 1, dtype=np.int64), np.diff(indptr))  # (n,)
    return np.unique(users * num_ids + items.astype(np.int64))


def _contains(sorted_keys: np.ndarray, queries: np.ndarray) -> np.ndarray:
    if sorted_keys.size == 0:
        return np.zeros(queries.shape, dtype=bool)
    at = np.minimum(np.searchsorted(sorted_keys, queries), sorted_keys.size - 1)
    return sorted_keys[at] == queries


def available_items(users: np.ndarray, indptr: np.ndarray, items: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """How many item ids each sample's negatives can come from: weight > 0 and not the user's. (S,) int64."""
    num_ids = len(weights)
    owned = owned_keys(indptr, items, num_ids)
    drawable_owned = np.bincount(owned // num_ids, weights=weights[owned % num_ids] > 0, minlength=len(indptr) - 1)
    return int((weights > 0).sum()) - drawable_owned[users].astype(np.int64)


def draw_negatives(users: np.ndarray, positions: np.ndarray, indptr: np.ndarray, items: np.ndarray,
                   weights: np.ndarray, negatives: int, seed: int, chunk: int = 4096) -> np.ndarray:
    """N distinct negatives per sample, in proportion to ``weights``, never an item of the sample's user.

    users, positions: (S,) user row and target position of each sample; indptr (U+1,), items (n,): every user's
    whole sequence (CSR); weights: (N+1,) >= 0, weight 0 = never drawn (padding id 0 must have 0). Each sample
    needs at least ``negatives`` drawable items (:func:`available_items`). ``chunk`` samples are drawn at a time
    (memory only: the result does not depend on it). (S, negatives) int64.
    """
    num_ids = len(weights)
    cdf = np.cumsum(weights, dtype=np.float64)  # (N+1,)
    last = int(np.flatnonzero(weights > 0)[-1])  # highest drawable id (guards float rounding at u -> 1)
    owned = owned_keys(indptr, items, num_ids)
    keys = stream_keys(seed, users, positions)  # (S,)
    out = np.zeros((len(users), negatives), dtype=np.int64)
    for start in range(0, len(users), chunk):
        rows = slice(start, start + chunk)
        out[rows] = _draw_rows(keys[rows], users[rows].astype(np.int64), owned, cdf, last, negatives)
    return out


def _draw_rows(keys: np.ndarray, users: np.ndarray, owned: np.ndarray, cdf: np.ndarray, last: int,
               negatives: int) -> np.ndarray:
    """The first ``negatives`` acceptable draws of each row's stream (weighted, with replacement; a draw is
    acceptable when it is not the user's and not a repeat in the row), in rounds of growing width. (R, N)."""
    num_ids, total = len(cdf), cdf[-1]
    out = np.zeros((len(keys), negatives), dtype=np.int64)  # (R, N); id 0 = not yet drawn
    got, used = np.zeros(len(keys), dtype=np.int64), np.zeros(len(keys), dtype=np.int64)  # (R,) each
    pending, width = np.arange(len(keys)), 2 * negatives + 16
    while pending.size:
        rows = pending
        drawn = np.searchsorted(cdf, stream_uniforms(keys[rows], used[rows], width) * total, side="right")  # (P, W)
        drawn = np.minimum(drawn, last)
        used[rows] += width
        fresh = ~_contains(owned, users[rows, None] * num_ids + drawn)  # (P, W) not the user's
        # first occurrence in [negatives kept so far, this round's draws]: repeats are skipped
        seen = np.concatenate([out[rows], drawn], axis=1)  # (P, N + W)
        flat = (np.arange(len(rows))[:, None] * num_ids + seen).ravel()
        first = np.zeros(flat.size, dtype=bool)
        first[np.unique(flat, return_index=True)[1]] = True
        ok = first.reshape(seen.shape)[:, negatives:] & fresh  # (P, W)
        order = np.cumsum(ok, axis=1)  # (P, W): 1-based count of acceptable draws so far this round
        need = negatives - got[rows]  # (P,)
        take = ok & (order <= need[:, None])
        r, c = np.nonzero(take)
        out[rows[r], got[rows[r]] + order[r, c] - 1] = drawn[r, c]
        got[rows] += np.minimum(order[:, -1], need)
        pending = rows[got[rows] < negatives]
        width = min(2 * width, max(2 * negatives + 16, 2**22 // max(pending.size, 1)))  # few, ever wider rounds
    return out


# ------------------------------------------------------------------------------------------- ranking


def sampled_ranks(scores: Tensor, masked: Tensor | None = None, fill: float = float("-inf")) -> Tensor:
    """Rank of each target among its candidates: scores (B, 1+N), column 0 the target's, then its N negatives.

    ``masked`` (B,) bool marks targets the history mask covers (a repeated item): their score becomes ``fill`` as
    in full ranking (-inf: ranked last, unreachable). Ties count against the target and a NaN target ranks last,
    as :func:`recforge.evaluation.metrics.target_ranks`. (B,) int64 in 1..N+1.
    """
    if masked is not None:
        target = torch.where(masked, torch.full_like(scores[:, 0], fill), scores[:, 0])  # (B,)
        scores = torch.cat([target.unsqueeze(1), scores[:, 1:]], dim=1)  # (B, 1+N)
    return target_ranks(scores, torch.zeros(scores.shape[0], dtype=torch.long, device=scores.device))


# ------------------------------------------------------------------------------------------- the part


class EvalSampleSource(Protocol):
    """What sampled ranking reads of an evaluation set (recforge.data.datamodule.EvalSamples): the user row and
    target position of every sample (S,), and every user's whole sequence as CSR ``items`` (n,), ``indptr`` (U+1,)."""

    users: Tensor
    positions: Tensor
    items: Tensor
    indptr: Tensor


class SampledRanking:
    """``evaluation.sampled``: rank each target among ``negatives`` drawn negatives (see the module docstring).

    ``negatives`` None = full ranking (NextItemModule then ignores this part). :meth:`fit` receives the training
    item counts and the samples each stage evaluates; :meth:`negatives_for` gives a batch its rows of the stage's
    candidate table, drawn on first use and saved (when given a directory) as
    ``<dir>/<split>_<sampler>_n<N>_seed<seed>.npy``: (S, 1+N) item ids, row = sample index, column 0 the target.
    """

    argument_rules = rule_table(negatives=optional(int_at_least(1)), seed=int_at_least(0))  # recforge.rules

    def __init__(self, negatives: int | None, sampler: CandidateSampler, seed: int = 0) -> None:
        check_arguments(SampledRanking, "evaluation.sampled", negatives=negatives, seed=seed)
        self.negatives, self.sampler, self.seed = negatives, sampler, seed
        self._weights: np.ndarray | None = None
        self._stages: dict[str, tuple[str, EvalSampleSource]] = {}
        self._tables: dict[str, Tensor] = {}  # stage -> (S, N) negatives
        self._saved: set[str] = set()
        self._announced = False

    @property
    def protocol(self) -> str:
        return f"{self.negatives} {self.sampler.name} negatives per sample (seed {self.seed})"

    def fit(self, item_counts: Tensor, stages: Mapping[str, tuple[str, EvalSampleSource]]) -> None:
        """Weights from the training counts (N+1,); ``stages``: stage ("val", "test") -> (split name, its samples).
        A sample whose user leaves fewer than ``negatives`` drawable items is a user error, raised here."""
        self._weights = self.sampler.weights(item_counts)
        self._stages, self._tables, self._saved = dict(stages), {}, set()
        for split, samples in self._stages.values():
            if getattr(samples, "target_indptr", None) is not None:  # EvalSamples of a split with target sets
                raise RecforgeError(
                    f"evaluation.sampled.negatives={self.negatives} ranks one target per sample, but the {split} "
                    "samples of this split have sets of targets; use a leave-one-out or ratio split, or "
                    "evaluation.sampled.negatives=null (full ranking).")
            self._check_enough(split, samples)

    def _check_enough(self, split: str, samples: EvalSampleSource) -> None:
        assert self._weights is not None and self.negatives is not None
        left = available_items(samples.users.numpy(), samples.indptr.numpy(), samples.items.numpy(), self._weights)
        short = np.flatnonzero(left < self.negatives)
        if short.size:
            raise RecforgeError(
                f"evaluation.sampled.negatives={self.negatives} is more than the items left to draw for {short.size} "
                f"of {len(left)} {split} samples (the fewest: {int(left.min())}, after the user's own items and "
                f"the items the {self.sampler.name} sampler never draws); lower evaluation.sampled.negatives.")

    def negatives_for(self, stage: str, index: Tensor, directory: Path | None = None) -> Tensor:
        """The negatives of the batch's samples ``index`` (B,) in ``stage``'s split: (B, N) int64 on index's
        device. The first call of a stage draws its table (and saves it in ``directory``, when given)."""
        if stage not in self._tables:
            self._tables[stage] = self._draw(stage)
        if directory is not None and stage not in self._saved:
            self._save(stage, directory)
        return self._tables[stage][index.cpu()].to(index.device)  # (B, N)

    def _draw(self, stage: str) -> Tensor:
        if self._weights is None or stage not in self._stages or self.negatives is None:
            raise RuntimeError(f"SampledRanking.fit() gave no samples for stage {stage!r}")
        if not self._announced:
            log.warning("sampled metrics (%s): they are not consistent with full ranking, overstate quality and can "
                        "change the order of models (Krichene & Rendle, KDD 2020); report them only beside papers "
                        "that used them.", self.protocol)
            self._announced = True
        _, samples = self._stages[stage]
        drawn = draw_negatives(samples.users.numpy(), samples.positions.numpy(), samples.indptr.numpy(),
                               samples.items.numpy(), self._weights, self.negatives, self.seed)  # (S, N)
        return torch.from_numpy(drawn)

    def file_name(self, split: str) -> str:
        return f"{split}_{self.sampler.name}_n{self.negatives}_seed{self.seed}.npy"

    def _save(self, stage: str, directory: Path) -> None:
        """(S, 1+N) candidates, column 0 the target, in the smallest unsigned integer type that holds every id."""
        split, samples = self._stages[stage]
        targets = samples.items[samples.indptr[samples.users] + samples.positions]  # (S,)
        table = torch.cat([targets.unsqueeze(1), self._tables[stage]], dim=1).numpy()  # (S, 1+N)
        directory.mkdir(parents=True, exist_ok=True)
        np.save(directory / self.file_name(split), table.astype(np.min_scalar_type(max(int(table.max()), 1))))
        self._saved.add(stage)
