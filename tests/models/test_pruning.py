"""Magnitude pruning of the encoder's linear layers: which weights, exact sparsity, the smallest entries go,
reparametrisation kept while training, restored from a checkpoint and made permanent."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from recforge.models.embedders import IdEmbedding
from recforge.models.encoders.sasrec import SASRec
from recforge.models.pruning import (
    make_permanent,
    prunable_weights,
    prune_linear,
    pruned_weights,
    refresh_pruned,
    restore_pruning,
    sparsity,
)


def sasrec(seed: int = 0) -> SASRec:
    torch.manual_seed(seed)
    return SASRec(IdEmbedding(num_items=30, hidden_size=16), max_len=8, num_layers=2, num_heads=2)


def test_prunable_weights_are_the_linear_and_qkv_matrices_only() -> None:
    names = [f"{type(m).__name__}.{n}" for m, n in prunable_weights(sasrec())]
    # per layer: the q/k/v projection, the attention output projection, the two feed-forward layers
    assert names == ["MultiheadAttention.in_proj_weight", "NonDynamicallyQuantizableLinear.weight",
                     "Linear.weight", "Linear.weight"] * 2


# per layer (48, 16), (16, 16), (64, 16), (16, 64): 768 + 256 + 1024 + 1024 = 3072 entries, 6144 over 2 layers;
# 50 %: 384 + 128 + 512 + 512 = 1536 zeros per layer; 80 %: round(614.4) + round(204.8) + 2 round(819.2) = 2457
@pytest.mark.parametrize(("amount", "zeros"), [(0.5, 2 * 1536), (0.8, 2 * 2457)])
def test_every_pruned_weight_has_exactly_the_asked_sparsity(amount: float, zeros: int) -> None:
    encoder = sasrec()
    weights = prune_linear(encoder, amount)
    # (48, 16), (16, 16), (64, 16), (16, 64) per layer: 768, 256, 1024, 1024 entries; prune zeros round(amount * n)
    for module, name in weights:
        w = getattr(module, name)
        assert int((w == 0).sum()) == round(amount * w.numel())
    assert sparsity([getattr(m, n) for m, n in weights]) == zeros / 6144  # 0.5 exactly; 0.79980 for 80 %
    # nothing else is touched: embeddings, LayerNorms and biases stay dense
    assert float((encoder.item_embedder.table.weight[1:] == 0).float().mean()) == 0.0


def test_the_smallest_magnitudes_are_the_ones_removed() -> None:
    layer = nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.3, -0.1, 2.0, -0.5]]))
    prune_linear(nn.Sequential(layer), 0.5)
    torch.testing.assert_close(layer.weight, torch.tensor([[0.0, 0.0, 2.0, -0.5]]))


def test_a_pruned_weight_stays_pruned_through_an_optimizer_step_and_follows_refresh() -> None:
    encoder = sasrec()
    prune_linear(encoder, 0.5)
    mha = encoder.stack.layers.layers[0].self_attn
    zeros = mha.out_proj.weight == 0
    optimizer = torch.optim.SGD(encoder.parameters(), lr=0.1)
    for _ in range(2):  # out_proj is read by its attention module, not called: refresh keeps the graph fresh
        refresh_pruned(encoder)
        encoder(torch.randint(1, 31, (3, 8))).sum().backward()
        optimizer.step()
        optimizer.zero_grad()
    refresh_pruned(encoder)
    assert bool((mha.out_proj.weight[zeros] == 0).all())
    torch.testing.assert_close(mha.out_proj.weight, mha.out_proj.weight_orig * mha.out_proj.weight_mask)


def test_a_pruned_checkpoint_loads_into_a_fresh_model_and_becomes_permanent() -> None:
    pruned = sasrec(seed=0)
    prune_linear(pruned, 0.8)
    state = pruned.state_dict()
    assert sum(key.endswith("_mask") for key in state) == 8
    fresh = sasrec(seed=1)
    assert restore_pruning(fresh, state) == 8
    fresh.load_state_dict(state)
    assert make_permanent(fresh) == 8
    assert pruned_weights(fresh) == []
    keys = fresh.state_dict().keys()
    assert not any(key.endswith(("_orig", "_mask")) for key in keys)
    assert all(isinstance(getattr(m, n), nn.Parameter) for m, n in prunable_weights(fresh))
    assert sparsity([getattr(m, n) for m, n in prunable_weights(fresh)]) == pytest.approx(0.8, abs=1e-3)
    items = torch.randint(0, 31, (4, 8))
    pruned.eval(), fresh.eval()
    refresh_pruned(pruned)
    with torch.no_grad():
        torch.testing.assert_close(fresh(items), pruned(items))


def test_amount_outside_zero_to_one_is_refused() -> None:
    with pytest.raises(ValueError, match="prune amount"):
        prune_linear(sasrec(), 1.0)
