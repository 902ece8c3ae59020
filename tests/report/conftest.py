"""Hand-made run directories with chosen numbers, written exactly as recforge-train lays them out."""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

ENCODERS = {
    "SASRec": "recforge.models.encoders.sasrec.SASRec",
    "GRU4Rec": "recforge.models.encoders.gru4rec.GRU4Rec",
    "Popularity": "recforge.models.encoders.popularity.ConstantEncoder",
}
# model -> seed -> (test/hr@10, test/ndcg@10); hand-computed summaries are in the tests
NUMBERS = {
    "SASRec": {1: (0.30, 0.15), 2: (0.32, 0.16), 3: (0.34, 0.20)},
    "GRU4Rec": {1: (0.20, 0.10), 2: (0.21, 0.17), 3: (0.25, 0.12)},
    "Popularity": {1: (0.25, 0.12)},
}
FAILED_ERROR = "CUDA out of memory while allocating 2.00 GiB"

MakeRun = Callable[..., Path]


@pytest.fixture
def make_run() -> MakeRun:
    def _make(run: Path, model: str = "SASRec", seed: int = 1, metrics: dict[str, Any] | None = None,
              failed: str | None = None, overrides: list[str] | None = None, **config: Any) -> Path:
        run.mkdir(parents=True)
        cfg: dict[str, Any] = {
            "seed": seed, "hidden_size": 64,
            "dataset": {"name": config.pop("dataset", "synthetic"), "root": str(run.parent),
                        "reader": {"num_users": 100}},
            "encoder": {"_target_": ENCODERS[model], **({} if model == "Popularity" else {"num_layers": 2})},
            "optimizer": {"_target_": "torch.optim.Adam", "lr": config.pop("lr", 0.001)},
            "evaluation": {"ks": [5, 10, 20]},
            "trainer": {"max_epochs": 10, "default_root_dir": str(run)},
            "paths": {"output_dir": str(run), "cache_dir": "/tmp/cache"},
            "callbacks": {"model_checkpoint": {"dirpath": str(run / "checkpoints")}},
            **config,
        }
        (run / "config.yaml").write_text(yaml.safe_dump(cfg))
        (run / ".hydra").mkdir()
        (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides or [f"seed={seed}"]))
        if failed is not None:
            (run / "failed.json").write_text(json.dumps(
                {"status": "failed", "error": failed, "type": "OutOfMemoryError", "traceback": "Traceback ..."}))
        else:
            (run / "metrics.json").write_text(json.dumps(metrics or {}))
        return run

    return _make


def result(hr: float, ndcg: float, epochs: int = 10) -> dict[str, Any]:
    return {"test": {"hr@10": hr, "ndcg@10": ndcg}, "val": {"ndcg@10": ndcg + 0.01}, "best_epoch": epochs - 2,
            "epochs": epochs, "fit_seconds": 100.0 * hr, "test_seconds": 0.5, "best_checkpoint": None,
            "dataset": {"users": 100}}


@pytest.fixture
def hand_runs(tmp_path: Path, make_run: MakeRun) -> Path:
    """A multirun-like folder: SASRec and GRU4Rec x seeds 1-3, Popularity seed 1, one failed GRU4Rec run."""
    sweep = tmp_path / "sweep"
    i = 0
    for model, seeds in NUMBERS.items():
        for seed, (hr, ndcg) in seeds.items():
            make_run(sweep / f"{i}_encoder={model.lower()},seed={seed}", model, seed, result(hr, ndcg),
                     overrides=[f"encoder={model.lower()}", f"seed={seed}"])
            i += 1
    make_run(sweep / f"{i}_encoder=gru4rec,seed=4", "GRU4Rec", 4, failed=FAILED_ERROR,
             overrides=["encoder=gru4rec", "seed=4"])
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    return sweep


@pytest.fixture
def run_result() -> Callable[..., dict[str, Any]]:
    """metrics.json content from (hr@10, ndcg@10)."""
    return result
