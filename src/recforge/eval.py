"""recforge-eval: re-test a finished run's checkpoint with the run's own config, overrides applied before resolving.

Writes ``metrics.json`` in ``<run_dir>/eval/<time>/`` and prints the metrics. One process by default, whatever
the run trained on; ``'overrides=["trainer.devices=2"]'`` evaluates data-parallel with the same metrics (each
sample counted once).
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from recforge.errors import RecforgeError
from recforge.models.module import NextItemModule
from recforge.models.multi_module import MultiTaskModule
from recforge.run.build import build
from recforge.run.checkpoints import load_checkpoint
from recforge.run.cli import user_errors
from recforge.run.load import find_checkpoint, load_run_config, load_weights
from recforge.run.progress import quiet_lightning
from recforge.run.records import run_info, write_json
from recforge.run.validate import validate_config

log = logging.getLogger(__name__)


def evaluate(run_dir: Path, checkpoint: str, split: str, overrides: list[str], out: Path) -> dict[str, float]:
    if split not in ("val", "test"):
        raise RecforgeError(f"split={split} must be 'val' or 'test'.")
    cfg = load_run_config(run_dir, overrides)
    validate_config(cfg)  # a bad override value is named in one line, before any data is read
    # a model with nothing to train (popularity, ItemKNN) has no checkpoint: it is fitted from the training data
    untrained = checkpoint in ("best", "last") and not any((run_dir / "checkpoints").glob("*.ckpt"))
    ckpt = None if untrained else find_checkpoint(run_dir, checkpoint)
    state = load_checkpoint(ckpt)["state_dict"] if ckpt else None  # a damaged file fails here, before the data
    L.seed_everything(cfg.seed, workers=True)
    datamodule, module = build(cfg)
    if ckpt is None and module.trainable:
        find_checkpoint(run_dir, checkpoint)  # a trained model's missing checkpoint: its one-line error
    if ckpt is not None and state is not None:
        load_weights(module, state, ckpt, run_dir)
    with open_dict(cfg):
        cfg.trainer.default_root_dir = str(out)
    quiet_lightning()  # no start-up tips and device lines (the run's callbacks are not used here)
    trainer = hydra.utils.instantiate(cfg.trainer, logger=False, callbacks=[])
    loader = datamodule.val_dataloader() if split == "val" else datamodule.test_dataloader()
    if isinstance(module, NextItemModule | MultiTaskModule):  # setup() gets no datamodule here: data-fitted parts
        module.fit_parts(datamodule)  # (popularity counts, ItemKNN), the beyond-accuracy metrics' popularity, cold items
    if isinstance(module, NextItemModule) and module.sampled is not None:  # the split is trainer.test's "test" stage
        module.sampled.fit(datamodule.training_data.item_counts, {"test": (split, loader.dataset)})
    with warnings.catch_warnings():  # Lightning's advice against DDP testing: samples it repeats count once here
        warnings.filterwarnings("ignore", message="Using `DistributedSampler` with the dataloaders")
        trainer.test(module, dataloaders=loader)  # under DDP every process ends with the metrics of all samples
    metrics = module.test_metrics
    if trainer.is_global_zero:
        write_json(out / "metrics.json", {"split": split, "checkpoint": str(ckpt) if ckpt else None, "metrics": metrics,
                                          "samples": module.evaluated_samples["test"], "overrides": overrides,
                                          "evaluation": OmegaConf.to_container(cfg.evaluation, resolve=True),
                                          "processes": trainer.world_size, "run_info": run_info(cfg.paths.root_dir)})
    return metrics


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    out = Path(HydraConfig.get().runtime.output_dir)
    with user_errors(out):
        metrics = evaluate(Path(cfg.run_dir), cfg.checkpoint, cfg.split, list(cfg.overrides), out)
        log.info("%s metrics: %s", cfg.split, metrics)


if __name__ == "__main__":
    main()
