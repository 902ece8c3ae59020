"""Framework overhead: recforge (Lightning Trainer + the composed Hydra config) vs a bare PyTorch loop.

Both sides train the same SASRec (the ML-100K protocol: ``experiment=ml100k_sasrec``, i.e. max_len 50, hidden 64,
2 layers, 2 heads, batch 256, full-softmax CE, Adam 1e-3) from the same initial weights on the same batches (the
same datamodule, seeded identically; checked by fingerprint) and evaluate the same weights on the same validation
batches (full ranking of every user, history masked). Repeats alternate recforge, bare, recforge, bare, ...

- recforge: ``lightning.Trainer.fit`` with the trainer, callbacks and logger that recforge-train builds from the
  config (progress bar, CSV logger, checkpointing, early stopping, validation every epoch); step time = time
  between consecutive ``on_train_batch_end`` calls of one epoch (data loading, hooks, logging, forward, backward,
  optimizer step), after ``--warmup`` steps. Evaluation = wall time of ``trainer.validate`` (verbose=False).
- bare: the same encoder/decoder/loss objects (deep copies of the same initial module), ``torch.optim.Adam``,
  ``loss.backward(); opt.step(); opt.zero_grad()`` over the same dataloader; evaluation = the encoder, decoder and
  recforge's pure ``rank_targets`` + ``ranking_metrics`` over the same validation batches under inference_mode.
  No Lightning, no Hydra, no logging.

Every timed interval is recorded as wall time (the figure the ratios are about) and as process CPU time (robust
to other processes sharing the cores; with one torch thread it is the work done). Medians over all timed steps
(or evaluations) of all repeats. The checks in the output confirm the premise: both sides saw the same batches,
had identical losses step by step (max_abs_loss_difference 0.0) and identical validation metrics.

Also: training-step GFLOP/s (FLOPs of forward + backward of every timed step counted with
``torch.utils.flop_counter.FlopCounterMode``, divided by the timed steps' time) against plain ``torch.matmul``
of the same total FLOPs (square fp32) and of the dominant op's shape (M, H) x (H, N+1); and, with ``--compile``,
a third arm: recforge with ``compile=true`` (train.py's ``compile_loss``: the training loss is compiled,
evaluation is not), including compile warm-up time (time to the first step's end).

Commands (from the project root, venv active; the machine should be idle):

  python benchmarks/overhead.py --dataset ml-100k --data-root ../shared/data \
      --out benchmarks/results/overhead_ml100k.json
  python benchmarks/overhead.py --dataset ml-100k --data-root ../shared/data --compile \
      --out benchmarks/results/overhead_ml100k_compile.json
  python benchmarks/overhead.py --dataset beauty --data-root ../shared/data \
      --out benchmarks/results/overhead_beauty.json
  # quick check of the script (seconds): tiny settings
  python benchmarks/overhead.py --dataset synthetic --steps 10 --warmup 3 --repeats 1 --eval-runs 1 --out /tmp/o.json
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from hydra import compose, initialize_config_module
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, open_dict
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from recforge.evaluation.metrics import ranking_metrics
from recforge.evaluation.ranking import rank_targets
from recforge.models.module import NextItemModule
from recforge.run.build import build, build_trainer, compile_loss
from recforge.run.loggers import log_config
from recforge.run.validate import validate_config

PROJECT = Path(__file__).resolve().parents[1]
RUN_DIRS: list[str] = []  # temporary run directories (checkpoints, CSV logs), removed at the end


# ------------------------------------------------------------------------------------------- set-up


def compose_config(dataset: str, data_root: str | None, overrides: list[str], compiled: bool) -> DictConfig:
    """What recforge-train composes for ``experiment=ml100k_sasrec`` on ``dataset`` (plus ``overrides``)."""
    args = ["experiment=ml100k_sasrec", f"dataset={dataset}", f"compile={str(compiled).lower()}"]
    if data_root is not None and dataset != "synthetic":
        args.append(f"dataset.root={Path(data_root).resolve()}")
    with initialize_config_module("recforge.conf", version_base="1.3"):
        cfg = compose("train", overrides=args + overrides)
    with open_dict(cfg):
        cfg.paths.root_dir = str(PROJECT)
        cfg.paths.output_dir = tempfile.mkdtemp(prefix="overhead-")
    RUN_DIRS.append(cfg.paths.output_dir)
    validate_config(cfg)
    return cfg


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def new_run_dir(cfg: DictConfig) -> DictConfig:
    """A copy of ``cfg`` writing into a fresh temporary run directory (checkpoints, CSV log)."""
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = tempfile.mkdtemp(prefix="overhead-")
    RUN_DIRS.append(cfg.paths.output_dir)
    return cfg


class StepClock(Callback):
    """Times between consecutive ``on_train_batch_end`` calls of one epoch after ``warmup`` steps; stops the fit
    once ``steps`` intervals are recorded. Keeps references to batches and losses (inspected after the fit).

    Every epoch's training iterator is created from the same random state on both sides (``seed + epoch``):
    creating any DataLoader iterator draws a random number, and recforge's validation between epochs creates one
    that the bare loop does not, so without this the bare loop would see the same batches only in the first
    epoch. Lightning fetches each batch just before its step when the loader has a length (its prefetcher skips
    prefetching then), and so does the bare loop: the length-bucket sampler draws from the global random state
    when it starts a new pool, so fetching one batch ahead would move that draw against the dropout draws and
    change every batch after the first pool (Beauty: from batch 50 on)."""

    def __init__(self, warmup: int, steps: int, seed: int) -> None:
        self.warmup, self.steps, self.seed = warmup, steps, seed
        self.intervals: list[float] = []
        self.cpu_intervals: list[float] = []  # process CPU time: robust to other processes sharing the cores
        self.batches: list[Tensor] = []
        self.losses: list[Tensor] = []
        self.count, self.last, self.last_cpu, self.started, self.first_step = 0, 0.0, 0.0, 0.0, float("nan")
        self.val_seconds: list[float] = []
        self._val_start = 0.0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        now, now_cpu = time.perf_counter(), time.process_time()
        self.count += 1
        if self.count == 1:
            self.first_step = now - self.started
        if batch_idx > 0 and self.count > self.warmup and len(self.intervals) < self.steps:
            self.intervals.append(now - self.last)
            self.cpu_intervals.append(now_cpu - self.last_cpu)
        self.batches.append(batch["items"])
        self.losses.append(outputs["loss"])
        if len(self.intervals) >= self.steps:
            trainer.should_stop = True
        self.last, self.last_cpu = now, now_cpu

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch > 0:  # epoch 0's iterator exists already (FitLoop.setup_data): seeded before fit
            seed_all(self.seed + trainer.current_epoch)  # see the class docstring

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._val_start = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "fit":
            self.val_seconds.append(time.perf_counter() - self._val_start)


# ------------------------------------------------------------------------------------------- recforge arm


def recforge_repeat(cfg: DictConfig, initial: NextItemModule, datamodule: L.LightningDataModule, args: argparse.Namespace,
                    compiled: bool) -> dict[str, Any]:
    """One recforge repeat: fit (timed steps) and ``eval_runs`` timed ``trainer.validate`` calls."""
    cfg = new_run_dir(cfg)
    module = copy.deepcopy(initial)
    if compiled:
        compile_loss(module)
    clock = StepClock(args.warmup, args.steps, args.seed)
    trainer = build_trainer(cfg)
    trainer.callbacks.append(clock)
    log_config(trainer, cfg)
    seed_all(args.seed)
    clock.started = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    fit_seconds = time.perf_counter() - clock.started
    eval_times, eval_cpu = [], []
    for _ in range(args.eval_runs):
        started, started_cpu = time.perf_counter(), time.process_time()
        trainer.validate(module, datamodule=datamodule, verbose=False)
        eval_times.append(time.perf_counter() - started)
        eval_cpu.append(time.process_time() - started_cpu)
    metrics = dict(module.val_history[-1][1])  # float64, as computed (the logged copies are float32)
    return {"step_seconds": clock.intervals, "step_cpu_seconds": clock.cpu_intervals,
            "first_step_seconds": clock.first_step, "fit_seconds": fit_seconds,
            "in_fit_validation_seconds": clock.val_seconds, "eval_seconds": eval_times, "eval_cpu_seconds": eval_cpu,
            "metrics": metrics,
            "batches": clock.batches, "losses": [float(v) for v in clock.losses], "module": module}


# ------------------------------------------------------------------------------------------- bare arm


def training_loss(encoder: nn.Module, decoder: nn.Module, loss_fn: nn.Module, window: Tensor) -> Tensor:
    """The loss of one batch, as ``NextItemModule.training_step`` computes it (without logging)."""
    inputs, targets = encoder.training_pairs(window)  # (B, L), (B, L)
    hidden = encoder(inputs)  # (B, L, H)
    valid = targets > 0  # (B, L)
    return loss_fn(hidden[valid], targets[valid], decoder)


def bare_train(initial: NextItemModule, datamodule: Any, args: argparse.Namespace) -> dict[str, Any]:
    """The same parts, batches and optimizer in a plain loop; step time measured like :class:`StepClock`."""
    encoder, decoder, loss_fn = copy.deepcopy((initial.encoder, initial.decoder, initial.loss))  # tying kept
    params = list({id(p): p for part in (encoder, decoder, loss_fn) for p in part.parameters() if p.requires_grad}.values())
    opt = initial.optimizer_factory(params=params)  # the config's torch.optim.Adam(lr=1e-3, weight_decay=0)
    for part in (encoder, decoder, loss_fn):
        part.train()
    loader = datamodule.train_dataloader()
    intervals: list[float] = []
    cpu_intervals: list[float] = []
    batches: list[Tensor] = []
    losses: list[Tensor] = []
    count, last, last_cpu, first_step, epoch = 0, 0.0, 0.0, float("nan"), 0
    started = time.perf_counter()
    while len(intervals) < args.steps:
        seed_all(args.seed + epoch)  # as StepClock.on_train_epoch_start
        epoch += 1
        for batch_idx, batch in enumerate(loader):
            loss = training_loss(encoder, decoder, loss_fn, batch["items"])
            loss.backward()
            opt.step()
            opt.zero_grad()
            now, now_cpu = time.perf_counter(), time.process_time()
            count += 1
            if count == 1:
                first_step = now - started
            if batch_idx > 0 and count > args.warmup:
                intervals.append(now - last)
                cpu_intervals.append(now_cpu - last_cpu)
            batches.append(batch["items"])
            losses.append(loss.detach())
            last, last_cpu = now, now_cpu
            if len(intervals) >= args.steps:
                break
    return {"step_seconds": intervals, "step_cpu_seconds": cpu_intervals, "first_step_seconds": first_step,
            "batches": batches,
            "losses": [float(v) for v in losses], "params": params}


@torch.inference_mode()
def bare_eval(encoder: nn.Module, decoder: nn.Module, loader: Any, ks: list[int], mask_history: bool) -> dict[str, float]:
    """Full ranking of every validation sample with recforge's pure ranking functions."""
    ranks, index = [], []
    for batch in loader:
        hidden = encoder.final_state(encoder.inference_input(batch["input"]))  # (B, H), as recforge evaluates
        scores = decoder(hidden).float()  # (B, N+1)
        ranks.append(rank_targets(scores, batch["target"], batch["history"] if mask_history else None))  # (B,)
        index.append(batch["index"])
    # by sample index, as recforge's accumulator orders them: the float64 means then sum in the same order
    return ranking_metrics(torch.cat(ranks)[torch.argsort(torch.cat(index))], ks)


