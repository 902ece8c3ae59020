"""recforge vs RecBole 1.2.1 on the same data, split, protocol and model sizes (issue 5 §1).

    python benchmarks/recbole_compare.py --data-root ../shared/data [--venv DIR] [--jobs ml-100k:sasrec,...]
        [--max-epochs N] [--budget-minutes M] [--no-mask-history] [--threads T]
        [--frameworks recbole,recforge] [--recforge-override KEY=VALUE ...]
    python benchmarks/recbole_compare.py --report        # only render benchmarks/results/recbole_results.md

``--recforge-override dataset.train_stride=1`` runs recforge as a variant (its own rows, the same RecBole run);
``--frameworks recforge`` runs only that side, e.g. while a long RecBole job of the pair runs in another driver
(each driver re-reads the JSON lines before every job and skips what another one finished).

Run with the recforge venv. Each dataset is exported from recforge's own preprocessing to a RecBole atomic file
(outputs/bench/data/<name>/<name>.inter; timestamp = position in the user's sequence), so both frameworks see the
same sequences and the same leave-one-out split (checked: the RecBole runner returns a digest of its validation
and test (user, target) pairs, compared with recforge's). Jobs run one at a time as subprocesses, alternating
the framework that goes first (RecBole, recforge | recforge, RecBole | ...); each is measured for wall time and
peak resident memory (``os.wait4``), and one JSON line per finished job is appended to
benchmarks/results/recbole_compare.jsonl, a committed file: finished jobs (same settings) are skipped on restart,
also on another machine or in a later session, so the comparison can be completed a few jobs at a time (each line
records its machine, load average and date). An interrupted RecBole job (hours on 2 cores) continues after its
last finished epoch when the driver is started again (recbole_runner.py's ``resume.pth``; same shuffles and
dropout as an uninterrupted run; its times count the kept epochs of every attempt). RecBole runs in its
own venv (created with torch 2.13.0 and recbole 1.2.1 when missing) through benchmarks/recbole_runner.py; the
recforge jobs are ``recforge-train experiment=<exp>`` with benchmarks/recforge_bench_callbacks.py's clock.
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recforge.report.render import markdown_table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from recbole_runner import split_digest  # standard library only

PROJECT = Path(__file__).resolve().parents[1]
BENCH = PROJECT / "outputs" / "bench"
DEFAULT_VENV = PROJECT / "benchmarks" / ".venv-recbole"
DEFAULT_RESULTS = PROJECT / "benchmarks" / "results" / "recbole_results.md"
# the paragraph under the title of DEFAULT_RESULTS (dated changes of defaults and of machine load), kept in its own
# file so that every render of the committed page keeps it
DEFAULT_NOTE = PROJECT / "benchmarks" / "results" / "recbole_results_note.md"
PAIRS: tuple[tuple[str, str], ...] = (("ml-100k", "sasrec"), ("ml-100k", "gru4rec"), ("beauty", "sasrec"),
                                      ("beauty", "gru4rec"), ("ml-100k", "lightgcn"), ("beauty", "lightgcn"))
EXPERIMENTS = {("ml-100k", "sasrec"): "ml100k_sasrec", ("ml-100k", "gru4rec"): "ml100k_gru4rec",
               ("beauty", "sasrec"): "beauty_sasrec", ("beauty", "gru4rec"): "beauty_gru4rec",
               ("ml-100k", "lightgcn"): "ml100k_lightgcn", ("beauty", "lightgcn"): "beauty_lightgcn"}
RECBOLE_MODELS = {"sasrec": "SASRec", "gru4rec": "GRU4Rec", "lightgcn": "LightGCN"}
# RecBole's general recommenders: trained on (user, item) training interactions, one sample each, with BPR against
# one uniform negative; their batch is RecBole's default of 2048 interactions, their L2 term RecBole's default
GENERAL_MODELS = {"lightgcn": {"train_batch_size": 2048, "reg_weight": 1e-05}}
# the recforge losses each side of a pair may train with: RecBole's general models (LightGCN) always train with BPR;
# recforge's LightGCN experiments use full-softmax CE since 2026-12-03 (a difference the results page names)
LOSSES = {"general": ("recforge.models.losses.BPR", "recforge.models.losses.CrossEntropy"),
          "sequential": ("recforge.models.losses.CrossEntropy",)}
DATASET_NAMES = {"ml-100k": "ML-100K", "beauty": "Beauty"}
RECBOLE_EVAL_BATCH = 4096
RECBOLE_PREFIX = "recforge-"  # RecBole swaps a dataset named "ml-100k" for its bundled copy: never use bare names
FINISHED = ("ok", "budget-capped")
TARGET_SPEEDUP = 5.0
RESERVED_KEYS = ("experiment", "dataset.root", "hydra.run.dir", "evaluation.mask_history", "trainer.max_epochs")


@dataclass(frozen=True)
class Job:
    dataset: str
    model: str
    framework: str  # "recbole" | "recforge"

    @property
    def pair(self) -> tuple[str, str]:
        return self.dataset, self.model


# ---------------------------------------------------------------------------------------------- pure helpers


def job_order(pairs: Sequence[tuple[str, str]]) -> list[Job]:
    """Both frameworks for every pair, the one going first alternating: RecBole first on even pairs."""
    jobs = []
    for i, (dataset, model) in enumerate(pairs):
        first, second = ("recbole", "recforge") if i % 2 == 0 else ("recforge", "recbole")
        jobs += [Job(dataset, model, first), Job(dataset, model, second)]
    return jobs


def parse_jobs(text: str | None) -> list[tuple[str, str]]:
    """``ml-100k:sasrec,beauty:gru4rec`` -> pairs in the benchmark's own order; None -> all four."""
    if not text:
        return list(PAIRS)
    wanted = {tuple(part.strip().split(":", 1)) for part in text.split(",") if part.strip()}
    unknown = sorted(":".join(p) for p in wanted - set(PAIRS))
    if unknown:
        known = ", ".join(":".join(p) for p in PAIRS)
        raise SystemExit(f"--jobs: unknown {', '.join(unknown)}; choose from {known}.")
    return [pair for pair in PAIRS if pair in wanted]


