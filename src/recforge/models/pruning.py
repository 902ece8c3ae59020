"""Magnitude pruning of an encoder's linear layers (Han et al., "Learning both Weights and Connections for
Efficient Neural Networks", NeurIPS 2015), with ``torch.nn.utils.prune``.

Which weights: the weight matrix of every ``nn.Linear`` in the encoder (feed-forward layers, attention output
projections) and the query/key/value projection of every ``nn.MultiheadAttention`` (``in_proj_weight``, one
(3H, H) matrix). Biases, LayerNorms and embedding tables (the item table is shared with the decoder) stay dense.

How: ``l1_unstructured`` layer by layer, so every pruned matrix loses exactly ``amount`` of its entries (the
smallest in absolute value) and no layer can be emptied; ``global_unstructured`` would rank all matrices together
and could strip a layer whose weights are on a smaller scale (SASRec's attention and feed-forward weights differ).

While a pruned model trains, each weight is ``weight_orig * weight_mask`` (prune's reparametrisation, kept in
checkpoints, so resuming and testing the best checkpoint work unchanged); ``make_permanent`` (``prune.remove``)
turns it back into one plain parameter holding the zeros, as recforge-export and recforge-eval load it.
"""
from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn
from torch.nn.utils import prune

MASK = "_mask"


def prunable_weights(encoder: nn.Module) -> list[tuple[nn.Module, str]]:
    """(module, parameter name) of every linear weight matrix in ``encoder``, in module order."""
    found: list[tuple[nn.Module, str]] = []
    for module in encoder.modules():
        if isinstance(module, nn.Linear):
            found.append((module, "weight"))
        elif isinstance(module, nn.MultiheadAttention) and module.in_proj_weight is not None:
            found.append((module, "in_proj_weight"))
    return found


def prune_linear(encoder: nn.Module, amount: float) -> list[tuple[nn.Module, str]]:
    """Zero the ``amount`` (0..1) smallest-magnitude entries of every linear weight of ``encoder`` (layer by layer,
    L1 magnitude) behind prune's mask; returns the pruned (module, name) pairs."""
    if not 0.0 <= amount < 1.0:
        raise ValueError(f"prune amount must be in [0, 1), got {amount}")
    weights = prunable_weights(encoder)
    for module, name in weights:
        prune.l1_unstructured(module, name, amount=amount)
    return weights


def pruned_weights(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """(module, name) of every weight under prune's reparametrisation in ``model``."""
    return [(module, hook._tensor_name) for module in model.modules()
            for hook in module._forward_pre_hooks.values() if isinstance(hook, prune.BasePruningMethod)]


def refresh_pruned(model: nn.Module) -> None:
    """Recompute every pruned weight from ``weight_orig * weight_mask`` now (in the autograd graph when gradients
    are on). Prune does it in a forward pre-hook of the weight's module, but some weights are read without calling
    their module: nn.MultiheadAttention reads ``out_proj.weight`` itself, and nn.TransformerEncoderLayer's
    inference fast path reads ``linear1.weight`` and ``self_attn.in_proj_weight``; they would be stale after an
    optimizer step or a checkpoint load (training: a graph already freed). Call it before every training step and
    every evaluation."""
    for module, name in pruned_weights(model):
        setattr(module, name, getattr(module, name + "_orig") * getattr(module, name + MASK))


def make_permanent(model: nn.Module) -> int:
    """``prune.remove`` on every pruned weight of ``model``: plain parameters holding the zeros, no mask or hook.
    Returns how many weights were made permanent."""
    weights = pruned_weights(model)
    for module, name in weights:
        prune.remove(module, name)
    return len(weights)


def restore_pruning(model: nn.Module, state: Mapping[str, Tensor]) -> int:
    """Put prune's reparametrisation on every weight whose ``<name>_mask`` is in the checkpoint ``state`` (using
    that mask), so the state dict of a pruned run loads into a freshly built ``model``. Returns how many."""
    masks = [key for key in state if key.endswith(MASK) and key[: -len(MASK)] + "_orig" in state]
    for key in masks:
        path, name = key[: -len(MASK)].rsplit(".", 1)
        module = model.get_submodule(path)
        if isinstance(getattr(module, name, None), nn.Parameter):
            prune.custom_from_mask(module, name, mask=state[key])
    return len(masks)


def sparsity(weights: list[Tensor]) -> float:
    """Fraction of exact zeros over all entries of ``weights``."""
    total = sum(w.numel() for w in weights)
    return sum(int((w == 0).sum()) for w in weights) / total if total else 0.0
