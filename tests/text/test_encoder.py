"""TextEncoder on the packaged all-MiniLM-L6-v2, offline: known similarities, pooling, LoRA, errors."""
from __future__ import annotations

import hashlib

import pytest
import torch
from torch import nn

from recforge.errors import RecforgeError
from recforge.models.text_encoder import (
    LoraSettings,
    TextEncoder,
    mean_pool,
    model_files_sha256,
    packaged_model_dir,
)

SENTENCES = ["A man is eating food.", "A man is eating a piece of bread.", "The new movie is awesome.",
             "A man is riding a horse."]


def test_packaged_model_is_found():
    path = packaged_model_dir()
    assert (path / "model.safetensors").stat().st_size > 80_000_000
    assert (path / "config.json").is_file() and (path / "tokenizer.json").is_file()


def test_minilm_similarities_offline(minilm):
    emb = minilm.encode(SENTENCES, progress=False)  # (4, 384)
    assert emb.shape == (4, 384) and emb.dtype == torch.float32
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(4))
    cos = emb @ emb.T
    # sentence-transformers all-MiniLM-L6-v2 values for these pairs: 0.755, -0.046 and 0.247
    assert cos[0, 1].item() == pytest.approx(0.755, abs=0.01)
    assert cos[0, 2].item() == pytest.approx(-0.046, abs=0.01)
    assert cos[0, 3].item() == pytest.approx(0.247, abs=0.01)
    assert cos[0, 1] > 0.7 and cos[0, 2] < 0.1


def test_minilm_matches_sentence_transformers(minilm):
    st = pytest.importorskip("sentence_transformers")
    reference = torch.as_tensor(st.SentenceTransformer(str(packaged_model_dir()), device="cpu").encode(SENTENCES))
    torch.testing.assert_close(minilm.encode(SENTENCES, progress=False), reference, atol=1e-5, rtol=1e-4)


def test_batching_and_length_sorting_keep_the_order(minilm):
    texts = ["short", "a considerably longer text about a red novel and a quiet album", "mid length text", ""]
    together = minilm.encode(texts, batch_size=3, progress=False)
    alone = torch.cat([minilm.encode([t], progress=False) for t in texts])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-4)
    assert minilm.encode([], progress=False).shape == (0, 384)


def test_mean_pool_ignores_padding():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]], [[5.0, 6.0], [7.0, 8.0], [9.0, 10.0]]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    torch.testing.assert_close(mean_pool(hidden, mask), torch.tensor([[2.0, 3.0], [7.0, 8.0]]))


def test_identity_and_dim_without_loading_weights():
    encoder = TextEncoder(max_length=32)
    assert encoder.dim == 384 and encoder.model is None  # read from config.json only
    identity = encoder.identity()
    assert identity == {"files_sha256": model_files_sha256(packaged_model_dir()), "pooling": "mean",
                        "normalize": True, "max_length": 32}
    digest = hashlib.sha256()
    for name in ("config.json", "model.safetensors", "special_tokens_map.json", "tokenizer.json",
                 "tokenizer_config.json", "vocab.txt"):  # sorted by path
        digest.update(name.encode())
        digest.update((packaged_model_dir() / name).read_bytes())
    assert identity["files_sha256"] == digest.hexdigest()
    assert TextEncoder(model_name_or_path="org/model", revision="v1").identity()["model"] == "org/model"


def test_unloadable_model_is_one_user_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RecforgeError, match=r"model_name_or_path='no-such-org/no-such-model' could not be loaded.*"
                                            r"local model directory, or enable network access"):
        TextEncoder("no-such-org/no-such-model").dim
    with pytest.raises(RecforgeError, match="could not be loaded"):
        TextEncoder(str(tmp_path)).load()  # an empty local directory


@pytest.mark.parametrize("kwargs", [{"pooling": "max"}, {"max_length": 1}, {"lora": {"r": 0}}])
def test_bad_settings_are_user_errors(kwargs):
    with pytest.raises(RecforgeError, match="text_encoder"):
        TextEncoder(**kwargs)


def test_parent_initialisation_never_reaches_pretrained_weights(minilm):
    before = minilm.model.embeddings.word_embeddings.weight.clone()

    def reinit(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.zeros_(module.weight)

    nn.Sequential(minilm).apply(reinit)
    assert torch.equal(minilm.model.embeddings.word_embeddings.weight, before)


# ------------------------------------------------------------------------------------------- LoRA


@pytest.fixture(scope="module")
def lora_encoder() -> TextEncoder:
    torch.manual_seed(0)
    return TextEncoder(max_length=32, lora=LoraSettings(r=8, alpha=16, dropout=0.0, target_modules=["query", "value"]))


def test_lora_trains_only_adapters(lora_encoder):
    trainable = {n: p.numel() for n, p in lora_encoder.named_parameters() if p.requires_grad}
    # 6 layers x {query, value} x (A: 8 x 384 + B: 384 x 8)
    assert len(trainable) == 24 and sum(trainable.values()) == 6 * 2 * (8 * 384 + 384 * 8) == 73_728
    assert all(".lora_A." in n or ".lora_B." in n for n in trainable)
    frozen = sum(p.numel() for p in lora_encoder.parameters() if not p.requires_grad)
    assert frozen == 22_713_216  # all-MiniLM-L6-v2's own weights
    # checkpoints hold the adapters only
    assert sorted(lora_encoder.state_dict()) == sorted(trainable)


def test_lora_starts_as_the_base_model(lora_encoder, minilm):
    torch.testing.assert_close(lora_encoder.encode(SENTENCES, progress=False), minilm.encode(SENTENCES, progress=False))


def test_lora_training_step_changes_adapters_only(lora_encoder):
    settings = {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": ["query", "value"]}
    encoder = TextEncoder(max_length=32, lora=settings)
    encoder.load_state_dict(lora_encoder.state_dict())
    before = {n: p.detach().clone() for n, p in encoder.named_parameters()}
    optimizer = torch.optim.Adam([p for p in encoder.parameters() if p.requires_grad], lr=1e-2)
    tokens = encoder.tokenize(SENTENCES)
    encoder.train()
    for step in range(2):
        emb = encoder(**tokens)  # (4, 384)
        loss = -(emb[0] * emb[2]).sum()  # pull two unrelated sentences together
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        changed = {n for n, p in encoder.named_parameters() if not torch.equal(p, before[n])}
        if step == 0:  # B starts at zero, so A gets no gradient in the first step
            assert changed == {n for n in before if ".lora_B." in n}
    assert changed == {n for n, p in encoder.named_parameters() if p.requires_grad}  # all 24 adapters
    after = encoder.encode(SENTENCES, progress=False)
    assert (after[0] @ after[2]).item() > -0.046 + 0.05  # the loss did its job

    # a fresh LoRA encoder loading that state (adapters only) gives the same embeddings
    restored = TextEncoder(max_length=32, lora={"r": 8, "alpha": 16, "dropout": 0.0})
    assert restored.load_state_dict(encoder.state_dict()).missing_keys == []
    torch.testing.assert_close(restored.encode(SENTENCES, progress=False), after)


def test_lora_unknown_target_module_is_a_user_error():
    with pytest.raises(RecforgeError, match=r"target_modules=\['qkv'\] match no layer.*query"):
        TextEncoder(lora={"target_modules": ["qkv"]})
