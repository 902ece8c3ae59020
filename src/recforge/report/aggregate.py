"""Group runs, summarise metrics (mean, sample std, n), mark the best and test against a baseline over seeds."""
from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from recforge.errors import RecforgeError
from recforge.report.collect import RUN_FIELDS

NOT_CONFIG = {"run", "status", "error", "overrides", *RUN_FIELDS}
# keys that never define an experiment: bookkeeping, output locations, loggers, progress bars
IGNORED_PREFIXES = ("paths.", "hydra.", "logger.", "callbacks.progress_bar.")
IGNORED_KEYS = {"seed", "task_name", "ckpt_path", "trainer.default_root_dir"}
IGNORED_LEAVES = {"dir", "dirpath", "save_dir", "root_dir", "output_dir", "cache_dir", "log_dir"}
TESTS = ("ttest", "wilcoxon")
CELL_COLUMNS = ["metric", "mean", "std", "n", "p", "n_paired", "best", "significant", "baseline"]


@dataclass(frozen=True)
class Table:
    """Aggregated results. ``cells`` has one line per (row group, column group, metric):
    *rows, *cols, metric, mean, std (NaN when n=1), n, p (NaN: not tested), n_paired, best, significant, baseline."""

    rows: list[str]
    cols: list[str]
    metrics: list[str]
    cells: pd.DataFrame
    baseline: dict[str, str] = field(default_factory=dict)
    test: str = "ttest"
    alpha: float = 0.05
    lower_better: list[str] = field(default_factory=list)  # metrics where the smallest mean is best
    protocol: list[str] = field(default_factory=list)  # recforge.report.protocol lines, printed above the table


def metric_columns(runs: pd.DataFrame) -> list[str]:
    """Numeric result columns: test/*, val/* and the run fields (epochs, fit_seconds ...)."""
    return [c for c in runs.columns if c.startswith(("test/", "val/")) or c in RUN_FIELDS]


def config_columns(runs: pd.DataFrame) -> list[str]:
    """Flattened config keys plus the derived ``model`` column (not the ``stats/`` dataset statistics)."""
    metrics = set(metric_columns(runs))
    return [c for c in runs.columns if c not in NOT_CONFIG and c not in metrics and not c.startswith("stats/")]


def sort_key(value: Any) -> tuple[int, Any]:
    """Orders mixed group values: numbers, then strings, then missing values."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return (2, "")
    if isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
        return (0, float(value))
    return (1, str(value))


def format_value(key: str, value: Any) -> str:
    """A group value for display: class names for ``_target_`` keys, '–' when missing."""
    if sort_key(value)[0] == 2:
        return "–"
    if key.endswith("._target_") and isinstance(value, str):
        return value.rsplit(".", 1)[-1]
    return f"{value:g}" if isinstance(value, float) else str(value)


def key_label(key: str) -> str:
    """A key for display: 'loss._target_' -> 'loss' (its value shows the class name)."""
    return key.removesuffix("._target_")


def group_label(keys: Sequence[str], values: Sequence[Any]) -> str:
    """'SASRec, optimizer.lr=0.001': the model bare, other keys as key=value."""
    return ", ".join(format_value(k, v) if k == "model" else f"{key_label(k)}={format_value(k, v)}"
                     for k, v in zip(keys, values)) or "all runs"


def matches(value: Any, text: str) -> bool:
    """Does a config value equal a command-line value ('0.001' matches 0.001, 'SASRec' matches 'SASRec')?"""
    if str(value) == text or format_value("", value) == text:
        return True
    try:
        return sort_key(value)[0] == 0 and math.isclose(float(value), float(text))
    except ValueError:
        return False


def _ignored(key: str, runs: pd.DataFrame) -> bool:
    """Bookkeeping keys, and keys whose value contains the run's own directory (checkpoint dirs, log dirs ...)."""
    if key in IGNORED_KEYS or key.startswith(IGNORED_PREFIXES) or key.rsplit(".", 1)[-1] in IGNORED_LEAVES:
        return True
    own_dirs = runs["paths.output_dir"] if "paths.output_dir" in runs else runs["run"]
    return any(isinstance(v, str) and isinstance(d, str) and d and d in v for v, d in zip(runs[key], own_dirs))


