"""The composed config is validated before any work starts (recforge.run.validate): types and ranges, cross-key
rules, incompatible parts, unknown keys; every valid option still validates; and through the real
``recforge-train`` one test per category: exit status, the exact one-line message, no traceback, no run
directory, nothing read."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import get_args

import pytest
from hydra import compose, initialize_config_module
from lightning.fabric.connector import (
    _PRECISION_INPUT_INT,
    _PRECISION_INPUT_STR,
    _PRECISION_INPUT_STR_ALIAS,
)
from omegaconf import DictConfig, open_dict

import recforge
from recforge.errors import RecforgeError
from recforge.run.validate import PRECISIONS, config_problems, validate_config

CONF = Path(recforge.__file__).resolve().parent / "conf"
SCRIPT = Path(sys.executable).with_name("recforge-train")


def compose_all(*runs: list[str]) -> list[DictConfig]:
    """Compose train.yaml once per override list (one Hydra initialisation), with paths that need no runtime."""
    configs = []
    with initialize_config_module("recforge.conf", version_base="1.3"):
        for overrides in runs:
            cfg = compose("train", overrides=overrides)
            with open_dict(cfg):
                cfg.paths.root_dir, cfg.paths.output_dir, cfg.paths.cache_dir = "/tmp", "/tmp/run", "/tmp/cache"
            configs.append(cfg)
    return configs


def message_of(*overrides: str) -> str:
    """The one RecforgeError message validation raises for these overrides."""
    (cfg,) = compose_all(list(overrides))
    with pytest.raises(RecforgeError) as err:
        validate_config(cfg)
    return str(err.value)


def case_id(case: tuple[list[str], str]) -> str:
    return " ".join(case[0])


# ------------------------------------------------------------------------------------------- ranges

RANGE = [
    (["optimizer.lr=-0.1"], "optimizer.lr=-0.1 must be a number > 0."),
    (["optimizer.lr=0"], "optimizer.lr=0 must be a number > 0."),
    (["optimizer.lr=nan"], "optimizer.lr=nan must be a number > 0."),
    (["optimizer.weight_decay=-0.01"], "optimizer.weight_decay=-0.01 must be a number >= 0."),
    (["optimizer=sgd", "optimizer.momentum=-0.5"], "optimizer.momentum=-0.5 must be a number >= 0."),
    (["dataset.max_len=1"], "dataset.max_len=1 must be an integer >= 2."),
    (["dataset.batch_size=0"], "dataset.batch_size=0 must be an integer >= 1."),
    (["dataset.eval_batch_size=-8"], "dataset.eval_batch_size=-8 must be an integer >= 1."),
    (["dataset.user_k=-1"], "dataset.user_k=-1 must be an integer >= 0."),
    (["dataset.item_k=-5"], "dataset.item_k=-5 must be an integer >= 0."),
    (["dataset/split=temporal_ratio", "dataset.split.train=1.0"], "dataset.split.train=1.0 must be a number in (0, 1)."),
    (["dataset/split=temporal_ratio", "dataset.split.val=0"], "dataset.split.val=0 must be a number in (0, 1)."),
    (["dataset/split=global_temporal", "dataset.split.val=0"], "dataset.split.val=0 must be a number in (0, 1)."),
    (["dataset/split=global_temporal", "dataset.split.test=1.0"], "dataset.split.test=1.0 must be a number in (0, 1)."),
    (["dataset.reader.follow_prob=1.5"], "dataset.reader.follow_prob=1.5 must be a number in [0, 1]."),
    (["dataset.reader.num_users=0"], "dataset.reader.num_users=0 must be an integer >= 1."),
    (["evaluation.ks=[0,10]"], "evaluation.ks=[0, 10] must be a non-empty list of integers >= 1."),
    (["evaluation.ks=[]"], "evaluation.ks=[] must be a non-empty list of integers >= 1."),
    (["hidden_size=0"], "hidden_size=0 must be an integer >= 1."),
    (["encoder.dropout=1.0"], "encoder.dropout=1.0 must be a number in [0, 1)."),
    (["encoder.dropout=-0.1"], "encoder.dropout=-0.1 must be a number in [0, 1)."),
    (["encoder.num_layers=0"], "encoder.num_layers=0 must be an integer >= 1."),
    (["encoder.num_heads=0"], "encoder.num_heads=0 must be an integer >= 1."),
    (["encoder.inner_size=0"], "encoder.inner_size=0 must be an integer >= 1 (or null)."),
    (["encoder.activation=tanh"], "encoder.activation='tanh' must be one of 'relu', 'gelu'."),
    (["encoder=bert4rec", "encoder.mask_prob=0"], "encoder.mask_prob=0 must be a number in (0, 1)."),
    (["encoder=bert4rec", "encoder.mask_prob=1.0"], "encoder.mask_prob=1.0 must be a number in (0, 1)."),
    (["encoder=bert4rec", "encoder.last_mask_prob=1.5"], "encoder.last_mask_prob=1.5 must be a number in [0, 1]."),
    (["encoder=gru4rec", "encoder.gru_size=0"], "encoder.gru_size=0 must be an integer >= 1."),
    (["item_embedder.init_std=-1"], "item_embedder.init_std=-1 must be a number >= 0."),
    (["loss=bce", "loss.sampler.num_negatives=0"], "loss.sampler.num_negatives=0 must be an integer >= 1."),
    (["loss=bpr", "loss.sampler.num_negatives=-3"], "loss.sampler.num_negatives=-3 must be an integer >= 1."),
    (["loss.label_smoothing=1"], "loss.label_smoothing=1 must be a number in [0, 1)."),
    (["loss.chunk_rows=0"], "loss.chunk_rows=0 must be an integer >= 1 (or null)."),
    (["task=value", "dataset=ml-100k-ratings", "loss=huber", "loss.delta=0"], "loss.delta=0 must be a number > 0."),
    (["encoder=history_mean", "encoder.length_power=1.5"], "encoder.length_power=1.5 must be a number in [0, 1]."),
    (["scheduler=warmup_cosine", "scheduler.warmup_steps=-1"], "scheduler.warmup_steps=-1 must be an integer >= 0."),
    (["scheduler=warmup_cosine", "scheduler.min_ratio=2"], "scheduler.min_ratio=2 must be a number in [0, 1]."),
    (["trainer.max_epochs=0"], "trainer.max_epochs=0 must be -1 or an integer >= 1 (or null)."),
    (["trainer.devices=0"], "trainer.devices=0 must be 'auto', -1, an integer >= 1 or a list of device indices."),
    (["+trainer.num_nodes=0"], "trainer.num_nodes=0 must be an integer >= 1."),
    (["trainer.check_val_every_n_epoch=0"], "trainer.check_val_every_n_epoch=0 must be an integer >= 1 (or null)."),
    (["trainer.log_every_n_steps=0"], "trainer.log_every_n_steps=0 must be an integer >= 1."),
    (["trainer.precision=8"], ("trainer.precision=8 must be one of 'transformer-engine', 'transformer-engine-float16', "
                               "'16-true', '16-mixed', 'bf16-true', 'bf16-mixed', '32-true', '64-true', 64, 32, 16, "
                               "'64', '32', '16', 'bf16'.")),
    (["callbacks.early_stopping.patience=-1"], "callbacks.early_stopping.patience=-1 must be an integer >= 0."),
    (["callbacks.model_checkpoint.save_top_k=-2"], "callbacks.model_checkpoint.save_top_k=-2 must be an integer >= -1."),
    (["seed=-1"], "seed=-1 must be an integer in [0, 4294967295]."),
    (["objective_mode=maximum"], "objective_mode='maximum' must be one of 'max', 'min'."),
    (["dataset.cold_items=1.0"], "dataset.cold_items=1.0 must be a number in [0, 1)."),
    (["dataset.cold_items=-0.2"], "dataset.cold_items=-0.2 must be a number in [0, 1)."),
    (["dataset.cold_seed=-1"], "dataset.cold_seed=-1 must be an integer >= 0."),
    (["dataset.train_stride=0"], "dataset.train_stride=0 must be an integer >= 1 (or null)."),
    (["dataset.batch_targets=0"], "dataset.batch_targets=0 must be an integer >= 1 (or null)."),
    (["evaluation.sampled.negatives=0"], "evaluation.sampled.negatives=0 must be an integer >= 1 (or null)."),
    (["evaluation.sampled.negatives=-100"], "evaluation.sampled.negatives=-100 must be an integer >= 1 (or null)."),
    (["evaluation.sampled.seed=-1"], "evaluation.sampled.seed=-1 must be an integer >= 0."),
]


@pytest.mark.parametrize(("overrides", "expected"), RANGE, ids=[case_id(c) for c in RANGE])
def test_out_of_range_value_is_named_with_what_is_expected(overrides, expected):
    assert message_of(*overrides) == expected


# ------------------------------------------------------------------------------------------- types

TYPES = [
    (["optimizer.lr=abc"], "optimizer.lr='abc' must be a number > 0, not a string."),
    (["optimizer.lr='0.1'"], "optimizer.lr='0.1' must be a number > 0, not a string."),
    (["optimizer.lr=true"], "optimizer.lr=true must be a number > 0, not a boolean."),
    (["optimizer.lr=null"], "optimizer.lr=null must be a number > 0."),
    (["encoder.num_layers=2.5"], "encoder.num_layers=2.5 must be an integer >= 1, not a float."),
    (["dataset.batch_size=[64]"], "dataset.batch_size=[64] must be an integer >= 1, not a list."),
    (["evaluation.ks=10"], "evaluation.ks=10 must be a non-empty list of integers >= 1, not an integer."),
    (["evaluation.mask_history=1"], "evaluation.mask_history=1 must be one of true, false, 's3rec'."),
    (["evaluation.mask_history=yes"], "evaluation.mask_history='yes' must be one of true, false, 's3rec'."),
    (["dataset.bucket_by_length=yes"], "dataset.bucket_by_length='yes' must be true or false, not a string."),
    (["resume=maybe"], "resume='maybe' must be true or false, not a string."),
    (["objective=5"], "objective=5 must be a string, not an integer."),
    (["optimizer.lr=${nope}"], "optimizer.lr cannot be resolved (Interpolation key 'nope' not found)."),
    # set through an interpolation: named once, by the key the user sets
    (["dataset.max_len=abc"], "dataset.max_len='abc' must be an integer >= 2, not a string."),
    (["hidden_size=big"], "hidden_size='big' must be an integer >= 1, not a string."),
    (["encoder=gru4rec", "hidden_size=1.5"], "hidden_size=1.5 must be an integer >= 1, not a float."),
    (["evaluation.sampled.negatives=many"],
     "evaluation.sampled.negatives='many' must be an integer >= 1 (or null), not a string."),
    (["evaluation.sampled.negatives=100.0"],
     "evaluation.sampled.negatives=100.0 must be an integer >= 1 (or null), not a float."),
    # a name that is no entry of evaluation.samplers: named by the key the user sets, before interpolations
    (["evaluation.sampled.sampler=pop"],
     "evaluation.sampled.sampler='pop' must be one of 'uniform', 'popularity' (the names in evaluation.samplers)."),
    (["evaluation.sampled.sampler=1"],
     "evaluation.sampled.sampler=1 must be one of 'uniform', 'popularity' (the names in evaluation.samplers)."),
]


@pytest.mark.parametrize(("overrides", "expected"), TYPES, ids=[case_id(c) for c in TYPES])
def test_wrong_type_is_named_in_one_sentence(overrides, expected):
    assert message_of(*overrides) == expected


# ------------------------------------------------------------------------------------------- cross-key rules

CROSS = [
    (["encoder.num_heads=3"], "hidden_size=64 must be divisible by encoder.num_heads=3 (attention heads split the hidden size)."),
    (["encoder=bert4rec", "hidden_size=30", "encoder.num_heads=4"],
     "hidden_size=30 must be divisible by encoder.num_heads=4 (attention heads split the hidden size)."),
    (["item_embedder.hidden_size=33"],
     "item_embedder.hidden_size=33 must be divisible by encoder.num_heads=2 (attention heads split the hidden size)."),
    (["encoder.max_len=5"],
     "encoder.max_len=5 must be >= dataset.max_len=50 (the encoder needs a position for every item of the input window)."),
    (["dataset.train_stride=51"],
     "dataset.train_stride=51 must be <= dataset.max_len=50 (windows further apart would leave targets out of training)."),
    (["dataset.batch_targets=49"],
     ("dataset.batch_targets=49 must be >= dataset.max_len=50: one training window holds up to max_len targets "
     "(or null: batches of dataset.batch_size windows).")),
    (["dataset/split=temporal_ratio", "dataset.split.train=0.9", "dataset.split.val=0.2"],
     "dataset.split.train=0.9 + dataset.split.val=0.2 must be < 1 (the rest of each sequence is the test part)."),
    (["dataset/split=temporal_ratio", "dataset.cold_items=0.2"],
     ("dataset.cold_items=0.2 needs dataset/split=leave_one_out (cold items are held out as validation and test "
     "targets only), not TemporalRatio.")),
    (["dataset/split=global_temporal", "evaluation.sampled.negatives=100"],
     ("evaluation.sampled.negatives=100 ranks one target per sample, but dataset/split (GlobalTemporal) gives each "
     "sample a set of targets; use full ranking (evaluation.sampled.negatives=null).")),
    (["dataset/split=global_temporal", "dataset.split.val=0.5", "dataset.split.test=0.5"],
     ("dataset.split.val=0.5 + dataset.split.test=0.5 must be < 1 (the interactions before the validation cut are "
     "the training data).")),
    (["dataset.cold_items=0.2", "loss.label_smoothing=0.1"],
     ("dataset.cold_items=0.2 needs loss.label_smoothing=0, not 0.1 (smoothing would put probability on the cold "
     "items, which training must never score).")),
    (["loss.chunk_rows=512", "loss.label_smoothing=0.1"],
     ("loss.chunk_rows=512 works without label smoothing only, not with loss.label_smoothing=0.1: set one of them "
      "to its default.")),
    (["dataset.reader.min_length=30", "dataset.reader.max_length=20"],
     "dataset.reader.min_length=30 must be <= dataset.reader.max_length=20."),
    (["objective=val/ndcg@7"],
     ("objective=val/ndcg@7 is not a computed metric (expected one of val/hr@10, val/hr@20, val/hr@5, val/map@10, "
      "val/map@20, val/map@5, val/mrr@10, val/mrr@20, val/mrr@5, val/ndcg@10, val/ndcg@20, val/ndcg@5, "
      "val/precision@10, val/precision@20, val/precision@5, val/recall@10, val/recall@20, val/recall@5).")),
    (["evaluation.ks=[3]", "objective=val/hr@3", "objective_mode=up"], "objective_mode='up' must be one of 'max', 'min'."),
    (["experiment=ml100k_sasrec", "callbacks=none"],
     ("callbacks.early_stopping has settings but no _target_ (left over from an experiment after choosing another "
      "callbacks option?), so set callbacks.early_stopping=null or pick a callbacks option that defines it.")),
    (["encoder=popularity", "decoder=dot"],
     ("encoder ConstantEncoder needs decoder PopularityScores, not DotProduct (the popularity baseline pairs them: "
      "pass encoder=popularity, which selects both).")),
    (["decoder=popularity"],
     ("decoder PopularityScores needs encoder ConstantEncoder, not SASRec (the popularity baseline pairs them: "
      "pass encoder=popularity, which selects both).")),
    (["task=value"],
     ("task=value and task=intent predict one number per rating and need a rating dataset "
      "(e.g. dataset=ml-100k-ratings), not dataset synthetic.")),
    (["dataset=ml-100k-ratings"],
     "dataset ml-100k-ratings holds rating samples for task=value or task=intent, not for next-item ranking."),
    (["task=value", "dataset=ml-100k-ratings", "objective=val/auc"],
     "objective=val/auc is not a computed metric (expected one of val/mse, val/rmse, val/mae)."),
]


@pytest.mark.parametrize(("overrides", "expected"), CROSS, ids=[case_id(c) for c in CROSS])
def test_incompatible_values_and_parts_are_named(overrides, expected):
    assert message_of(*overrides) == expected


# ------------------------------------------------------------------------------------------- unknown keys

UNKNOWN = [
    (["+optimizer.lrr=0.1"], "optimizer.lrr is not a parameter of torch.optim.Adam (did you mean lr?)."),
    (["+trainer.max_epoch=3"], "trainer.max_epoch is not a parameter of lightning.pytorch.Trainer (did you mean max_epochs?)."),
    (["+scheduler.warmup=5", "scheduler=warmup_cosine"],
     "scheduler.warmup is not a parameter of recforge.models.schedules.WarmupCosine (did you mean warmup_steps?)."),
    (["+encoder.zzz=1"], ("encoder.zzz is not a parameter of recforge.models.encoders.sasrec.SASRec (it takes "
                          "item_embedder, max_len, num_layers, num_heads, dropout, inner_size, activation, norm_first, "
                          "inner_dropout, qkv_init_normal).")),
    (["+dataset.reader.num_user=5"],
     "dataset.reader.num_user is not a parameter of recforge.data.synthetic.SyntheticSequences (did you mean num_users?)."),
    (["encoder._target_=recforge.models.encoders.sasrec.SASRecc"],
     "encoder._target_=recforge.models.encoders.sasrec.SASRecc does not name an importable class or function."),
]


@pytest.mark.parametrize(("overrides", "expected"), UNKNOWN, ids=[case_id(c) for c in UNKNOWN])
def test_appended_key_the_target_does_not_take_is_named(overrides, expected):
    assert message_of(*overrides) == expected


def test_every_violation_is_reported_in_one_line_in_table_order():
    message = message_of("optimizer.lr=-1", "encoder.dropout=1.5", "hidden_size=abc", "+optimizer.lrr=0.1")
    # values in the composed configuration's order (train.yaml's own keys, then its groups as listed: encoder
    # after optimizer), then unknown parameters
    assert message == ("hidden_size='abc' must be an integer >= 1, not a string; "
                       "optimizer.lr=-1 must be a number > 0; "
                       "encoder.dropout=1.5 must be a number in [0, 1); "
                       "optimizer.lrr is not a parameter of torch.optim.Adam (did you mean lr?).")
    assert "\n" not in message


def test_required_value_is_reported_before_the_rules():
    (cfg,) = compose_all(["dataset=csv", "optimizer.lr=-1"])
    with pytest.raises(RecforgeError, match=r"^config value dataset\.reader\.path is required but not set"):
        validate_config(cfg)


# ------------------------------------------------------------------------------------------- no false positives

ACCEPTED = [
    ["optimizer.lr=1"], ["optimizer.lr=1e-9"], ["encoder.dropout=0"], ["encoder.dropout=0.99"], ["dataset.max_len=2"],
    ["dataset.train_stride=1"], ["dataset.train_stride=50"], ["dataset.train_stride=null"],
    ["dataset.batch_targets=50"], ["dataset.batch_targets=4096"], ["dataset.batch_targets=null"],
    ["loss.chunk_rows=1"], ["loss.chunk_rows=null"],
    ["evaluation.ks=[1]", "objective=val/ndcg@1"], ["callbacks.early_stopping.patience=0"], ["trainer.max_epochs=-1"],
    ["trainer.max_epochs=null"], ["trainer.devices=-1"], ["trainer.devices=auto"], ["trainer.devices=[0,1]"],
    ["trainer.precision=16"], ["trainer.precision=bf16-mixed"], ["trainer.precision=64-true"],
    ["trainer.deterministic=warn"], ["encoder.inner_size=null"], ["encoder.inner_size=128"], ["seed=0"],
    ["encoder=bert4rec", "encoder.mask_prob=0.5", "encoder.last_mask_prob=1.0"], ["encoder=gru4rec", "hidden_size=33"],
    ["hidden_size=96", "encoder.num_heads=3"], ["encoder.max_len=80"], ["loss=bce", "loss.sampler.num_negatives=100"],
    ["scheduler=warmup_cosine", "scheduler.warmup_steps=0", "scheduler.min_ratio=1"],
    ["dataset/split=temporal_ratio", "dataset.split.train=0.5", "dataset.split.val=0.4"],
    ["dataset/split=global_temporal", "dataset.split.val=0.45", "dataset.split.test=0.5"],
    ["dataset/split=global_temporal", "evaluation.item_chunk_size=100", "objective=val/map@10"],
    ["logger=wandb", "+logger.wandb.entity=me"], ["+optimizer.amsgrad=true"], ["dataset.min_rating=4"],
    ["objective=val/mrr@20", "objective_mode=min"], ["ckpt_path=/some/run/last.ckpt"],
    ["dataset.cold_items=0.99", "dataset.cold_seed=7"], ["dataset/split=temporal_ratio", "dataset.cold_items=0"],
    ["evaluation.sampled.negatives=1"], ["evaluation.sampled.negatives=100", "evaluation.sampled.sampler=popularity"],
    ["evaluation.sampled.negatives=null", "evaluation.sampled.seed=0"],
]


@pytest.mark.parametrize("overrides", ACCEPTED, ids=[" ".join(o) for o in ACCEPTED])
def test_valid_edge_values_pass(overrides):
    (cfg,) = compose_all(overrides)
    assert config_problems(cfg) == []


def discover_options() -> list[tuple[str, str]]:
    """(group, option) for every YAML file below conf/<group>/, nested groups included."""
    return [(p.relative_to(CONF).parent.as_posix(), p.stem) for p in sorted(CONF.rglob("*.yaml"))
            if len(p.relative_to(CONF).parts) >= 2]


# what some options need besides themselves: a value for a required key, their sweeper, their encoder (the
# popularity decoder trains nothing, so only encoder=popularity, which selects it, may use it)
NEEDS = {
    ("dataset", "csv"): ["dataset.reader.path=interactions.csv"],
    ("hydra/sweeper/sampler", "*"): ["hparams_search=optuna"],
    ("decoder", "popularity"): ["encoder=popularity"],
    ("loss/sampler", "*"): ["loss=sampled_softmax"],
    # intent/value parts go together: a rating dataset, a pointwise task (its head and loss)
    ("dataset", "ml-100k-ratings"): ["task=value"],
    ("dataset/split", "random_kfold"): ["task=value", "dataset=ml-100k-ratings"],
    ("dataset/split", "random_holdout"): ["task=value", "dataset=ml-100k-ratings"],
    ("task", "value"): ["dataset=ml-100k-ratings"],
    ("task", "intent"): ["dataset=ml-100k-ratings"],
    ("decoder", "biased_dot"): ["task=value", "dataset=ml-100k-ratings"],
    ("loss", "mse"): ["task=value", "dataset=ml-100k-ratings"],
    ("loss", "huber"): ["task=value", "dataset=ml-100k-ratings"],
    ("loss", "bce_logits"): ["task=intent", "dataset=ml-100k-ratings"],
    # review texts go with a text task (its experiment)
    ("dataset", "clothing-reviews"): ["experiment=clothing_intent"],
    # vectors come from a file; a source is a part of item_embedder=multi
    ("item_embedder", "vectors"): ["item_embedder.path=vectors.parquet"],
    ("item_source", "*"): ["item_embedder=multi"],
    ("item_source", "vectors"): ["item_embedder=multi", "item_source.vectors.path=vectors.parquet"],
    ("source_fusion", "*"): ["item_embedder=multi"],
    # task=multi: its dataset, its loss weighting
    ("task", "multi"): ["dataset=ml-100k-multi"],
    ("dataset", "ml-100k-multi"): ["task=multi"],
    ("weighting", "*"): ["task=multi", "dataset=ml-100k-multi"],
}


def test_every_option_of_every_group_validates():
    options = discover_options()
    assert len(options) >= 50 and ("experiment", "beauty_bert4rec") in options
    runs = [NEEDS.get((group, option), NEEDS.get((group, "*"), [])) + [f"{group}={option}"] for group, option in options]
    problems = {" ".join(run): config_problems(cfg) for run, cfg in zip(runs, compose_all(*runs))}
    assert {run: found for run, found in problems.items() if found} == {}


def test_every_encoder_and_loss_combination_validates():
    """Each encoder with each loss (popularity brings its own decoder); optimizers and schedulers rotate."""
    optimizers, schedulers = ("adam", "adamw", "sgd"), ("none", "warmup_cosine")
    pairs = [(e, l) for e in ("sasrec", "bert4rec", "gru4rec", "popularity")
             for l in ("ce", "bce", "bpr", "sampled_softmax")]
    runs = [[f"encoder={e}", f"loss={l}", f"optimizer={optimizers[i % 3]}", f"scheduler={schedulers[i % 2]}"]
            for i, (e, l) in enumerate(pairs)]
    problems = {" ".join(run): config_problems(cfg) for run, cfg in zip(runs, compose_all(*runs))}
    assert {run: found for run, found in problems.items() if found} == {}


def test_precisions_are_lightnings():
    expected = get_args(_PRECISION_INPUT_STR) + get_args(_PRECISION_INPUT_INT) + get_args(_PRECISION_INPUT_STR_ALIAS)
    assert PRECISIONS == expected


# ------------------------------------------------------------------------------------------- console script


def run_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "RECFORGE_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    env.pop("RECFORGE_DATA", None)
    return subprocess.run([str(SCRIPT), *args, f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def assert_nothing_done(proc: subprocess.CompletedProcess, tmp_path: Path) -> None:
    assert "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "run").exists(), "run directory left behind"
    assert not (tmp_path / "cache").exists() and not (tmp_path / "outputs").exists(), "work started"


def assert_recforge_error(proc: subprocess.CompletedProcess, tmp_path: Path, expected: str) -> None:
    """Exit 2 and stderr is exactly the one line 'recforge: error: <expected>'."""
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.splitlines() == [f"recforge: error: {expected}"], proc.stderr
    assert_nothing_done(proc, tmp_path)


NO_DATA = ["dataset=ml-100k", "dataset.root=/nonexistent/data"]  # reading it would fail: it is never read


def test_cli_range_error_is_reported_before_any_data_is_read(tmp_path):
    proc = run_cli(tmp_path, *NO_DATA, "optimizer.lr=-0.1")
    assert_recforge_error(proc, tmp_path, "optimizer.lr=-0.1 must be a number > 0.")


def test_cli_type_error(tmp_path):
    proc = run_cli(tmp_path, *NO_DATA, "optimizer.lr=abc")
    assert_recforge_error(proc, tmp_path, "optimizer.lr='abc' must be a number > 0, not a string.")


def test_cli_divisibility_error(tmp_path):
    proc = run_cli(tmp_path, *NO_DATA, "encoder.num_heads=3")
    assert_recforge_error(proc, tmp_path, "hidden_size=64 must be divisible by encoder.num_heads=3 "
                                          "(attention heads split the hidden size).")


def test_cli_incompatible_combination(tmp_path):
    proc = run_cli(tmp_path, *NO_DATA, "encoder=popularity", "decoder=dot")
    assert_recforge_error(proc, tmp_path, "encoder ConstantEncoder needs decoder PopularityScores, not DotProduct "
                                          "(the popularity baseline pairs them: pass encoder=popularity, which "
                                          "selects both).")


def test_cli_unknown_key_is_refused_by_hydra_naming_it(tmp_path):
    """Without ``+`` Hydra refuses the key while composing (its exit status 1), naming key and fix. (With ``+`` the
    key composes and validation names it: test_appended_key_the_target_does_not_take_is_named and
    test_cli_errors.py::test_appended_key_the_encoder_does_not_take.)"""
    proc = run_cli(tmp_path, "optimizer.lrr=0.1")
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[:3] == [
        "Could not override 'optimizer.lrr'.", "To append to your config use +optimizer.lrr=0.1",
        "Key 'lrr' is not in struct"], proc.stderr
    assert_nothing_done(proc, tmp_path)


def test_cli_unknown_group_option_is_refused_by_hydra_naming_it(tmp_path):
    proc = run_cli(tmp_path, "encoder=sasrecc")
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    assert lines[0] == "In 'train': Could not find 'encoder/sasrecc'", proc.stderr
    on_disk = sorted(p.stem for p in (Path(recforge.__file__).parent / "conf" / "encoder").glob("*.yaml"))
    options = lines[lines.index("Available options in 'encoder':") + 1:][:len(on_disk)]
    assert [line.strip() for line in options] == on_disk and "sasrec" in on_disk
    assert_nothing_done(proc, tmp_path)


def test_bad_item_vector_file_is_one_line_and_no_run(tmp_path):
    """A vector file with an infinite value stops the run before training: one line naming the file and row."""
    import numpy as np

    vectors = np.ones((3, 2))
    vectors[1, 0] = np.inf
    np.save(tmp_path / "v.npy", vectors)
    (tmp_path / "v.ids").write_text("0\n1\n2\n")
    proc = run_cli(tmp_path, "item_embedder=vectors", f"item_embedder.path={tmp_path / 'v.npy'}",
                   f"item_embedder.ids_path={tmp_path / 'v.ids'}", "trainer.max_epochs=1")
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("recforge: error")]  # after the seed line
    expected = (f"recforge: error: item vector file {tmp_path / 'v.npy'}: row 1 (item '1') has a NaN or infinite "
                "value (1 such rows).")
    assert "Traceback" not in proc.stderr and errors == [expected], proc.stderr
    assert not (tmp_path / "run").exists()
