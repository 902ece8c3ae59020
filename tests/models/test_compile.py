"""``compile=true``: the torch.compile'd training loss gives the eager loss and gradients (up to float rounding),
a compiled run trains and evaluates like an eager one, checkpoints keep their keys, and the switch composes and is
validated."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig, open_dict

from recforge.errors import RecforgeError
from recforge.run.build import build, compile_loss
from recforge.run.resume import config_changes
from recforge.run.validate import validate_config
from recforge.train import train

TINY = [
    "dataset.reader.num_users=80", "dataset.reader.num_items=40", "dataset.reader.max_length=16",
    "dataset.max_len=8", "dataset.batch_size=32", "hidden_size=16",
    "trainer.max_epochs=2", "callbacks.progress_bar=null", "callbacks.early_stopping=null", "logger=csv",
]
# inductor fuses the scores, log-softmax and their backward and sums in another order: float32 rounding
# differences of ~1e-7 per step, which training carries into later steps
TOL = {"rtol": 1e-4, "atol": 1e-5}


def in_dir(cfg: DictConfig, out: Path) -> DictConfig:
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
    return cfg


def epoch_losses(run_dir: Path) -> list[float]:
    with open(run_dir / "csv" / "metrics.csv", newline="") as fh:
        return [float(r["train/loss"]) for r in csv.DictReader(fh) if r.get("train/loss")]


def test_compile_key_composes_and_is_validated(compose_train):
    assert compose_train().compile is False  # off by default
    cfg = compose_train("compile=true")
    assert cfg.compile is True
    validate_config(cfg)
    with pytest.raises(RecforgeError, match=r"^compile='yes' must be true or false, not a string\.$"):
        validate_config(compose_train("compile=yes"))


def test_resume_accepts_either_compile_value(compose_train):
    """A run saved before the key existed (or with the other value) resumes: compile changes speed, not results."""
    saved = compose_train()
    with open_dict(saved):
        del saved["compile"]
    assert config_changes(saved, compose_train("compile=true")) == []
    assert config_changes(compose_train("compile=false"), compose_train("compile=true")) == []
    assert config_changes(saved, compose_train("seed=1")) == ["seed"]  # other keys are still compared


@pytest.mark.slow  # compiles forward and backward (seconds to a minute on a cold inductor cache)
def test_compiled_loss_gives_the_eager_loss_and_gradients(compose_train):
    torch.manual_seed(0)
    _, module = build(compose_train(*TINY))
    keys = list(module.state_dict())
    table = module.decoder.item_embedder.table.weight  # (N+2, H), tied to the encoder's input
    results = {}
    for compiled in (False, True):
        if compiled:
            compile_loss(module)
        results[compiled] = []
        for rows in (37, 64):  # a different number of target positions each call: dynamic shapes, no failure
            torch.manual_seed(rows)
            hidden = torch.randn(rows, 16, requires_grad=True)  # (M, H)
            targets = torch.randint(1, module.decoder.num_items + 1, (rows,))  # (M,)
            table.grad = None
            loss = module.loss(hidden, targets, module.decoder)
            loss.backward()
            results[compiled].append((loss.detach(), hidden.grad, table.grad.clone()))
    assert list(module.state_dict()) == keys  # checkpoints stay loadable by eager modules (recforge-eval, serving)
    for (loss, grad, table_grad), (eager_loss, eager_grad, eager_table_grad) in zip(results[True], results[False]):
        torch.testing.assert_close(loss, eager_loss, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(grad, eager_grad, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(table_grad, eager_table_grad, rtol=1e-5, atol=1e-7)


@pytest.mark.slow  # two training runs, one of them compiling
def test_compiled_training_matches_eager(compose_train, tmp_path):
    """Same seed, data and weights (dropout on: the encoder stays eager, so it draws the same random numbers):
    per-epoch training losses and every validation and test metric agree."""
    runs = {}
    for flag in ("false", "true"):
        cfg = in_dir(compose_train(*TINY, f"compile={flag}"), tmp_path / f"compile-{flag}")
        runs[flag] = (train(cfg), Path(cfg.paths.output_dir))
    (eager, eager_dir), (compiled, compiled_dir) = runs["false"], runs["true"]

    eager_losses, compiled_losses = epoch_losses(eager_dir), epoch_losses(compiled_dir)
    assert len(eager_losses) == 2
    torch.testing.assert_close(torch.tensor(compiled_losses), torch.tensor(eager_losses), **TOL)
    # ranks are integers: the scores differ by rounding only, which changes no rank unless two items are within
    # rounding of each other (none are here), so the metrics agree to float64 precision
    for stage in ("val", "test"):
        assert compiled[stage].keys() == eager[stage].keys()
        torch.testing.assert_close(torch.tensor(list(compiled[stage].values()), dtype=torch.float64),
                                   torch.tensor(list(eager[stage].values()), dtype=torch.float64), rtol=0, atol=1e-9)
    assert json.loads((compiled_dir / "metrics.json").read_text())["test"] == compiled["test"]
    ckpt = torch.load(compiled["best_checkpoint"], map_location="cpu", weights_only=True)
    eager_ckpt = torch.load(eager["best_checkpoint"], map_location="cpu", weights_only=True)
    assert list(ckpt["state_dict"]) == list(eager_ckpt["state_dict"])
