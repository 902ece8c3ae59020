"""Text and hybrid item embedders, the item text table (frozen and fine-tuned) and the content-based encoder."""
from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf, open_dict
from torch import Tensor, nn

import recforge
from recforge.errors import RecforgeError
from recforge.models.decoders import DotProduct
from recforge.models.embedders import (
    ConcatFusion,
    GateFusion,
    HybridEmbedding,
    IdEmbedding,
    ItemTextTable,
    SumFusion,
    TextEmbedding,
    UsesItemText,
)
from recforge.models.encoders.content import ContentEncoder, causal_mean
from recforge.models.encoders.sasrec import SASRec
from recforge.run.build import build, build_trainer
from recforge.run.item_text import attach_item_text

TEXT = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 2.0]])  # items 1..3, D = 3
ITEMS = torch.tensor([[0, 1, 2, 3, 4]])  # padding, the three items, [MASK] (= N + 1 = 4)


def set_linear(layer: nn.Linear, weight: list[list[float]], bias: list[float] | None = None) -> None:
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight))
        if bias is not None:
            layer.bias.copy_(torch.tensor(bias))


def hand_id_table(emb: IdEmbedding) -> None:
    with torch.no_grad():  # rows: padding, items 1..3, [MASK]
        emb.table.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 0.0], [0.0, 3.0], [9.0, 9.0]]))


# ------------------------------------------------------------------------------------------- TextEmbedding


def test_text_embedding_projects_text_and_keeps_padding_zero():
    emb = TextEmbedding(num_items=3, hidden_size=2, text_dim=3)
    emb.text.attach_text_embeddings(TEXT)
    set_linear(emb.project, [[1, 0, 1], [0, 1, 1]], [0.5, -0.5])
    with torch.no_grad():
        emb.mask_vector.copy_(torch.tensor([7.0, 8.0]))
    assert emb.mask_token == 4 and emb.num_items == 3 and emb.hidden_size == 2
    # W t + b: [1.5, -0.5], [0.5, 0.5], [3 + 0.5, 3 - 0.5]; padding 0; [MASK] the learned vector
    expected = torch.tensor([[[0.0, 0.0], [1.5, -0.5], [0.5, 0.5], [3.5, 2.5], [7.0, 8.0]]])
    torch.testing.assert_close(emb(ITEMS), expected)
    torch.testing.assert_close(emb.output_weights(), expected[0, :4])
    assert emb.text.table.shape == (5, 3) and emb.text.table[[0, 4]].abs().sum() == 0


def test_text_embedding_without_projection_is_the_text_and_has_no_parameters():
    emb = TextEmbedding(num_items=3, hidden_size=3, text_dim=3, projection=False)
    emb.text.attach_text_embeddings(TEXT)
    assert list(emb.parameters()) == []
    torch.testing.assert_close(emb(ITEMS)[0], torch.cat([torch.zeros(1, 3), TEXT, torch.zeros(1, 3)]))
    with pytest.raises(RecforgeError, match=r"hidden_size=2 must equal the text embedding size 3"):
        TextEmbedding(num_items=3, hidden_size=2, text_dim=3, projection=False)


def test_text_embedding_mlp_shapes_and_gradients():
    torch.manual_seed(0)
    emb = TextEmbedding(num_items=3, hidden_size=4, text_dim=3, mlp_hidden=5)
    emb.text.attach_text_embeddings(TEXT)
    assert [tuple(p.shape) for p in emb.project.parameters()] == [(5, 3), (5,), (4, 5), (4,)]
    out = emb(torch.tensor([[1, 0], [4, 3]]))
    assert out.shape == (2, 2, 4) and out[0, 1].abs().sum() == 0
    emb.train()
    emb.output_weights().sum().backward()
    assert emb.text.table.grad is None  # the frozen table is a buffer
    assert all(p.grad is not None for p in emb.project.parameters())


def test_training_before_attaching_is_a_bug_but_evaluation_works():
    emb = TextEmbedding(num_items=3, hidden_size=2, text_dim=3)
    emb.train()
    with pytest.raises(RuntimeError, match="never attached"):
        emb(ITEMS)
    emb.eval()
    assert emb(ITEMS).shape == (1, 5, 2)
    with pytest.raises(ValueError, match=r"shape \(2, 3\), expected \(3, 3\)"):
        emb.text.attach_text_embeddings(TEXT[:2])


