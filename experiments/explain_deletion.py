"""Do the explanations explain anything? A deletion test of recforge.deploy.explain on a trained run.

For each sampled test user (leave-one-out: the input is every item but the last), take the top-1 recommended item
(history masked, as in evaluation), attribute its score to the history items in the model's input by integrated
gradients and by the last layer's attention, then delete one history item (the sequence closes up; the window
takes the last max_len items again) and re-score the same item. Every history item in the window is deleted in
turn, so each method's pick can be compared with a random pick (one seeded draw, and the exact expectation over a
uniform draw among the other items), with the most recent item (a free heuristic) and with the best possible
single deletion (oracle).

Usage: python experiments/explain_deletion.py RUN_DIR --data-root ../shared/data [--users 1000] [--seed 0]
       [--ig-steps 32] [--json out.json]
Prints a markdown table row per method and, with --json, writes every number (and per-user drops) to a file.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from scipy.stats import spearmanr
from torch import Tensor

from recforge.deploy.explain import (
    baseline_embeddings,
    encoder_input,
    history_slots,
    integrated_gradients,
    last_layer_attention,
    scores_from_embeddings,
)
from recforge.deploy.model import DeployedModel, dataset_config, load_model


@dataclass
class UserCase:
    """One user's test input (full history before the test item) and what the test measured."""

    history: list[int]
    top: int  # the recommended item
    score: float  # its score on the full history
    drops: np.ndarray  # (m,) score drop when deleting the item `back` = 1..m places from the end (index back - 1)
    ig_back: int
    attention_back: int
    ig: np.ndarray  # (m,) IG attribution of the item `back` places from the end (index back - 1)
    attention: np.ndarray  # (m,) its attention weight
    baseline_score: float  # the top item's score with no item content at the history slots (IG's baseline)


def test_inputs(run_dir: Path, data_root: str, model: DeployedModel) -> list[list[int]]:
    """Leave-one-out test inputs of every user with a test item: the sequence without its last item."""
    cfg = OmegaConf.load(run_dir / "config.yaml")
    seqs = instantiate(dataset_config(cfg, data_root)).load_sequences()
    if model.item_ids is not None and [str(i) for i in seqs.item_ids] != model.item_ids.raw:
        raise SystemExit(f"the dataset under {data_root} does not give the run's item ids")
    items, indptr = seqs.items, seqs.indptr
    return [items[indptr[u]:indptr[u + 1] - 1].tolist() for u in range(seqs.num_users) if indptr[u + 1] - indptr[u] >= 3]


def window(history: list[int], max_len: int) -> list[int]:
    """The last max_len items, left-padded with 0."""
    recent = history[-max_len:]
    return [0] * (max_len - len(recent)) + recent


def top_items(model: DeployedModel, histories: list[list[int]]) -> tuple[Tensor, Tensor]:
    """(top-1 item (B,), its score (B,)) with padding and every history item masked, as evaluation does."""
    items = torch.tensor([window(h, model.max_len) for h in histories])  # (B, L)
    with torch.no_grad():
        scores = model.scorer(items)  # (B, N+1)
    for row, history in enumerate(histories):
        scores[row, history] = float("-inf")
    scores[:, 0] = float("-inf")
    best = scores.max(dim=1)
    return best.indices, best.values


def strongest_back(attributions: Tensor, slots: Tensor) -> list[int]:
    """Per row, ``back`` (1 = most recent history slot) of the largest attribution. attributions, slots: (B, T)."""
    backs = []
    for values, mask in zip(attributions, slots):
        v = values[mask]  # (m,)
        backs.append(len(v) - int(torch.argmax(v)))  # argmax: the first (older) of ties
    return backs


def deletion_drops(model: DeployedModel, history: list[int], top: int, score: float, m: int) -> np.ndarray:
    """(m,) score drop of ``top`` when deleting the item ``back`` = 1..m places from the end of ``history``."""
    n = len(history)
    rows = [window(history[:n - b] + history[n - b + 1:], model.max_len) for b in range(1, m + 1)]
    with torch.no_grad():
        scores = model.scorer(torch.tensor(rows))[:, top]  # (m,)
    return score - scores.numpy()


