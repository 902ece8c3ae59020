"""Run-directory records: git commit, package versions, atomic JSON writes."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

PACKAGES = ("recforge", "torch", "lightning", "hydra-core", "omegaconf", "torchmetrics", "numpy", "pandas")


def git_commit(cwd: str | Path) -> str | None:
    """HEAD commit of the repository containing ``cwd`` (with '-dirty' when it has changes), or None."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return sha.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def run_info(cwd: str | Path) -> dict[str, Any]:
    return {
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": sys.argv,
        "cwd": str(cwd),
        "git_commit": git_commit(Path(__file__).parent),  # the recforge source that ran
        "cwd_git_commit": git_commit(cwd),  # the user's project, if it is a repository
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "packages": package_versions(),
    }


def write_text(path: str | Path, text: str) -> None:
    """Write text atomically: a temporary file in the same folder, then rename (never a half-written file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, data: Any) -> None:
    """Write JSON atomically."""
    write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


ITEM_IDS_FILE = "item_ids.json"


def write_run_records(cfg: DictConfig, out: Path, stats: dict[str, Any], item_ids: dict[str, Any] | None) -> None:
    """A new run's records: run_info.json, the resolved config.yaml, dataset_stats.json and, for item data, the
    raw id of every internal item id (item_ids.json)."""
    write_json(out / "run_info.json", run_info(cfg.paths.root_dir))
    write_text(out / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    write_json(out / "dataset_stats.json", stats)
    if item_ids is not None:
        write_json(out / ITEM_IDS_FILE, item_ids)
