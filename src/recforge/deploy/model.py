"""A trained run, loaded for deployment: its checkpoint and config -> a scorer, plus the run's item id map.

The scorer is the model's scoring path only (encoder + decoder, eval mode): ``items`` (B, L) left-padded internal
ids (0 = padding) -> ``scores`` (B, N+1) float32, column 0 (padding) at -inf; exactly ``NextItemModule.score``.

Item id map: ``<run>/item_ids.json`` (written by recforge-train). Runs trained before it existed have none; their
map is rebuilt, only when raw ids are needed, by reading the run's dataset again with its own config (relative data
paths are taken from the directory training started in, or re-rooted with ``data_root``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from recforge.errors import RecforgeError
from recforge.models.encoders.base import SequenceEncoder
from recforge.models.pruning import make_permanent, restore_pruning
from recforge.run.build import build_module
from recforge.run.checkpoints import load_checkpoint, state_dict_mismatch
from recforge.run.load import find_checkpoint
from recforge.run.records import ITEM_IDS_FILE

IdsPolicy = Literal["require", "try", "file"]  # rebuild if needed and fail without | rebuild if possible | file only


class Scorer(nn.Module):
    """The scoring path of a NextItemModule: the encoder's last hidden state scored against every item."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module) -> None:
        super().__init__()
        self.encoder, self.decoder = encoder, decoder

    def forward(self, items: Tensor) -> Tensor:
        """items: (B, L) left-padded internal ids -> scores (B, N+1) float32, column 0 at -inf."""
        return self.decoder(self.hidden(items)).float()  # (B, N+1)

    def hidden(self, items: Tensor) -> Tensor:
        """items: (B, L) left-padded internal ids -> the state the decoder scores (B, H), as in evaluation."""
        return self.encoder.final_state(self.encoder.inference_input(items))  # (B, H)


@dataclass(frozen=True)
class ItemIds:
    """Raw dataset id of every internal item id; ``raw[0]`` is padding ("")."""

    raw: list[str]
    dataset: str
    source: str  # the file it was read from, or how it was rebuilt
    index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "index", {raw: i for i, raw in enumerate(self.raw) if i > 0})

    @property
    def num_items(self) -> int:
        return len(self.raw) - 1

    def internal(self, raw_id: str) -> int | None:
        return self.index.get(raw_id)


@dataclass
class DeployedModel:
    """A run's scorer (eval mode, on CPU) with what serving needs to know about it."""

    run_dir: Path
    checkpoint: Path
    scorer: Scorer
    num_items: int
    max_len: int
    dataset: str
    item_ids: ItemIds | None
    item_ids_problem: str | None = None  # why there is no id map, when there is none

    @property
    def name(self) -> str:
        """``<run>/checkpoints/<file>``: names the model in logs and /health."""
        return f"{self.run_dir.name}/{self.checkpoint.parent.name}/{self.checkpoint.name}"


def resolve_checkpoint(path: str | Path) -> tuple[Path, Path]:
    """(run dir, checkpoint) for a checkpoint file (its run dir is the parent's parent) or a run dir (best one)."""
    given = Path(path)
    if given.is_dir():
        if not (given / "config.yaml").is_file():
            raise RecforgeError(f"{given} is not a recforge-train run directory (no config.yaml); pass a run directory or a .ckpt file inside one.")
        return given, find_checkpoint(given, "best")
    if not given.is_file():
        raise RecforgeError(f"{given}: no such checkpoint file or run directory.")
    run_dir = given.resolve().parent.parent  # <run>/checkpoints/<name>.ckpt
    if not (run_dir / "config.yaml").is_file():
        raise RecforgeError(f"checkpoint {given}: {run_dir / 'config.yaml'} is missing; a checkpoint must stay in its run directory (<run>/checkpoints/<name>.ckpt).")
    return run_dir, given


def read_item_ids(run_dir: Path) -> ItemIds | None:
    """The run's item_ids.json, or None when the run has none (trained before the file existed)."""
    path = run_dir / ITEM_IDS_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        raw = [str(i) for i in data["item_ids"]]
        return ItemIds(raw=raw, dataset=str(data.get("dataset", "")), source=str(path))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RecforgeError(f"{path} could not be read ({type(exc).__name__}); expected {{\"item_ids\": [raw id of internal id 0..N]}}.") from exc


def dataset_config(cfg: DictConfig, data_root: str | Path | None = None) -> DictConfig:
    """The run's resolved dataset config with its reader's paths usable from here: re-rooted under ``data_root``
    (replacing the run's ``dataset.root``) when given, else relative paths taken from the training directory."""
    ds = OmegaConf.create(OmegaConf.to_container(cfg.dataset, resolve=True))
    old_root, base = ds.get("root"), Path(cfg.paths.root_dir)
    for key, value in list(ds.get("reader", {}).items()):
        if not (key.endswith("path") and isinstance(value, str)):
            continue
        path = Path(value)
        if data_root is not None and old_root and path.is_relative_to(old_root):
            path = Path(data_root) / path.relative_to(old_root)
        ds.reader[key] = str(path if path.is_absolute() else base / path)
    if data_root is not None:
        ds.root = str(data_root)
    return ds


