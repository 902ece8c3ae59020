"""The transformer stack's layout options: post-LN layers (norm_first=false) and the feed-forward inner dropout."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from recforge.models.embedders import IdEmbedding
from recforge.models.encoders.bert4rec import BERT4Rec
from recforge.models.encoders.sasrec import SASRec


@pytest.mark.parametrize("norm_first", [True, False])
def test_final_state_equals_the_last_position_of_forward(norm_first: bool) -> None:
    torch.manual_seed(0)
    model = SASRec(IdEmbedding(30, 16), max_len=8, num_heads=2, norm_first=norm_first).eval()
    items = torch.tensor([[0, 0, 3, 4, 5, 6, 7, 8], [1, 2, 3, 4, 5, 6, 7, 9]])
    torch.testing.assert_close(model.final_state(items), model(items)[:, -1])


def test_post_ln_layers_have_no_final_norm_and_normalise_each_residual_sum() -> None:
    torch.manual_seed(0)
    model = SASRec(IdEmbedding(30, 16), max_len=8, num_heads=2, dropout=0.0, norm_first=False).eval()
    assert isinstance(model.stack.norm_out, nn.Identity)
    assert all(not layer.norm_first for layer in model.stack.layers.layers)
    out = model(torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8]]))  # (1, 8, 16)
    last_norm = model.stack.layers.layers[-1].norm2  # the output is that LayerNorm's: mean beta, spread gamma
    torch.testing.assert_close(out.mean(-1), last_norm.bias.mean().expand(1, 8), atol=1e-5, rtol=0)
    pre = SASRec(IdEmbedding(30, 16), max_len=8, num_heads=2)
    assert isinstance(pre.stack.norm_out, nn.LayerNorm) and all(layer.norm_first for layer in pre.stack.layers.layers)


@pytest.mark.parametrize("encoder", [SASRec, BERT4Rec])
def test_inner_dropout_sets_every_feed_forward_block(encoder) -> None:
    model = encoder(IdEmbedding(30, 16), max_len=8, num_heads=2, dropout=0.5, inner_dropout=0.0)
    for layer in model.stack.layers.layers:
        assert layer.dropout.p == 0.0 and layer.dropout1.p == layer.dropout2.p == 0.5
        assert layer.self_attn.dropout == 0.5  # attention probabilities keep the model's dropout
    default = encoder(IdEmbedding(30, 16), max_len=8, num_heads=2, dropout=0.3)
    assert all(layer.dropout.p == 0.3 for layer in default.stack.layers.layers)


@pytest.mark.parametrize("encoder", [SASRec, BERT4Rec])
def test_qkv_init_normal_draws_every_layer_projection_from_normal_002(encoder) -> None:
    torch.manual_seed(0)
    model = encoder(IdEmbedding(30, 64), max_len=8, num_heads=2, num_layers=2, qkv_init_normal=True)
    weights = [layer.self_attn.in_proj_weight.detach() for layer in model.stack.layers.layers]  # (192, 64) each
    assert all(abs(float(w.std()) - 0.02) < 0.001 for w in weights)  # 12,288 draws: sd of the std ~ 0.00013
    assert not torch.equal(weights[0], weights[1])  # drawn per layer
    xavier = encoder(IdEmbedding(30, 64), max_len=8, num_heads=2, num_layers=2)
    bound = (6 / (64 + 192)) ** 0.5  # nn.MultiheadAttention's xavier_uniform_ on (3H, H)
    assert float(xavier.stack.layers.layers[0].self_attn.in_proj_weight.abs().max()) <= bound
    assert abs(float(xavier.stack.layers.layers[0].self_attn.in_proj_weight.std()) - bound / 3 ** 0.5) < 0.003
