"""``item_embedder.init_from=<run>``: a new model's item id table starts from another finished run's item vectors.

The earlier run is rebuilt as recforge-eval rebuilds it (its config, its data, its best checkpoint, data-fitted parts
such as LightGCN's graph), and its item embedder's ``output_weights()`` (the vectors its decoder scores with: for
LightGCN the propagated ones) are copied into every :class:`~recforge.models.embedders.IdEmbedding` of the new model
that names it, row by row through the raw item ids. Items the earlier run does not know keep their random rows.
Unlike the top-level ``init_from`` (continue one model on new events), the two models may differ in everything but
the hidden size: only item vectors are taken.
"""
from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from recforge.errors import RecforgeError
from recforge.models.embedders import IdEmbedding
from recforge.run.checkpoints import load_checkpoint
from recforge.run.init_from import earlier_item_ids, earlier_run
from recforge.run.load import load_run_config, load_weights

log = logging.getLogger(__name__)


def earlier_item_vectors(path: str) -> tuple[list[str], Tensor]:
    """(raw id of every internal id, entry 0 padding; the (N+1, H) item vectors) of the finished run at ``path``."""
    from recforge.run.build import build  # build imports this module's neighbours; late import avoids a cycle

    key = f"item_embedder.init_from={path}"
    try:
        run_dir, checkpoint = earlier_run(path)
    except RecforgeError as exc:
        raise RecforgeError(str(exc).replace(f"init_from={path}", key, 1)) from None
    cfg = load_run_config(run_dir, [])
    states = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):  # rebuilding it must not move this run's random streams
        datamodule, module = build(cfg)
    random.setstate(states[0])
    np.random.set_state(states[1])
    load_weights(module, load_checkpoint(checkpoint)["state_dict"], Path(checkpoint), run_dir)
    if hasattr(module, "fit_parts"):
        datamodule.setup("test")
        module.fit_parts(datamodule)  # data-fitted parts: LightGCN's graph
    embedder = getattr(getattr(module, "decoder", None), "item_embedder", None)  # what its decoder scores with
    if embedder is None:
        raise RecforgeError(f"{key}: run {run_dir} scores no item vectors ({type(module).__name__}, decoder "
                            f"{type(getattr(module, 'decoder', None)).__name__}); name a run with a dot-product decoder.")
    with torch.no_grad():
        vectors = embedder.output_weights().detach().float().cpu()  # (N+1, H)
    ids = earlier_item_ids(run_dir)
    if vectors.shape[0] != len(ids):
        raise RecforgeError(f"{key}: run {run_dir} scores {vectors.shape[0] - 1} items but its item_ids.json lists {len(ids) - 1}.")
    return ids, vectors


def init_item_tables(module: nn.Module, item_ids: list[str] | None) -> int:
    """Copy the earlier run's item vectors into every IdEmbedding of ``module`` with ``init_from`` set; returns how
    many tables were initialised. ``item_ids``: this run's raw id of every internal id (entry 0 padding)."""
    tables = [part for part in module.modules() if isinstance(part, IdEmbedding) and part.init_from]
    for table in tables:
        key = f"item_embedder.init_from={table.init_from}"
        if item_ids is None:
            raise RecforgeError(f"{key}: this dataset has no raw item ids to match the earlier run's items with.")
        source_ids, vectors = earlier_item_vectors(str(table.init_from))
        if vectors.shape[1] != table.hidden_size:
            raise RecforgeError(f"{key}: its item vectors have {vectors.shape[1]} dimensions, this item table "
                                f"{table.hidden_size}; set hidden_size={vectors.shape[1]} or train the earlier run with {table.hidden_size}.")
        position = {raw: i for i, raw in enumerate(source_ids) if i > 0}
        pairs = [(t, position[raw]) for t, raw in enumerate(item_ids) if t > 0 and raw in position]
        if not pairs:
            raise RecforgeError(f"{key}: none of this run's {len(item_ids) - 1} items is among the earlier run's "
                                f"{len(source_ids) - 1}; name a run trained on the same catalogue.")
        rows_to, rows_from = (torch.tensor(rows) for rows in zip(*pairs))  # (K,), (K,)
        with torch.no_grad():
            weight = table.table.weight
            weight[rows_to] = vectors[rows_from].to(weight.dtype).to(weight.device)
        log.info("%s: %d of %d item rows from the earlier run, %d kept their random start", key, len(pairs),
                 len(item_ids) - 1, len(item_ids) - 1 - len(pairs))
    return len(tables)
