"""What a run prints (recforge.run.progress): the objective and its best value in the progress bar, the summary
at the end, and a first run without Lightning's advertisements, accelerator lines or library warnings."""
from __future__ import annotations

import json
import logging
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelSummary
from torch.utils.data import DataLoader, TensorDataset

from recforge.run.progress import (
    BestValue,
    CompactModelSummary,
    ObjectiveProgressBar,
    RunSummary,
    model_line,
    summary_metrics,
    summary_text,
)

SCRIPT = Path(sys.executable).with_name("recforge-train")
TINY = ["dataset.reader.num_users=120", "dataset.reader.num_items=60", "dataset.reader.max_length=20",
        "dataset.max_len=10", "hidden_size=16", "trainer.max_epochs=2"]
SANITY_VALUE = 0.99  # logged by the sanity check: never a "best so far" (it validates an untrained model)


class HandMade(L.LightningModule):
    """Logs ``values[epoch]`` as val/ndcg@10 at the end of each validation, and hand-made test metrics."""

    def __init__(self, values: list[float], test: dict[str, float] | None = None) -> None:
        super().__init__()
        self.values, self.test = values, test or {}
        self.layer = torch.nn.Linear(1, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).sum()

    def validation_step(self, batch, batch_idx):
        pass

    def test_step(self, batch, batch_idx):
        pass

    def on_validation_epoch_end(self):
        value = SANITY_VALUE if self.trainer.sanity_checking else self.values[self.current_epoch]
        self.log("val/ndcg@10", value, prog_bar=False)

    def on_test_epoch_end(self):
        self.log_dict(self.test)

    def _loader(self):
        return DataLoader(TensorDataset(torch.ones(2, 1)), batch_size=2)

    train_dataloader = val_dataloader = test_dataloader = _loader

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


class Shown(L.Callback):
    """What the progress bar would show after each validation (runs after the bar: later in the list)."""

    def __init__(self, bar: ObjectiveProgressBar) -> None:
        self.bar, self.seen = bar, []

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self.seen.append(self.bar.get_metrics(trainer, pl_module))


def fit(values, mode, *callbacks, test=None):
    module = HandMade(values, test)
    trainer = L.Trainer(max_epochs=len(values), num_sanity_val_steps=1, logger=False, enable_checkpointing=False,
                        enable_model_summary=False, callbacks=list(callbacks), accelerator="cpu", devices=1)
    trainer.fit(module)
    if test is not None:
        trainer.test(module, verbose=False)
    return trainer


@pytest.mark.parametrize(("mode", "values", "best"), [
    ("max", [0.10, 0.30, 0.20, 0.25], [0.10, 0.30, 0.30, 0.30]),
    ("min", [0.50, 0.40, 0.45, 0.30], [0.50, 0.40, 0.40, 0.30]),
])
def test_progress_bar_shows_the_objective_and_the_best_so_far(mode, values, best):
    bar = ObjectiveProgressBar("val/ndcg@10", mode, leave=False)
    shown = Shown(bar)
    fit(values, mode, bar, shown)
    assert [m["val/ndcg@10"] for m in shown.seen] == pytest.approx(values, rel=1e-6)
    assert [m["best"] for m in shown.seen] == pytest.approx(best, rel=1e-6)  # the sanity check's 0.99 never counts
    assert bar.best.epoch == {"max": 1, "min": 3}[mode]


def test_progress_bar_without_the_objective_logged_shows_neither():
    bar = ObjectiveProgressBar("val/mrr@20", "max", leave=False)
    shown = Shown(bar)
    fit([0.1, 0.2], "max", bar, shown)
    assert all("val/mrr@20" not in m and "best" not in m for m in shown.seen) and len(shown.seen) == 2


def test_best_value_keeps_the_first_of_equal_values_and_ignores_nan():
    best = BestValue("max")
    for epoch, value in enumerate([0.2, 0.2, math.nan, torch.tensor(0.1), 0.3]):
        best.update(value, epoch)
        if epoch == 3:
            assert (best.value, best.epoch) == (0.2, 0)
    assert (best.value, best.epoch) == (0.3, 4)
    with pytest.raises(ValueError):
        BestValue("maximise")


