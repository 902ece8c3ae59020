"""End-to-end training: real fits on tiny synthetic data, run-directory records, multirun, real data."""
from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import yaml
from hydra import compose, initialize_config_module
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

from recforge.models.encoders.popularity import ConstantEncoder, PopularityScores
from recforge.run.build import build, build_trainer
from recforge.train import train

PROJECT = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).with_name("recforge-train")

TINY_DATA = [
    "dataset.reader.num_users=120", "dataset.reader.num_items=60", "dataset.reader.max_length=20",
    "dataset.max_len=10", "dataset.batch_size=32", "hidden_size=16",
]
TINY = [*TINY_DATA, "callbacks.progress_bar=null", "logger=csv"]


def in_dir(cfg: DictConfig, out: Path) -> DictConfig:
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
    return cfg


def epoch_losses(run_dir: Path) -> dict[int, float]:
    """train/loss per epoch from the CSV logger."""
    with open(run_dir / "csv" / "metrics.csv", newline="") as fh:
        return {int(r["epoch"]): float(r["train/loss"]) for r in csv.DictReader(fh) if r.get("train/loss")}


def epoch_val(run_dir: Path, name: str) -> dict[int, float]:
    with open(run_dir / "csv" / "metrics.csv", newline="") as fh:
        return {int(r["epoch"]): float(r[name]) for r in csv.DictReader(fh) if r.get(name)}


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def env_for(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "RECFORGE_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}


# ------------------------------------------------------------------------------------------- training


# the sampled softmax with 16 of the 60 tiny items as shared negatives (its default K, 256, exceeds them)
LOSSES = {"ce": [], "bce": [], "bpr": [], "sampled_softmax": ["loss.sampler.num_negatives=16"]}


@pytest.mark.parametrize("loss", list(LOSSES))
@pytest.mark.parametrize("encoder", ["sasrec", "bert4rec", "gru4rec"])
def test_every_encoder_and_loss_learns(encoder, loss, compose_train, tmp_path):
    epochs = 4
    cfg = compose_train(f"encoder={encoder}", f"loss={loss}", *LOSSES[loss], f"trainer.max_epochs={epochs}", *TINY)
    out = Path(cfg.paths.output_dir)
    metrics = train(cfg)

    losses = epoch_losses(out)
    assert sorted(losses) == list(range(epochs))
    assert all(math.isfinite(v) for v in losses.values())
    assert losses[epochs - 1] < losses[0], losses

    written = read_json(out / "metrics.json")
    assert written["test"] == pytest.approx(metrics["test"], rel=1e-12)
    ndcg = written["test"]["ndcg@10"]
    assert 0.0 <= ndcg <= 1.0
    assert written["test"]["hr@10"] >= ndcg  # one target: 1/log2(rank+1) <= 1 inside the top 10
    assert written["epochs"] == epochs
    # best epoch = the first epoch with the highest validation ndcg@10, and its checkpoint is the one tested
    val = epoch_val(out, "val/ndcg@10")
    best = written["best_epoch"]
    assert isinstance(best, int) and 0 <= best < epochs
    assert best == min(e for e, v in val.items() if v == max(val.values()))
    assert written["val"]["ndcg@10"] == pytest.approx(val[best], rel=1e-6)
    assert Path(written["best_checkpoint"]).name == f"epoch{best:03d}.ckpt"
    assert Path(written["best_checkpoint"]).is_file()


@pytest.mark.parametrize("encoder", ["sasrec", "gru4rec"])
def test_training_step_counts_only_the_targets_a_window_owns(encoder, compose_train):
    cfg = compose_train(f"encoder={encoder}", *TINY)
    datamodule, module = build(cfg)
    datamodule.setup("fit")
    batch = datamodule.train_set.__getitems__(list(range(8)))
    module.eval()  # no dropout: the same hidden states in every call
    everything = module.training_step(batch, 0)
    owned = module.training_step({**batch, "new_targets": torch.tensor([2, 1, 2, 1, 2, 1, 2, 1])}, 0)
    inputs, targets = module.encoder.training_pairs(batch["items"])  # (8, T), (8, T)
    hidden = module.encode(inputs, None)  # (8, T, H)
    keep = torch.zeros_like(targets, dtype=torch.bool)
    keep[0::2, -2:], keep[1::2, -1:] = True, True
    keep &= targets > 0
    assert keep.sum() == 12  # every row's last two targets are real items
    expected = module.loss(hidden[keep], targets[keep], module.decoder)
    assert torch.allclose(owned, expected, rtol=1e-6) and not torch.allclose(owned, everything)
    assert torch.allclose(everything, module.loss(hidden[targets > 0], targets[targets > 0], module.decoder), rtol=1e-6)


@pytest.mark.parametrize("encoder", ["sasrec", "bert4rec"])
def test_overlapping_windows_train(encoder, compose_train):
    cfg = compose_train(f"encoder={encoder}", "dataset.train_stride=3", "trainer.max_epochs=4", *TINY)
    datamodule, default = training_data(cfg), training_data(compose_train(f"encoder={encoder}", *TINY))
    # 3 windows (ending every 3 items) for every 10-item window without overlap, give or take a user's remainder
    assert 2.5 < len(datamodule.train_set) / len(default.train_set) < 3.5
    out = train_four_epochs_with_falling_loss(cfg)
    assert read_json(out / "metrics.json")["dataset"]["train_windows"] == len(datamodule.train_set)


def training_data(cfg: DictConfig):
    datamodule, _ = build(cfg)
    datamodule.setup("fit")
    return datamodule


def train_four_epochs_with_falling_loss(cfg: DictConfig) -> Path:
    """Train ``cfg`` (4 epochs); its epoch losses are logged for epochs 0-3 and the last is below the first."""
    out = Path(cfg.paths.output_dir)
    train(cfg)
    losses = epoch_losses(out)
    assert sorted(losses) == [0, 1, 2, 3] and losses[3] < losses[0], losses
    return out


@pytest.mark.parametrize("encoder", ["sasrec", "gru4rec"])
def test_batches_by_target_budget_train(encoder, compose_train):
    cfg = compose_train(f"encoder={encoder}", "dataset.batch_targets=60", "trainer.max_epochs=4", *TINY)
    datamodule = training_data(cfg)
    windows = datamodule.train_set.windows
    steps = math.ceil(int(((windows > 0).sum(dim=1) - 1).sum()) / 60)  # optimiser steps per epoch
    assert steps > 2 * math.ceil(len(datamodule.train_set) / cfg.dataset.batch_size)  # more, smaller steps
    out = train_four_epochs_with_falling_loss(cfg)
    last = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["global_step"] == 4 * steps  # every epoch made ceil(targets / budget) steps


def _training_counts(cfg: DictConfig, item_ids: np.ndarray) -> np.ndarray:
    """Training counts per internal id, computed from the raw reader output (leave-one-out: all but 2)."""
    raw = instantiate(cfg.dataset.reader).read().sort_values(["user", "timestamp"], kind="stable")
    counts: Counter = Counter()
    for _, items in raw.groupby("user", sort=False)["item"]:
        items = list(items)
        if len(items) >= 3:
            counts.update(items[:-2])
    return np.array([0] + [counts[raw_id] for raw_id in item_ids[1:]], dtype=np.float64)


def test_popularity_scores_are_training_counts_and_metrics_match_a_hand_ranking(compose_train):
    cfg = compose_train("encoder=popularity", *TINY)
    datamodule, module = build(cfg)
    assert isinstance(module.encoder, ConstantEncoder) and isinstance(module.decoder, PopularityScores)
    assert not module.trainable
    trainer = build_trainer(cfg)
    trainer.test(module, datamodule=datamodule)

    seqs = datamodule.sequences
    expected = _training_counts(cfg, seqs.item_ids)
    assert module.decoder.counts.double().numpy().tolist() == expected.tolist()
    assert expected[1:].sum() == seqs.items.size - 2 * seqs.num_users
    scores = module.score(torch.tensor([[1, 2, 3], [0, 0, 5]]))
    assert torch.isneginf(scores[:, 0]).all()
    assert scores[:, 1:].double().numpy().tolist() == [expected[1:].tolist()] * 2

    # test targets ranked by hand: history (every earlier item) masked, ties counted against the target; a target
    # that repeats an earlier item is masked with it (-inf, tied with every masked id): last of the N+1 columns
    ranks = []
    for u in range(seqs.num_users):
        seq = seqs.items[seqs.indptr[u]:seqs.indptr[u + 1]]
        target, history = seq[-1], set(seq[:-1].tolist())
        if target in history:
            ranks.append(seqs.num_items + 1)
            continue
        others = [j for j in range(1, seqs.num_items + 1) if j != target and j not in history]
        ranks.append(1 + sum(expected[j] >= expected[target] for j in others))
    ranks = np.array(ranks)
    assert module.test_metrics["hr@10"] == pytest.approx(np.mean(ranks <= 10), abs=1e-12)
    assert module.test_metrics["ndcg@10"] == pytest.approx(
        np.mean(np.where(ranks <= 10, 1 / np.log2(ranks + 1), 0.0)), abs=1e-12)


@pytest.fixture(scope="module")
def popularity_on_default(tmp_path_factory) -> dict:
    """Popularity's test metrics on the embedded default (nothing trained), computed once for the module."""
    out = tmp_path_factory.mktemp("pop")
    with initialize_config_module("recforge.conf", version_base="1.3"):
        cfg = compose("train", overrides=["encoder=popularity", "callbacks.progress_bar=null"])
    with open_dict(cfg):
        cfg.paths.root_dir, cfg.paths.cache_dir = str(PROJECT), str(out / "cache")
    return train(in_dir(cfg, out / "run"))


# epochs enough for each encoder's own defaults to learn on the embedded default (9 batches per epoch): the
# recurrent one leaves the popularity level after about 20 epochs, the bidirectional ones after a few hundred
# steps, which their files' min_steps waits for
DEFAULT_EPOCHS = {"sasrec": 8, "gru4rec": 30, "hf_gpt2": 8, "bert4rec": 70, "hf_bert": 70}


@pytest.mark.parametrize("encoder", sorted(DEFAULT_EPOCHS))
def test_every_encoder_beats_popularity_on_default_synthetic_data(encoder, popularity_on_default, compose_train,
                                                                  tmp_path):
    """`recforge-train encoder=<name>` learns with nothing else set: test NDCG@10 at least 1.5x Popularity's (2x
    for SASRec). Only the epoch cap is set here, to bound the test; early stopping runs as configured."""
    pop = popularity_on_default
    cfg = compose_train(f"encoder={encoder}", f"trainer.max_epochs={DEFAULT_EPOCHS[encoder]}",
                        "callbacks.progress_bar=null")
    if encoder in ("bert4rec", "hf_bert"):
        assert cfg.trainer.min_steps == 600  # the encoder's own file holds early stopping off the plateau
    got = train(in_dir(cfg, tmp_path / encoder))
    assert pop["dataset"]["users"] == got["dataset"]["users"] == 1000
    assert pop["best_epoch"] is None and pop["best_checkpoint"] is None  # nothing was trained
    assert 0 < pop["test"]["ndcg@10"] < 1
    factor = 2.0 if encoder == "sasrec" else 1.5
    assert got["test"]["ndcg@10"] > factor * pop["test"]["ndcg@10"], (got["test"], pop["test"])


def test_test_metrics_do_not_depend_on_eval_batch_size(compose_train):
    cfg = compose_train("trainer.max_epochs=2", "callbacks=none", "logger=none", *TINY_DATA)
    L.seed_everything(cfg.seed)
    datamodule, module = build(cfg)
    build_trainer(cfg).fit(module, datamodule=datamodule)

    results = {}
    for size in (7, 1000):
        cfg_b = compose_train(f"dataset.eval_batch_size={size}", *TINY_DATA)
        dm = instantiate(cfg_b.dataset)
        assert dm.eval_batch_size == size
        trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                            enable_model_summary=False)
        trainer.test(module, datamodule=dm)
        assert len(dm.test_dataloader()) == math.ceil(120 / size)
        results[size] = dict(module.test_metrics)
    assert results[7] == results[1000]  # float equality
    assert 0 < results[7]["ndcg@10"] <= 1


