"""Continuing runs: the checkpoint a run resumes from (refusing a changed config, a finished run or an occupied
directory), and the CSV log rows carried over from the interrupted run."""
from __future__ import annotations

import csv
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from recforge.errors import RecforgeError
from recforge.run.checkpoints import check_checkpoint
from recforge.run.sweep import flatten


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
