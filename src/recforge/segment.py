"""recforge-segment RUN [--k K]: cluster a finished run's users by their final state and describe the segments.

The final state is the encoder's output after the user's history up to the test target (the input of the test
prediction); per-user test NDCG@10 / HR@10 rank that state against all items with the run's history mask, as
recforge-eval does. k-means with ``--k`` segments, or k chosen by silhouette over 2..``--k-max``. Writes
``<RUN>/segments/``: segments.csv (raw user id, segment), segments.md, segments.html (included by
``recforge-report --html``) and segments.png (the users on two principal components, coloured by segment).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from recforge.analysis import segments as seg
from recforge.analysis.segment_page import Page, html_fragment, markdown, scatter_png, segments_csv
from recforge.data.datamodule import SequenceDataModule
from recforge.errors import RecforgeError
from recforge.evaluation.metrics import hit_rate, ndcg, set_hit_rate, set_ndcg
from recforge.models.module import NextItemModule
from recforge.report.collect import flatten
from recforge.report.protocol import mask_text, split_text
from recforge.run.build import build
from recforge.run.checkpoints import load_checkpoint
from recforge.run.cli import user_errors
from recforge.run.load import find_checkpoint, load_run_config, load_weights
from recforge.run.validate import validate_config

METRIC_K = 10
OUT_DIR = "segments"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="recforge-segment", description=(
        "Cluster a finished run's users by their final encoder state (k-means) and write segments.csv and a page "
        "(size, most frequent items and genres or attributes, test NDCG@10 and HR@10 per segment, a PCA picture)."))
    p.add_argument("run", metavar="RUN", help="a recforge-train run directory")
    p.add_argument("--k", type=int, help="number of segments (default: chosen by silhouette over 2..--k-max)")
    p.add_argument("--k-max", type=int, default=10, help="largest k tried when --k is not given (default: 10)")
    p.add_argument("--seed", type=int, default=0, help="k-means, silhouette sample and PCA seed (default: 0)")
    p.add_argument("--n-init", type=int, default=10, help="k-means starts, the best kept (default: 10)")
    p.add_argument("--silhouette-sample", type=int, default=5000,
                   help="users the silhouette is computed on, drawn with --seed (default: 5000)")
    p.add_argument("--top", type=int, default=5, help="items and labels listed per segment (default: 5)")
    p.add_argument("--checkpoint", default="best", help="best, last or a checkpoint path (default: best)")
    p.add_argument("--out", help="output folder (default: RUN/segments, where recforge-report --html finds it)")
    return p


def check_arguments(args: argparse.Namespace) -> None:
    """One-line errors for values that are wrong whatever the run."""
    if not Path(args.run).is_dir():
        raise RecforgeError(f"RUN {args.run}: no such run directory; expected a directory written by recforge-train.")
    for name in ("k", "k_max"):
        value = getattr(args, name)
        if value is not None and value < 2:
            raise RecforgeError(f"--{name.replace('_', '-')} {value} must be at least 2 (segments).")
    for name in ("n_init", "silhouette_sample", "top"):
        if getattr(args, name) < 1:
            raise RecforgeError(f"--{name.replace('_', '-')} {getattr(args, name)} must be at least 1.")


def load_run(run: Path, checkpoint: str) -> tuple[DictConfig, SequenceDataModule, NextItemModule, Path | None]:
    """The run's config, data and model with the checkpoint's weights, rebuilt as recforge-eval does."""
    cfg = load_run_config(run, [])
    validate_config(cfg)
    untrained = checkpoint in ("best", "last") and not any((run / "checkpoints").glob("*.ckpt"))
    ckpt = None if untrained else find_checkpoint(run, checkpoint)
    state = load_checkpoint(ckpt)["state_dict"] if ckpt else None
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule, module = build(cfg)
    if not isinstance(module, NextItemModule):
        raise RecforgeError(f"RUN {run} is a {type(module).__name__} run; recforge-segment needs a next-item run.")
    if ckpt is None and module.trainable:
        find_checkpoint(run, checkpoint)  # a trained model's missing checkpoint: its one-line error
    if ckpt is not None and state is not None:
        load_weights(module, state, ckpt, run)
    datamodule.setup("test")
    module.fit_parts(datamodule)  # data-fitted parts and cold items, as recforge-eval
    module.sampled = None  # segments are always ranked against all items
    return cfg, datamodule, module, ckpt


@torch.inference_mode()
def final_states(module: NextItemModule, datamodule: SequenceDataModule) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per test sample, in sample order: the final state (S, H), test NDCG@10 (S,) and HR@10 (S,), ranked by the
    module's own evaluation (history mask, full or item-chunked ranking)."""
    module.eval()
    module.on_test_epoch_start()  # cold items' id rows, as before a test
    index, states, ndcgs, hits = [], [], [], []
    for batch in datamodule.test_dataloader():
        ranks = module.rank(batch)  # (B,), or (B, T) for target sets
        one = ranks.dim() == 1
        index.append(batch["index"])
        states.append(module.hidden_state(batch["input"], batch.get("user")).float())  # (B, H)
        ndcgs.append(ndcg(ranks, METRIC_K) if one else set_ndcg(ranks, METRIC_K))  # (B,)
        hits.append(hit_rate(ranks, METRIC_K) if one else set_hit_rate(ranks, METRIC_K))  # (B,)
    order = torch.cat(index).argsort()  # (S,) the loader runs shortest history first
    return tuple(torch.cat(parts)[order].numpy() for parts in (states, ndcgs, hits))  # type: ignore[return-value]


