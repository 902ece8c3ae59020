"""Top-K from a faiss inner-product index: the index against exact scoring, history exclusion, the --index options."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from recforge.deploy.index import IndexSpec, ItemIndex, build_index, item_vectors
from recforge.deploy.model import load_model
from recforge.deploy.recommend import main as recommend_main
from recforge.deploy.recommender import Query, Recommender
from recforge.errors import RecforgeError

EXHAUSTIVE = {"flat": IndexSpec("flat"), "hnsw": IndexSpec("hnsw", ef_search=400), "ivf": IndexSpec("ivf", nprobe=400)}


def table(n: int = 300, h: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, h, generator=g), torch.randn(7, h, generator=g)  # items (N, H), queries (B, H)


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_an_exhaustive_search_is_the_exact_top_k(kind: str) -> None:
    items, queries = table()
    scores, ids = ItemIndex(items, EXHAUSTIVE[kind]).search(queries, 10)  # (B, 10)
    exact = (queries @ items.T).topk(10)  # (B, 10) over rows 0..N-1 = items 1..N
    assert ids.tolist() == (exact.indices + 1).tolist()
    torch.testing.assert_close(scores, exact.values, atol=1e-4, rtol=1e-5)


def test_ids_the_index_cannot_fill_are_0_and_count_is_capped_at_the_catalogue() -> None:
    items, queries = table(n=300)
    scores, ids = ItemIndex(items, IndexSpec("ivf", nprobe=1)).search(queries, 300)  # one list of ~69
    assert ids.shape == (7, 300) and (ids == 0).any() and ((ids == 0) == (scores < -1e30)).all()
    assert ItemIndex(items, IndexSpec("flat")).search(queries, 1000)[1].shape == (7, 300)


def test_approximate_search_gets_closer_to_exact_with_its_knob() -> None:
    items, queries = table(n=3000, h=32)  # isotropic Gaussian vectors: a hard case for inner-product search
    exact = (queries @ items.T).topk(10).indices + 1  # (B, 10)

    def recall(spec: IndexSpec) -> float:
        ids = ItemIndex(items, spec).search(queries, 10)[1]
        return sum(len(set(a) & set(b)) for a, b in zip(ids.tolist(), exact.tolist())) / exact.numel()

    hnsw = [recall(IndexSpec("hnsw", ef_search=ef)) for ef in (16, 128)]
    ivf = [recall(IndexSpec("ivf", nprobe=nprobe)) for nprobe in (4, 16, 55)]  # 55 lists: all of them
    assert hnsw[0] < hnsw[1] and hnsw[1] >= 0.95
    assert ivf[0] < ivf[1] < ivf[2] == 1.0


def test_only_a_dot_product_decoder_can_be_indexed() -> None:
    with pytest.raises(RecforgeError, match=r"--index needs a dot-product decoder \(decoder=dot\) but this run's decoder is Linear"):
        item_vectors(nn.Linear(4, 4))
    assert build_index(nn.Linear(4, 4), IndexSpec("exact")) is None


@pytest.mark.parametrize("spec, message", [({"kind": "annoy"}, "index 'annoy' is unknown"),
                                           ({"kind": "hnsw", "ef_search": 0}, "--index-ef-search (0)")])
def test_bad_index_specs_are_user_errors(spec: dict, message: str) -> None:
    with pytest.raises(RecforgeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        IndexSpec(**spec)


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_indexed_recommendations_equal_exact_ones_with_history_excluded(tiny_run: Path, kind: str) -> None:
    model = load_model(tiny_run)
    exact = Recommender(model)
    indexed = Recommender(model, index=build_index(model.scorer.decoder, EXHAUSTIVE[kind]))
    histories = [[5, 9, 2], list(range(1, 26)), [], [7, 7, 7], list(range(1, 57))]
    queries = [Query(exact.encode(h, raw_ids=False), k, exclude_history=exclude)
               for h in histories for k, exclude in ((5, True), (10, False))]
    for query, want, got in zip(queries, exact.recommend(queries), indexed.recommend(queries)):
        assert got["items"] == want["items"] and got.get("warning") == want.get("warning")
        assert got["scores"] == pytest.approx(want["scores"], abs=1e-4)
        if query.exclude_history:
            assert not set(got["items"]) & set(query.encoded.known)
    # 56 of 59 items in the history: 3 are left to recommend, on both paths
    assert [len(a["items"]) for a in indexed.recommend(queries[-2:])] == [3, 10]


@pytest.mark.parametrize("options", [["--index", "flat"], ["--index", "hnsw", "--index-ef-search", "64"],
                                     ["--index", "ivf", "--index-nprobe", "64"]])
def test_recforge_recommend_index_options_give_the_exact_answers(tiny_run: Path, tmp_path: Path,
                                                                 options: list[str]) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"user": i, "history": list(range(1 + i, 8 + 3 * i))}) + "\n" for i in range(6)))

    def answers(*extra: str) -> list[dict]:
        sink = tmp_path / "out.jsonl"
        recommend_main([str(tiny_run), "--input", str(source), "--output", str(sink), "--k", "7", *extra])
        return [json.loads(line) for line in sink.read_text().splitlines()]

    for want, got in zip(answers(), answers(*options), strict=True):
        assert got["items"] == want["items"] and got["scores"] == pytest.approx(want["scores"], abs=1e-4)
