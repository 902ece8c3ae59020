"""Markdown tables of the multi-task runs (experiments/results/multitask.md) from their run directories.

    python experiments/multitask_table.py /work/runs/mt

Each run is a directory ``<setting>_s<seed>`` holding ``run/metrics.json`` (``recforge-train ... hydra.run.dir=<dir>/run``)
and ``time.txt`` (``/usr/bin/time -v -o time.txt``). Settings: ``single_{next,intent,value}`` (the other heads'
weights 0), ``fixed_{next,intent,value}``, ``unc_{next,intent,value}`` and ``aux_{next,intent,value}`` (fixed 1/1/1,
uncertainty weights, or the objective's head at 1 and the other two at 0.1; the suffix names the objective whose
best validation checkpoint was tested). Prints three sections: every run's test
metrics, the mean and standard deviation over seeds of each task's own-objective runs, the paired per-seed differences
between joint and single-task runs, and the uncertainty weights.
"""
from __future__ import annotations

import csv
import json
import re
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from s3rec_table import wall_seconds  # the /usr/bin/time -v reader of the S3-Rec table

# task: (metric key in metrics.json's "test", column title)
METRICS = {
    "next": [("next_item/ndcg@10", "next-item NDCG@10"), ("next_item/hr@10", "HR@10")],
    "intent": [("intent/auc", "intent AUC")],
    "value": [("value/rmse", "value RMSE")],
}
LOWER_IS_BETTER = {"value/rmse"}
SETTINGS = ("single", "fixed", "unc", "aux")
JOINT = SETTINGS[1:]
SETTING_NAMES = {"single": "single task", "fixed": "multi, fixed 1/1/1", "unc": "multi, uncertainty",
                 "aux": "multi, own head 1, others 0.1"}


def last_weights(run: Path) -> dict[str, float]:
    """exp(-s) per task from the last epoch that logged ``train/<task>/weight`` (CSV logger)."""
    weights: dict[str, float] = {}
    for path in sorted(run.glob("csv/**/metrics.csv")):
        with path.open() as f:
            for record in csv.DictReader(f):
                found = {k.split("/")[1]: float(v) for k, v in record.items() if k.endswith("/weight") and v}
                if found:
                    weights = found
    return weights


def load(root: Path) -> dict[tuple[str, str, int], dict]:
    runs = {}
    for d in sorted(root.iterdir()):
        match = re.fullmatch(r"(" + "|".join(SETTINGS) + r")_(next|intent|value)_s(\d+)", d.name)
        metrics_file = d / "run" / "metrics.json"
        if not match or not metrics_file.is_file():
            continue
        metrics = json.loads(metrics_file.read_text())
        runs[(match.group(1), match.group(2), int(match.group(3)))] = {
            "name": d.name, "test": metrics["test"], "best": metrics["best_epoch"] + 1, "last": metrics["epochs"],
            "wall": wall_seconds(d / "time.txt"), "weights": last_weights(d / "run")}
    return runs


def cell(run: dict, key: str, task: str, setting: str, own: str) -> str:
    value = run["test"].get(key)
    if value is None:
        return "–"
    text = f"{value:.4f}"
    if setting == "single":
        return f"**{text}**" if task == own else f"({text})"
    return text


def runs_table(runs: dict) -> list[str]:
    columns = [(task, key, title) for task, items in METRICS.items() for key, title in items]
    lines = ["| run | " + " | ".join(title for _, _, title in columns) + " | best / last epoch | wall time |",
             "|---|" + "---|" * (len(columns) + 2)]
    order = sorted(runs, key=lambda k: ({42: 0}.get(k[2], k[2]), SETTINGS.index(k[0]), list(METRICS).index(k[1])))
    for key in order:
        run = runs[key]
        cells = [cell(run, metric, task, key[0], key[1]) for task, metric, _ in columns]
        wall = f"{int(run['wall']) // 60} min {int(run['wall']) % 60:02d} s" if run["wall"] is not None else "–"
        lines.append(f"| {run['name']} | " + " | ".join(cells) + f" | {run['best']} / {run['last']} | {wall} |")
    return lines


def mean_sd(values: list[float]) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.4f} (1 seed)"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def means_table(runs: dict) -> list[str]:
    """Each task's metric from the runs whose objective is that task, per setting that has runs, over seeds."""
    settings = [s for s in SETTINGS if any(key[0] == s for key in runs)]
    lines = ["| task, metric | " + " | ".join(SETTING_NAMES[s] for s in settings) + " | seeds |",
             "|---|" + "---|" * (len(settings) + 1)]
    for task, items in METRICS.items():
        for metric, title in items:
            per_setting = [[r["test"][metric] for (s, t, _), r in sorted(runs.items()) if s == setting and t == task]
                           for setting in settings]
            seeds = sorted({seed for (s, t, seed) in runs if t == task})
            lines.append(f"| {title} | " + " | ".join(mean_sd(v) for v in per_setting)
                         + f" | {', '.join(map(str, seeds))} |")
    return lines


def differences_table(runs: dict) -> list[str]:
    """Per seed, the joint run minus the single-task run of the same seed on each task's own metric (both chosen on
    that metric): the mean difference, its standard deviation, and on how many seeds the joint run is better."""
    present = [s for s in JOINT if any(key[0] == s for key in runs)]
    lines = ["| task, metric | " + " | ".join(f"{SETTING_NAMES[s]} minus single" for s in present) + " |",
             "|---|" + "---|" * len(present)]
    for task, items in METRICS.items():
        for metric, title in items:
            cells = []
            for setting in present:
                diffs = [runs[key]["test"][metric] - runs[("single", task, key[2])]["test"][metric]
                         for key in sorted(runs) if key[:2] == (setting, task) and ("single", task, key[2]) in runs]
                if not diffs:
                    cells.append("–")
                    continue
                better = sum(d < 0 if metric in LOWER_IS_BETTER else d > 0 for d in diffs)
                spread = f" ± {statistics.stdev(diffs):.4f}" if len(diffs) > 1 else ""
                cells.append(f"{statistics.mean(diffs):+.4f}{spread} (better on {better} of {len(diffs)} seeds)")
            lines.append(f"| {title} | " + " | ".join(cells) + " |")
    return lines


def weights_table(runs: dict) -> list[str]:
    lines = ["| run | next item | intent | value |", "|---|---|---|---|"]
    for key in sorted(runs, key=lambda k: ({42: 0}.get(k[2], k[2]), list(METRICS).index(k[1]))):
        if key[0] != "unc":
            continue
        w = runs[key]["weights"]
        lines.append(f"| {runs[key]['name']} | " + " | ".join(
            f"{w[t]:.3f}" if t in w else "–" for t in ("next_item", "intent", "value")) + " |")
    return lines


def main() -> None:
    runs = load(Path(sys.argv[1]))
    for title, lines in (("runs", runs_table(runs)), ("means", means_table(runs)),
                         ("differences", differences_table(runs)), ("weights", weights_table(runs))):
        print(f"<!-- {title} -->")
        print("\n".join(lines))
        print()


if __name__ == "__main__":
    main()
