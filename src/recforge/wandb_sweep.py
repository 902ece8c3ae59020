"""recforge-wandb-sweep: turn a Hydra/Optuna search space into a W&B sweep config that drives recforge-train.

    recforge-wandb-sweep hparams_search=optuna experiment=beauty_sasrec > sweep.yaml
    wandb sweep sweep.yaml            # prints the sweep id
    wandb agent <entity>/<project>/<sweep id>

The agent starts ``recforge-train key=value ...`` (Hydra overrides, W&B's ``${args_no_hyphens}``) once per trial;
each trial is its own recforge run directory and its own W&B run in the sweep.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any

import yaml
from hydra import compose, initialize_config_module
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
from omegaconf import DictConfig

import recforge.run.sweep  # noqa: F401  (registers the optuna_direction resolver)
from recforge.errors import RecforgeError
from recforge.run.cli import user_errors

SEARCH_KEYS = ("hparams_search",)


def wandb_parameter(key: str, expression: str) -> dict[str, Any]:
    """One Hydra sweep expression -> one W&B sweep parameter.

    ``tag(log, interval(1e-4, 1e-2))`` -> log_uniform_values; ``interval(0, 0.5)`` -> uniform (int_uniform for
    integers); ``choice(32, 64)`` and ``range(1, 4)`` -> values; a plain value -> value.
    """
    try:
        override = OverridesParser.create().parse_override(f"{key}={expression}")
    except Exception as exc:  # Hydra's grammar error names the bad text
        raise RecforgeError(f"search space entry {key}={expression} is not a Hydra sweep expression ({exc}).") from exc
    value = override.value()
    if isinstance(value, IntervalSweep):
        low, high = value.start, value.end
        integer = isinstance(low, int) and isinstance(high, int)
        if "log" in value.tags:
            return {"distribution": "q_log_uniform_values" if integer else "log_uniform_values", "min": low, "max": high,
                    **({"q": 1} if integer else {})}
        return {"distribution": "int_uniform" if integer else "uniform", "min": low, "max": high}
    if isinstance(value, ChoiceSweep):
        return {"values": list(value.list)}
    if isinstance(value, RangeSweep):
        return {"values": list(override.sweep_iterator())}
    return {"value": value}


def to_wandb_sweep(cfg: DictConfig, fixed: list[str], method: str = "bayes", logger: str | None = "wandb") -> dict[str, Any]:
    """W&B sweep config from a composed train config (with ``hydra`` node) and the overrides every trial keeps."""
    sweeper = cfg.hydra.sweeper
    params = sweeper.get("params") or {}
    if not params:
        raise RecforgeError("the composed config has no search space (hydra.sweeper.params); add hparams_search=optuna or set the params.")
    goal = {"max": "maximize", "min": "minimize"}[cfg.objective_mode]
    command = ["${env}", "${program}", "${args_no_hyphens}", *fixed]
    if logger and not any(item.split("=", 1)[0] == "logger" for item in fixed):
        command.append(f"logger={logger}")
    sweep: dict[str, Any] = {
        "program": "recforge-train",
        "method": method,
        "metric": {"name": f"best/{cfg.objective}", "goal": goal},
        "parameters": {str(key): wandb_parameter(str(key), str(expr)) for key, expr in params.items()},
        "command": command,
    }
    if sweeper.get("n_trials"):
        sweep["run_cap"] = int(sweeper.n_trials)
    return sweep


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="recforge-wandb-sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. hparams_search=optuna experiment=beauty_sasrec")
    parser.add_argument("--method", default="bayes", choices=["bayes", "random", "grid"])
    parser.add_argument("--logger", default="wandb", help="logger option added to every trial (default wandb)")
    parser.add_argument("--out", help="write the YAML here instead of standard output")
    args = parser.parse_args(argv)
    with user_errors():
        with initialize_config_module("recforge.conf", version_base="1.3"):
            cfg = compose("train", overrides=args.overrides, return_hydra_config=True)
        fixed = [item for item in args.overrides if item.split("=", 1)[0].lstrip("+~") not in SEARCH_KEYS]
        text = yaml.safe_dump(to_wandb_sweep(cfg, fixed, args.method, args.logger), sort_keys=False)
        if args.out:
            with open(args.out, "w") as handle:
                handle.write(text)
        else:
            sys.stdout.write(text)


if __name__ == "__main__":
    main()