def test_text_table_is_saved_and_restored_from_a_state_dict():
    torch.manual_seed(0)
    trained = HybridEmbedding(num_items=3, hidden_size=2, text_dim=3, fusion=GateFusion)
    trained.text.attach_text_embeddings(TEXT)
    state = trained.state_dict()
    assert torch.equal(state["text.table"][1:4], TEXT)
    fresh = HybridEmbedding(num_items=3, hidden_size=2, text_dim=3, fusion=GateFusion)
    assert not fresh.text.ready
    fresh.load_state_dict(state)
    assert fresh.text.ready  # a checkpoint alone is enough: no texts, no text model
    torch.testing.assert_close(fresh.output_weights(), trained.output_weights())


# ------------------------------------------------------------------------------------------- HybridEmbedding


def hybrid(fusion: str) -> HybridEmbedding:
    emb = HybridEmbedding(num_items=3, hidden_size=2, text_dim=3,
                          fusion={"sum": SumFusion, "concat": ConcatFusion, "gate": GateFusion}[fusion])
    emb.text.attach_text_embeddings(TEXT)
    hand_id_table(emb.ids)
    return emb


def test_hybrid_sum():
    emb = hybrid("sum")
    set_linear(emb.fusion.project, [[1, 0, 0], [0, 0, 1]])  # text -> [t_x, t_z]: [1, 0], [0, 0], [1, 2]
    expected = torch.tensor([[0.0, 0.0], [2.0, 1.0], [2.0, 0.0], [1.0, 5.0], [9.0, 9.0]])
    torch.testing.assert_close(emb(ITEMS)[0], expected)  # [MASK]: its id row + a zero text
    torch.testing.assert_close(emb.output_weights(), expected[:4])


def test_hybrid_concat():
    emb = hybrid("concat")
    # W [id; text] + b with W = [[1, 0, 1, 0, 0], [0, 1, 0, 1, 1]], b = [0, 1]
    set_linear(emb.fusion.project, [[1, 0, 1, 0, 0], [0, 1, 0, 1, 1]], [0.0, 1.0])
    expected = torch.tensor([[0.0, 0.0], [2.0, 2.0], [2.0, 2.0], [1.0, 7.0], [9.0, 10.0]])
    torch.testing.assert_close(emb(ITEMS)[0], expected)
    torch.testing.assert_close(emb.output_weights(), expected[:4])


def test_hybrid_gate_hand_values_and_formula():
    emb = hybrid("gate")
    set_linear(emb.fusion.project, [[1, 0, 0], [0, 1, 0]])  # t = [t_x, t_y]
    set_linear(emb.fusion.gate, [[0.0] * 4, [0.0] * 4], [0.0, math.log(3)])  # g = [1/2, 3/4]
    # g * id + (1 - g) * t: item 1 [0.5 + 0.5, 0.75 + 0], item 2 [1 + 0, 0 + 0.25], item 3 [0.5, 2.25 + 0.25]
    expected = torch.tensor([[0.0, 0.0], [1.0, 0.75], [1.0, 0.25], [0.5, 2.5], [4.5, 6.75]])
    torch.testing.assert_close(emb(ITEMS)[0], expected)
    # any weights: the formula, computed directly
    torch.manual_seed(1)
    for p in emb.fusion.parameters():
        nn.init.normal_(p)
    ids, t = emb.ids.table.weight[1:4], TEXT @ emb.fusion.project.weight.T  # (3, 2) each
    g = torch.sigmoid(torch.cat([ids, t], 1) @ emb.fusion.gate.weight.T + emb.fusion.gate.bias)
    torch.testing.assert_close(emb.output_weights()[1:], g * ids + (1 - g) * t)


def test_hybrid_unknown_fusion_is_refused_by_the_config_group(compose_train):
    """Fusions are chosen by the ``fusion`` config group (``_target_``), so an unknown one is Hydra's one-line
    'Could not find' error listing the options, and the old ``item_embedder.fusion=<name>`` is named in one line."""
    from hydra import compose, initialize_config_module
    from hydra.errors import MissingConfigException

    from recforge.run.validate import config_problems

    with initialize_config_module("recforge.conf", version_base="1.3"):
        with pytest.raises(MissingConfigException, match=r"Could not find 'fusion/max'"):
            compose("train", overrides=["item_embedder=hybrid", "fusion=max"])
        assert compose("train", overrides=["fusion=gate"]).fusion._target_.endswith("GateFusion")
    old_way = compose_train("item_embedder=hybrid", "item_embedder.fusion=gate")
    assert config_problems(old_way) == ["item_embedder.fusion='gate' must be a fusion chosen with the fusion group "
                                        "(fusion=sum, concat or gate), not a string"]


