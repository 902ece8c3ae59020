"""Loading a finished run: its checkpoint files, its config with overrides applied before resolving, and its
weights into a freshly built model."""
from __future__ import annotations

import re
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from recforge.errors import RecforgeError
from recforge.models.pruning import make_permanent, restore_pruning
from recforge.run.checkpoints import state_dict_mismatch


def find_checkpoint(run_dir: Path, which: str) -> Path:
    """Resolve ``best`` (the one non-``last`` checkpoint), ``last`` or an explicit path."""
    if which not in ("best", "last"):
        path = Path(which)
    else:
        ckpts = sorted((run_dir / "checkpoints").glob("*.ckpt"))
        named = [p for p in ckpts if (p.stem == "last") == (which == "last")]
        path = named[-1] if named else run_dir / "checkpoints" / f"{which}.ckpt"
    if not path.is_file():
        raise RecforgeError(f"checkpoint={which}: no checkpoint file at {path.resolve()}.")
    return path


# evaluation runs in one process whatever the run trained on (a DDP or multi-node run too); the user's
# overrides come after, so 'overrides=["trainer.devices=2"]' evaluates data-parallel (strategy auto -> ddp)


SINGLE_PROCESS = ["trainer.devices=1", "trainer.num_nodes=1", "trainer.strategy=auto"]


RESOLVER_CALL = re.compile(r"\$\{[\w.]+:")  # ${hydra:..}, ${oc.env:..}, ${now:..}; not ${evaluation.ks}


def load_run_config(run_dir: Path, overrides: list[str]) -> DictConfig:
    """The run's config with ``overrides`` applied before interpolations are resolved, so an override reaches
    every key that follows it (``evaluation.mask_history`` reaches ``task.mask_history``).

    Built from the composed, unresolved config Hydra saved in ``.hydra/config.yaml``; interpolations through a
    resolver (``${hydra:...}``, ``${now:...}``, ``${oc.env:...}``) keep the values the run resolved
    (``config.yaml``), so paths and the data root stay the run's. A run without ``.hydra/`` has only resolved
    values: an ``evaluation.*`` override would reach nothing there and is refused."""
    config = run_dir / "config.yaml"
    if not config.is_file():
        raise RecforgeError(f"run_dir={run_dir}: {config.resolve()} is missing; is this a recforge-train run directory?")
    resolved = OmegaConf.load(config)
    composed = run_dir / ".hydra" / "config.yaml"
    if composed.is_file():
        cfg = OmegaConf.load(composed)
        pin_resolver_values(cfg, resolved)
    else:
        unreachable = [o for o in overrides if o.lstrip("+~").startswith("evaluation.")]
        if unreachable:
            raise RecforgeError(
                f"overrides={unreachable}: {run_dir} has no .hydra/config.yaml, so the keys that read evaluation.* "
                f"are already resolved and the override would change nothing; override them directly (e.g. "
                f"task.mask_history) instead.")
        cfg = resolved
    add_new_keys(cfg)
    cfg.merge_with_dotlist([*SINGLE_PROCESS, *overrides])
    return cfg  # type: ignore[return-value]


CONF = Path(__file__).resolve().parents[1] / "conf"


def add_new_keys(cfg: DictConfig) -> None:
    """Keys of ``evaluation`` and of the next-item task that recforge gained after the run was recorded, added in
    place with today's defaults, which keep the run's behaviour (``evaluation.sampled.negatives: null`` is full
    ranking), so an override of them (``evaluation.sampled.negatives=100``) reaches an older run's model."""
    defaults = OmegaConf.load(CONF / "train.yaml")
    task = OmegaConf.load(CONF / "task" / "next_item.yaml")
    if isinstance(cfg.get("evaluation"), DictConfig):
        _add_missing(cfg.evaluation, defaults.evaluation)
    if isinstance(cfg.get("task"), DictConfig) and cfg.task.get("_target_") == task._target_:
        _add_missing(cfg.task, task)


def _add_missing(node: DictConfig, defaults: DictConfig) -> None:
    for key, value in OmegaConf.to_container(defaults, resolve=False).items():  # type: ignore[union-attr]
        if key not in node:
            node[key] = value  # interpolations stay unresolved: ${evaluation.sampled.negatives} follows overrides


def pin_resolver_values(cfg: DictConfig, resolved: DictConfig) -> None:
    """Replace, in place, every value of ``cfg`` that calls a resolver (``${name:...}``) by the run's resolved
    value at the same key; plain key references (``${evaluation.ks}``) stay live."""
    for key in list(cfg.keys()):
        node = cfg._get_node(key)  # type: ignore[union-attr]
        if isinstance(node, DictConfig):
            if key in resolved and isinstance(resolved[key], DictConfig):
                pin_resolver_values(node, resolved[key])
        elif OmegaConf.is_interpolation(cfg, str(key)) and RESOLVER_CALL.search(str(node._value())):
            cfg[key] = resolved[key] if key in resolved else None


def load_weights(module: torch.nn.Module, state: dict[str, torch.Tensor], ckpt: Path, run_dir: Path) -> None:
    """Put a checkpoint's weights into the run's model; a checkpoint of another model is a user error. A pruned
    run's weights (prune.amount: weight_orig and weight_mask) are loaded with the pruning made permanent."""
    restore_pruning(module, state)
    problem = state_dict_mismatch(module.state_dict(), state)
    if problem is not None:
        raise RecforgeError(
            f"checkpoint {ckpt.resolve()} does not fit the model configured in {(run_dir / 'config.yaml').resolve()} "
            f"({problem}); pass a checkpoint written by this run."
        )
    module.load_state_dict(state)
    make_permanent(module)
