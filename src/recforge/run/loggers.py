"""What the experiment loggers receive: the resolved config at the start, the tested checkpoint's metrics at the
end (TensorBoard HParams, the W&B summary). Loggers are told apart by their classes."""
from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from recforge.run.fit import objective_value
from recforge.run.sweep import flatten


def log_config(trainer: L.Trainer, cfg: DictConfig) -> None:
    """The resolved config to every logger (W&B gets it flattened, one key per leaf), so runs compare by any key."""
    resolved: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_hyperparams(flatten(resolved))
        elif not isinstance(logger, TensorBoardLogger):  # TensorBoard gets them with the final metrics
            logger.log_hyperparams(resolved)


@rank_zero_only
def log_final_metrics(trainer: L.Trainer, cfg: DictConfig, metrics: dict[str, Any]) -> None:
    """The tested checkpoint's metrics: TensorBoard HParams gets them with the flattened config (runs compare
    offline); the W&B summary gets ``best/<objective>`` (what a W&B sweep optimises) and ``final/<stage>/<metric>``."""
    finals = {f"{stage}/{name}": value for stage in ("val", "test") for name, value in metrics.get(stage, {}).items()}
    params = {key: value if isinstance(value, (int, float, str, bool)) else str(value)
              for key, value in flatten(OmegaConf.to_container(cfg, resolve=True)).items()}  # type: ignore[arg-type]
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.log_hyperparams(params, metrics={f"hparams/{key}": value for key, value in finals.items()})
            # Lightning closed the writer after testing; this write reopened it. Close it again, or the event file
            # is left to a daemon thread that the interpreter's exit may kill before it writes.
            logger.finalize("success")
        elif isinstance(logger, WandbLogger):
            best = objective_value(metrics, cfg.objective)
            logger.experiment.summary.update({f"final/{key}": value for key, value in finals.items()})
            if best is not None:
                logger.experiment.summary[f"best/{cfg.objective}"] = best