def run_cases(model: DeployedModel, histories: list[list[int]], steps: int, batch: int) -> tuple[list[UserCase], dict[str, float]]:
    cases: list[UserCase] = []
    seconds = {"ig": 0.0, "attention": 0.0, "deletion": 0.0}
    for start in range(0, len(histories), batch):
        chunk = histories[start:start + batch]
        top, score = top_items(model, chunk)  # (B,), (B,)
        items = torch.tensor([window(h, model.max_len) for h in chunk])  # (B, L)
        slots = history_slots(encoder_input(model.scorer, items), model.num_items)  # (B, T)
        began = time.perf_counter()
        ig = integrated_gradients(model.scorer, items, top[:, None], steps=steps)[:, 0]  # (B, T)
        seconds["ig"] += time.perf_counter() - began
        with torch.no_grad():
            base = scores_from_embeddings(model.scorer, baseline_embeddings(model.scorer, items)[1], items)
        base = base.gather(1, top[:, None])[:, 0]  # (B,)
        began = time.perf_counter()
        attention = last_layer_attention(model.scorer, items, top[:, None])[:, 0]  # (B, T)
        seconds["attention"] += time.perf_counter() - began
        began = time.perf_counter()
        for row, history in enumerate(chunk):
            m = int(slots[row].sum())
            drops = deletion_drops(model, history, int(top[row]), float(score[row]), m)
            cases.append(UserCase(history, int(top[row]), float(score[row]), drops,
                                  strongest_back(ig[row:row + 1], slots[row:row + 1])[0],
                                  strongest_back(attention[row:row + 1], slots[row:row + 1])[0],
                                  ig[row][slots[row]].flip(0).numpy(), attention[row][slots[row]].flip(0).numpy(),
                                  float(base[row])))
        seconds["deletion"] += time.perf_counter() - began
    return cases, seconds


def summarize(cases: list[UserCase], seed: int) -> dict[str, dict[str, float]]:
    """Per pick (ig, attention, most recent, random, oracle): mean drop, and how often its drop beats a random
    other item's (one seeded draw; and the exact expectation over a uniform draw, ties counted half)."""
    rng = np.random.default_rng(seed)
    cases = [c for c in cases if len(c.drops) >= 2]  # a pick needs another item to be compared with
    random_back = [int(rng.integers(1, len(c.drops) + 1)) for c in cases]
    uniform = rng.random(len(cases))  # one draw per user, shared by every pick: the same pick meets the same rival
    picks = {"integrated gradients": [c.ig_back for c in cases], "attention (last layer)": [c.attention_back for c in cases],
             "most recent item": [1] * len(cases), "random item": random_back,
             "oracle (largest drop)": [int(np.argmax(c.drops)) + 1 for c in cases]}
    rows = {}
    for name, backs in picks.items():
        drops = np.array([c.drops[b - 1] for c, b in zip(cases, backs)])
        other = [1 + int(u * (len(c.drops) - 1)) for c, u in zip(cases, uniform)]  # 1..m-1
        other = [o + (o >= b) for o, b in zip(other, backs)]  # a random item other than the pick
        drawn = np.array([c.drops[o - 1] for c, o in zip(cases, other)])
        expected = [(np.sum(np.delete(c.drops, b - 1) < c.drops[b - 1]) + 0.5 * np.sum(np.delete(c.drops, b - 1) == c.drops[b - 1]))
                    / (len(c.drops) - 1) for c, b in zip(cases, backs)]
        rows[name] = {"mean_drop": float(drops.mean()), "median_drop": float(np.median(drops)),
                      "beats_random_draw": float(np.mean(drops > drawn)), "beats_random_expected": float(np.mean(expected)),
                      "is_oracle": float(np.mean([b == int(np.argmax(c.drops)) + 1 for c, b in zip(cases, backs)])),
                      "is_most_recent": float(np.mean(np.array(backs) == 1)),
                      "beats_most_recent_when_other": beats_recent(cases, backs)}
    return rows


def rank_agreement(cases: list[UserCase]) -> dict[str, float]:
    """Mean over users of Spearman's rho between each method's attributions and the deletion drops of all
    history items in the window (recency: 1 / back)."""
    scores = {"integrated gradients": lambda c: c.ig, "attention (last layer)": lambda c: c.attention,
              "most recent item": lambda c: 1.0 / np.arange(1, len(c.drops) + 1)}
    result = {}
    for name, values in scores.items():
        rhos = [spearmanr(values(c), c.drops).statistic for c in cases if len(c.drops) >= 3]
        result[name] = float(np.nanmean(rhos))
    return result


