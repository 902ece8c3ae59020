"""recforge-train: compose the config -> build data and parts -> fit -> test on the best checkpoint -> write.

Returns the configured objective (default ``val/ndcg@10``) so Hydra sweepers can optimise it. Everything it
does is the run layer's (:mod:`recforge.run`); this module only orders the steps.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from recforge.run.build import build, build_trainer, compile_loss, item_id_map
from recforge.run.cli import user_errors
from recforge.run.compress import attach_teacher, prune_encoder
from recforge.run.fit import fit_and_test, objective_value, tested_validation
from recforge.run.init_from import load_earlier_weights
from recforge.run.item_init import init_item_tables
from recforge.run.loggers import log_config, log_final_metrics
from recforge.run.progress import RunSummary
from recforge.run.records import write_json, write_run_records
from recforge.run.resume import carry_csv_history, checkpoint_to_resume, csv_history
from recforge.run.sweep import finish_wandb, record_failure, run_identity
from recforge.run.validate import validate_config

log = logging.getLogger(__name__)


def train(cfg: DictConfig, identity: dict[str, Any] | None = None) -> dict[str, Any]:
    """One run; writes run_info.json, config.yaml, dataset_stats.json and metrics.json in the run dir."""
    validate_config(cfg)  # first: a config mistake is reported before any data is read
    out = Path(cfg.paths.output_dir)
    resume = checkpoint_to_resume(cfg, out)
    L.seed_everything(cfg.seed, workers=True)
    datamodule, module = build(cfg)
    item_map = item_id_map(datamodule)
    if not cfg.get("resume"):  # item_embedder.init_from: item rows from another run's item vectors
        init_item_tables(module, item_map and item_map["item_ids"])
    load_earlier_weights(cfg, module, item_map)  # init_from: the earlier run's weights
    attach_teacher(module, cfg, datamodule)  # distill.teacher: a frozen teacher's softened scores in the loss
    prune_encoder(module, cfg)  # prune.amount: the encoder's linear weights pruned, then fine-tuned
    if cfg.get("compile"):
        compile_loss(module)
    history = csv_history(out, resume) if cfg.get("resume") else []
    trainer = build_trainer(cfg, identity)
    # only global rank 0 writes: the trainer knows the rank (before it, every node's first process looks like
    # rank 0: Lightning's rank_zero_only reads LOCAL_RANK/RANK, which a node started by hand does not set)
    if trainer.is_global_zero and not cfg.get("resume"):
        write_run_records(cfg, out, datamodule.stats, item_id_map(datamodule))
    log_config(trainer, cfg)
    carry_csv_history(trainer, history)
    metrics = fit_and_test(trainer, module, datamodule, resume=resume)
    if cfg.get("resume"):
        metrics["resumed_from"] = resume
    metrics["best_epoch"], metrics["val"] = tested_validation(module, metrics["best_checkpoint"])
    metrics["evaluation"] = OmegaConf.to_container(cfg.evaluation, resolve=True)  # full or sampled ranking, mask, K
    log_final_metrics(trainer, cfg, metrics)
    if trainer.is_global_zero:
        write_json(out / "metrics.json", metrics)
    if not any(isinstance(callback, RunSummary) for callback in trainer.callbacks):  # it prints them otherwise
        log.info("test metrics: %s; run directory: %s", metrics["test"], out)
    return metrics


def run_trial(cfg: DictConfig, run_dir: str, identity: dict[str, Any]) -> float | None:
    """One trial of a multirun: any failure is written to <run>/failed.json and logged, and the sweep goes on.

    Returns the objective, or None for a failed trial (the Optuna sweeper records None as a failed trial).
    """
    failed = True
    try:
        value = objective_value(train(cfg, identity), cfg.objective)
        failed = False
        return value
    except Exception as exc:  # noqa: BLE001 - a sweep outlives any one trial; the error is recorded, not lost
        record = record_failure(run_dir, exc)
        log.error("trial failed (%s): %s; details in %s/failed.json", record["type"], record["error"], run_dir)
        return None
    finally:
        finish_wandb(failed)


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    hydra_cfg = HydraConfig.get()
    run_dir = hydra_cfg.runtime.output_dir
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    identity = run_identity(cfg, run_dir, hydra_cfg.sweep.dir if multirun else None, hydra_cfg.job.override_dirname)
    torch.set_float32_matmul_precision("high")
    if multirun:
        return run_trial(cfg, run_dir, identity)
    failed = True
    fresh = not (Path(run_dir) / "config.yaml").exists()  # an interrupted run being resumed is never removed
    try:
        with user_errors(run_dir, remove=fresh):
            metrics = train(cfg, identity)
            failed = False
            return objective_value(metrics, cfg.objective)
    finally:
        finish_wandb(failed)


if __name__ == "__main__":
    main()
