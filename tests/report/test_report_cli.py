"""The real ``recforge-report`` console script: files written with the hand-made numbers; user errors exit 2."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from recforge.report.cli import default_metrics, write_atomic

SCRIPT = Path(sys.executable).with_name("recforge-report")


def run_report(*args: str | Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([str(SCRIPT), *map(str, args)], env=env, capture_output=True, text=True, timeout=120)


def test_report_writes_every_format(hand_runs):
    proc = run_report(hand_runs, "--baseline", "model=SASRec", "--metrics", "test/hr@10,test/ndcg@10", "--html")
    assert proc.returncode == 0, proc.stderr
    out = hand_runs / "report"
    assert "| SASRec | **0.3200** ± 0.0200 (3) | **0.1700** ± 0.0265 (3) |" in proc.stdout
    assert "| GRU4Rec | 0.2200 ± 0.0265 (3) † | 0.1300 ± 0.0361 (3) |" in proc.stdout
    for name in ("report.md", "report.csv", "report.tex", "report.html"):
        assert f"  {out / name}" in proc.stdout.splitlines()
    assert (out / "report.md").read_text() in proc.stdout
    csv = pd.read_csv(out / "report.csv").set_index(["model", "metric"])
    assert csv.loc[("SASRec", "test/ndcg@10"), "mean"] == pytest.approx(0.17)
    assert csv.loc[("GRU4Rec", "test/hr@10"), "n"] == 3  # the failed fourth seed is not counted
    assert r"\textbf{0.3200}" in (out / "report.tex").read_text()
    assert "CUDA out of memory" in (out / "report.html").read_text()
    assert not [p for p in out.rglob("*.tmp")]


def test_default_metrics_are_test_metrics_at_10_then_20(hand_runs):
    runs = pd.DataFrame({"test/hr@5": [0.1], "test/mrr@10": [0.1], "test/ndcg@20": [0.1], "test/hr@10": [0.1],
                         "test/ndcg@10": [0.1], "test/hr@20": [0.1], "val/ndcg@10": [0.1]})
    assert default_metrics(runs) == ["test/hr@10", "test/ndcg@10", "test/mrr@10", "test/hr@20", "test/ndcg@20"]


def test_write_atomic_replaces_whole_file(tmp_path):
    path = tmp_path / "sub" / "report.md"
    write_atomic(path, "old")
    write_atomic(path, b"new")
    assert path.read_text() == "new" and sorted(p.name for p in path.parent.iterdir()) == ["report.md"]


@pytest.mark.parametrize("case, args, message", [
    ("missing", ["{tmp}/nowhere"], "{tmp}/nowhere does not exist"),
    ("empty", ["{tmp}/empty"], "no finished runs found under {tmp}/empty:"),
    ("rows", ["{sweep}", "--rows", "model,optimizer.lrr"],
     "--rows key 'optimizer.lrr' is not in the collected runs; did you mean optimizer.lr"),
    ("baseline", ["{sweep}", "--baseline", "model=BERT4Rec"], "--baseline model=BERT4Rec matches no row"),
    ("damaged", ["{sweep}"], "cannot read {sweep}/0_encoder=sasrec,seed=1/metrics.json"),
])
def test_user_errors_exit_2_with_one_sentence(hand_runs, tmp_path, case, args, message):
    (tmp_path / "empty").mkdir()
    if case == "damaged":
        (hand_runs / "0_encoder=sasrec,seed=1" / "metrics.json").write_text('{"test": {"hr@10": 0.3')
    fill = {"tmp": tmp_path, "sweep": hand_runs}
    proc = run_report(*(a.format(**fill) for a in args))
    assert proc.returncode == 2, proc.stdout
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("recforge: error: ")]
    assert len(errors) == 1 and message.format(**fill) in errors[0], proc.stderr
    assert not (hand_runs / "report").exists()
