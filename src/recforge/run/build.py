"""Build a run's parts from its config: the datamodule (data read once), the parts sized by it, the task's
LightningModule and the Trainer with its loggers and callbacks."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from hydra.utils import get_class, instantiate
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig, OmegaConf, open_dict

from recforge.data.datamodule import SequenceDataModule
from recforge.data.reviews import ReviewDataModule
from recforge.models.module import NextItemModule
from recforge.run.init_from import attach_earlier_items
from recforge.run.item_features import attach_item_features
from recforge.run.item_text import attach_item_text


def build(cfg: DictConfig) -> tuple[SequenceDataModule, NextItemModule]:
    """Instantiate the datamodule (and read its data), then the parts sized by it, then the module."""
    datamodule: SequenceDataModule = instantiate(cfg.dataset)
    attach_earlier_items(cfg, datamodule)  # init_from: this run's item map extends the earlier run's
    datamodule.prepare_data()
    datamodule.setup("fit")
    if isinstance(datamodule, ReviewDataModule):  # text tasks: the text encoder and a head, no item parts
        return datamodule, build_text_module(cfg, datamodule)
    module = build_module(cfg, datamodule.num_items, getattr(datamodule, "num_users", 0))
    # text item embedders get their item texts (frozen embeddings through the cache); id models read nothing
    item_text = OmegaConf.to_container(cfg.item_text, resolve=True) if cfg.get("item_text") else {}
    attach_item_text(module, datamodule, cache_dir=cfg.paths.cache_dir, **item_text)  # type: ignore[arg-type]
    # attribute and vector item embedders get the attribute bags and raw ids of the items
    attach_item_features(module, datamodule, column=cfg.get("item_attributes", {}).get("column"))
    return datamodule, module


def build_text_module(cfg: DictConfig, datamodule: ReviewDataModule) -> L.LightningModule:
    """The text task's module around ``cfg.text_encoder``; a fine-tuned encoder reads token ids, so the
    datamodule tokenizes with its tokenizer (a frozen one reads embeddings computed once, by row, cached in
    ``<paths.cache_dir>/text_embeddings``)."""
    encoder = instantiate(cfg.text_encoder)
    head = {"decoder": instantiate(cfg.decoder, dim=encoder.dim)} if cfg.get("decoder") else {}  # sized by it
    module = instantiate(cfg.task, encoder=encoder, loss=instantiate(cfg.loss), **head,
                         optimizer=instantiate(cfg.optimizer),
                         scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
                         cache_dir=str(Path(cfg.paths.cache_dir) / "text_embeddings"))
    if module.fine_tune:
        datamodule.use_tokenizer(module.encoder.tokenizer)
    return module


NEXT_ITEM_TASK = {"_target_": "recforge.models.module.NextItemModule"}  # runs saved before the task group


def build_module(cfg: DictConfig, num_items: int, num_users: int = 0) -> L.LightningModule:
    """The parts sized for ``num_items`` items (and ``num_users`` users for a part with user vectors), wired
    into the task's LightningModule (no data read)."""
    embedder_users = {"num_users": num_users} if "num_users" in cfg.item_embedder else {}  # LightGCN's graph
    embedder = instantiate(cfg.item_embedder, num_items=num_items, **embedder_users)
    users = {"num_users": num_users} if "num_users" in cfg.decoder else {}
    encoder_users = {"num_users": num_users} if "num_users" in cfg.encoder else {}  # matrix factorisation
    task = cfg.get("task") or OmegaConf.create(
        {**NEXT_ITEM_TASK, "ks": list(cfg.evaluation.ks), "mask_history": cfg.evaluation.mask_history,
         "item_chunk_size": cfg.evaluation.get("item_chunk_size")})
    heads = {"heads": build_heads(task.heads, embedder, num_users)} if "heads" in task else {}
    return instantiate(
        _without(task, "heads"),
        **heads,
        encoder=instantiate(cfg.encoder, item_embedder=embedder, **encoder_users),
        decoder=instantiate(cfg.decoder, item_embedder=embedder, **users),
        loss=instantiate(cfg.loss),
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
    )


def _without(node: DictConfig, key: str) -> DictConfig:
    """A copy of ``node`` without ``key`` (its value is built here and passed as an object)."""
    if key not in node:
        return node
    rest = copy.copy(node)  # shallow: keeps the parent, so interpolations (${evaluation.ks}) still resolve
    with open_dict(rest):
        del rest[key]
    return rest


def build_heads(heads: DictConfig, embedder: Any, num_users: int) -> dict[str, Any]:
    """task=multi: every pointwise task of ``task.heads`` with its head built on the shared item embedder and
    sized for ``num_users`` users (recforge.models.multi_module.PointwiseTask)."""
    return {name: instantiate(_without(node, "head"),
                              head=instantiate(node.head, item_embedder=embedder, num_users=num_users))
            for name, node in heads.items()}


def compile_loss(module: NextItemModule) -> None:
    """``compile=true``: torch.compile the training loss in place: the decoder's scores of every target position
    and the loss over them, the largest part of a training step (TorchInductor fuses the (M, N+1) scores,
    log-softmax and their backward). Dynamic shapes: the number of target positions M varies by batch.

    The encoder stays eager: on CPU its compiled form was slower (inductor's dropout random numbers; evaluation
    loses the fused eager transformer kernel), and eager dropout keeps the random numbers of an uncompiled run.
    Parameter names and checkpoints are unchanged; evaluation is not compiled."""
    module.loss.compile(dynamic=True)


def item_id_map(datamodule: SequenceDataModule) -> dict[str, Any] | None:
    """Raw dataset id of every internal item id (index; 0 is padding), so a served model speaks raw ids
    (None for text datasets: they have no items)."""
    if isinstance(datamodule, ReviewDataModule):
        return None
    if isinstance(datamodule, SequenceDataModule):
        item_ids = datamodule.load_sequences().item_ids  # entry 0 is "" (padding)
    else:  # rating samples (intent and value tasks) keep their own id map, without the padding entry
        item_ids = np.concatenate([[""], datamodule.item_ids])
    return {"dataset": datamodule.name, "num_items": len(item_ids) - 1, "max_len": datamodule.max_len,
            "item_ids": [str(i) for i in item_ids]}


def build_trainer(cfg: DictConfig, identity: dict[str, Any] | None = None) -> L.Trainer:
    loggers = _instantiate_entries(cfg, "logger", identity or {})
    callbacks = _instantiate_entries(cfg, "callbacks")
    return instantiate(cfg.trainer, logger=loggers or False, callbacks=callbacks)


def _instantiate_entries(cfg: DictConfig, group: str, identity: dict[str, Any] | None = None) -> list[Any]:
    """Build every entry of a dict group (loggers, callbacks); null entries are switched off.

    W&B loggers whose group/name/tags are unset get the run's identity (sweep group, overrides as name).
    """
    parts = []
    for entry in (cfg.get(group) or {}).values():
        if entry is None:
            continue
        extra = {}
        if identity and issubclass(get_class(entry._target_), WandbLogger):
            extra = {key: value for key, value in identity.items() if not entry.get(key)}
        parts.append(instantiate(entry, **extra))
    return parts
