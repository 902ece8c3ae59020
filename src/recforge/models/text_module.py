"""LightningModule for text tasks: a review text -> one output (a logit for intent, a value for regression).

A pretrained sentence encoder (all-MiniLM-L6-v2, mean-pooled; Reimers & Gurevych 2019) embeds the text; dropout
and a linear head turn the embedding into the output, as in BERT's fine-tuning for sequence classification and
regression (Devlin et al. 2019). Three regimes, chosen by config, not by name:

- ``fine_tune: true`` with ``text_encoder.lora: null``: every encoder weight is trained (full fine-tuning);
- ``fine_tune: true`` with LoRA settings: only the LoRA adapters (Hu et al. 2021) and the head are trained;
- ``fine_tune: false``: the encoder is frozen; the embeddings of every text are computed once (through the
  embedding cache, with a progress bar) and only the head is trained on them; batches carry row indices.

Training, validation, metrics and checkpoint bookkeeping are :class:`PointwiseModule`'s (same loss, metrics and
output accumulation as the ML-100K intent/value tasks). The head's bias starts at the task's initial bias (the
training mean for values, its log-odds for intents). ``head_lr`` gives the head its own learning rate: the
encoder is fine-tuned with a small one (2e-5 .. 5e-5), a freshly initialised head needs a larger one.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from recforge.errors import RecforgeError
from recforge.models.heads import PointwiseHead
from recforge.models.pointwise_module import PointwiseModule, TaskMetrics
from recforge.models.text_cache import EmbeddingCache, cached_encode
from recforge.models.text_encoder import TextEncoder


class TextHead(PointwiseHead):
    """Dropout -> Linear(D, 1): an embedding (B, D) -> one output (B,)."""

    def __init__(self, dim: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(dim, 1)

    def init_global_bias(self, value: float) -> None:
        with torch.no_grad():
            self.linear.bias.fill_(value)

    def forward(self, embeddings: Tensor) -> Tensor:
        return self.linear(self.dropout(embeddings)).squeeze(-1)  # (B,)


class TextPointwiseModule(PointwiseModule):
    """Intent or value prediction from a text; ``encoder`` embeds it, ``decoder`` (a :class:`TextHead`, built by the
    run layer from the ``decoder`` group) reads the embedding; without one, a ``TextHead(encoder.dim, dropout)``."""

    sample_kind = "reviews"  # what it reads; its datamodule declares the same (checked by recforge.run.validate)

    def __init__(self, encoder: TextEncoder, loss: nn.Module, metrics: TaskMetrics,
                 optimizer: Callable[..., Optimizer], scheduler: Callable[..., Any] | None = None,
                 fine_tune: bool = True, dropout: float = 0.1, head_lr: float | None = None,
                 cache_dir: str | None = None, decoder: TextHead | None = None) -> None:
        if not fine_tune and encoder.lora is not None:
            raise RecforgeError("task.fine_tune=false freezes the text encoder, so its LoRA adapters would never be "
                                "trained; use text_encoder=minilm (frozen) or task.fine_tune=true (LoRA).")
        if fine_tune:
            encoder.load()  # the trained weights exist before an optimizer or a checkpoint sees them
            if encoder.lora is None:
                encoder.model.requires_grad_(True)  # type: ignore[union-attr]  (full fine-tuning)
        decoder = decoder if decoder is not None else TextHead(encoder.dim, dropout)
        super().__init__(encoder=encoder, decoder=decoder, loss=loss, metrics=metrics,
                         optimizer=optimizer, scheduler=scheduler)  # type: ignore[arg-type]
        self.fine_tune, self.head_lr = fine_tune, head_lr
        self.cache = EmbeddingCache(cache_dir) if cache_dir else None
        self.strict_loading = fine_tune  # a frozen run's checkpoints hold the head only
        self.register_buffer("embeddings", torch.empty(0, encoder.dim), persistent=False)  # (N, D) when frozen
        self.last_validation: dict[str, float] = {}
        self.loaded_validation: dict[str, float] | None = None

    # ---- frozen embeddings ---------------------------------------------------------------------------------
    def precompute(self, texts: Sequence[str], progress: bool = True) -> None:
        """Frozen encoder: the embeddings (N, D) of every text of the dataset, indexed by its row."""
        if self.fine_tune or len(self.embeddings) == len(texts):
            return
        embeddings = cached_encode(self.encoder, texts, self.cache, progress=progress)  # (N, D)
        self.embeddings = embeddings.to(self.decoder.linear.weight.device)

    def setup(self, stage: str) -> None:
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        if datamodule is not None:
            self.precompute(datamodule.texts)
        super().setup(stage)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        """Raw outputs (logit or value) for a batch. (B,)"""
        if self.fine_tune:
            embedded = self.encoder(batch["input_ids"], batch["attention_mask"])  # (B, D)
        else:
            if len(self.embeddings) == 0:
                raise RuntimeError("frozen text encoder: call precompute(texts) before the first batch")
            embedded = self.embeddings[batch["index"]]  # (B, D)
        return self.decoder(embedded)  # (B,)

    # ---- bookkeeping ---------------------------------------------------------------------------------------
    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        if not self.trainer.sanity_checking and self.val_history:
            self.last_validation = self.val_history[-1][1]

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        # several validations per epoch: the checkpoint keeps the metrics of the validation it followed
        checkpoint["validation"] = dict(self.last_validation)
        if not self.fine_tune:  # the frozen encoder's weights are the model files'
            for key in [k for k in checkpoint["state_dict"] if k.startswith("encoder.")]:
                del checkpoint["state_dict"][key]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self.loaded_validation = checkpoint.get("validation")

    def configure_optimizers(self) -> Any:
        head = {"params": list(self.decoder.parameters()), **({"lr": self.head_lr} if self.head_lr else {})}
        encoder = [p for p in self.encoder.parameters() if p.requires_grad] if self.fine_tune else []
        optimizer = self.optimizer_factory(params=[{"params": encoder}, head] if encoder else [head])
        return self.with_scheduler(optimizer)

