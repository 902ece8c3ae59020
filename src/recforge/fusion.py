"""recforge-fuse: late (weighted) fusion of two trained next-item models.

score = w * normalize(scores of run A) + (1 - w) * normalize(scores of run B), per user over all items, then the
usual full ranking with the history masked. The two runs must be on the same data and split (their evaluation
samples are compared). ``weight=null`` chooses w on the validation samples from a grid (``weights``) by
``objective``; the test samples are then ranked with that w only, so the test set plays no part in the choice.
w = 1 and w = 0 are the two models alone, so the validation table also shows what fusion adds.

Normalisation matters when the two score scales differ (a SASRec logit against an ItemKNN similarity sum):
:class:`ZScore` (default) standardises each user's scores over the real items, :class:`MinMax` maps them to
[0, 1], :class:`Identity` leaves them.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from recforge.data.datamodule import EvalSamples, SequenceDataModule
from recforge.errors import RecforgeError
from recforge.evaluation.metrics import set_ranking_metrics
from recforge.evaluation.ranking import rank_targets
from recforge.models.module import NextItemModule
from recforge.run.build import build
from recforge.run.checkpoints import load_checkpoint
from recforge.run.cli import user_errors
from recforge.run.load import find_checkpoint, load_run_config, load_weights
from recforge.run.records import run_info, write_json

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------- normalisations


class ZScore:
    """Each row standardised over the real items (columns 1..N): (s - mean) / std; column 0 stays -inf."""

    def __call__(self, scores: Tensor) -> Tensor:
        """scores: (B, N+1) -> (B, N+1)."""
        real = scores[:, 1:].double()  # (B, N)
        std = real.std(dim=1, keepdim=True, unbiased=False)  # (B, 1)
        out = (real - real.mean(dim=1, keepdim=True)) / torch.where(std > 0, std, torch.ones_like(std))
        return _with_padding(out)


class MinMax:
    """Each row mapped to [0, 1] over the real items: (s - min) / (max - min); column 0 stays -inf."""

    def __call__(self, scores: Tensor) -> Tensor:
        """scores: (B, N+1) -> (B, N+1)."""
        real = scores[:, 1:].double()  # (B, N)
        low, high = real.min(dim=1, keepdim=True).values, real.max(dim=1, keepdim=True).values  # (B, 1)
        span = high - low
        return _with_padding((real - low) / torch.where(span > 0, span, torch.ones_like(span)))


class Identity:
    """The raw scores (float64); use when both models score on the same scale."""

    def __call__(self, scores: Tensor) -> Tensor:
        return scores.double()


def _with_padding(real: Tensor) -> Tensor:
    """(B, N) -> (B, N+1) with column 0 (padding) at -inf."""
    return torch.cat([torch.full_like(real[:, :1], float("-inf")), real], dim=1)


# ------------------------------------------------------------------------------------------- pure fusion


def fused_ranks(a: Tensor, b: Tensor, weights: list[float], targets: Tensor, history: Tensor | None,
                fill: float = float("-inf")) -> Tensor:
    """Ranks of the targets under w * a + (1 - w) * b for every w (a and b already normalised, (B, N+1)).
    Returns (W, B) int64; ties count against the target, history masked (at ``fill``) as in training's evaluation."""
    ranks = []
    for w in weights:
        fused = w * a + (1.0 - w) * b  # (B, N+1); column 0 stays -inf
        ranks.append(rank_targets(fused, targets, history, fill))
    return torch.stack(ranks)  # (W, B)


def choose_weight(metrics_by_weight: dict[float, dict[str, float]], objective: str) -> float:
    """The weight with the highest ``objective``; a tie goes to the weight nearest 0.5 (the even blend)."""
    if not metrics_by_weight:
        raise ValueError("no weights to choose from")
    best = max(v[objective] for v in metrics_by_weight.values())
    tied = [w for w, v in metrics_by_weight.items() if v[objective] == best]
    return min(tied, key=lambda w: (abs(w - 0.5), w))


# ------------------------------------------------------------------------------------------- loading runs


@dataclass
class LoadedRun:
    run_dir: Path
    cfg: DictConfig
    datamodule: SequenceDataModule
    module: NextItemModule


def load_run(run_dir: Path, checkpoint: str, overrides: list[str]) -> LoadedRun:
    """A finished next-item run rebuilt from its config: data, model and (when it trained) its weights."""
    cfg = load_run_config(run_dir, overrides)
    L.seed_everything(cfg.seed, workers=True)
    datamodule, module = build(cfg)
    if not isinstance(module, NextItemModule):
        raise RecforgeError(f"runs: {run_dir} is a {type(module).__name__} run; late fusion ranks next items, "
                            "so both runs must be next-item runs (task=next_item).")
    if module.trainable:
        ckpt = find_checkpoint(run_dir, checkpoint)
        load_weights(module, load_checkpoint(ckpt)["state_dict"], ckpt, run_dir)
    module.fit_parts(datamodule)  # parts whose state is computed from the training data (popularity, ItemKNN)
    module.eval()
    return LoadedRun(run_dir, cfg, datamodule, module)


def check_same_samples(a: LoadedRun, b: LoadedRun, split: str) -> None:
    """Both runs must evaluate the same (user, target) samples over the same item ids."""
    sa, sb = _samples(a, split), _samples(b, split)
    same = (a.datamodule.num_items == b.datamodule.num_items and torch.equal(sa.items, sb.items)
            and torch.equal(sa.indptr, sb.indptr) and torch.equal(sa.users, sb.users)
            and torch.equal(sa.positions, sb.positions))
    if not same:
        raise RecforgeError(
            f"runs: {a.run_dir} and {b.run_dir} were trained on different data or splits "
            f"({a.datamodule.name}: {len(sa)} {split} samples over {a.datamodule.num_items} items; "
            f"{b.datamodule.name}: {len(sb)} over {b.datamodule.num_items}); fuse runs of the same dataset and split."
        )


