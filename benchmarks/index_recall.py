"""Top-10 from a faiss inner-product index against exact scoring: recall@10 and latency (``--index``).

    OMP_NUM_THREADS=1 python benchmarks/index_recall.py outputs/runs/<beauty run> --data-root ../shared/data \
        --out benchmarks/results/index_recall

Beauty: a trained run's model through ``Recommender`` (encoder + top-10, history excluded on both paths) on the
histories of ``--users`` random test users. Synthetic: a 27,000 x 64 item table (the catalogue size of
MovieLens-20M) and 2,000 query vectors, top-10 only (no encoder, nothing excluded), in two shapes: isotropic
Gaussian (no structure, the hard case) and clustered (270 Gaussian clusters, queries near them, closer to learned
embeddings). recall@10 = |index top-10 ∩ exact top-10| / 10, averaged over queries. Latency: median ms of a call
for one query and for a batch of 256, one thread (torch and faiss).
"""
from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import faiss
import torch
from serve_load import test_histories
from torch import Tensor

from recforge.deploy.index import IndexSpec, ItemIndex, build_index
from recforge.deploy.model import load_model
from recforge.deploy.recommender import Query, Recommender

SPECS = [IndexSpec("flat"), *(IndexSpec("hnsw", ef_search=ef) for ef in (16, 64, 128, 256)),
         *(IndexSpec("ivf", nprobe=p) for p in (4, 16, 64))]


@dataclass
class Row:
    data: str
    index: str
    recall_at_10: float
    ms_batch_1: float  # end to end: encoder + top-10 (Beauty); nan for synthetic
    ms_batch_256: float
    retrieval_ms_batch_1: float  # top-10 from given hidden states only, history excluded
    retrieval_ms_batch_256: float
    build_s: float


def label(spec: IndexSpec | None) -> str:
    if spec is None:
        return "exact (torch, every item)"
    return {"flat": "flat (IndexFlatIP)", "hnsw": f"hnsw ef_search={spec.ef_search}",
            "ivf": f"ivf nprobe={spec.nprobe}"}[spec.kind]


def recall_at_10(got: Sequence[Sequence[int]], want: Sequence[Sequence[int]]) -> float:
    """Mean over queries of |got ∩ want| / |want| (queries with nothing to find are skipped)."""
    shares = [len(set(g) & set(w)) / len(w) for g, w in zip(got, want, strict=True) if w]
    return sum(shares) / len(shares)


def median_ms(call: Callable[[int], object], count: int) -> float:
    """Median wall time in ms of call(i) for i in 0..count-1, after one warm-up call."""
    call(0)
    times = []
    for i in range(count):
        began = time.perf_counter()
        call(i)
        times.append(1000 * (time.perf_counter() - began))
    return statistics.median(times)


def exact_top(recommender: Recommender, hidden: Tensor, chunk: Sequence[Query]) -> Tensor:
    """The exact path's top-10 from hidden states (B, H): every item scored, padding and history at -inf."""
    scores = recommender.model.scorer.decoder(hidden).float()  # (B, N+1)
    scores[:, 0] = float("-inf")
    for row, query in enumerate(chunk):
        scores[row, query.encoded.known] = float("-inf")
    return scores.topk(10).indices  # (B, 10)


