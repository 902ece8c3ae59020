"""Profile recforge's training step and full-ranking evaluation (the ``overhead.py`` set-up: experiment=ml100k_sasrec).

Two views of the same steps, after ``--warmup`` untimed steps:
- ``--tool torch``: torch.profiler (record_shapes) over ``--steps`` training steps inside ``Trainer.fit`` and over
  ``--eval-runs`` calls of ``trainer.validate``; prints operator tables sorted by self CPU time.
- ``--tool python``: cProfile of the same window (the Python side: Lightning hooks, logging, data loading);
  prints the functions with most own time and most cumulative time.

  python benchmarks/profile_step.py --dataset ml-100k --data-root ../shared/data --tool torch
  python benchmarks/profile_step.py --dataset ml-100k --data-root ../shared/data --tool python --rows 40
"""
from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import shutil
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from overhead import (  # benchmarks/ is on sys.path when run as a script
    PROJECT,
    RUN_DIRS,
    compose_config,
    new_run_dir,
    seed_all,
)
from torch.profiler import ProfilerActivity, profile

from recforge.run.build import build, build_trainer, compile_loss


class Window(Callback):
    """Starts ``profiler`` after ``warmup`` training steps and stops it (and the fit) ``steps`` steps later."""

    def __init__(self, start: Any, stop: Any, warmup: int, steps: int) -> None:
        self.start, self.stop, self.warmup, self.steps, self.count = start, stop, warmup, steps, 0

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        self.count += 1
        if self.count == self.warmup:
            self.start()
        elif self.count == self.warmup + self.steps:
            self.stop()
            trainer.should_stop = True


def profiler_pair(tool: str) -> tuple[Any, Any, Any]:
    """(start, stop, report(rows) -> str) for torch.profiler or cProfile."""
    if tool == "torch":
        prof = profile(activities=[ProfilerActivity.CPU], record_shapes=True)

        def report(rows: int) -> str:
            by_op = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)
            by_shape = prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=rows)
            return f"{by_op}\n\nby input shape:\n{by_shape}"

        return prof.__enter__, lambda: prof.__exit__(None, None, None), report
    prof_py = cProfile.Profile()

    def report_py(rows: int) -> str:
        out = io.StringIO()
        stats = pstats.Stats(prof_py, stream=out)
        stats.sort_stats("tottime").print_stats(rows)
        stats.sort_stats("cumulative").print_stats(rows)
        return out.getvalue()

    return prof_py.enable, prof_py.disable, report_py


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", choices=["ml-100k", "beauty", "synthetic"], default="ml-100k")
    p.add_argument("--data-root", default=str(PROJECT.parent / "shared" / "data"))
    p.add_argument("--tool", choices=["torch", "python"], default="torch")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--eval-runs", type=int, default=3)
    p.add_argument("--rows", type=int, default=25)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--override", action="append", default=[])
    p.add_argument("--out", type=Path, default=None, help="also write the report to this file")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_float32_matmul_precision("high")
    cfg = new_run_dir(compose_config(args.dataset, args.data_root, args.override, compiled=args.compile))
    seed_all(cfg.seed)
    datamodule, module = build(cfg)
    if args.compile:
        compile_loss(module)
    start, stop, report = profiler_pair(args.tool)
    trainer = build_trainer(cfg)
    trainer.callbacks.append(Window(start, stop, args.warmup, args.steps))
    trainer.fit(module, datamodule=datamodule)
    text = f"== training: {args.steps} steps after {args.warmup} ({args.tool})\n{report(args.rows)}\n"

    trainer.validate(module, datamodule=datamodule, verbose=False)  # warm-up
    start, stop, report = profiler_pair(args.tool)
    start()
    for _ in range(args.eval_runs):
        trainer.validate(module, datamodule=datamodule, verbose=False)
    stop()
    text += f"== evaluation: {args.eval_runs} x trainer.validate ({args.tool})\n{report(args.rows)}\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    try:
        main()
    finally:
        for run_dir in RUN_DIRS:
            shutil.rmtree(run_dir, ignore_errors=True)
