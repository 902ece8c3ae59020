"""Data-parallel (trainer=ddp: 2 CPU processes, gloo) gives exactly the metrics of one process.

Two processes train on other batches than one, so equality is checked for the same weights: a checkpoint
evaluated in one process and in two. 121 users split over 2 processes makes DistributedSampler repeat one
sample; the rank accumulator counts each sample once. Each DDP command starts 2 Python processes: slow.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import DictConfig, open_dict

from recforge.eval import evaluate
from recforge.train import train

pytestmark = pytest.mark.slow

PROJECT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
USERS = 121  # odd: the second process gets a repeated sample
TINY = [
    f"dataset.reader.num_users={USERS}", "dataset.reader.num_items=60", "dataset.reader.max_length=20",
    "dataset.max_len=10", "dataset.batch_size=32", "dataset.eval_batch_size=16", "hidden_size=16",
    "trainer.max_epochs=2", "logger=csv", "callbacks.progress_bar=null",
]
DDP_EVAL = 'overrides=["trainer.devices=2"]'  # strategy auto with 2 devices: ddp


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def env_for(tmp: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "RECFORGE_CACHE": str(tmp / "cache"), "OMP_NUM_THREADS": "1", **extra}


def run(cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def compose_run(out: Path, cache: Path, *overrides: str) -> DictConfig:
    with initialize_config_module("recforge.conf", version_base="1.3"):
        cfg = compose("train", overrides=list(overrides))
    with open_dict(cfg):
        cfg.paths.root_dir, cfg.paths.output_dir, cfg.paths.cache_dir = str(PROJECT), str(out), str(cache)
    return cfg


def single_process(run_dir: Path, split: str, out: Path) -> dict[str, float]:
    """recforge-eval's work in this process (one device): the best checkpoint on ``split``."""
    return evaluate(run_dir, "best", split, [], out)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """A tiny model trained in one process (here, in-process); its run directory."""
    tmp = tmp_path_factory.mktemp("single")
    train(compose_run(tmp / "run", tmp / "cache", *TINY))
    return tmp / "run"


def test_ddp_evaluation_of_a_checkpoint_equals_one_process(trained_run, tmp_path):
    expected = single_process(trained_run, "test", tmp_path / "single")
    assert read_json(tmp_path / "single" / "metrics.json")["samples"] == USERS

    run([str(BIN / "recforge-eval"), f"run_dir={trained_run}", DDP_EVAL], cwd=tmp_path, env=env_for(tmp_path))
    (out,) = (trained_run / "eval").iterdir()  # both processes used the one output directory
    written = read_json(out / "metrics.json")
    assert written["processes"] == 2
    assert written["samples"] == USERS  # the repeated sample counted once
    assert written["metrics"] == expected  # exact float equality, every metric
    assert read_json(trained_run / "metrics.json")["test"] == expected


def test_ddp_evaluation_of_target_sets_equals_one_process(tmp_path):
    """A global time split (several targets per sample, 65 test samples: the second process repeats one): the set
    and beyond-accuracy metrics under DDP equal one process's exactly."""
    train(compose_run(tmp_path / "run", tmp_path / "cache", *TINY, "dataset/split=global_temporal"))
    expected = single_process(tmp_path / "run", "test", tmp_path / "single")
    assert read_json(tmp_path / "single" / "metrics.json")["samples"] == 65
    assert {"precision@10", "map@10", "coverage@10", "gini@10", "novelty@10"} <= set(expected)
    assert 0 < expected["unreachable"] < 1  # synthetic users repeat items: some targets are masked
    run([str(BIN / "recforge-eval"), f"run_dir={tmp_path / 'run'}", DDP_EVAL], cwd=tmp_path, env=env_for(tmp_path))
    (out,) = (tmp_path / "run" / "eval").iterdir()
    written = read_json(out / "metrics.json")
    assert written["processes"] == 2 and written["samples"] == 65
    assert written["metrics"] == expected  # exact float equality, every metric


