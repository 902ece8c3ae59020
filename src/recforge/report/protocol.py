"""The evaluation protocol behind a table, in one line: split, masking rule, full or sampled ranking, K, and how
many users were evaluated and how many of their targets the mask made unreachable.

Read from a run's config.yaml (``dataset.split``, ``evaluation.*``) and metrics.json (``dataset`` statistics and
``test/unreachable``), flattened as :func:`recforge.report.collect.read_run` does. recforge-report prints one line
per distinct protocol above its tables; the results pages print the same line.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pandas as pd

MASK_RULES = {True: "every earlier item of the user masked (a repeated target is unreachable)",
              False: "no history mask (repeat consumption counts)",
              "s3rec": "earlier items' scores set to 0, as the S3-Rec code does"}


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def split_text(row: Mapping[str, Any]) -> str:
    """``dataset.split._target_`` and its arguments as words (a split without a config: 'unknown split')."""
    target = row.get("dataset.split._target_")
    if not _present(target):
        return "unknown split"
    name = str(target).rsplit(".", 1)[-1]
    args = {key[len("dataset.split."):]: value for key, value in row.items()
            if key.startswith("dataset.split.") and key != "dataset.split._target_" and _present(value)}
    if name == "LeaveOneOut":
        return "leave-one-out split (last item test, second to last validation)"
    shown = ", ".join(f"{key} {value}" for key, value in sorted(args.items()))
    return f"{name} split ({shown})" if shown else f"{name} split"


def mask_text(row: Mapping[str, Any]) -> str:
    rule = row.get("evaluation.mask_history", True)
    rule = True if not _present(rule) else rule
    return f"history mask: {MASK_RULES.get(rule, str(rule))}"


def ranking_text(row: Mapping[str, Any]) -> str:
    """Full ranking over all items, or sampled: the target among N drawn negatives (with the sampler)."""
    negatives = row.get("evaluation.sampled.negatives")
    if not _present(negatives):
        return "full ranking over all items"
    sampler = row.get("evaluation.sampled.sampler._target_", row.get("evaluation.sampled.sampler"))
    sampler = str(sampler).rsplit(".", 1)[-1] if _present(sampler) else "uniform"
    return f"sampled ranking: the target among {int(negatives)} {sampler} negatives"


def ks_text(row: Mapping[str, Any]) -> str:
    ks = row.get("evaluation.ks")
    return f"K = {str(ks).strip('[]')}" if _present(ks) else "K as logged"


def counts_text(row: Mapping[str, Any], stage: str = "test") -> str:
    """'22,363 test samples, 0 unreachable targets' from the run's dataset statistics and unreachable fraction (a
    fraction of the targets: with target sets, of ``<stage>_targets``); a split that leaves users out says how
    many."""
    samples = row.get(f"stats/{stage}_samples")
    if not _present(samples):
        return f"{stage} sample count not recorded"
    samples, targets = int(samples), row.get(f"stats/{stage}_targets")
    text = f"{samples:,} {stage} samples"
    if _present(targets):
        text += f" with {int(targets):,} targets"
    left_out = [(row.get(f"stats/{stage}_users_without_{what}"), what) for what in ("target", "input")]
    text += "".join(f", {int(n):,} users without {what} not evaluated" for n, what in left_out if _present(n) and n)
    fraction = row.get(f"{stage}/unreachable")
    if _present(fraction):
        total = int(targets) if _present(targets) else samples
        text += f", {round(float(fraction) * total):,} unreachable targets ({100 * float(fraction):.2f} %)"
    return text


def protocol_line(row: Mapping[str, Any]) -> str:
    """One run's protocol as one sentence."""
    dataset = row.get("dataset.name")
    where = f"{dataset}: " if _present(dataset) else ""
    return (f"{where}{split_text(row)}; {mask_text(row)}; {ranking_text(row)}; {ks_text(row)}; "
            f"{counts_text(row)}.")


def protocol_lines(runs: pd.DataFrame) -> list[str]:
    """One line per distinct protocol among the finished runs, prefixed 'Protocol:' (in order of first run)."""
    ok = runs[runs["status"] == "ok"] if "status" in runs else runs
    lines = [protocol_line(row) for row in ok.to_dict("records")]
    return [f"Protocol: {line}" for line in dict.fromkeys(lines)]