def test_run_directory_records(compose_train):
    cfg = compose_train("trainer.max_epochs=1", *TINY)
    out = Path(cfg.paths.output_dir)
    train(cfg)

    info = read_json(out / "run_info.json")
    assert info["packages"]["torch"] == torch.__version__
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT, capture_output=True, text=True)
    if head.returncode == 0:
        assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", info["git_commit"] or ""), info["git_commit"]
        assert info["git_commit"].split("-")[0] == head.stdout.strip()
    else:
        assert info["git_commit"] is None

    text = (out / "config.yaml").read_text()
    assert "${" not in text
    saved = yaml.safe_load(text)
    assert saved["encoder"]["max_len"] == 10  # was ${dataset.max_len}
    assert saved["item_embedder"]["hidden_size"] == 16  # was ${hidden_size}
    assert saved["paths"]["output_dir"] == str(out)

    raw = instantiate(cfg.dataset.reader).read()
    stats = read_json(out / "dataset_stats.json")
    assert stats["users"] == 120 == raw["user"].nunique()
    assert stats["items"] == raw["item"].nunique()
    assert stats["interactions"] == len(raw)
    assert stats["test_samples"] == stats["val_samples"] == 120
    assert read_json(out / "metrics.json")["dataset"] == stats


def test_multirun_through_console_script(tmp_path):
    sweep = tmp_path / "sweep"
    cmd = [str(SCRIPT), "-m", "encoder=sasrec,gru4rec", "trainer.max_epochs=1", *TINY, f"hydra.sweep.dir={sweep}"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env_for(tmp_path), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    runs = sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert len(runs) == 2, runs
    assert [r.name.split("_", 1)[0] for r in runs] == ["0", "1"]
    found = {}
    for run in runs:
        metrics = read_json(run / "metrics.json")
        assert 0 <= metrics["test"]["ndcg@10"] <= 1 and metrics["best_epoch"] == 0
        found[run.name.split("_", 1)[0]] = yaml.safe_load((run / "config.yaml").read_text())["encoder"]["_target_"]
    assert found == {"0": "recforge.models.encoders.sasrec.SASRec", "1": "recforge.models.encoders.gru4rec.GRU4Rec"}
    assert not (tmp_path / "outputs" / "runs").exists()  # a sweep writes only below its sweep dir


def test_end_to_end_on_movielens_100k(compose_train, data_root):
    cfg = compose_train("dataset=ml-100k", f"dataset.root={data_root}", "trainer.max_epochs=1", "hidden_size=16",
                        "callbacks.progress_bar=null", "logger=csv")
    out = Path(cfg.paths.output_dir)
    metrics = train(cfg)
    stats = read_json(out / "dataset_stats.json")
    assert (stats["users"], stats["items"], stats["interactions"]) == (943, 1682, 100000)
    assert stats["test_samples"] == stats["val_samples"] == 943
    written = read_json(out / "metrics.json")
    assert written["dataset"]["test_samples"] == 943
    assert 0 <= written["test"]["ndcg@10"] <= written["test"]["hr@10"] <= 1
    assert written["best_epoch"] == 0 and written["test"] == pytest.approx(metrics["test"])
    assert len(epoch_losses(out)) == 1


# ------------------------------------------------------------------------------- eval, precision


def test_recforge_eval_reproduces_the_runs_test_metrics(tmp_path):
    """recforge-eval on a finished run's best checkpoint gives exactly its test metrics, at any batch size."""
    run = tmp_path / "run"
    cmd = [str(SCRIPT), "trainer.max_epochs=2", *TINY, f"hydra.run.dir={run}"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env_for(tmp_path), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    expected = read_json(run / "metrics.json")["test"]

    evaluate = [str(SCRIPT.with_name("recforge-eval")), f"run_dir={run}", 'overrides=["dataset.eval_batch_size=5"]']
    proc = subprocess.run(evaluate, cwd=tmp_path, env=env_for(tmp_path), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (out,) = (run / "eval").iterdir()
    assert read_json(out / "metrics.json")["metrics"] == expected

    missing = [str(SCRIPT.with_name("recforge-eval")), f"run_dir={run}", "checkpoint=nope.ckpt"]
    proc = subprocess.run(missing, cwd=tmp_path, env=env_for(tmp_path), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "nope.ckpt" in proc.stderr and "Traceback" not in proc.stderr
    shutil.rmtree(run / "checkpoints")  # a trained model without its checkpoints is not silently refitted
    proc = subprocess.run(evaluate[:2], cwd=tmp_path, env=env_for(tmp_path), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "checkpoint=best: no checkpoint file" in proc.stderr and "Traceback" not in proc.stderr


def test_recforge_eval_of_a_model_without_training_refits_it_from_the_data(tmp_path):
    """A popularity run has no checkpoint: recforge-eval fits it from the training data again and gives exactly the
    run's test metrics; with sampled negatives the numbers change (issue 19, part 3 re-tests Popularity)."""
    run = tmp_path / "run"
    cmd = [str(SCRIPT), "encoder=popularity", *TINY, f"hydra.run.dir={run}"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env_for(tmp_path), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (run / "checkpoints").exists() or not any((run / "checkpoints").iterdir())
    expected = read_json(run / "metrics.json")["test"]
    for overrides in ("[]", '["evaluation.sampled.negatives=20"]'):
        args = [str(SCRIPT.with_name("recforge-eval")), f"run_dir={run}", f"overrides={overrides}"]
        proc = subprocess.run(args, cwd=tmp_path, env=env_for(tmp_path), capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
    full, sampled = (read_json(out / "metrics.json") for out in sorted((run / "eval").iterdir()))
    assert full["metrics"] == expected and full["checkpoint"] is None
    assert sampled["metrics"]["hr@10"] > expected["hr@10"]  # 20 negatives instead of all 58 items


def test_recforge_eval_overrides_of_evaluation_keys_reach_the_module(tmp_path):
    """config.yaml is saved resolved; an ``evaluation.*`` override must still reach ``task.*`` (issue 19, 1b).
    The generated data repeats items, so the history mask changes the metrics: the default masks repeated
    targets (unreachable), ``false`` masks nothing, ``s3rec`` puts seen items at 0."""
    run = tmp_path / "run"
    cmd = [str(SCRIPT), "trainer.max_epochs=2", *TINY, f"hydra.run.dir={run}"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env_for(tmp_path), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    trained = read_json(run / "metrics.json")
    stats = read_json(run / "dataset_stats.json")
    assert stats["test_repeated_targets"] > 0
    assert trained["test"]["unreachable"] == pytest.approx(stats["test_repeated_targets"] / stats["test_samples"])

    def evaluate(*overrides: str) -> dict:
        listed = "[" + ",".join(f'"{o}"' for o in overrides) + "]"
        args = [str(SCRIPT.with_name("recforge-eval")), f"run_dir={run}", f"overrides={listed}"]
        proc = subprocess.run(args, cwd=tmp_path, env=env_for(tmp_path), capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        newest = max((run / "eval").iterdir(), key=lambda p: p.name)
        return read_json(newest / "metrics.json")

    unmasked = evaluate("evaluation.mask_history=false")
    assert unmasked["metrics"] == evaluate("task.mask_history=false")["metrics"]  # the same key, reached
    assert unmasked["metrics"]["hr@10"] != trained["test"]["hr@10"] and unmasked["metrics"]["unreachable"] == 0
    assert unmasked["evaluation"]["mask_history"] is False and unmasked["overrides"] == ["evaluation.mask_history=false"]
    s3rec = evaluate("evaluation.mask_history=s3rec")
    assert s3rec["evaluation"]["mask_history"] == "s3rec" and s3rec["metrics"]["unreachable"] == 0
    cutoffs = evaluate("evaluation.ks=[1,10]")["metrics"]  # the objective, val/ndcg@10, needs 10
    names = ("hr", "recall", "ndcg", "mrr", "precision", "map", "coverage", "avg_popularity", "novelty", "gini")
    assert set(cutoffs) == {f"{m}@{k}" for m in names for k in (1, 10)} | {"unreachable"}

    before = sorted((run / "eval").iterdir())
    bad = [str(SCRIPT.with_name("recforge-eval")), f"run_dir={run}", 'overrides=["evaluation.mask_history=maybe"]']
    proc = subprocess.run(bad, cwd=tmp_path, env=env_for(tmp_path), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "recforge: error: evaluation.mask_history='maybe' must be one of true, false, 's3rec'.")
    assert sorted((run / "eval").iterdir()) == before  # nothing written


def test_bf16_mixed_precision_trains_on_cpu_close_to_fp32(compose_train, tmp_path):
    """bf16-mixed autocasts the encoder on CPU; after the same training its metrics stay near fp32's."""
    common = ["trainer.max_epochs=6", *TINY, "trainer.deterministic=true"]
    fp32 = train(in_dir(compose_train(*common), tmp_path / "fp32"))
    bf16 = train(in_dir(compose_train(*common, "trainer.precision=bf16-mixed"), tmp_path / "bf16"))
    assert bf16["test"] != fp32["test"]  # bf16 really ran: numbers differ ...
    assert abs(bf16["test"]["hr@10"] - fp32["test"]["hr@10"]) < 0.1  # ... but within noise (120 users)
    assert epoch_losses(tmp_path / "bf16")[5] < epoch_losses(tmp_path / "bf16")[0]


def test_deterministic_runs_repeat_exactly(compose_train, tmp_path):
    common = ["trainer.max_epochs=2", *TINY, "trainer.deterministic=true"]
    first = train(in_dir(compose_train(*common), tmp_path / "a"))
    second = train(in_dir(compose_train(*common), tmp_path / "b"))
    assert first["test"] == second["test"] and first["val"] == second["val"]


def test_resume_from_last_checkpoint_continues_the_run(compose_train, tmp_path):
    """ckpt_path=<last.ckpt> continues from the saved epoch; the validation history carries over."""
    first = train(in_dir(compose_train("trainer.max_epochs=2", *TINY), tmp_path / "first"))
    assert first["epochs"] == 2
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    resumed = train(in_dir(compose_train("trainer.max_epochs=4", *TINY, f"ckpt_path={last}"), tmp_path / "resumed"))
    assert resumed["epochs"] == 4
    history = epoch_val(tmp_path / "resumed", "val/ndcg@10")
    assert sorted(history) == [2, 3]  # only the new epochs were trained and validated here
    all_val = {**epoch_val(tmp_path / "first", "val/ndcg@10"), **history}
    # metrics.json describes the checkpoint that was tested, whichever epoch it came from
    assert Path(resumed["best_checkpoint"]).name == f"epoch{resumed['best_epoch']:03d}.ckpt"
    assert resumed["val"]["ndcg@10"] == pytest.approx(all_val[resumed["best_epoch"]], rel=1e-6)


def test_resume_from_missing_checkpoint_is_a_user_error(tmp_path):
    cmd = [str(SCRIPT), "ckpt_path=nowhere/last.ckpt", *TINY]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env_for(tmp_path), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "ckpt_path=nowhere/last.ckpt: no checkpoint file at" in proc.stderr
