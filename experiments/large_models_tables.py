"""Tables of experiments/results/large-models.md from finished run directories (metrics.json of each run).

Each table groups runs by a label and prints every run and the mean ± std over the group (sample std, n - 1).

Usage:
  python experiments/large_models_tables.py parity  outputs/parity/ml100k outputs/parity/ml100k_gpt2
  python experiments/large_models_tables.py rating  outputs/rating/svdpp_huber outputs/rating/svdpp
  python experiments/large_models_tables.py cold    outputs/cold/ml100k outputs/cold/ml100k_hybrid
  python experiments/large_models_tables.py ranking outputs/cf/ml100k_mf_bpr outputs/cf/ml100k_itemknn ...
"""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import yaml

from recforge.report.render import markdown_table


def runs_under(paths: list[str]) -> list[tuple[Path, dict, dict]]:
    """(run dir, metrics.json, config.yaml) of every finished run at or below the given paths."""
    found = []
    for root in map(Path, paths):
        for metrics in sorted(root.rglob("metrics.json")):
            run = metrics.parent
            if (run / "config.yaml").is_file():
                found.append((run, json.loads(metrics.read_text()), yaml.safe_load((run / "config.yaml").read_text())))
    return found


def fmt(values: list[float], digits: int = 4) -> str:
    mean = statistics.fmean(values)
    text = f"{mean:.{digits}f}".lstrip("0") if mean < 1 else f"{mean:.{digits}f}"
    if len(values) > 1:
        std = f"{statistics.stdev(values):.{digits}f}".lstrip("0")
        text += f" ± {std}"
    return text


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


def experiment_of(cfg: dict, run: Path) -> str:
    """The experiment name from a multirun's job directory (``3_experiment=x,seed=1``), else the run directory's
    name (``hydra.run.dir=outputs/cf/ml100k_mf_bpr``)."""
    for part in run.name.split(","):
        if "experiment=" in part:
            return part.split("experiment=")[1]
    return run.name


def ranking(paths: list[str], slices: tuple[str, ...] = ("",)) -> None:
    """Test HR@10 and NDCG@10 (per slice) of every run, grouped by experiment, with each group's mean ± std."""
    groups: dict[str, list[tuple[Path, dict, dict]]] = {}
    for run, metrics, cfg in runs_under(paths):
        groups.setdefault(experiment_of(cfg, run), []).append((run, metrics, cfg))
    cols = [f"{s}{m}" for s in slices for m in ("hr@10", "ndcg@10")]
    lines: list[list[object]] = []
    for name, rows in groups.items():
        lines += [[name, cfg["seed"], *(f"{metrics['test'][c]:.4f}".lstrip("0") for c in cols),
                   metrics.get("best_epoch"), minutes(metrics["fit_seconds"])] for _, metrics, cfg in rows]
        if len(rows) > 1:
            lines.append([f"**{name}**", f"mean ± std (n = {len(rows)})",
                          *(fmt([m["test"][c] for _, m, _ in rows]) for c in cols), "", ""])
    print(markdown_table(["experiment", "seeds", *(f"test {c}" for c in cols), "best epoch", "fit time"], lines))


def cold(paths: list[str]) -> None:
    ranking(paths, ("", "warm/", "cold/"))
    run, metrics, _ = runs_under(paths)[0]
    stats = metrics.get("dataset", {})
    sizes = {k: v for k, v in stats.items() if "cold" in k or "warm" in k or k in ("val_samples", "test_samples")}
    print(f"\nslice sizes ({run.name}): {sizes}")


def rating(paths: list[str]) -> None:
    """Test RMSE and MAE of every fold under each path, with the path's mean ± std."""
    lines: list[list[object]] = []
    for root in paths:
        rows = runs_under([root])
        loss = rows[0][2]["loss"]["_target_"].rsplit(".", 1)[-1] if rows else "?"
        lines += [[f"{root} ({loss})", cfg["dataset"]["split"]["fold"], f"{metrics['test']['rmse']:.4f}",
                   f"{metrics['test']['mae']:.4f}", metrics.get("best_epoch"), minutes(metrics["fit_seconds"])]
                  for _, metrics, cfg in sorted(rows, key=lambda r: r[2]["dataset"]["split"]["fold"])]
        if rows:
            lines.append([f"**{root} ({loss})**", f"mean ± std (n = {len(rows)})",
                          fmt([m["test"]["rmse"] for _, m, _ in rows]), fmt([m["test"]["mae"] for _, m, _ in rows]),
                          "", ""])
    print(markdown_table(["run", "fold", "test RMSE", "test MAE", "best epoch", "fit time"], lines))


if __name__ == "__main__":
    kind, *dirs = sys.argv[1:]
    {"parity": ranking, "ranking": ranking, "cold": cold, "rating": rating}[kind](dirs)
