"""fp32 vs int8 exports of trained runs: file size, CPU latency per batch, and test NDCG@10 on the run's own data.

    OMP_NUM_THREADS=1 python benchmarks/quantize.py outputs/runs/<run> [...] --data-root ../shared/data

For each run: the checkpoint's model in eager PyTorch, TorchScript fp32 / int8 and ONNX fp32 / int8 (exported by
recforge.deploy.export into a temporary folder; the run directory is not touched). Latency is the median of
``--repeats`` timed calls (after 3 warm-up calls) on real test inputs with one CPU thread. NDCG@10 and HR@10 are
computed over the test split with ``recforge.evaluation`` (full ranking, history masked as the run was evaluated),
so the eager number reproduces the run's metrics.json when the data is the same.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf

from recforge.deploy.export import export, load_export
from recforge.deploy.model import DeployedModel, dataset_config, load_model
from recforge.evaluation.metrics import ranking_metrics
from recforge.evaluation.ranking import rank_targets

Runner = Callable[[torch.Tensor], torch.Tensor]
VARIANTS = [("torchscript", None), ("torchscript", "int8"), ("onnx", None), ("onnx", "int8")]


def test_loader(model: DeployedModel, data_root: str | None) -> Any:
    """The run's test split, built from its own config (paths re-rooted under ``data_root``)."""
    cfg = OmegaConf.load(model.run_dir / "config.yaml")
    datamodule = instantiate(dataset_config(cfg, data_root))
    datamodule.setup("test")
    return datamodule.test_dataloader(), bool(cfg.evaluation.mask_history)


def evaluate(run: Runner, loader: Any, max_len: int, mask_history: bool, pad: bool) -> dict[str, float]:
    """Test HR@10 / NDCG@10 of a runner; ``pad`` restores the full max_len window the exports take."""
    ranks = []
    for batch in loader:
        items = batch["input"]  # (B, T), T <= max_len: the loader trims all-padding columns
        if pad:
            items = F.pad(items, (max_len - items.shape[1], 0))  # (B, L)
        scores = run(items)  # (B, N+1)
        ranks.append(rank_targets(scores, batch["target"], batch["history"] if mask_history else None))
    metrics = ranking_metrics(torch.cat(ranks), [10])
    return {"ndcg@10": metrics["ndcg@10"], "hr@10": metrics["hr@10"]}


def latency_ms(run: Runner, items: torch.Tensor, repeats: int) -> float:
    """Median wall time of one call, in milliseconds."""
    for _ in range(3):
        run(items)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(items)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def eager(model: DeployedModel) -> Runner:
    def run(items: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model.scorer(items)

    return run


def bench_run(run_dir: str, data_root: str | None, repeats: int, out: Path) -> list[dict[str, Any]]:
    model = load_model(run_dir, ids="file")
    loader, mask_history = test_loader(model, data_root)
    first = next(iter(loader))["input"]
    inputs = F.pad(first, (model.max_len - first.shape[1], 0))[:256]  # (256, L) real test histories
    recorded = json.loads((model.run_dir / "metrics.json").read_text())["test"]["ndcg@10"]
    rows = [{"run": model.run_dir.name, "dataset": model.dataset, "variant": "checkpoint (eager fp32)",
             "size_mb": model.checkpoint.stat().st_size / 1e6, "recorded_ndcg@10": recorded,
             **measure(eager(model), loader, inputs, model.max_len, mask_history, repeats, pad=False)}]
    for fmt, quantize in VARIANTS:
        path = export(model, fmt, quantize, out / f"{model.run_dir.name}-{fmt}{'-int8' if quantize else ''}"
                      f"{'.onnx' if fmt == 'onnx' else '.pt'}")
        rows.append({"run": model.run_dir.name, "dataset": model.dataset, "variant": f"{fmt} {quantize or 'fp32'}",
                     "size_mb": path.stat().st_size / 1e6, "recorded_ndcg@10": recorded,
                     **measure(load_export(path, threads=1), loader, inputs, model.max_len, mask_history, repeats)})
        print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


def measure(run: Runner, loader: Any, inputs: torch.Tensor, max_len: int, mask_history: bool, repeats: int,
            pad: bool = True) -> dict[str, float]:
    return {"ms_batch1": latency_ms(run, inputs[:1], repeats), "ms_batch256": latency_ms(run, inputs, repeats),
            **evaluate(run, loader, max_len, mask_history, pad)}


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| dataset | variant | file MB | ms / batch 1 | ms / batch 256 | test NDCG@10 | test HR@10 |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['dataset']} | {r['variant']} | {r['size_mb']:.2f} | {r['ms_batch1']:.2f} | "
                     f"{r['ms_batch256']:.1f} | {r['ndcg@10']:.4f} | {r['hr@10']:.4f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run directories (their best checkpoints)")
    parser.add_argument("--data-root", default=None, help="the folder holding the datasets")
    parser.add_argument("--repeats", type=int, default=30, help="timed calls per latency figure (median)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory(prefix="recforge-quantize-") as tmp:
        for run_dir in args.runs:
            rows += bench_run(run_dir, args.data_root, args.repeats, Path(tmp))
    for r in rows:
        if r["variant"].startswith("checkpoint"):
            same = "equal" if r["ndcg@10"] == r["recorded_ndcg@10"] else f"differs ({r['recorded_ndcg@10']:.6f})"
            print(f"{r['run']}: eager test NDCG@10 {r['ndcg@10']:.6f}, metrics.json {same}")
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
