"""Print a Markdown row per run directory from its metrics.json and config.yaml.

Usage: python experiments/table.py outputs/runs/<run> [...]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from omegaconf import OmegaConf

METRICS = ["hr@5", "ndcg@5", "hr@10", "ndcg@10", "hr@20", "ndcg@20", "mrr@10"]


def row(run: Path) -> str:
    m = json.loads((run / "metrics.json").read_text())
    cfg = OmegaConf.load(run / "config.yaml")
    model = cfg.encoder._target_.rsplit(".", 1)[-1]
    model = "Popularity" if model == "ConstantEncoder" else model
    cells = [f"{m['test'][k]:.4f}" for k in METRICS]
    epochs = f"{m['best_epoch']} / {m['epochs']}" if m.get("best_epoch") is not None else "-"
    return f"| {cfg.dataset.name} | {model} | " + " | ".join(cells) + f" | {epochs} | {m['fit_seconds'] + m['test_seconds']:.0f} | `{run}` |"


if __name__ == "__main__":
    print("| dataset | model | " + " | ".join(METRICS) + " | best / last epoch | wall s | run |")
    print("|" + "---|" * (len(METRICS) + 5))
    for arg in sys.argv[1:]:
        print(row(Path(arg)))
