"""Full-ranking evaluation of all validation users: where the time goes, and what each speed-up buys (issue 5).

One SASRec built as ``experiment=ml100k_sasrec`` builds it (hidden 64, 2 layers, 2 heads, max_len 50), on the
chosen dataset, with fixed random weights (time does not depend on training). Every validation user is scored
against all items with the history masked, four ways, alternating, ``--repeats`` times each:

- ``before``: batches in user order (each padded to its longest input), every position of both transformer layers
  computed and the last one kept (``encoder(x)[:, -1]``), ranks counted with the previous formula
  ``(~(scores < target)).sum(1)`` (a negated bool tensor summed into int64);
- ``+ sorted batches``: evaluation samples shortest history first (``LengthSortedSampler``, what
  ``dataset.bucket_by_length=true`` now does for evaluation), so each batch is trimmed to little padding;
- ``+ last query``: the last transformer layer for the last position only (``encoder.final_state``);
- ``+ int32 count``: + the int32 count of the lower scores (``recforge.evaluation.metrics.target_ranks``) on
  the masked copy of the scores (``mask_history``);
- ``now``: no masked copy: the lower scores are counted as they are and corrected for the masked ids
  (``recforge.evaluation.ranking.rank_targets``, the same ranks), i.e. what recforge runs today.

The arms compute the same function, but float sums run in a different order when a batch is trimmed to another
width or a layer runs on one query, so a near-tie can flip: the result counts the samples whose rank differs
from the ``before`` arm and the largest difference of any metric. Times are wall seconds per full pass (median),
split into encoder, decoder (scores over all items), history masking and ranking, plus the pass's process CPU time (with
one thread, robust to other processes sharing the cores).

    python benchmarks/eval_speed.py --dataset beauty --data-root ../shared/data --threads 1 \
        --out benchmarks/results/eval_speed_beauty.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from overhead import PROJECT, compose_config, machine, seed_all  # noqa: E402

from recforge.data.datamodule import LengthSortedSampler, _identity  # noqa: E402
from recforge.evaluation.metrics import ranking_metrics, target_ranks  # noqa: E402
from recforge.evaluation.ranking import mask_history, rank_targets  # noqa: E402
from recforge.run.build import build  # noqa: E402

ARMS = {  # name: (sorted batches, last query only, rank count: previous | int32 | corrected)
    "before": (False, False, "previous"),
    "+ sorted batches": (True, False, "previous"),
    "+ last query": (True, True, "previous"),
    "+ int32 count": (True, True, "int32"),
    "now": (True, True, "corrected"),
}


def previous_ranks(scores: Tensor, targets: Tensor) -> Tensor:
    """The rank formula before the int32 count (same values)."""
    target_scores = scores.gather(1, targets.unsqueeze(1))  # (B, 1)
    return (~(scores < target_scores)).sum(dim=1).clamp(min=1)  # (B,)


@torch.inference_mode()
def one_pass(module: Any, loader: DataLoader, last_query: bool, count: str) -> tuple[dict[str, float], Tensor]:
    """Seconds per stage over the whole loader, and the ranks ordered by sample index."""
    encoder, decoder = module.encoder, module.decoder
    seconds = dict.fromkeys(["encoder", "decoder", "mask", "rank", "load"], 0.0)
    index, ranks = [], []
    cpu_started = time.process_time()
    clock = time.perf_counter()
    for batch in loader:
        t0 = time.perf_counter()
        inputs = encoder.inference_input(batch["input"])  # (B, T)
        hidden = encoder.final_state(inputs) if last_query else encoder(inputs)[:, -1]  # (B, H)
        t1 = time.perf_counter()
        scores = decoder(hidden).float()  # (B, N+1)
        t2 = time.perf_counter()
        if count == "corrected":  # no masked copy
            t3 = time.perf_counter()
            ranks.append(rank_targets(scores, batch["target"], batch["history"]))
        else:
            masked = mask_history(scores, batch["history"])  # (B, N+1)
            t3 = time.perf_counter()
            rank = target_ranks if count == "int32" else previous_ranks
            ranks.append(rank(masked, batch["target"]))
        t4 = time.perf_counter()
        index.append(batch["index"])
        seconds["load"] += t0 - clock
        seconds["encoder"] += t1 - t0
        seconds["decoder"] += t2 - t1
        seconds["mask"] += t3 - t2
        seconds["rank"] += t4 - t3
        clock = time.perf_counter()
    order = torch.argsort(torch.cat(index))
    seconds["total"] = sum(seconds.values())
    seconds["cpu"] = time.process_time() - cpu_started  # the process's CPU time (robust to other processes)
    return seconds, torch.cat(ranks)[order]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="beauty", help="a dataset config name (beauty, ml-100k, yelp, synthetic...)")
    p.add_argument("--data-root", default=str(PROJECT.parent / "shared" / "data"))
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=None, help="JSON file for the result (and a .md beside it)")
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = compose_config(args.dataset, args.data_root, ["evaluation.mask_history=true", *args.overrides], False)
    seed_all(cfg.seed)
    datamodule, module = build(cfg)
    module.eval()
    samples, batch_size = datamodule.val_set, datamodule.eval_batch_size
    loaders = {
        False: DataLoader(samples, batch_size=batch_size, shuffle=False, collate_fn=_identity),
        True: DataLoader(samples, batch_size=batch_size, sampler=LengthSortedSampler(samples.positions),
                         collate_fn=_identity),
    }
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in ARMS}
    ranks: dict[str, Tensor] = {}
    for _ in range(args.repeats):
        for name, (sorted_batches, last_query, count) in ARMS.items():
            seconds, ranks[name] = one_pass(module, loaders[sorted_batches], last_query, count)
            runs[name].append(seconds)
    median = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in runs.items()}
    ks = list(cfg.evaluation.ks)
    metrics = {name: ranking_metrics(r, ks) for name, r in ranks.items()}
    agreement = {name: {"samples_ranked_differently": int((r != ranks["before"]).sum()),
                        "max_metric_difference": max(abs(v - metrics["before"][k]) for k, v in metrics[name].items())}
                 for name, r in ranks.items()}
    result = {"dataset": args.dataset, "users": len(samples), "items": datamodule.num_items,
              "eval_batch_size": batch_size, "repeats": args.repeats, "agreement_with_before": agreement,
              "metrics": metrics,
              "median_seconds": median, "speedup_now_vs_before": median["before"]["total"] / median["now"]["total"],
              "cpu_speedup_now_vs_before": median["before"]["cpu"] / median["now"]["cpu"],
              "machine": machine(), "command": " ".join(["python benchmarks/eval_speed.py", *(argv or sys.argv[1:])])}
    text = markdown(result)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
        args.out.with_suffix(".md").write_text(text + "\n")
    return result


def markdown(result: dict[str, Any]) -> str:
    stages = ["encoder", "decoder", "mask", "rank", "load", "total", "cpu"]
    lines = [f"{result['dataset']}: {result['users']:,} validation users x {result['items']:,} items, eval batch "
             f"{result['eval_batch_size']}, median of {result['repeats']} passes",
             "", "| arm | " + " | ".join(f"{s} s" for s in stages) + " | ranks differing from before | largest metric "
             "difference |", "|---|" + "---|" * (len(stages) + 2)]
    for name, seconds in result["median_seconds"].items():
        agree = result["agreement_with_before"][name]
        lines.append(f"| {name} | " + " | ".join(f"{seconds[s]:.3f}" for s in stages)
                     + f" | {agree['samples_ranked_differently']} | {agree['max_metric_difference']:.1e} |")
    lines.append(f"\nnow vs before: {result['speedup_now_vs_before']:.2f}x faster (wall), "
                 f"{result['cpu_speedup_now_vs_before']:.2f}x less CPU time")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
