"""Write the S3-Rec comparison table from finished runs: ours (mean ± std over seeds), published, ratio, wall time.

The published numbers are read from the header of each frozen config (conf/experiment/<cell>.yaml), so they
live in one place. Finished runs are first recorded, one small JSON per run, in the committed folder
experiments/results/s3rec_runs/<cell>_seed<seed>.json (test metrics, wall time, date, commit, command), so the
table survives the run directories; the table is then built from those records. Runs are the directories written
by experiments/s3rec_queue.sh: outputs/s3rec/<dataset>_<model>/seed<seed>/ (metrics.json, run_info.json, and
<dir>.time from /usr/bin/time -v).

Every record names its history-masking rule (``mask_history``; absent means ``true``: every earlier item masked).
A run's ``recforge-eval`` with ``evaluation.mask_history=s3rec`` (seen items' scores set to 0, as the S3-Rec code
does) is recorded as ``<cell>_seed<seed>_s3rec.json`` and gets its own row. Records of the old target-sparing
mask (a label leak on Yelp, the one dataset with repeated items) are kept for the record but left out of the table.

When a cell's frozen config changes its defaults, its records so far are marked as of an earlier setup
(``--earlier-setup``): each gets a ``setup`` entry (a label, and the overrides that reproduce it under the new
config) and a file name with the setup's key, and they keep their own rows below the new default's, so the table
never mixes two setups in one mean.

Usage: python experiments/s3rec_table.py [outputs/s3rec]            prints the table
       python experiments/s3rec_table.py [outputs/s3rec] --write     also replaces the table in results/s3rec.md
       python experiments/s3rec_table.py --earlier-setup CELL KEY LABEL OVERRIDE... [--write]
           marks CELL's records of the default setup as the earlier setup KEY (before recording new runs)
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

import numpy as np
import yaml

import recforge
from recforge.data.splits import repeated_targets
from recforge.report.protocol import MASK_RULES, split_text
from recforge.report.render import markdown_table

CONF = Path(recforge.__file__).resolve().parent / "conf" / "experiment"
RECORDS = Path(__file__).resolve().parent / "results" / "s3rec_runs"
METRICS = ["hr@5", "ndcg@5", "hr@10", "ndcg@10", "hr@20", "ndcg@20"]
DATASETS = ["beauty", "sports", "toys", "yelp"]
MODELS = [("gru4rec", "GRU4Rec"), ("sasrec", "SASRec"), ("bert4rec", "BERT4Rec")]
FILES = {"beauty": "Beauty.txt", "sports": "Sports_and_Outdoors.txt", "toys": "Toys_and_Games.txt", "yelp": "Yelp.txt"}
PAPER = "_paper"  # <cell>_paper: the cell trained in the S3-Rec code's own setup (experiment=<cell>_paper)


def published(cell: str) -> dict[str, float]:
    """The six published values from the '#   HR@5 .0387 NDCG@5 ...' header line of the cell's config."""
    text = (CONF / f"{cell}.yaml").read_text()
    pairs = re.findall(r"(HR|NDCG)@(\d+) (\.\d+)", text)
    return {f"{name.lower()}@{k}": float(value) for name, k, value in pairs}


