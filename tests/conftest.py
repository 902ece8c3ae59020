"""Shared fixtures: the real data folder beside the project, and composing train.yaml like the CLI does."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import ModuleType
from typing import Callable

import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import DictConfig, open_dict

PROJECT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("RECFORGE_DATA", PROJECT.parent / "shared" / "data"))


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny models run far faster single-threaded on 2 cores (no OpenMP spin contention)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def project_script() -> Callable[[str], ModuleType]:
    """Load one of the project's scripts (benchmarks/, experiments/) as a module: project_script("benchmarks/overhead.py")."""

    def _load(relative: str) -> ModuleType:
        spec = importlib.util.spec_from_file_location(Path(relative).stem, PROJECT / relative)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)  # type: ignore[union-attr]
        return module

    return _load


@pytest.fixture(scope="session")
def data_root() -> Path:
    """../shared/data (or $RECFORGE_DATA); tests that need real files skip when it is absent."""
    if not (SHARED_DATA / "ml-100k" / "u.data").exists():
        pytest.skip(f"real datasets not found at {SHARED_DATA} (set RECFORGE_DATA)")
    return SHARED_DATA


@pytest.fixture
def compose_train(tmp_path: Path) -> Callable[..., DictConfig]:
    """Compose conf/train.yaml with overrides; outputs and caches go to tmp_path."""

    def _compose(*overrides: str) -> DictConfig:
        with initialize_config_module("recforge.conf", version_base="1.3"):
            cfg = compose("train", overrides=list(overrides))
        with open_dict(cfg):
            cfg.paths.root_dir = str(PROJECT)
            cfg.paths.output_dir = str(tmp_path / "run")
            cfg.paths.cache_dir = str(tmp_path / "cache")
        return cfg

    return _compose