def completeness(cases: list[UserCase]) -> dict[str, float]:
    """How exactly IG's attributions add up to score - baseline score: median and 99th percentile of the absolute
    error, and the median gap itself."""
    gaps = np.array([c.score - c.baseline_score for c in cases])
    errors = np.abs(np.array([c.ig.sum() for c in cases]) - gaps)
    return {"median_abs_error": float(f"{np.median(errors):.2g}"), "p99_abs_error": float(f"{np.quantile(errors, 0.99):.2g}"),
            "median_abs_gap": round(float(np.median(np.abs(gaps))), 4)}


def beats_recent(cases: list[UserCase], backs: list[int]) -> float:
    """Among users whose pick is not the most recent item: how often deleting it drops the score more than
    deleting the most recent item (NaN when there are none)."""
    wins = [c.drops[b - 1] > c.drops[0] for c, b in zip(cases, backs) if b != 1]
    return float(np.mean(wins)) if wins else float("nan")


def percent(value: float) -> str:
    return "–" if np.isnan(value) else f"{value:.1%}"


def number(value: float) -> str:
    return "–" if np.isnan(value) else f"{value:.2f}"


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ig-steps", type=int, default=32)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    began = time.perf_counter()
    model = load_model(args.run, ids="file")
    histories = test_inputs(args.run, args.data_root, model)
    chosen = np.random.default_rng(args.seed).permutation(len(histories))[:args.users]
    cases, seconds = run_cases(model, [histories[i] for i in sorted(chosen)], args.ig_steps, args.batch)
    rows = summarize(cases, args.seed)
    for name, rho in rank_agreement(cases).items():
        rows[name]["spearman_with_drops"] = rho
    older = summarize(without_most_recent(cases), args.seed)  # the same test among the older items only
    wall = time.perf_counter() - began
    info = {"run": str(args.run), "checkpoint": model.name, "dataset": model.dataset, "users": len(cases),
            "eligible_users": len(histories), "seed": args.seed, "ig_steps": args.ig_steps,
            "mean_items_explained": float(np.mean([len(c.drops) for c in cases])), "wall_seconds": round(wall, 1),
            "seconds": {k: round(v, 1) for k, v in seconds.items()}, "torch_threads": torch.get_num_threads(),
            "ig_completeness": completeness(cases),
            "machine": cpu_name(), "cpus": os.cpu_count(), "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    print(json.dumps(info))
    print_table(rows)
    print("\nWithout the most recent item (picks among the older items; 'most recent item' is then the second most recent):")
    print_table(older)
    if args.json is not None:
        per_user = [{"top": c.top, "score": c.score, "drops": c.drops.round(5).tolist(), "ig_back": c.ig_back,
                     "attention_back": c.attention_back, "ig": c.ig.round(5).tolist(),
                     "attention": c.attention.round(5).tolist(), "baseline_score": c.baseline_score} for c in cases]
        args.json.write_text(json.dumps({**info, "rows": rows, "older_items_rows": older, "per_user": per_user}) + "\n")


def without_most_recent(cases: list[UserCase]) -> list[UserCase]:
    """Each case with its most recent history item left out of every pick (backs renumbered from 1)."""
    return [UserCase(c.history, c.top, c.score, c.drops[1:], int(np.argmax(c.ig[1:])) + 1,
                     int(np.argmax(c.attention[1:])) + 1, c.ig[1:], c.attention[1:], c.baseline_score) for c in cases]


def print_table(rows: dict[str, dict[str, float]]) -> None:
    print("| pick | mean drop | median drop | beats a random other item (1 draw) | beats random (expected) "
          "| = best deletion | = most recent item | other pick beats most recent | Spearman with drops |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in rows.items():
        print(f"| {name} | {r['mean_drop']:.3f} | {r['median_drop']:.3f} | {r['beats_random_draw']:.1%} | "
              f"{r['beats_random_expected']:.1%} | {r['is_oracle']:.1%} | {r['is_most_recent']:.1%} | "
              f"{percent(r['beats_most_recent_when_other'])} | {number(r.get('spearman_with_drops', float('nan')))} |")

if __name__ == "__main__":
    main()
