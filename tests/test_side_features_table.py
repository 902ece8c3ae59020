"""experiments/side_features_table.py: one markdown row per finished run, in either run-directory layout."""
from __future__ import annotations

import json
from pathlib import Path


def write_metrics(path: Path, test: dict[str, float], best_epoch: int, epochs: int) -> None:
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"test": test, "best_epoch": best_epoch, "epochs": epochs}))


def test_rows_read_metrics_and_wall_time_from_either_layout(tmp_path, project_script):
    script = project_script("experiments/side_features_table.py")
    # a run directory itself (wall from walls.txt) ...
    write_metrics(tmp_path / "warm_id" / "metrics.json", {"hr@10": 0.0942, "ndcg@10": 0.0567}, 20, 31)
    # ... or a directory with run/ and /usr/bin/time -v's time.txt beside it
    cold = {"hr@10": 0.0829, "ndcg@10": 0.0495, "warm/ndcg@10": 0.0607, "cold/hr@10": 0.0108, "cold/ndcg@10": 0.0044}
    write_metrics(tmp_path / "cold_k3" / "run" / "metrics.json", cold, 19, 30)
    (tmp_path / "cold_k3" / "time.txt").write_text("\tElapsed (wall clock) time (h:mm:ss or m:ss): 21:08.40\n")
    assert script.row(tmp_path / "warm_id", {"warm_id": 3420}) == \
        "| warm_id | 0.0942 | 0.0567 | – | – | – | 20 / 31 | 57 min 00 s |"
    assert script.row(tmp_path / "cold_k3", {}) == \
        "| cold_k3 | 0.0829 | 0.0495 | 0.0607 | 0.0108 | 0.0044 | 19 / 30 | 21 min 08 s |"
