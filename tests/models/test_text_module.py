"""TextPointwiseModule: MiniLM (LoRA, full or frozen) + a linear head trains on real reviews, metrics are right."""
from __future__ import annotations

import math
import os
from functools import partial
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    log_loss,
    mean_absolute_error,
    mean_squared_error,
    roc_auc_score,
)

from recforge.data.ratings import RandomHoldout
from recforge.data.readers import ClothingReviews
from recforge.data.reviews import ReviewDataModule
from recforge.errors import RecforgeError
from recforge.evaluation.pointwise import IntentMetrics, ValueMetrics
from recforge.models.text_encoder import LoraSettings, TextEncoder
from recforge.models.text_module import TextPointwiseModule

PROJECT = Path(__file__).resolve().parents[2]
REAL = Path(os.environ.get("RECFORGE_DATA", PROJECT.parent / "shared" / "data")) / "clothing-reviews" / "reviews.csv"


@pytest.fixture(scope="module")
def reviews_csv(tmp_path_factory) -> Path:
    """64 real reviews with text, half of them recommended (so AUC is informative)."""
    if not REAL.exists():
        pytest.skip(f"{REAL} not found")
    df = pd.read_csv(REAL)
    df = df[df["Review Text"].notna()]
    rows = pd.concat([df[df["Recommended IND"] == 1].head(32), df[df["Recommended IND"] == 0].head(32)])
    path = tmp_path_factory.mktemp("reviews") / "reviews.csv"
    rows.sample(frac=1.0, random_state=0).to_csv(path, index=False)
    return path


def datamodule(path: Path, label: str, tokenizer=None) -> ReviewDataModule:
    dm = ReviewDataModule("c", ClothingReviews(str(path)), label, batch_size=8, eval_batch_size=16, max_tokens=32,
                          split=RandomHoldout(test_fraction=0.25, val_fraction=0.1, seed=0))
    dm.setup()
    if tokenizer is not None:
        dm.use_tokenizer(tokenizer)
    return dm


def trainer(epochs: int, **kwargs) -> L.Trainer:
    return L.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, num_sanity_val_steps=0, accelerator="cpu", **kwargs)