def test_text_parts_are_found_once_through_shared_embedders():
    emb = hybrid("sum")
    model = nn.ModuleDict({"enc": SASRec(emb, max_len=4, num_layers=1, num_heads=1, dropout=0.0),
                           "dec": DotProduct(emb)})
    parts = [m for m in model.modules() if isinstance(m, UsesItemText)]
    assert parts == [emb.text]


# ------------------------------------------------------------------------------------------- fine-tuning


class CharEncoder(nn.Module):
    """A tiny trainable stand-in for a LoRA TextEncoder: texts are characters, embedded and mean-pooled."""

    trainable, name = True, "chars"

    def __init__(self, dim: int = 4) -> None:
        super().__init__()
        self.dim = dim
        self.chars = nn.Embedding(30, dim)

    def identity(self) -> dict:
        return {"model": "chars"}

    def tokenize(self, texts):
        width = max(len(t) for t in texts)
        ids = torch.tensor([[ord(c) - 96 for c in t] + [0] * (width - len(t)) for t in texts])
        return {"input_ids": ids, "attention_mask": (ids > 0).long()}

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        mask = attention_mask.unsqueeze(-1).float()
        return (self.chars(input_ids) * mask).sum(1) / mask.sum(1).clamp(min=1)  # (B, D)

    def embed_tokens(self, input_ids, attention_mask, batch_size=None, progress=False) -> Tensor:
        with torch.no_grad():
            return self(input_ids, attention_mask)

    def encode(self, texts, batch_size=None, progress=True) -> Tensor:
        return self.embed_tokens(**self.tokenize(texts))


TEXTS = ["ab", "b", "cab"]


def test_fine_tuned_table_encodes_the_batch_with_gradient_and_refreshes_for_evaluation():
    torch.manual_seed(0)
    encoder = CharEncoder()
    table = ItemTextTable(num_items=3, text_encoder=encoder)
    assert table.fine_tunes and table.encoder is encoder
    table.attach_item_text(TEXTS)
    assert table.input_ids.shape == (5, 3)  # padding row, 3 items, [MASK] row
    torch.testing.assert_close(table.table[1:4], encoder.encode(TEXTS))

    table.train()
    rows = table(torch.tensor([[0, 2, 2]]))  # item 2 only
    assert rows.requires_grad and rows[0, 0].abs().sum() == 0
    out = table.all_rows()  # (4, D): only item 2's row carries gradient
    out.sum().backward()
    chars = encoder.chars.weight.grad
    assert chars[2].abs().sum() > 0 and chars[1].abs().sum() == 0 and chars[3].abs().sum() == 0  # 'b' only

    with torch.no_grad():  # an optimizer step on the encoder
        encoder.chars.weight.add_(1.0)
    assert table._stale
    table.eval()
    torch.testing.assert_close(table.all_rows()[1:], encoder.encode(TEXTS))  # re-encoded before evaluation
    assert not table._stale

    table.train()
    table(torch.tensor([[1]]))  # stale again
    with torch.no_grad():
        encoder.chars.weight.add_(1.0)
    table.freeze()  # for export: the current texts' table, without the encoder
    assert not table.fine_tunes and list(table.parameters()) == [] and "table" in table.state_dict()
    torch.testing.assert_close(table.table[1:4], encoder.encode(TEXTS))


# ------------------------------------------------------------------------------------------- content encoder


def test_causal_mean_matches_a_loop():
    torch.manual_seed(0)
    vectors = torch.randn(3, 6, 4)
    items = torch.tensor([[0, 0, 3, 1, 2, 5], [1, 2, 3, 4, 5, 6], [0, 0, 0, 0, 0, 7]])
    vectors = vectors * (items > 0).unsqueeze(-1)  # padding embeddings are zero, as every embedder gives
    expected = torch.zeros(3, 6, 4)
    for b in range(3):
        for t in range(6):
            seen = [vectors[b, s] for s in range(t + 1) if items[b, s] > 0]
            if seen:
                expected[b, t] = torch.stack(seen).mean(0)
    torch.testing.assert_close(causal_mean(vectors, items > 0), expected)


def test_length_power_divides_the_sum_by_a_power_of_the_count():
    vectors = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]]])  # (1, 4, 2)
    valid = torch.tensor([[False, True, True, True]])
    # at t = 3: the sum of the three valid vectors is (15, 18); 3 ** 0.5 = 1.7320508
    out = causal_mean(vectors, valid, length_power=0.5)
    torch.testing.assert_close(out[0, 3], torch.tensor([15.0, 18.0]) / 3 ** 0.5)
    torch.testing.assert_close(out[0, 1], torch.tensor([3.0, 4.0]))  # one item: any power divides by 1
    torch.testing.assert_close(causal_mean(vectors, valid, 0.0)[0, 2], torch.tensor([8.0, 10.0]))  # the sum
    torch.testing.assert_close(out[0, 0], torch.zeros(2))  # nothing valid yet


