"""The composed train config, validated in one place before any work starts (no data read, nothing built).

First every interpolation must resolve and every required value (``???``) be set; then three kinds of check,
all declarative:

- ``RULES``: one :class:`Rule` per dotted key, naming what its value must be (type and range). A rule applies
  only where its key exists in the composed config, since options differ in their keys (``encoder.mask_prob``
  exists only for BERT4Rec, ``dataset.split.train`` only for ``dataset/split=temporal_ratio``).
- ``CROSS_CHECKS``: small functions over several keys (attention heads divide the hidden size, the encoder's
  window covers the data's, the objective is a computed metric, paired parts, ...).
- :func:`unknown_arguments`: every key of a ``_target_`` node is a parameter of that class (catches keys
  appended with ``+``; Hydra itself refuses unknown keys without ``+`` and unknown group options).

Every violation is reported, not only the first: the messages (one clause each, naming the key, the value given
and what is expected) are joined with "; " into one line, so one run shows everything to fix. A key set through
a plain interpolation (``item_embedder.hidden_size: ${hidden_size}``) is named by the key the user sets
(``hidden_size``), and a message that several rules produce is given once.
"""
from __future__ import annotations

import difflib
import importlib
import inspect
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hydra.utils import get_class
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from recforge.cli import check_required
from recforge.errors import RecforgeError
from recforge.evaluation.metrics import METRICS
from recforge.models.encoders.itemknn import ItemKNNScores, MultiHot
from recforge.models.encoders.popularity import ConstantEncoder, PopularityScores

_ABSENT = object()
# the precision values Lightning's Trainer accepts (tests compare this with Lightning's own list)
PRECISIONS: tuple[str | int, ...] = (
    "transformer-engine", "transformer-engine-float16", "16-true", "16-mixed", "bf16-true", "bf16-mixed",
    "32-true", "64-true", 64, 32, 16, "64", "32", "16", "bf16",
)
HYDRA_KEYS = frozenset({"_target_", "_partial_", "_recursive_", "_convert_", "_args_"})


# ------------------------------------------------------------------------------------------- expectations


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def kind(value: Any) -> str:
    """What a value is, for type errors: 'a string', 'a float', ..."""
    kinds = ((bool, "a boolean"), (int, "an integer"), (float, "a float"), (str, "a string"), (list, "a list"),
             (dict, "a mapping"))
    return "null" if value is None else next((name for cls, name in kinds if isinstance(value, cls)), "an object")


