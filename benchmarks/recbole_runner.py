"""One RecBole 1.2.1 training run for benchmarks/recbole_compare.py, run with the RecBole venv's python.

    <recbole-venv>/bin/python benchmarks/recbole_runner.py SPEC.json OUT.json

SPEC.json (written by the driver): ``model`` (SASRec | GRU4Rec | LightGCN), ``dataset``, ``config`` (RecBole config dict:
data_path, checkpoint_dir, eval_args, sizes, ...), ``inter_file`` (the exported atomic file), ``mask_history``
(mask each user's earlier items in validation and test, as recforge does) and ``budget_seconds`` (null or a
wall-clock cap on training: training stops after the first epoch that ends past it).

Resumable: after every epoch the full training state (model, optimizer, early-stopping counters, the data
loader's and the global random states, the epochs recorded so far and the training seconds spent) is written to
``<checkpoint_dir>/resume.pth`` (atomically; the write is not on the clock). A run started again with the same spec
continues after the last finished epoch with the same shuffles and dropout masks as an uninterrupted run, and its
figures count the kept epochs of every attempt (``attempts`` says how many processes it took).

Writes OUT.json: per-epoch elapsed seconds (training + validation, from the start of ``Trainer.fit``) with the
validation metrics, the best epoch, the test metrics of the best-validation model, the time of one full-ranking
evaluation of every test user, and a digest of the split (so the driver can check it equals recforge's).

RecBole 1.2.1 on numpy 2 / torch >= 2.6 needs shims (numpy's removed aliases; ``torch.load`` of its own
checkpoints with ``weights_only=False``), and ``recbole.quick_start`` is never imported (it imports ray): the
config, data, utils, model and trainer modules are imported directly. Every file RecBole writes (checkpoints,
./log, ./log_tensorboard) lands in the checkpoint dir or in the working directory the driver starts it in.
This module's top level uses only the standard library, so the driver and the tests import its pure helpers.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

RECBOLE_TO_RECFORGE = {"hit": "hr", "ndcg": "ndcg", "recall": "recall", "mrr": "mrr"}


def split_digest(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Count and order-free sha256 of (user token, target item token) pairs: equal digests = equal samples."""
    lines = sorted(f"{user}\t{item}" for user, item in pairs)
    return {"count": len(lines), "sha256": hashlib.sha256("\n".join(lines).encode()).hexdigest()}


def recforge_metric_names(result: dict[str, float]) -> dict[str, float]:
    """RecBole's ``hit@10`` / ``ndcg@10`` keys under recforge's names (``hr@10``, ``ndcg@10``), as floats."""
    renamed = {}
    for key, value in result.items():
        name, _, k = key.partition("@")
        renamed[f"{RECBOLE_TO_RECFORGE.get(name, name)}@{k}"] = float(value)
    return renamed


def read_inter(path: Path) -> dict[str, list[str]]:
    """Item tokens of every user in sequence order, from an atomic ``.inter`` file (user, item, position)."""
    rows: dict[str, list[tuple[float, str]]] = {}
    with path.open() as handle:
        next(handle)  # header
        for line in handle:
            user, item, position = line.rstrip("\n").split("\t")
            rows.setdefault(user, []).append((float(position), item))
    return {user: [item for _, item in sorted(seq)] for user, seq in rows.items()}


def histories(sequences: dict[str, list[str]], drop_last: int) -> dict[str, list[str]]:
    """Every user's items before the target ``drop_last`` from the end (2: validation, 1: test), without the
    target itself (recforge never masks the target, even when the user had it before)."""
    out = {}
    for user, items in sequences.items():
        if len(items) > drop_last:
            target = items[len(items) - drop_last]
            out[user] = [item for item in items[: len(items) - drop_last] if item != target]
    return out


def csr(lists: dict[int, list[int]], size: int) -> tuple[list[int], list[int]]:
    """(indptr of length size + 1, flat values) of integer lists keyed 0 .. size - 1 (missing keys: empty)."""
    indptr, flat = [0], []
    for key in range(size):
        flat += lists.get(key, [])
        indptr.append(len(flat))
    return indptr, flat


class BudgetReached(Exception):
    """Raised from the end-of-epoch callback when the wall-clock budget is spent (the epoch is complete)."""


# ------------------------------------------------------------------------------------------ RecBole side


def apply_shims() -> None:
    """numpy 2 removed aliases RecBole 1.2.1 uses; torch >= 2.6 loads only weights by default; scipy >= 1.12 has
    no ``dok_matrix._update`` (RecBole's graph models build their adjacency with it)."""
    import functools
    import warnings

    import numpy as np
    import scipy.sparse as sp
    import torch

    aliases = {"float_": np.float64, "complex_": np.complex128, "unicode_": np.str_, "string_": np.bytes_,
               "bool8": np.bool_, "int0": np.intp, "uint0": np.uintp, "object0": np.object_}
    with warnings.catch_warnings():  # numpy 2 warns on looking up np.object / np.str
        warnings.simplefilter("ignore", FutureWarning)
        for name, value in aliases.items():
            if not hasattr(np, name):
                setattr(np, name, value)
    if not hasattr(sp.dok_matrix, "_update"):  # scipy >= 1.12 dropped it; RecBole's LightGCN fills its graph with it
        sp.dok_matrix._update = lambda self, entries: self._dict.update(entries)  # type: ignore[attr-defined]
    if not getattr(torch.load, "_recbole_shim", False):
        shimmed = functools.partial(torch.load, weights_only=False)  # RecBole's own checkpoints only
        shimmed._recbole_shim = True  # type: ignore[attr-defined]
        torch.load = shimmed  # type: ignore[assignment]