def test_ddp_training_run_writes_once_and_its_metrics_equal_one_process(tmp_path):
    run_dir = tmp_path / "ddp"
    run([str(BIN / "recforge-train"), "trainer=ddp", *TINY, f"hydra.run.dir={run_dir}"], cwd=tmp_path,
        env=env_for(tmp_path))
    assert (run_dir / "train_ddp_process_1.log").is_file()  # a second process really ran
    for name in ("metrics.json", "config.yaml", "run_info.json", "dataset_stats.json"):
        assert [p.relative_to(tmp_path) for p in tmp_path.rglob(name) if ".hydra" not in p.parts] == [
            Path("ddp") / name], name
    assert not (tmp_path / "outputs").exists()

    metrics = read_json(run_dir / "metrics.json")
    assert metrics["dataset"]["users"] == metrics["dataset"]["test_samples"] == USERS
    assert Path(metrics["best_checkpoint"]).parent == run_dir / "checkpoints"
    # computed by 2 processes during fit (validation of the best epoch) and test, then by one process
    assert metrics["test"] == single_process(run_dir, "test", tmp_path / "eval_test")
    assert metrics["val"] == single_process(run_dir, "val", tmp_path / "eval_val")
    evaluated = read_json(tmp_path / "eval_val" / "metrics.json")
    assert evaluated["samples"] == USERS and evaluated["processes"] == 1
    assert not torch.distributed.is_initialized()  # one process means no process group, though the run was DDP


def test_ddp_sweep_gives_one_wandb_run_per_trial(tmp_path):
    sweep = tmp_path / "sweep"
    cmd = [str(BIN / "recforge-train"), "-m", "seed=1,2", "trainer=ddp", *TINY, "logger=wandb",
           f"hydra.sweep.dir={sweep}"]
    run(cmd, cwd=tmp_path, env=env_for(tmp_path, WANDB_MODE="offline", WANDB_SILENT="true",
                                       WANDB_DIR=str(tmp_path / "wandb_default")))
    trials = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [p.name[:2] for p in trials] == ["0_", "1_"]
    for trial in trials:
        assert (trial / "metrics.json").is_file() and (trial / "train_ddp_process_1.log").is_file()
        assert len(list(trial.glob("wandb/offline-run-*/run-*.wandb"))) == 1, trial
    assert len(list(tmp_path.rglob("run-*.wandb"))) == 2  # the second process of each trial logged nothing
    seeds = [read_json(t / "metrics.json")["test"] for t in trials]
    assert seeds[0] != seeds[1]  # two different trials, not one trial twice


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_on_one_machine_train_write_once_and_match_one_process(tmp_path):
    """trainer=ddp_multinode as two nodes of one process each (NODE_RANK 0 and 1, gloo over loopback), started by
    hand as on a cluster without SLURM: training finishes, only global rank 0 writes, and the test metrics equal
    one process's for the same weights. Node 1 gets its own run directory here (as a node without the shared file
    system would), so anything it wrote would show."""
    port = str(free_port())
    base = [str(BIN / "recforge-train"), "trainer=ddp_multinode", "trainer.devices=1", "trainer.accelerator=cpu", *TINY]
    procs = [subprocess.Popen([*base, f"hydra.run.dir={tmp_path / f'node{node}'}"], cwd=tmp_path,
                              env=env_for(tmp_path, NODE_RANK=str(node), MASTER_ADDR="127.0.0.1", MASTER_PORT=port),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for node in (0, 1)]
    outputs = [proc.communicate(timeout=300) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], [err[-3000:] for _, err in outputs]
    run_dir = tmp_path / "node0"
    for name in ("metrics.json", "config.yaml", "run_info.json", "dataset_stats.json", "item_ids.json"):
        assert [p.relative_to(tmp_path) for p in tmp_path.rglob(name) if ".hydra" not in p.parts] == [
            Path("node0") / name], name
    # node 1 ran (Hydra's own log and composed config are there) and wrote nothing of the run's
    assert sorted(p.name for p in (tmp_path / "node1").iterdir()) == [".hydra", "train.log"]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in outputs[1][1]  # Lightning: the process joined as global rank 1
    metrics = read_json(run_dir / "metrics.json")
    assert metrics["dataset"]["test_samples"] == USERS
    assert metrics["test"] == single_process(run_dir, "test", tmp_path / "eval_test")  # exact, every metric
