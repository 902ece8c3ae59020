"""recforge-train: compose the config -> build data and parts -> fit -> test on the best checkpoint -> write.

Returns the configured objective (default ``val/ndcg@10``) so Hydra sweepers can optimise it.
"""
from __future__ import annotations

import csv
import logging
import time
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from recforge.checkpoints import check_checkpoint
from recforge.cli import user_errors
from recforge.data.datamodule import SequenceDataModule
from recforge.data.reviews import ReviewDataModule
from recforge.errors import RecforgeError
from recforge.models.module import NextItemModule
from recforge.runinfo import run_info, write_json, write_text
from recforge.sweep import finish_wandb, flatten, record_failure, run_identity
from recforge.text.attach import attach_item_text
from recforge.validate import validate_config

log = logging.getLogger(__name__)


def build(cfg: DictConfig) -> tuple[SequenceDataModule, NextItemModule]:
    """Instantiate the datamodule (and read its data), then the parts sized by it, then the module."""
    datamodule: SequenceDataModule = instantiate(cfg.dataset)
    datamodule.prepare_data()
    datamodule.setup("fit")
    if isinstance(datamodule, ReviewDataModule):  # text tasks: the text encoder and a head, no item parts
        return datamodule, build_text_module(cfg, datamodule)
    module = build_module(cfg, datamodule.num_items, getattr(datamodule, "num_users", 0))
    # text item embedders get their item texts (frozen embeddings through the cache); id models read nothing
    item_text = OmegaConf.to_container(cfg.item_text, resolve=True) if cfg.get("item_text") else {}
    attach_item_text(module, datamodule, cache_dir=cfg.paths.cache_dir, **item_text)  # type: ignore[arg-type]
    return datamodule, module


def build_text_module(cfg: DictConfig, datamodule: ReviewDataModule) -> L.LightningModule:
    """The text task's module around ``cfg.text_encoder``; a fine-tuned encoder reads token ids, so the
    datamodule tokenizes with its tokenizer (a frozen one reads embeddings computed once, by row, cached in
    ``<paths.cache_dir>/text_embeddings``)."""
    module = instantiate(cfg.task, encoder=instantiate(cfg.text_encoder), loss=instantiate(cfg.loss),
                         optimizer=instantiate(cfg.optimizer),
                         scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
                         cache_dir=str(Path(cfg.paths.cache_dir) / "text_embeddings"))
    if module.fine_tune:
        datamodule.use_tokenizer(module.encoder.tokenizer)
    return module


NEXT_ITEM_TASK = {"_target_": "recforge.models.module.NextItemModule"}  # runs saved before the task group


def build_module(cfg: DictConfig, num_items: int, num_users: int = 0) -> L.LightningModule:
    """The parts sized for ``num_items`` items (and ``num_users`` users for a part with user vectors), wired
    into the task's LightningModule (no data read)."""
    embedder = instantiate(cfg.item_embedder, num_items=num_items)
    users = {"num_users": num_users} if "num_users" in cfg.decoder else {}
    encoder_users = {"num_users": num_users} if "num_users" in cfg.encoder else {}  # matrix factorisation
    task = cfg.get("task") or OmegaConf.create(
        {**NEXT_ITEM_TASK, "ks": list(cfg.evaluation.ks), "mask_history": cfg.evaluation.mask_history,
         "item_chunk_size": cfg.evaluation.get("item_chunk_size")})
    return instantiate(
        task,
        encoder=instantiate(cfg.encoder, item_embedder=embedder, **encoder_users),
        decoder=instantiate(cfg.decoder, item_embedder=embedder, **users),
        loss=instantiate(cfg.loss),
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
    )


ITEM_IDS_FILE = "item_ids.json"


def compile_loss(module: NextItemModule) -> None:
    """``compile=true``: torch.compile the training loss in place: the decoder's scores of every target position
    and the loss over them, the largest part of a training step (TorchInductor fuses the (M, N+1) scores,
    log-softmax and their backward). Dynamic shapes: the number of target positions M varies by batch.

    The encoder stays eager: on CPU its compiled form was slower (inductor's dropout random numbers; evaluation
    loses the fused eager transformer kernel), and eager dropout keeps the random numbers of an uncompiled run.
    Parameter names and checkpoints are unchanged; evaluation is not compiled."""
    module.loss.compile(dynamic=True)


