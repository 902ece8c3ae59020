"""The composed train config, validated in one place before any work starts (no data read, nothing built).

First every interpolation must resolve and every required value (``???``) be set; then four kinds of check:

- Argument rules of the parts. Each part declares what its own constructor arguments must be where the part is
  defined (``argument_rules``: argument -> :class:`recforge.rules.Expect`, and ``argument_checks`` over several of
  its arguments; see :mod:`recforge.rules`). :func:`part_problems` walks the composed config and applies, to
  every node with a ``_target_``, the rules of that class (looked up on the class, so subclasses inherit them):
  a rule applies only where its argument is set, and adding a part or an option never means editing this file.
  Classes recforge does not define (Lightning's Trainer, callbacks and loggers, torch's optimizers and losses)
  cannot declare anything: :data:`FOREIGN_RULES` holds their rules here, by class (a subclass gets them too).
- ``RULES``: one :class:`Rule` per dotted key that is no constructor argument of any part (``seed``,
  ``objective``, ``evaluation.*``, ...).
- ``CROSS_CHECKS``: small functions over keys of several parts (attention heads divide the embedder's hidden
  size, the encoder's window covers the data's, the objective is a computed metric, paired parts, the task fits
  the data, ...). Parts are told apart by class (``issubclass``) or by what a class declares (``uses_users``,
  ``sample_kind``), never by their names.
- :func:`unknown_arguments`: every key of a ``_target_`` node is a parameter of that class (catches keys
  appended with ``+``; Hydra itself refuses unknown keys without ``+`` and unknown group options).

Every violation is reported, not only the first: the messages (one clause each, naming the key, the value given
and what is expected) are joined with "; " into one line, so one run shows everything to fix; they come in the
order central rules, parts (in config order), cross checks, unknown arguments. A key set through a plain
interpolation (``item_embedder.hidden_size: ${hidden_size}``) is named by the key the user sets
(``hidden_size``), and a message that several rules produce is given once.
"""
from __future__ import annotations

import difflib
import importlib
import inspect
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch.nn import HuberLoss
from torch.optim import Optimizer

from recforge.data.splits import SequencesSplit
from recforge.errors import RecforgeError
from recforge.evaluation.metrics import SET_METRICS
from recforge.models.encoders.itemknn import ItemKNNScores, MultiHot
from recforge.models.encoders.lightgcn import GraphEmbedding, LightGCN
from recforge.models.encoders.popularity import ConstantEncoder, PopularityScores
from recforge.models.multi_module import NEXT_ITEM
from recforge.rules import (
    ABSENT,
    BOOLEAN,
    DROPOUT,
    TEXT,
    Expect,
    argument_problems,
    argument_rules,
    int_at_least,
    int_at_least_or,
    int_in,
    is_int,
    list_of,
    number_above,
    number_at_least,
    one_of,
    optional,
)
from recforge.run.cli import check_required

# the precision values Lightning's Trainer accepts (tests compare this with Lightning's own list)
PRECISIONS: tuple[str | int, ...] = (
    "transformer-engine", "transformer-engine-float16", "16-true", "16-mixed", "bf16-true", "bf16-mixed",
    "32-true", "64-true", 64, 32, 16, "64", "32", "16", "bf16",
)
HYDRA_KEYS = frozenset({"_target_", "_partial_", "_recursive_", "_convert_", "_args_"})


def _devices_ok(value: Any) -> bool:
    if is_int(value):
        return value >= 1 or value == -1
    return isinstance(value, str) or (isinstance(value, list) and bool(value) and all(is_int(v) and v >= 0 for v in value))


DEVICES = Expect("'auto', -1, an integer >= 1 or a list of device indices", lambda v: is_int(v) or isinstance(v, (str, list)),
                 _devices_ok)
CUTOFFS = list_of(int_at_least(1), "integers >= 1")
MODE = one_of("max", "min")


# ------------------------------------------------------------------------------------------- central rules


@dataclass(frozen=True)
class Rule:
    """``key`` (dotted path in the composed config), when present, must meet ``expect``."""

    key: str
    expect: Expect