def _override_keys(runs: pd.DataFrame) -> list[str]:
    """Config columns named by the runs' Hydra overrides, in order.

    A group choice maps to a column: ``encoder=x`` -> model, ``dataset=x`` -> dataset.name, ``loss=x`` -> loss._target_.
    """
    keys: list[str] = []
    for text in runs.get("overrides", pd.Series(dtype=str)).fillna(""):
        for key in re.findall(r"(?:^|,)[+~]*([A-Za-z_][\w.@/-]*)=", text):
            choices = ["model"] if key == "encoder" else [key, f"{key}.name", f"{key}._target_"]
            keys += [c for c in choices if c in runs.columns][:1]
    return list(dict.fromkeys(keys))


def _n_groups(runs: pd.DataFrame, keys: list[str]) -> int:
    return len(runs[keys].astype(str).drop_duplicates())


def default_row_keys(runs: pd.DataFrame) -> list[str]:
    """``model`` plus the config keys that vary across the ok runs, each kept only if it splits the runs further.

    Seeds, output paths, loggers and other bookkeeping are never row keys. ``dataset.name`` is tried first,
    then keys named in Hydra overrides, then the rest, shallow keys before nested ones.
    """
    ok = runs[runs["status"] == "ok"] if "status" in runs else runs
    ok = runs if ok.empty else ok
    varying = [c for c in config_columns(ok) if ok[c].astype(str).nunique() > 1 and not _ignored(c, ok)]
    rest = sorted(varying, key=lambda c: (c.count("."), c))
    keys = ["model"]
    for key in dict.fromkeys(["dataset.name", *_override_keys(ok), *rest]):
        if key in varying and key not in keys and _n_groups(ok, keys + [key]) > _n_groups(ok, keys):
            keys.append(key)
    return keys


def check_keys(runs: pd.DataFrame, keys: Iterable[str], option: str, allowed: Sequence[str] | None = None) -> None:
    """Raise a one-sentence RecforgeError for a key that is not a column the option accepts."""
    allowed = list(allowed if allowed is not None else config_columns(runs))
    for key in keys:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=3)
            hint = f"did you mean {', '.join(close)}?" if close else f"known keys include {', '.join(allowed[:8])}."
            raise RecforgeError(f"{option} key '{key}' is not in the collected runs; {hint}")


def parse_baseline(text: str) -> dict[str, str]:
    """'model=SASRec,optimizer.lr=0.001' -> {'model': 'SASRec', 'optimizer.lr': '0.001'}."""
    pairs = [part.split("=", 1) for part in text.split(",") if part.strip()]
    if not pairs or any(len(p) != 2 or not p[0].strip() for p in pairs):
        raise RecforgeError(f"--baseline '{text}' must be key=value[,key=value], e.g. model=SASRec.")
    return {k.strip(): v.strip() for k, v in pairs}


def _groups(runs: pd.DataFrame, keys: list[str]) -> list[tuple[tuple, pd.DataFrame]]:
    """(key tuple, runs) per group, sorted by key values (numbers, then text, then missing)."""
    items = [(k if isinstance(k, tuple) else (k,), g) for k, g in runs.groupby(keys, dropna=False, sort=False)]
    return sorted(items, key=lambda kg: tuple(sort_key(v) for v in kg[0]))


def summarise(values: pd.Series) -> tuple[float, float, int]:
    """(mean, sample std with ddof=1 or NaN when n < 2, n) over the non-missing values."""
    x = values.dropna().astype(float).to_numpy()
    if x.size == 0:
        return math.nan, math.nan, 0
    return float(x.mean()), float(x.std(ddof=1)) if x.size > 1 else math.nan, int(x.size)


def paired_p(run_values: pd.DataFrame, base_values: pd.DataFrame, metric: str, test: str) -> tuple[float, int]:
    """(p-value, number of paired seeds) of ``test`` on per-seed values shared by both groups; p NaN if < 2 pairs."""
    if "seed" not in run_values or "seed" not in base_values:
        return math.nan, 0
    a = run_values.groupby("seed")[metric].mean().dropna()
    b = base_values.groupby("seed")[metric].mean().dropna()
    seeds = a.index.intersection(b.index)
    if len(seeds) < 2:
        return math.nan, len(seeds)
    x, y = a[seeds].to_numpy(float), b[seeds].to_numpy(float)
    if np.allclose(x - y, 0.0):
        return math.nan, len(seeds)  # identical results: no test is meaningful
    try:
        result = stats.ttest_rel(x, y) if test == "ttest" else stats.wilcoxon(x, y)
    except ValueError:  # e.g. Wilcoxon with too few non-zero differences
        return math.nan, len(seeds)
    return float(result.pvalue), len(seeds)


