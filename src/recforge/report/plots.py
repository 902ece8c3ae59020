"""PNG plots (matplotlib Agg, no pyplot state): a metric against a swept hyperparameter, and validation curves."""
from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from recforge.errors import RecforgeError
from recforge.report.aggregate import group_label, sort_key

STYLES = [(f"C{i % 10}", ("-", "--", ":", "-.")[i // 10 % 4]) for i in range(40)]  # (colour, line style) per group


def file_name(*parts: str) -> str:
    """'test/hr@10', 'optimizer.lr' -> 'test_hr@10_vs_optimizer.lr.png'."""
    return re.sub(r"[^\w@.=-]+", "_", "_vs_".join(parts)) + ".png"


def to_png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def _grouped(runs: pd.DataFrame, groups: list[str]) -> list[tuple[str, pd.DataFrame]]:
    if not groups:
        return [("all runs", runs)]
    items = [(k if isinstance(k, tuple) else (k,), g) for k, g in runs.groupby(groups, dropna=False, sort=False)]
    items.sort(key=lambda kg: tuple(sort_key(v) for v in kg[0]))
    return [(group_label(groups, k), g) for k, g in items]


def log_scale(values: np.ndarray) -> bool:
    """Log x axis when positive values span at least two decades (e.g. lr 1e-4 .. 1e-2)."""
    return bool(values.size) and values.min() > 0 and values.max() / values.min() >= 100


def _finish(ax: Axes) -> None:
    """Grid, and the legend below the axes so it never hides a line."""
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(0, -0.15), frameon=False)


def sweep_plot(runs: pd.DataFrame, x: str, metric: str, groups: list[str]) -> bytes:
    return to_png(sweep_figure(runs, x, metric, groups))


def sweep_figure(runs: pd.DataFrame, x: str, metric: str, groups: list[str]) -> Figure:
    """``metric`` (mean ± sample std over runs) against config key ``x``; one line per group of ``groups``."""
    ok = runs[(runs["status"] == "ok") & runs[metric].notna()]
    xs = pd.to_numeric(ok[x], errors="coerce")
    if xs.isna().any():
        bad = ok[x][xs.isna()].iloc[0]
        raise RecforgeError(f"--x {x} has non-numeric values ({bad!r}); expected a numeric config key.")
    ok = ok.assign(**{x: xs})
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    for (color, style), (label, g) in zip(STYLES * 10, _grouped(ok, [k for k in groups if k != x])):
        s = g.groupby(x)[metric].agg(["mean", "std"]).sort_index()
        ax.errorbar(s.index, s["mean"], yerr=s["std"].fillna(0.0), marker="o", capsize=3, color=color, ls=style,
                    label=label)
    if log_scale(ok[x].to_numpy(float)):
        ax.set_xscale("log")
    ax.set(xlabel=x, ylabel=metric, title=f"{metric} vs {x} (mean ± std over runs)")
    _finish(ax)
    return fig


def read_curve(run: str | Path, metric: str) -> pd.Series | None:
    """Per-epoch values of ``metric`` (index: epoch) from csv/metrics.csv, else from TensorBoard event files."""
    path = Path(run) / "csv" / "metrics.csv"
    if path.is_file():
        frame = pd.read_csv(path)
        if metric in frame and "epoch" in frame:
            rows = frame[["epoch", metric]].dropna()
            if not rows.empty:
                return rows.groupby("epoch")[metric].last()
    return _tensorboard_curve(Path(run) / "tensorboard", metric)


def _tensorboard_curve(folder: Path, metric: str) -> pd.Series | None:
    """Scalars tagged ``metric``; the epoch comes from the 'epoch' scalar Lightning logs at the same step."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for events in sorted({p.parent for p in folder.rglob("events.out.tfevents.*")}) if folder.is_dir() else []:
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        tags = acc.Tags().get("scalars", [])
        if metric not in tags:
            continue
        epoch_at = {e.step: int(e.value) for e in acc.Scalars("epoch")} if "epoch" in tags else {}
        points = acc.Scalars(metric)
        epochs = [epoch_at.get(e.step, i) for i, e in enumerate(points)]
        curve = pd.Series([e.value for e in points], index=pd.Index(epochs, name="epoch"), name=metric)
        return curve.groupby(level=0).last()
    return None


def curves_plot(runs: pd.DataFrame, metric: str, groups: list[str]) -> bytes | None:
    fig = curves_figure(runs, metric, groups)
    return to_png(fig) if fig is not None else None


def curves_figure(runs: pd.DataFrame, metric: str, groups: list[str]) -> Figure | None:
    """Epoch vs ``metric`` for every ok run (one colour per group); None when no run logged it."""
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    drawn = False
    for (color, style), (label, g) in zip(STYLES * 10, _grouped(runs[runs["status"] == "ok"], groups)):
        labelled = False
        for run in g["run"]:
            curve = read_curve(run, metric)
            if curve is None:
                continue
            ax.plot(curve.index, curve.to_numpy(), color=color, ls=style, alpha=0.8,
                    marker="." if len(curve) <= 30 else None, label=None if labelled else label)
            drawn = labelled = True
    if not drawn:
        return None
    ax.set(xlabel="epoch", ylabel=metric, title=f"{metric} per epoch (one line per run)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    _finish(ax)
    return fig
