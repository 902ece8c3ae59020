"""Which history items drove a recommendation: attributions over the positions of the model's input.

- ``ig``: integrated gradients (Sundararajan et al., "Axiomatic Attribution for Deep Networks", ICML 2017),
  computed by Captum's ``IntegratedGradients`` on the item embeddings of the history. The attribution of a
  position is the sum over the hidden dimension of IG's attribution of its embedding, for the score of one
  recommended item. Baseline: the padding item's embedding (every recforge embedder keeps it at zero) at every
  history position, with everything else as it was: the attention mask of the real history, the position
  embeddings, BERT4Rec's [MASK]. So by IG's completeness the attributions of a recommendation sum to
  score(history) - score(same slots, no item content) (up to the integration error of ``steps``).
- ``attention``: the last transformer layer's attention weights for the query that scores (SASRec: the last item;
  BERT4Rec: the appended [MASK]), averaged over heads. Cheap (one forward pass), the same for every recommended
  item, and only for transformer encoders (GRU4Rec has no attention: use ``ig``).

Both need the run's eager PyTorch model (a run directory or checkpoint), not an exported TorchScript/ONNX file.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Literal

import torch
from captum.attr import IntegratedGradients
from torch import Tensor, nn

from recforge.deploy.model import Scorer
from recforge.errors import RecforgeError
from recforge.models.encoders.base import AttentionEncoder

EXPORT_SUFFIXES = (".pt", ".onnx")  # recforge-export's files: no gradients through them, no explanations
Method = Literal["ig", "attention"]
METHODS: tuple[Method, ...] = ("ig", "attention")
Attributor = Callable[[Scorer, Tensor, Tensor], Tensor]


def encoder_input(scorer: Scorer, items: Tensor) -> Tensor:
    """The ids the encoder sees for scorer input ``items``: (B, L) -> (B, T) (BERT4Rec appends [MASK])."""
    return scorer.encoder.inference_input(items)


def history_slots(encoded: Tensor, num_items: int) -> Tensor:
    """(B, T) True where the encoder input holds a history item (ids 1..N: not padding, not [MASK])."""
    return (encoded >= 1) & (encoded <= num_items)


@contextmanager
def embeddings_replaced(embedder: nn.Module, values: Tensor) -> Iterator[list[int]]:
    """While active, ``embedder`` returns ``values`` instead of its output; yields a list counting its calls."""
    calls: list[int] = []

    def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> Tensor:
        calls.append(1)
        return values

    handle = embedder.register_forward_hook(hook)
    try:
        yield calls
    finally:
        handle.remove()


def scores_from_embeddings(scorer: Scorer, embeddings: Tensor, items: Tensor) -> Tensor:
    """Scores (B, N+1) of scorer input ``items`` (B, L) with the history embeddings replaced by ``embeddings``
    (B, T, H), everything else (masks, positions) computed from ``items``."""
    with embeddings_replaced(scorer.encoder.item_embedder, embeddings) as calls:
        scores = scorer(items)  # (B, N+1)
    if len(calls) != 1:
        name = type(scorer.encoder).__name__
        raise RecforgeError(f"encoder {name} does not embed its input items exactly once, so its recommendations cannot be attributed to history items; explanations need an encoder such as SASRec, BERT4Rec or GRU4Rec.")
    return scores


def baseline_embeddings(scorer: Scorer, items: Tensor) -> tuple[Tensor, Tensor]:
    """(input embeddings, baseline embeddings), both (B, T, H): the baseline has the padding item's embedding at
    every history slot and the input's embedding elsewhere."""
    encoded = encoder_input(scorer, items)  # (B, T)
    embedder = scorer.encoder.item_embedder
    with torch.no_grad():
        inputs = embedder(encoded)  # (B, T, H)
        padding = embedder(torch.zeros_like(encoded))  # (B, T, H)
    slots = history_slots(encoded, embedder.num_items).unsqueeze(-1)  # (B, T, 1)
    return inputs, torch.where(slots, padding, inputs)