# keys that are no argument of a part: the run's own settings and those the task reads through interpolations
RULES: tuple[Rule, ...] = (
    Rule("seed", int_in(0, 2**32 - 1)),
    Rule("hidden_size", int_at_least(1)),
    Rule("objective", TEXT),
    Rule("objective_mode", MODE),
    Rule("resume", BOOLEAN),
    Rule("compile", BOOLEAN),
    Rule("ckpt_path", optional(TEXT)),
    Rule("init_from", optional(TEXT)),
    Rule("item_embedder.init_from", optional(TEXT)),
    Rule("evaluation.ks", CUTOFFS),
    Rule("evaluation.mask_history", one_of(True, False, "s3rec")),
    Rule("evaluation.item_chunk_size", optional(int_at_least(1))),
    Rule("prune.amount", optional(DROPOUT)),  # the fraction of each encoder linear weight pruned, [0, 1)
    Rule("prune.weights", optional(TEXT)),
    Rule("distill.teacher", optional(TEXT)),
)

# argument rules of classes recforge does not define, by class (a subclass, e.g. every torch optimizer, gets them)
FOREIGN_RULES: tuple[tuple[type, Mapping[str, Expect]], ...] = (
    (Optimizer, {"lr": number_above(0), "weight_decay": number_at_least(0), "momentum": number_at_least(0),
                 "eps": number_above(0)}),
    (HuberLoss, {"delta": number_above(0)}),
    (Trainer, {
        "max_epochs": optional(int_at_least_or(1, -1)),
        "min_epochs": optional(int_at_least(0)),
        "max_steps": int_at_least_or(1, -1),
        "devices": DEVICES,
        "num_nodes": int_at_least(1),
        "precision": one_of(*PRECISIONS),
        "check_val_every_n_epoch": optional(int_at_least(1)),
        "num_sanity_val_steps": int_at_least_or(0, -1),
        "log_every_n_steps": int_at_least(1),
        "min_steps": optional(int_at_least(0)),
        "accumulate_grad_batches": int_at_least(1),
        "gradient_clip_val": optional(number_at_least(0)),
        "deterministic": optional(one_of(True, False, "warn")),
        "benchmark": optional(BOOLEAN),
    }),
    (EarlyStopping, {"patience": int_at_least(0), "min_delta": number_at_least(0), "mode": MODE}),
    (ModelCheckpoint, {"save_top_k": int_at_least(-1), "mode": MODE}),
    (WandbLogger, {"offline": BOOLEAN}),
)


def value_at(cfg: DictConfig, key: str) -> Any:
    """The resolved value at ``key`` as a plain Python value, or ``ABSENT`` when the key does not exist."""
    value = OmegaConf.select(cfg, key, default=ABSENT)
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
    return None if value is ABSENT else rule.expect.problem(source_key(cfg, rule.key), value)


def _leaf_keys(node: dict[str, Any], path: str = "") -> list[str]:
    """Dotted keys of every leaf of a plain mapping (a list is a leaf)."""
    keys: list[str] = []
    for key, child in node.items():
        full = f"{path}.{key}" if path else str(key)
        keys += _leaf_keys(child, full) if isinstance(child, dict) else [full]
    return keys


# keys whose value is the name of an entry of a table in the config (an interpolation reads that entry): checked
# before interpolations are resolved, so a misspelt name is reported by the key the user sets
NAMED_ENTRIES: tuple[tuple[str, str], ...] = (("evaluation.sampled.sampler", "evaluation.samplers"),)


def unknown_names(cfg: DictConfig) -> list[str]:
    """Every key of ``NAMED_ENTRIES`` that is set names an entry of its table."""
    problems = []
    for key, table in NAMED_ENTRIES:
        value, names = OmegaConf.select(cfg, key, default=None), OmegaConf.select(cfg, table, default=None)
        if value is not None and isinstance(names, DictConfig) and (not isinstance(value, str) or value not in names):
            problems.append(one_of(*map(str, names)).problem(key, value) + f" (the names in {table})")
    return problems


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


