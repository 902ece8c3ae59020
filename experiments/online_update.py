"""Learning from new events: a stale model, the same model updated on the events after a cut (``init_from`` +
``dataset.since``), and a full retrain, evaluated on the same later test events and on the earlier ones
(forgetting).

    OMP_NUM_THREADS=1 python experiments/online_update.py --data-root ../shared/data --cut 887040000
    OMP_NUM_THREADS=1 python experiments/online_update.py --data-root ../shared/data --experiment beauty_sasrec \
        --split leave_one_out --cut -3 --out outputs/online-beauty --results outputs/online-beauty/online.md
    python experiments/online_update.py --aggregate outputs/online outputs/online-s1 outputs/online-s2

The first form trains and evaluates one seed (``--seed``, ``--out``) and writes its table to ``--results``; the
second prints mean ± sample standard deviation over the seeds' ``online_rows.json``.

Protocol (by default ML-100K, split ``global_temporal``, val 0.1 / test 0.1 of the interactions it is given, SASRec
as ``experiment=ml100k_sasrec``; data without timestamps take a position cut ``-n`` and ``leave_one_out``, where
``-3`` leaves each user's third-to-last event as the only new training target, the last two for validation and
test):

- stale:   ``dataset.until=<cut>``: trained on the world before the cut (its items only); its own test events are the
           last 10 % of the time before the cut: the *earlier* events;
- updated: ``init_from=<stale> dataset.since=<cut>``: the stale weights, the item map extended by the items first
           seen after the cut, trained (fresh Adam) on targets from the cut to the validation cut of the full data;
- full:    the full data from scratch (targets before the validation cut).

Later test events: the full data's test events (after its test cut, the 90th percentile of time), the same events
for all three. The stale model ranks only the items it knows (the new ones at -inf). Earlier test events: the
stale run's test events; every model ranks only the items that existed then. The full retrain trained on them
(they are before its validation cut): its numbers there are not a forgetting measure.
Wall time: the recforge-train process, from start to metrics.json (data, fit with early stopping, test).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from recforge.run.build import build, item_id_map
from recforge.run.checkpoints import load_checkpoint
from recforge.run.init_from import remap_item_rows
from recforge.run.load import find_checkpoint

PROJECT = Path(__file__).resolve().parents[1]


class OnlyKnown(nn.Module):
    """A decoder whose scores put items with ids above ``known`` at -inf (items a model never saw)."""

    def __init__(self, decoder: nn.Module, known: int) -> None:
        super().__init__()
        self.inner, self.known = decoder, known

    @property
    def num_items(self) -> int:
        return self.inner.num_items

    def forward(self, hidden: Tensor) -> Tensor:
        scores = self.inner(hidden)  # (M, N+1)
        scores[:, self.known + 1:] = float("-inf")
        return scores


def train(name: str, common: list[str], overrides: list[str], out: Path, data_root: str, seed: int) -> dict:
    """recforge-train into out/name (skipped when it finished before); its metrics and wall seconds."""
    run = out / name
    command = [str(Path(sys.executable).with_name("recforge-train")), *common, *overrides, f"seed={seed}",
               f"dataset.root={data_root}", f"hydra.run.dir={run}"]
    if not (run / "metrics.json").exists():
        began = time.perf_counter()
        done = subprocess.run(command, cwd=PROJECT, env={**os.environ, "OMP_NUM_THREADS": "1"}, check=False,
                              capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"{name} failed: {done.stderr[-3000:]}")
        (run / "wall_seconds.txt").write_text(f"{time.perf_counter() - began:.1f}\n")
    metrics = json.loads((run / "metrics.json").read_text())
    return {"run": run, "metrics": metrics, "wall": float((run / "wall_seconds.txt").read_text()),
            "command": " ".join(["recforge-train", *command[1:]])}


def finished(run: Path) -> dict:
    """An earlier run used as the full retrain: its metrics, fit + test seconds and its own command."""
    metrics = json.loads((run / "metrics.json").read_text())
    command = json.loads((run / "run_info.json").read_text())["command"]
    return {"run": run, "metrics": metrics, "wall": metrics["fit_seconds"] + metrics["test_seconds"],
            "command": " ".join(["recforge-train", *command[1:]])}


def evaluate(cfg: DictConfig, weights: Path, weights_ids: list[str], known: int | None = None) -> dict[str, float]:
    """Test metrics of ``weights`` (a checkpoint trained with item map ``weights_ids``) on the test events of
    the run configured by ``cfg``, in that run's item map; items above ``known`` at -inf."""
    L.seed_everything(0)
    datamodule, module = build(cfg)
    ids = [str(i) for i in item_id_map(datamodule)["item_ids"]]
    state = remap_item_rows(load_checkpoint(weights)["state_dict"], module.state_dict(), weights_ids, ids)
    module.load_state_dict(state)
    if known is not None:
        module.decoder = OnlyKnown(module.decoder, known)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_checkpointing=False,
                        enable_model_summary=False)
    [result] = trainer.test(module, datamodule=datamodule, verbose=False)
    return {key: float(value) for key, value in result.items()}


