"""item_embedder.init_from: a new model's item table starts from another finished run's item vectors, matched by
raw id (the rows both know copied exactly, the others left random), and its one-line errors."""
from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from recforge.errors import RecforgeError
from recforge.run.build import build, item_id_map
from recforge.run.item_init import earlier_item_vectors, init_item_tables
from recforge.run.validate import validate_config

TINY = ["dataset.reader.num_users=60", "dataset.reader.num_items=40", "dataset.reader.min_length=8",
        "dataset.reader.max_length=14", "dataset.max_len=8", "hidden_size=16", "trainer.max_epochs=2",
        "logger=csv", "callbacks.progress_bar=null"]


def run_train(cwd: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RECFORGE_CACHE": str(cwd / "cache")}
    return subprocess.run([str(Path(sys.executable).with_name("recforge-train")), *TINY, *overrides], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture(scope="module")
def earlier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny SASRec run (its run directory), trained from the command line."""
    root = tmp_path_factory.mktemp("earlier")
    proc = run_train(root, f"hydra.run.dir={root / 'run'}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return root / "run"


def test_the_rows_of_the_items_both_know_are_the_earlier_runs_vectors(earlier: Path, compose_train) -> None:
    ids, vectors = earlier_item_vectors(str(earlier))
    assert len(ids) == 41 and vectors.shape == (41, 16) and ids[0] == ""
    cfg = compose_train(*TINY, f"item_embedder.init_from={earlier}", "seed=7")
    validate_config(cfg)
    datamodule, module = build(cfg)
    before = module.decoder.item_embedder.table.weight.detach().clone()  # (N+2, H)
    mine = item_id_map(datamodule)["item_ids"]
    streams = torch.random.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()
    # this run's map in another order: rows must follow raw ids, not positions; two ids the earlier run lacks
    shuffled = [mine[0]] + list(reversed(mine[1:39])) + ["new-1", "new-2"]
    assert init_item_tables(module, shuffled) == 1
    # rebuilding the earlier run moved none of this run's random streams (dropout, shuffling stay this seed's)
    assert torch.equal(torch.random.get_rng_state(), streams[0]) and (np.random.get_state()[1] == streams[1]).all()
    assert random.getstate() == streams[2]
    after = module.decoder.item_embedder.table.weight.detach()
    for row, raw in enumerate(shuffled[1:], start=1):
        expected = vectors[ids.index(raw)] if raw in ids else before[row]
        torch.testing.assert_close(after[row], expected, rtol=0, atol=0)
    torch.testing.assert_close(after[0], torch.zeros(16), rtol=0, atol=0)  # padding stays zero
    torch.testing.assert_close(after[41], before[41], rtol=0, atol=0)  # the [MASK] row is this model's own
    assert not torch.equal(after[1:39], before[1:39])


def test_without_init_from_nothing_is_read(compose_train) -> None:
    cfg = compose_train(*TINY)
    assert cfg.item_embedder.init_from is None
    _, module = build(cfg)
    before = module.decoder.item_embedder.table.weight.detach().clone()
    assert init_item_tables(module, ["", "a"]) == 0
    assert torch.equal(module.decoder.item_embedder.table.weight, before)


def test_a_hidden_size_that_differs_is_named(earlier: Path, compose_train) -> None:
    _, module = build(compose_train(*TINY, "hidden_size=8", f"item_embedder.init_from={earlier}"))
    with pytest.raises(RecforgeError, match=r"^item_embedder.init_from=.*: its item vectors have 16 dimensions, this "
                                            r"item table 8; set hidden_size=16 or train the earlier run with 8\.$"):
        init_item_tables(module, [""] + [str(i) for i in range(40)])


def test_a_catalogue_without_shared_items_is_named(earlier: Path, compose_train) -> None:
    _, module = build(compose_train(*TINY, f"item_embedder.init_from={earlier}"))
    with pytest.raises(RecforgeError, match=r"none of this run's 2 items is among the earlier run's 40; name a run "
                                            r"trained on the same catalogue\.$"):
        init_item_tables(module, ["", "x", "y"])


def test_cli_an_unknown_run_ends_in_one_line_and_writes_nothing(tmp_path: Path) -> None:
    proc = run_train(tmp_path, "item_embedder.init_from=no/such/run", f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "init_from" in line]
    assert len(lines) == 1 and "item_embedder.init_from=no/such/run: no such run directory or checkpoint file" in lines[0]
    assert not (tmp_path / "run" / "config.yaml").exists() and not (tmp_path / "run" / "metrics.json").exists()


def test_a_lightgcn_run_gives_its_propagated_item_vectors(tmp_path: Path, compose_train) -> None:
    from recforge.run.checkpoints import load_checkpoint
    from recforge.run.load import find_checkpoint

    assert run_train(tmp_path, "encoder=lightgcn", f"hydra.run.dir={tmp_path / 'gcn'}").returncode == 0
    ids, vectors = earlier_item_vectors(str(tmp_path / "gcn"))
    # the propagated vectors differ from the ego vectors (layer mean over the graph), and are what LightGCN scores with
    state = load_checkpoint(find_checkpoint(tmp_path / "gcn", "best"))["state_dict"]
    ego = next(v for k, v in state.items() if k.endswith("ids.table.weight"))[: len(ids)]  # (N+1, H)
    assert vectors.shape == ego.shape and not torch.allclose(vectors[1:], ego[1:])
    cfg = compose_train(*TINY, f"item_embedder.init_from={tmp_path / 'gcn'}")
    datamodule, module = build(cfg)
    assert init_item_tables(module, item_id_map(datamodule)["item_ids"]) == 1
    assert item_id_map(datamodule)["item_ids"] == ids  # the same data: every row comes from LightGCN
    torch.testing.assert_close(module.decoder.item_embedder.table.weight[1:len(ids)].detach(), vectors[1:], rtol=0, atol=0)