def settings_key(settings: dict[str, Any]) -> str:
    return json.dumps(settings, sort_keys=True)


def job_settings(framework: str, base: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """The settings a job is recorded (and its directory named) under: recforge-only overrides are part of the
    recforge job's settings, never of RecBole's (one RecBole run serves every recforge variant)."""
    return {**base, "recforge_overrides": list(overrides)} if framework == "recforge" and overrides else dict(base)


def base_settings(settings: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in settings.items() if k != "recforge_overrides"}


def variant(record: dict[str, Any]) -> str:
    """How a recforge row differs from the experiment config: its overrides, or "default"."""
    return " ".join(record["settings"].get("recforge_overrides") or []) or "default"


def parse_frameworks(text: str) -> tuple[str, ...]:
    """``recbole,recforge`` -> the frameworks to run."""
    names = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [name for name in names if name not in ("recbole", "recforge")]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"{text!r}: choose recbole, recforge or both (comma-separated).")
    return names


def parse_override(text: str) -> str:
    """``key=value`` of a Hydra override (recforge runs only); the benchmark's own keys cannot be overridden."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip() or not value.strip():
        raise argparse.ArgumentTypeError(f"{text!r}: expected key=value, e.g. dataset.train_stride=1.")
    if key.strip().lstrip("+~") in RESERVED_KEYS:
        raise argparse.ArgumentTypeError(f"{text!r}: {key.strip()} is set by the benchmark for both frameworks.")
    return f"{key.strip()}={value.strip()}"


def record_key(dataset: str, model: str, framework: str, settings: dict[str, Any]) -> str:
    return f"{dataset}:{model}:{framework}:{settings_key(settings)}"


def finished_keys(records: Iterable[dict[str, Any]]) -> set[str]:
    """Keys of jobs that finished (failed ones are run again)."""
    return {record_key(r["dataset"], r["model"], r["framework"], r["settings"])
            for r in records if r.get("status") in FINISHED}


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def inter_lines(user_ids: Sequence[Any], indptr: Sequence[int], items: Sequence[int]) -> list[str]:
    """RecBole atomic ``.inter`` lines: header, then (raw user id, recforge item id, position) per interaction."""
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    for u, user in enumerate(user_ids):
        start, stop = int(indptr[u]), int(indptr[u + 1])
        lines += [f"{user}\t{int(items[j])}\t{j - start}" for j in range(start, stop)]
    return lines


def split_pairs(user_ids: Sequence[Any], indptr: Sequence[int], items: Sequence[int],
                samples: Iterable[Sequence[int]]) -> list[tuple[str, str]]:
    """(user token, target item token) of (user row, target position) samples, as the atomic file names them."""
    return [(str(user_ids[u]), str(int(items[int(indptr[u]) + p]))) for u, p in samples]


def recbole_config(cfg: dict[str, Any], model: str, data_path: str, checkpoint_dir: str,
                   max_epochs: int | None) -> dict[str, Any]:
    """RecBole settings equal to a composed recforge experiment config (sizes, dropout, lr, patience, ks).

    Early stopping: Lightning stops after ``patience`` validations without improvement, RecBole after
    ``stopping_step + 1``, hence ``stopping_step = patience - 1``.
    """
    losses = LOSSES["general" if model in GENERAL_MODELS else "sequential"]
    for key, expected in (("optimizer", ("torch.optim.Adam",)), ("loss", losses)):
        if cfg[key]["_target_"] not in expected:
            raise SystemExit(f"{key}._target_={cfg[key]['_target_']}: the RecBole comparison needs "
                             f"{' or '.join(expected)}.")
    if cfg.get("scheduler"):
        raise SystemExit("scheduler: the RecBole comparison needs a constant learning rate (scheduler=none).")
    if cfg["loss"].get("label_smoothing"):
        raise SystemExit("loss.label_smoothing: RecBole's CE loss has none; set it to 0.")
    encoder, hidden = cfg["encoder"], int(cfg["hidden_size"])
    settings: dict[str, Any] = {
        "data_path": data_path, "checkpoint_dir": checkpoint_dir, "seed": int(cfg["seed"]), "reproducibility": True,
        "state": "INFO", "show_progress": False, "use_gpu": False, "log_wandb": False, "save_dataset": False,
        "save_dataloaders": False, "worker": 0,
        "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "TIME_FIELD": "timestamp",
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "rm_dup_inter": None, "val_interval": None, "filter_inter_by_user_or_item": False,
        "user_inter_num_interval": "[0,inf)", "item_inter_num_interval": "[0,inf)",
        "MAX_ITEM_LIST_LENGTH": int(cfg["dataset"]["max_len"]),
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "full"},
        "train_batch_size": int(cfg["dataset"]["batch_size"]), "eval_batch_size": RECBOLE_EVAL_BATCH,
        "learner": "adam", "learning_rate": float(cfg["optimizer"]["lr"]),
        "weight_decay": float(cfg["optimizer"].get("weight_decay") or 0.0),
        "train_neg_sample_args": None, "loss_type": "CE",
        "epochs": int(max_epochs or cfg["trainer"]["max_epochs"]), "eval_step": 1,
        "stopping_step": int(cfg["callbacks"]["early_stopping"]["patience"]) - 1,
        "valid_metric": "NDCG@10", "valid_metric_bigger": True, "metrics": ["Hit", "NDCG"],
        "topk": [int(k) for k in cfg["evaluation"]["ks"]], "metric_decimal_place": 8,
    }
    if model == "sasrec":
        settings.update({"n_layers": int(encoder["num_layers"]), "n_heads": int(encoder["num_heads"]),
                         "hidden_size": hidden, "inner_size": int(encoder.get("inner_size") or 4 * hidden),
                         "hidden_dropout_prob": float(encoder["dropout"]),
                         "attn_dropout_prob": float(encoder["dropout"]),
                         "hidden_act": encoder.get("activation", "gelu"),
                         "initializer_range": float(cfg["item_embedder"].get("init_std", 0.02))})
    elif model == "gru4rec":
        settings.update({"embedding_size": hidden, "hidden_size": int(encoder["gru_size"]),
                         "num_layers": int(encoder["num_layers"]), "dropout_prob": float(encoder["dropout"])})
    elif model == "lightgcn":
        settings.update({"embedding_size": hidden, "n_layers": int(cfg["item_embedder"]["num_layers"]),
                         "loss_type": "BPR", "train_neg_sample_args": {"distribution": "uniform", "sample_num": 1,
                                                                       "alpha": 1.0, "dynamic": False,
                                                                       "candidate_num": 0},
                         **GENERAL_MODELS["lightgcn"]})
    else:
        raise SystemExit(f"model {model}: the RecBole comparison knows {', '.join(RECBOLE_MODELS)}.")
    return settings


def time_to_reach(epochs: Sequence[dict[str, Any]], target: float, metric: str = "ndcg@10") -> float | None:
    """Elapsed seconds at the end of the first epoch whose test ``metric`` is >= ``target`` (None: never)."""
    for epoch in epochs:
        value = epoch.get("test", {}).get(metric)
        if value is not None and value >= target:
            return float(epoch["elapsed"])
    return None


def latest(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The last finished record of every job (dataset, model, framework, settings)."""
    out: dict[str, dict[str, Any]] = {}
    for r in records:
        if r.get("status") in FINISHED:
            out[record_key(r["dataset"], r["model"], r["framework"], r["settings"])] = r
    return out