def ids_of(run: Path) -> list[str]:
    return [str(i) for i in json.loads((run / "item_ids.json").read_text())["item_ids"]]


def config(run: Path, data_root: str) -> DictConfig:
    cfg = OmegaConf.load(run / "config.yaml")
    cfg.dataset.root = data_root
    cfg.paths.root_dir = str(PROJECT)
    return cfg  # type: ignore[return-value]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default="../shared/data")
    parser.add_argument("--cut", type=int, default=887040000,
                        help="Unix time of the cut (default 1998-02-09 16:00), or -n: each user's last n events")
    parser.add_argument("--experiment", default="ml100k_sasrec")
    parser.add_argument("--split", default="global_temporal")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--full", default=None, help="a finished run of the same experiment and seed to use as the "
                        "full retrain (its wall time: fit + test seconds from its metrics.json)")
    parser.add_argument("--out", default="outputs/online")
    parser.add_argument("--results", default="experiments/results/online.md")
    parser.add_argument("--aggregate", nargs="+", default=None, help="output folders of finished seeds: print their mean")
    args = parser.parse_args()
    if args.aggregate:
        print(aggregate([Path(folder) for folder in args.aggregate]))
        return
    torch.set_num_threads(1)
    data_root = str(Path(args.data_root).resolve())
    out = (PROJECT / args.out).resolve()
    common = [f"experiment={args.experiment}", f"dataset/split={args.split}"]
    runs = {"stale": train("stale", common, [f"dataset.until={args.cut}"], out, data_root, args.seed)}
    runs["updated"] = train("updated", common, [f"init_from={runs['stale']['run']}", f"dataset.since={args.cut}"], out,
                            data_root, args.seed)
    runs["full"] = finished(Path(args.full)) if args.full else train("full", common, [], out, data_root, args.seed)

    later, earlier = config(runs["updated"]["run"], data_root), config(runs["stale"]["run"], data_root)
    n_old = len(ids_of(runs["stale"]["run"])) - 1
    rows = {}
    for name, run in runs.items():
        best = find_checkpoint(run["run"], "best")
        rows[name] = {"later": evaluate(later, best, ids_of(run["run"]), known=n_old if name == "stale" else None),
                      "earlier": evaluate(earlier, best, ids_of(run["run"])),
                      "wall": run["wall"], "own_test": run["metrics"]["test"], "best_epoch": run["metrics"]["best_epoch"]}
    write(args, runs, rows, out)