def rebuild_item_ids(run_dir: Path, cfg: DictConfig, data_root: str | Path | None = None) -> ItemIds:
    """The id map of a run without item_ids.json, from its dataset read again with the run's own config."""
    ds = dataset_config(cfg, data_root)
    try:
        seqs = instantiate(ds).load_sequences()
    except (RecforgeError, InstantiationException, OSError) as exc:
        cause = " ".join(str(exc).split())
        raise RecforgeError(f"run {run_dir} has no {ITEM_IDS_FILE} and its dataset could not be read to rebuild the item id map ({cause}); pass --data-root with the folder that holds the dataset, or use internal ids.") from exc
    raw = [str(i) for i in seqs.item_ids]
    return ItemIds(raw=raw, dataset=str(ds.get("name", "")), source=f"rebuilt from {run_dir / 'config.yaml'}")


def run_num_items(run_dir: Path, item_ids: ItemIds | None) -> int:
    """Catalogue size N: from the id map, else from dataset_stats.json (both written when training starts)."""
    if item_ids is not None:
        return item_ids.num_items
    stats = run_dir / "dataset_stats.json"
    try:
        return int(json.loads(stats.read_text())["items"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RecforgeError(f"run {run_dir} has neither {ITEM_IDS_FILE} nor a readable dataset_stats.json with \"items\"; the catalogue size is unknown.") from exc


def build_scorer(cfg: DictConfig, num_items: int, checkpoint: Path) -> Scorer:
    """The run's model sized for ``num_items``, with the checkpoint's weights, as an eval-mode scorer."""
    state = load_checkpoint(checkpoint)["state_dict"]  # weights_only=True; a damaged file is a user error
    module = build_module(cfg, num_items)
    restore_pruning(module, state)  # a pruned run's checkpoint holds weight_orig and weight_mask
    problem = state_dict_mismatch(module.state_dict(), state)
    if problem is not None:
        raise RecforgeError(f"checkpoint {checkpoint.resolve()} does not fit the model in its run's config.yaml with {num_items} items ({problem}).")
    module.load_state_dict(state)
    make_permanent(module)  # prune.remove: plain weights holding the zeros, no mask or hook in an export
    return Scorer(module.encoder, module.decoder).eval()


def load_model(path: str | Path, ids: IdsPolicy = "try", data_root: str | Path | None = None) -> DeployedModel:
    """Load a run directory (best checkpoint) or a checkpoint file for scoring on CPU.

    ``ids``: "require" fails without an id map, "try" rebuilds one if the data can be read, "file" only reads
    item_ids.json (no data access; raw ids are then unavailable for older runs).
    """
    run_dir, checkpoint = resolve_checkpoint(path)
    cfg: DictConfig = OmegaConf.load(run_dir / "config.yaml")  # type: ignore[assignment]
    refuse_user_models(run_dir, cfg)
    item_ids, problem = read_item_ids(run_dir), None
    num_items = run_num_items(run_dir, item_ids)
    if item_ids is None and ids != "file":
        try:
            item_ids = checked_ids(rebuild_item_ids(run_dir, cfg, data_root), num_items)
        except RecforgeError as exc:
            if ids == "require":
                raise
            problem = str(exc)
    elif item_ids is None:
        problem = f"run {run_dir} has no {ITEM_IDS_FILE}"
    scorer = build_scorer(cfg, num_items, checkpoint)
    return DeployedModel(run_dir=run_dir, checkpoint=checkpoint, scorer=scorer, num_items=num_items,
                         max_len=int(cfg.dataset.max_len), dataset=str(cfg.dataset.get("name", "")),
                         item_ids=item_ids, item_ids_problem=problem)


def refuse_user_models(run_dir: Path, cfg: DictConfig) -> None:
    """Deployed models score item histories: a run whose encoder scores a learned vector per training user
    (``uses_users``: encoder=mf, encoder=lightgcn) cannot be exported, recommended from or served, and is named before its
    checkpoint is loaded."""
    target = OmegaConf.select(cfg, "encoder._target_")
    try:
        encoder = get_class(target) if isinstance(target, str) else None
    except Exception:  # noqa: BLE001 - an unknown class is reported when the model is built
        return
    if isinstance(encoder, type) and issubclass(encoder, SequenceEncoder) and encoder.uses_users:
        raise RecforgeError(f"run {run_dir} uses a per-user encoder (encoder=mf or lightgcn: {target}), which scores the learned vector of a "
                            "training user, but recforge-export, recforge-recommend and recforge-serve score item "
                            "histories; deploy a sequence model (e.g. encoder=sasrec) instead.")


def checked_ids(item_ids: ItemIds, num_items: int) -> ItemIds:
    """A rebuilt id map must describe the catalogue the model was trained on."""
    if item_ids.num_items != num_items:
        raise RecforgeError(f"the item id map {item_ids.source} has {item_ids.num_items} items but the run was trained on {num_items}; the dataset files changed since training.")
    return item_ids
