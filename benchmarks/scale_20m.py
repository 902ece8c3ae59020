"""Scale check at MovieLens-20M size: generate -> preprocess -> cache -> split/tensors -> one training epoch with
a sampled loss -> full-ranking evaluation of every user (validation and test); wall time and peak memory per stage.

    OMP_NUM_THREADS=2 python benchmarks/scale_20m.py                  # 138,000 users, 27,000 items, ~20.0M rows
    OMP_NUM_THREADS=1 python benchmarks/scale_20m.py --scale 0.05     # 1/20 of the users (a quick check)

The run is composed from recforge's own configs (``dataset=synthetic_20m``, SASRec, ``loss=bce`` with uniform
negatives, Adam) and driven through the library stage by stage, so every stage is timed apart; the Lightning fit
loop is the one ``recforge-train`` runs (one epoch, then validation over all users), followed by ``trainer.test``
over all users. Peak memory per stage is the kernel's resident high-water mark (``VmHWM``), reset at the start of
each stage (``/proc/self/clear_refs``). Resetting it also resets what ``getrusage`` reports for this process, so the
overall ``peak_rss_gib`` is the largest of the stage peaks and of ``ru_maxrss`` (this process and its children).
Writes ``<out>.json`` and ``<out>.md`` (a markdown table). Extra arguments are Hydra overrides.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra import compose, initialize_config_module
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

from recforge.data.datamodule import SequenceDataModule, _save_cache
from recforge.run.build import build_module

FULL_USERS = 138_000
GIB = 2**30


# ------------------------------------------------------------------------------------------- memory and time


def _status_kib(field: str) -> int | None:
    """A ``/proc/self/status`` field in KiB (Linux), or None."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    """Reset this process's resident high-water mark (Linux >= 4.0); False when not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def process_peak_gib() -> float:
    """Peak resident memory of this process (since the last high-water-mark reset) and of its finished children
    (ru_maxrss is in KiB on Linux)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 2**20


class Stages:
    """Wall time and resident-memory peak of named stages, in the order they ran."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self._open: dict[str, float] = {}

    def start(self, name: str) -> None:
        self._open[name] = time.perf_counter()
        self._resettable = _reset_peak()

    def stop(self, name: str, **extra: Any) -> None:
        seconds = time.perf_counter() - self._open.pop(name)
        peak = _status_kib("VmHWM") if self._resettable else None
        row = {"stage": name, "seconds": round(seconds, 2),
               "peak_rss_gib": round(peak / 2**20, 3) if peak is not None else None,
               "rss_after_gib": round((_status_kib("VmRSS") or 0) / 2**20, 3), **extra}
        self.rows.append(row)
        print(f"[scale_20m] {name}: {row['seconds']:.1f} s, peak {row['peak_rss_gib']} GiB {extra or ''}",
              file=sys.stderr, flush=True)

    @contextmanager
    def time(self, name: str, **extra: Any) -> Iterator[dict[str, Any]]:
        notes: dict[str, Any] = dict(extra)
        self.start(name)
        yield notes
        self.stop(name, **notes)