def integrated_gradients(scorer: Scorer, items: Tensor, targets: Tensor, steps: int = 32,
                         internal_batch_size: int = 256) -> Tensor:
    """IG attribution of every encoder-input position to the score of each target item (Captum).

    items: (B, L) scorer input, targets: (B, K) item ids -> (B, K, T); non-history slots get 0."""
    B, K = targets.shape
    rows = items.repeat_interleave(K, dim=0)  # (B*K, L)
    inputs, baseline = baseline_embeddings(scorer, rows)  # (B*K, T, H) each
    ig = IntegratedGradients(lambda emb, ids: scores_from_embeddings(scorer, emb, ids))
    with torch.enable_grad():
        per_dim = ig.attribute(inputs, baselines=baseline, target=targets.reshape(-1), additional_forward_args=(rows,),
                               n_steps=steps, internal_batch_size=internal_batch_size)  # (B*K, T, H)
    return per_dim.sum(-1).reshape(B, K, -1).detach()  # (B, K, T)


def last_layer_attention(scorer: Scorer, items: Tensor, targets: Tensor) -> Tensor:
    """The last layer's head-averaged attention of the scoring query over each encoder-input position, the same
    for every target. items: (B, L), targets: (B, K) -> (B, K, T)."""
    encoder = scorer.encoder
    if not isinstance(encoder, AttentionEncoder):
        raise RecforgeError(attention_problem(encoder))
    with torch.no_grad():
        weights = encoder.final_attention(encoder_input(scorer, items))  # (B, T)
    return weights.unsqueeze(1).expand(-1, targets.shape[1], -1)  # (B, K, T)


ATTRIBUTORS: dict[Method, Attributor] = {"ig": integrated_gradients, "attention": last_layer_attention}


def attention_problem(encoder: nn.Module) -> str:
    return (f"the attention explanation needs a transformer encoder (SASRec, BERT4Rec) and this run's encoder is "
            f"{type(encoder).__name__}; use the integrated-gradients explanation (ig) instead.")


def explain_problem(scorer: Scorer, method: Method) -> str | None:
    """Why ``method`` cannot explain this model's recommendations, or None when it can."""
    encoder = scorer.encoder
    if method == "attention" and not isinstance(encoder, AttentionEncoder):
        return attention_problem(encoder)
    if not isinstance(getattr(encoder, "item_embedder", None), nn.Module):
        return f"encoder {type(encoder).__name__} has no item embedder, so its recommendations cannot be attributed to history items."
    return None


def ranked(attributions: Tensor, slots: Tensor) -> list[tuple[int, float]]:
    """(back, attribution) of every history slot, strongest (largest) first, ties the more recent first; ``back``
    counts the history slots from the right (1 = the most recent item). attributions: (T,), slots: (T,) bool."""
    values = attributions[slots].tolist()  # (m,)
    order = sorted(range(len(values)), key=lambda i: (-values[i], -i))
    return [(len(values) - i, float(values[i])) for i in order]


def explain_top(scorer: Scorer, num_items: int, items: Tensor, recommended: list[list[int]], method: Method,
                steps: int = 32) -> list[list[list[tuple[int, float]]]]:
    """For each row of ``items`` (B, L) and each of its recommended item ids: :func:`ranked` history slots.
    Rows may have different numbers of recommended items (at least one each)."""
    K = max(len(row) for row in recommended)
    targets = torch.tensor([row + row[:1] * (K - len(row)) for row in recommended])  # (B, K), padded with the first
    options = {"steps": steps} if method == "ig" else {}
    attributions = ATTRIBUTORS[method](scorer, items, targets, **options)  # (B, K, T)
    slots = history_slots(encoder_input(scorer, items), num_items)  # (B, T)
    return [[ranked(attributions[b, j], slots[b]) for j in range(len(row))] for b, row in enumerate(recommended)]