def mask_history_collate(collate: Any, indptr: Any, flat: Any, uid_field: str) -> Any:
    """Wrap a FullSortEvalDataLoader's collate (sequential or general models) so it returns RecBole's own
    ``history_index`` (rows, item ids), which ``_full_sort_batch_eval`` masks. ``indptr``/``flat`` (LongTensors) hold each
    internal user id's history (target already left out), so a batch costs a few vectorised gathers."""
    import torch

    def collate_fn(index: Any) -> Any:
        interaction, _, positive_u, positive_i = collate(index)
        uids = interaction[uid_field]  # (B,)
        starts, counts = indptr[uids], indptr[uids + 1] - indptr[uids]  # (B,), (B,)
        rows = torch.repeat_interleave(torch.arange(len(uids)), counts)  # (M,)
        offsets = torch.arange(len(rows)) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
        return interaction, (rows, flat[starts[rows] + offsets]), positive_u, positive_i

    return collate_fn


def _history_csr(dataset: Any, by_user: dict[str, list[str]]) -> tuple[Any, Any]:
    """(indptr, flat) LongTensors of the histories keyed by RecBole's internal user id, in its item ids."""
    import torch

    lists = {int(dataset.token2id(dataset.uid_field, user)): [int(i) for i in dataset.token2id(dataset.iid_field, items)]
             for user, items in by_user.items() if items}
    indptr, flat = csr(lists, int(dataset.user_num))
    return torch.as_tensor(indptr, dtype=torch.long), torch.as_tensor(flat, dtype=torch.long)


def _pairs(dataset: Any) -> list[tuple[str, str]]:
    users = dataset.id2token(dataset.uid_field, dataset.inter_feat[dataset.uid_field].numpy())
    items = dataset.id2token(dataset.iid_field, dataset.inter_feat[dataset.iid_field].numpy())
    return list(zip(map(str, users), map(str, items)))


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """Build config, data, model and trainer; train with early stopping; test the best model; time it."""
    apply_shims()
    import torch
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.model import general_recommender, sequential_recommender
    from recbole.utils import init_logger, init_seed

    model_class = getattr(sequential_recommender, spec["model"], None) or getattr(general_recommender, spec["model"])
    argv, sys.argv = sys.argv, sys.argv[:1]  # RecBole's Config parses sys.argv as --key=value settings
    try:
        config = Config(model=model_class, dataset=spec["dataset"], config_dict=spec["config"])
    finally:
        sys.argv = argv
    loaded = Path(config["data_path"]) / f"{spec['dataset']}.inter"
    if loaded.resolve() != Path(spec["inter_file"]).resolve():  # RecBole maps "ml-100k" to its bundled copy
        raise SystemExit(f"RecBole would read {loaded}, not the exported {spec['inter_file']}; rename the dataset.")
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    started = time.perf_counter()
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    if spec["mask_history"]:
        sequences = read_inter(Path(spec["inter_file"]))
        for loader, drop_last in ((valid_data, 2), (test_data, 1)):
            indptr, flat = _history_csr(dataset, histories(sequences, drop_last))
            loader.collate_fn = mask_history_collate(loader.collate_fn, indptr, flat, dataset.uid_field)
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = model_class(config, train_data._dataset).to(config["device"])
    data_seconds = time.perf_counter() - started

    trainer = _recording_trainer_class()(config, model)
    resume_file = Path(config["checkpoint_dir"]) / "resume.pth"
    epochs: list[dict[str, Any]] = []
    spent, attempts = 0.0, 1  # training seconds of earlier attempts (to their last finished epoch)
    if resume_file.is_file():
        bench = restore_state(trainer, train_data, torch.load(resume_file, map_location=config["device"],
                                                              weights_only=False))
        epochs, spent, attempts = bench["epochs"], bench["spent"], bench["attempts"] + 1
    budget = spec.get("budget_seconds")
    clock = time.perf_counter()

    def end_of_epoch(epoch_idx: int, valid_score: float) -> None:
        nonlocal clock
        elapsed = spent + time.perf_counter() - clock
        epochs.append({"epoch": epoch_idx, "elapsed": round(elapsed, 3), "val": recforge_metric_names(trainer.last_valid)})
        paused = time.perf_counter()
        save_state(trainer, train_data, epoch_idx, {"epochs": epochs, "spent": elapsed, "attempts": attempts},
                   resume_file)
        clock += time.perf_counter() - paused  # the resume checkpoint is not RecBole's time
        if budget is not None and elapsed >= budget:
            raise BudgetReached

    status = "budget-capped" if budget is not None and spent >= budget else "ok"
    finished = bool(epochs) and training_finished(trainer, spent, budget)  # an attempt stopped while testing
    if not finished:
        try:
            trainer.fit(train_data, valid_data, saved=True, show_progress=False, callback_fn=end_of_epoch)
        except BudgetReached:
            status = "budget-capped"
    train_seconds = spent + (0.0 if finished else time.perf_counter() - clock)

    checkpoint = torch.load(trainer.saved_model_file, map_location=config["device"])
    model.load_state_dict(checkpoint["state_dict"])
    model.load_other_parameter(checkpoint.get("other_parameter"))
    best_epoch = int(checkpoint["epoch"])
    eval_started = time.perf_counter()
    test_result = trainer.evaluate(test_data, load_best_model=False, show_progress=False)
    eval_seconds = time.perf_counter() - eval_started
    best = next(e for e in epochs if e["epoch"] == best_epoch)
    return {
        "status": status,
        "attempts": attempts,
        "epochs_run": len(epochs),
        "best_epoch": best_epoch,
        "time_to_best": best["elapsed"],
        "train_seconds": round(train_seconds, 3),
        "data_seconds": round(data_seconds, 3),
        "eval_seconds": round(eval_seconds, 3),
        "test": recforge_metric_names(test_result),
        "val": best["val"],
        "epochs": epochs,
        "split": {"train_targets": len(train_data._dataset), "valid": split_digest(_pairs(valid_data._dataset)),
                  "test": split_digest(_pairs(test_data._dataset)), "items": int(dataset.item_num) - 1,
                  "users": int(dataset.user_num) - 1},
        "threads": torch.get_num_threads(),
        "versions": _versions(),
    }


