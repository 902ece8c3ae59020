"""User mistakes through the real ``recforge-train`` console script: non-zero exit, no traceback, one clear
message naming the problem, and no half-written run directory left behind."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(sys.executable).with_name("recforge-train")
GOOD_LINES = ["196\t242\t3\t881250949", "186\t302\t3\t891717742", "22\t377\t1\t878887116", "244\t51\t2\t880606923"]


def run_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "RECFORGE_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    env.pop("RECFORGE_DATA", None)
    return subprocess.run([str(SCRIPT), *args, "callbacks.progress_bar=null"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=180)


def assert_clean_failure(proc: subprocess.CompletedProcess, tmp_path: Path) -> None:
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr
    runs = tmp_path / "outputs" / "runs"
    left = sorted(str(p.relative_to(tmp_path)) for p in runs.rglob("*")) if runs.exists() else []
    assert left == [], f"run directory left behind after a user error: {left}"


def recforge_message(proc: subprocess.CompletedProcess) -> str:
    """The single 'recforge: error: ...' line (one sentence) of a user error."""
    lines = [line for line in proc.stderr.splitlines() if line.startswith("recforge: error: ")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


# --------------------------------------------------------------------------- mistakes caught by Hydra


def test_unknown_dataset_name(tmp_path):
    proc = run_cli(tmp_path, "dataset=nope")
    assert_clean_failure(proc, tmp_path)
    assert "Could not find 'dataset/nope'" in proc.stderr
    assert "Available options in 'dataset'" in proc.stderr and "synthetic" in proc.stderr


def test_unknown_config_key(tmp_path):
    proc = run_cli(tmp_path, "encoder.nonexistent_key=1")
    assert_clean_failure(proc, tmp_path)
    assert "Could not override 'encoder.nonexistent_key'" in proc.stderr
    assert "Key 'nonexistent_key' is not in struct" in proc.stderr


def test_malformed_append_override(tmp_path):
    proc = run_cli(tmp_path, "+foo")
    assert_clean_failure(proc, tmp_path)
    assert "Error parsing override '+foo'" in proc.stderr


def test_appended_key_the_encoder_does_not_take(tmp_path):
    """``+encoder.x=1`` composes, but the encoder constructor rejects it: named, and no run dir left."""
    proc = run_cli(tmp_path, "+encoder.nonexistent_key=1")
    assert "SASRec" in proc.stderr and "nonexistent_key" in proc.stderr
    assert_clean_failure(proc, tmp_path)


def test_missing_required_value(tmp_path):
    """dataset=csv without dataset.reader.path (``???`` in csv.yaml)."""
    proc = run_cli(tmp_path, "dataset=csv")
    assert "dataset.reader.path" in proc.stderr
    assert_clean_failure(proc, tmp_path)


# --------------------------------------------------------------------------- mistakes caught by recforge


def test_missing_data_directory(tmp_path):
    nowhere = tmp_path / "nowhere"
    proc = run_cli(tmp_path, "dataset=ml-100k", f"dataset.root={nowhere}")
    assert_clean_failure(proc, tmp_path)
    assert proc.returncode == 2
    message = recforge_message(proc)
    assert str(nowhere.resolve() / "ml-100k") in message
    assert "u.data" in message and "no such directory" in message


def test_malformed_line_in_data_file(tmp_path):
    folder = tmp_path / "data" / "ml-100k"
    folder.mkdir(parents=True)
    lines = GOOD_LINES[:2] + ["186\tnot-an-id\t3\t891717742"] + GOOD_LINES[2:]
    (folder / "u.data").write_text("\n".join(lines) + "\n")
    proc = run_cli(tmp_path, "dataset=ml-100k", f"dataset.root={tmp_path / 'data'}")
    assert_clean_failure(proc, tmp_path)
    assert proc.returncode == 2
    message = recforge_message(proc)
    assert f"{(folder / 'u.data').resolve()}: line 3 " in message
    assert "not-an-id" in message


def test_max_len_below_two(tmp_path):
    proc = run_cli(tmp_path, "dataset.max_len=1")
    assert_clean_failure(proc, tmp_path)
    assert proc.returncode == 2
    assert recforge_message(proc) == "recforge: error: dataset.max_len=1 must be an integer >= 2."


def test_objective_that_is_not_computed(tmp_path):
    proc = run_cli(tmp_path, "objective=val/ndcg@7")
    assert proc.returncode == 2
    assert_clean_failure(proc, tmp_path)
    message = recforge_message(proc)
    assert "objective=val/ndcg@7 is not a computed metric" in message and "val/ndcg@10" in message


def test_bad_cutoff_list(tmp_path):
    proc = run_cli(tmp_path, "evaluation.ks=[0,10]")
    assert proc.returncode == 2
    assert_clean_failure(proc, tmp_path)
    assert "evaluation.ks=[0, 10] must be a non-empty list of integers >= 1" in recforge_message(proc)


def test_sampled_metrics_with_no_negative(tmp_path):
    """evaluation.sampled.negatives=0: refused before any data is read (the dataset's folder does not exist)."""
    proc = run_cli(tmp_path, "evaluation.sampled.negatives=0", "dataset=ml-100k", f"dataset.root={tmp_path / 'none'}")
    assert_clean_failure(proc, tmp_path)
    assert proc.returncode == 2
    assert [line for line in proc.stderr.splitlines() if line] == [
        "recforge: error: evaluation.sampled.negatives=0 must be an integer >= 1 (or null)."]
    assert not (tmp_path / "cache").exists()


def test_experiment_leftovers_without_target(tmp_path):
    """An experiment that tunes a callback, combined with callbacks=none, leaves settings with no class."""
    proc = run_cli(tmp_path, "experiment=ml100k_sasrec", "callbacks=none", f"dataset.root={tmp_path}")
    assert proc.returncode == 2
    assert_clean_failure(proc, tmp_path)
    assert "callbacks.early_stopping has settings but no _target_" in recforge_message(proc)


def test_sampled_softmax_negatives_below_one(tmp_path):
    proc = run_cli(tmp_path, "loss=sampled_softmax", "loss.sampler.num_negatives=0")
    assert_clean_failure(proc, tmp_path)
    assert proc.returncode == 2
    assert recforge_message(proc).endswith("loss.sampler.num_negatives=0 must be an integer >= 1.")


def test_uniform_negatives_beyond_the_catalogue(tmp_path):
    # the default dataset has 399 items (of the 400 generated, one is never interacted with): 500 cannot be drawn
    proc = run_cli(tmp_path, "loss=sampled_softmax", "loss.sampler.num_negatives=500", "trainer.max_epochs=1")
    assert_clean_failure(proc, tmp_path)
    assert proc.returncode == 2
    assert recforge_message(proc) == (
        "recforge: error: loss.sampler.num_negatives=500 is larger than the 399 items that can be drawn; uniform "
        "sampling without replacement needs at most that many.")


# --------------------------------------------------------------------------- the global time split


def test_global_temporal_split_of_a_dataset_without_timestamps(tmp_path):
    """S3-Rec sequence files give only an order: the split names the dataset and its file, nothing is written."""
    folder = tmp_path / "data" / "s3rec"
    folder.mkdir(parents=True)
    (folder / "Beauty.txt").write_text("1 1 2 3 4\n2 2 3 4 5\n3 3 4 5 1\n")
    proc = run_cli(tmp_path, "dataset=beauty", "dataset/split=global_temporal", f"dataset.root={tmp_path / 'data'}")
    assert_clean_failure(proc, tmp_path)
    assert proc.returncode == 2
    assert recforge_message(proc) == (f"recforge: error: dataset.split=global_temporal needs timestamps; dataset "
                                      f"'beauty' ({(folder / 'Beauty.txt').resolve()}) has none.")


def test_global_temporal_quantile_outside_the_unit_interval(tmp_path):
    proc = run_cli(tmp_path, "dataset/split=global_temporal", "dataset.split.test=1.5")
    assert_clean_failure(proc, tmp_path)
    assert proc.returncode == 2
    assert recforge_message(proc) == "recforge: error: dataset.split.test=1.5 must be a number in (0, 1)."


def test_global_temporal_quantiles_that_leave_no_training_data(tmp_path):
    proc = run_cli(tmp_path, "dataset/split=global_temporal", "dataset.split.val=0.6", "dataset.split.test=0.4")
    assert_clean_failure(proc, tmp_path)
    assert proc.returncode == 2
    assert recforge_message(proc) == (
        "recforge: error: dataset.split.val=0.6 + dataset.split.test=0.4 must be < 1 (the interactions before the "
        "validation cut are the training data).")


def test_global_temporal_cut_times_that_leave_no_training_interaction(tmp_path):
    """Every rating at one time: the validation cut falls on it and nothing lies before it."""
    folder = tmp_path / "data" / "ml-100k"
    folder.mkdir(parents=True)
    lines = [f"{user}\t{item}\t3\t881250949" for user in (1, 2, 3) for item in (10, 20, 30, 40)]
    (folder / "u.data").write_text("\n".join(lines) + "\n")
    proc = run_cli(tmp_path, "dataset=ml-100k", "dataset/split=global_temporal", f"dataset.root={tmp_path / 'data'}")
    assert_clean_failure(proc, tmp_path)
    assert proc.returncode == 2
    assert recforge_message(proc) == (
        "recforge: error: dataset 'ml-100k' (3 users, the longest with 4 interactions): dataset.split.val=0.1 + "
        "dataset.split.test=0.1 put the validation cut at time 881250949, not after the first interaction (time "
        "881250949): no training interaction is left; lower them.")