def compare(recbole: dict[str, Any], recforge: dict[str, Any]) -> dict[str, Any]:
    """Ratios of one pair: speed-ups are RecBole / recforge (> 1: recforge faster) and the targets."""
    target = recbole["test"]["ndcg@10"]
    reach = time_to_reach(recforge["epochs"], target)
    reach_speedup = recbole["time_to_best"] / reach if reach else None
    eval_speedup = recbole["eval_seconds"] / recforge["eval_seconds"] if recforge.get("eval_seconds") else None
    ndcg_gain = recforge["test"]["ndcg@10"] - target
    return {
        "recbole_best_test_ndcg@10": target, "recforge_time_to_reach": reach,
        "reach_speedup": reach_speedup, "eval_speedup": eval_speedup,
        "train_time_ratio": recbole["train_seconds"] / recforge["train_seconds"],
        "rss_ratio": recbole["peak_rss_mb"] / recforge["peak_rss_mb"],
        "ndcg@10_change": ndcg_gain / target if target else None,
        "reach_met": reach_speedup is not None and reach_speedup >= TARGET_SPEEDUP,
        "eval_met": eval_speedup is not None and eval_speedup >= TARGET_SPEEDUP,
        "ndcg_met": ndcg_gain >= 0,
    }


# ------------------------------------------------------------------------------------------------ rendering


