"""Exact resume: a run killed with SIGKILL mid-training and restarted with resume=true ends like an uninterrupted one."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

SCRIPT = Path(sys.executable).with_name("recforge-train")
RUN = [
    "dataset.reader.num_users=400", "dataset.reader.num_items=80", "dataset.max_len=20", "hidden_size=16",
    "logger=csv", "callbacks.progress_bar=null", "trainer.deterministic=true", "trainer.max_epochs=8",
    "callbacks.early_stopping.patience=100",
]


def env_for(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "RECFORGE_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}


def run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), *RUN, *args], cwd=tmp_path, env=env_for(tmp_path), capture_output=True,
                          text=True, timeout=300)


def val_curve(run_dir: Path) -> dict[int, float]:
    with open(run_dir / "csv" / "metrics.csv", newline="") as fh:
        return {int(r["epoch"]): float(r["val/ndcg@10"]) for r in csv.DictReader(fh) if r.get("val/ndcg@10")}


def test_sigkill_then_resume_gives_the_uninterrupted_metrics(tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    done = run(tmp_path, f"hydra.run.dir={whole}")
    assert done.returncode == 0, done.stderr[-2000:]

    proc = subprocess.Popen([str(SCRIPT), *RUN, f"hydra.run.dir={killed}"], cwd=tmp_path, env=env_for(tmp_path),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = killed / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 240
    while not last.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.kill()  # SIGKILL: no handler runs, nothing is flushed
    proc.wait()
    assert last.exists() and not (killed / "metrics.json").exists(), "the run must be killed before it finished"

    resumed = run(tmp_path, f"hydra.run.dir={killed}", "resume=true")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a = json.loads((whole / "metrics.json").read_text())
    b = json.loads((killed / "metrics.json").read_text())
    assert b["resumed_from"] == str(last)
    assert b["test"] == a["test"] and b["val"] == a["val"] and b["best_epoch"] == a["best_epoch"]
    assert b["epochs"] == a["epochs"] == 8
    # the CSV log is whole: every epoch once, the same validation curve
    assert val_curve(killed) == val_curve(whole) and sorted(val_curve(whole)) == list(range(8))


def test_resume_refuses_a_finished_run_or_a_changed_config(tmp_path):
    out = tmp_path / "run"
    first = run(tmp_path, f"hydra.run.dir={out}", "trainer.max_epochs=1")
    assert first.returncode == 0, first.stderr[-2000:]
    again = run(tmp_path, f"hydra.run.dir={out}", "trainer.max_epochs=1", "resume=true")
    assert again.returncode == 2
    assert again.stderr.strip().splitlines()[-1] == (
        f"recforge: error: resume=true: the run in {out} already finished (metrics.json exists); start a new run instead.")
    assert (out / "metrics.json").exists()  # the finished run is untouched

    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    overwrite = run(tmp_path, f"hydra.run.dir={out}", "trainer.max_epochs=1")  # no resume: refused
    assert overwrite.returncode == 2
    assert overwrite.stderr.strip().splitlines()[-1] == (
        f"recforge: error: {out} already holds a run and runs are never overwritten; choose another "
        "hydra.run.dir, or add resume=true to continue that run.")
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before  # nothing rewritten

    (out / "metrics.json").unlink()  # pretend it was interrupted, then resume with another learning rate
    changed = run(tmp_path, f"hydra.run.dir={out}", "trainer.max_epochs=1", "resume=true", "optimizer.lr=0.5")
    assert changed.returncode == 2
    assert "the config differs from the interrupted run's" in changed.stderr and "optimizer.lr" in changed.stderr
    assert (out / "checkpoints" / "last.ckpt").exists() and (out / "config.yaml").exists()  # never removed

    missing = run(tmp_path, f"hydra.run.dir={tmp_path / 'nothing'}", "resume=true")
    assert missing.returncode == 2
    assert "resume=true: no checkpoints/last.ckpt and config.yaml in" in missing.stderr