@pytest.mark.parametrize("length_power", [1.0, 0.5])
@pytest.mark.parametrize("projection", [False, True])
def test_content_final_state_is_the_last_position_of_forward(length_power, projection):
    torch.manual_seed(0)
    encoder = ContentEncoder(IdEmbedding(30, 8), projection=projection, length_power=length_power)
    if projection:
        with torch.no_grad():
            encoder.projection.weight.add_(0.1 * torch.randn(8, 8))
    items = torch.randint(1, 31, (5, 9))
    items[0] = 0  # no history at all
    items[1, :6] = 0  # left padding
    torch.testing.assert_close(encoder.final_state(items), encoder(items)[:, -1])
    assert torch.equal(encoder.final_state(items)[0], encoder.projection.bias if projection else torch.zeros(8))


def test_length_power_outside_zero_one_is_refused():
    with pytest.raises(ValueError, match="length_power=2"):
        ContentEncoder(IdEmbedding(5, 4), length_power=2)


def test_content_encoder_scores_are_cosine_with_the_history_mean():
    torch.manual_seed(0)
    text = nn.functional.normalize(torch.randn(6, 5), dim=1)  # 6 items, D = 5
    emb = TextEmbedding(num_items=6, hidden_size=5, text_dim=5, projection=False)
    emb.text.attach_text_embeddings(text)
    encoder, decoder = ContentEncoder(emb), DotProduct(emb)
    assert list(encoder.parameters()) == [] and list(decoder.parameters()) == []  # nothing to train
    history = torch.tensor([[0, 2, 5, 1]])
    scores = decoder(encoder(history)[:, -1])  # (1, 7)
    profile = text[[1, 4, 0]].mean(0)  # items 2, 5, 1 (ids from 1)
    cosine = nn.functional.cosine_similarity(profile.unsqueeze(0), text) * profile.norm()
    torch.testing.assert_close(scores[0, 1:], cosine)
    assert torch.equal(torch.argsort(scores[0, 1:]), torch.argsort(cosine))

    projected = ContentEncoder(emb, projection=True)  # starts as the identity
    assert sum(p.numel() for p in projected.parameters()) == 5 * 5 + 5
    torch.testing.assert_close(projected(history), encoder(history))


# ------------------------------------------------------------------------------------------- end to end

CONF = Path(recforge.__file__).resolve().parent / "conf"


def text_encoder_override(option: str = "minilm") -> str:
    """``text_encoder=<option>``; appended (``+``) while train.yaml's defaults do not list the group yet."""
    defaults = OmegaConf.to_container(OmegaConf.load(CONF / "train.yaml").defaults)
    listed = any(isinstance(entry, dict) and "text_encoder" in entry for entry in defaults)
    return f"{'' if listed else '+'}text_encoder={option}"


def fit_and_validate(cfg) -> dict[str, float]:
    L.seed_everything(cfg.seed)
    datamodule, module = build(cfg)
    attach_item_text(module, datamodule, cfg.item_text.template if "item_text" in cfg else None,
                     cache_dir=cfg.paths.cache_dir)
    trainer = build_trainer(cfg)
    if module.trainable:
        trainer.fit(module, datamodule=datamodule)
    return dict(trainer.validate(module, datamodule=datamodule, verbose=False)[0])


@pytest.mark.slow
def test_sasrec_with_hybrid_items_beats_popularity_on_synthetic_data(compose_train, tmp_path):
    quiet = ["callbacks=none", "logger=none", "+trainer.enable_progress_bar=false",
             "trainer.enable_model_summary=false"]
    pop = fit_and_validate(compose_train("encoder=popularity", *quiet))
    cfg = compose_train(text_encoder_override(), "item_embedder=hybrid", "encoder=sasrec", "trainer.max_epochs=4",
                        *quiet)
    with open_dict(cfg):
        cfg.paths.cache_dir = str(tmp_path / "cache")
    hyb = fit_and_validate(cfg)
    assert 0 < pop["val/ndcg@10"] < 1
    print(f"val/ndcg@10: popularity {pop['val/ndcg@10']:.4f}, SASRec + hybrid {hyb['val/ndcg@10']:.4f}")
    assert hyb["val/ndcg@10"] > 1.5 * pop["val/ndcg@10"], (hyb, pop)