# ------------------------------------------------------------------------------------------- the parts' rules


def locate(path: str) -> Any:
    """The object a dotted ``_target_`` path names (module, then attributes); ImportError when there is none.
    (hydra.utils.get_class would do, but it logs every failure to stderr, and a bad target is reported here in
    one line.)"""
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


def target_class(target: Any) -> type | None:
    """The class a ``_target_`` names; None when it is no class or cannot be imported (unknown_arguments says so)."""
    try:
        obj = locate(target) if isinstance(target, str) else None
    except ImportError:
        return None
    return obj if isinstance(obj, type) else None


def rules_of(cls: type) -> dict[str, Expect]:
    """The rules for the arguments of ``cls``: its own declaration, or those kept here for a foreign class."""
    rules = dict(argument_rules(cls))
    for base, foreign in FOREIGN_RULES:
        if issubclass(cls, base):
            rules.update(foreign)
    return rules


def _target_nodes(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    """(dotted path, raw mapping) of every node with a string ``_target_`` in a plain config tree."""
    found: list[tuple[str, dict[str, Any]]] = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    if isinstance(node, dict) and isinstance(node.get("_target_"), str):
        found.append((path, node))
    for key, child in items:
        found += _target_nodes(child, f"{path}.{key}" if path else str(key))
    return found


def _argument_value(cfg: DictConfig, key: str) -> Any:
    """The resolved value at ``key``; a part (a mapping with a ``_target_``) is given as its class."""
    value = value_at(cfg, key)
    if isinstance(value, dict) and "_target_" in value:
        return target_class(value["_target_"]) or ABSENT
    return value


def part_problems(cfg: DictConfig) -> list[str]:
    """Every violation of the argument rules and checks that the class of each ``_target_`` node declares, node
    by node in config order."""
    problems: list[str] = []
    for path, node in _target_nodes(OmegaConf.to_container(cfg, resolve=False)):
        cls = target_class(node["_target_"])
        rules = rules_of(cls) if cls is not None else {}
        if not rules and not getattr(cls, "argument_checks", ()):
            continue
        values = {name: _argument_value(cfg, f"{path}.{name}") for name in node if name not in HYDRA_KEYS}
        values = {name: value for name, value in values.items() if value is not ABSENT}  # e.g. ??? (missing)
        problems += argument_problems(cls, values, lambda name, at=path: source_key(cfg, f"{at}.{name}"), rules)
    return problems


# ------------------------------------------------------------------------------------------- cross-part checks


def expectation(cfg: DictConfig, key: str) -> Expect | None:
    """The rule ``key`` must meet: a central rule, or the one its part's class declares for it."""
    central = next((rule.expect for rule in RULES if rule.key == key), None)
    parent, _, leaf = key.rpartition(".")
    if central is not None or not parent:
        return central
    cls = target_class(OmegaConf.select(cfg, f"{parent}._target_"))
    return None if cls is None else rules_of(cls).get(leaf)


def valid(cfg: DictConfig, key: str) -> Any:
    """The value at ``key`` if it exists and meets its rule (else ``ABSENT``: missing, without a rule, or broken,
    which its rule reports)."""
    value, expect = value_at(cfg, key), expectation(cfg, key)
    return value if value is not ABSENT and expect is not None and expect.accepts(value) else ABSENT


def heads_divide_hidden(cfg: DictConfig) -> str | None:
    """Attention encoders (those with num_heads) split the embedder's hidden size evenly between heads."""
    hidden, heads = valid(cfg, "item_embedder.hidden_size"), valid(cfg, "encoder.num_heads")
    if hidden is ABSENT or heads is ABSENT or hidden % heads == 0:
        return None
    return (f"{source_key(cfg, 'item_embedder.hidden_size')}={hidden} must be divisible by "
            f"{source_key(cfg, 'encoder.num_heads')}={heads} (attention heads split the hidden size)")


def encoder_window_covers_data(cfg: DictConfig) -> str | None:
    """The encoder has a position embedding for every item of the data's input window."""
    encoder_len, data_len = valid(cfg, "encoder.max_len"), valid(cfg, "dataset.max_len")
    if encoder_len is ABSENT or data_len is ABSENT or encoder_len >= data_len:
        return None
    return (f"encoder.max_len={encoder_len} must be >= dataset.max_len={data_len} "
            f"(the encoder needs a position for every item of the input window)")


def cold_items_unsmoothed(cfg: DictConfig) -> str | None:
    """The cold logits of a cold-start split (-inf in training) leave no room for label smoothing, which would put
    probability on them. (That the split is leave-one-out is the datamodule's own check.)"""
    cold, smoothing = valid(cfg, "dataset.cold_items"), valid(cfg, "loss.label_smoothing")
    if cold is ABSENT or cold == 0 or smoothing is ABSENT or smoothing == 0:
        return None
    return (f"dataset.cold_items={cold} needs loss.label_smoothing=0, not {smoothing} (smoothing would put "
            "probability on the cold items, which training must never score)")


def chunked_ce_unsmoothed(cfg: DictConfig) -> str | None:
    """``loss.chunk_rows`` computes the plain cross-entropy's gradient block by block: no label smoothing."""
    rows, smoothing = valid(cfg, "loss.chunk_rows"), valid(cfg, "loss.label_smoothing")
    if rows is ABSENT or rows is None or smoothing is ABSENT or smoothing == 0:
        return None
    return (f"loss.chunk_rows={rows} works without label smoothing only, not with loss.label_smoothing={smoothing}: "
            "set one of them to its default")


def objective_is_computed(cfg: DictConfig) -> str | None:
    """The objective is a validation metric that is computed, e.g. val/ndcg@10 with 10 in evaluation.ks."""
    ks, objective = valid(cfg, "evaluation.ks"), valid(cfg, "objective")
    if ks is ABSENT or objective is ABSENT:
        return None
    # the ranking metrics of every evaluation (beyond-accuracy ones need full ranking: no objective)
    names = sorted({f"val/{metric}@{k}" for metric in SET_METRICS for k in ks})
    metrics = target_class(OmegaConf.select(cfg, "task.metrics._target_"))
    if metrics is not None:  # intent and value tasks: their metrics object names its metrics
        names = [f"val/{name}" for name in metrics.names]
    heads = OmegaConf.select(cfg, "task.heads")
    if heads is not None:  # task=multi: val/next_item/<ranking metric>, val/<head>/<its metric>
        names = [name.replace("val/", f"val/{NEXT_ITEM}/", 1) for name in names] + [
            f"val/{head}/{name}" for head, node in heads.items()
            for name in getattr(target_class(OmegaConf.select(node, "metrics._target_")), "names", ())]
    if objective in names:
        return None
    return f"objective={objective} is not a computed metric (expected one of {', '.join(names)})"


def _sample_kind(cfg: DictConfig, group: str) -> str | None:
    """What the samples of the group's part are (``sample_kind``, declared by tasks and datamodules)."""
    return getattr(target_class(OmegaConf.select(cfg, f"{group}._target_")), "sample_kind", None)


def task_matches_data(cfg: DictConfig) -> str | None:
    """A task reads the kind of sample its datamodule makes: ranking tasks sequences, intent and value tasks
    rating samples (their datamodule), text tasks review texts."""
    task, data = _sample_kind(cfg, "task"), _sample_kind(cfg, "dataset")
    if task is None or data is None or task == data:
        return None
    task_name = OmegaConf.select(cfg, "task._target_").rsplit(".", 1)[-1]
    if "reviews" in (task, data):  # text tasks read review texts (experiment=clothing_intent, clothing_value)
        return (f"dataset {cfg.dataset.get('name')} and task {task_name} do not fit together: text "
                "tasks (TextPointwiseModule) and text datasets (ReviewDataModule) go only with each other, e.g. "
                "experiment=clothing_intent")
    if "multi" in (task, data):
        return (f"dataset {cfg.dataset.get('name')} and task {task_name} do not fit together: task=multi reads a "
                "multi-task rating dataset (e.g. dataset=ml-100k-multi), and that dataset serves only task=multi")
    if task == "ratings":
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
    Pairing("encoder", LightGCN, "item_embedder", GraphEmbedding,
            "LightGCN propagates users and items together: pass encoder=lightgcn, which selects both"),
)


