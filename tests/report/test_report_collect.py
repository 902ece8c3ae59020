"""collect_runs: one row per finished run, config flattened, metrics as test/* and val/* columns."""
from __future__ import annotations

import json
import math

import pytest

from recforge.errors import RecforgeError
from recforge.report.collect import collect_runs, find_runs, flatten, model_name


def test_flatten_nested_config_with_lists():
    assert flatten({"a": {"b": 1, "c": {"d": "x"}}, "ks": [5, 10], "none": None}) == {
        "a.b": 1, "a.c.d": "x", "ks": "[5, 10]", "none": None}


@pytest.mark.parametrize("target, name", [
    ("recforge.models.encoders.sasrec.SASRec", "SASRec"),
    ("recforge.models.encoders.popularity.ConstantEncoder", "Popularity"),
    (None, None),
])
def test_model_name_from_encoder_target(target, name):
    assert model_name(target) == name


def test_collect_hand_made_sweep(hand_runs):
    runs = collect_runs([hand_runs]).set_index("overrides")
    assert len(runs) == 8
    sas2 = runs.loc["encoder=sasrec,seed=2"]
    assert (sas2["status"], sas2["model"], sas2["seed"]) == ("ok", "SASRec", 2)
    assert (sas2["test/hr@10"], sas2["test/ndcg@10"], sas2["val/ndcg@10"]) == pytest.approx((0.32, 0.16, 0.17))
    run_fields = (sas2["best_epoch"], sas2["epochs"], sas2["fit_seconds"], sas2["test_seconds"])
    assert run_fields == pytest.approx((8, 10, 32.0, 0.5))
    assert sas2["evaluation.ks"] == "[5, 10, 20]" and sas2["optimizer.lr"] == 0.001
    assert runs.loc["encoder=popularity,seed=1", "model"] == "Popularity"
    failed = runs.loc["encoder=gru4rec,seed=4"]
    assert failed["status"] == "failed"
    assert failed["error"] == "OutOfMemoryError: CUDA out of memory while allocating 2.00 GiB"
    assert math.isnan(failed["test/hr@10"])


def test_single_run_dir_and_duplicates_are_collected_once(hand_runs):
    run = next(hand_runs.glob("0_*"))
    assert len(collect_runs([run])) == 1
    assert len(collect_runs([hand_runs, run])) == 8


def test_unfinished_runs_are_skipped_and_reported(hand_runs, make_run):
    running = make_run(hand_runs / "9_running")
    (running / "metrics.json").unlink()
    finished, unfinished = find_runs(hand_runs)
    assert len(finished) == 8 and unfinished == [running]
    assert collect_runs([hand_runs]).attrs["unfinished"] == [str(running)]
    with pytest.raises(RecforgeError, match=r"no finished runs found under .*9_running \(1 unfinished, still running"):
        collect_runs([running])


def test_no_runs_is_a_user_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(RecforgeError, match=f"no finished runs found under {tmp_path / 'empty'}:"):
        collect_runs([tmp_path / "empty"])
    with pytest.raises(RecforgeError, match="does not exist"):
        collect_runs([tmp_path / "missing"])


@pytest.mark.parametrize("content, message", [
    ("{not json", "cannot read .*metrics.json"),
    ("[1, 2]", "metrics.json is damaged: expected a dict"),
    (json.dumps({"test": {"hr@10": "high"}}), "metrics.json is damaged: metric values must be numbers"),
])
def test_damaged_metrics_json_names_the_file(tmp_path, make_run, content, message):
    run = make_run(tmp_path / "run")
    (run / "metrics.json").write_text(content)
    with pytest.raises(RecforgeError, match=message) as info:
        collect_runs([tmp_path])
    assert str(run / "metrics.json") in str(info.value)
