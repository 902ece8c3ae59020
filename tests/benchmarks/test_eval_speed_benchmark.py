"""benchmarks/eval_speed.py on the generated dataset: the speed-up arms rank the users as before."""
from __future__ import annotations

import json


def test_every_arm_gives_identical_ranks_and_times_every_stage(tmp_path, project_script):
    bench = project_script("benchmarks/eval_speed.py")
    result = bench.main(["--dataset", "synthetic", "--repeats", "1", "--out", str(tmp_path / "speed.json")])
    users = result["users"]
    for name, agree in result["agreement_with_before"].items():  # float order may flip a rare near-tie only
        assert agree["samples_ranked_differently"] <= users // 100, name
        assert agree["max_metric_difference"] <= 2 / users, name
    assert result["agreement_with_before"]["before"] == {"samples_ranked_differently": 0, "max_metric_difference": 0}
    assert list(result["median_seconds"]) == ["before", "+ sorted batches", "+ last query", "+ int32 count", "now"]
    # "+ int32 count" and "now" rank the same scores (with and without a masked copy): identical ranks
    assert result["agreement_with_before"]["now"] == result["agreement_with_before"]["+ int32 count"]
    for seconds in result["median_seconds"].values():
        parts = sum(seconds[k] for k in ("encoder", "decoder", "mask", "rank", "load"))
        assert abs(seconds["total"] - parts) < 1e-9 and seconds["encoder"] > 0  # one pass: total = its stages
    saved = json.loads((tmp_path / "speed.json").read_text())
    assert saved["users"] == result["users"] > 0
    assert (tmp_path / "speed.md").read_text().count("\n| ") == 6  # header + 5 arms
    assert result["median_seconds"]["now"]["cpu"] > 0
