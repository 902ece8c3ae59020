"""benchmarks/scale_20m.py end to end on a tiny slice: every stage is timed, evaluation covers every user."""
from __future__ import annotations

import json
from pathlib import Path


def test_tiny_run_times_every_stage_and_evaluates_every_user(tmp_path, capsys, project_script):
    bench = project_script("benchmarks/scale_20m.py")
    out = tmp_path / "scale-0.0005"  # a dot in the name: outputs are <out>.json and <out>.md
    bench.main(["--scale", "0.0005", "--max-len", "10", "--batch-size", "64", "--eval-batch-size", "32",
                "--item-chunk-size", "100", "--out", str(out), "dataset.reader.num_items=300"])
    result = json.loads(Path(f"{out}.json").read_text())
    stages = {row["stage"]: row for row in result["stages"]}
    assert list(stages) == ["generate", "preprocess (dedup, k-core, CSR)", "write cache", "load cache",
                            "split + tensors", "train one epoch", "validation, all users", "test, all users"]
    users = round(138_000 * 0.0005)  # 69
    assert result["dataset"]["users"] == users and result["dataset"]["items"] <= 300
    assert stages["generate"]["rows"] == result["dataset"]["interactions"]
    assert stages["validation, all users"]["samples"] == stages["test, all users"]["samples"] == users
    assert stages["train one epoch"]["samples"] == result["dataset"]["train_windows"]
    assert all(row["seconds"] >= 0 for row in result["stages"]) and result["peak_rss_gib"] > 0
    # the overall peak covers every stage's (resetting the high-water mark also resets ru_maxrss)
    assert result["peak_rss_gib"] >= max(row["peak_rss_gib"] or 0 for row in result["stages"])
    assert result["setup"]["max_len"] == 10 and result["setup"]["loss"] == "bce"
    assert 0 <= result["metrics"]["test"]["ndcg@10"] <= 1
    table = Path(f"{out}.md").read_text()
    assert "| train one epoch |" in table and "| **total** |" in table and "69 users" in table