def show(value: Any) -> str:
    """A value as it would be written in an override: null, true, 'text', [1, 2]."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value) if isinstance(value, (str, list, dict)) else str(value)


@dataclass(frozen=True)
class Expect:
    """What a value must be: ``phrase`` for messages ("a number > 0"), a type test and a range test."""

    phrase: str
    type_ok: Callable[[Any], bool]
    range_ok: Callable[[Any], bool] = lambda value: True

    def accepts(self, value: Any) -> bool:
        return self.type_ok(value) and self.range_ok(value)

    def problem(self, key: str, value: Any) -> str | None:
        """One clause naming key, value and expectation, or None when the value is fine."""
        if not self.type_ok(value):
            suffix = "" if value is None else f", not {kind(value)}"
            return f"{key}={show(value)} must be {self.phrase}{suffix}"
        if not self.range_ok(value):
            return f"{key}={show(value)} must be {self.phrase}"
        return None


def number_above(low: float) -> Expect:
    return Expect(f"a number > {low}", is_number, lambda v: math.isfinite(v) and v > low)


def number_at_least(low: float) -> Expect:
    return Expect(f"a number >= {low}", is_number, lambda v: math.isfinite(v) and v >= low)


def number_in(low: float, high: float, low_open: bool = False, high_open: bool = True) -> Expect:
    """A number in an interval, by default [low, high)."""
    phrase = f"a number in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"

    def inside(v: float) -> bool:
        return (low < v if low_open else low <= v) and (v < high if high_open else v <= high)

    return Expect(phrase, is_number, inside)


def int_at_least(low: int) -> Expect:
    return Expect(f"an integer >= {low}", is_int, lambda v: v >= low)


def int_in(low: int, high: int) -> Expect:
    return Expect(f"an integer in [{low}, {high}]", is_int, lambda v: low <= v <= high)


def int_at_least_or(low: int, special: int) -> Expect:
    """An integer >= low, or the one special value (-1: 'no limit' / 'all')."""
    return Expect(f"{special} or an integer >= {low}", is_int, lambda v: v >= low or v == special)


def one_of(*choices: Any) -> Expect:
    """Exactly one of ``choices`` (type included: 1 is not true, '16' is not 16)."""
    return Expect(f"one of {', '.join(show(c) for c in choices)}", lambda v: True,
                  lambda v: any(type(v) is type(c) and v == c for c in choices))


def optional(expect: Expect) -> Expect:
    """``expect``, or null."""
    return Expect(f"{expect.phrase} (or null)", lambda v: v is None or expect.type_ok(v),
                  lambda v: v is None or expect.range_ok(v))


def list_of(item: Expect, items: str) -> Expect:
    """A non-empty list whose every element meets ``item``; ``items`` names them in messages ("integers >= 1")."""
    return Expect(f"a non-empty list of {items}", lambda v: isinstance(v, list),
                  lambda v: bool(v) and all(item.accepts(x) for x in v))


NUMBER = Expect("a number", is_number, math.isfinite)
BOOLEAN = Expect("true or false", lambda v: isinstance(v, bool))
TEXT = Expect("a string", lambda v: isinstance(v, str))


def _devices_ok(value: Any) -> bool:
    if is_int(value):
        return value >= 1 or value == -1
    return isinstance(value, str) or (isinstance(value, list) and bool(value) and all(is_int(v) and v >= 0 for v in value))


DEVICES = Expect("'auto', -1, an integer >= 1 or a list of device indices", lambda v: is_int(v) or isinstance(v, (str, list)),
                 _devices_ok)


# ------------------------------------------------------------------------------------------- per-key rules


@dataclass(frozen=True)
class Rule:
    """``key`` (dotted path in the composed config), when present, must meet ``expect``."""

    key: str
    expect: Expect


UNIT_OPEN = number_in(0, 1, low_open=True, high_open=True)  # (0, 1)
UNIT_CLOSED = number_in(0, 1, high_open=False)  # [0, 1]
DROPOUT = number_in(0, 1)  # [0, 1)
CUTOFFS = list_of(int_at_least(1), "integers >= 1")

RULES: tuple[Rule, ...] = (
    # run
    Rule("seed", int_in(0, 2**32 - 1)),
    Rule("hidden_size", int_at_least(1)),
    Rule("objective", TEXT),
    Rule("objective_mode", one_of("max", "min")),
    Rule("resume", BOOLEAN),
    Rule("compile", BOOLEAN),
    Rule("ckpt_path", optional(TEXT)),
    Rule("evaluation.ks", CUTOFFS),
    Rule("evaluation.mask_history", one_of(True, False, "s3rec")),
    Rule("evaluation.item_chunk_size", optional(int_at_least(1))),
    # data
    Rule("dataset.max_len", int_at_least(2)),
    Rule("dataset.batch_size", int_at_least(1)),
    Rule("dataset.eval_batch_size", int_at_least(1)),
    Rule("dataset.num_workers", int_at_least(0)),
    Rule("dataset.min_rating", optional(NUMBER)),
    Rule("dataset.user_k", int_at_least(0)),
    Rule("dataset.item_k", int_at_least(0)),
    Rule("dataset.bucket_by_length", BOOLEAN),
    Rule("dataset.cold_items", number_in(0, 1)),
    Rule("dataset.cold_seed", int_at_least(0)),
    Rule("dataset.train_stride", optional(int_at_least(1))),
    Rule("dataset.split.train", UNIT_OPEN),
    Rule("dataset.split.val", UNIT_OPEN),
    Rule("dataset.reader.download", BOOLEAN),
    Rule("dataset.reader.num_users", int_at_least(1)),
    Rule("dataset.reader.num_items", int_at_least(1)),
    Rule("dataset.reader.min_length", int_at_least(1)),
    Rule("dataset.reader.max_length", int_at_least(1)),
    Rule("dataset.reader.follow_prob", UNIT_CLOSED),
    Rule("dataset.reader.zipf_exponent", number_at_least(0)),
    Rule("dataset.reader.seed", int_at_least(0)),
    # model
    Rule("item_embedder.hidden_size", int_at_least(1)),
    Rule("item_embedder.init_std", number_at_least(0)),
    Rule("encoder.max_len", int_at_least(2)),
    Rule("encoder.num_layers", int_at_least(1)),
    Rule("encoder.num_heads", int_at_least(1)),
    Rule("encoder.dropout", DROPOUT),
    Rule("encoder.mask_prob", UNIT_OPEN),
    Rule("encoder.last_mask_prob", UNIT_CLOSED),
    Rule("encoder.inner_size", optional(int_at_least(1))),
    Rule("encoder.activation", one_of("relu", "gelu")),
    Rule("encoder.gru_size", int_at_least(1)),
    Rule("encoder.init_std", number_at_least(0)),
    Rule("decoder.k", optional(int_at_least(1))),
    Rule("decoder.shrink", number_at_least(0)),
    Rule("loss.label_smoothing", DROPOUT),
    Rule("loss.sampler.num_negatives", int_at_least(1)),
    Rule("loss.delta", number_above(0)),
    Rule("encoder.length_power", UNIT_CLOSED),
    # optimisation
    Rule("optimizer.lr", number_above(0)),
    Rule("optimizer.weight_decay", number_at_least(0)),
    Rule("optimizer.momentum", number_at_least(0)),
    Rule("optimizer.eps", number_above(0)),
    Rule("scheduler.warmup_steps", int_at_least(0)),
    Rule("scheduler.min_ratio", UNIT_CLOSED),
    # trainer
    Rule("trainer.max_epochs", optional(int_at_least_or(1, -1))),
    Rule("trainer.min_epochs", optional(int_at_least(0))),
    Rule("trainer.max_steps", int_at_least_or(1, -1)),
    Rule("trainer.devices", DEVICES),
    Rule("trainer.num_nodes", int_at_least(1)),
    Rule("trainer.precision", one_of(*PRECISIONS)),
    Rule("trainer.check_val_every_n_epoch", optional(int_at_least(1))),
    Rule("trainer.num_sanity_val_steps", int_at_least_or(0, -1)),
    Rule("trainer.log_every_n_steps", int_at_least(1)),
    Rule("trainer.accumulate_grad_batches", int_at_least(1)),
    Rule("trainer.gradient_clip_val", optional(number_at_least(0))),
    Rule("trainer.deterministic", optional(one_of(True, False, "warn"))),
    Rule("trainer.benchmark", optional(BOOLEAN)),
    # callbacks and loggers
    Rule("callbacks.early_stopping.patience", int_at_least(0)),
    Rule("callbacks.early_stopping.min_delta", number_at_least(0)),
    Rule("callbacks.early_stopping.mode", one_of("max", "min")),
    Rule("callbacks.model_checkpoint.save_top_k", int_at_least(-1)),
    Rule("callbacks.model_checkpoint.mode", one_of("max", "min")),
    Rule("logger.wandb.offline", BOOLEAN),
)


def value_at(cfg: DictConfig, key: str) -> Any:
    """The resolved value at ``key`` as a plain Python value, or ``_ABSENT`` when the key does not exist."""
    value = OmegaConf.select(cfg, key, default=_ABSENT)
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def source_key(cfg: DictConfig, key: str) -> str:
    """The key a user sets to change ``key``: follows plain interpolations (``${hidden_size}`` -> hidden_size)."""
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    raw = OmegaConf.to_container(node, resolve=False).get(leaf) if isinstance(node, DictConfig) else None
    match = re.fullmatch(r"\$\{([A-Za-z_][\w.]*)\}", raw) if isinstance(raw, str) else None
    return source_key(cfg, match.group(1)) if match else key


def rule_problem(cfg: DictConfig, rule: Rule) -> str | None:
    value = value_at(cfg, rule.key)
    return None if value is _ABSENT else rule.expect.problem(source_key(cfg, rule.key), value)


def valid(cfg: DictConfig, key: str, expect: Expect) -> Any:
    """The value at ``key`` if it exists and meets ``expect`` (else ``_ABSENT``: its own rule reports it)."""
    value = value_at(cfg, key)
    return value if value is not _ABSENT and expect.accepts(value) else _ABSENT


def _leaf_keys(node: dict[str, Any], path: str = "") -> list[str]:
    """Dotted keys of every leaf of a plain mapping (a list is a leaf)."""
    keys: list[str] = []
    for key, child in node.items():
        full = f"{path}.{key}" if path else str(key)
        keys += _leaf_keys(child, full) if isinstance(child, dict) else [full]
    return keys


def unresolvable(cfg: DictConfig) -> list[str]:
    """Keys whose interpolation cannot be resolved (``${nope}``), with OmegaConf's reason; nothing else can be
    checked before these are fixed."""
    problems = []
    for key in _leaf_keys(OmegaConf.to_container(cfg, resolve=False)):
        try:
            value_at(cfg, key)
        except OmegaConfBaseException as exc:
            problems.append(f"{key} cannot be resolved ({str(exc).splitlines()[0]})")
    return problems


# ------------------------------------------------------------------------------------------- cross-key checks


def heads_divide_hidden(cfg: DictConfig) -> str | None:
    """Attention encoders (those with num_heads) split the hidden size evenly between heads."""
    hidden = valid(cfg, "item_embedder.hidden_size", int_at_least(1))
    heads = valid(cfg, "encoder.num_heads", int_at_least(1))
    if hidden is _ABSENT or heads is _ABSENT or hidden % heads == 0:
        return None
    return (f"{source_key(cfg, 'item_embedder.hidden_size')}={hidden} must be divisible by "
            f"{source_key(cfg, 'encoder.num_heads')}={heads} (attention heads split the hidden size)")


def encoder_window_covers_data(cfg: DictConfig) -> str | None:
    """The encoder has a position embedding for every item of the data's input window."""
    encoder_len = valid(cfg, "encoder.max_len", int_at_least(2))
    data_len = valid(cfg, "dataset.max_len", int_at_least(2))
    if encoder_len is _ABSENT or data_len is _ABSENT or encoder_len >= data_len:
        return None
    return (f"encoder.max_len={encoder_len} must be >= dataset.max_len={data_len} "
            f"(the encoder needs a position for every item of the input window)")


