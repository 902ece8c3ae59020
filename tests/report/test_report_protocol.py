"""The protocol line above every table (issue 19, part 5): split, masking rule, full or sampled, K, counts."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from recforge.report.cli import report
from recforge.report.protocol import (
    counts_text,
    mask_text,
    protocol_line,
    protocol_lines,
    ranking_text,
)
from tests.report.conftest import MakeRun, result

LOO = "recforge.data.splits.LeaveOneOut"


def test_protocol_line_of_a_leave_one_out_full_ranking_run() -> None:
    row = {"dataset.name": "yelp", "dataset.split._target_": LOO, "evaluation.mask_history": True,
           "evaluation.ks": "[5, 10, 20]", "stats/test_samples": 30431, "test/unreachable": 2027 / 30431}
    assert protocol_line(row) == (
        "yelp: leave-one-out split (last item test, second to last validation); history mask: every earlier item "
        "of the user masked (a repeated target is unreachable); full ranking over all items; K = 5, 10, 20; "
        "30,431 test samples, 2,027 unreachable targets (6.66 %).")


def test_each_masking_rule_and_sampled_ranking_is_named() -> None:
    assert mask_text({"evaluation.mask_history": False}) == "history mask: no history mask (repeat consumption counts)"
    assert "set to 0, as the S3-Rec code does" in mask_text({"evaluation.mask_history": "s3rec"})
    assert mask_text({}) == mask_text({"evaluation.mask_history": True})  # absent: the default rule
    assert ranking_text({"evaluation.sampled.negatives": math.nan}) == "full ranking over all items"
    sampled = {"evaluation.sampled.negatives": 100.0,
               "evaluation.sampled.sampler._target_": "recforge.evaluation.sampled.PopularityCandidates"}
    assert ranking_text(sampled) == "sampled ranking: the target among 100 PopularityCandidates negatives"


def test_counts_of_target_sets_and_users_left_out() -> None:
    row = {"stats/test_samples": 90, "stats/test_targets": 400, "stats/test_users_without_target": 777,
           "stats/test_users_without_input": 76, "test/unreachable": 0.05}
    assert counts_text(row) == ("90 test samples with 400 targets, 777 users without target not evaluated, 76 users "
                                "without input not evaluated, 20 unreachable targets (5.00 %)")  # 5 % of 400


def test_counts_without_statistics_say_so() -> None:
    assert counts_text({}) == "test sample count not recorded"
    assert counts_text({"stats/test_samples": 10}) == "10 test samples"  # no unreachable fraction logged


def test_one_line_per_distinct_protocol() -> None:
    runs = pd.DataFrame([
        {"status": "ok", "dataset.name": "beauty", "dataset.split._target_": LOO, "evaluation.mask_history": True},
        {"status": "ok", "dataset.name": "beauty", "dataset.split._target_": LOO, "evaluation.mask_history": True},
        {"status": "ok", "dataset.name": "beauty", "dataset.split._target_": LOO, "evaluation.mask_history": "s3rec"},
        {"status": "failed", "dataset.name": "toys", "dataset.split._target_": LOO},
    ])
    lines = protocol_lines(runs)
    assert len(lines) == 2 and all(line.startswith("Protocol: beauty: leave-one-out") for line in lines)
    assert "S3-Rec" in lines[1] and "S3-Rec" not in lines[0]


def test_report_prints_the_protocol_above_the_table(tmp_path: Path, make_run: MakeRun) -> None:
    metrics = result(0.3, 0.15) | {"dataset": {"test_samples": 200, "val_samples": 200}}
    metrics["test"]["unreachable"] = 0.05
    for seed in (1, 2):
        make_run(tmp_path / "runs" / f"s{seed}", "SASRec", seed, metrics)  # its config has no dataset.split
    md, _ = report([str(tmp_path / "runs"), "--out", str(tmp_path / "out")])
    first, table = md.split("\n\n")[:2]
    assert first == ("Protocol: synthetic: unknown split; history mask: every earlier item of the user masked (a "
                     "repeated target is unreachable); full ranking over all items; K = 5, 10, 20; 200 test samples, "
                     "10 unreachable targets (5.00 %).")
    assert table.startswith("| ")
