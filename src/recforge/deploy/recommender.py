"""Top-K recommendations from item histories, shared by ``recforge-recommend`` and ``recforge-serve``.

A history is a list of item ids, internal (integers 1..N) or the dataset's raw ids (mapped through the run's id
map). Ids outside the catalogue are reported as ``unknown`` and skipped; the last ``max_len`` known items are the
model's input; by default every known history item is excluded from the top-K, as evaluation masks history.
A query may ask for explanations (:mod:`recforge.deploy.explain`): for each recommended item, the history items in
the model's input with their attribution, strongest first.
Top-K comes from every item's score, or from a faiss index over the item table (:mod:`recforge.deploy.index`).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from recforge.deploy.explain import Method, explain_top
from recforge.deploy.index import ItemIndex
from recforge.deploy.model import DeployedModel

ItemId = int | str
EMPTY_HISTORY = "no item of the history is in the catalogue; these are the model's recommendations for an empty history"


@dataclass(frozen=True)
class Encoded:
    """A history in internal ids: ``known`` in the given order, ``unknown`` as given; ``places``: the index of
    each known item in the given history."""

    known: list[int]
    unknown: list[ItemId]
    places: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Query:
    """One top-K question: answer in raw ids or internal ids; exclude the known history items or not; explain
    each recommended item or not."""

    encoded: Encoded
    k: int
    raw_ids: bool = False
    exclude_history: bool = True
    explain: bool = False


class Recommender:
    """Encodes histories and answers top-K queries in batches of ``batch_size`` (no gradients, except for
    explanations by ``explain_method``, with ``ig_steps`` steps for integrated gradients)."""

    def __init__(self, model: DeployedModel, batch_size: int = 256, index: ItemIndex | None = None,
                 explain_method: Method = "ig", ig_steps: int = 32) -> None:
        self.model, self.batch_size, self.index = model, batch_size, index
        self.explain_method, self.ig_steps = explain_method, ig_steps

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
        places: list[int] = []
        for place, item in enumerate(history):
            internal = self.model.item_ids.internal(str(item)) if raw_ids else item  # type: ignore[union-attr]
            if isinstance(internal, int) and 1 <= internal <= self.model.num_items:
                known.append(internal)
                places.append(place)
            else:
                unknown.append(item)
        return Encoded(known, unknown, places)

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
            top = self.top_exact(chunk) if self.index is None else self.top_indexed(chunk)
            shown = [kept(values[:q.k], ids[:q.k]) for q, (values, ids) in zip(chunk, top)]  # internal ids
            chunk_answers = [self._answer(q, values[:q.k], ids[:q.k]) for q, (values, ids) in zip(chunk, top)]
            self._explain([(q, a, ids) for q, a, ids in zip(chunk, chunk_answers, shown) if q.explain and ids])
            answers += chunk_answers
        return answers

    def _explain(self, asked: list[tuple[Query, dict[str, Any], list[int]]]) -> None:
        """Add ``explanations`` to each (query, answer, recommended internal ids): per recommended item,
        ``[{"item", "index", "attribution"}]`` over the history items in the model's input, strongest first;
        ``index`` is the item's place in the given history."""
        if not asked:
            return
        items = self.inputs([q.encoded for q, _, _ in asked])  # (B, L)
        lists = explain_top(self.model.scorer, self.model.num_items, items, [ids for _, _, ids in asked],
                            self.explain_method, self.ig_steps)
        for (query, answer, _), per_item in zip(asked, lists):
            answer["explanations"] = [[self._entry(query, back, value) for back, value in ranked] for ranked in per_item]

    def _entry(self, query: Query, back: int, value: float) -> dict[str, Any]:
        """The history item ``back`` places from the end of the known items (1 = the most recent)."""
        item: ItemId = query.encoded.known[-back]
        if query.raw_ids:
            item = self.model.item_ids.raw[item]  # type: ignore[union-attr]
        return {"item": item, "index": query.encoded.places[-back], "attribution": value}

    def top_exact(self, chunk: Sequence[Query]) -> list[tuple[list[float], list[int]]]:
        """(scores, ids) best first of every item, excluded ones at -inf."""
        scores = self.scores([q.encoded for q in chunk], [q.exclude_history for q in chunk])  # (B, N+1)
        top = torch.topk(scores, min(max(q.k for q in chunk), self.model.num_items), dim=1)  # (B, K)
        return list(zip(top.values.tolist(), top.indices.tolist()))

    def top_indexed(self, chunk: Sequence[Query]) -> list[tuple[list[float], list[int]]]:
        """(scores, ids) best first from the index: K + (excluded items) candidates per query, the excluded ones
        (and ids the index did not fill) dropped, so K remain when the catalogue has them."""
        with torch.inference_mode():
            hidden = self.model.scorer.hidden(self.inputs([q.encoded for q in chunk]))  # (B, H)
        return self.search(hidden, chunk)

    def search(self, hidden: Tensor, chunk: Sequence[Query]) -> list[tuple[list[float], list[int]]]:
        """top_indexed for given hidden states (B, H) of ``chunk``."""
        assert self.index is not None
        excluded = [set(q.encoded.known) if q.exclude_history else set() for q in chunk]
        values, ids = self.index.search(hidden, max(q.k + len(ex) for q, ex in zip(chunk, excluded)))  # (B, C)
        top = []
        for row_values, row_ids, ex in zip(values.tolist(), ids.tolist(), excluded):
            keep = [c for c, item in enumerate(row_ids) if item > 0 and item not in ex]
            top.append(([row_values[c] for c in keep], [row_ids[c] for c in keep]))
        return top

    def _answer(self, query: Query, values: list[float], ids: list[int]) -> dict[str, Any]:
        keep = [i for i, value in enumerate(values) if value != float("-inf")]
        items: list[ItemId] = [ids[i] for i in keep]
        if query.raw_ids:
            items = [self.model.item_ids.raw[i] for i in items]  # type: ignore[union-attr, index]
        answer: dict[str, Any] = {"items": items, "scores": [values[i] for i in keep], "unknown": query.encoded.unknown}
        if not query.encoded.known:
            answer["warning"] = EMPTY_HISTORY
        return answer


def kept(values: list[float], ids: list[int]) -> list[int]:
    """The ids an answer shows: those not excluded (-inf)."""
    return [i for v, i in zip(values, ids) if v != float("-inf")]
