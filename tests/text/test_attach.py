"""The text options composed from the configs: they build, get their item texts, train on tiny data and survive
a checkpoint. (The framework calls attach_item_text in build(); until then these tests call it themselves.)"""
from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.utils import get_object
from omegaconf import OmegaConf, open_dict

from recforge.models.decoders import DotProduct
from recforge.models.embedders import HybridEmbedding, ItemTextTable, TextEmbedding
from recforge.models.encoders.content import ContentEncoder
from recforge.models.encoders.sasrec import SASRec
from recforge.models.text_encoder import TextEncoder
from recforge.run.build import build, build_module, build_trainer
from recforge.run.item_text import CACHE_SUBDIR, attach_item_text, text_parts
from recforge.run.validate import config_problems

TINY = [
    "dataset.reader.num_users=120", "dataset.reader.num_items=60", "dataset.reader.max_length=20",
    "dataset.max_len=10", "dataset.batch_size=32", "hidden_size=16",
    "callbacks=none", "logger=none", "+trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
]


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory) -> Path:
    """One embedding cache for the module: MiniLM encodes the tiny catalogue once."""
    return tmp_path_factory.mktemp("text-cache")


@pytest.fixture
def compose(compose_train, text_encoder_option, shared_cache):
    def _compose(*overrides: str, text_encoder: str = "minilm"):
        cfg = compose_train(text_encoder_option(text_encoder), *TINY, *overrides)
        with open_dict(cfg):
            cfg.paths.cache_dir = str(shared_cache)
        return cfg

    return _compose


def targets(node) -> list[str]:
    if isinstance(node, dict):
        return ([node["_target_"]] if "_target_" in node else []) + [t for v in node.values() for t in targets(v)]
    return [t for v in node for t in targets(v)] if isinstance(node, list) else []


def built(cfg):
    """Datamodule and module built as recforge-train builds them, with the item texts attached."""
    L.seed_everything(cfg.seed)
    datamodule, module = build(cfg)
    attach_item_text(module, datamodule, cfg.item_text.template, cfg.item_text.missing, cfg.item_text.attribute_prefix,
                     cfg.paths.cache_dir)
    return datamodule, module


OPTIONS = {
    "item_embedder=text": (TextEmbedding, SASRec, True),
    "item_embedder=hybrid": (HybridEmbedding, SASRec, True),
    "encoder=content": (TextEmbedding, ContentEncoder, False),
}


@pytest.mark.parametrize("text_encoder", ["minilm", "minilm_lora"])
@pytest.mark.parametrize("option", list(OPTIONS))
def test_text_options_compose_validate_and_build(option, text_encoder, compose):
    cfg = compose(option, text_encoder=text_encoder)
    assert config_problems(cfg) == []  # every key is a parameter of its class, every value in range
    for target in targets(OmegaConf.to_container(cfg, resolve=True)):
        assert get_object(target) is not None, target
    datamodule, module = built(cfg)
    embedder_cls, encoder_cls, trainable = OPTIONS[option]
    embedder = module.encoder.item_embedder
    assert type(embedder) is embedder_cls and type(module.encoder) is encoder_cls
    assert isinstance(module.decoder, DotProduct) and module.decoder.item_embedder is embedder  # tied
    assert text_parts(module) == [embedder.text] and embedder.text.ready
    assert embedder.text.fine_tunes is (text_encoder == "minilm_lora")
    assert module.trainable is (trainable or text_encoder == "minilm_lora")
    assert embedder.hidden_size == (384 if option == "encoder=content" else 16)
    module.eval()
    batch = datamodule.test_set.__getitems__(list(range(5)))
    with torch.no_grad():
        scores = module.score(batch["input"])
    assert scores.shape == (5, datamodule.num_items + 1)
    assert torch.isneginf(scores[:, 0]).all() and torch.isfinite(scores[:, 1:]).all()


def test_item_texts_reach_the_table_in_internal_id_order(compose, shared_cache):
    cfg = compose("item_embedder=text", "item_text.template='{category}: {title}'")
    datamodule, module = built(cfg)
    table = module.encoder.item_embedder.text
    frame = datamodule.reader.item_text().set_index("item")
    raw = datamodule.load_sequences().item_ids
    texts = [f"{frame.loc[raw[i], 'category']}: {frame.loc[raw[i], 'title']}" for i in (1, 2, 7)]
    encoder = TextEncoder(max_length=128)
    torch.testing.assert_close(table.table[[1, 2, 7]], encoder.encode(texts, progress=False), atol=1e-5, rtol=1e-4)
    assert len(list((shared_cache / CACHE_SUBDIR).glob("*.npy"))) >= 1


def test_cache_hit_loads_no_model(compose):
    cfg = compose("item_embedder=hybrid")
    built(cfg)  # fills the cache (or hits it)
    datamodule, module = built(cfg)
    table: ItemTextTable = module.encoder.item_embedder.text
    assert table.ready and table.frozen_encoder.model is None  # the weights were never loaded


