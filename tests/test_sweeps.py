"""Sweeps: run identity and W&B sweep translation (pure), then real multiruns through the console scripts:
one offline W&B run per trial (read back from the .wandb transaction log), failed trials recorded and skipped,
single-run divergence, joblib parallel trials, TensorBoard HParams, and composing the search/launch options."""
from __future__ import annotations

import json
import logging
import math
import os
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any, Iterator

import pytest
import torch
import yaml
from hydra import compose, initialize_config_module
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import OmegaConf

from recforge.errors import RecforgeError
from recforge.evaluation.ranking import rank_targets
from recforge.run.sweep import (
    FAILED_FILE,
    TrialSummary,
    failed_trials,
    flatten,
    optuna_direction,
    record_failure,
    run_identity,
    short_dirname,
)
from recforge.wandb_sweep import wandb_parameter

BIN = Path(sys.executable).parent
SCRIPT = BIN / "recforge-train"
SWEEP_SCRIPT = BIN / "recforge-wandb-sweep"

TINY_DATA = [
    "dataset.reader.num_users=120", "dataset.reader.num_items=60", "dataset.reader.max_length=20",
    "dataset.max_len=10", "dataset.batch_size=32", "hidden_size=16",
]
TINY = [*TINY_DATA, "callbacks.progress_bar=null", "logger=csv"]
TINY_WANDB = [*TINY_DATA, "callbacks.progress_bar=null", "logger=wandb"]
SASREC = "recforge.models.encoders.sasrec.SASRec"


