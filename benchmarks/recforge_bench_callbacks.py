"""Lightning callback for benchmarks/recbole_compare.py: a training clock plus the test metrics of every epoch.

After each epoch (training, validation and checkpointing done) it records the elapsed training time, the
validation metrics and, for "time to reach RecBole's best test NDCG@10" only, the test metrics of the current
weights. That extra test pass is excluded from the clock and leaves the random number streams untouched, so
the run trains exactly as it would without the callback. ``trainer.test`` on the best checkpoint (after
loading it) is timed as the full-ranking evaluation of all test users. Everything goes to one JSON file,
rewritten after every epoch.

    recforge-train experiment=ml100k_sasrec ... +callbacks.bench._target_=recforge_bench_callbacks.BenchClock \
        +callbacks.bench.path=<file.json>      (with benchmarks/ on PYTHONPATH)
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch

from recforge.evaluation.metrics import ranking_metrics


def test_metrics(module: Any, loader: Any) -> dict[str, float]:
    """Full-ranking test metrics of the module's current weights (as its ``test_step`` computes them)."""
    ranks, unreachable = [], []
    for batch in loader:
        ranks.append(module.rank(batch))  # (B,)
        unreachable.append(module.unreachable_targets(batch))  # (B,)
    return {**ranking_metrics(torch.cat(ranks), list(module.val_ranks.ks)),
            "unreachable": torch.cat(unreachable).double().mean().item()}


class BenchClock(L.Callback):
    """Per-epoch elapsed training time (test passes excluded), val and test metrics; timed final test."""

    def __init__(self, path: str, test_every_epoch: bool = True) -> None:
        self.path, self.test_every_epoch = Path(path), test_every_epoch
        self.record: dict[str, Any] = {"epochs": [], "excluded_seconds": 0.0}
        self._start = 0.0
        self._test_start = 0.0

    def _elapsed(self) -> float:
        return time.perf_counter() - self._start - self.record["excluded_seconds"]

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        elapsed = self._elapsed()
        history = getattr(pl_module, "val_history", [])
        entry: dict[str, Any] = {"epoch": trainer.current_epoch, "elapsed": round(elapsed, 3),
                                 "val": dict(history[-1][1]) if history else {}}
        if self.test_every_epoch and trainer.datamodule is not None:
            excluded_from = time.perf_counter()
            entry["test"] = self._test_now(pl_module, trainer.datamodule.test_dataloader())
            entry["test_seconds"] = round(time.perf_counter() - excluded_from, 3)
            self.record["excluded_seconds"] += time.perf_counter() - excluded_from
        self.record["epochs"].append(entry)
        self._write()

    @staticmethod
    def _test_now(module: L.LightningModule, loader: Any) -> dict[str, float]:
        """Test metrics without disturbing training: eval mode, no grad, and every RNG state restored."""
        cpu_state = torch.get_rng_state()  # iterating a DataLoader draws a seed from the global generator
        was_training = module.training
        module.eval()
        try:
            with torch.inference_mode():
                return test_metrics(module, loader)
        finally:
            module.train(was_training)
            torch.set_rng_state(cpu_state)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.record["train_seconds"] = round(self._elapsed(), 3)
        self.record["excluded_seconds"] = round(self.record["excluded_seconds"], 3)
        self._write()

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._test_start = time.perf_counter()

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.record["eval_seconds"] = round(time.perf_counter() - self._test_start, 3)
        self.record["threads"] = torch.get_num_threads()
        self._write()

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.record, indent=1))