def _sec(value: float | None) -> str:
    if value is None:
        return "–"
    if value >= 120:
        return f"{value / 60:.1f} min"
    return f"{value:.2f} s" if value < 1 else f"{value:.1f} s"


def _num(value: float | None, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}".lstrip("0") if value < 1 else f"{value:.{digits}f}"


def _times(value: float | None) -> str:
    return "not reached" if value is None else f"{value:.1f}×"


def describe(settings: dict[str, Any]) -> str:
    parts = [f"history {'masked' if settings['mask_history'] else 'not masked'} in evaluation"]
    epochs = settings.get("max_epochs")
    parts.append(f"at most {epochs} epoch{'s' * (epochs != 1)}" if epochs else "epoch cap of the experiment config (200)")
    if settings.get("budget_minutes"):
        parts.append(f"RecBole budget {settings['budget_minutes']} min")
    threads = settings.get("threads")
    parts.append(f"{threads} torch thread{'s' * (threads != 1)}" if threads else "default torch threads")
    return ", ".join(parts)


ROWS_HEADER = ["dataset", "model", "framework", "status", "best / run epochs", "to RecBole's best test NDCG@10",
               "to own best epoch", "training", "s / epoch", "eval all test users", "peak RSS MiB", "HR@5", "NDCG@5",
               "HR@10", "NDCG@10", "HR@20", "NDCG@20"]
RATIOS_HEADER = ["dataset", "model", "recforge", "RecBole best test NDCG@10",
                 "time to reach it: RecBole / recforge (≥ 5×)", "eval all users: RecBole / recforge (≥ 5×)",
                 "final NDCG@10 recforge vs RecBole (not lower)", "training time RecBole / recforge",
                 "peak RSS RecBole / recforge"]
TEST_METRICS = ("hr@5", "ndcg@5", "hr@10", "ndcg@10", "hr@20", "ndcg@20")


def render_rows(rows: list[dict[str, Any]]) -> str:
    """The table of every job: status, epochs, times, memory and test metrics."""
    recbole = {(r["dataset"], r["model"]): r for r in rows if r["framework"] == "recbole"}
    return markdown_table(ROWS_HEADER, [row_cells(r, recbole.get((r["dataset"], r["model"]))) for r in rows])


def row_cells(r: dict[str, Any], recbole: dict[str, Any] | None) -> list[str]:
    """One job's cells; ``recbole`` is the RecBole job of its pair (None when that has not run)."""
    if r["framework"] == "recbole":
        reach = r["time_to_best"]
    else:
        reach = time_to_reach(r["epochs"], recbole["test"]["ndcg@10"]) if recbole else None
    reach_text = _sec(reach) if recbole else "–"
    if recbole and r["framework"] == "recforge" and reach is None:
        reach_text = "not reached"
    return [DATASET_NAMES.get(r["dataset"], r["dataset"]), RECBOLE_MODELS[r["model"]], framework_cell(r),
            status_cell(r), f"{r['best_epoch'] + 1} / {r['epochs_run']}", reach_text, _sec(r["time_to_best"]),
            _sec(r["train_seconds"]), f"{r['train_seconds'] / max(r['epochs_run'], 1):.1f}",
            _sec(r["eval_seconds"]), f"{r['peak_rss_mb']:.0f}", *(_num(r["test"].get(m)) for m in TEST_METRICS)]


def status_cell(record: dict[str, Any]) -> str:
    """The status, and how many processes a resumed RecBole job took."""
    attempts = record.get("attempts", 1)
    return f"{record['status']} ({attempts} processes)" if attempts > 1 else record["status"]


def framework_cell(record: dict[str, Any]) -> str:
    return record["framework"] if variant(record) == "default" else f"recforge `{variant(record)}`"


def ratio_cells(rows: list[dict[str, Any]]) -> list[list[str]]:
    """One line of cells per recforge row (each variant) against the RecBole row of its pair."""
    lines = []
    recbole_rows = {(r["dataset"], r["model"]): r for r in rows if r["framework"] == "recbole"}
    for recforge in (r for r in rows if r["framework"] == "recforge"):
        dataset, model = recforge["dataset"], recforge["model"]
        recbole = recbole_rows.get((dataset, model))
        if not recbole:
            continue
        c = compare(recbole, recforge)
        change = "–" if c["ndcg@10_change"] is None else f"{c['ndcg@10_change']:+.1%}"
        overrides = variant(recforge) if variant(recforge) == "default" else f"`{variant(recforge)}`"
        lines.append([DATASET_NAMES.get(dataset, dataset), RECBOLE_MODELS[model], overrides,
                      _num(c["recbole_best_test_ndcg@10"]),
                      f"{_times(c['reach_speedup'])} {'met' if c['reach_met'] else 'NOT met'}",
                      f"{_times(c['eval_speedup'])} {'met' if c['eval_met'] else 'NOT met'}",
                      f"{change} {'met' if c['ndcg_met'] else 'NOT met'}", f"{c['train_time_ratio']:.1f}×",
                      f"{c['rss_ratio']:.1f}×"])
    return lines