# ------------------------------------------------------------------------------------------------ helpers


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def env_for(root: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "RECFORGE_CACHE": str(root / "cache"), "OMP_NUM_THREADS": "1",
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", **extra}
    env.pop("HYDRA_FULL_ERROR", None)
    return env


def run_cli(cwd: Path, *args: str, script: Path = SCRIPT, timeout: int = 300, **extra_env: str
            ) -> subprocess.CompletedProcess:
    return subprocess.run([str(script), *args], cwd=cwd, env=env_for(cwd, **extra_env), capture_output=True,
                          text=True, timeout=timeout)


def trials(sweep: Path) -> list[Path]:
    """Trial directories of a multirun, in job order (0_..., 1_..., ...)."""
    found = [p for p in sweep.iterdir() if p.is_dir() and (p / ".hydra").is_dir()]
    return sorted(found, key=lambda p: int(p.name.split("_", 1)[0]))


def overrides_of(trial: Path) -> dict[str, str]:
    """The trial's task overrides as Hydra recorded them (.hydra/overrides.yaml)."""
    items = yaml.safe_load((trial / ".hydra" / "overrides.yaml").read_text())
    return dict(item.split("=", 1) for item in items)


def wandb_records(path: Path) -> Iterator[Any]:
    """Records of a W&B transaction log (run-<id>.wandb).

    Header: b":W&B", 2 magic bytes, 1 version byte. Then leveldb-log records in 32 KiB blocks: 7-byte header
    (crc32 of type byte + payload, uint32 LE; payload length, uint16 LE; type: 1 full, 2 first, 3 middle,
    4 last), payload = protobuf ``Record``; a block tail shorter than a header is zero padding.
    """
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", data[:7]
    block, pos, chunks = 32768, 7, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == 0:
            continue
        assert zlib.crc32(chunk, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF == crc, f"bad crc at {pos} in {path}"
        chunks = chunk if kind in (1, 2) else chunks + chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(chunks)
            yield record
    assert len(data) - pos < 7, f"{len(data) - pos} bytes left unread in {path}"


def read_wandb_run(path: Path) -> dict[str, Any]:
    """The parts of one offline W&B run the tests check: run record, merged config, summary, history, exit."""
    run, config, summary, history, exits = None, {}, {}, [], []
    for record in wandb_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
            config.update({item.key: json.loads(item.value_json) for item in record.run.config.update if item.key})
        elif kind == "config":
            config.update({item.key: json.loads(item.value_json) for item in record.config.update if item.key})
        elif kind == "summary":
            for item in record.summary.update:
                summary[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
        elif kind == "history":
            history.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                            for item in record.history.item})
        elif kind == "exit":
            exits.append(record.exit.exit_code)
    assert run is not None, f"no run record in {path}"
    return {"run": run, "config": config, "summary": summary, "history": history, "exits": exits}


def wandb_run_files(run_dir: Path) -> list[Path]:
    return sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"))


# ------------------------------------------------------------------------------- 1. pure functions


def test_flatten_nested_config():
    tree = {
        "seed": 42,
        "optimizer": {"_target_": "torch.optim.Adam", "lr": 0.001, "betas": [0.9, 0.98]},
        "dataset": {"reader": {"num_users": 120, "root": None}, "name": "synthetic"},
        "callbacks": {},
        "tags": [],
    }
    assert flatten(tree) == {
        "seed": 42,
        "optimizer._target_": "torch.optim.Adam",
        "optimizer.lr": 0.001,
        "optimizer.betas": [0.9, 0.98],
        "dataset.reader.num_users": 120,
        "dataset.reader.root": None,
        "dataset.name": "synthetic",
        "callbacks": {},  # an empty group stays one key, not lost
        "tags": [],
    }
    assert flatten({"a": {"b": 1}}, prefix="cfg.") == {"cfg.a.b": 1}


def _cfg(tags: list[str] | None = None, sweep_name: str | None = None, dataset: str = "synthetic",
         target: str = SASREC):
    return OmegaConf.create({"dataset": {"name": dataset}, "encoder": {"_target_": target},
                             "tags": tags or [], "sweep_name": sweep_name})


@pytest.mark.parametrize(("cfg", "run_dir", "sweep_dir", "override_dirname", "expected"), [
    (_cfg(), "/o/multiruns/2025-01-02_03-04-05/1_seed=2", "/o/multiruns/2025-01-02_03-04-05", "seed=2",
     {"group": "2025-01-02_03-04-05", "name": "seed=2", "tags": ["synthetic", "SASRec"]}),
    (_cfg(sweep_name="lr-study"), "/o/multiruns/x/0_seed=1", "/o/multiruns/x", "seed=1",
     {"group": "lr-study", "name": "seed=1", "tags": ["synthetic", "SASRec"]}),
    (_cfg(tags=["ablation", "beauty", "GRU4Rec", "ablation"], dataset="beauty",
          target="recforge.models.encoders.gru4rec.GRU4Rec"),
     "/o/runs/2025-01-02_03-04-05-123456", None, "",
     {"group": None, "name": "2025-01-02_03-04-05-123456", "tags": ["beauty", "GRU4Rec", "ablation"]}),
    (_cfg(sweep_name="paper-table"), "/o/runs/r1", None, "encoder=gru4rec",
     {"group": "paper-table", "name": "encoder=gru4rec", "tags": ["synthetic", "SASRec"]}),
])
def test_run_identity(cfg, run_dir, sweep_dir, override_dirname, expected):
    assert run_identity(cfg, run_dir, sweep_dir, override_dirname) == expected


@pytest.mark.parametrize(("expression", "expected"), [
    ("tag(log, interval(0.0001, 0.01))", {"distribution": "log_uniform_values", "min": 0.0001, "max": 0.01}),
    ("interval(0, 0.5)", {"distribution": "uniform", "min": 0.0, "max": 0.5}),
    # Hydra's interval() always yields floats (x <= v < y), so interval(1, 4) is a float range, as it is for
    # the Optuna sweeper (UniformDistribution); integers need Hydra's int() cast.
    ("interval(1, 4)", {"distribution": "uniform", "min": 1.0, "max": 4.0}),
    ("int(interval(1, 4))", {"distribution": "int_uniform", "min": 1, "max": 4}),
    ("tag(log, int(interval(16, 256)))", {"distribution": "q_log_uniform_values", "min": 16, "max": 256, "q": 1}),
    ("choice(32, 64, 128)", {"values": [32, 64, 128]}),
    ("choice(sasrec, gru4rec)", {"values": ["sasrec", "gru4rec"]}),
    ("range(1, 4)", {"values": [1, 2, 3]}),
    ("range(0, 1, 0.25)", {"values": [0.0, 0.25, 0.5, 0.75]}),
    ("0.3", {"value": 0.3}),
    ("adamw", {"value": "adamw"}),
])
def test_wandb_parameter(expression, expected):
    got = wandb_parameter("some.key", expression)
    assert got == expected
    assert [type(v) for v in got.values()] == [type(v) for v in expected.values()]  # 1 vs 1.0 matters to W&B


@pytest.mark.parametrize(("expression", "optuna_class"), [
    ("tag(log, interval(0.0001, 0.01))", "LogUniformDistribution"),
    ("interval(0, 0.5)", "UniformDistribution"),
    ("interval(1, 4)", "UniformDistribution"),
    ("int(interval(1, 4))", "IntUniformDistribution"),
    ("tag(log, int(interval(16, 256)))", "IntLogUniformDistribution"),
    ("choice(32, 64, 128)", "CategoricalDistribution"),
])
def test_wandb_parameter_samples_the_space_the_optuna_sweeper_does(expression, optuna_class):
    """Parity: a search space means the same under W&B as under the Optuna sweeper (same kind, same bounds)."""
    from hydra_plugins.hydra_optuna_sweeper._impl import (
        create_optuna_distribution_from_override,
    )

    dist = create_optuna_distribution_from_override(OverridesParser.create().parse_override(f"k={expression}"))
    assert type(dist).__name__ == optuna_class
    got = wandb_parameter("k", expression)
    if "values" in got:
        assert got["values"] == list(dist.choices)
    else:
        assert (got["min"], got["max"]) == (dist.low, dist.high)


@pytest.mark.parametrize("expression", ["interval(0.1", "choice(1,2", "tag(log, interval(1e-4, 1e-2)"])
def test_wandb_parameter_malformed_expression_names_the_key(expression):
    with pytest.raises(RecforgeError) as info:
        wandb_parameter("optimizer.lr", expression)
    message = str(info.value)
    assert message.startswith(f"search space entry optimizer.lr={expression} is not a Hydra sweep expression")


def test_record_failure_writes_failed_json(tmp_path):
    try:
        raise ValueError("bad value\n   for optimizer.lr")
    except ValueError as exc:
        returned = record_failure(tmp_path / "trial", exc)
    written = read_json(tmp_path / "trial" / FAILED_FILE)
    assert written == returned
    assert (written["status"], written["type"], written["error"]) == ("failed", "ValueError",
                                                                      "bad value for optimizer.lr")
    assert written["traceback"].startswith("Traceback (most recent call last):")
    assert written["traceback"].rstrip().endswith("ValueError: bad value\n   for optimizer.lr")
    # an exception without a message is named by its type
    assert record_failure(tmp_path / "t2", RuntimeError())["error"] == "RuntimeError"
    assert read_json(tmp_path / "t2" / FAILED_FILE)["type"] == "RuntimeError"


def _fake_sweep(root: Path, names: list[str], failed: dict[str, str]) -> Path:
    for name in names:
        (root / name / ".hydra").mkdir(parents=True)
        if name in failed:
            record_failure(root / name, RuntimeError(failed[name]))
    (root / "multirun.yaml").write_text("{}\n")
    (root / "optimization_results.yaml").write_text("{}\n")
    return root


def test_failed_trials_and_trial_summary(tmp_path, caplog):
    sweep = _fake_sweep(tmp_path / "sweep", ["0_seed=1", "1_seed=2", "2_seed=3"],
                        {"1_seed=2": "training loss became nan in epoch 0", "2_seed=3": "out of\nmemory"})
    assert failed_trials(sweep) == [("1_seed=2", "training loss became nan in epoch 0"),
                                    ("2_seed=3", "out of memory")]
    with caplog.at_level(logging.INFO, logger="recforge.run.sweep"):
        TrialSummary().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}}))
    assert [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "recforge.run.sweep"] == [
        ("WARNING", "2 of 3 trials failed (details in <trial>/failed.json):"),
        ("WARNING", "  1_seed=2: training loss became nan in epoch 0"),
        ("WARNING", "  2_seed=3: out of memory"),
    ]

    caplog.clear()
    ok = _fake_sweep(tmp_path / "ok", ["0_a", "1_b"], {})
    with caplog.at_level(logging.INFO, logger="recforge.run.sweep"):
        TrialSummary().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(ok)}}}))
    assert [r.getMessage() for r in caplog.records if r.name == "recforge.run.sweep"] == [
        f"all 2 trials finished; compare them with: recforge-report {ok}"]