def wall_seconds(time_file: Path) -> float | None:
    """Elapsed wall time summed over the attempts recorded by /usr/bin/time -a -v (a resumed cell has two)."""
    if not time_file.is_file():
        return None
    total = 0.0
    for match in re.findall(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", time_file.read_text()):
        parts = [float(p) for p in match.split(":")]
        total += sum(p * 60 ** i for i, p in enumerate(reversed(parts)))
    return total or None


RULES = {True: "", "s3rec": "S3-Rec masking, "}  # the rules a table row can have, and their row labels


def s3rec_evaluations(run: Path) -> list[dict]:
    """The run's ``recforge-eval`` results under the S3-Rec masking rule (newest last)."""
    found = []
    for path in sorted(run.glob("eval/*/metrics.json")):
        result = json.loads(path.read_text())
        if result.get("evaluation", {}).get("mask_history") == "s3rec" and result.get("split") == "test":
            found.append(result | {"source": str(path)})
    return found


def record_runs(root: Path, records: Path) -> list[Path]:
    """One record per finished run under ``root`` (a run's record is rewritten from its directory); returns the
    records written."""
    written = []
    for metrics_file in sorted(root.glob("*/seed*/metrics.json")):
        run = metrics_file.parent
        earlier = (json.loads(path.read_text()) for path in records.glob(f"{run.parent.name}_seed{run.name[4:]}_*.json"))
        if any("setup" in old and f"{run}/" in old.get("source", "") for old in earlier):
            continue  # this run is recorded as of an earlier setup of its cell's config
        metrics = json.loads(metrics_file.read_text())
        info_file = run / "run_info.json"
        info = json.loads(info_file.read_text()) if info_file.is_file() else {}
        config = yaml.safe_load((run / "config.yaml").read_text()) if (run / "config.yaml").is_file() else {}
        rule = config.get("evaluation", {}).get("mask_history", True)
        record = {"cell": run.parent.name, "seed": int(run.name[4:]),
                  "test": {m: metrics["test"][m] for m in METRICS}, "wall_seconds": wall_seconds(run.with_suffix(".time")),
                  "date": str(info.get("started", ""))[:10], "commit": info.get("git_commit"),
                  "command": " ".join(["recforge-train"] + info.get("command", [])[1:]),
                  "source": f"{run}/metrics.json"}
        if rule is not True:  # the paper-setup cells test under the S3-Rec rule themselves
            record["mask_history"] = rule
        records.mkdir(parents=True, exist_ok=True)
        path = records / f"{record['cell']}_seed{record['seed']}.json"
        note = json.loads(path.read_text()).get("note") if path.is_file() else None
        if note:  # a note written by hand survives re-recording
            record["note"] = note
        path.write_text(json.dumps(record, indent=1) + "\n")
        written.append(path)
        for result in s3rec_evaluations(run)[-1:]:  # the same checkpoint, evaluated under the S3-Rec rule
            s3rec = record | {"test": {m: result["metrics"][m] for m in METRICS}, "wall_seconds": None,
                              "mask_history": "s3rec", "source": result["source"],
                              "command": f"recforge-eval run_dir={run} 'overrides=[\"evaluation.mask_history=s3rec\"]'"}
            path = records / f"{record['cell']}_seed{record['seed']}_s3rec.json"
            path.write_text(json.dumps(s3rec, indent=1) + "\n")
            written.append(path)
    return written


def mark_earlier_setup(records: Path, cell: str, key: str, label: str, overrides: list[str]) -> list[Path]:
    """Mark every record of ``cell``'s current default setup as of the earlier setup ``key``: the record gets
    ``setup = {"key", "label", "overrides"}`` (``overrides`` reproduce it under the changed config) and moves to
    ``<cell>_seed<seed>[_s3rec]_<key>.json``, so runs of the new default can take the plain names. Returns the new
    paths."""
    if not re.fullmatch(r"[a-z0-9]+", key):
        raise SystemExit(f"--earlier-setup: the key {key!r} must be lower-case letters and digits (it ends file names).")
    moved = []
    for path in sorted(records.glob(f"{cell}_seed*.json")):
        record = json.loads(path.read_text())
        if "setup" in record or not re.fullmatch(rf"{re.escape(cell)}_seed\d+(_s3rec)?", path.stem):
            continue
        record["setup"] = {"key": key, "label": label, "overrides": list(overrides)}
        target = path.with_name(f"{path.stem}_{key}.json")
        if target.exists():
            raise SystemExit(f"--earlier-setup: {target} exists already; the setup key {key!r} was used before for {cell}.")
        target.write_text(json.dumps(record, indent=1) + "\n")
        path.unlink()
        moved.append(target)
    if not moved:
        raise SystemExit(f"--earlier-setup: {records} has no record of {cell}'s current default setup to mark.")
    return moved


def setups(records: Path, cell: str) -> list[dict]:
    """The earlier setups recorded for ``cell``, in order of their keys."""
    found = {}
    for path in records.glob(f"{cell}_seed*.json"):
        setup = json.loads(path.read_text()).get("setup")
        if setup:
            found[setup["key"]] = setup
    return [found[key] for key in sorted(found)]


def cell_runs(records: Path, cell: str, rule: bool | str = True,
              setup: str | None = None) -> list[tuple[int, dict, float | None]]:
    """(seed, {"test": metrics}, wall seconds) of every recorded run of ``cell`` under masking ``rule``, by seed;
    runs of the current default unless ``setup`` names an earlier setup's key."""
    runs = []
    for path in records.glob(f"{cell}_seed*.json"):
        record = json.loads(path.read_text())
        if record.get("mask_history", True) != rule or (record.get("setup") or {}).get("key") != setup:
            continue
        runs.append((record["seed"], {"test": record["test"]}, record.get("wall_seconds")))
    return sorted(runs, key=lambda run: run[0])


def fmt(values: list[float]) -> str:
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.4f}"
    return f"{mean:.4f} ± {statistics.stdev(values):.4f}"