def test_id_models_read_no_item_text(compose):
    cfg = compose()  # item_embedder=id
    datamodule, module = build(cfg)

    def no_text():
        raise AssertionError("item text read for an id model")

    datamodule.reader.item_text = no_text
    assert attach_item_text(module, datamodule, cache_dir=cfg.paths.cache_dir) == 0


def training_loss(module, datamodule) -> float:
    """The model's loss over every training window, in eval mode with a fixed seed (BERT4Rec masks at random)."""
    module.eval()
    torch.manual_seed(0)
    with torch.no_grad():
        inputs, targets = module.encoder.training_pairs(datamodule.train_set.windows)
        valid = targets > 0
        loss = float(module.loss(module.encoder(inputs)[valid], targets[valid], module.decoder))
    module.train()
    return loss


@pytest.mark.parametrize("option", ["item_embedder=text", "item_embedder=text item_embedder.mlp_hidden=32",
                                    "item_embedder=hybrid", "item_embedder=hybrid fusion=concat",
                                    "item_embedder=hybrid fusion=gate",
                                    "encoder=content encoder.projection=true",
                                    "item_embedder=hybrid encoder=bert4rec", "item_embedder=text encoder=gru4rec"])
def test_text_options_train_on_tiny_data(option, compose, tmp_path):
    cfg = compose(*option.split(), "trainer.max_epochs=3", "optimizer.lr=0.01")
    datamodule, module = built(cfg)
    trainer = build_trainer(cfg)
    table_before = module.encoder.item_embedder.text.table.clone()
    before = training_loss(module, datamodule)
    trainer.fit(module, datamodule=datamodule)
    after = training_loss(module, datamodule)
    assert math.isfinite(after) and after < before - 0.1, (before, after)
    assert torch.equal(module.encoder.item_embedder.text.table, table_before)  # frozen text stays as it was
    metrics = trainer.validate(module, datamodule=datamodule, verbose=False)[0]
    assert 0 < metrics["val/ndcg@10"] <= 1

    # a checkpoint alone restores the model: the text table is in it, no texts or text model needed
    ckpt = tmp_path / "model.ckpt"
    trainer.save_checkpoint(ckpt)
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    assert torch.equal(state["encoder.item_embedder.text.table"], table_before)
    fresh = build_module(cfg, datamodule.num_items)
    fresh.load_state_dict(state)
    assert_same_scores(fresh, module, datamodule)


def test_content_baseline_needs_no_training(compose):
    cfg = compose("encoder=content")
    datamodule, module = built(cfg)
    assert not module.trainable and sum(p.numel() for p in module.parameters()) == 0
    trainer = build_trainer(cfg)
    metrics = trainer.validate(module, datamodule=datamodule, verbose=False)[0]
    assert 0 < metrics["val/ndcg@10"] < 1


def test_lora_fine_tuning_trains_adapters_and_refreshes_the_table(compose, tmp_path):
    cfg = compose("item_embedder=text", "trainer.max_epochs=1", "+trainer.limit_train_batches=2",
                  "+trainer.limit_val_batches=1", "optimizer.lr=0.01", text_encoder="minilm_lora")
    datamodule, module = built(cfg)
    table: ItemTextTable = module.encoder.item_embedder.text
    lora = {n: p.detach().clone() for n, p in table.encoder.named_parameters() if p.requires_grad}
    assert sum(p.numel() for p in lora.values()) == 73_728
    before = table.table.clone()
    trainer = build_trainer(cfg)
    trainer.fit(module, datamodule=datamodule)
    changed = [n for n, p in table.encoder.named_parameters() if p.requires_grad and not torch.equal(p, lora[n])]
    assert len(changed) == 24  # every adapter moved (B in step 1, A from step 2)
    assert not table._stale  # validation re-encoded every item with the tuned encoder
    assert not torch.allclose(table.table[1:-1], before[1:-1])
    torch.testing.assert_close(table.table[1:-1], table.encoder.embed_tokens(table.input_ids[1:-1],
                                                                             table.attention_mask[1:-1]))
    # the checkpoint holds the adapters and the table, not MiniLM's 22.7M frozen weights
    ckpt = tmp_path / "lora.ckpt"
    trainer.save_checkpoint(ckpt)
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    adapters = {k.split(".text.encoder.")[1]: v for k, v in state.items() if ".text.encoder." in k}  # shared: once
    assert len(adapters) == 24 and sum(v.numel() for v in adapters.values()) == 73_728
    assert ckpt.stat().st_size < 5_000_000
    fresh = build_module(cfg, datamodule.num_items)  # no attach: the checkpoint alone
    fresh.load_state_dict(state)
    assert_same_scores(fresh, module, datamodule)


def assert_same_scores(fresh, module, datamodule) -> None:
    """A model rebuilt from a checkpoint scores the first 8 test samples as the trained one does."""
    batch = datamodule.test_set.__getitems__(list(range(8)))
    module.eval()
    fresh.eval()
    with torch.no_grad():
        torch.testing.assert_close(fresh.score(batch["input"]), module.score(batch["input"]))
