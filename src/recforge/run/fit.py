"""Fit, then test the best-validation checkpoint; the numbers metrics.json records about it."""
from __future__ import annotations

import time
from typing import Any

import lightning as L

from recforge.data.datamodule import SequenceDataModule
from recforge.models.module import NextItemModule


def best_checkpoint(trainer: L.Trainer) -> str | None:
    cb = trainer.checkpoint_callback
    return getattr(cb, "best_model_path", None) or None


def fit_and_test(trainer: L.Trainer, module: NextItemModule, datamodule: SequenceDataModule,
                 resume: str | None = None) -> dict[str, Any]:
    """Fit (unless nothing is trainable; from ``resume`` when given), then test the best-validation checkpoint."""
    started = time.perf_counter()
    ckpt = None
    if module.trainable:
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume, weights_only=True if resume else None)
        ckpt = best_checkpoint(trainer)
    fit_seconds = time.perf_counter() - started
    started = time.perf_counter()
    trainer.test(module, datamodule=datamodule, ckpt_path=ckpt, weights_only=True if ckpt else None)
    return {
        "test": module.test_metrics,
        "best_checkpoint": ckpt,
        "epochs": trainer.current_epoch,
        "fit_seconds": round(fit_seconds, 2),
        "test_seconds": round(time.perf_counter() - started, 2),
        "dataset": datamodule.stats,
    }


def tested_validation(module: NextItemModule, ckpt: str | None) -> tuple[int | None, dict[str, float]]:
    """(epoch, validation metrics) of the checkpoint that was tested: metrics.json always describes it."""
    if ckpt is None or module.loaded_epoch is None:
        return None, {}
    if getattr(module, "loaded_validation", None) is not None:  # validated several times per epoch (text tasks)
        return module.loaded_epoch, module.loaded_validation
    return module.loaded_epoch, dict(module.val_history).get(module.loaded_epoch, {})


def objective_value(metrics: dict[str, Any], objective: str) -> float | None:
    stage, name = objective.split("/", 1)
    value = metrics.get(stage, {}).get(name)
    return float(value) if value is not None else None