def beauty_rows(run: str, data_root: str | None, users: int, repeats: int) -> list[Row]:
    model = load_model(run, ids="file")
    histories = test_histories(model.run_dir, data_root)
    histories = random.Random(0).sample(histories, min(users, len(histories)))
    exact = Recommender(model)
    queries = [Query(exact.encode(h, raw_ids=False), 10) for h in histories]
    want = [a["items"] for a in exact.recommend(queries)]
    with torch.inference_mode():
        hidden = exact.model.scorer.hidden(exact.inputs([q.encoded for q in queries]))  # (U, H)
    rows = []
    for spec in [None, *SPECS]:
        began = time.perf_counter()
        recommender = exact if spec is None else Recommender(model, index=build_index(model.scorer.decoder, spec))
        build = time.perf_counter() - began
        got = [a["items"] for a in recommender.recommend(queries)]
        one = median_ms(lambda i, r=recommender: r.recommend(queries[i:i + 1]), repeats)
        batches = max(1, min(repeats // 10, len(queries) // 256))
        many = median_ms(lambda i, r=recommender: r.recommend(queries[256 * i:256 * (i + 1)]), batches)

        def retrieve(lo: int, hi: int, spec: IndexSpec | None = spec, recommender: Recommender = recommender) -> object:
            if spec is None:
                with torch.inference_mode():
                    return exact_top(exact, hidden[lo:hi], queries[lo:hi])
            return recommender.search(hidden[lo:hi], queries[lo:hi])

        r_one = median_ms(lambda i: retrieve(i, i + 1), repeats)
        r_many = median_ms(lambda i: retrieve(256 * i, 256 * (i + 1)), batches)
        rows.append(Row(f"Beauty ({model.num_items:,} items)", label(spec), recall_at_10(got, want), one, many,
                        r_one, r_many, build))
        print(json.dumps(asdict(rows[-1])), flush=True)
    return rows


def synthetic_table(shape: str, n: int = 27_000, h: int = 64, q: int = 2_000, seed: int = 0) -> tuple[Tensor, Tensor]:
    """(items (N, H), queries (Q, H)) float32: isotropic Gaussian, or 270 clusters with queries near them."""
    g = torch.Generator().manual_seed(seed)
    if shape == "gaussian":
        return torch.randn(n, h, generator=g), torch.randn(q, h, generator=g)
    centres = torch.randn(n // 100, h, generator=g)  # (C, H)
    items = centres[torch.randint(len(centres), (n,), generator=g)] + 0.5 * torch.randn(n, h, generator=g)
    queries = centres[torch.randint(len(centres), (q,), generator=g)] + 0.5 * torch.randn(q, h, generator=g)
    return items, queries


def synthetic_rows(shape: str, repeats: int) -> list[Row]:
    items, queries = synthetic_table(shape)
    name = f"synthetic {shape} ({len(items):,} x {items.shape[1]})"

    def full_top(x: Tensor) -> Tensor:  # every item scored, nothing to exclude
        return (x @ items.T).topk(10).indices + 1  # (B, 10)

    want = full_top(queries).tolist()
    nan = float("nan")
    rows = [Row(name, label(None), 1.0, nan, nan, median_ms(lambda i: full_top(queries[i:i + 1]), repeats),
                median_ms(lambda i: full_top(queries[256 * i % 1536:256 * i % 1536 + 256]), max(3, repeats // 20)), 0.0)]
    for spec in SPECS:
        began = time.perf_counter()
        index = ItemIndex(items, spec)
        build = time.perf_counter() - began
        got = index.search(queries, 10)[1].tolist()
        one = median_ms(lambda i, x=index: x.search(queries[i:i + 1], 10), repeats)
        many = median_ms(lambda i, x=index: x.search(queries[256 * i % 1536:256 * i % 1536 + 256], 10), max(3, repeats // 20))
        rows.append(Row(name, label(spec), recall_at_10(got, want), nan, nan, one, many, build))
        print(json.dumps(asdict(rows[-1])), flush=True)
    return rows


def table(rows: list[Row]) -> str:
    def ms(value: float, digits: int) -> str:
        return "—" if math.isnan(value) else f"{value:.{digits}f}"

    header = ("| data | top-10 by | recall@10 | end to end ms / 1 query | end to end ms / 256 | top-10 only ms / 1 "
              "| top-10 only ms / 256 | build s |")
    lines = [header, "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r.data} | {r.index} | {r.recall_at_10:.4f} | {ms(r.ms_batch_1, 2)} | {ms(r.ms_batch_256, 1)} | "
              f"{ms(r.retrieval_ms_batch_1, 3)} | {ms(r.retrieval_ms_batch_256, 1)} | {r.build_s:.2f} |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", nargs="?", help="a Beauty run directory (skipped when not given)")
    parser.add_argument("--data-root", default=None, help="the folder holding the run's dataset")
    parser.add_argument("--users", type=int, default=2000, help="Beauty test users (random, seed 0)")
    parser.add_argument("--repeats", type=int, default=200, help="timed calls of one query")
    parser.add_argument("--out", default=None, help="write <out>.json and <out>.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    rows = beauty_rows(args.run, args.data_root, args.users, args.repeats) if args.run else []
    for shape in ("gaussian", "clustered"):
        rows += synthetic_rows(shape, args.repeats)
    print(table(rows))
    if args.out:
        Path(f"{args.out}.json").write_text(json.dumps([asdict(r) for r in rows], indent=1) + "\n")
        Path(f"{args.out}.md").write_text(table(rows) + "\n")


if __name__ == "__main__":
    main()