@torch.no_grad()
def outputs_of(module: TextPointwiseModule, dm: ReviewDataModule, part: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw outputs and labels of a whole part, in eval mode. (S,), (S,)"""
    module.eval()
    samples = dm.part(part)
    batch = samples.__getitems__(list(range(len(samples))))
    return module(batch).double(), batch["label"].double()


def mean_loss(module: TextPointwiseModule, dm: ReviewDataModule) -> float:
    outputs, labels = outputs_of(module, dm, "train")
    module.train()
    return float(module.loss(outputs.float(), labels.float()))


def test_lora_intent_trains_and_its_metrics_match_sklearn(reviews_csv):
    torch.manual_seed(0)
    encoder = TextEncoder(max_length=32, lora=LoraSettings(r=4, alpha=8, dropout=0.0))
    module = TextPointwiseModule(encoder, torch.nn.BCEWithLogitsLoss(), IntentMetrics(),
                                 partial(torch.optim.AdamW, lr=2e-3), head_lr=2e-2, dropout=0.0)
    dm = datamodule(reviews_csv, "Recommended IND", encoder.tokenizer)
    trained = {n for n, p in module.named_parameters() if p.requires_grad}
    assert trained and all("lora_" in n or n.startswith("decoder.") for n in trained)
    before = mean_loss(module, dm)
    trainer(4).fit(module, datamodule=dm)
    after = mean_loss(module, dm)
    assert after < before - 0.05, (before, after)
    trainer(1).test(module, datamodule=dm)
    outputs, labels = outputs_of(module, dm, "test")
    probs, y = torch.sigmoid(outputs).numpy(), labels.numpy().astype(int)
    expected = {"auc": roc_auc_score(y, probs), "logloss": log_loss(y, probs, labels=[0, 1]),
                "accuracy": accuracy_score(y, probs > 0.5), "f1": f1_score(y, probs > 0.5, zero_division=0)}
    for name, value in expected.items():
        assert module.test_metrics[name] == pytest.approx(value, abs=1e-5), name
    assert module.evaluated_samples["test"] == 16 == len(set(dm.split.test.tolist()))


def test_frozen_value_trains_the_head_on_cached_embeddings(reviews_csv, tmp_path):
    torch.manual_seed(0)
    module = TextPointwiseModule(TextEncoder(max_length=32), torch.nn.MSELoss(), ValueMetrics(clip=(1, 5)),
                                 partial(torch.optim.Adam, lr=3e-2), fine_tune=False, cache_dir=str(tmp_path / "c"))
    assert [n for n, p in module.named_parameters() if p.requires_grad] == ["decoder.linear.weight",
                                                                            "decoder.linear.bias"]
    dm = datamodule(reviews_csv, "Rating")  # no tokenizer: batches of rows and labels
    # setup precomputes every text's embedding (cached) and starts the head's bias at the training mean
    trainer(1, limit_train_batches=0, limit_val_batches=0).fit(module, datamodule=dm)
    assert module.embeddings.shape == (64, 384)
    assert module.decoder.linear.bias.item() == pytest.approx(dm.train_mean, rel=1e-6)
    assert len(list((tmp_path / "c").glob("*.npy"))) == 1
    torch.testing.assert_close(module.embeddings[:2], module.encoder.encode(dm.texts[:2], progress=False))
    before = mean_loss(module, dm)
    trainer(30).fit(module, datamodule=dm)
    after = mean_loss(module, dm)
    assert after < 0.8 * before, (before, after)
    trainer(1).test(module, datamodule=dm)
    outputs, labels = outputs_of(module, dm, "test")
    clipped = outputs.clamp(1, 5).numpy()
    assert module.test_metrics["mae"] == pytest.approx(mean_absolute_error(labels, clipped), abs=1e-6)
    assert module.test_metrics["rmse"] == pytest.approx(math.sqrt(mean_squared_error(labels, clipped)), abs=1e-6)
    # a frozen run's checkpoint holds the head only; a fresh module restores it
    checkpoint = {"state_dict": module.state_dict(), "epoch": 3}
    module.last_validation = {"rmse": 0.5}
    module.on_save_checkpoint(checkpoint)
    assert sorted(checkpoint["state_dict"]) == ["decoder.linear.bias", "decoder.linear.weight"]
    fresh = TextPointwiseModule(TextEncoder(max_length=32), torch.nn.MSELoss(), ValueMetrics(clip=(1, 5)),
                                partial(torch.optim.Adam, lr=3e-2), fine_tune=False, cache_dir=str(tmp_path / "c"))
    fresh.load_state_dict(checkpoint["state_dict"], strict=fresh.strict_loading)
    fresh.on_load_checkpoint(checkpoint)
    assert fresh.loaded_validation == {"rmse": 0.5} and fresh.loaded_epoch == 3
    fresh.precompute(dm.texts, progress=False)  # a cache hit
    torch.testing.assert_close(outputs_of(fresh, dm, "test")[0], outputs)


def test_full_fine_tuning_trains_every_encoder_weight_with_its_own_learning_rate(reviews_csv):
    torch.manual_seed(0)
    module = TextPointwiseModule(TextEncoder(max_length=32), torch.nn.BCEWithLogitsLoss(), IntentMetrics(),
                                 partial(torch.optim.AdamW, lr=1e-4), head_lr=1e-2)
    assert all(p.requires_grad for p in module.encoder.parameters())
    optimizer = module.configure_optimizers()
    assert [g["lr"] for g in optimizer.param_groups] == [1e-4, 1e-2]
    assert sum(p.numel() for p in optimizer.param_groups[0]["params"]) == sum(
        p.numel() for p in module.encoder.parameters())
    dm = datamodule(reviews_csv, "Recommended IND", module.encoder.tokenizer)
    batch = dm.part("train").__getitems__(list(range(8)))
    query = module.encoder.model.encoder.layer[0].attention.self.query.weight
    before = query.detach().clone()
    module.train()
    module.loss(module(batch), batch["label"]).backward()
    optimizer.step()
    assert not torch.equal(before, query.detach())
    assert module.strict_loading and "encoder.model.embeddings.word_embeddings.weight" in module.state_dict()


def test_a_frozen_encoder_with_lora_adapters_is_refused():
    with pytest.raises(RecforgeError, match="task.fine_tune=false freezes the text encoder"):
        TextPointwiseModule(TextEncoder(lora=LoraSettings()), torch.nn.MSELoss(), ValueMetrics(),
                            partial(torch.optim.Adam), fine_tune=False)


def test_frozen_forward_before_precompute_is_a_clear_bug():
    module = TextPointwiseModule(TextEncoder(), torch.nn.MSELoss(), ValueMetrics(), partial(torch.optim.Adam),
                                 fine_tune=False)
    with pytest.raises(RuntimeError, match="call precompute"):
        module({"index": torch.tensor([0]), "label": torch.tensor([1.0])})
    assert np.isfinite(float(module.decoder(torch.zeros(1, 384))))
