"""Print a Markdown table with one row per run directory, from its metrics.json and config.yaml.

Usage: python experiments/table.py outputs/runs/<run> [...]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from omegaconf import OmegaConf

from recforge.report.render import markdown_table

METRICS = ["hr@5", "ndcg@5", "hr@10", "ndcg@10", "hr@20", "ndcg@20", "mrr@10"]
HEADER = ["dataset", "model", *METRICS, "best / last epoch", "wall s", "run"]


def row(run: Path) -> list[str]:
    """The table cells of one run directory."""
    m = json.loads((run / "metrics.json").read_text())
    cfg = OmegaConf.load(run / "config.yaml")
    model = cfg.encoder._target_.rsplit(".", 1)[-1]
    model = "Popularity" if model == "ConstantEncoder" else model
    cells = [f"{m['test'][k]:.4f}" for k in METRICS]
    epochs = f"{m['best_epoch']} / {m['epochs']}" if m.get("best_epoch") is not None else "-"
    return [str(cfg.dataset.name), model, *cells, epochs, f"{m['fit_seconds'] + m['test_seconds']:.0f}", f"`{run}`"]


if __name__ == "__main__":
    print(markdown_table(HEADER, [row(Path(arg)) for arg in sys.argv[1:]]))