LABEL_COLUMNS = {"genres": "genres", "attributes": "attributes", "category": "categories"}  # column -> kind


def item_labels(table: pd.DataFrame, column: str) -> list[list[str]]:
    """Each row's labels: 'A|B' genres split, attribute id lists as 'a<id>', any other value as itself."""
    if column == "genres":
        return [str(g).split("|") if str(g) else [] for g in table[column]]
    if column == "attributes":
        return [[f"a{a}" for a in values] for values in table[column]]
    return [[str(v)] for v in table[column]]


def item_descriptions(datamodule: SequenceDataModule) -> tuple[list[str], list[list[str]] | None, str | None]:
    """Display name of every internal item id (its title, else 'item <raw id>'), each item's labels and their
    kind ("genres", "attributes", "categories"; None when the reader's item table has none)."""
    raw = [str(i) for i in datamodule.load_sequences().item_ids]  # entry 0 is "" (padding)
    names = [f"item {r}" for r in raw]
    table = datamodule.reader.item_text()
    if table is None:
        return names, None, None
    at = {str(item): row for row, item in enumerate(table["item"])}
    rows = [at.get(r) for r in raw]  # (N+1,) row of each internal id in the item table, None if absent
    if "title" in table:
        names = [str(table["title"].iloc[r]) if r is not None else n for r, n in zip(rows, names)]
    column = next((c for c in LABEL_COLUMNS if c in table), None)
    if column is None:
        return names, None, None
    labels = item_labels(table, column)
    return names, [labels[r] if r is not None else [] for r in rows], LABEL_COLUMNS[column]


def test_users(datamodule: SequenceDataModule, run: Path) -> np.ndarray:
    """User row of every test sample (S,); a split that tests a user twice has no single final state."""
    users = datamodule.test_set.users.numpy()
    if len(np.unique(users)) != len(users):
        raise RecforgeError(f"RUN {run}: its split tests some users more than once; recforge-segment needs one test "
                            "sample per user (dataset.split=leave_one_out or global_temporal).")
    return users


def check_k(k: int | None, n: int, run: Path) -> None:
    """A given k is at most the number of users (n)."""
    if k is not None and k > n:
        raise RecforgeError(f"--k {k} is larger than the number of users with a test sample in {run} ({n}); "
                            f"pass --k between 2 and {n}.")


def choose_segments(states: np.ndarray, args: argparse.Namespace, run: Path) -> tuple[int, seg.KChoice | None]:
    """--k (checked against the users), or k chosen by silhouette over 2 .. min(--k-max, users - 1)."""
    n = len(states)
    if args.k is not None:
        check_k(args.k, n, run)
        return args.k, None
    top = min(args.k_max, n - 1)
    if top < 2:
        raise RecforgeError(f"RUN {run} has {n} users with a test sample; choosing k by silhouette needs at least 3.")
    choice = seg.choose_k(states, range(2, top + 1), args.seed, args.n_init, args.silhouette_sample)
    return choice.k, choice