def _samples(run: LoadedRun, split: str) -> EvalSamples:
    samples = run.datamodule.val_set if split == "val" else run.datamodule.test_set
    if samples.target_indptr is not None:
        raise RecforgeError(f"run {run.run_dir}: its samples have sets of targets (a global time split); "
                            "recforge-fuse ranks one target per sample (leave-one-out or temporal_ratio runs).")
    return samples


@torch.no_grad()
def split_ranks(a: LoadedRun, b: LoadedRun, split: str, weights: list[float], normalize: Any,
                batch_size: int) -> Tensor:
    """(W, S) ranks of every ``split`` sample under every weight. Each run reads its own input window (the two
    may use different max_len) of the same samples."""
    sa, sb = _samples(a, split), _samples(b, split)
    fill = a.module.history_fill  # None: no history mask
    out = []
    for start in range(0, len(sa), batch_size):
        index = list(range(start, min(start + batch_size, len(sa))))
        ba, bb = sa.__getitems__(index), sb.__getitems__(index)
        scores_a = normalize(a.module.score(ba["input"], ba["user"]))  # (B, N+1)
        scores_b = normalize(b.module.score(bb["input"], bb["user"]))  # (B, N+1)
        history = ba["history"] if fill is not None else None
        fill_value = -math.inf if fill is None else fill
        out.append(fused_ranks(scores_a, scores_b, weights, ba["target"], history, fill_value))
    return torch.cat(out, dim=1)  # (W, S)


def unreachable_fraction(run: LoadedRun, split: str, batch_size: int) -> float:
    """The fraction of ``split`` samples whose target the run's history mask makes unreachable (the same for every
    weight: the mask depends on the history alone)."""
    samples = _samples(run, split)
    starts = range(0, len(samples), batch_size)
    batches = (list(range(start, min(start + batch_size, len(samples)))) for start in starts)
    flags = [run.module.unreachable_targets(samples.__getitems__(index)) for index in batches]
    return torch.cat(flags).double().mean().item() if flags else math.nan


def fuse(cfg: DictConfig, out: Path) -> dict[str, Any]:
    runs = [Path(r) for r in cfg.runs]
    if len(runs) != 2:
        raise RecforgeError(f"runs={list(cfg.runs)}: late fusion takes exactly two run directories.")
    weights = [float(cfg.weight)] if cfg.weight is not None else [float(w) for w in cfg.weights]
    bad = [w for w in weights if not 0.0 <= w <= 1.0 or math.isnan(w)]
    if bad or not weights:
        raise RecforgeError(f"weight/weights: {bad or weights} — every fusion weight must be in [0, 1].")
    a, b = (load_run(r, cfg.checkpoint, list(cfg.overrides)) for r in runs)
    ks = list(a.cfg.evaluation.ks)
    if cfg.objective.split("@")[0] not in ("hr", "recall", "ndcg", "mrr") or int(cfg.objective.split("@")[1]) not in ks:
        raise RecforgeError(f"objective={cfg.objective} must be a ranking metric at one of the runs' ks {ks}, e.g. ndcg@10.")
    normalize = instantiate(cfg.normalize)
    batch_size = int(cfg.batch_size)
    for split in ("val", "test"):
        check_same_samples(a, b, split)
    unreachable = {split: unreachable_fraction(a, split, batch_size) for split in ("val", "test")}

    def metrics(ranks: Tensor, split: str) -> dict[str, float]:
        """The ranking metrics of a training run (one target per sample: hr, recall, ndcg, mrr, precision, map);
        no beyond-accuracy ones (the fused top lists are not kept)."""
        return {**set_ranking_metrics(ranks.unsqueeze(1), ks), "unreachable": unreachable[split]}

    val_ranks = split_ranks(a, b, "val", weights, normalize, batch_size)  # (W, S_val)
    val = {w: metrics(val_ranks[i], "val") for i, w in enumerate(weights)}
    weight = choose_weight(val, cfg.objective)
    chosen = [weight, 1.0, 0.0]  # the fusion, then each model alone (for the comparison)
    test_ranks = split_ranks(a, b, "test", chosen, normalize, batch_size)
    result = {
        "runs": [str(r) for r in runs],
        "normalize": OmegaConf.to_container(cfg.normalize),
        "weight": weight,
        "weight_chosen_on": "given" if cfg.weight is not None else f"val/{cfg.objective}",
        "val": {str(w): m for w, m in val.items()},
        "test": metrics(test_ranks[0], "test"),
        "test_alone": {str(runs[0]): metrics(test_ranks[1], "test"), str(runs[1]): metrics(test_ranks[2], "test")},
        "samples": {"val": int(val_ranks.shape[1]), "test": int(test_ranks.shape[1])},
        "run_info": run_info(a.cfg.paths.root_dir),
    }
    write_json(out / "metrics.json", result)
    return result


@hydra.main(version_base="1.3", config_path="conf", config_name="fuse")
def main(cfg: DictConfig) -> None:
    out = Path(HydraConfig.get().runtime.output_dir)
    with user_errors(out):
        result = fuse(cfg, out)
        log.info("weight %s (%s); test: %s", result["weight"], result["weight_chosen_on"], result["test"])
        log.info("written: %s", out / "metrics.json")


if __name__ == "__main__":
    main()