def command(cell: str, seeds: list[int], overrides: list[str] = ()) -> str:
    """The recforge-train call that reruns every seed of a row (a Hydra multirun when there are several)."""
    multirun = "-m " if len(seeds) > 1 else ""
    extra = "".join(f" {override}" for override in overrides)
    return (f"`recforge-train {multirun}experiment={cell}{extra} seed={','.join(map(str, seeds))} "
            "dataset.root=../shared/data`")


HEADER = ["data", "model", "n", *(m.upper() for m in METRICS), "wall time per run", "command (reproduces the row)"]
BLANK = [""] * len(METRICS)


def table(records: Path) -> str:
    """The whole table (recforge.report's Markdown renderer): per cell the published row, then ours and the ratio
    under each masking rule that has runs."""
    rows: list[list[str]] = []
    for dataset in DATASETS:
        for key, name in MODELS:
            cell = f"{dataset}_{key}"
            pub = published(cell)
            rows.append([dataset.capitalize(), name, "published", *(f"{pub[m]:.4f}" for m in METRICS), "", ""])
            rows += rule_rows(records, cell + PAPER, "s3rec", pub, paper=True)
            rows += [row for rule in RULES for row in rule_rows(records, cell, rule, pub)]
            earlier = setups(records, cell)
            if not cell_runs(records, cell):
                leaky = any(json.loads(p.read_text()).get("mask_history", True) not in RULES
                            for p in records.glob(f"{cell}_seed*.json"))
                label = ("ours: earlier runs used the leaky mask, re-run pending" if leaky else
                         "ours: the current default not run yet" if earlier else "ours: not run yet")
                rows.append(["", "", label, *BLANK, "", ""])
            rows += [row for setup in earlier for rule in RULES
                     for row in rule_rows(records, cell, rule, pub, setup=setup)]
    rows.append(totals_row(records))
    return markdown_table(HEADER, rows)


def rule_rows(records: Path, cell: str, rule: bool | str, pub: dict[str, float],
              paper: bool = False, setup: dict | None = None) -> list[list[str]]:
    """The 'ours' and 'ratio' rows of ``cell`` under masking ``rule`` (none without runs); ``paper``: the cell is a
    paper-setup experiment (trained and tested in the S3-Rec code's setup), labelled as such; ``setup``: the rows
    of that earlier setup's records (labelled with it; the command adds its overrides)."""
    runs = cell_runs(records, cell, rule, setup["key"] if setup else None)
    if not runs:
        return []
    ours = {m: [r[1]["test"][m] for r in runs] for m in METRICS}
    walls = [w for _, _, w in runs if w]
    wall = f"{statistics.fmean(walls) / 60:.0f} min" if walls else ""
    seeds = [s for s, _, _ in runs]
    how = command(cell, seeds, setup["overrides"] if setup else ()) if rule is True or paper else \
        "the same checkpoints: `recforge-eval run_dir=<run> 'overrides=[\"evaluation.mask_history=s3rec\"]'`"
    what = "paper setup: BCE with 1 negative, post-LN, targets weighed equally, S3-Rec masking, " if paper else RULES[rule]
    if setup:
        what = f"earlier default: {setup['label']}, " + what
    label = f"ours ({what}n={len(runs)}, seeds {','.join(map(str, seeds))})"
    return [["", "", label, *(fmt(ours[m]) for m in METRICS), wall, how],
            ["", "", "ratio", *(f"{statistics.fmean(ours[m]) / pub[m]:.2f}" for m in METRICS), "", ""]]


def totals_row(records: Path) -> list[str]:
    """The last row: summed wall time of the recorded runs, and what three seeds of every cell would take."""
    walls = {}
    for dataset in DATASETS:
        for key, _ in MODELS:
            times = [w for _, _, w in cell_runs(records, f"{dataset}_{key}") if w]
            if times:
                walls[f"{dataset}_{key}"] = times
    recorded = sum(sum(times) for times in walls.values()) / 3600
    n = sum(len(times) for times in walls.values())
    cells = len(DATASETS) * len(MODELS)
    if len(walls) == cells:
        whole = sum(3 * statistics.fmean(times) for times in walls.values()) / 3600
        estimate = f"all {cells} cells × 3 seeds ≈ {whole:.0f} h"
    else:
        missing = cells - len(walls)
        estimate = f"{missing} cell{'' if missing == 1 else 's'} without a timed run"
    return ["all", "", f"{n} timed runs", *BLANK, f"{recorded:.1f} h in all; {estimate}", ""]


