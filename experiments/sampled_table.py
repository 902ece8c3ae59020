"""Sampled against full-ranking metrics on the same checkpoints (issue 19, part 3): where does the model order change?

Each finished run under RUNS (one directory per model, e.g. outputs/sampled/beauty_sasrec) is re-tested with
``recforge-eval`` against 100 uniform and 100 popularity-drawn negatives per test user (the same candidates for
every model: drawn once per sample from seed 0 and saved in the eval directory); its full-ranking numbers are its
own test metrics. Results are recorded in experiments/results/sampled_runs/<run>.json (so the table survives the
run directories) and the table is written into experiments/results/sampled.md.

Usage: python experiments/sampled_table.py outputs/sampled [--write]
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from recforge.report.render import markdown_table

RESULTS = Path(__file__).resolve().parent / "results"
RECORDS = RESULTS / "sampled_runs"
PROTOCOLS = {"full": None, "uniform100": ("uniform", 100), "popularity100": ("popularity", 100)}
METRICS = ["hr@10", "ndcg@10"]
MODELS = {"SASRec": "sasrec", "GRU4Rec": "gru4rec", "BERT4Rec": "bert4rec", "Popularity": "popularity"}


def evaluate(run: Path, sampler: str, negatives: int) -> tuple[dict, float, list[str]]:
    """recforge-eval of ``run``'s best checkpoint with sampled negatives; (its metrics.json, wall seconds, the
    candidate files it saved)."""
    before = set((run / "eval").glob("*")) if (run / "eval").is_dir() else set()
    overrides = f'overrides=["evaluation.sampled.negatives={negatives}","evaluation.sampled.sampler={sampler}"]'
    started = time.perf_counter()
    exe = Path(sys.executable).with_name("recforge-eval")
    subprocess.run([str(exe if exe.exists() else shutil.which("recforge-eval")), f"run_dir={run}", overrides],
                   check=True, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    (new,) = set((run / "eval").glob("*")) - before
    files = sorted(p.name for p in (new / "sampled_candidates").glob("*.npy"))
    return json.loads((new / "metrics.json").read_text()), seconds, files


def record(run: Path) -> Path:
    """Full-ranking test metrics of ``run`` and its two sampled re-tests, in one record."""
    own = json.loads((run / "metrics.json").read_text())
    info = json.loads((run / "run_info.json").read_text())
    rec = {"run": run.name, "command": " ".join(["recforge-train", *info.get("command", [])[1:]]),
           "commit": info.get("git_commit"), "date": str(info.get("started", ""))[:10],
           "test_samples": own["dataset"]["test_samples"], "protocols": {"full": {m: own["test"][m] for m in METRICS}}}
    for name, spec in PROTOCOLS.items():
        if spec is None:
            continue
        result, seconds, files = evaluate(run, *spec)
        rec["protocols"][name] = {m: result["metrics"][m] for m in METRICS} | {"eval_seconds": round(seconds, 1),
                                                                                "candidates": files}
    RECORDS.mkdir(parents=True, exist_ok=True)
    path = RECORDS / f"{run.name}.json"
    path.write_text(json.dumps(rec, indent=1) + "\n")
    return path


def model_of(record: dict) -> str:
    return next((name for name, key in MODELS.items() if record["run"].endswith(key)), record["run"])


def table(records: list[dict]) -> str:
    """Rows: models; columns: HR@10 and NDCG@10 under each protocol, with each model's rank in that column."""
    header = ["model", *(f"{m.upper()} {p}" for p in PROTOCOLS for m in METRICS)]
    order = {(p, m): sorted(records, key=lambda r: -r["protocols"][p][m]) for p in PROTOCOLS for m in METRICS}
    rows = []
    for rec in sorted(records, key=lambda r: -r["protocols"]["full"]["ndcg@10"]):
        cells = [f"{rec['protocols'][p][m]:.4f} (#{order[p, m].index(rec) + 1})" for p in PROTOCOLS for m in METRICS]
        rows.append([model_of(rec), *cells])
    return markdown_table(header, rows)


def changes(records: list[dict]) -> list[str]:
    """Sentences naming every protocol whose model order (by NDCG@10 and by HR@10) differs from full ranking."""
    out = []
    for metric in METRICS:
        full = [model_of(r) for r in sorted(records, key=lambda r: -r["protocols"]["full"][metric])]
        for name in PROTOCOLS:
            other = [model_of(r) for r in sorted(records, key=lambda r: -r["protocols"][name][metric])]
            if name != "full" and other != full:
                out.append(f"By {metric.upper()}, {name} orders the models {' > '.join(other)}; full ranking "
                           f"orders them {' > '.join(full)}.")
    return out or ["No sampled protocol changes the model order of full ranking on either metric."]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", type=Path, help="folder of finished runs, one per model")
    parser.add_argument("--write", action="store_true", help="write the table into results/sampled.md")
    args = parser.parse_args()
    for run in sorted(p for p in args.runs.iterdir() if (p / "metrics.json").is_file()):
        if not (RECORDS / f"{run.name}.json").is_file():  # a recorded run is not evaluated again
            print(f"recorded {record(run)}", file=sys.stderr)
    records = [json.loads(p.read_text()) for p in sorted(RECORDS.glob("*.json"))]
    text = table(records) + "\n\n" + "\n".join(changes(records))
    print(text)
    if args.write:
        page = RESULTS / "sampled.md"
        head, marker = page.read_text().split("<!-- table -->")[0], "<!-- table -->"
        tail = page.read_text().split("<!-- end table -->")[1]
        page.write_text(f"{head}{marker}\n{text}\n<!-- end table -->{tail}")