def stride_within_window(cfg: DictConfig) -> str | None:
    """Overlapping training windows end at most one window length apart (a larger stride would skip targets)."""
    stride = valid(cfg, "dataset.train_stride", optional(int_at_least(1)))
    data_len = valid(cfg, "dataset.max_len", int_at_least(2))
    if stride is _ABSENT or stride is None or data_len is _ABSENT or stride <= data_len:
        return None
    return (f"dataset.train_stride={stride} must be <= dataset.max_len={data_len} "
            "(windows further apart would leave targets out of training)")


def split_leaves_test(cfg: DictConfig) -> str | None:
    """A ratio split keeps a share of each sequence for test targets."""
    train, val = valid(cfg, "dataset.split.train", UNIT_OPEN), valid(cfg, "dataset.split.val", UNIT_OPEN)
    if train is _ABSENT or val is _ABSENT or train + val < 1:
        return None
    return f"dataset.split.train={train} + dataset.split.val={val} must be < 1 (the rest of each sequence is the test part)"


def cold_items_compatible(cfg: DictConfig) -> list[str]:
    """A cold-start split holds cold items out as leave-one-out validation and test targets only, and its cold
    logits (-inf in training) leave no room for label smoothing, which would put probability on them."""
    cold = valid(cfg, "dataset.cold_items", number_in(0, 1))
    if cold is _ABSENT or cold == 0:
        return []
    problems = []
    split = OmegaConf.select(cfg, "dataset.split._target_")
    if isinstance(split, str) and not split.endswith(".LeaveOneOut"):
        problems.append(f"dataset.cold_items={cold} needs dataset/split=leave_one_out (cold items are held out as "
                        f"validation and test targets only), not {split.rsplit('.', 1)[-1]}")
    smoothing = valid(cfg, "loss.label_smoothing", DROPOUT)
    if smoothing is not _ABSENT and smoothing > 0:
        problems.append(f"dataset.cold_items={cold} needs loss.label_smoothing=0, not {smoothing} (smoothing would "
                        "put probability on the cold items, which training must never score)")
    return problems