def test_counts(root: Path, dataset: str) -> tuple[int, int]:
    """(test samples, test targets that repeat an earlier item of their user) of a dataset's S3-Rec file under
    leave-one-out (users with at least 3 items; every S3-Rec file is 5-core)."""
    seqs = [line.split()[1:] for line in (root / "s3rec" / FILES[dataset]).read_text().splitlines()]
    seqs = [seq for seq in seqs if len(seq) >= 3]
    items = np.array([int(item) for seq in seqs for item in seq], dtype=np.int64)
    indptr = np.concatenate([[0], np.cumsum([len(seq) for seq in seqs])]).astype(np.int64)
    samples = np.stack([np.arange(len(seqs)), np.array([len(seq) - 1 for seq in seqs])], axis=1)
    return len(seqs), int(repeated_targets(items, indptr, samples).sum())


def protocol(root: Path | None) -> str:
    """The protocol line printed above the table (recforge.report.protocol's wording for each part)."""
    line = (f"Protocol: {split_text({'dataset.split._target_': 'LeaveOneOut'})}; full ranking over all items; "
            "K = 5, 10, 20; history mask per row: unlabelled rows: "
            f"{MASK_RULES[True]}; 'S3-Rec masking' rows: {MASK_RULES['s3rec']}")
    if root is None or not (root / "s3rec").is_dir():
        return line + "."
    counts = [(name, *test_counts(root, name)) for name in DATASETS]
    return line + "; test samples (unreachable targets under the default mask): " + ", ".join(
        f"{name.capitalize()} {n:,} ({r:,}, {100 * r / n:.2f} %)" for name, n, r in counts) + "."


def totals(records: Path) -> str:
    """:func:`totals_row` as a Markdown table line."""
    return markdown_table(HEADER, [totals_row(records)]).splitlines()[-1]


def replace_table(page: str, new_table: str, protocol_line: str = "") -> str:
    """``page`` with its table (the block from the '| data | model | n |' header to the next blank line) replaced,
    and ``protocol_line`` (when given) above it, in place of the protocol line already there."""
    lines = page.split("\n")
    heads = [i for i, line in enumerate(lines) if line.startswith("| data | model | n |")]
    if len(heads) != 1:
        raise SystemExit(f"the page has {len(heads)} tables starting with '| data | model | n |'; expected exactly one.")
    start = heads[0]
    end = next((i for i in range(start, len(lines)) if not lines[i].strip()), len(lines))
    head = lines[:start]
    if protocol_line:
        if len(head) >= 2 and head[-2].startswith("Protocol:") and not head[-1].strip():
            head = head[:-2]
        head += [protocol_line, ""]
    return "\n".join(head + new_table.split("\n") + lines[end:])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="?", default="outputs/s3rec", help="the queue's output folder")
    parser.add_argument("--write", action="store_true", help="replace the table in experiments/results/s3rec.md")
    parser.add_argument("--data-root", type=Path, default=Path("../shared/data"),
                        help="where s3rec/*.txt are, for the sample counts of the protocol line")
    parser.add_argument("--earlier-setup", nargs="+", metavar=("CELL KEY LABEL", "OVERRIDE"),
                        help="mark CELL's default-setup records as the earlier setup KEY (LABEL, and the overrides "
                             "that reproduce it) instead of recording runs")
    args = parser.parse_args()
    if args.earlier_setup:
        if len(args.earlier_setup) < 4:
            raise SystemExit("--earlier-setup needs CELL KEY LABEL and at least one OVERRIDE.")
        cell, key, label, *overrides = args.earlier_setup
        for moved in mark_earlier_setup(RECORDS, cell, key, label, overrides):
            print(f"marked {moved}", file=sys.stderr)
        args.runs = "/nonexistent"  # record nothing: only the marks and (with --write) the table change
    for written in record_runs(Path(args.runs), RECORDS):
        print(f"recorded {written}", file=sys.stderr)
    text, line = table(RECORDS), protocol(args.data_root)
    print(line + "\n\n" + text)
    if args.write:
        page = RECORDS.parent / "s3rec.md"
        page.write_text(replace_table(page.read_text(), text, line))
        print(f"wrote the table into {page}", file=sys.stderr)
