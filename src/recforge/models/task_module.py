"""What every recforge LightningModule shares, whatever its task: the optimizer and scheduler built from their
config factories, the validation history kept in checkpoints, and the random generators saved with them so a
resumed run draws what the uninterrupted one would."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
from torch.optim import Optimizer

from recforge.models.rng import rng_states, set_rng_states


class TaskModule(L.LightningModule):
    """Base of NextItemModule and PointwiseModule. Subclasses call ``super().__init__(optimizer, scheduler)``
    and append ``(epoch, metrics)`` to ``val_history`` after every validation."""

    def __init__(self, optimizer: Callable[..., Optimizer], scheduler: Callable[..., Any] | None = None) -> None:
        super().__init__()
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.val_history: list[tuple[int, dict[str, float]]] = []  # (epoch, float64 metrics) per validation
        self.test_metrics: dict[str, float] = {}
        self.evaluated_samples: dict[str, int] = {}  # unique samples behind the last val/test metrics
        self.loaded_epoch: int | None = None  # the epoch whose weights a loaded checkpoint put in the model

    @property
    def trainable(self) -> bool:
        return any(p.requires_grad for p in self.parameters())

    # ---- checkpoint extras: the validation history survives a resume --------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["val_history"] = [[epoch, metrics] for epoch, metrics in self.val_history]
        checkpoint["rng_states"] = rng_states()  # an exact resume draws what the uninterrupted run would

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.val_history = [(int(epoch), dict(metrics)) for epoch, metrics in checkpoint.get("val_history", [])]
        self.loaded_epoch = int(checkpoint["epoch"])
        if "rng_states" in checkpoint and self._trainer is not None and self.trainer.state.fn == "fit":
            set_rng_states(checkpoint["rng_states"])

    # ---- optimisation ---------------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(params=[p for p in self.parameters() if p.requires_grad])
        return self.with_scheduler(optimizer)

    def with_scheduler(self, optimizer: Optimizer) -> Any:
        """The optimizer alone, or with the configured scheduler stepped every batch."""
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer, total_steps=int(self.trainer.estimated_stepping_batches))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