def lengths_ordered(cfg: DictConfig) -> str | None:
    """Generated sequences: the shortest length is not above the longest."""
    low = valid(cfg, "dataset.reader.min_length", int_at_least(1))
    high = valid(cfg, "dataset.reader.max_length", int_at_least(1))
    if low is _ABSENT or high is _ABSENT or low <= high:
        return None
    return f"dataset.reader.min_length={low} must be <= dataset.reader.max_length={high}"


def objective_is_computed(cfg: DictConfig) -> str | None:
    """The objective is a validation metric that is computed, e.g. val/ndcg@10 with 10 in evaluation.ks."""
    ks, objective = valid(cfg, "evaluation.ks", CUTOFFS), valid(cfg, "objective", TEXT)
    if ks is _ABSENT or objective is _ABSENT:
        return None
    names = sorted({f"val/{metric}@{k}" for metric in METRICS for k in ks})
    metrics_target = OmegaConf.select(cfg, "task.metrics._target_")
    if metrics_target is not None:  # intent and value tasks: their metrics object names its metrics
        names = [f"val/{name}" for name in get_class(metrics_target).names]
    if objective in names:
        return None
    return f"objective={objective} is not a computed metric (expected one of {', '.join(names)})"


def task_matches_data(cfg: DictConfig) -> str | None:
    """Ranking tasks read sequences; intent and value tasks read rating samples (their datamodule); text tasks
    read review texts."""
    task, data = OmegaConf.select(cfg, "task._target_"), OmegaConf.select(cfg, "dataset._target_")
    if task is None or data is None:
        return None
    text_task, text_data = task.endswith("TextPointwiseModule"), data.endswith("ReviewDataModule")
    if text_task or text_data:  # text tasks read review texts (experiment=clothing_intent, clothing_value)
        if text_task == text_data:
            return None
        return (f"dataset {cfg.dataset.get('name')} and task {task.rsplit('.', 1)[-1]} do not fit together: text "
                "tasks (TextPointwiseModule) and text datasets (ReviewDataModule) go only with each other, e.g. "
                "experiment=clothing_intent")
    pointwise_task = task.endswith("PointwiseModule")
    pointwise_data = data.endswith("RatingDataModule")
    if pointwise_task == pointwise_data:
        return None
    if pointwise_task:
        return ("task=value and task=intent predict one number per rating and need a rating dataset "
                f"(e.g. dataset=ml-100k-ratings), not dataset {cfg.dataset.get('name')}")
    return (f"dataset {cfg.dataset.get('name')} holds rating samples for task=value or task=intent, not for "
            "next-item ranking")