def save_state(trainer: Any, train_data: Any, epoch: int, bench: dict[str, Any], path: Path) -> None:
    """Everything ``restore_state`` needs to continue after ``epoch`` as if never stopped; written atomically."""
    import numpy
    import torch

    state = {"epoch": epoch, "cur_step": trainer.cur_step, "best_valid_score": trainer.best_valid_score,
             "best_file": trainer.saved_model_file, "state_dict": trainer.model.state_dict(),
             "other_parameter": trainer.model.other_parameter(), "optimizer": trainer.optimizer.state_dict(),
             "loader_rng": train_data.generator.get_state(), "torch_rng": torch.get_rng_state(),
             "numpy_rng": numpy.random.get_state(), "python_rng": random.getstate(), "bench": bench}
    partial = path.with_suffix(".partial")
    torch.save(state, partial)
    os.replace(partial, path)


def training_finished(trainer: Any, spent: float, budget: float | None) -> bool:
    """True when a restored run has nothing left to train: early stopping had triggered (RecBole stops once
    ``cur_step`` passes ``stopping_step``), the epochs are used up, or the time budget is spent. (Calling ``fit``
    then would train one more epoch, or overwrite the best model with the last one.)"""
    return (trainer.cur_step > trainer.stopping_step or trainer.start_epoch >= trainer.epochs
            or (budget is not None and spent >= budget))


def restore_state(trainer: Any, train_data: Any, state: dict[str, Any]) -> dict[str, Any]:
    """Put ``trainer`` back where ``save_state`` left it (fit then starts at the next epoch); returns the bench
    record (epochs so far, training seconds spent, attempts)."""
    import numpy
    import torch

    trainer.start_epoch = state["epoch"] + 1
    trainer.cur_step, trainer.best_valid_score = state["cur_step"], state["best_valid_score"]
    trainer.saved_model_file = state["best_file"]  # the best model so far stays the one fit() overwrites
    trainer.model.load_state_dict(state["state_dict"])
    trainer.model.load_other_parameter(state["other_parameter"])
    trainer.optimizer.load_state_dict(state["optimizer"])
    train_data.generator.set_state(state["loader_rng"])
    torch.set_rng_state(state["torch_rng"])
    numpy.random.set_state(state["numpy_rng"])
    random.setstate(state["python_rng"])
    return state["bench"]


def _versions() -> dict[str, str]:
    import numpy
    import recbole
    import torch

    return {"recbole": recbole.__version__, "torch": torch.__version__, "numpy": numpy.__version__,
            "python": sys.version.split()[0]}


def _recording_trainer_class() -> type:
    from recbole.trainer import Trainer

    class RecordingTrainer(Trainer):
        """RecBole's Trainer, keeping the full result of the latest validation (``fit`` keeps only the best)."""

        last_valid: dict[str, float]  # set by every validation, before fit's end-of-epoch callback

        def _valid_epoch(self, valid_data: Any, show_progress: bool = False) -> Any:
            score, result = super()._valid_epoch(valid_data, show_progress=show_progress)
            self.last_valid = dict(result)
            return score, result

    return RecordingTrainer


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: recbole_runner.py SPEC.json OUT.json", file=sys.stderr)
        return 2
    spec = json.loads(Path(args[0]).read_text())
    result = run(spec)
    Path(args[1]).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