def aggregate(folders: list[Path]) -> str:
    """A markdown table: per model, mean ± sample sd (n seeds) of each column of the seeds' online_rows.json."""
    rows = [json.loads((folder / "online_rows.json").read_text()) for folder in folders]
    columns = [("later", "test/ndcg@10"), ("later", "test/hr@10"), ("earlier", "test/ndcg@10"), ("earlier", "test/hr@10"),
               ("wall", None)]
    lines = ["| model | later NDCG@10 | later HR@10 | earlier NDCG@10 | earlier HR@10 | wall time (s) |",
             "|---|---:|---:|---:|---:|---:|"]
    for name in rows[0]:
        cells = []
        for part, key in columns:
            values = torch.tensor([float(r[name][part] if key is None else r[name][part][key]) for r in rows])
            sd = float(values.std()) if len(values) > 1 else 0.0
            digits = 0 if key is None else 4
            cells.append(f"{float(values.mean()):.{digits}f} ± {sd:.{digits}f} ({len(values)})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write(args: argparse.Namespace, runs: dict, rows: dict, out: Path) -> None:
    stats = {name: json.loads((run["run"] / "dataset_stats.json").read_text()) for name, run in runs.items()}
    if args.cut >= 0:
        cut = (f"Cut: {args.cut} ({datetime.fromtimestamp(args.cut, timezone.utc):%Y-%m-%d %H:%M UTC}, the 70th "
               "percentile of the 100,000 timestamps).")
        later = "after 1998-03-31, the 90th percentile"
        earlier = "the last 10 % of the time before the cut"
    else:
        cut = f"Cut: position {args.cut} (no timestamps: each user's last {-args.cut} events are after the cut)."
        later, earlier = "each user's last event", f"each user's last event before the cut (position {args.cut - 1})"
    lines = [
        f"# Learning from new events without retraining from scratch (issue 17, part 4): {OmegaConf.load(runs['full']['run'] / 'config.yaml').dataset.name}",
        "",
        (f"Date {datetime.now(timezone.utc):%Y-%m-%d}; seed {args.seed}; machine: 2 CPU cores (Intel Xeon, "
        f"{platform.processor() or platform.machine()}), shared with other jobs, OMP_NUM_THREADS=1; "
        f"SASRec as `experiment={args.experiment}` (early stopping on val/ndcg@10, patience 10), split {args.split}."),
        "",
        "```bash",
        (f"OMP_NUM_THREADS=1 python experiments/online_update.py --data-root {args.data_root} --experiment "
         f"{args.experiment} --split {args.split} --cut {args.cut} --seed {args.seed}"),
        "```",
        "",
        "which runs:",
        "",
        "```bash",
        *[run["command"].replace(str(PROJECT) + "/", "") for run in runs.values()],
        "```",
        "",
        (f"{cut} Stale model: "
        f"{stats['stale']['interactions']:.0f} interactions before the cut, {stats['stale']['items']:.0f} items. "
        f"Update: {stats['updated']['new_items']} new items appended to the map, "
        f"{stats['updated']['training_targets_since']} training targets from the cut to the validation cut "
        f"(the full retrain trains on every target before it: {stats['full']['train_windows']:.0f} windows)."),
        "",
        (f"Later test events: the full data's test events ({later}), the same for all "
        f"three ({stats['full']['test_samples']:.0f} users, {stats['full'].get('test_targets', 0):.0f} targets); the "
        "stale model ranks only its own items (new items at -inf). Earlier test events: the stale run's test events "
        f"({earlier}: {stats['stale']['test_samples']:.0f} users, "
        f"{stats['stale'].get('test_targets', 0):.0f} targets), ranked among the items known before the cut. "
        "History mask on, full ranking. The full retrain trained on the earlier events (not a forgetting measure)."),
        "",
        "| model | later NDCG@10 | later HR@10 | earlier NDCG@10 | earlier HR@10 | wall time (s) | best epoch |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in rows.items():
        lines.append(f"| {name} | {row['later']['test/ndcg@10']:.4f} | {row['later']['test/hr@10']:.4f} | "
                     f"{row['earlier']['test/ndcg@10']:.4f} | {row['earlier']['test/hr@10']:.4f} | "
                     f"{row['wall']:.0f} | {row['best_epoch']} |")
    upd, stale = rows["updated"]["own_test"], rows["stale"]["own_test"]
    lines += ["", ("Check: the update run's own metrics.json test NDCG@10 "
              f"{upd['ndcg@10']:.4f} (script: {rows['updated']['later']['test/ndcg@10']:.4f}); the stale run's "
              f"{stale['ndcg@10']:.4f} (script, earlier events: {rows['stale']['earlier']['test/ndcg@10']:.4f})."), ""]
    Path(args.results).write_text("\n".join(lines))
    (out / "online_rows.json").write_text(json.dumps(rows, indent=2, default=str))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
