"""task=multi end to end on generated ratings: one SASRec, three heads; every head's metrics logged under its own
name with values in range, the losses fall, and the objective may name any head's metric."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import open_dict

from recforge.errors import RecforgeError
from recforge.eval import evaluate
from recforge.models.multi_module import MultiTaskModule
from recforge.models.weighting import FixedWeights, UncertaintyWeights
from recforge.run.build import build
from recforge.run.validate import validate_config
from recforge.train import train

SMALL = ["hidden_size=16", "dataset.max_len=8", "encoder.max_len=8", "dataset.batch_size=16",
         "callbacks.progress_bar=null", "logger=csv",
         "callbacks.early_stopping=null"]


def generated_ratings(path: Path, users: int = 60, items: int = 30, length: int = 14, seed: int = 0) -> Path:
    """Users walk the item ring (item k is followed by k + 1 or k + 2) from random starts; odd items are rated
    5 or 4, even ones 1 or 2: a learnable next item, intent and value. Written as a CSV (user, item, time, rating)."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(users):
        item = int(rng.integers(items))
        for t in range(length):
            rating = int(rng.choice([4, 5])) if item % 2 else int(rng.choice([1, 2]))
            rows.append((f"u{u}", f"i{item}", t, rating))
            item = (item + int(rng.integers(1, 3))) % items
    pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "rating"]).to_csv(path, index=False)
    return path


def multi_cfg(compose_train, tmp_path: Path, *overrides: str):
    cfg = compose_train("experiment=ml100k_multi", *SMALL, *overrides)
    with open_dict(cfg):  # the generated table through the generic reader, ratings in column "rating"
        cfg.dataset.reader = {"_target_": "recforge.data.readers.InteractionTable",
                              "path": str(generated_ratings(tmp_path / "ratings.csv")), "rating_col": "rating"}
    return cfg


def epoch_rows(run_dir: Path) -> list[dict[str, str]]:
    with open(next((run_dir / "csv").rglob("metrics.csv")), newline="") as fh:
        return list(csv.DictReader(fh))


def column(rows: list[dict[str, str]], name: str) -> list[float]:
    return [float(r[name]) for r in rows if r.get(name)]


@pytest.mark.parametrize("weighting", ["fixed", "uncertainty"])
def test_multi_task_trains_and_logs_every_head(weighting, compose_train, tmp_path):
    epochs = 5
    cfg = multi_cfg(compose_train, tmp_path, f"weighting={weighting}", f"trainer.max_epochs={epochs}",
                    "objective=val/intent/auc", "objective_mode=max")
    out = Path(cfg.paths.output_dir)
    metrics = train(cfg)
    rows = epoch_rows(out)
    for task in ("next_item", "intent", "value"):  # every task's training loss falls
        losses = column(rows, f"train/{task}/loss")
        assert len(losses) == epochs and all(math.isfinite(v) for v in losses)
        assert losses[-1] < losses[0], (task, losses)
    weights = {task: column(rows, f"train/{task}/weight") for task in ("next_item", "intent", "value")}
    if weighting == "fixed":
        assert all(w == [1.0] * epochs for w in weights.values())
    else:  # learned: each weight moved away from exp(-0) = 1
        assert all(w[-1] != pytest.approx(1.0, abs=1e-3) for w in weights.values()), weights
    written = json.loads((out / "metrics.json").read_text())
    for stage in ("val", "test"):
        got = written[stage]
        assert 0 <= got["next_item/ndcg@10"] <= got["next_item/hr@10"] <= 1
        assert 0 <= got["intent/auc"] <= 1 and 0 <= got["intent/logloss"] and 0 <= got["intent/f1"] <= 1
        assert 0 < got["value/rmse"] <= 4 and got["value/mae"] <= got["value/rmse"]  # clipped to [1, 5]
        assert got["value/mse"] == pytest.approx(got["value/rmse"] ** 2)
    # the three heads learnt the generated rules: the next item is one of two, intent = odd item
    assert written["test"]["next_item/hr@10"] > 10 / 30 and written["test"]["intent/auc"] > 0.6
    # the checkpoint follows the objective (val/intent/auc): the tested epoch has the best one
    val_auc = column(rows, "val/intent/auc")
    assert written["val"]["intent/auc"] == pytest.approx(max(val_auc), rel=1e-6)
    assert written["test"] == pytest.approx(metrics["test"], rel=1e-12)
    assert set(written["dataset"]) >= {"next_item_held_out", "train_windows", "mean_train_intent"}
    if weighting == "fixed":  # recforge-eval re-tests the best checkpoint to the same numbers
        again = evaluate(out, "best", "test", [], tmp_path / "eval")
        assert again == pytest.approx(written["test"], rel=1e-9)