def render(records: list[dict[str, Any]], note: str | None = None) -> str:
    """The markdown results page: machine, date, commands, one table and one ratio table per settings."""
    kept = list(latest(records).values())
    out = ["# recforge vs RecBole 1.2.1", ""]
    if note:
        out += [note, ""]
    if not kept:
        return "\n".join(out + ["No finished jobs yet.", ""])
    versions = {r["framework"]: r.get("versions", {}) for r in kept}
    dates = sorted(r["finished"] for r in kept)
    machines = list(dict.fromkeys(r["machine"] for r in kept))  # every machine the shown rows ran on, in order
    out += [(f"Machine{'s' if len(machines) > 1 else ''}: {'; '.join(machines)}. "
             f"Dates: {dates[0][:16]} to {dates[-1][:16]} (UTC)."),
            "Versions: " + "; ".join(f"{fw}: " + ", ".join(f"{k} {v}" for k, v in sorted(vs.items()))
                                     for fw, vs in sorted(versions.items())) + ".", ""]
    out += PROTOCOL_TEXT
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in kept:  # recforge variants share their RecBole row: grouped by the settings both frameworks ran with
        groups.setdefault(settings_key(base_settings(r["settings"])), []).append(r)
    for key, rows in groups.items():
        order = {pair: i for i, pair in enumerate(PAIRS)}
        rows.sort(key=lambda r: (order.get((r["dataset"], r["model"]), 99), r["framework"], variant(r) != "default",
                                 variant(r)))
        drivers = list(dict.fromkeys(r["driver_command"] for r in sorted(rows, key=lambda r: r["finished"])))
        out += [f"## Settings: {describe(json.loads(key))}", "", "```bash", *drivers, "```", ""]
        ratios = ratio_cells(rows)
        out += [render_rows(rows), ""] + ([markdown_table(RATIOS_HEADER, ratios), ""] if ratios else [])
        mismatched = [r["dataset"] for r in rows if r["framework"] == "recbole" and not r.get("split_matches")]
        if mismatched:
            out += [(f"**Split check FAILED** for {', '.join(sorted(set(mismatched)))}: RecBole's validation/test "
                    "samples differ from recforge's; the comparison of those rows is not valid."), ""]
        out += ["<details><summary>job commands</summary>", "", "```bash"]
        out += [r["command"] for r in rows] + ["```", "", "</details>", ""]
    return "\n".join(out)


PROTOCOL_TEXT = [
    ("Protocol (both frameworks): the dataset as recforge preprocesses it, exported to a RecBole atomic file "
     "(timestamp = position in the user's sequence); leave-one-out (last item test, second to last validation); "
     "full ranking over all items; max_len 50, hidden 64, 2 layers / 2 heads (SASRec, feed-forward 256) or one "
     "GRU layer of 64 (GRU4Rec), dropout and patience from recforge's experiment config; Adam lr 1e-3, batch 256, "
     "full-softmax CE; early stopping on validation NDCG@10 (RecBole `stopping_step` = patience - 1, same stopping "
     "point); test on the best-validation model. The split is checked: RecBole's validation and test "
     "(user, target) pairs hash equal to recforge's."),
    "",
    ("Figures: *to RecBole's best test NDCG@10* = training time (training + validation, from the start of fit) at "
     "the end of the epoch where RecBole's best-validation model ends (RecBole) or of the first epoch whose test "
     "NDCG@10 reaches RecBole's final test NDCG@10 (recforge; the test pass after every epoch that this needs is "
     "excluded from the clock and does not change training); *training* = total training time until early "
     "stopping; *eval all test users* = one full-ranking evaluation of every test user with the best model "
     "already loaded (RecBole `Trainer.evaluate`, eval batch 4096; recforge `trainer.test`, eval batch 512); "
     "*peak RSS* = the whole job process (data loading included). Speed-ups are RecBole / recforge. A RecBole "
     "job that was interrupted resumes after its last finished epoch (status: how many processes it took); its "
     "times add up the kept epochs of every process, and its peak RSS is the last process's."),
    "",
    ("Known differences that remain (each framework's own design, not settings): RecBole trains on every prefix "
     "of every sequence as a separate padded sample of length 50, recforge by default on non-overlapping windows of 51 "
     "items with a loss at every position (the same next-item targets; rows marked `dataset.train_stride=1` use "
     "overlapping windows ending at every item, each owning only its last target, so every target is predicted "
     "from up to 50 earlier items as in RecBole); RecBole's SASRec is post-LayerNorm, recforge's "
      "pre-LayerNorm. RecBole's sequential full ranking does not mask history by itself; with history masked, the "
     "runner passes each user's earlier items (never the target) to RecBole's own `history_index` masking. "
     "RecBole gets the data under the name `recforge-<dataset>`: a dataset named `ml-100k` is silently replaced "
     "by RecBole's bundled copy of MovieLens-100K (its own ids and timestamps), which the split check catches."),
    "",
    ("LightGCN (a general recommender on both sides: item order ignored): 3 propagation layers, hidden 64, Adam "
     "with the experiment's lr (2e-2); RecBole trains with BPR (one uniform negative per training interaction) "
     "on batches of 2048 (user, item) training interactions and adds its default L2 term on the batch's ego "
     "vectors (reg_weight 1e-5); recforge's experiments (since 2026-12-03) train with full-softmax CE on batches "
     "of about 2,048 training targets cut from user windows (`dataset.max_len` + 1 interactions each, every one a "
     "target; rows with `loss=bpr dataset.batch_targets=null`: BPR on 256 windows) and have no L2 term. The split "
     "check counts RecBole's training interactions."),
    "",
]


