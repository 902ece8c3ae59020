"""Markdown rows of the side-feature runs (experiments/results/side_features.md) from their run directories.

    python experiments/side_features_table.py /work/helper-out/i16/sidefeat/runs [walls.txt]

Each run directory's metrics.json (or run/metrics.json, with time.txt from ``/usr/bin/time -v -o`` beside run/)
gives test HR@10 / NDCG@10 (over all targets, and over warm and cold targets on a cold split) and the best / last
epoch; walls.txt (lines "<run> rc=0 wall=<s>s ...") or time.txt the whole command's time.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from s3rec_table import wall_seconds  # the /usr/bin/time -v reader of the S3-Rec table


def metrics_file(run: Path) -> Path:
    return run / "metrics.json" if (run / "metrics.json").is_file() else run / "run" / "metrics.json"


def row(run: Path, walls: dict[str, int]) -> str:
    metrics = json.loads(metrics_file(run).read_text())
    test = metrics["test"]
    cells = [f"{test[key]:.4f}" if key in test else "–" for key in
             ("hr@10", "ndcg@10", "warm/ndcg@10", "cold/hr@10", "cold/ndcg@10")]
    wall = walls.get(run.name) or wall_seconds(run / "time.txt")
    wall = round(wall) if wall else None
    time = f"{wall // 60} min {wall % 60:02d} s" if wall else "–"
    return f"| {run.name} | {' | '.join(cells)} | {metrics['best_epoch']} / {metrics['epochs']} | {time} |"


def main() -> None:
    runs = Path(sys.argv[1])
    walls = {}
    if len(sys.argv) > 2:
        for line in Path(sys.argv[2]).read_text().splitlines():
            match = re.match(r"(\S+) rc=0 wall=(\d+)s", line)
            if match:
                walls[match.group(1)] = int(match.group(2))
    print("| run | HR@10 | NDCG@10 | warm NDCG@10 | cold HR@10 | cold NDCG@10 | best / last epoch | wall time |")
    print("|---|---|---|---|---|---|---|---|")
    for run in sorted(runs.iterdir()):
        if metrics_file(run).is_file():
            print(row(run, walls))


if __name__ == "__main__":
    main()
