"""Find finished run directories (config.yaml + metrics.json or failed.json) and flatten them into one table."""
from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from recforge.errors import RecforgeError

MODEL_NAMES = {"ConstantEncoder": "Popularity"}  # encoder class -> name shown in reports
RUN_FIELDS = ("best_epoch", "epochs", "fit_seconds", "test_seconds")
STAGES = ("test", "val")
# dataset statistics from metrics.json kept as ``stats/<name>`` columns (the protocol line reads them)
STATS = ("val_samples", "test_samples", "val_repeated_targets", "test_repeated_targets", "val_targets", "test_targets",
         "val_users_without_target", "test_users_without_target", "val_users_without_input", "test_users_without_input")


def find_runs(path: str | Path) -> tuple[list[Path], list[Path]]:
    """(finished runs, unfinished runs) under ``path``: directories with config.yaml, recursively.

    A run is finished when it holds metrics.json or failed.json; hidden folders are not searched and
    the search does not descend into a run.
    """
    finished, unfinished = [], []
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if "config.yaml" not in files:
            continue
        if "metrics.json" in files or "failed.json" in files:
            finished.append(Path(root))
            dirs[:] = []
        elif (Path(root) / ".hydra").is_dir() or "run_info.json" in files:
            unfinished.append(Path(root))
    return finished, unfinished


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> {"a.b.c": value}; lists become their string form ("[5, 10, 20]")."""
    if not isinstance(tree, dict):
        return {prefix: str(tree) if isinstance(tree, (list, tuple)) else tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def model_name(target: Any) -> str | None:
    """``recforge.models.encoders.sasrec.SASRec`` -> ``SASRec`` (ConstantEncoder -> Popularity)."""
    if not isinstance(target, str) or not target:
        return None
    name = target.rsplit(".", 1)[-1]
    return MODEL_NAMES.get(name, name)


def _read(path: Path, loader: Any, expected: type) -> Any:
    try:
        data = loader(path.read_text())
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise RecforgeError(f"cannot read {path}: {' '.join(str(exc).split())[:200]}.") from None
    if not isinstance(data, expected):
        raise RecforgeError(f"{path} is damaged: expected a {expected.__name__} at the top level.")
    return data


def read_run(run: Path) -> dict[str, Any]:
    """One row: run, status, error, flattened config, model, test/* and val/* metrics, run fields, overrides."""
    config = _read(run / "config.yaml", yaml.safe_load, dict)
    row: dict[str, Any] = {"run": str(run), "status": "ok", "error": None}
    row.update(flatten(config))
    encoder = config.get("encoder")
    row["model"] = model_name(encoder.get("_target_") if isinstance(encoder, dict) else None)
    overrides = run / ".hydra" / "overrides.yaml"
    row["overrides"] = ",".join(map(str, _read(overrides, yaml.safe_load, list))) if overrides.is_file() else ""
    if (run / "metrics.json").is_file():
        row.update(_metrics(run / "metrics.json"))
    else:
        failed = _read(run / "failed.json", json.loads, dict)
        kind, message = failed.get("type"), str(failed.get("error", "")).strip() or "no error message recorded"
        row.update(status="failed", error=f"{kind}: {message}" if kind else message)
    return row


def _metrics(path: Path) -> dict[str, Any]:
    data = _read(path, json.loads, dict)
    row: dict[str, Any] = {}
    try:
        for stage in STAGES:
            for name, value in (data.get(stage) or {}).items():
                row[f"{stage}/{name}"] = float(value) if value is not None else None
        for field in RUN_FIELDS:
            value = data.get(field)
            row[field] = float(value) if value is not None else None
        stats = data.get("dataset") or {}
        for name in STATS:
            if stats.get(name) is not None:
                row[f"stats/{name}"] = int(stats[name])
    except (TypeError, ValueError, AttributeError):
        raise RecforgeError(
            f"{path} is damaged: metric values must be numbers grouped under 'test' and 'val'.") from None
    return row


def collect_runs(paths: Iterable[str | Path]) -> pd.DataFrame:
    """One row per finished run found under ``paths`` (each a run or a folder of runs, searched recursively)."""
    rows: dict[Path, dict[str, Any]] = {}
    unfinished: list[str] = []
    for path in paths:
        if not Path(path).exists():
            raise RecforgeError(f"{path} does not exist; expected a run directory or a folder of runs.")
        finished, waiting = find_runs(path)
        unfinished += map(str, waiting)
        if not finished:
            running = f" ({len(waiting)} unfinished, still running or killed)" if waiting else ""
            raise RecforgeError(f"no finished runs found under {path}{running}: expected directories holding "
                                "config.yaml with metrics.json or failed.json.")
        for run in finished:
            rows.setdefault(run.resolve(), read_run(run))
    frame = pd.DataFrame(list(rows.values()))
    frame.attrs["unfinished"] = unfinished  # run directories still running or killed
    return frame