def entries_have_targets(cfg: DictConfig) -> list[str]:
    """Every logger and callback entry names its class (an experiment's leftovers would not)."""
    problems = []
    for group in ("logger", "callbacks"):
        for name, entry in (cfg.get(group) or {}).items():
            if entry is not None and not (isinstance(entry, DictConfig) and "_target_" in entry):
                problems.append(
                    f"{group}.{name} has settings but no _target_ (left over from an experiment after choosing "
                    f"another {group} option?), so set {group}.{name}=null or pick a {group} option that defines it")
    return problems


def locate(path: str) -> Any:
    """The object a dotted ``_target_`` path names (module, then attributes); ImportError when there is none."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for name in parts[cut:]:
                obj = getattr(obj, name)
        except AttributeError:
            break
        return obj
    raise ImportError(f"cannot locate {path}")


@dataclass(frozen=True)
class Pairing:
    """Parts that only work together: ``first`` in group ``first_group`` iff ``second`` in ``second_group``."""

    first_group: str
    first: type
    second_group: str
    second: type
    reason: str


PAIRINGS: tuple[Pairing, ...] = (
    Pairing("encoder", ConstantEncoder, "decoder", PopularityScores,
            "the popularity baseline pairs them: pass encoder=popularity, which selects both"),
    Pairing("encoder", MultiHot, "decoder", ItemKNNScores,
            "the ItemKNN baseline pairs them: pass encoder=itemknn, which selects both"),
)


def _target_class(cfg: DictConfig, group: str) -> type | None:
    target = valid(cfg, f"{group}._target_", TEXT)
    try:
        obj = locate(target) if isinstance(target, str) else None
    except ImportError:  # reported by unknown_arguments
        return None
    return obj if isinstance(obj, type) else None


def parts_paired(cfg: DictConfig) -> list[str]:
    """Each pairing holds in both directions (a popularity decoder never follows a trained encoder)."""
    problems = []
    for pair in PAIRINGS:
        first, second = _target_class(cfg, pair.first_group), _target_class(cfg, pair.second_group)
        if first is None or second is None:
            continue
        if issubclass(first, pair.first) and not issubclass(second, pair.second):
            problems.append(f"{pair.first_group} {pair.first.__qualname__} needs {pair.second_group} "
                            f"{pair.second.__qualname__}, not {second.__qualname__} ({pair.reason})")
        elif issubclass(second, pair.second) and not issubclass(first, pair.first):
            problems.append(f"{pair.second_group} {pair.second.__qualname__} needs {pair.first_group} "
                            f"{pair.first.__qualname__}, not {first.__qualname__} ({pair.reason})")
    return problems


def users_need_next_item_task(cfg: DictConfig) -> str | None:
    """An encoder with a vector per user (encoder=mf) is a next-item ranking model: the rating tasks read the
    history only (their user vectors are decoder=biased_dot's)."""
    encoder, task = _target_class(cfg, "encoder"), OmegaConf.select(cfg, "task._target_")
    if encoder is None or not getattr(encoder, "uses_users", False) or not str(task).endswith("PointwiseModule"):
        return None
    return (f"encoder {encoder.__qualname__} (encoder=mf) learns a vector per user for next-item ranking (task=next_item), "
            "not for task=value or task=intent, whose user vectors are decoder=biased_dot's")


def _target_nodes(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    """(dotted path, raw mapping) of every node with a string ``_target_`` in a plain config tree."""
    found: list[tuple[str, dict[str, Any]]] = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    if isinstance(node, dict) and isinstance(node.get("_target_"), str):
        found.append((path, node))
    for key, child in items:
        found += _target_nodes(child, f"{path}.{key}" if path else str(key))
    return found


def unknown_arguments(cfg: DictConfig) -> list[str]:
    """Every key of a ``_target_`` node is a parameter of its class or function (e.g. ``+optimizer.lrr=0.1``)."""
    problems = []
    for path, node in _target_nodes(OmegaConf.to_container(cfg, resolve=False)):
        try:
            target = locate(node["_target_"])
        except ImportError:
            problems.append(f"{path}._target_={node['_target_']} does not name an importable class or function")
            continue
        try:
            params = inspect.signature(target).parameters
        except (ValueError, TypeError):  # no introspectable signature: the constructor will judge
            continue
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            continue
        accepted = [name for name, p in params.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL]
        for key in (k for k in node if k not in HYDRA_KEYS and k not in accepted):
            problems.append(_unknown_argument(f"{path}.{key}", node["_target_"], key, accepted))
    return problems


def _unknown_argument(full_key: str, target: str, key: str, accepted: list[str]) -> str:
    close = difflib.get_close_matches(key, accepted, n=1)
    hint = f"did you mean {close[0]}?" if close else f"it takes {', '.join(accepted) or 'no arguments'}"
    return f"{full_key} is not a parameter of {target} ({hint})"


CrossCheck = Callable[[DictConfig], str | None | list[str]]
CROSS_CHECKS: tuple[CrossCheck, ...] = (
    heads_divide_hidden, encoder_window_covers_data, stride_within_window, split_leaves_test, cold_items_compatible, lengths_ordered,
    objective_is_computed,
    task_matches_data,
    entries_have_targets, parts_paired, users_need_next_item_task, unknown_arguments,
)


# ------------------------------------------------------------------------------------------- entry point


def config_problems(cfg: DictConfig) -> list[str]:
    """Every violation of ``RULES`` and ``CROSS_CHECKS``, in table order, each message once."""
    problems = [rule_problem(cfg, rule) for rule in RULES]
    for check in CROSS_CHECKS:
        found = check(cfg)
        problems += found if isinstance(found, list) else [found]
    return list(dict.fromkeys(p for p in problems if p))


def validate_config(cfg: DictConfig) -> None:
    """Raise one RecforgeError listing every problem of the composed train config: unresolvable interpolations
    first, then required values never set (``???``), then the rules and cross-key checks."""
    _raise(unresolvable(cfg))
    check_required(cfg)
    _raise(config_problems(cfg))


def _raise(problems: list[str]) -> None:
    if problems:
        raise RecforgeError("; ".join(problems) + ".")
