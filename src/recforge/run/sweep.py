"""Sweeps: every trial its own run (and W&B run), failed trials recorded and skipped, a summary at the end."""
from __future__ import annotations

import hashlib
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from recforge.run.records import write_json

log = logging.getLogger(__name__)

FAILED_FILE = "failed.json"


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}, "c": [1, 2]} -> {"a.b": 1, "c": [1, 2]}: one key per leaf, for dashboards."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def model_name(cfg: DictConfig) -> str:
    """Class name of the encoder (``recforge...sasrec.SASRec`` -> ``SASRec``); text tasks (``encoder: null``)
    name their text encoder."""
    encoder = cfg.get("encoder") or cfg.get("text_encoder") or {}
    return str(encoder.get("_target_", "model")).rsplit(".", 1)[-1]


def run_identity(cfg: DictConfig, run_dir: str | Path, sweep_dir: str | Path | None,
                 override_dirname: str) -> dict[str, Any]:
    """W&B group, name and tags of one run.

    group: ``sweep_name`` when set, else the multirun directory's name (so a sweep's trials form one group);
    name: the trial's overrides (``encoder=gru4rec,seed=2``), else the run directory's name;
    tags: dataset, model, plus the user's ``tags``.
    """
    group = cfg.get("sweep_name") or (Path(sweep_dir).name if sweep_dir else None)
    name = override_dirname or Path(run_dir).name
    tags = [str(cfg.dataset.get("name", "data")), model_name(cfg), *map(str, cfg.get("tags") or [])]
    return {"group": group, "name": name, "tags": list(dict.fromkeys(tags))}


def record_failure(run_dir: str | Path, exc: BaseException) -> dict[str, Any]:
    """Write ``failed.json`` (one-line error, type, traceback) in the run directory; return its content."""
    record = {
        "status": "failed",
        "error": " ".join(str(exc).split()) or type(exc).__name__,
        "type": type(exc).__name__,
        "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
    }
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    write_json(Path(run_dir) / FAILED_FILE, record)
    return record


def finish_wandb(failed: bool) -> None:
    """Close the W&B run of this trial, so the next trial in the same process starts its own run."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish(exit_code=1 if failed else 0)


def failed_trials(sweep_dir: str | Path) -> list[tuple[str, str]]:
    """(trial directory name, error) for every trial of a multirun that wrote failed.json."""
    found = []
    for path in sorted(Path(sweep_dir).glob(f"*/{FAILED_FILE}")):
        record = OmegaConf.load(path)  # JSON is YAML
        found.append((path.parent.name, str(record.get("error", ""))))
    return found


class TrialSummary(Callback):
    """Hydra callback: at the end of a multirun, say how many trials failed and where their errors are."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        failed = failed_trials(sweep_dir)
        total = sum(1 for p in sweep_dir.iterdir() if p.is_dir() and (p / ".hydra").is_dir()) if sweep_dir.is_dir() else 0
        link_latest(sweep_dir)
        if failed:
            log.warning("%d of %d trials failed (details in <trial>/%s):", len(failed), total, FAILED_FILE)
            for name, error in failed:
                log.warning("  %s: %s", name, error)
        else:
            log.info("all %d trials finished; compare them with: recforge-report %s", total, sweep_dir)


def link_latest(sweep_dir: Path) -> None:
    """``<sweeps>/latest`` -> this multirun, so ``recforge-report outputs/multiruns/latest`` needs no timestamp."""
    if not sweep_dir.is_dir():
        return
    link, tmp = sweep_dir.parent / "latest", sweep_dir.parent / f".latest-{os.getpid()}"
    try:
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(sweep_dir.name, target_is_directory=True)
        os.replace(tmp, link)  # atomic: a reader sees the old or the new target
    except OSError as exc:  # e.g. a file system without symlinks: only a convenience is lost
        log.warning("could not point %s at %s (%s)", link, sweep_dir, exc)


def short_dirname(name: str, limit: int = 120) -> str:
    """A trial directory name from its overrides, one path component: a nested group's ``/`` becomes ``.``
    (``dataset/split=global_temporal`` -> ``dataset.split=global_temporal``), and the name is cut to ``limit``
    characters with a hash of the whole (file systems refuse names over 255 bytes; Optuna's floats make long ones)."""
    name = name.replace("/", ".")
    if len(name) <= limit:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:10]
    return f"{name[:limit - 11]}-{digest}"


def optuna_direction(mode: str) -> str:
    """objective_mode (max/min) -> Optuna's direction (maximize/minimize)."""
    return {"max": "maximize", "min": "minimize"}[mode]


OmegaConf.register_new_resolver("optuna_direction", optuna_direction, replace=True)
OmegaConf.register_new_resolver("short_dirname", short_dirname, replace=True)
