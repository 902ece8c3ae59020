"""recforge.run.stopping.EarlyStopping: a stop decided before trainer.min_steps is not latched."""
from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from recforge.run.stopping import EarlyStopping


class ScriptedMetric(L.LightningModule):
    """One training step per epoch; val/score follows a given list, one value per epoch."""

    def __init__(self, scores: list[float]) -> None:
        super().__init__()
        self.scores, self.weight = scores, torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch, batch_idx):
        return (self.weight - 1).pow(2).sum()

    def validation_step(self, batch, batch_idx):
        self.log("val/score", self.scores[self.current_epoch])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def epochs_run(scores: list[float], min_steps: int | None, patience: int = 2) -> int:
    loader = DataLoader(TensorDataset(torch.zeros(1, 1)), batch_size=1)
    stopper = EarlyStopping(monitor="val/score", mode="max", patience=patience)
    trainer = L.Trainer(max_epochs=len(scores), min_steps=min_steps, callbacks=[stopper], logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0)
    trainer.fit(ScriptedMetric(scores), train_dataloaders=loader, val_dataloaders=loader)
    return trainer.current_epoch


FLAT_THEN_RISING = [0.1] * 4 + [0.2, 0.3, 0.4, 0.5, 0.6, 0.7]  # stalls at epochs 1-3 (patience 2 runs out at 2)


def test_a_plateau_before_min_steps_does_not_stop_a_run_that_then_improves():
    # patience ran out at epoch 2, inside the minimum (6 steps = 6 epochs); the metric rises from epoch 4 on, so
    # the run goes on to max_epochs instead of stopping at the minimum (Lightning's own class stops at epoch 6)
    assert epochs_run(FLAT_THEN_RISING, min_steps=6) == 10


def test_without_a_minimum_patience_stops_as_usual():
    assert epochs_run(FLAT_THEN_RISING, min_steps=None) == 3  # best at epoch 0, no gain at 1 and 2: stops after 2


@pytest.mark.parametrize("min_steps", [4, 6])
def test_a_run_still_on_its_plateau_stops_when_the_minimum_is_met(min_steps):
    assert epochs_run([0.1] * 10, min_steps=min_steps) == min_steps  # epochs 0 .. min_steps - 1 ran
    # improving inside the minimum, then stalling past it: stops once patience runs out after the minimum
    assert epochs_run([0.1, 0.2, 0.3, 0.4, 0.5] + [0.5] * 5, min_steps=min_steps) == 7
