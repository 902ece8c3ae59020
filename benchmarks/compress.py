"""Smaller models compared: a teacher, distilled and plain students, pruned and int8 variants of trained runs.

    OMP_NUM_THREADS=1 python benchmarks/compress.py teacher=<run> kd_student=<run> ... --data-root ../shared/data \
        --out benchmarks/results/compress.md

Each ``label=run_dir`` is exported by recforge.deploy.export (TorchScript, fp32 and ``--quantize int8``) into a
temporary folder. Per export: parameters of the scorer (all, and non-zero: pruning zeroes weights but a dense file
still stores them), the file size and its gzip-compressed size (what zeros save when stored compressed), the
median latency of batch 1 and batch 256 (real test histories, one CPU thread, after warm-up), and test NDCG@10 /
HR@10 of the export over the run's test split (full ranking, history masked as the run was evaluated).
``label=run_dir@0.8`` prunes that run's encoder by 0.8 at load time, without fine-tuning (recforge.models.pruning,
made permanent), to show what the fine-tuning of a ``prune.amount`` run recovers.
"""
from __future__ import annotations

import argparse
import gzip
import json
import platform
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quantize import evaluate, latency_ms, test_loader  # benchmarks/ is no package

from recforge.deploy.export import export, load_export
from recforge.deploy.model import load_model
from recforge.models.pruning import make_permanent, prune_linear


def parameter_counts(module: torch.nn.Module) -> tuple[int, int]:
    """(parameters, non-zero parameters) of ``module``, each shared tensor counted once."""
    unique = {id(p): p for p in module.parameters()}.values()
    return sum(p.numel() for p in unique), sum(int((p != 0).sum()) for p in unique)


def gzip_mb(path: Path) -> float:
    return len(gzip.compress(path.read_bytes(), compresslevel=6)) / 1e6


def bench(label: str, run_dir: str, data_root: str | None, repeats: int, out: Path,
          prune_now: float | None = None) -> list[dict[str, Any]]:
    model = load_model(run_dir, ids="file")  # a pruned run: pruning made permanent (prune.remove)
    if prune_now is not None:  # pruned here, no fine-tuning
        prune_linear(model.scorer.encoder, prune_now)
        make_permanent(model.scorer)
    loader, mask_history = test_loader(model, data_root)
    first = next(iter(loader))["input"]
    inputs = F.pad(first, (model.max_len - first.shape[1], 0))[:256]  # (256, L) real test histories
    params, nonzero = parameter_counts(model.scorer)
    recorded = model.run_dir / "metrics.json"  # absent for a run stopped early: its best checkpoint so far
    metrics = json.loads(recorded.read_text()) if recorded.is_file() else {"test": {"ndcg@10": None}}
    rows = []
    for quantize in (None, "int8"):
        path = export(model, "torchscript", quantize, out / f"{label}{'-int8' if quantize else ''}.pt")
        run = load_export(path, threads=1)
        rows.append({"model": label, "variant": quantize or "fp32", "run": str(model.run_dir),
                     "params": params, "nonzero": nonzero, "file_mb": path.stat().st_size / 1e6,
                     "gzip_mb": gzip_mb(path), "ms_batch1": latency_ms(run, inputs[:1], repeats),
                     "ms_batch256": latency_ms(run, inputs, max(5, repeats // 3)),
                     "recorded_ndcg@10": metrics["test"]["ndcg@10"], "fit_seconds": metrics.get("fit_seconds"),
                     **evaluate(run, loader, model.max_len, mask_history, pad=True)})
        print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [("| model | weights | parameters (non-zero) | file MB | gzip MB | ms / batch 1 | ms / batch 256 "
              "| test NDCG@10 | test HR@10 |"), "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['variant']} | {r['params'] / 1e3:.1f} K ({r['nonzero'] / 1e3:.1f} K) | "
                     f"{r['file_mb']:.3f} | {r['gzip_mb']:.3f} | {r['ms_batch1']:.2f} | {r['ms_batch256']:.1f} | "
                     f"{r['ndcg@10']:.4f} | {r['hr@10']:.4f} |")
    return "\n".join(lines)


def header(argv: list[str]) -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return (f"Command: `OMP_NUM_THREADS=1 python benchmarks/compress.py {' '.join(argv)}`  \n"
            f"Date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; machine: {cpu}, {torch.get_num_threads()} "
            f"thread (2 cores shared with other jobs: latencies are indicative); torch {torch.__version__}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="label=run_dir (the run's best checkpoint)")
    parser.add_argument("--data-root", default=None, help="the folder holding the datasets")
    parser.add_argument("--repeats", type=int, default=30, help="timed calls per batch-1 latency (median)")
    parser.add_argument("--out", type=Path, default=None, help="write the table (markdown) and <out>.json here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="recforge-compress-") as tmp:
        for spec in args.runs:
            label, _, run_dir = spec.partition("=")
            run_dir, _, amount = run_dir.partition("@")
            rows += bench(label, run_dir, args.data_root, args.repeats, Path(tmp), float(amount) if amount else None)
    text = header(sys.argv[1:]) + "\n" + table(rows) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
        args.out.with_suffix(".json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