def item_id_map(datamodule: SequenceDataModule) -> dict[str, Any] | None:
    """Raw dataset id of every internal item id (index; 0 is padding), so a served model speaks raw ids
    (None for text datasets: they have no items)."""
    if isinstance(datamodule, ReviewDataModule):
        return None
    if isinstance(datamodule, SequenceDataModule):
        item_ids = datamodule.load_sequences().item_ids  # entry 0 is "" (padding)
    else:  # rating samples (intent and value tasks) keep their own id map, without the padding entry
        item_ids = np.concatenate([[""], datamodule.item_ids])
    return {"dataset": datamodule.name, "num_items": len(item_ids) - 1, "max_len": datamodule.max_len,
            "item_ids": [str(i) for i in item_ids]}


def build_trainer(cfg: DictConfig, identity: dict[str, Any] | None = None) -> L.Trainer:
    loggers = _instantiate_entries(cfg, "logger", identity or {})
    callbacks = _instantiate_entries(cfg, "callbacks")
    return instantiate(cfg.trainer, logger=loggers or False, callbacks=callbacks)


def _instantiate_entries(cfg: DictConfig, group: str, identity: dict[str, Any] | None = None) -> list[Any]:
    """Build every entry of a dict group (loggers, callbacks); null entries are switched off.

    W&B loggers whose group/name/tags are unset get the run's identity (sweep group, overrides as name).
    """
    parts = []
    for entry in (cfg.get(group) or {}).values():
        if entry is None:
            continue
        extra = {}
        if identity and str(entry.get("_target_", "")).endswith("WandbLogger"):
            extra = {key: value for key, value in identity.items() if not entry.get(key)}
        parts.append(instantiate(entry, **extra))
    return parts


def log_config(trainer: L.Trainer, cfg: DictConfig) -> None:
    """The resolved config to every logger (W&B gets it flattened, one key per leaf), so runs compare by any key."""
    resolved: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    for logger in trainer.loggers:
        if type(logger).__name__ == "WandbLogger":
            logger.log_hyperparams(flatten(resolved))
        elif type(logger).__name__ != "TensorBoardLogger":  # TensorBoard gets them with the final metrics
            logger.log_hyperparams(resolved)


@rank_zero_only
def log_final_metrics(trainer: L.Trainer, cfg: DictConfig, metrics: dict[str, Any]) -> None:
    """The tested checkpoint's metrics: TensorBoard HParams gets them with the flattened config (runs compare
    offline); the W&B summary gets ``best/<objective>`` (what a W&B sweep optimises) and ``final/<stage>/<metric>``."""
    finals = {f"{stage}/{name}": value for stage in ("val", "test") for name, value in metrics.get(stage, {}).items()}
    params = {key: value if isinstance(value, (int, float, str, bool)) else str(value)
              for key, value in flatten(OmegaConf.to_container(cfg, resolve=True)).items()}  # type: ignore[arg-type]
    for logger in trainer.loggers:
        if type(logger).__name__ == "TensorBoardLogger":
            logger.log_hyperparams(params, metrics={f"hparams/{key}": value for key, value in finals.items()})
            # Lightning closed the writer after testing; this write reopened it. Close it again, or the event file
            # is left to a daemon thread that the interpreter's exit may kill before it writes.
            logger.finalize("success")
        elif type(logger).__name__ == "WandbLogger":
            best = objective_value(metrics, cfg.objective)
            logger.experiment.summary.update({f"final/{key}": value for key, value in finals.items()})
            if best is not None:
                logger.experiment.summary[f"best/{cfg.objective}"] = best


def best_checkpoint(trainer: L.Trainer) -> str | None:
    cb = trainer.checkpoint_callback
    return getattr(cb, "best_model_path", None) or None