# ------------------------------------------------------------------------------------------------ running


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal"))
        return f"{os.cpu_count()} CPU cores ({cpu}), {mem / 2**20:.0f} GiB RAM, no GPU"
    except (OSError, StopIteration):
        return f"{os.cpu_count()} CPU cores ({cpu})"


def measure(cmd: list[str], cwd: Path, env: dict[str, str], log_path: Path) -> tuple[int, float, float]:
    """Run ``cmd`` to the end: (exit code, wall seconds, peak RSS MiB of that process and its children)."""
    with log_path.open("a") as log:  # a resumed job's log keeps its earlier attempts
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, wall, usage.ru_maxrss / 1024  # Linux reports KiB


def ensure_venv(venv: Path) -> Path:
    """The RecBole venv's python; the venv is created (torch 2.13.0 first, then recbole 1.2.1) when missing."""
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"creating the RecBole venv in {venv}", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "torch==2.13.0"], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "recbole==1.2.1"], check=True)
    check = subprocess.run([str(python), "-c", "import importlib.metadata as m; print(m.version('recbole'))"],
                           capture_output=True, text=True, check=False)
    if check.returncode != 0 or check.stdout.strip() != "1.2.1":
        raise SystemExit(f"--venv {venv}: recbole 1.2.1 is not installed there (found: "
                         f"{check.stdout.strip() or check.stderr.strip()[-200:]}); remove the folder to recreate it.")
    return python


def compose(experiment: str, data_root: Path) -> Any:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    with initialize_config_module("recforge.conf", version_base="1.3"):
        return hydra_compose("train", overrides=[f"experiment={experiment}", f"dataset.root={data_root}"])


def experiment_settings(cfg: Any) -> dict[str, Any]:
    """The resolved parts of a composed config that recbole_config reads (paths need a Hydra run: left out)."""
    from omegaconf import OmegaConf

    parts = {key: OmegaConf.to_container(cfg[key], resolve=True) if cfg.get(key) is not None else None
             for key in ("dataset", "encoder", "item_embedder", "optimizer", "loss", "scheduler", "evaluation")}
    return {**parts, "seed": cfg.seed, "hidden_size": cfg.hidden_size,
            "trainer": {"max_epochs": cfg.trainer.max_epochs},
            "callbacks": {"early_stopping": {"patience": cfg.callbacks.early_stopping.patience}}}


def export_dataset(dataset: str, experiment: str, data_root: Path, out_dir: Path) -> dict[str, Any]:
    """Write ``<out_dir>/<dataset>/<dataset>.inter`` from recforge's preprocessing; return recforge's split digest."""
    import numpy as np
    from hydra.utils import instantiate

    cfg = compose(experiment, data_root)
    datamodule = instantiate(cfg.dataset)
    seqs = datamodule.load_sequences()
    split = datamodule.split_fn(seqs.lengths)
    path = out_dir / recbole_name(dataset) / f"{recbole_name(dataset)}.inter"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")  # drivers of the same dataset may export at once
    tmp.write_text("\n".join(inter_lines(seqs.user_ids, seqs.indptr, seqs.items)) + "\n")
    os.replace(tmp, path)
    args = (seqs.user_ids, seqs.indptr, seqs.items)
    return {"inter_file": str(path), "users": seqs.num_users, "items": seqs.num_items,
            "train_targets": int(np.maximum(split.train_lengths - 1, 0).sum()),
            "train_interactions": int(split.train_lengths.sum()),
            "valid": split_digest(split_pairs(*args, split.val)), "test": split_digest(split_pairs(*args, split.test))}


def recbole_name(dataset: str) -> str:
    """The dataset's name on the RecBole side (and its atomic file's stem)."""
    return RECBOLE_PREFIX + dataset


def split_matches(expected: dict[str, Any], got: dict[str, Any], general: bool = False) -> bool:
    """RecBole's split equals recforge's: validation and test samples, users, items and its training samples (a
    sequential model's: every prefix's next item; a general model's (``general``): every training interaction)."""
    train = "train_interactions" if general else "train_targets"
    return expected[train] == got.get("train_targets") and all(
        expected[k] == got.get(k) for k in ("valid", "test", "users", "items"))


