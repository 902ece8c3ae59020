"""A tiny SASRec trained once per session by the real recforge-train (2 epochs on a small synthetic dataset)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from recforge.models.module import NextItemModule
from recforge.run.build import build_module

TINY = ["trainer.max_epochs=2", "dataset.reader.num_users=120", "dataset.reader.num_items=60", "dataset.max_len=10",
        "hidden_size=16", "logger=csv", "callbacks.progress_bar=null"]


def script(name: str) -> str:
    """A console script of the environment running the tests."""
    return str(Path(sys.executable).with_name(name))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("deploy")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RECFORGE_CACHE": str(root / "cache")}
    done = subprocess.run([script("recforge-train"), *TINY, f"hydra.run.dir={root / 'run'}"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return root / "run"


@pytest.fixture(scope="session")
def lightning_module(tiny_run: Path) -> NextItemModule:
    """The reference: the run's NextItemModule with its best checkpoint, built without the deploy code."""
    cfg = OmegaConf.load(tiny_run / "config.yaml")
    module = build_module(cfg, num_items=json.loads((tiny_run / "item_ids.json").read_text())["num_items"])
    ckpt = next(p for p in (tiny_run / "checkpoints").glob("*.ckpt") if p.stem != "last")
    module.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"])
    return module.eval()


@pytest.fixture(scope="session")
def histories(lightning_module: NextItemModule) -> Callable[..., torch.Tensor]:
    """random_histories for the tiny run's catalogue."""
    return partial(random_histories, num_items=lightning_module.decoder.num_items)


def random_histories(batch: int, max_len: int = 10, num_items: int = 59, seed: int = 0) -> torch.Tensor:
    """(B, L) ids 1..N, row 0 all padding, row 1 full, the rest left-padded to random lengths."""
    g = torch.Generator().manual_seed(seed)
    items = torch.randint(1, num_items + 1, (batch, max_len), generator=g)
    lengths = torch.randint(1, max_len + 1, (batch,), generator=g)
    lengths[0] = 0
    if batch > 1:
        lengths[1] = max_len
    pad = torch.arange(max_len)[None, :] < (max_len - lengths)[:, None]
    return items.masked_fill(pad, 0)
