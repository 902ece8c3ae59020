"""benchmarks/scale_20m.py end to end on a tiny slice: every stage is timed, evaluation covers every user."""
from __future__ import annotations

import argparse
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


def test_losses_compose_with_their_negatives(project_script):
    """--loss ce has no negatives to set; sampled_softmax takes --num-negatives, or the batch with in_batch."""
    bench = project_script("benchmarks/scale_20m.py")

    def composed(loss: str, num_negatives: int = 1, overrides: tuple[str, ...] = ()):
        args = argparse.Namespace(scale=0.0005, max_len=10, batch_size=64, eval_batch_size=32, item_chunk_size=100,
                                  loss=loss, num_negatives=num_negatives, overrides=list(overrides))
        return bench.compose_run(args, "/tmp/unused-cache", "/tmp/unused-run")

    ce = composed("ce")
    assert ce.loss._target_ == "recforge.models.losses.CrossEntropy" and "sampler" not in ce.loss
    ssm = composed("sampled_softmax", 1024)
    assert ssm.loss._target_ == "recforge.models.losses.SampledSoftmax"
    assert ssm.loss.sampler.num_negatives == 1024 and ssm.loss.sampler._target_.endswith("SharedUniform")
    in_batch = composed("sampled_softmax", 1024, ("loss/sampler=in_batch",))
    assert in_batch.loss.sampler._target_.endswith("InBatchNegatives") and "num_negatives" not in in_batch.loss.sampler
    assert bench._sampler(["loss/sampler=popularity"]) == "popularity" and bench._sampler([]) == "uniform"