def run_recbole(job: Job, job_dir: Path, args: argparse.Namespace, python: Path, export: dict[str, Any],
                settings: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    cfg = experiment_settings(compose(EXPERIMENTS[job.pair], args.data_root))
    config = recbole_config(cfg, job.model, str(BENCH / "data"), str(job_dir / "saved"), args.max_epochs)
    spec = {"model": RECBOLE_MODELS[job.model], "dataset": recbole_name(job.dataset), "config": config,
            "inter_file": export["inter_file"], "mask_history": settings["mask_history"],
            "budget_seconds": args.budget_minutes * 60 if args.budget_minutes else None}
    (job_dir / "spec.json").write_text(json.dumps(spec, indent=1))
    cmd = [str(python), str(PROJECT / "benchmarks" / "recbole_runner.py"), str(job_dir / "spec.json"),
           str(job_dir / "result.json")]
    env = {k: v for k, v in env.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    code, wall, rss = measure(cmd, job_dir, env, job_dir / "log.txt")
    if code != 0:
        return {"status": "failed", "returncode": code, "wall_seconds": round(wall, 1), "command": " ".join(cmd)}
    result = json.loads((job_dir / "result.json").read_text())
    result["split_matches"] = split_matches(export, result["split"], general=job.model in GENERAL_MODELS)
    if not result["split_matches"]:
        result["status"] = "split-mismatch"  # not a valid comparison: never rendered, run again on restart
    return {**result, "wall_seconds": round(wall, 1), "peak_rss_mb": round(rss, 1), "command": " ".join(cmd)}


def prepare_job_dir(job_dir: Path, framework: str) -> bool:
    """An empty job directory, except that an interrupted RecBole job keeps its directory and resumes from its
    per-epoch state (``saved/resume.pth``, written by recbole_runner.py); True when it resumes. (recforge jobs take
    minutes and start again.)"""
    if framework == "recbole" and (job_dir / "saved" / "resume.pth").is_file():
        return True
    if job_dir.exists():
        shutil.rmtree(job_dir)  # an unfinished earlier attempt of this very job
    job_dir.mkdir(parents=True)
    return False


def recforge_train_command() -> list[str]:
    exe = Path(sys.executable).with_name("recforge-train")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "recforge.train"]


def run_recforge(job: Job, job_dir: Path, args: argparse.Namespace, settings: dict[str, Any],
                 env: dict[str, str]) -> dict[str, Any]:
    run_dir, clock = job_dir / "run", job_dir / "bench.json"
    cmd = recforge_train_command() + [
        f"experiment={EXPERIMENTS[job.pair]}", f"dataset.root={args.data_root}", f"hydra.run.dir={run_dir}",
        f"evaluation.mask_history={'true' if settings['mask_history'] else 'false'}",
        "+callbacks.bench._target_=recforge_bench_callbacks.BenchClock", f"+callbacks.bench.path={clock}"]
    if args.max_epochs:
        cmd.append(f"trainer.max_epochs={args.max_epochs}")
    cmd += settings.get("recforge_overrides", [])
    bench_dir = str(PROJECT / "benchmarks")
    env = {**env, "PYTHONPATH": os.pathsep.join(filter(None, [bench_dir, env.get("PYTHONPATH")]))}
    code, wall, rss = measure(cmd, PROJECT, env, job_dir / "log.txt")
    if code != 0:
        return {"status": "failed", "returncode": code, "wall_seconds": round(wall, 1), "command": " ".join(cmd)}
    metrics = json.loads((run_dir / "metrics.json").read_text())
    bench = json.loads(clock.read_text())
    info = json.loads((run_dir / "run_info.json").read_text())
    best = next(e for e in bench["epochs"] if e["epoch"] == metrics["best_epoch"])
    versions = {k: v for k, v in (info.get("packages") or info.get("versions") or {}).items()
                if k in ("torch", "lightning", "numpy", "recforge", "hydra-core", "python")}
    return {"status": "ok", "epochs_run": len(bench["epochs"]), "best_epoch": metrics["best_epoch"],
            "time_to_best": best["elapsed"], "train_seconds": bench["train_seconds"],
            "eval_seconds": bench["eval_seconds"], "excluded_seconds": bench["excluded_seconds"],
            "test": metrics["test"], "val": metrics["val"], "epochs": bench["epochs"], "threads": bench.get("threads"),
            "run_dir": str(run_dir), "versions": versions, "wall_seconds": round(wall, 1),
            "peak_rss_mb": round(rss, 1), "command": " ".join(cmd)}


def run_jobs(args: argparse.Namespace) -> None:
    base = {"mask_history": args.mask_history, "max_epochs": args.max_epochs,
            "budget_minutes": args.budget_minutes, "threads": args.threads}
    pairs = parse_jobs(args.jobs)
    done = finished_keys(read_jsonl(args.out))
    todo = [job for job in job_order(pairs) if job.framework in args.frameworks and record_key(
        job.dataset, job.model, job.framework, job_settings(job.framework, base, args.recforge_overrides)) not in done]
    if not todo:
        print("every selected job already finished; rendering the report")
        return
    python = ensure_venv(args.venv) if any(job.framework == "recbole" for job in todo) else None
    env = dict(os.environ)
    if args.threads:
        env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    first_model = {job.dataset: job.model for job in reversed(todo)}
    exports = {dataset: export_dataset(dataset, EXPERIMENTS[(dataset, model)], args.data_root, BENCH / "data")
               for dataset, model in first_model.items()}
    for job in todo:
        settings = job_settings(job.framework, base, args.recforge_overrides)
        if record_key(job.dataset, job.model, job.framework, settings) in finished_keys(read_jsonl(args.out)):
            print(f"{job.framework} {job.dataset} {job.model}: finished meanwhile (another driver); skipped")
            continue
        tag = hashlib.sha256(settings_key(settings).encode()).hexdigest()[:8]
        job_dir = BENCH / "jobs" / f"{job.dataset}_{job.model}_{job.framework}_{tag}"
        resumed = prepare_job_dir(job_dir, job.framework)
        print(f"{dt.datetime.now():%H:%M:%S} {job.framework} {job.dataset} {job.model} -> {job_dir}"
              + (" (resuming after its last finished epoch)" if resumed else ""), flush=True)
        if job.framework == "recbole":
            assert python is not None
            result = run_recbole(job, job_dir, args, python, exports[job.dataset], settings, env)
        else:
            result = run_recforge(job, job_dir, args, settings, env)
        record = {"dataset": job.dataset, "model": job.model, "framework": job.framework, "settings": settings,
                  **result, "job_dir": str(job_dir), "machine": machine(),
                  "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                  "driver_command": args.driver_command}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        summary = (f"best epoch {record['best_epoch'] + 1}/{record['epochs_run']}, training {record['train_seconds']:.0f} s, "
                   f"test NDCG@10 {record['test']['ndcg@10']:.4f}" if record["status"] in FINISHED else
                   f"FAILED ({record['status']}, exit {record.get('returncode', 0)}), see {job_dir / 'log.txt'}")
        print(f"  {record['status']}: {summary}", flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", help="comma-separated dataset:model pairs (default: all), e.g. ml-100k:sasrec")
    p.add_argument("--data-root", type=Path, default=PROJECT.parent / "shared" / "data",
                   help="folder holding ml-100k/ and s3rec/")
    p.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="RecBole venv (created when missing)")
    p.add_argument("--max-epochs", type=int, help="epoch cap for both frameworks (default: the experiment's 200)")
    p.add_argument("--budget-minutes", type=float,
                   help="RecBole only: stop after the first epoch ending past this much training time")
    p.add_argument("--no-mask-history", dest="mask_history", action="store_false",
                   help="evaluate without masking the user's earlier items (RecBole's own default)")
    p.add_argument("--recforge-override", dest="recforge_overrides", action="append", default=[],
                   type=parse_override, metavar="KEY=VALUE",
                   help="a Hydra override for the recforge runs only, recorded as their own variant against the "
                        "same RecBole run (repeatable), e.g. dataset.train_stride=1")
    p.add_argument("--frameworks", default="recbole,recforge", type=parse_frameworks,
                   help="which side(s) to run: recbole,recforge (default), recbole or recforge; e.g. recforge runs "
                        "while a long RecBole job of the same pair runs elsewhere")
    p.add_argument("--threads", type=int, help="OMP_NUM_THREADS for every job (default: torch's default)")
    p.add_argument("--out", type=Path, default=PROJECT / "benchmarks" / "results" / "recbole_compare.jsonl",
                   help="JSON lines, one per finished job (committed)")
    p.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="markdown page to render")
    p.add_argument("--note", help="a paragraph put under the title of the results page (default for the committed "
                                  f"page: the text of {DEFAULT_NOTE.relative_to(PROJECT)})")
    p.add_argument("--report", action="store_true", help="only render the results page from --out")
    args = p.parse_args(argv)
    args.data_root = args.data_root.resolve()
    args.out, args.results, args.venv = args.out.resolve(), args.results.resolve(), args.venv.resolve()
    if args.note is None and args.results == DEFAULT_RESULTS.resolve() and DEFAULT_NOTE.is_file():
        args.note = DEFAULT_NOTE.read_text().strip()
    args.driver_command = "python benchmarks/recbole_compare.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if not args.report and not args.data_root.is_dir():
        raise SystemExit(f"--data-root {args.data_root}: no such folder; pass the folder holding ml-100k/ and s3rec/.")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.report:
        run_jobs(args)
    args.results.write_text(render(read_jsonl(args.out), args.note))
    print(f"wrote {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
