"""Smaller models at training time: a frozen teacher for knowledge distillation (``distill.teacher``) and
magnitude pruning of the encoder's linear layers before fine-tuning (``prune.amount``, ``prune.weights``).

Both act on the module that ``recforge.run.build.build`` made; recforge-train calls them right after it."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig

from recforge.deploy.model import load_model, resolve_checkpoint
from recforge.errors import RecforgeError
from recforge.models.encoders.base import SequenceEncoder
from recforge.models.module import NextItemModule
from recforge.models.pruning import make_permanent, prune_linear, restore_pruning
from recforge.run.build import item_id_map
from recforge.run.checkpoints import load_checkpoint, state_dict_mismatch


def causal(encoder: Any) -> bool:
    """Whether ``encoder`` predicts each position's next item from the positions up to it (the default
    next-item shift); a cloze encoder (BERT4Rec) sees the future and would hand the student its targets."""
    return type(encoder).training_pairs is SequenceEncoder.training_pairs


def attach_teacher(module: Any, cfg: DictConfig, datamodule: Any) -> None:
    """``distill.teacher`` set: load that run's best checkpoint (or the .ckpt given) as a frozen teacher and give
    the module its Distillation; null: nothing. A teacher of another item id map is refused."""
    spec = cfg.get("distill")
    if spec is None or not spec.get("teacher"):
        return
    key = f"distill.teacher={spec.teacher}"
    if not isinstance(module, NextItemModule):
        raise RecforgeError(f"{key}: distillation is for next-item models, not {type(module).__name__}.")
    teacher = load_model(spec.teacher, ids="file")  # weights_only=True; eval mode, on CPU
    ids = item_id_map(datamodule)
    if teacher.item_ids is None or ids is None or teacher.item_ids.raw != ids["item_ids"]:
        found = "no item_ids.json" if teacher.item_ids is None else f"{teacher.item_ids.num_items} items of dataset {teacher.dataset!r}"
        raise RecforgeError(f"{key}: the teacher's item id map ({found}) differs from this run's ({ids and ids['num_items']} items of dataset {ids and ids['dataset']!r}); distil from a run trained on the same data.")
    if teacher.max_len < int(cfg.dataset.max_len):
        raise RecforgeError(f"{key}: the teacher was trained on max_len {teacher.max_len}, shorter than this run's dataset.max_len={cfg.dataset.max_len}; use a max_len up to the teacher's.")
    if not (causal(teacher.scorer.encoder) and causal(module.encoder)):
        raise RecforgeError(f"{key}: teacher and student must both be next-item (causal) encoders, e.g. sasrec or gru4rec; a cloze encoder ({type(teacher.scorer.encoder).__name__ if not causal(teacher.scorer.encoder) else type(module.encoder).__name__}) sees the positions it predicts.")
    module.distillation = instantiate(spec, teacher=teacher.scorer)


def prune_encoder(module: Any, cfg: DictConfig) -> None:
    """``prune.amount`` set: load ``prune.weights`` (a run directory's best checkpoint or a .ckpt; null: the
    weights the model has), then prune that fraction of every linear weight of the encoder (models.pruning)."""
    spec = cfg.get("prune")
    if spec is None or spec.get("amount") is None:
        return
    if cfg.get("ckpt_path"):
        raise RecforgeError(f"prune.amount={spec.amount} with ckpt_path: a pruned model cannot continue another run's training state; pass the trained run as prune.weights={cfg.ckpt_path} instead.")
    if spec.get("weights") and not cfg.get("resume"):  # a resumed run gets its weights and masks from last.ckpt
        load_trained(module, spec.weights)
    prune_linear(module.encoder, float(spec.amount))


def load_trained(module: Any, source: str | Path) -> None:
    """The weights of a run directory (best checkpoint) or .ckpt into ``module`` (a pruned run's masks applied:
    pruning again goes on from its zeros)."""
    _, ckpt = resolve_checkpoint(source)
    state = load_checkpoint(ckpt)["state_dict"]
    restore_pruning(module, state)
    problem = state_dict_mismatch(module.state_dict(), state)
    if problem is not None:
        raise RecforgeError(f"prune.weights={source}: checkpoint {ckpt.resolve()} does not fit the configured model ({problem}); prune a run with the same encoder, sizes and data.")
    module.load_state_dict(state)
    make_permanent(module)
