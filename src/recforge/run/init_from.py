"""``init_from=<run>``: a new run that starts from a finished run's weights and extends its item map.

The earlier run's ``item_ids.json`` becomes the base of this run's item map (its items keep their ids, new items
follow, :func:`recforge.data.online.extend_item_map`); its best checkpoint's weights are copied into the new model,
item-indexed tensors row by row through the raw ids (:func:`remap_item_rows`): an old item keeps its row exactly, a
new item keeps the row the new model was built with (its fresh initialisation, or its text embedding when the item
embedder reads text). Only weights are taken: the optimizer, scheduler and epoch counters start afresh (see
``init_from`` in train.yaml).
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from recforge.errors import RecforgeError
from recforge.run.checkpoints import load_checkpoint, state_dict_mismatch
from recforge.run.load import find_checkpoint
from recforge.run.records import ITEM_IDS_FILE


def earlier_run(path: str | Path) -> tuple[Path, Path]:
    """(run directory, best checkpoint) of ``init_from``: a run directory or a .ckpt inside one."""
    given = Path(path).expanduser()
    if not given.exists():
        raise RecforgeError(f"init_from={path}: no such run directory or checkpoint file ({given.resolve()}).")
    run_dir = given if given.is_dir() else given.resolve().parent.parent
    if not (run_dir / ITEM_IDS_FILE).is_file():
        raise RecforgeError(f"init_from={path}: {run_dir / ITEM_IDS_FILE} is missing; init_from needs a finished "
                            "recforge-train run directory of an item dataset (or a .ckpt inside its checkpoints/).")
    return run_dir, (find_checkpoint(run_dir, "best") if given.is_dir() else given)


def earlier_item_ids(run_dir: Path) -> list[str]:
    """The raw id of every internal id of the earlier run (entry 0 = padding)."""
    return [str(i) for i in json.loads((run_dir / ITEM_IDS_FILE).read_text())["item_ids"]]


SPECIAL_ROWS = 2  # at most this many rows after the items in an item table (IdEmbedding: the [MASK] row)


def remap_item_rows(source: Mapping[str, Tensor], target: Mapping[str, Tensor], source_ids: list[str],
                    target_ids: list[str]) -> dict[str, Tensor]:
    """``target``'s tensors with ``source``'s values. Item tables (dim 0 = ``len(source_ids) + s`` in source and
    ``len(target_ids) + s`` in target, s <= SPECIAL_ROWS special rows after the items, same other dims) take row
    ``source_ids.index(raw)`` for every raw id both know, padding row 0 and the special rows from ``source``, and
    keep their own row for the other items; every other tensor is taken whole from ``source``."""
    position = {raw: i for i, raw in enumerate(source_ids) if i > 0}
    pairs = [(0, 0)] + [(t, position[raw]) for t, raw in enumerate(target_ids) if t > 0 and raw in position]
    merged: dict[str, Tensor] = {}
    for name, old in source.items():
        new = target.get(name)
        special = old.shape[0] - len(source_ids) if old.dim() > 0 else -1
        if new is None or not 0 <= special <= SPECIAL_ROWS or new.shape[0] - len(target_ids) != special \
                or old.shape[1:] != new.shape[1:]:
            merged[name] = old
            continue
        rows = pairs + [(len(target_ids) + j, len(source_ids) + j) for j in range(special)]
        rows_to, rows_from = torch.tensor([t for t, _ in rows]), torch.tensor([f for _, f in rows])  # (K,), (K,)
        table = new.detach().clone()
        table[rows_to] = old[rows_from].to(table.dtype)  # (K, ...)
        merged[name] = table
    return merged


def attach_earlier_items(cfg: DictConfig, datamodule: object) -> None:
    """With ``init_from``: the datamodule extends the earlier run's item map (before it reads its data)."""
    if cfg.get("init_from"):
        run_dir, _ = earlier_run(cfg.init_from)
        datamodule.base_item_ids = earlier_item_ids(run_dir)  # type: ignore[attr-defined]


def load_earlier_weights(cfg: DictConfig, module: nn.Module, item_map: Mapping[str, Any] | None) -> None:
    """With ``init_from``: ``module`` (built for this run's item map, :func:`recforge.run.build.item_id_map`)
    takes the earlier run's weights."""
    if not cfg.get("init_from"):
        return
    if item_map is None:
        raise RecforgeError(f"init_from={cfg.init_from}: dataset '{cfg.dataset.get('name')}' has no item ids to extend; init_from continues item datasets.")
    run_dir, checkpoint = earlier_run(cfg.init_from)
    state = remap_item_rows(load_checkpoint(checkpoint)["state_dict"], module.state_dict(),
                            earlier_item_ids(run_dir), [str(i) for i in item_map["item_ids"]])
    problem = state_dict_mismatch(module.state_dict(), state)
    if problem is not None:
        raise RecforgeError(f"init_from={cfg.init_from}: its checkpoint {checkpoint} does not fit this run's model "
                            f"({problem}); use the same encoder, decoder and sizes as that run.")
    module.load_state_dict(state)
