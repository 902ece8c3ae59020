"""recforge-train: compose the config -> build data and parts -> fit -> test on the best checkpoint -> write.

Returns the configured objective (default ``val/ndcg@10``) so Hydra sweepers can optimise it.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from recforge.cli import check_required, user_errors
from recforge.data.datamodule import SequenceDataModule
from recforge.errors import RecforgeError
from recforge.evaluation.metrics import METRICS
from recforge.models.module import NextItemModule
from recforge.runinfo import run_info, write_json

log = logging.getLogger(__name__)


def build(cfg: DictConfig) -> tuple[SequenceDataModule, NextItemModule]:
    """Instantiate the datamodule (and read its data), then the parts sized by it, then the module."""
    datamodule: SequenceDataModule = instantiate(cfg.dataset)
    datamodule.prepare_data()
    datamodule.setup("fit")
    embedder = instantiate(cfg.item_embedder, num_items=datamodule.num_items)
    module = NextItemModule(
        encoder=instantiate(cfg.encoder, item_embedder=embedder),
        decoder=instantiate(cfg.decoder, item_embedder=embedder),
        loss=instantiate(cfg.loss),
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
        ks=tuple(cfg.evaluation.ks),
        mask_history=cfg.evaluation.mask_history,
    )
    return datamodule, module


def build_trainer(cfg: DictConfig) -> L.Trainer:
    loggers = _instantiate_entries(cfg, "logger")
    callbacks = _instantiate_entries(cfg, "callbacks")
    return instantiate(cfg.trainer, logger=loggers or False, callbacks=callbacks)


def _instantiate_entries(cfg: DictConfig, group: str) -> list[Any]:
    """Build every entry of a dict group (loggers, callbacks); null entries are switched off."""
    return [instantiate(entry) for entry in (cfg.get(group) or {}).values() if entry is not None]


def check_entries(cfg: DictConfig) -> None:
    """Every logger and callback entry names its class (an experiment's leftovers would not)."""
    for group in ("logger", "callbacks"):
        for name, entry in (cfg.get(group) or {}).items():
            if entry is not None and "_target_" not in entry:
                raise RecforgeError(
                    f"{group}.{name} has settings but no _target_ (left over from an experiment after choosing "
                    f"another {group} option?); set {group}.{name}=null or pick a {group} option that defines it."
                )


def best_checkpoint(trainer: L.Trainer) -> str | None:
    cb = trainer.checkpoint_callback
    return getattr(cb, "best_model_path", None) or None


def train(cfg: DictConfig) -> dict[str, Any]:
    """One run; writes run_info.json, config.yaml, dataset_stats.json and metrics.json in the run dir."""
    check_required(cfg)
    check_objective(cfg.objective, cfg.objective_mode, list(cfg.evaluation.ks))
    check_entries(cfg)
    if cfg.get("ckpt_path") and not Path(cfg.ckpt_path).is_file():
        raise RecforgeError(f"ckpt_path={cfg.ckpt_path}: no checkpoint file at {Path(cfg.ckpt_path).resolve()}.")
    out = Path(cfg.paths.output_dir)
    is_main = rank_zero_only.rank == 0  # DDP workers started by Lightning write nothing
    L.seed_everything(cfg.seed, workers=True)
    datamodule, module = build(cfg)
    if is_main:
        write_json(out / "run_info.json", run_info(cfg.paths.root_dir))
        OmegaConf.save(cfg, out / "config.yaml", resolve=True)
        write_json(out / "dataset_stats.json", datamodule.stats)
    trainer = build_trainer(cfg)
    for logger in trainer.loggers:  # the resolved config, so runs can be compared by any key
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))  # type: ignore[arg-type]
    metrics = fit_and_test(trainer, module, datamodule, resume=cfg.get("ckpt_path"))
    metrics["best_epoch"], metrics["val"] = tested_validation(module, metrics["best_checkpoint"])
    if trainer.is_global_zero:
        write_json(out / "metrics.json", metrics)
    log.info("test metrics: %s", metrics["test"])
    log.info("run directory: %s", out)
    return metrics


def fit_and_test(trainer: L.Trainer, module: NextItemModule, datamodule: SequenceDataModule,
                 resume: str | None = None) -> dict[str, Any]:
    """Fit (unless nothing is trainable; from ``resume`` when given), then test the best-validation checkpoint."""
    started = time.perf_counter()
    ckpt = None
    if module.trainable:
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume)
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


def check_objective(objective: str, mode: str, ks: list[int]) -> None:
    """The objective must be a validation metric that is computed, e.g. val/ndcg@10 with 10 in evaluation.ks."""
    if not ks or any(not isinstance(k, int) or k < 1 for k in ks):
        raise RecforgeError(f"evaluation.ks={ks} must be a non-empty list of integers >= 1.")
    names = {f"val/{m}@{k}" for m in METRICS for k in ks}
    if objective not in names:
        raise RecforgeError(f"objective={objective} is not a computed metric; expected one of {', '.join(sorted(names))}.")
    if mode not in ("max", "min"):
        raise RecforgeError(f"objective_mode={mode} must be 'max' or 'min'.")


def tested_validation(module: NextItemModule, ckpt: str | None) -> tuple[int | None, dict[str, float]]:
    """(epoch, validation metrics) of the checkpoint that was tested: metrics.json always describes it."""
    if ckpt is None or module.loaded_epoch is None:
        return None, {}
    return module.loaded_epoch, dict(module.val_history).get(module.loaded_epoch, {})


def objective_value(metrics: dict[str, Any], objective: str) -> float | None:
    stage, name = objective.split("/", 1)
    value = metrics.get(stage, {}).get(name)
    return float(value) if value is not None else None


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    with user_errors(HydraConfig.get().runtime.output_dir):
        torch.set_float32_matmul_precision("high")
        metrics = train(cfg)
        return objective_value(metrics, cfg.objective)


if __name__ == "__main__":
    main()