def _group_class(cfg: DictConfig, group: str) -> type | None:
    return target_class(OmegaConf.select(cfg, f"{group}._target_"))


def parts_paired(cfg: DictConfig) -> list[str]:
    """Each pairing holds in both directions (a popularity decoder never follows a trained encoder)."""
    problems = []
    for pair in PAIRINGS:
        first, second = _group_class(cfg, pair.first_group), _group_class(cfg, pair.second_group)
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
    """An encoder with a vector per user (encoder=mf, lightgcn) is a next-item ranking model: the rating tasks read the
    history only (their user vectors are decoder=biased_dot's)."""
    encoder, task = _group_class(cfg, "encoder"), _sample_kind(cfg, "task")
    if encoder is None or not getattr(encoder, "uses_users", False) or task in (None, "sequences"):
        return None
    return (f"encoder {encoder.__qualname__} (a per-user encoder: encoder=mf, lightgcn) learns a vector per user for next-item ranking (task=next_item), "
            "not for task=value or task=intent, whose user vectors are decoder=biased_dot's")


def multi_reads_next_item_states(cfg: DictConfig) -> str | None:
    """task=multi scores its pointwise heads on the states of the next-item training windows: the encoder's state at
    a position must read that position and the earlier ones only (``SequenceEncoder.next_item_states``)."""
    encoder = _group_class(cfg, "encoder")
    if encoder is None or _sample_kind(cfg, "task") != "multi" or getattr(encoder, "next_item_states", True):
        return None
    return (f"task=multi needs a next-item encoder whose state at a position reads only that position and the "
            f"earlier ones (encoder=sasrec, gru4rec, hf_gpt2, content), not {encoder.__qualname__}")


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
def sampled_needs_one_target(cfg: DictConfig) -> str | None:
    """Sampled ranking ranks one target per sample; a split whose samples have sets of targets needs full ranking."""
    negatives = OmegaConf.select(cfg, "evaluation.sampled.negatives", default=None)
    split = target_class(OmegaConf.select(cfg, "dataset.split._target_", default=None))
    if negatives is None or split is None or not issubclass(split, SequencesSplit):
        return None
    return (f"evaluation.sampled.negatives={negatives} ranks one target per sample, but dataset/split "
            f"({split.__name__}) gives each sample a set of targets; use full ranking "
            "(evaluation.sampled.negatives=null)")


