"""Hugging Face transformers backbones as sequence encoders, trained from scratch on item ids.

The backbone is built from a config (``transformers.GPT2Config(...)``, ``BertConfig(...)`` or
``AutoConfig.for_model(model_type, ...)``), never downloaded, and fed item embeddings through ``inputs_embeds``.
A causal backbone is trained on next items like SASRec (Kang & McAuley, ICDM 2018); a bidirectional one with the
cloze task of BERT4Rec (Sun et al., CIKM 2019).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from transformers import AutoModel, PretrainedConfig

from recforge.models.embedders import ItemEmbedder
from recforge.models.encoders.base import SequenceEncoder
from recforge.models.encoders.bert4rec import CLOZE_RULES, append_mask, cloze_pairs
from recforge.rules import check_arguments, int_at_least, rule_table


class HFEncoder(SequenceEncoder):
    """A ``transformers`` base model over item embeddings; left padding (id 0) is masked out.

    Positions count from the right end of a ``max_len`` window (the last item is always at ``max_len - 1``),
    as in the native encoders, so extra left padding or a trimmed batch changes nothing.
    """

    causal: bool  # the attention the training scheme needs; checked against the built model
    argument_rules = rule_table(max_len=int_at_least(2))  # recforge.rules: checked in the config and here

    def __init__(self, item_embedder: ItemEmbedder, config: PretrainedConfig, max_len: int = 50,
                 model_kwargs: dict[str, Any] | None = None) -> None:
        super().__init__()
        check_arguments(HFEncoder, "encoder", max_len=max_len)
        hidden = getattr(config, "hidden_size", None)
        if hidden != item_embedder.hidden_size:
            raise ValueError(f"encoder.config hidden size {hidden} must equal item_embedder.hidden_size="
                             f"{item_embedder.hidden_size} (the backbone reads item embeddings directly)")
        positions = getattr(config, "max_position_embeddings", max_len)
        if positions < max_len:
            raise ValueError(f"encoder.config max_position_embeddings={positions} must be >= encoder.max_len="
                             f"{max_len} (a position for every item of the window)")
        self.item_embedder, self.max_len = item_embedder, max_len
        self.model = AutoModel.from_config(config, **(model_kwargs or {}))
        if attends_to_future(self.model) == self.causal:
            kind = "bidirectional" if self.causal else "causal"
            raise ValueError(f"encoder.config {type(config).__name__} builds a {kind} model, but "
                             f"{type(self).__name__} needs a {'causal' if self.causal else 'bidirectional'} one")

    def forward(self, items: Tensor) -> Tensor:
        """items: (B, T) left-padded ids, 0 = padding -> (B, T, H)."""
        B, T = items.shape
        positions = torch.arange(self.max_len - T, self.max_len, device=items.device).expand(B, T)  # (B, T)
        out = self.model(inputs_embeds=self.item_embedder(items),  # (B, T, H)
                         attention_mask=(items > 0).long(), position_ids=positions)
        return out.last_hidden_state  # (B, T, H)


class HFCausalEncoder(HFEncoder):
    """Causal backbone (GPT-2, Llama, ...): the state at t predicts the item at t + 1."""

    causal = True


class HFBidirectionalEncoder(HFEncoder):
    """Bidirectional backbone (BERT, RoBERTa, ...): cloze training, a [MASK] appended at inference."""

    causal = False
    next_item_states = False  # the state at a [MASK] reads later items
    argument_rules = rule_table(**HFEncoder.argument_rules, **CLOZE_RULES)

    def __init__(self, item_embedder: ItemEmbedder, config: PretrainedConfig, max_len: int = 50,
                 model_kwargs: dict[str, Any] | None = None, mask_prob: float = 0.2,
                 last_mask_prob: float = 0.1) -> None:
        check_arguments(HFBidirectionalEncoder, "encoder", mask_prob=mask_prob, last_mask_prob=last_mask_prob)
        super().__init__(item_embedder, config, max_len, model_kwargs)
        self.mask_prob, self.last_mask_prob = mask_prob, last_mask_prob

    def training_pairs(self, window: Tensor) -> tuple[Tensor, Tensor]:
        """window: (B, L+1) -> inputs (B, <= L) with [MASK]s, targets (B, <= L) (0 = no target)."""
        return cloze_pairs(window, self.max_len, self.mask_prob, self.last_mask_prob, self.item_embedder.mask_token)

    def inference_input(self, recent: Tensor) -> Tensor:
        """Append [MASK], dropping the oldest column if that exceeds max_len. recent: (B, T) -> (B, <= max_len)."""
        return append_mask(recent, self.item_embedder.mask_token, self.max_len)


@torch.no_grad()
def attends_to_future(model: nn.Module) -> bool:
    """Whether the first position's output depends on the second input (one tiny eval-mode probe)."""
    was_training = model.training
    model.eval()
    generator = torch.Generator().manual_seed(0)  # the global RNG (and so seeded runs) stays untouched
    hidden = model.config.hidden_size
    x = torch.randn(1, 2, hidden, generator=generator)  # (1, 2, H)
    y = x.clone()
    y[:, 1] = torch.randn(hidden, generator=generator)
    positions = torch.arange(2).unsqueeze(0)  # (1, 2)
    outs = [model(inputs_embeds=v, position_ids=positions).last_hidden_state[:, 0] for v in (x, y)]  # (1, H) x 2
    model.train(was_training)
    return not torch.allclose(outs[0], outs[1])