TEST_METRICS = {"test/hr@5": 0.1, "test/hr@10": 0.245, "test/recall@10": 0.245, "test/ndcg@5": 0.13,
                "test/ndcg@10": 0.15245923, "test/mrr@10": 0.12416, "test/unreachable": 0.262,
                "test/cold/ndcg@10": 0.01}


def test_summary_text_for_hand_made_metrics():
    text = summary_text("val/ndcg@10", "max", 1, 0.19351, TEST_METRICS, "/runs/2026-12-02_05-57-24-171484")
    assert text == (
        "summary: best epoch 1 (val/ndcg@10 = 0.1935, max)\n"
        "  test: test/ndcg@10 0.1525 | test/hr@10 0.2450 | test/recall@10 0.2450 | test/mrr@10 0.1242\n"
        "  run directory: /runs/2026-12-02_05-57-24-171484")
    # K follows the objective; slices (test/cold/...) stay out
    assert list(summary_metrics("val/hr@5", TEST_METRICS)) == ["test/hr@5", "test/ndcg@5"]
    # an objective without K (pointwise tasks: val/rmse, val/auc) shows every overall test metric
    assert summary_metrics("val/rmse", {"test/mae": 0.7, "test/rmse": 0.9}) == {"test/rmse": 0.9, "test/mae": 0.7}
    # task=multi: the objective's head (its metrics are stage/<task>/<metric>)
    multi = {"test/intent/auc": 0.8, "test/value/rmse": 0.9, "test/next_item/hr@10": 0.2, "test/next_item/ndcg@10": 0.1,
             "test/next_item/ndcg@20": 0.15}
    assert summary_metrics("val/intent/auc", multi) == {"test/intent/auc": 0.8}
    assert summary_metrics("val/next_item/ndcg@10", multi) == {"test/next_item/ndcg@10": 0.1, "test/next_item/hr@10": 0.2}
    assert summary_text("val/rmse", "min", None, None, {}, None) == (
        "summary: no validated epoch\n  test: no test metrics")


def test_run_summary_is_printed_after_testing(caplog):
    summary = RunSummary("val/ndcg@10", "max", output_dir="/runs/x")
    with caplog.at_level(logging.INFO, logger="recforge.run.progress"):
        fit([0.10, 0.30, 0.20], "max", summary, test={"test/ndcg@10": 0.25, "test/hr@10": 0.5, "test/hr@20": 0.7})
    (record,) = [r for r in caplog.records if r.name == "recforge.run.progress"]
    assert record.getMessage() == (
        "summary: best epoch 1 (val/ndcg@10 = 0.3000, max)\n"
        "  test: test/ndcg@10 0.2500 | test/hr@10 0.5000\n"
        "  run directory: /runs/x")


def test_model_line_lists_the_parts_with_parameters():
    rows = {"Name": ["encoder", "decoder", "loss"], "Type": ["SASRec", "DotProduct", "CrossEntropy"],
            "Params": ["129 K", "25.7 K", "0"]}
    assert model_line(rows, 129_000, 129_000, 0.516) == (
        "model: encoder SASRec (129 K), decoder DotProduct (25.7 K); 129 K trainable parameters of 129 K (0.52 MB)")
    assert issubclass(CompactModelSummary, ModelSummary)  # Lightning adds no table of its own


def test_first_run_is_quiet_and_ends_with_a_summary(tmp_path):
    env = {**os.environ, "RECFORGE_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONWARNINGS", None)
    proc = subprocess.run([str(SCRIPT), *TINY], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    for noise in ("Tip", "TPU available", "GPU available", "FLOPs", "litlogger", "litmodels"):
        assert noise not in output, noise
    assert [line for line in output.splitlines() if re.search("warn", line, re.IGNORECASE)] == []
    (run,) = (tmp_path / "outputs" / "runs").iterdir()
    metrics = json.loads((run / "metrics.json").read_text())
    assert f"summary: best epoch {metrics['best_epoch']} (val/ndcg@10 = " in output
    assert f"test/ndcg@10 {metrics['test']['ndcg@10']:.4f} | test/hr@10 {metrics['test']['hr@10']:.4f}" in output
    assert f"  run directory: {run.resolve()}\n" in output
    assert re.search(r"model: encoder SASRec \([\d.]+ K\), decoder DotProduct", output)