def test_optuna_direction():
    assert (optuna_direction("max"), optuna_direction("min")) == ("maximize", "minimize")


# ----------------------------------------------------------------------- 2. W&B sweep config + agent


@pytest.fixture(scope="module")
def wandb_sweep_yaml(tmp_path_factory) -> dict:
    cwd = tmp_path_factory.mktemp("wandb_sweep_yaml")
    proc = run_cli(cwd, "hparams_search=optuna", "dataset.reader.num_users=120", script=SWEEP_SCRIPT, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return yaml.safe_load(proc.stdout)


def test_wandb_sweep_config_from_the_optuna_search_space(wandb_sweep_yaml):
    sweep = wandb_sweep_yaml
    assert sweep["program"] == "recforge-train"
    assert sweep["method"] == "bayes"
    assert sweep["metric"] == {"name": "best/val/ndcg@10", "goal": "maximize"}
    assert sweep["parameters"] == {
        "optimizer.lr": {"distribution": "log_uniform_values", "min": 0.0001, "max": 0.01},
        "encoder.dropout": {"distribution": "uniform", "min": 0.0, "max": 0.5},
        "hidden_size": {"values": [32, 64, 128]},
    }
    assert sweep["run_cap"] == 20
    assert sweep["command"] == ["${env}", "${program}", "${args_no_hyphens}", "dataset.reader.num_users=120",
                                "logger=wandb"]
    assert "hparams_search=optuna" not in sweep["command"]


def test_wandb_sweep_minimize_and_changed_space(tmp_path, capsys):
    from recforge.wandb_sweep import main

    out = tmp_path / "sweep.yaml"
    main(["hparams_search=optuna", "objective=val/mrr@20", "objective_mode=min", "hydra.sweeper.n_trials=7",
          "logger=many", "--method", "random", "--out", str(out)])
    sweep = yaml.safe_load(out.read_text())
    assert capsys.readouterr().out == ""
    assert sweep["metric"] == {"name": "best/val/mrr@20", "goal": "minimize"}
    assert (sweep["method"], sweep["run_cap"]) == ("random", 7)
    # the user's logger choice is kept (no second logger= override)
    assert sweep["command"][3:] == ["objective=val/mrr@20", "objective_mode=min", "hydra.sweeper.n_trials=7",
                                    "logger=many"]


def test_wandb_sweep_without_search_space_is_a_user_error(capsys):
    from recforge.wandb_sweep import main

    with pytest.raises(SystemExit) as info:
        main(["seed=1"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err == ("recforge: error: the composed config has no search space (hydra.sweeper.params); "
                   "add hparams_search=optuna or set the params.\n")


def agent_argv(sweep: dict, assignment: dict[str, Any]) -> list[str]:
    """The command ``wandb agent`` runs for one assignment (macro expansion of wandb_agent._command_run)."""
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    sweep_vars = create_sweep_command_args({"args": {k: {"value": v} for k, v in assignment.items()}})
    sweep_vars.update(program=[sweep["program"]], env=["/usr/bin/env"], interpreter=["python"])
    argv: list[str] = []
    for item in map(str, sweep["command"]):
        argv += (sweep_vars.get(item[2:-1]) or []) if item.startswith("${") and item.endswith("}") else [item]
    return argv


def test_wandb_agent_command_runs_one_trial(wandb_sweep_yaml, tmp_path):
    """What `wandb agent` does: write the sweep parameters file, set run/sweep ids, run the expanded command."""
    from wandb.sdk.lib import config_util

    assignment = {"optimizer.lr": 0.003, "encoder.dropout": 0.1, "hidden_size": 32}
    argv = agent_argv(wandb_sweep_yaml, assignment)
    assert argv == ["/usr/bin/env", "recforge-train", "optimizer.lr=0.003", "encoder.dropout=0.1", "hidden_size=32",
                    "dataset.reader.num_users=120", "logger=wandb"]
    params = tmp_path / "wandb" / "sweep-swp12345" / "config-agentrun1.yaml"
    config_util.save_config_file_from_dict(str(params), {k: {"value": v} for k, v in assignment.items()})
    run_dir = tmp_path / "run"
    tiny = ["dataset.reader.num_items=60", "dataset.reader.max_length=20", "dataset.max_len=10",
            "dataset.batch_size=32", "callbacks.progress_bar=null", "trainer.max_epochs=1", f"hydra.run.dir={run_dir}"]
    env = env_for(tmp_path, WANDB_MODE="offline", WANDB_RUN_ID="agentrun1", WANDB_SWEEP_ID="swp12345",
                  WANDB_SWEEP_PARAM_PATH=str(params))
    proc = subprocess.run(argv + tiny, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert (config["optimizer"]["lr"], config["encoder"]["dropout"], config["hidden_size"]) == (0.003, 0.1, 32)
    assert config["dataset"]["reader"]["num_users"] == 120
    assert list(config["logger"]) == ["wandb"]

    files = wandb_run_files(run_dir)
    assert [f.name for f in files] == ["run-agentrun1.wandb"]  # the agent's run id: the sweep sees this run
    wb = read_wandb_run(files[0])
    assert (wb["run"].run_id, wb["run"].sweep_id) == ("agentrun1", "swp12345")
    assert {k: wb["config"][k] for k in assignment} == assignment
    metrics = read_json(run_dir / "metrics.json")
    assert wb["summary"]["best/val/ndcg@10"] == pytest.approx(metrics["val"]["ndcg@10"], abs=1e-6)
    assert wb["exits"] == [0]


# ------------------------------------------------------------- 3. multirun: one W&B run per trial


@pytest.fixture(scope="module")
def wandb_multirun(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    cwd = tmp_path_factory.mktemp("wandb_multirun")
    sweep = cwd / "wandb-sweep"
    proc = run_cli(cwd, "-m", "seed=1,2,3", "trainer.max_epochs=1", *TINY_WANDB, f"hydra.sweep.dir={sweep}",
                   WANDB_MODE="offline")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return sweep, proc


def test_multirun_one_wandb_run_per_trial(wandb_multirun):
    sweep, proc = wandb_multirun
    runs = trials(sweep)
    assert [overrides_of(t)["seed"] for t in runs] == ["1", "2", "3"]
    files = [wandb_run_files(t) for t in runs]
    assert [len(f) for f in files] == [1, 1, 1], files
    ids = set()
    for seed, trial, (path,) in zip((1, 2, 3), runs, files):
        wb = read_wandb_run(path)
        run = wb["run"]
        ids.add(run.run_id)
        assert path.name == f"run-{run.run_id}.wandb"
        assert run.run_group == "wandb-sweep"
        assert short_dirname(run.display_name) == trial.name.split("_", 1)[1]  # the trial's override_dirname
        assert f"seed={seed}" in run.display_name.split(",")
        assert list(run.tags) == ["synthetic", "SASRec"]
        config = wb["config"]
        assert (config["seed"], config["optimizer.lr"], config["hidden_size"]) == (seed, 0.001, 16)
        assert config["encoder._target_"] == SASREC
        assert config["dataset.reader.num_users"] == 120
        assert not any(isinstance(v, dict) and v for k, v in config.items() if k != "_wandb")  # flattened
        assert wb["exits"] == [0]

        metrics = read_json(trial / "metrics.json")
        summary = wb["summary"]
        assert summary["best/val/ndcg@10"] == pytest.approx(metrics["val"]["ndcg@10"], abs=1e-6)
        for stage in ("val", "test"):
            for name, value in metrics[stage].items():
                assert summary[f"final/{stage}/{name}"] == pytest.approx(value, abs=1e-6), (stage, name)
        logged_val = [h["val/ndcg@10"] for h in wb["history"] if "val/ndcg@10" in h]
        assert logged_val == [pytest.approx(metrics["val"]["ndcg@10"], abs=1e-6)]  # one epoch, logged once
        logged_test = [h["test/ndcg@10"] for h in wb["history"] if "test/ndcg@10" in h]
        assert logged_test == [pytest.approx(metrics["test"]["ndcg@10"], abs=1e-6)]
    assert len(ids) == 3
    # different seeds really trained different models
    assert len({read_json(t / "metrics.json")["val"]["ndcg@10"] for t in runs}) == 3
    assert f"all 3 trials finished; compare them with: recforge-report {sweep}" in proc.stdout + proc.stderr


# ---------------------------------------------------------------------------- 4. fault tolerance


@pytest.fixture(scope="module")
def diverging_multirun(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """Three trials; the middle one (lr=1e30) gets a NaN loss in its first epoch."""
    cwd = tmp_path_factory.mktemp("diverging_multirun")
    sweep = cwd / "sweep"
    proc = run_cli(cwd, "-m", "optimizer.lr=0.001,1e30,0.002", "trainer.max_epochs=1", *TINY_WANDB,
                   f"hydra.sweep.dir={sweep}", WANDB_MODE="offline")
    return sweep, proc


def test_failed_trial_is_recorded_and_the_sweep_goes_on(diverging_multirun):
    sweep, proc = diverging_multirun
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = trials(sweep)
    assert [overrides_of(t)["optimizer.lr"] for t in runs] == ["0.001", "1e+30", "0.002"]
    ok0, bad, ok2 = runs
    for trial, lr in ((ok0, 0.001), (ok2, 0.002)):
        assert not (trial / FAILED_FILE).exists()
        metrics = read_json(trial / "metrics.json")
        assert 0.0 <= metrics["val"]["ndcg@10"] <= 1.0 and metrics["best_epoch"] == 0
        assert yaml.safe_load((trial / "config.yaml").read_text())["optimizer"]["lr"] == lr
    assert read_json(ok0 / "metrics.json")["test"] != read_json(ok2 / "metrics.json")["test"]

    assert not (bad / "metrics.json").exists()
    failed = read_json(bad / FAILED_FILE)
    assert (failed["status"], failed["type"]) == ("failed", "TrainingDiverged")
    assert failed["error"] == "training loss became nan in epoch 0; lower optimizer.lr or check the data."
    assert "recforge.errors.TrainingDiverged: training loss became nan" in failed["traceback"]
    assert (bad / "config.yaml").is_file()  # the directory is kept for inspection

    log = proc.stdout + proc.stderr
    assert "1 of 3 trials failed (details in <trial>/failed.json):" in log
    assert f"  {bad.name}: training loss became nan in epoch 0" in log

    # each trial its own W&B run: the failed one closed with exit code 1, the next one started fresh
    wb = [read_wandb_run(f) for t in runs for f in wandb_run_files(t)]
    assert [w["exits"] for w in wb] == [[0], [1], [0]]
    assert len({w["run"].run_id for w in wb}) == 3
    assert "best/val/ndcg@10" not in wb[1]["summary"]
    assert wb[2]["summary"]["best/val/ndcg@10"] == pytest.approx(read_json(ok2 / "metrics.json")["val"]["ndcg@10"],
                                                                 abs=1e-6)


def test_optuna_sweep_survives_a_failed_trial(tmp_path):
    # A failed trial returns None: hydra-optuna-sweeper tells Optuna it FAILED (a NaN would crash the sweep:
    # optuna 2.10 refuses NaN values, and the sweeper's fallback then passes the NaN again with state FAIL).
    # Sampler seed 10 draws lr=0.001 then lr=1e30 (checked below via the trials' overrides).
    sweep = tmp_path / "optuna"
    proc = run_cli(tmp_path, "hparams_search=optuna", 'hydra.sweeper.params={optimizer.lr: "choice(0.001, 1e30)"}',
                   "encoder.dropout=0.1", "hydra.sweeper.n_trials=2", "hydra.sweeper.sampler.seed=10",
                   "trainer.max_epochs=1", *TINY, f"hydra.sweep.dir={sweep}")
    runs = trials(sweep)
    assert {overrides_of(t)["optimizer.lr"] for t in runs} >= {"1e+30"}, runs
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(runs) == 2
    by_lr = {float(overrides_of(t)["optimizer.lr"]): t for t in runs}
    assert sorted(by_lr) == [0.001, 1e30]
    good, bad = by_lr[0.001], by_lr[1e30]
    assert read_json(bad / FAILED_FILE)["type"] == "TrainingDiverged" and not (bad / "metrics.json").exists()
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["best_params"] == {"optimizer.lr": 0.001}
    assert results["best_value"] == pytest.approx(read_json(good / "metrics.json")["val"]["ndcg@10"], rel=1e-12)
    assert "1 of 2 trials failed" in proc.stdout + proc.stderr


@pytest.mark.parametrize("sampler", ["grid", "random"])
def test_optuna_search_with_another_sampler_composes(sampler):
    # the seeded TPE settings live in the sampler choice (hydra/sweeper/sampler/tpe_seeded.yaml), not in the
    # search space, so any other sampler replaces them whole
    with initialize_config_module("recforge.conf", version_base="1.3"):
        cfg = compose("train", overrides=["hparams_search=optuna", f"hydra/sweeper/sampler={sampler}"],
                      return_hydra_config=True)
    expected = {"grid": "optuna.samplers.GridSampler", "random": "optuna.samplers.RandomSampler"}[sampler]
    assert cfg.hydra.sweeper.sampler._target_ == expected


def test_a_nested_group_override_names_one_trial_directory() -> None:
    # dataset/split=... in a trial's overrides must not make the trial directory two directories deep
    assert short_dirname("dataset/split=global_temporal,seed=1") == "dataset.split=global_temporal,seed=1"
    assert "/" not in short_dirname("loss/sampler=popularity," + "x" * 200)


def test_multirun_with_long_overrides_still_runs(tmp_path):
    # the trial directory name is the trial's overrides; past 255 bytes (easy with Optuna's 17-digit floats)
    # mkdir would fail, so long names are cut to 120 characters with a hash of the whole (short_dirname)
    sweep = tmp_path / "sweep"
    proc = run_cli(tmp_path, "-m", "seed=1", "encoder.dropout=0.36599697090570255",
                   "optimizer.lr=0.0012345678901234567", "trainer.max_epochs=1", *TINY, f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 0, proc.stderr[-1500:]
    (trial,) = trials(sweep)
    assert len(trial.name) == len("0_") + 120 and re.fullmatch(r".*-[0-9a-f]{10}", trial.name), trial.name
    assert overrides_of(trial)["encoder.dropout"] == "0.36599697090570255"
    assert 0.0 <= read_json(trial / "metrics.json")["val"]["ndcg@10"] <= 1.0


# ------------------------------------------------------------------------- 5. single-run divergence


def test_single_run_divergence_exits_2_and_keeps_the_run(tmp_path):
    """SGD (momentum 0.9) at lr=10: epoch 0 stays finite (loss ~1e5..1e7), epoch 1 becomes NaN."""
    run_dir = tmp_path / "run"
    proc = run_cli(tmp_path, "optimizer=sgd", "optimizer.lr=10", "trainer.max_epochs=3", *TINY,
                   f"hydra.run.dir={run_dir}")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("recforge: error:")]
    message = "recforge: error: training loss became nan in epoch 1; lower optimizer.lr or check the data."
    assert errors == [message]
    assert proc.stderr.rstrip().splitlines()[-1] == message

    failed = read_json(run_dir / FAILED_FILE)
    assert (failed["type"], failed["error"]) == ("TrainingDiverged", message.removeprefix("recforge: error: "))
    assert not (run_dir / "metrics.json").exists()
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["optimizer"]["lr"] == 10
    # epoch 0's checkpoints are kept, and the diverged epoch was not checkpointed over them
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["epoch000.ckpt", "last.ckpt"]
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["epoch"] == 0
    assert all(torch.isfinite(t).all() for t in last["state_dict"].values() if t.is_floating_point())
    losses = [float(row.split(",")[2]) for row in (run_dir / "csv" / "metrics.csv").read_text().splitlines()[1:]
              if row.split(",")[2]]
    assert len(losses) == 1 and math.isfinite(losses[0])  # epoch 0's loss; epoch 1 raised before logging


def test_nan_scores_never_rank_the_target_first():
    # a NaN target score must rank last, not first (HR@k = 1 and NDCG = inf would make a diverged trial the
    # sweep's best); items that do not score strictly below the target are counted ahead of it
    nan = float("nan")
    scores = torch.tensor([[0.0, nan, nan, nan, nan],  # a diverged model: every score NaN
                           [0.0, 0.1, 0.4, 0.3, 0.2]])  # sanity: finite scores, target 3 is second
    ranks = rank_targets(scores, torch.tensor([2, 3]), history=None)
    assert ranks[1].item() == 2
    assert ranks[0].item() >= 4  # not ahead of any of the 4 candidate items


# ------------------------------------------------------------------- 6. parallel trials (joblib)


def test_joblib_parallel_trials_match_sequential_trials(tmp_path):
    """Same seeds, same single-threaded CPU kernels in the same order: parallel trials give identical numbers."""
    common = ["seed=1,2", "trainer.max_epochs=2", *TINY]
    parallel, sequential = tmp_path / "joblib", tmp_path / "basic"
    proc = run_cli(tmp_path, "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *common,
                   f"hydra.sweep.dir={parallel}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run_cli(tmp_path, "-m", *common, f"hydra.sweep.dir={sequential}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    par, seq = trials(parallel), trials(sequential)
    assert [overrides_of(t)["seed"] for t in par] == [overrides_of(t)["seed"] for t in seq] == ["1", "2"]
    for p, s in zip(par, seq):
        mp, ms = read_json(p / "metrics.json"), read_json(s / "metrics.json")
        assert mp["test"] == ms["test"] and mp["val"] == ms["val"] and mp["best_epoch"] == ms["best_epoch"]
        assert (p / "csv" / "metrics.csv").read_text() == (s / "csv" / "metrics.csv").read_text()
        assert yaml.safe_load((p / "config.yaml").read_text())["seed"] == int(overrides_of(p)["seed"])
    assert read_json(par[0] / "metrics.json")["test"] != read_json(par[1] / "metrics.json")["test"]
    multirun = yaml.safe_load((parallel / "multirun.yaml").read_text())
    assert multirun["hydra"]["launcher"]["_target_"].endswith("JoblibLauncher")
    assert multirun["hydra"]["launcher"]["n_jobs"] == 2


# ----------------------------------------------------------------------------- 7. TensorBoard HParams


def test_tensorboard_hparams(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    run_dir = tmp_path / "run"
    proc = run_cli(tmp_path, "trainer.max_epochs=1", *TINY_DATA, "callbacks.progress_bar=null", "logger=tensorboard",
                   "seed=7", "optimizer.lr=0.002", f"hydra.run.dir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = read_json(run_dir / "metrics.json")

    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    plugin = {tag: plugin_data_pb2.HParamsPluginData.FromString(content)
              for tag, content in events.PluginTagToContent("hparams").items()}
    experiment = plugin["_hparams_/experiment"].experiment
    session = plugin["_hparams_/session_start_info"].session_start_info
    hparams = session.hparams
    assert hparams["seed"].number_value == 7
    assert hparams["optimizer.lr"].number_value == 0.002
    assert hparams["hidden_size"].number_value == 16
    assert hparams["encoder._target_"].string_value == SASREC
    assert hparams["evaluation.ks"].string_value == "[5, 10, 20]"  # lists are shown as text
    assert {info.name for info in experiment.hparam_infos} == set(hparams)

    expected = {f"hparams/{stage}/{name}" for stage in ("val", "test") for name in metrics[stage]}
    assert len(expected) == 62  # (6 ranking + 4 beyond-accuracy metrics) x 3 cutoffs + unreachable, per stage
    assert {info.name.tag for info in experiment.metric_infos} == expected
    for stage in ("val", "test"):
        for name, value in metrics[stage].items():
            (scalar,) = events.Scalars(f"hparams/{stage}/{name}")
            assert scalar.value == pytest.approx(value, rel=1e-6, abs=1e-7), (stage, name)
    (test_ndcg,) = events.Scalars("hparams/test/ndcg@10")
    assert test_ndcg.value == pytest.approx(metrics["test"]["ndcg@10"], rel=1e-6)


def test_final_hparams_reach_disk_after_lightning_closed_the_writer(tmp_path):
    """Lightning closes the TensorBoard writer after testing; the final HParams write reopens it and must be on
    disk when log_final_metrics returns (an unclosed writer leaves it to a daemon thread the process exit kills)."""
    from types import SimpleNamespace

    from lightning.pytorch.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from recforge.run.loggers import log_final_metrics

    logger = TensorBoardLogger(save_dir=str(tmp_path), name="tensorboard", version="", default_hp_metric=False)
    logger.log_metrics({"train/loss": 1.5}, step=0)
    logger.finalize("success")  # what Lightning does at the end of trainer.test
    cfg = OmegaConf.create({"seed": 3, "objective": "val/ndcg@10", "optimizer": {"lr": 0.01}})
    log_final_metrics(SimpleNamespace(loggers=[logger]), cfg, {"val": {"ndcg@10": 0.25}, "test": {"ndcg@10": 0.125}})
    assert logger._experiment.file_writer is None  # closed: flushed now, not left to the writer's daemon thread

    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    assert set(events.PluginTagToContent("hparams")) == {"_hparams_/experiment", "_hparams_/session_start_info",
                                                         "_hparams_/session_end_info"}
    assert [s.value for s in events.Scalars("hparams/val/ndcg@10")] == [0.25]
    assert [s.value for s in events.Scalars("hparams/test/ndcg@10")] == [0.125]


# --------------------------------------------------------------------------------- 8. composition


def compose_hydra(*overrides: str):
    import recforge.run.sweep  # noqa: F401  (registers the optuna_direction resolver)

    with initialize_config_module("recforge.conf", version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=True)


@pytest.mark.parametrize(("mode", "direction"), [("max", "maximize"), ("min", "minimize")])
def test_optuna_search_composes(mode, direction):
    cfg = compose_hydra("hparams_search=optuna", f"objective_mode={mode}", "seed=7")
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_ == "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    assert sweeper.direction == direction
    assert sweeper.sampler._target_ == "optuna.samplers.TPESampler"
    assert sweeper.sampler.seed == 7  # follows seed
    assert (sweeper.n_trials, sweeper.n_jobs, sweeper.study_name) == (20, 1, "train")
    assert dict(sweeper.params) == {"optimizer.lr": "tag(log, interval(0.0001, 0.01))",
                                    "encoder.dropout": "interval(0.0, 0.5)", "hidden_size": "choice(32, 64, 128)"}
    assert cfg.hydra.mode == RunMode.MULTIRUN
    assert cfg.hydra.callbacks.trial_summary._target_ == "recforge.run.sweep.TrialSummary"
    assert "hparams_search" in cfg.hydra.job.config.override_dirname.exclude_keys


def test_search_space_entry_changes_from_the_command_line():
    # the form documented in conf/hparams_search/optuna.yaml: keys with dots go in a dict merged into the space
    merged = compose_hydra("hparams_search=optuna", 'hydra.sweeper.params={optimizer.lr: "choice(0.001, 0.01)"}')
    assert dict(merged.hydra.sweeper.params) == {"optimizer.lr": "choice(0.001, 0.01)",
                                                 "encoder.dropout": "interval(0.0, 0.5)",
                                                 "hidden_size": "choice(32, 64, 128)"}


@pytest.mark.parametrize(("launcher", "target"), [
    ("joblib", "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"),
    ("submitit_slurm", "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"),
    ("submitit_local", "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"),
])
def test_launchers_compose(launcher, target):
    cfg = compose_hydra(f"hydra/launcher={launcher}")
    assert cfg.hydra.launcher._target_ == target
    assert cfg.hydra.sweeper._target_ == "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
    sweep = OmegaConf.to_container(cfg.hydra.sweep, resolve=False)
    assert sweep["subdir"] == "${hydra.job.num}_${short_dirname:${hydra.job.override_dirname}}"
