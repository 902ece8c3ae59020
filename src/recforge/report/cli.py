"""recforge-report RUN_OR_MULTIRUN_DIR...: comparison tables (md, csv, tex), plots and an optional HTML page."""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from recforge.errors import RecforgeError
from recforge.report import plots, render
from recforge.report.aggregate import (
    TESTS,
    Table,
    aggregate,
    default_row_keys,
    metric_columns,
    parse_baseline,
)
from recforge.report.collect import collect_runs
from recforge.report.protocol import protocol_lines
from recforge.run.cli import user_errors

KS = ("10", "20")
FIRST = ("hr", "ndcg", "mrr", "recall", "precision", "map")  # ranking metrics first; beyond-accuracy ones after


def split_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="recforge-report", description=(
        "Turn finished recforge runs into comparison tables (Markdown, CSV, LaTeX), plots and an optional "
        "self-contained HTML page."))
    p.add_argument("paths", nargs="+", metavar="RUN_OR_MULTIRUN_DIR",
                   help="run directories or folders of runs (searched recursively)")
    p.add_argument("--rows", type=split_list, help="config keys that define table rows, e.g. model,optimizer.lr "
                   "(default: model plus the config keys that vary across runs, except seed and paths)")
    p.add_argument("--cols", type=split_list, default=[],
                   help="config keys whose values become column groups, e.g. dataset.name")
    p.add_argument("--metrics", type=split_list, help="metric columns (default: test metrics at @10 and @20)")
    p.add_argument("--baseline", help="row to test against, key=value[,key=value], e.g. model=SASRec")
    p.add_argument("--test", choices=TESTS, default="ttest", help="paired test over seeds (default: ttest)")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level for the † marker (default: 0.05)")
    p.add_argument("--x", help="numeric config key to plot the metrics against, e.g. optimizer.lr")
    p.add_argument("--curve-metric", default="val/ndcg@10",
                   help="per-epoch metric for the curves plot (default: val/ndcg@10)")
    p.add_argument("--lower-better", type=split_list, action="extend", default=[],
                   help="metrics where lower is better, e.g. fit_seconds")
    p.add_argument("--out", help="output folder (default: <first path>/report)")
    p.add_argument("--html", action="store_true", help="also write a self-contained report.html")
    return p


def default_metrics(runs: pd.DataFrame) -> list[str]:
    """test/hr@10, test/ndcg@10, mrr, recall, precision, map, the other test metrics (coverage, gini, ...) at @10,
    then the same at @20 (those present)."""
    present = [c for c in metric_columns(runs) if c.startswith("test/") and runs[c].notna().any()]

    def order(col: str) -> tuple[int, int, str]:
        name, _, k = col[len("test/"):].partition("@")
        return (KS.index(k) if k in KS else len(KS), FIRST.index(name) if name in FIRST else len(FIRST), name)

    chosen = sorted((c for c in present if c.rpartition("@")[2] in KS), key=order)
    if not chosen and not present:
        raise RecforgeError("no ok run has test metrics in metrics.json; pass --metrics with the columns to compare.")
    return chosen or sorted(present, key=order)


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write via a temporary file in the same folder, then rename (readers never see half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def make_plots(runs: pd.DataFrame, table: Table, args: argparse.Namespace) -> dict[str, bytes]:
    """File name -> PNG bytes: one sweep plot per metric when --x is given, and the validation curves."""
    groups = [*table.rows, *table.cols]
    out: dict[str, bytes] = {}
    if args.x:
        if args.x not in runs.columns:
            raise RecforgeError(
                f"--x key '{args.x}' is not in the collected runs; expected a numeric config key such as optimizer.lr.")
        for metric in table.metrics:
            out[plots.file_name(metric, args.x)] = plots.sweep_plot(runs, args.x, metric, groups)
    curves = plots.curves_plot(runs, args.curve_metric, groups)
    if curves is not None:
        out[plots.file_name("curves_" + args.curve_metric)] = curves
    return out


def segment_pages(runs: pd.DataFrame) -> list[tuple[str, str]]:
    """(run, HTML fragment) of every ok run holding a recforge-segment page (``<run>/segments/segments.html``)."""
    pages = [(run, Path(run) / "segments" / "segments.html") for run in runs.loc[runs["status"] == "ok", "run"]]
    return [(run, page.read_text()) for run, page in pages if page.is_file()]


def report(argv: Sequence[str] | None = None) -> tuple[str, list[Path]]:
    """Build and write the report; returns (Markdown text, written paths)."""
    args = parser().parse_args(argv)
    if not 0 < args.alpha < 1:
        raise RecforgeError(f"--alpha {args.alpha} must be between 0 and 1, e.g. 0.05.")
    runs = collect_runs(args.paths)
    if runs.attrs.get("unfinished"):
        print(f"recforge-report: skipped {len(runs.attrs['unfinished'])} unfinished run(s) without metrics.json or "
              f"failed.json, e.g. {runs.attrs['unfinished'][0]}", file=sys.stderr)
    rows = args.rows or [k for k in default_row_keys(runs) if k not in args.cols]
    if set(rows) & set(args.cols):
        both = min(set(rows) & set(args.cols))
        raise RecforgeError(f"--cols key '{both}' is also a row key; a key is either a row or a column.")
    table = aggregate(runs, rows=rows, cols=args.cols, metrics=args.metrics or default_metrics(runs),
                      baseline=parse_baseline(args.baseline) if args.baseline else None, test=args.test,
                      alpha=args.alpha, lower_better=args.lower_better)
    table = dataclasses.replace(table, protocol=protocol_lines(runs))
    out = Path(args.out) if args.out else Path(args.paths[0]) / "report"
    failed = runs[runs["status"] == "failed"]
    md = render.markdown(table, failed)
    files: dict[Path, str | bytes] = {out / "report.md": md, out / "report.csv": render.csv(table),
                                      out / "report.tex": render.latex(table)}
    images = make_plots(runs, table, args)
    files.update({out / "plots" / name: data for name, data in images.items()})
    if args.html:
        sources = [str(Path(p).resolve()) for p in args.paths]
        files[out / "report.html"] = render.html(table, runs, sources, images, segments=segment_pages(runs))
    for path, data in files.items():
        write_atomic(path, data)
    return md, list(files)


def main(argv: Sequence[str] | None = None) -> None:
    with user_errors():
        md, written = report(argv)
    print(md)
    print("wrote:\n" + "\n".join(f"  {p}" for p in written))


if __name__ == "__main__":
    main(sys.argv[1:])
