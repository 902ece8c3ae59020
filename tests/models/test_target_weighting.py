"""task.weigh_targets_equally: every training target weighs the same over an epoch of length-bucketed batches."""
from __future__ import annotations

import pytest
import torch

from recforge.run.build import build

TINY = ["dataset.reader.num_users=120", "dataset.reader.num_items=60", "dataset.reader.max_length=20",
        "dataset.max_len=10", "dataset.batch_size=32", "hidden_size=16", "callbacks.progress_bar=null"]


@pytest.fixture
def module(compose_train):
    _, module = build(compose_train("task.weigh_targets_equally=true", *TINY))
    return module


def test_a_batch_is_scaled_by_its_targets_over_the_running_mean(module):
    # hand-computed: counts 2, 6, 4 -> running means 2, 4, 4 -> scales 2/2, 6/4, 4/4
    scaled = [module.weigh_by_targets(torch.tensor(1.0), torch.tensor(c)) for c in (2, 6, 4)]
    assert [float(s) for s in scaled] == pytest.approx([1.0, 1.5, 1.0])


def test_the_summed_step_losses_weigh_each_target_alike(module):
    # two batches, per-target losses a (2 targets) and b (6 targets): with batch means, a's targets weigh 1/2 each
    # and b's 1/6; weighted, both weigh 1/mean count (1/4 after the second step)
    a, b = torch.tensor([1.0, 3.0]), torch.tensor([2.0, 2.0, 2.0, 2.0, 2.0, 6.0])
    first = module.weigh_by_targets(a.mean(), torch.tensor(2))  # running mean 2: scale 1
    second = module.weigh_by_targets(b.mean(), torch.tensor(6))  # running mean 4: scale 1.5
    assert float(first) == pytest.approx(a.sum() / 2)
    assert float(second) == pytest.approx(b.sum() / 4)


def test_the_running_mean_survives_a_checkpoint(module, compose_train):
    for count in (3, 5):
        module.weigh_by_targets(torch.tensor(1.0), torch.tensor(count))
    checkpoint: dict = {}
    module.on_save_checkpoint(checkpoint)
    assert checkpoint["targets_per_step"] == (8.0, 2)
    checkpoint["epoch"] = 0  # Lightning adds it
    _, resumed = build(compose_train("task.weigh_targets_equally=true", *TINY))
    resumed.on_load_checkpoint(checkpoint)
    # the third step sees mean (8 + 4) / 3 = 4 either way
    assert float(resumed.weigh_by_targets(torch.tensor(1.0), torch.tensor(4))) == pytest.approx(1.0)
    assert float(module.weigh_by_targets(torch.tensor(1.0), torch.tensor(4))) == pytest.approx(1.0)


def test_off_by_default_the_step_loss_is_the_batch_mean(compose_train):
    datamodule, module = build(compose_train(*TINY))
    assert module.weigh_targets_equally is False
    datamodule.setup("fit")
    batch = datamodule.train_set.__getitems__(list(range(8)))
    module.eval()
    plain = module.training_step(batch, 0)
    module.weigh_targets_equally = True
    module.training_step(batch, 0)  # first step: its own count is the mean, scale 1
    again = module.training_step(batch, 1)  # same batch, same count: scale 1 again
    assert torch.allclose(plain, again, rtol=1e-6)