def _baseline_of(key: tuple, names: list[str], baseline: dict[str, str], candidates: list[tuple]) -> tuple | None:
    """The baseline group that agrees with ``key`` on every key the baseline does not fix."""
    free = [i for i, name in enumerate(names) if name not in baseline]
    for cand in candidates:
        if all(str(cand[i]) == str(key[i]) for i in free):
            return cand
    return None


def aggregate(runs: pd.DataFrame, rows: list[str], metrics: list[str], cols: Sequence[str] = (),
              baseline: dict[str, str] | None = None, test: str = "ttest", alpha: float = 0.05,
              lower_better: Iterable[str] = ()) -> Table:
    """Summarise the ok runs per (rows, cols) group; best per column group; paired tests against ``baseline``."""
    cols, baseline, lower = list(cols), dict(baseline or {}), set(lower_better)
    check_keys(runs, rows, "--rows")
    check_keys(runs, cols, "--cols")
    check_keys(runs, metrics, "--metrics", metric_columns(runs))
    extra = sorted(lower - set(metrics))
    if extra:
        raise RecforgeError(
            f"--lower-better {extra[0]} is not a reported metric ({', '.join(metrics)}); add it to --metrics.")
    if test not in TESTS:
        raise RecforgeError(f"--test {test} is not a known test; expected one of {', '.join(TESTS)}.")
    ok = runs[runs["status"] == "ok"]
    if ok.empty:
        raise RecforgeError(f"all {len(runs)} runs failed; there is nothing to aggregate.")
    if not rows:
        raise RecforgeError("no row keys to group by; pass --rows, e.g. --rows model.")
    names = [*rows, *cols]
    groups = _groups(ok, names)
    by_key = dict(groups)
    candidates = _baseline_groups(groups, names, rows, baseline)
    lines = []
    for key, g in groups:
        base_key = _baseline_of(key, names, baseline, candidates) if baseline else None
        for metric in metrics:
            mean, std, n = summarise(g[metric])
            p, n_paired = math.nan, 0
            if base_key is not None and base_key != key:
                p, n_paired = paired_p(g, by_key[base_key], metric, test)
            lines.append([*key, metric, mean, std, n, p, n_paired, False, p < alpha, key in candidates])
    cells = pd.DataFrame(lines, columns=[*names, *CELL_COLUMNS])
    cells["best"] = _best(cells, cols, lower)
    return Table(rows=list(rows), cols=cols, metrics=list(metrics), cells=cells, baseline=baseline, test=test,
                 alpha=alpha, lower_better=[m for m in metrics if m in lower])


def _baseline_groups(groups: list[tuple[tuple, pd.DataFrame]], names: list[str], rows: list[str],
                     baseline: dict[str, str]) -> list[tuple]:
    """Group keys that match every baseline key=value; the baseline keys must be row keys."""
    if not baseline:
        return []
    for key in baseline:
        if key not in rows:
            raise RecforgeError(
                f"--baseline key '{key}' is not a row key; add it to --rows (rows are {', '.join(rows)}).")
    found = [k for k, _ in groups if all(matches(k[names.index(b)], v) for b, v in baseline.items())]
    if not found:
        text = ",".join(f"{k}={v}" for k, v in baseline.items())
        seen = {b: sorted({format_value(b, k[names.index(b)]) for k, _ in groups}) for b in baseline}
        values = "; ".join(f"{b} values are {', '.join(v)}" for b, v in seen.items())
        raise RecforgeError(f"--baseline {text} matches no row of ok runs ({values}).")
    return found


def _best(cells: pd.DataFrame, cols: list[str], lower: set[str]) -> pd.Series:
    """True where the mean is the best of its (column group, metric); higher is better unless in ``lower``."""
    keys = [*cols, "metric"]
    filled = cells[keys].astype(str).agg("\x1f".join, axis=1)
    best = pd.Series(False, index=cells.index)
    for idx in cells.groupby(filled).groups.values():
        block = cells.loc[idx]
        means = block["mean"].dropna()
        if means.empty:
            continue
        target = means.min() if block["metric"].iloc[0] in lower else means.max()
        best[idx] = block["mean"] == target
    return best
