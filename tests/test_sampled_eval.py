"""Sampled metrics end to end (evaluation.sampled): training with them, the same candidates for every model, and
re-evaluating a finished run's checkpoint through recforge-eval overrides (also a run recorded before the keys
existed)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import yaml
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

from recforge.evaluation.sampled import CANDIDATES_DIR
from recforge.run.build import build
from recforge.run.checkpoints import load_checkpoint
from recforge.train import train

SCRIPT = Path(sys.executable).with_name("recforge-train")
EVAL = SCRIPT.with_name("recforge-eval")
TINY = ["dataset.reader.num_users=120", "dataset.reader.num_items=60", "dataset.reader.max_length=20",
        "dataset.max_len=10", "dataset.batch_size=32", "hidden_size=16", "callbacks.progress_bar=null", "logger=csv"]


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def in_dir(cfg: DictConfig, out: Path) -> DictConfig:
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
    return cfg


def env_for(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "RECFORGE_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}


def quiet_trainer() -> L.Trainer:
    return L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                     enable_model_summary=False)


def test_sampled_metrics_end_to_end_on_the_default_data(compose_train, tmp_path):
    """SASRec on the generated default data with 100 uniform negatives: candidate files beside the run, the
    protocol in metrics.json, and HR@10 above full ranking's for the same checkpoint (a subset of the items can
    only rank the target higher)."""
    sampled = ["encoder=sasrec", "trainer.max_epochs=2", "callbacks.progress_bar=null", "logger=csv"]
    cfg = in_dir(compose_train(*sampled, "evaluation.sampled.negatives=100"), tmp_path / "run")
    metrics = train(cfg)
    run = tmp_path / "run"
    written = read_json(run / "metrics.json")
    assert written["evaluation"]["sampled"] == {"negatives": 100, "sampler": "uniform", "seed": 0}
    test = np.load(run / CANDIDATES_DIR / "test_uniform_n100_seed0.npy")
    assert test.shape == (1000, 101) and (run / CANDIDATES_DIR / "val_uniform_n100_seed0.npy").is_file()

    full_cfg = compose_train(*sampled)  # full ranking, the same checkpoint
    datamodule, module = build(full_cfg)
    module.load_state_dict(load_checkpoint(Path(metrics["best_checkpoint"]))["state_dict"])
    quiet_trainer().test(module, datamodule=datamodule)
    full = module.test_metrics
    assert full["unreachable"] == metrics["test"]["unreachable"] > 0  # repeated targets: unreachable either way
    assert metrics["test"]["hr@10"] > full["hr@10"] > 0, (metrics["test"], full)
    assert metrics["test"]["ndcg@10"] > full["ndcg@10"]
    targets = datamodule.test_set.items[datamodule.test_set.indptr[datamodule.test_set.users]
                                        + datamodule.test_set.positions]
    assert np.array_equal(test[:, 0], targets.numpy())


def test_two_models_meet_the_same_candidates_at_any_batch_size(compose_train, tmp_path):
    common = [*TINY, "evaluation.sampled.negatives=30", "evaluation.sampled.sampler=popularity",
              "evaluation.sampled.seed=4"]
    sasrec = train(in_dir(compose_train("encoder=sasrec", "trainer.max_epochs=1", *common), tmp_path / "sasrec"))
    gru = train(in_dir(compose_train("encoder=gru4rec", "trainer.max_epochs=1", *common), tmp_path / "gru"))
    assert sasrec["test"] != gru["test"]
    for split in ("val", "test"):
        name = f"{split}_popularity_n30_seed4.npy"
        files = [np.load(tmp_path / model / CANDIDATES_DIR / name) for model in ("sasrec", "gru")]
        assert files[0].shape == (120, 31) and np.array_equal(files[0], files[1])

    results = {}
    for size in (7, 1000):  # batch size: ranks and candidates per sample index
        cfg = compose_train("encoder=popularity", f"dataset.eval_batch_size={size}", *common)
        datamodule, module = build(cfg)
        trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                            enable_model_summary=False, default_root_dir=str(tmp_path / f"b{size}"))
        trainer.test(module, datamodule=datamodule)
        results[size] = dict(module.test_metrics)
        saved = np.load(tmp_path / f"b{size}" / CANDIDATES_DIR / "test_popularity_n30_seed4.npy")
        assert np.array_equal(saved, np.load(tmp_path / "sasrec" / CANDIDATES_DIR / "test_popularity_n30_seed4.npy"))
    assert results[7] == results[1000]
    assert 0 < results[7]["hr@10"] < 1


def test_sampled_config_options_compose_and_build(compose_train):
    cfg = compose_train(*TINY, "evaluation.sampled.negatives=7", "evaluation.sampled.sampler=popularity")
    part = instantiate(cfg.task.sampled)
    assert (part.negatives, part.sampler.name, part.seed) == (7, "popularity", 0)
    _, module = build(cfg)
    assert module.sampled is not None and module.sampled.negatives == 7
    _, full = build(compose_train(*TINY))
    assert full.sampled is None  # negatives: null = full ranking
    assert "sampled" not in "".join(full.state_dict())  # checkpoints are unchanged


# ------------------------------------------------------------------------------------------- recforge-eval


def run_eval(run: Path, tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    listed = "[" + ",".join(f'"{o}"' for o in overrides) + "]"
    return subprocess.run([str(EVAL), f"run_dir={run}", f"overrides={listed}"], cwd=tmp_path,
                          env=env_for(tmp_path), capture_output=True, text=True, timeout=300, check=False)


def newest_eval(run: Path) -> Path:
    return max((run / "eval").iterdir(), key=lambda p: p.name)


def strip_sampled_keys(run: Path) -> None:
    """Make a run look recorded before evaluation.sampled existed."""
    for name in ("config.yaml", ".hydra/config.yaml"):
        config = yaml.safe_load((run / name).read_text())
        for key in ("sampled", "samplers"):
            config["evaluation"].pop(key)
        config["task"].pop("sampled")
        (run / name).write_text(yaml.safe_dump(config, sort_keys=False))


def test_recforge_eval_sampled_overrides_reach_a_finished_run(tmp_path):
    run = tmp_path / "run"
    data = [*TINY, "dataset.reader.num_items=200"]
    cmd = [str(SCRIPT), "trainer.max_epochs=2", *data, f"hydra.run.dir={run}"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env_for(tmp_path), capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    full = read_json(run / "metrics.json")["test"]

    results = {}
    for sampler in ("uniform", "popularity"):
        proc = run_eval(run, tmp_path, "evaluation.sampled.negatives=100", f"evaluation.sampled.sampler={sampler}")
        assert proc.returncode == 0, proc.stderr[-3000:]
        out = newest_eval(run)
        written = read_json(out / "metrics.json")
        assert written["evaluation"]["sampled"] == {"negatives": 100, "sampler": sampler, "seed": 0}
        assert np.load(out / CANDIDATES_DIR / f"test_{sampler}_n100_seed0.npy").shape == (120, 101)
        assert (out / "eval.log").read_text().count("Krichene & Rendle, KDD 2020") == 1  # said once
        results[sampler] = written["metrics"]
        assert results[sampler]["hr@10"] > full["hr@10"] and results[sampler]["unreachable"] == full["unreachable"]
    assert results["uniform"] != results["popularity"]

    older = tmp_path / "older"  # the same run, recorded before the keys existed
    shutil.copytree(run, older, ignore=shutil.ignore_patterns("eval"))
    strip_sampled_keys(older)
    proc = run_eval(older, tmp_path, "evaluation.sampled.negatives=100", "evaluation.sampled.sampler=uniform")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert read_json(newest_eval(older) / "metrics.json")["metrics"] == results["uniform"]
    proc = run_eval(older, tmp_path)  # nothing asked: full ranking, as recorded
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert read_json(newest_eval(older) / "metrics.json")["metrics"] == full

    before = sorted((run / "eval").iterdir())
    for overrides, message in [
        (["evaluation.sampled.negatives=0"], "evaluation.sampled.negatives=0 must be an integer >= 1 (or null)."),
        (["evaluation.sampled.negatives=100", "evaluation.sampled.sampler=pop"],
         "evaluation.sampled.sampler='pop' must be one of 'uniform', 'popularity' (the names in evaluation.samplers)."),
    ]:
        proc = run_eval(run, tmp_path, *overrides)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
        assert proc.stderr.strip().splitlines()[-1] == f"recforge: error: {message}"
    proc = run_eval(run, tmp_path, "evaluation.sampled.negatives=195")  # users own more than 5 of the 200 items
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("recforge: error: evaluation.sampled.negatives=195 is more than the items left to draw "
                           "for ") and line.endswith("; lower evaluation.sampled.negatives.")
    assert sorted((run / "eval").iterdir()) == before  # nothing written