CROSS_CHECKS: tuple[CrossCheck, ...] = (
    heads_divide_hidden, encoder_window_covers_data, cold_items_unsmoothed, chunked_ce_unsmoothed,
    objective_is_computed,
    task_matches_data, entries_have_targets, parts_paired, users_need_next_item_task, sampled_needs_one_target,
    multi_reads_next_item_states, unknown_arguments,
)


# ------------------------------------------------------------------------------------------- entry point


def config_problems(cfg: DictConfig) -> list[str]:
    """Every violation of ``RULES``, of the parts' argument rules and of ``CROSS_CHECKS``, each message once."""
    problems = [rule_problem(cfg, rule) for rule in RULES] + part_problems(cfg)
    for check in CROSS_CHECKS:
        found = check(cfg)
        problems += found if isinstance(found, list) else [found]
    return list(dict.fromkeys(p for p in problems if p))


def validate_config(cfg: DictConfig) -> None:
    """Raise one RecforgeError listing every problem of the composed train config: unresolvable interpolations
    first (a name that is no entry of its table, e.g. evaluation.sampled.sampler, before them), then required values
    never set (``???``), then the rules and cross-part checks."""
    _raise(unknown_names(cfg) or unresolvable(cfg))
    check_required(cfg)
    _raise(config_problems(cfg))


def _raise(problems: list[str]) -> None:
    if problems:
        raise RecforgeError("; ".join(problems) + ".")