def train(cfg: DictConfig, identity: dict[str, Any] | None = None) -> dict[str, Any]:
    """One run; writes run_info.json, config.yaml, dataset_stats.json and metrics.json in the run dir."""
    validate_config(cfg)  # first: a config mistake is reported before any data is read
    out = Path(cfg.paths.output_dir)
    resume = checkpoint_to_resume(cfg, out)
    is_main = rank_zero_only.rank == 0  # DDP workers started by Lightning write nothing
    L.seed_everything(cfg.seed, workers=True)
    datamodule, module = build(cfg)
    if cfg.get("compile"):
        compile_loss(module)
    if is_main and not cfg.get("resume"):
        write_json(out / "run_info.json", run_info(cfg.paths.root_dir))
        write_text(out / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        write_json(out / "dataset_stats.json", datamodule.stats)
        if (item_ids := item_id_map(datamodule)) is not None:
            write_json(out / ITEM_IDS_FILE, item_ids)
    history = csv_history(out, resume) if cfg.get("resume") else []
    trainer = build_trainer(cfg, identity)
    log_config(trainer, cfg)
    carry_csv_history(trainer, history)
    metrics = fit_and_test(trainer, module, datamodule, resume=resume)
    if cfg.get("resume"):
        metrics["resumed_from"] = resume
    metrics["best_epoch"], metrics["val"] = tested_validation(module, metrics["best_checkpoint"])
    log_final_metrics(trainer, cfg, metrics)
    if trainer.is_global_zero:
        write_json(out / "metrics.json", metrics)
    log.info("test metrics: %s", metrics["test"])
    log.info("run directory: %s", out)
    return metrics


def checkpoint_to_resume(cfg: DictConfig, out: Path) -> str | None:
    """The checkpoint training continues from: ``ckpt_path`` (into this new run directory), or with
    ``resume=true`` the run directory's own ``checkpoints/last.ckpt`` (continued in place, same config)."""
    if cfg.get("resume"):
        if cfg.get("ckpt_path"):
            raise RecforgeError("set either resume=true (continue this run directory) or ckpt_path=... (start a new run from a checkpoint), not both.")
        if (out / "metrics.json").exists():
            raise RecforgeError(f"resume=true: the run in {out} already finished (metrics.json exists); start a new run instead.")
        last = out / "checkpoints" / "last.ckpt"
        if not last.is_file() or not (out / "config.yaml").is_file():
            raise RecforgeError(f"resume=true: no checkpoints/last.ckpt and config.yaml in {out}; pass hydra.run.dir=<the interrupted run's directory>.")
        changed = config_changes(OmegaConf.load(out / "config.yaml"), cfg)
        if changed:
            raise RecforgeError(f"resume=true: the config differs from the interrupted run's {out / 'config.yaml'} at {', '.join(changed[:5])}; resume with the same overrides.")
        check_checkpoint(last)  # a damaged file is named, never loaded half-way
        return str(last)
    if rank_zero_only.rank == 0 and any((out / name).exists() for name in ("config.yaml", "metrics.json")):
        raise RecforgeError(f"{out} already holds a run and runs are never overwritten; choose another hydra.run.dir, or add resume=true to continue that run.")
    if cfg.get("ckpt_path") and not Path(cfg.ckpt_path).is_file():
        raise RecforgeError(f"ckpt_path={cfg.ckpt_path}: no checkpoint file at {Path(cfg.ckpt_path).resolve()}.")
    if cfg.get("ckpt_path"):
        check_checkpoint(cfg.ckpt_path)
    return cfg.get("ckpt_path")


def config_changes(saved: DictConfig, cfg: DictConfig,
                   ignore: tuple[str, ...] = ("resume", "ckpt_path", "paths.root_dir", "compile")) -> list[str]:
    """Dotted keys whose resolved values differ between a saved run config and ``cfg`` (``compile`` changes speed,
    not results, and is absent from runs saved before it existed: a run may be resumed with either value)."""
    old = flatten(OmegaConf.to_container(saved, resolve=True))  # type: ignore[arg-type]
    new = flatten(OmegaConf.to_container(cfg, resolve=True))  # type: ignore[arg-type]
    return sorted(k for k in old.keys() | new.keys() if k not in ignore and old.get(k) != new.get(k))


def csv_history(out: Path, ckpt: str | None) -> list[dict[str, float]]:
    """Rows of the CSV log up to the epoch of the checkpoint being resumed (later rows are redone)."""
    path = out / "csv" / "metrics.csv"
    if ckpt is None or not path.is_file():
        return []
    epoch = int(torch.load(ckpt, map_location="cpu", weights_only=True)["epoch"])
    with path.open(newline="") as handle:
        rows = [{k: int(float(v)) if k == "epoch" else float(v) for k, v in row.items() if v not in ("", None)}
                for row in csv.DictReader(handle)]
    return [row for row in rows if row.get("epoch", 0) <= epoch]


def carry_csv_history(trainer: L.Trainer, rows: list[dict[str, float]]) -> None:
    """Put the interrupted run's CSV rows back in front (Lightning's CSV writer starts a fresh file)."""
    for logger in trainer.loggers:
        if rows and isinstance(logger, CSVLogger):
            for row in rows:
                step = int(row.pop("step", 0))
                logger.experiment.log_metrics(row, step)


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