class StageTimer(L.Callback):
    """Times the training epoch and the validation inside ``trainer.fit`` as two stages; logs progress."""

    def __init__(self, stages: Stages, every: int = 100) -> None:
        self.stages, self.every = stages, every
        self.batches = 0

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.stages.start("train one epoch")
        self.started, self.batches = time.perf_counter(), 0

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *args: Any) -> None:
        self.batches += 1
        if self.batches % self.every == 0:
            total = trainer.num_training_batches
            elapsed = time.perf_counter() - self.started
            print(f"[scale_20m]   batch {self.batches}/{total}, {elapsed:.0f} s, "
                  f"eta {elapsed / self.batches * (total - self.batches):.0f} s", file=sys.stderr, flush=True)

    def on_validation_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *args: Any) -> None:
        self._eval_progress(trainer, "validation", trainer.num_val_batches)

    def on_test_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *args: Any) -> None:
        self._eval_progress(trainer, "test", trainer.num_test_batches)

    def on_test_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.eval_started, self.eval_batches = time.perf_counter(), 0

    def _eval_progress(self, trainer: L.Trainer, stage: str, totals: list[int | float]) -> None:
        self.eval_batches += 1
        if self.eval_batches % max(1, self.every // 4) == 0:
            total, elapsed = int(sum(totals)), time.perf_counter() - self.eval_started
            print(f"[scale_20m]   {stage} batch {self.eval_batches}/{total}, {elapsed:.0f} s, "
                  f"eta {elapsed / self.eval_batches * (total - self.eval_batches):.0f} s", file=sys.stderr, flush=True)

    def on_validation_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.eval_started, self.eval_batches = time.perf_counter(), 0
        windows = len(trainer.datamodule.train_set)
        epoch_batches = -(-windows // trainer.datamodule.batch_size)  # fewer only with limit_train_batches
        self.stages.stop("train one epoch", batches=self.batches, epoch_batches=epoch_batches, samples=windows)
        self.stages.start("validation, all users")

    def on_validation_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        pass  # the module computes its metrics in its own hook, after this one: stopped in run()


# ------------------------------------------------------------------------------------------- the run


SAMPLED_LOSSES = ("bce", "bpr", "sampled_softmax")  # the losses with loss.sampler.num_negatives


def compose_run(args: argparse.Namespace, cache_dir: str, out_dir: str) -> DictConfig:
    """recforge's train config for this benchmark (plus the user's Hydra overrides)."""
    overrides = [
        "dataset=synthetic_20m", f"dataset.reader.num_users={round(FULL_USERS * args.scale)}",
        f"dataset.max_len={args.max_len}", f"dataset.batch_size={args.batch_size}",
        f"dataset.eval_batch_size={args.eval_batch_size}", "encoder=sasrec", "hidden_size=64",
        "encoder.num_layers=2", "encoder.num_heads=2", f"loss={args.loss}",
        # full CE draws no negatives; the in-batch sampler takes the batch's targets
        *([f"loss.sampler.num_negatives={args.num_negatives}"]
          if args.loss in SAMPLED_LOSSES and _sampler(args.overrides) != "in_batch" else []),
        "trainer.max_epochs=1", "logger=none", "callbacks=none",
        f"evaluation.item_chunk_size={args.item_chunk_size}", *args.overrides,
    ]
    with initialize_config_module("recforge.conf", version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.root_dir = str(Path.cwd())
        cfg.paths.output_dir = out_dir
        cfg.paths.cache_dir = cache_dir
    return cfg


def run(args: argparse.Namespace) -> dict[str, Any]:
    stages = Stages()
    with tempfile.TemporaryDirectory(prefix="recforge-scale-") as tmp:
        cfg = compose_run(args, f"{tmp}/cache", f"{tmp}/run")
        L.seed_everything(cfg.seed, workers=True)
        torch.set_float32_matmul_precision("high")
        building: SequenceDataModule = instantiate(cfg.dataset)

        with stages.time("generate") as notes:
            frame = building.reader.read()
            notes["rows"] = len(frame)
        with stages.time("preprocess (dedup, k-core, CSR)"):
            built = building.preprocess(frame)
            del frame
        with stages.time("write cache") as notes:
            path = building.cache_path()
            assert path is not None
            _save_cache(path, *built)
            notes["cache_mib"] = round(path.stat().st_size / 2**20, 1)
            del built, building

        datamodule: SequenceDataModule = instantiate(cfg.dataset)  # a fresh run: finds the cache
        with stages.time("load cache"):
            datamodule.prepare_data()
        with stages.time("split + tensors") as notes:
            datamodule.setup("fit")
            notes.update(train_windows=len(datamodule.train_set), val_samples=len(datamodule.val_set),
                         test_samples=len(datamodule.test_set))

        module = build_module(cfg, datamodule.num_items)
        timer = StageTimer(stages, every=args.progress_every)
        trainer = instantiate(cfg.trainer, logger=False, callbacks=[timer], enable_checkpointing=False,
                              enable_progress_bar=False, enable_model_summary=False)
        trainer.fit(module, datamodule=datamodule)
        stages.stop("validation, all users", samples=module.evaluated_samples.get("val"))
        val = dict(module.val_history[-1][1]) if module.val_history else {}
        with stages.time("test, all users") as notes:
            trainer.test(module, datamodule=datamodule, verbose=False)
            notes["samples"] = module.evaluated_samples.get("test")
        test = dict(module.test_metrics)

    return {
        "stages": stages.rows,
        "peak_rss_gib": round(max([process_peak_gib()] + [row["peak_rss_gib"] or 0 for row in stages.rows]), 3),
        "total_seconds": round(sum(row["seconds"] for row in stages.rows), 1),
        "dataset": datamodule.stats,
        "metrics": {"val": val, "test": test},
        "setup": {
            "scale": args.scale, "encoder": "SASRec", "hidden_size": 64, "num_layers": 2, "num_heads": 2,
            "max_len": args.max_len, "batch_size": args.batch_size, "eval_batch_size": args.eval_batch_size,
            "loss": args.loss, "num_negatives": args.num_negatives, "item_chunk_size": args.item_chunk_size,
            "overrides": args.overrides, "torch_threads": torch.get_num_threads(),
        },
        "machine": machine(),
    }


def machine() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in _lines("/proc/cpuinfo") if line.startswith("model name")), "")
    mem = _status_total_gib()
    return {"date": dt.datetime.now().isoformat(timespec="seconds"), "cpu": cpu, "cores": os.cpu_count(),
            "memory_gib": mem, "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(), "torch": torch.__version__, "lightning": L.__version__}


def _lines(path: str) -> list[str]:
    try:
        return Path(path).read_text().splitlines()
    except OSError:
        return []


def _status_total_gib() -> float | None:
    for line in _lines("/proc/meminfo"):
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / 2**20, 1)
    return None


# ------------------------------------------------------------------------------------------- report


def markdown(result: dict[str, Any], command: str) -> str:
    """The run as markdown: command, machine, data, model, then one table row per stage."""
    stats, setup, mach = result["dataset"], result["setup"], result["machine"]
    machine_line = (f"Machine: {mach['cpu']}, {mach['cores']} cores, {mach['memory_gib']} GiB; torch {mach['torch']}, "
                    f"lightning {mach['lightning']}, {setup['torch_threads']} torch thread{'' if setup['torch_threads'] == 1 else 's'}; {mach['date']}; "
                    f"load average at the end {mach['load_average_at_end']}.")
    data_line = (f"Data: {stats['users']:,} users, {stats['items']:,} items, {stats['interactions']:,} interactions "
                 f"(mean length {stats['mean_length']:.1f}, max {stats['max_length']}); "
                 f"{stats.get('train_windows', 0):,} training windows; {stats.get('val_samples', 0):,} validation "
                 f"and {stats.get('test_samples', 0):,} test samples (every user).")
    negatives = ("every item (full softmax)" if setup["loss"] == "ce"
                 else f"{setup['num_negatives']} negative(s) ({_sampler(setup.get('overrides', []))})")
    model_line = (f"Model: SASRec, hidden {setup['hidden_size']}, {setup['num_layers']} layers, {setup['num_heads']} "
                  f"heads, max_len {setup['max_len']}, batch {setup['batch_size']}; loss {setup['loss']} over "
                  f"{negatives}; full ranking over all items, history masked, "
                  f"eval batch {setup['eval_batch_size']}, item_chunk_size {setup['item_chunk_size']}.")
    lines = [f"Command: `{command}`", "", machine_line, "", data_line, "", model_line, "",
             "| stage | wall time | peak resident memory |", "|---|---|---|"]
    for row in result["stages"]:
        peak = f"{row['peak_rss_gib']:.2f} GiB" if row["peak_rss_gib"] is not None else "n/a"
        name = row["stage"]
        if row.get("batches", 0) < row.get("epoch_batches", 0):  # trainer.limit_train_batches: say so
            name += f" (only {row['batches']} of {row['epoch_batches']} batches)"
        lines.append(f"| {name} | {_duration(row['seconds'])} | {peak} |")
    total = _duration(result["total_seconds"])
    lines.append(f"| **total** | **{total}** | **{result['peak_rss_gib']:.2f} GiB** (process peak) |")
    val, test = result["metrics"]["val"], result["metrics"]["test"]
    if val or test:
        nan = float("nan")
        lines += ["", (f"After one epoch: val NDCG@10 {val.get('ndcg@10', nan):.4f}, test NDCG@10 "
                       f"{test.get('ndcg@10', nan):.4f}, test HR@10 {test.get('hr@10', nan):.4f}.")]
    return "\n".join(lines) + "\n"


def _sampler(overrides: list[str]) -> str:
    """The negative sampler named by a loss/sampler=... override (uniform unless one is given)."""
    chosen = [o.split("=", 1)[1] for o in overrides if o.startswith("loss/sampler=")]
    return chosen[-1] if chosen else "uniform"


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min ({seconds:.0f} s)"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="share of the 138,000 users (interactions follow)")
    parser.add_argument("--max-len", type=int, default=200, help="SASRec window (ML-20M's recforge config: 200)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--eval-batch-size", type=int, default=1024)
    parser.add_argument("--item-chunk-size", type=int, default=8192, help="evaluation.item_chunk_size")
    parser.add_argument("--loss", choices=["bce", "bpr", "sampled_softmax", "ce"], default="bce",
                        help="sampled_softmax: K shared negatives (--num-negatives, loss/sampler=... to change the "
                             "sampler); ce: full softmax over every item")
    parser.add_argument("--num-negatives", type=int, default=1)
    parser.add_argument("--progress-every", type=int, default=100, help="print progress every N training batches")
    parser.add_argument("--out", type=Path, default=None,
                        help="output path without suffix (default outputs/benchmarks/scale_20m-<scale>)")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides, e.g. optimizer.lr=0.002")
    args = parser.parse_args(argv)
    if not 0 < args.scale <= 10:
        parser.error(f"--scale={args.scale} must be in (0, 10].")
    out = args.out or Path("outputs/benchmarks") / f"scale_20m-{args.scale:g}"
    result = run(args)
    command = "python benchmarks/scale_20m.py " + " ".join(sys.argv[1:] if argv is None else argv)
    result["command"] = command.strip()
    json_path, md_path = Path(f"{out}.json"), Path(f"{out}.md")  # not with_suffix: "scale_20m-0.05"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    md_path.write_text(markdown(result, command.strip()))
    print(markdown(result, command.strip()))
    print(f"wrote {json_path} and {md_path}", file=sys.stderr)


if __name__ == "__main__":
    main()