def test_multi_module_is_built_from_the_config(compose_train, tmp_path):
    cfg = multi_cfg(compose_train, tmp_path, "weighting=uncertainty")
    dm, module = build(cfg)
    assert isinstance(module, MultiTaskModule) and isinstance(module.weighting, UncertaintyWeights)
    embedder = module.encoder.item_embedder
    assert module.decoder.item_embedder is embedder  # one item table for every head
    assert all(task.head.item_embedder is embedder for task in module.heads.values())
    assert {name: task.label for name, task in module.heads.items()} == {"intent": "intent", "value": "rating"}
    assert module.heads["value"].head.user_vectors.num_embeddings == dm.num_users == 60
    assert any(p is module.weighting.log_vars for p in module.parameters())  # learned with the model
    fixed = build(multi_cfg(compose_train, tmp_path, "task.weighting.weights.value=0"))[1]
    assert isinstance(fixed.weighting, FixedWeights) and not fixed.weighting.trains("value")


def test_objective_names_every_head_metric(compose_train, tmp_path):
    for objective in ("val/next_item/ndcg@10", "val/intent/auc", "val/value/rmse", "val/intent/logloss"):
        validate_config(multi_cfg(compose_train, tmp_path, f"objective={objective}"))
    with pytest.raises(RecforgeError, match=r"objective=val/rmse is not a computed metric .*val/value/rmse"):
        validate_config(multi_cfg(compose_train, tmp_path, "objective=val/rmse"))
    with pytest.raises(RecforgeError, match="task=multi reads a multi-task rating dataset"):
        validate_config(compose_train("task=multi"))


def test_single_task_baseline_trains_only_its_head(compose_train, tmp_path):
    """A weight of 0 switches a head's training off: its parameters get no gradient, the others train."""
    cfg = multi_cfg(compose_train, tmp_path, "task.weighting.weights.next_item=0", "task.weighting.weights.intent=0")
    dm, module = build(cfg)
    batch = next(iter(dm.train_dataloader()))
    module.eval()  # no dropout: the step's loss is exactly the value head's MSE
    loss = module.training_step(batch, 0)
    loss.backward()
    value, intent = module.heads["value"].head, module.heads["intent"].head
    assert value.user_vectors.weight.grad is not None and intent.user_vectors.weight.grad is None
    assert module.decoder.item_embedder.table.weight.grad is not None  # the shared table, through the head


def test_pointwise_heads_read_the_state_before_each_target(compose_train, tmp_path):
    """The training step scores every window target for every head from one encoder pass: the value head's loss is
    the MSE of head(state at t, user, item at t + 1) against the rating of item t + 1 (and the intent head's BCE
    alike), paired here position by position."""
    dm, module = build(multi_cfg(compose_train, tmp_path))
    batch = next(iter(dm.train_dataloader()))
    module.eval()
    with torch.no_grad():
        losses = module.training_losses(batch)
        items, rating, users = batch["items"], batch["rating"], batch["user"]  # (B, W), (B, W), (B,)
        hidden = module.encoder(items[:, :-1])  # (B, W - 1, H)
        squared, logs, count = 0.0, 0.0, 0
        for b in range(items.shape[0]):
            for t in range(items.shape[1] - 1):
                if items[b, t] == 0:  # left padding: no state, no target
                    continue
                state = hidden[b, t][None]  # (1, H): it has read positions 0..t only (causal)
                target, user = items[b, t + 1 : t + 2], users[b : b + 1]
                value = module.heads["value"].head(state, user, target)  # (1,)
                logit = module.heads["intent"].head(state, user, target)
                intent = float(rating[b, t + 1] >= 4)
                squared += float((value - rating[b, t + 1]) ** 2)
                logs += float(torch.nn.functional.binary_cross_entropy_with_logits(logit, torch.tensor([intent])))
                count += 1
    assert count == int((items[:, :-1] > 0).sum()) > items.shape[0]
    assert float(losses["value"]) == pytest.approx(squared / count, rel=1e-5)
    assert float(losses["intent"]) == pytest.approx(logs / count, rel=1e-5)
    # rating and intent sit at the same positions as the items (0 at padding)
    assert torch.equal(batch["rating"] > 0, items > 0) and torch.equal(batch["intent"], (rating >= 4).float())


def test_multi_refuses_an_encoder_that_reads_later_positions(compose_train, tmp_path):
    with pytest.raises(RecforgeError, match="task=multi needs a next-item encoder .* not BERT4Rec"):
        validate_config(multi_cfg(compose_train, tmp_path, "encoder=bert4rec"))
    validate_config(compose_train("task=multi", "dataset=ml-100k-multi", "encoder=gru4rec"))  # causal: accepted