def bare_eval_repeat(module: NextItemModule, datamodule: Any, cfg: DictConfig, runs: int) -> dict[str, Any]:
    encoder, decoder = copy.deepcopy((module.encoder, module.decoder))
    encoder.eval(), decoder.eval()
    times, cpu, metrics = [], [], {}
    for _ in range(runs):
        started, started_cpu = time.perf_counter(), time.process_time()
        metrics = bare_eval(encoder, decoder, datamodule.val_dataloader(), list(cfg.evaluation.ks),
                            cfg.evaluation.mask_history)
        times.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
    return {"eval_seconds": times, "eval_cpu_seconds": cpu, "metrics": metrics}


# ------------------------------------------------------------------------------------------- FLOPs, matmul


def step_flops(initial: NextItemModule, windows: list[Tensor]) -> list[int]:
    """FLOPs of forward + backward of the training step on each window batch (cached per distinct shape)."""
    encoder, decoder, loss_fn = copy.deepcopy((initial.encoder, initial.decoder, initial.loss))
    cache: dict[tuple[int, ...], int] = {}
    flops = []
    for window in windows:
        key = (*window.shape, int((window[:, :-1] > 0).sum()))
        if key not in cache:
            counter = FlopCounterMode(display=False)
            with counter:
                training_loss(encoder, decoder, loss_fn, window).backward()
            cache[key] = counter.get_total_flops()
        flops.append(cache[key])
    return flops