def settings(cfg: DictConfig, run: Path, ckpt: Path | None, k: int, choice: seg.KChoice | None,
             args: argparse.Namespace, explained: np.ndarray) -> list[str]:
    """The page's lines on how it was made."""
    split = OmegaConf.to_container(cfg.dataset.split, resolve=True) if "split" in cfg.dataset else {}
    row = flatten({"dataset": {"split": split},
                   "evaluation": {"mask_history": cfg.evaluation.get("mask_history", True)}})
    if choice is None:
        how = f"k = {k} (given)"
    else:
        scores = ", ".join(f"{j}: {s:.3f}" for j, s in choice.scores.items())
        sample = f", on {choice.sample_size:,} users drawn with the seed" if choice.sample_size else ""
        tried = f"{min(choice.scores)}..{max(choice.scores)}"
        how = f"k = {k}, chosen by the highest silhouette over k = {tried}{sample} ({scores})"
    return [f"run `{run}`, checkpoint `{ckpt.name if ckpt else 'none (fitted from the data)'}`",
            f"{how}; scikit-learn KMeans, n_init {args.n_init}, random_state {args.seed}",
            f"{split_text(row)}; {mask_text(row)}; full ranking over all items",
            f"picture: PCA of the final states (random_state {args.seed}), "
            f"{100 * explained.sum():.1f} % of their variance in two components"]


def segment(args: argparse.Namespace) -> dict[str, str | bytes]:
    """Every output file's name and contents (nothing written yet)."""
    check_arguments(args)
    run = Path(args.run)
    cfg, datamodule, module, ckpt = load_run(run, args.checkpoint)
    users = test_users(datamodule, run)
    check_k(args.k, len(users), run)  # before any model work
    states, ndcgs, hits = final_states(module, datamodule)
    k, choice = choose_segments(states, args, run)
    labels = seg.cluster(states, k, args.seed, args.n_init)
    coords, explained = seg.project(states, args.seed)
    seqs = datamodule.load_sequences()
    history = seg.history_matrix(seqs.items, seqs.indptr, users, datamodule.test_set.positions.numpy(), seqs.num_items)
    names, item_labels, kind = item_descriptions(datamodule)
    label_m, label_names = seg.label_matrix(item_labels) if item_labels is not None else (None, [])
    profiles = seg.profiles(labels, k, history, ndcgs, hits, label_m, label_names, args.top)
    model = str(cfg.encoder._target_).rsplit(".", 1)[-1]
    page = Page(f"{datamodule.name}, {model}", settings(cfg, run, ckpt, k, choice, args, explained), profiles,
                names, kind, METRIC_K)
    png = scatter_png(coords, labels, k, explained)
    caption = f"{len(users):,} users on the first two principal components of their final states, coloured by segment"
    return {"segments.csv": segments_csv(seqs.user_ids[users], labels), "segments.md": markdown(page),
            "segments.html": html_fragment(page, png, caption), "segments.png": png}


def write_directory(out: Path, files: dict[str, str | bytes]) -> None:
    """Write the files into a fresh folder beside ``out``, then put it in place of ``out``: a reader finds the
    old set or the new one, never half of it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fresh = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        for name, data in files.items():
            (fresh / name).write_bytes(data.encode() if isinstance(data, str) else data)
        old = out.with_name(f"{fresh.name}.old")
        if out.exists():
            out.rename(old)
        fresh.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(fresh, ignore_errors=True)
        raise


def main(argv: Sequence[str] | None = None) -> None:
    start = time.perf_counter()
    with user_errors():  # never removes RUN: it holds an earlier run's results
        args = parser().parse_args(argv)
        files = segment(args)
        out = Path(args.out) if args.out else Path(args.run) / OUT_DIR
        write_directory(out, files)
    print(files["segments.md"])
    print(f"wrote {', '.join(str(out / name) for name in files)} in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
