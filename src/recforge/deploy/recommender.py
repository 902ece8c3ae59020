"""Top-K recommendations from item histories, shared by ``recforge-recommend`` and ``recforge-serve``.

A history is a list of item ids, internal (integers 1..N) or the dataset's raw ids (mapped through the run's id
map). Ids outside the catalogue are reported as ``unknown`` and skipped; the last ``max_len`` known items are the
model's input; by default every known history item is excluded from the top-K, as evaluation masks history.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from recforge.deploy.model import DeployedModel

ItemId = int | str
EMPTY_HISTORY = "no item of the history is in the catalogue; these are the model's recommendations for an empty history"


@dataclass(frozen=True)
class Encoded:
    """A history in internal ids: ``known`` in the given order, ``unknown`` as given."""

    known: list[int]
    unknown: list[ItemId]


@dataclass(frozen=True)
class Query:
    """One top-K question: answer in raw ids or internal ids; exclude the known history items or not."""

    encoded: Encoded
    k: int
    raw_ids: bool = False
    exclude_history: bool = True


class Recommender:
    """Encodes histories and answers top-K queries in batches of ``batch_size`` (no gradients)."""

    def __init__(self, model: DeployedModel, batch_size: int = 256) -> None:
        self.model, self.batch_size = model, batch_size

    def check_ids(self, history: Sequence[Any], raw_ids: bool) -> None:
        """Raise TypeError naming the first id of the wrong type: integers, or (raw ids) integers or strings."""
        for i, item in enumerate(history):
            if isinstance(item, bool) or not isinstance(item, (int, str) if raw_ids else int):
                expected = "an integer or a string (a raw id)" if raw_ids else "an integer (an internal id; raw ids need the raw-ids option)"
                raise TypeError(f"history[{i}] = {item!r} is not an item id: expected {expected}")

    def encode(self, history: Sequence[ItemId], raw_ids: bool) -> Encoded:
        """Internal ids of the known items; raw ids are looked up as strings (42 and "42" are the same id)."""
        self.check_ids(history, raw_ids)
        if raw_ids and self.model.item_ids is None:
            raise ValueError(f"raw ids need the run's item id map, which is unavailable ({self.model.item_ids_problem})")
        known: list[int] = []
        unknown: list[ItemId] = []
        for item in history:
            internal = self.model.item_ids.internal(str(item)) if raw_ids else item  # type: ignore[union-attr]
            if isinstance(internal, int) and 1 <= internal <= self.model.num_items:
                known.append(internal)
            else:
                unknown.append(item)
        return Encoded(known, unknown)

    def inputs(self, batch: Sequence[Encoded]) -> Tensor:
        """The last max_len known items of each history, left-padded with 0. (B, L) int64."""
        L = self.model.max_len
        items = torch.zeros(len(batch), L, dtype=torch.long)  # (B, L)
        for row, enc in enumerate(batch):
            recent = enc.known[-L:]
            if recent:
                items[row, L - len(recent):] = torch.tensor(recent, dtype=torch.long)
        return items

    def scores(self, batch: Sequence[Encoded], exclude_history: Sequence[bool]) -> Tensor:
        """Model scores (B, N+1), padding and (where asked) every known history item at -inf."""
        with torch.inference_mode():
            scores = self.model.scorer(self.inputs(batch))  # (B, N+1)
            scores[:, 0] = float("-inf")
            for row, (enc, exclude) in enumerate(zip(batch, exclude_history)):
                if exclude:
                    scores[row, enc.known] = float("-inf")
        return scores

    def recommend(self, queries: Sequence[Query]) -> list[dict[str, Any]]:
        """One answer per query: ``items`` (top-K, best first, in the id space asked for), ``scores``,
        ``unknown``; ``warning`` when no known item was left. Excluded items never appear, so fewer than K may."""
        answers: list[dict[str, Any]] = []
        for start in range(0, len(queries), self.batch_size):
            chunk = queries[start:start + self.batch_size]
            scores = self.scores([q.encoded for q in chunk], [q.exclude_history for q in chunk])  # (B, N+1)
            top = torch.topk(scores, min(max(q.k for q in chunk), self.model.num_items), dim=1)  # (B, K)
            for query, values, ids in zip(chunk, top.values.tolist(), top.indices.tolist()):
                answers.append(self._answer(query, values[:query.k], ids[:query.k]))
        return answers

    def _answer(self, query: Query, values: list[float], ids: list[int]) -> dict[str, Any]:
        keep = [i for i, value in enumerate(values) if value != float("-inf")]
        items: list[ItemId] = [ids[i] for i in keep]
        if query.raw_ids:
            items = [self.model.item_ids.raw[i] for i in items]  # type: ignore[union-attr, index]
        answer: dict[str, Any] = {"items": items, "scores": [values[i] for i in keep], "unknown": query.encoded.unknown}
        if not query.encoded.known:
            answer["warning"] = EMPTY_HISTORY
        return answer