def matmul_gflops(m: int, k: int, n: int, repeats: int = 20) -> dict[str, Any]:
    """Median GFLOP/s of ``torch.matmul`` of fp32 (m, k) x (k, n)."""
    a, b = torch.randn(m, k), torch.randn(k, n)
    for _ in range(3):
        torch.matmul(a, b)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        torch.matmul(a, b)
        times.append(time.perf_counter() - started)
    seconds = statistics.median(times)
    return {"shape": [m, k, n], "flops": 2 * m * k * n, "median_seconds": seconds, "gflops_per_s": 2 * m * k * n / seconds / 1e9}


# ------------------------------------------------------------------------------------------- report


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def fingerprint(batches: list[Tensor]) -> list[tuple[int, ...]]:
    return [(*b.shape, int(b.sum()), int((b * torch.arange(b.shape[1])).sum())) for b in batches]


def summarise(arms: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, repeats in arms.items():
        out[name] = {
            "step_ms_median": 1e3 * median([s for r in repeats for s in r["step_seconds"]]),
            "step_ms_median_per_repeat": [1e3 * median(r["step_seconds"]) for r in repeats],
            "eval_ms_median": 1e3 * median([s for r in repeats for s in r.get("eval_seconds", [])]),
            "step_cpu_ms_median": 1e3 * median([s for r in repeats for s in r["step_cpu_seconds"]]),
            "eval_cpu_ms_median": 1e3 * median([s for r in repeats for s in r.get("eval_cpu_seconds", [])]),
            "eval_ms_per_repeat": [[1e3 * s for s in r.get("eval_seconds", [])] for r in repeats],
            "first_step_s": [r["first_step_seconds"] for r in repeats],
        }
    return out


def machine() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "lightning": L.__version__,
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "load_average": os.getloadavg(), "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def markdown(result: dict[str, Any]) -> str:
    s, r = result["summary"], result["ratios"]
    def row(name: str, a: dict[str, float]) -> str:
        return (f"| {name} | {a['step_ms_median']:.2f} | {a['eval_ms_median']:.1f} | {a['step_cpu_ms_median']:.2f} "
                f"| {a['eval_cpu_ms_median']:.1f} |")

    rows = [
        "| arm | train step, ms | evaluation of all users, ms | train step, CPU ms | evaluation, CPU ms |",
        "|---|---|---|---|---|",
        row("recforge (Lightning)", s["recforge"]),
        row("bare PyTorch loop", s["bare"]),
        f"| ratio recforge / bare | {r['step']:.3f} | {r['eval']:.3f} | {r['step_cpu']:.3f} | {r['eval_cpu']:.3f} |",
    ]
    if "recforge_compiled" in s:
        rows.append(row("recforge, compile=true", s["recforge_compiled"]))
    f = result["flops"]
    rows += [
        "",
        "| measure | GFLOP/s |",
        "|---|---|",
        f"| training step, recforge ({f['step_gflop']:.2f} GFLOP per step) | {f['recforge_gflops_per_s']:.1f} |",
        f"| training step, bare loop | {f['bare_gflops_per_s']:.1f} |",
        f"| torch.matmul square fp32 {f['matmul_square']['shape']} | {f['matmul_square']['gflops_per_s']:.1f} |",
        f"| torch.matmul dominant op {f['matmul_dominant']['shape']} | {f['matmul_dominant']['gflops_per_s']:.1f} |",
        f"| recforge step / square matmul | {f['fraction_of_square_matmul']:.1%} |",
        f"| recforge step / dominant-op matmul | {f['fraction_of_dominant_matmul']:.1%} |",
    ]
    if "compile" in result:
        c = result["compile"]
        rows += ["", (f"compile: eager {c['eager_step_ms']:.2f} ms/step, compiled {c['compiled_step_ms']:.2f} ms/step "
                      f"(x{c['speedup']:.2f}); first step eager {c['eager_first_step_s']:.1f} s, compiled "
                      f"{c['compiled_first_step_s']:.1f} s (first repeat: includes the compilation)")]
    return "\n".join(rows)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", choices=["ml-100k", "beauty", "synthetic"], default="ml-100k")
    p.add_argument("--data-root", default=str(PROJECT.parent / "shared" / "data"))
    p.add_argument("--steps", type=int, default=100, help="timed training steps per repeat")
    p.add_argument("--warmup", type=int, default=10, help="untimed training steps at the start of each repeat")
    p.add_argument("--repeats", type=int, default=5, help="repeats of each arm, alternating")
    p.add_argument("--eval-runs", type=int, default=5, help="timed evaluations per repeat")
    p.add_argument("--compile", action="store_true", help="also time recforge with compile=true")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--override", action="append", default=[], help="an extra Hydra override (repeatable)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/overhead.json"))
    return p.parse_args()


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_float32_matmul_precision("high")  # as recforge-train's main()
    started_machine = machine()
    cfg = compose_config(args.dataset, args.data_root, args.override, compiled=False)
    seed_all(cfg.seed)
    datamodule, initial = build(cfg)
    if len(datamodule.train_dataloader()) < 2:  # steps are timed between two batches of one epoch
        raise SystemExit(f"the {args.dataset} training data makes fewer than 2 batches per epoch; use more data.")
    initial = copy.deepcopy(initial)  # never attached to a trainer; every arm starts from a copy
    arms: dict[str, list[dict[str, Any]]] = {"recforge": [], "bare": []}
    if args.compile:
        arms["recforge_compiled"] = []
    for repeat in range(args.repeats):
        rec = recforge_repeat(cfg, initial, datamodule, args, compiled=False)
        arms["recforge"].append(rec)
        bare = bare_train(initial, datamodule, args)
        bare.update(bare_eval_repeat(rec["module"], datamodule, cfg, args.eval_runs))
        arms["bare"].append(bare)
        if args.compile:
            arms["recforge_compiled"].append(recforge_repeat(cfg, initial, datamodule, args, compiled=True))
        print(f"repeat {repeat + 1}/{args.repeats}: step ms recforge {1e3 * median(rec['step_seconds']):.2f} "
              f"bare {1e3 * median(bare['step_seconds']):.2f}; eval ms recforge {1e3 * median(rec['eval_seconds']):.1f} "
              f"bare {1e3 * median(bare['eval_seconds']):.1f}", flush=True)

    rec0, bare0 = arms["recforge"][0], arms["bare"][0]
    n = min(len(rec0["batches"]), len(bare0["batches"]))
    checks = {
        "same_batches": all(fingerprint(r["batches"][:n]) == fingerprint(bare0["batches"][:n])
                            for r in arms["recforge"] + arms["bare"]),
        "steps_compared": n,
        "max_abs_loss_difference": max(abs(a - b) for a, b in zip(rec0["losses"][:n], bare0["losses"][:n])),
        "eval_metrics_equal": all(r["metrics"] == b["metrics"]
                                  for r, b in zip(arms["recforge"], arms["bare"])),
        "max_abs_metric_difference": max(abs(r["metrics"][k] - b["metrics"][k])
                                         for r, b in zip(arms["recforge"], arms["bare"]) for k in r["metrics"]),
        "recforge_metrics": rec0["metrics"],
        "bare_metrics": bare0["metrics"],
    }
    summary = summarise(arms)
    rec_s, bare_s = summary["recforge"], summary["bare"]
    ratios = {"step": rec_s["step_ms_median"] / bare_s["step_ms_median"],
              "eval": rec_s["eval_ms_median"] / bare_s["eval_ms_median"],
              "step_cpu": rec_s["step_cpu_ms_median"] / bare_s["step_cpu_ms_median"],
              "eval_cpu": rec_s["eval_cpu_ms_median"] / bare_s["eval_cpu_ms_median"]}

    # FLOPs of the timed steps (of every timed step of the first bare repeat: the same batches as recforge's)
    timed = [b for i, b in enumerate(bare0["batches"]) if i >= args.warmup]
    timed_flops = step_flops(initial, bare0["batches"])
    mean_flops = float(np.mean(timed_flops[args.warmup:] or timed_flops))
    hidden, items = initial.decoder.item_embedder.hidden_size, initial.decoder.num_items + 1
    targets = int(np.median([int((b[:, :-1] > 0).sum()) for b in (timed or bare0["batches"])]))
    square = round((mean_flops / 2) ** (1 / 3))
    flops = {
        "step_gflop": mean_flops / 1e9,
        "recforge_gflops_per_s": mean_flops / (summary["recforge"]["step_ms_median"] / 1e3) / 1e9,
        "bare_gflops_per_s": mean_flops / (summary["bare"]["step_ms_median"] / 1e3) / 1e9,
        "matmul_square": matmul_gflops(square, square, square),
        "matmul_dominant": matmul_gflops(targets, hidden, items),
        "note": "FLOPs: FlopCounterMode over forward + backward (optimizer step not counted), mean of the timed steps",
    }
    flops["fraction_of_square_matmul"] = flops["recforge_gflops_per_s"] / flops["matmul_square"]["gflops_per_s"]
    flops["fraction_of_dominant_matmul"] = flops["recforge_gflops_per_s"] / flops["matmul_dominant"]["gflops_per_s"]

    result: dict[str, Any] = {
        "command": " ".join(["python", "benchmarks/overhead.py", *sys.argv[1:]]),
        "machine_at_start": started_machine, "machine_at_end": machine(), "args": {k: str(v) for k, v in vars(args).items()},
        "dataset_stats": datamodule.stats, "summary": summary, "ratios": ratios, "checks": checks, "flops": flops,
        "in_fit_validation_ms_median": 1e3 * median([s for r in arms["recforge"] for s in r["in_fit_validation_seconds"]]),
    }
    if args.compile:
        comp = arms["recforge_compiled"]
        result["compile"] = {
            "eager_step_ms": summary["recforge"]["step_ms_median"],
            "compiled_step_ms": summary["recforge_compiled"]["step_ms_median"],
            "speedup": summary["recforge"]["step_ms_median"] / summary["recforge_compiled"]["step_ms_median"],
            "eager_first_step_s": arms["recforge"][0]["first_step_seconds"],
            "compiled_first_step_s": comp[0]["first_step_seconds"],
            "compiled_fit_seconds": [r["fit_seconds"] for r in comp],
            "eager_fit_seconds": [r["fit_seconds"] for r in arms["recforge"]],
            "max_abs_loss_difference_vs_eager": max(
                abs(a - b) for a, b in zip(comp[0]["losses"], rec0["losses"])),
            "compiled_metrics": comp[0]["metrics"],
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(markdown(result))
    print(f"checks: {json.dumps(checks)}")
    print(f"written: {args.out}")


if __name__ == "__main__":
    try:
        main()
    finally:
        for run_dir in RUN_DIRS:
            shutil.rmtree(run_dir, ignore_errors=True)
