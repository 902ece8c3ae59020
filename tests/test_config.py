"""Every option of every config group composes and builds what it should.

Options are discovered from the YAML files under ``recforge/conf/<group>/`` (nested groups such as
``dataset/split`` included), so a new option file is covered without editing this module. A new *group*
fails :func:`test_option_composes_and_builds` until a checker is added to ``CHECKERS``.
"""
from __future__ import annotations

import math
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.utils import get_class, get_object, instantiate
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, RichProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger
from lightning.pytorch.strategies import DDPStrategy
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

import recforge
from recforge.data.datamodule import SequenceDataModule, TrainingData
from recforge.data.multitask import MultiTaskDataModule
from recforge.data.preprocess import Sequences
from recforge.data.ratings import RandomHoldout, RandomKFold, RatingDataModule
from recforge.data.splits import (
    GlobalTemporal,
    LeaveOneOut,
    SequencesSplit,
    Split,
    TemporalRatio,
)
from recforge.errors import RecforgeError
from recforge.evaluation.pointwise import IntentMetrics, ValueMetrics
from recforge.evaluation.sampled import (
    PopularityCandidates,
    SampledRanking,
    UniformCandidates,
)
from recforge.models.decoders import DotProduct
from recforge.models.embedders import Fusion, IdEmbedding, TextEmbedding
from recforge.models.encoders.bert4rec import BERT4Rec
from recforge.models.encoders.content import ContentEncoder
from recforge.models.encoders.gru4rec import GRU4Rec
from recforge.models.encoders.itemknn import ItemKNNScores, MultiHot
from recforge.models.encoders.lightgcn import LightGCN
from recforge.models.encoders.mf import MatrixFactorization
from recforge.models.encoders.popularity import ConstantEncoder, PopularityScores
from recforge.models.encoders.sasrec import SASRec
from recforge.models.heads import BiasedDot, PointwiseHead
from recforge.models.item_sources import (
    AttributeEmbedding,
    MultiEmbedding,
    SourceFusion,
    SumSources,
    VectorEmbedding,
)
from recforge.models.losses import BPR, CrossEntropy, SampledBCE, SampledSoftmax
from recforge.models.module import NextItemModule
from recforge.models.multi_module import MultiTaskModule
from recforge.models.pointwise_module import PointwiseModule
from recforge.models.samplers import (
    InBatchNegatives,
    SharedPopularity,
    SharedUniform,
    UniformNegatives,
)
from recforge.models.schedules import WarmupCosine
from recforge.models.weighting import FixedWeights, UncertaintyWeights
from recforge.run.build import build, build_trainer
from recforge.run.memory import EvalHeap
from recforge.run.progress import (
    CompactModelSummary,
    ObjectiveProgressBar,
    QuietLightning,
    RunSummary,
)
from recforge.run.stopping import EarlyStopping as MinimumAwareEarlyStopping
from recforge.wandb_sweep import wandb_parameter

PROJECT = Path(__file__).resolve().parents[1]
CONF = Path(recforge.__file__).resolve().parent / "conf"
SHARED_DATA = Path(os.environ.get("RECFORGE_DATA", PROJECT.parent / "shared" / "data"))

# tiny synthetic data: builds in well under a second
TINY = [
    "dataset.reader.num_users=120", "dataset.reader.num_items=60", "dataset.reader.max_length=20",
    "dataset.max_len=10", "dataset.batch_size=32", "hidden_size=16",
]


def discover_options() -> list[tuple[str, str]]:
    """(group, option) for every YAML file below conf/<group>/ (group may be nested, e.g. dataset/split)."""
    found = []
    for path in sorted(CONF.rglob("*.yaml")):
        rel = path.relative_to(CONF)
        if len(rel.parts) < 2:  # train.yaml itself
            continue
        found.append((rel.parent.as_posix(), path.stem))
    return found


OPTIONS = discover_options()


def compose_raw(*overrides: str, hydra_cfg: bool = False) -> DictConfig:
    """Compose train.yaml without redirecting paths (for checks of the paths/hydra groups themselves)."""
    with initialize_config_module("recforge.conf", version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=hydra_cfg)


def targets(node: Any) -> list[str]:
    """Every ``_target_`` string in a (unresolved) config tree."""
    found: list[str] = []
    if isinstance(node, dict):
        if isinstance(node.get("_target_"), str):
            found.append(node["_target_"])
        for value in node.values():
            found += targets(value)
    elif isinstance(node, list):
        for value in node:
            found += targets(value)
    return found


def entries(node: DictConfig | None) -> dict[str, DictConfig]:
    """Non-null entries of a dict group such as logger or callbacks."""
    return {k: v for k, v in (node or {}).items() if v}


# ------------------------------------------------------------------------------------------- discovery


def test_discovery_finds_every_known_group_and_option():
    by_group: dict[str, set[str]] = {}
    for group, option in OPTIONS:
        by_group.setdefault(group, set()).add(option)
    assert by_group["encoder"] >= {"sasrec", "bert4rec", "gru4rec", "popularity", "mf", "itemknn", "lightgcn"}
    assert by_group["dataset"] >= {"synthetic", "synthetic_20m", "csv", "ml-100k", "ml-1m", "ml-20m", "beauty",
                                   "lastfm", "sports", "toys", "yelp"}
    assert by_group["dataset/split"] >= {"leave_one_out", "temporal_ratio", "global_temporal"}
    assert by_group["loss"] >= {"ce", "bce", "bpr"}
    assert by_group["optimizer"] >= {"adam", "adamw", "sgd"}
    assert by_group["scheduler"] >= {"none", "warmup_cosine"}
    assert by_group["trainer"] >= {"cpu", "gpu", "ddp"}
    assert by_group["logger"] >= {"csv", "tensorboard", "wandb", "many", "none"}
    assert by_group["callbacks"] >= {"default", "none", "low_memory"}
    assert by_group["decoder"] >= {"dot", "popularity"}
    assert by_group["item_embedder"] >= {"id"}


# ------------------------------------------------------------------------------------------- datasets


def _s3rec_stats(path: Path) -> dict[str, int]:
    """Users, items and interactions of an S3-Rec file counted directly from its text."""
    users, interactions, items = 0, 0, set()
    for line in path.read_text().splitlines():
        tokens = line.split()
        if tokens:
            users += 1
            interactions += len(tokens) - 1
            items.update(tokens[1:])
    return {"users": users, "items": len(items), "interactions": interactions}


KNOWN_REAL_STATS = {"ml-100k": {"users": 943, "items": 1682, "interactions": 100000}}


def check_dataset(option: str, compose_train, tmp_path: Path) -> None:
    base = compose_train(f"dataset={option}")
    assert base.dataset.name == option
    if base.dataset._target_ == "recforge.data.ratings.RatingDataModule":  # intent/value samples
        check_rating_dataset(option, compose_train)
        return
    if base.dataset._target_ == "recforge.data.multitask.MultiTaskDataModule":  # task=multi
        check_multi_dataset(option, compose_train)
        return
    if base.dataset._target_ == "recforge.data.reviews.ReviewDataModule":  # text tasks (review texts)
        check_review_dataset(option, compose_train)
        return
    assert base.dataset._target_ == "recforge.data.datamodule.SequenceDataModule"
    reader = base.dataset.reader

    if base.dataset.root is None:  # generated data (synthetic): build it tiny
        cfg = compose_train(f"dataset={option}", *TINY)
        dm = instantiate(cfg.dataset)
        assert isinstance(dm, SequenceDataModule) and dm.max_len == 10 and dm.batch_size == 32
        dm.prepare_data()
        dm.setup("fit")
        raw = instantiate(cfg.dataset.reader).read()
        assert dm.stats["users"] == 120 == raw["user"].nunique()
        assert dm.stats["items"] == raw["item"].nunique() <= 60
        assert dm.stats["interactions"] == len(raw)
        assert dm.stats["test_samples"] == dm.stats["val_samples"] == 120  # leave-one-out: one per user
        return

    if OmegaConf.is_missing(reader, "path"):  # generic table (csv): give it a tiny file
        rows = ["user_id,item_id,timestamp"]
        rows += [f"u{u},i{i},{100 * u + i}" for u in range(8) for i in range(6)]  # 8 users x 6 items
        rows += ["lonely,i0,1", "lonely,i1,2"]  # 2 interactions: removed by the default user 5-core
        csv_path = tmp_path / "interactions.csv"
        csv_path.write_text("\n".join(rows) + "\n")
        cfg = compose_train(f"dataset={option}", f"dataset.reader.path={csv_path}")
        dm = instantiate(cfg.dataset)
        dm.prepare_data()
        assert {k: dm.stats[k] for k in ("users", "items", "interactions")} == {
            "users": 8, "items": 6, "interactions": 48}
        return

    # a real-file dataset: the reader path hangs off dataset.root
    cfg = compose_train(f"dataset={option}", f"dataset.root={SHARED_DATA}")
    path = Path(cfg.dataset.reader.path)
    assert str(path).startswith(str(SHARED_DATA)), path
    get_class(cfg.dataset.reader._target_)
    dm = instantiate(cfg.dataset)
    assert isinstance(dm, SequenceDataModule) and dm.root == str(SHARED_DATA)
    if not path.exists():
        # data absent here: the user error names the composed path (its folder, or the file in it)
        with pytest.raises(RecforgeError) as err:
            dm.prepare_data()
        assert str(path.resolve().parent) in str(err.value) and path.name in str(err.value)
        return
    dm.prepare_data()
    counted = {k: dm.stats[k] for k in ("users", "items", "interactions")}
    if option in KNOWN_REAL_STATS:
        assert counted == KNOWN_REAL_STATS[option]
    elif path.is_file() and cfg.dataset.reader._target_.endswith("S3RecSequences"):
        assert counted == _s3rec_stats(path)
    else:
        assert counted["users"] > 0 and counted["items"] > 0 and counted["interactions"] >= counted["users"]


def check_rating_dataset(option: str, compose_train) -> None:
    cfg = compose_train(f"dataset={option}", "task=value", f"dataset.root={SHARED_DATA}")
    dm = instantiate(cfg.dataset)
    assert isinstance(dm, RatingDataModule)
    if not Path(cfg.dataset.reader.path).exists():
        with pytest.raises(RecforgeError):
            dm.setup()
        return
    dm.setup()
    if option == "ml-100k-ratings":  # 5-fold: every fold tests a fifth of the 100,000 ratings
        assert (dm.stats["users"], dm.stats["items"], dm.stats["ratings"]) == (943, 1682, 100000)
        assert dm.stats["test_samples"] == 20000 and dm.stats["val_samples"] == 4000
        assert dm.stats["mean_train_label"] == pytest.approx(3.53, abs=0.01)


def check_multi_dataset(option: str, compose_train) -> None:
    """task=multi data: the rating tasks' 5-fold split, next-item leave-one-out on each user's training ratings
    (tests/data/test_multitask_data.py checks that no held-out label reaches a training input)."""
    cfg = compose_train(f"dataset={option}", "task=multi", f"dataset.root={SHARED_DATA}")
    dm = instantiate(cfg.dataset)
    assert isinstance(dm, MultiTaskDataModule) and (dm.max_len, dm.batch_size, dm.threshold) == (50, 256, 4)
    if not Path(cfg.dataset.reader.path).exists():
        with pytest.raises(RecforgeError):
            dm.setup()
        return
    dm.setup()
    if option == "ml-100k-multi":  # fold 0: 20,000 test and 4,000 validation ratings; 2 held out per user
        assert (dm.stats["users"], dm.stats["items"], dm.stats["ratings"]) == (943, 1682, 100000)
        assert (dm.stats["test_samples"], dm.stats["val_samples"], dm.stats["train_events"], dm.stats["train_samples"]) == (
            20000, 4000, 74114, 73171)
        assert dm.stats["next_item_val_samples"] == dm.stats["next_item_test_samples"] == 943
        assert dm.train_means["intent"] == pytest.approx(0.553, abs=0.01)


def check_weighting(option: str, compose_train, tmp_path: Path) -> None:
    """task=multi's loss weighting, chosen by _target_ (conf/weighting, placed at task.weighting)."""
    cfg = compose_train("experiment=ml100k_multi", f"weighting={option}", f"dataset.root={SHARED_DATA}",
                        "hidden_size=16", "dataset.max_len=10", "encoder.max_len=10")
    assert "weighting" not in cfg and cfg.task.weighting._target_.endswith(
        {"fixed": "FixedWeights", "uncertainty": "UncertaintyWeights"}[option])
    if not (SHARED_DATA / "ml-100k" / "u.data").exists():
        return
    _, module = build(cfg)
    assert isinstance(module, MultiTaskModule)
    if option == "fixed":
        assert isinstance(module.weighting, FixedWeights)
        assert module.weighting.weights() == {"next_item": 1.0, "intent": 1.0, "value": 1.0}
    else:
        assert isinstance(module.weighting, UncertaintyWeights) and module.weighting.log_vars.tolist() == [0.0] * 3
        assert module.weighting.tasks == ("next_item", "intent", "value")


def check_review_dataset(option: str, compose_train) -> None:
    """Review texts: read from dataset.root, 80/20 split (seed 0) with 10 % of the training part validating."""
    from recforge.data.reviews import ReviewDataModule

    cfg = compose_train(f"dataset={option}", f"dataset.root={SHARED_DATA}")
    dm = instantiate(cfg.dataset)
    assert isinstance(dm, ReviewDataModule) and str(cfg.dataset.reader.path).startswith(str(SHARED_DATA))
    if not Path(cfg.dataset.reader.path).exists():
        with pytest.raises(RecforgeError):
            dm.setup()
        return
    dm.setup()
    if option == "clothing-reviews":  # 22,641 reviews with text; "Recommended IND" is the default label
        assert (dm.stats["texts"], dm.stats["test_samples"], dm.stats["val_samples"]) == (22641, 4528, 1811)
        assert dm.stats["train_samples"] == 16302 and dm.label_column == "Recommended IND"
        assert set(dm.labels.unique().tolist()) == {0.0, 1.0}


def check_split(option: str, compose_train, tmp_path: Path) -> None:
    cfg = compose_train(f"dataset/split={option}")
    split_fn = instantiate(cfg.dataset.split)
    if isinstance(split_fn, (RandomKFold, RandomHoldout)):  # rating samples: a partition of the rows
        split = split_fn(200)
        assert sorted(np.concatenate([split.train, split.val, split.test]).tolist()) == list(range(200))
        assert len(split.test) == 40  # a fifth in both defaults
        return
    assert type(split_fn) is get_class(cfg.dataset.split._target_)
    if isinstance(split_fn, SequencesSplit):  # reads the sequences' timestamps
        check_sequences_split(option, split_fn, compose_train)
        return
    lengths = np.array([10, 20, 2], dtype=np.int64)
    split = split_fn(lengths)
    assert isinstance(split, Split)
    # generic: train / val / test targets partition each kept user's sequence, in time order
    for u, n in enumerate(lengths):
        val = split.val[split.val[:, 0] == u, 1]
        test = split.test[split.test[:, 0] == u, 1]
        if split.train_lengths[u] == 0:
            continue
        assert val.min() >= split.train_lengths[u] and (test.size == 0 or test.min() > val.max())
        assert test.max() == n - 1
    expected = {
        LeaveOneOut: ([8, 18, 0], [[0, 8], [1, 18]], [[0, 9], [1, 19]]),
        TemporalRatio: ([8, 16, 0], [[0, 8], [1, 16], [1, 17]], [[0, 9], [1, 18], [1, 19]]),
    }
    if type(split_fn) in expected:
        train, val, test = expected[type(split_fn)]
        assert split.train_lengths.tolist() == train
        assert split.val.tolist() == val
        assert split.test.tolist() == test


def check_sequences_split(option: str, split_fn: SequencesSplit, compose_train) -> None:
    """A global time split: the defaults on one user with times 1..10 (cuts 8.2 and 9.1), then composed and
    instantiated with ML-100K (its cut times, evaluated users and target counts)."""
    assert isinstance(split_fn, GlobalTemporal) and (split_fn.val, split_fn.test) == (0.1, 0.1)
    seqs = Sequences(items=np.arange(1, 11), indptr=np.array([0, 10]), ratings=np.full(10, np.nan, np.float32),
                     user_ids=np.array(["u"], dtype=object), item_ids=np.array(["", *"abcdefghij"], dtype=object),
                     timestamps=np.arange(1.0, 11.0))
    split = split_fn(seqs)
    assert split.train_lengths.tolist() == [8] and split.val.tolist() == [[0, 8, 9]]
    assert split.test.tolist() == [[0, 9, 10]]
    cfg = compose_train("dataset=ml-100k", f"dataset/split={option}", f"dataset.root={SHARED_DATA}")
    dm = instantiate(cfg.dataset)
    assert isinstance(dm, SequenceDataModule) and isinstance(dm.split_fn, GlobalTemporal)
    if not (SHARED_DATA / "ml-100k" / "u.data").exists():
        return
    dm.setup("fit")
    # the last 10 % of the 100,000 ratings by time are the test period, the 10 % before it validation; ML-100K's
    # users mostly rated in one burst, so few of them are evaluated at each cut
    assert (dm.stats["val_cut_time"], dm.stats["test_cut_time"]) == (889237269.0, pytest.approx(891382271.2))
    assert (dm.stats["val_samples"], dm.stats["test_samples"]) == (81, 90)
    assert (dm.stats["val_targets"], dm.stats["test_targets"]) == (1535, 2886)
    assert (dm.stats["val_users_without_target"], dm.stats["val_users_without_input"]) == (670, 116)
    assert (dm.stats["test_users_without_target"], dm.stats["test_users_without_input"]) == (777, 76)
    batch = dm.test_set.__getitems__([0, 1])
    assert "target" not in batch and batch["targets"].shape[0] == 2 and (batch["targets"][:, 0] > 0).all()


# ------------------------------------------------------------------------------------------- model parts

KNOWN_ENCODERS = {
    "sasrec": (SASRec, DotProduct, True),
    "bert4rec": (BERT4Rec, DotProduct, True),
    "gru4rec": (GRU4Rec, DotProduct, True),
    "popularity": (ConstantEncoder, PopularityScores, False),
    "content": (ContentEncoder, DotProduct, False),
    "mf": (MatrixFactorization, DotProduct, True),
    "itemknn": (MultiHot, ItemKNNScores, False),
    "lightgcn": (LightGCN, DotProduct, True),
}


def _check_built(cfg: DictConfig) -> tuple[SequenceDataModule, Any]:
    dm, module = build(cfg)
    assert type(module.encoder) is get_class(cfg.encoder._target_)
    assert type(module.decoder) is get_class(cfg.decoder._target_)
    assert module.decoder.num_items == dm.num_items
    batch = dm.test_set.__getitems__(list(range(5)))
    module.fit_parts(dm)  # data-fitted parts (popularity counts, ItemKNN similarities, LightGCN's graph)
    module.eval()
    with torch.no_grad():
        scores = module.score(batch["input"])
    assert scores.shape == (5, dm.num_items + 1) and scores.dtype == torch.float32
    assert torch.isneginf(scores[:, 0]).all() and torch.isfinite(scores[:, 1:]).all()
    return dm, module


def check_encoder(option: str, compose_train, tmp_path: Path) -> None:
    cfg = compose_train(f"encoder={option}", *TINY)
    _, module = _check_built(cfg)
    if option in KNOWN_ENCODERS:
        enc, dec, trainable = KNOWN_ENCODERS[option]
        assert type(module.encoder) is enc and type(module.decoder) is dec
        assert module.trainable is trainable
    if module.trainable:
        assert module.encoder.item_embedder.hidden_size == 16


def check_pointwise(cfg: DictConfig) -> tuple[RatingDataModule, PointwiseModule, Tensor]:
    """Build an intent/value run on ML-100K and return its outputs for a test batch (B,)."""
    dm, module = build(cfg)
    assert isinstance(dm, RatingDataModule) and isinstance(module, PointwiseModule)
    batch = dm.parts["test"].__getitems__(list(range(6)))
    module.eval()
    with torch.no_grad():
        outputs = module(batch)
    assert outputs.shape == (6,) and torch.isfinite(outputs).all()
    return dm, module, outputs


POINTWISE = ["dataset=ml-100k-ratings", f"dataset.root={SHARED_DATA}", "hidden_size=16", "dataset.max_len=10",
             "encoder.max_len=10"]


def check_decoder(option: str, compose_train, tmp_path: Path) -> None:
    if option == "biased_dot":  # a pointwise head: composed by the value task
        cfg = compose_train("task=value", *POINTWISE)
        _, module, outputs = check_pointwise(cfg)
        assert type(module.decoder) is BiasedDot and module.decoder.item_embedder is module.encoder.item_embedder
        assert module.decoder.user_vectors.num_embeddings == 943
        # all biases start at 0 (fit sets mu to the training mean): the output is <state + p_user, q_item>
        dm, head = build(cfg)[0], module.decoder
        batch = dm.parts["test"].__getitems__(list(range(6)))
        with torch.no_grad():
            state = module.encoder(batch["history"])[:, -1]  # (6, H)
            expected = ((state + head.user_vectors(batch["user"])) * head.item_embedder(batch["item"])).sum(-1)
        torch.testing.assert_close(outputs, expected)
        return
    if option == "text_head":  # the text tasks' head: sized by the text encoder when the run layer builds it
        head = instantiate(compose_train("decoder=text_head").decoder, dim=4).eval()
        head.init_global_bias(0.5)
        assert isinstance(head, PointwiseHead) and head(torch.zeros(3, 4)).tolist() == [0.5, 0.5, 0.5]
        return
    cfg = compose_train(f"decoder={option}", *TINY)
    _, module = _check_built(cfg)
    known = {"dot": DotProduct, "popularity": PopularityScores}
    if option in known:
        assert type(module.decoder) is known[option]
    if isinstance(module.decoder, DotProduct):  # weights tied with the encoder's input table
        assert module.decoder.item_embedder is module.encoder.item_embedder


def vector_file(tmp_path: Path) -> Path:
    """Vectors (3 dims) of the synthetic items 0..49 (items 50..59 have none): row i is (i, 2i, 3i) / 150."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "vectors.parquet"
    vectors = [[i / 150, 2 * i / 150, 3 * i / 150] for i in range(50)]
    pq.write_table(pa.table({"item": [str(i) for i in range(50)], "vector": vectors}), path)
    return path


def check_side_features(embedder: Any, dm: SequenceDataModule) -> None:
    """Attribute and vector embedders got the synthetic items' categories and file vectors by raw id."""
    raw = [int(i) for i in dm.load_sequences().item_ids[1:]]  # raw id of internal ids 1..N
    if isinstance(embedder, AttributeEmbedding):  # one category per synthetic item: its row is that vector
        frame = dm.reader.item_text().set_index("item")
        categories = sorted(set(frame["category"]))
        assert embedder.table.num_embeddings == len(categories) + 1
        expected = [categories.index(frame.loc[str(r), "category"]) + 1 for r in raw]
        assert embedder.bags[1:-1, 0].tolist() == expected
        torch.testing.assert_close(embedder.output_weights()[1:], embedder.table.weight[expected])
    if isinstance(embedder, VectorEmbedding):
        assert embedder.present[1:-1].tolist() == [r < 50 for r in raw]
        expected = torch.tensor([[r / 150, 2 * r / 150, 3 * r / 150] if r < 50 else [0.0] * 3 for r in raw])
        torch.testing.assert_close(embedder.vectors[1:-1], expected)


def check_item_embedder(option: str, compose_train, tmp_path: Path) -> None:
    extra = [f"item_embedder.path={vector_file(tmp_path)}"] if option == "vectors" else []
    cfg = compose_train(f"item_embedder={option}", *TINY, *extra)
    dm, module = _check_built(cfg)
    embedder = module.encoder.item_embedder
    assert type(embedder) is get_class(cfg.item_embedder._target_)
    assert embedder is module.decoder.item_embedder
    if option == "id":
        assert isinstance(embedder, IdEmbedding)
        assert tuple(embedder.table.weight.shape) == (dm.num_items + 2, 16)  # + padding + [MASK]
        assert torch.count_nonzero(embedder.table.weight[0]) == 0
    check_side_features(embedder, dm)
    if option == "multi":  # id and text by default, summed
        assert list(embedder.sources) == ["id", "text"] and type(embedder.fusion) is SumSources
        assert isinstance(embedder.sources["text"], TextEmbedding) and embedder.sources["text"].text.ready


def check_item_source(option: str, compose_train, tmp_path: Path) -> None:
    """A source of item_embedder=multi is built by its _target_, gets its data and is summed with an id source."""
    extra = [f"item_source.vectors.path={vector_file(tmp_path)}"] if option == "vectors" else []
    sources = "[id]" if option == "id" else f"[id,{option}]"
    cfg = compose_train("item_embedder=multi", f"item_source={sources}", *TINY, *extra)
    dm, module = _check_built(cfg)
    embedder = module.encoder.item_embedder
    assert isinstance(embedder, MultiEmbedding) and list(embedder.sources) == sources.strip("[]").split(",")
    assert type(embedder.sources[option]) is get_class(cfg.item_source[option]._target_)
    check_side_features(embedder.sources[option], dm)
    items = torch.tensor([[0, 1, 2, 3]])
    with torch.no_grad():
        expected = sum(source(items) for source in embedder.sources.values())
        torch.testing.assert_close(embedder(items), expected)


def check_source_fusion(option: str, compose_train, tmp_path: Path) -> None:
    """A source fusion reaches item_embedder=multi by _target_ and fuses id and attribute vectors to H."""
    cfg = compose_train("item_embedder=multi", "item_source=[id,attributes]", f"source_fusion={option}", *TINY)
    _, module = _check_built(cfg)
    embedder = module.encoder.item_embedder
    assert type(embedder.fusion) is get_class(cfg.source_fusion._target_)
    assert isinstance(embedder.fusion, SourceFusion)
    with torch.no_grad():
        fused = embedder(torch.tensor([[1, 0]]))  # (1, 2, H)
    assert fused.shape == (1, 2, cfg.hidden_size) and not fused[0, 1].any()  # padding stays zero


def check_fusion(option: str, compose_train, tmp_path: Path) -> None:
    """A fusion option reaches the hybrid embedder by ``_target_`` and fuses an id and a text vector to H."""
    cfg = compose_train("item_embedder=hybrid", f"fusion={option}", "item_embedder.text_encoder=null",
                        "+item_embedder.text_dim=3")
    embedder = instantiate(cfg.item_embedder, num_items=5)
    assert type(embedder.fusion) is get_class(cfg.fusion._target_)
    assert isinstance(embedder.fusion, Fusion)
    embedder.text.attach_text_embeddings(torch.ones(5, 3))
    fused = embedder(torch.tensor([[1, 0]]))  # (1, 2, H)
    assert fused.shape == (1, 2, cfg.hidden_size) and not fused[0, 1].any()  # padding stays zero


# huber (delta 1) against errors 1, 2, 3: (0.5 + 1.5 + 2.5) / 3
POINTWISE_LOSSES = {"mse": (torch.nn.MSELoss, 14 / 3), "huber": (torch.nn.HuberLoss, 1.5),
                    "bce_logits": (torch.nn.BCEWithLogitsLoss, math.log(2))}


def check_loss(option: str, compose_train, tmp_path: Path) -> None:
    cfg = compose_train(f"loss={option}")
    loss = instantiate(cfg.loss)
    assert type(loss) is get_class(cfg.loss._target_)
    if option in POINTWISE_LOSSES:  # intent/value: outputs 0 against labels 1, 2, 3 (mse) or 0, 1, 1 (bce)
        cls, expected = POINTWISE_LOSSES[option]
        labels = torch.tensor([0.0, 1.0, 1.0]) if option == "bce_logits" else torch.tensor([1.0, 2.0, 3.0])
        assert type(loss) is cls and float(loss(torch.zeros(3), labels)) == pytest.approx(expected, rel=1e-6)
        return
    # with all-zero hidden states every real item scores 0: the values are known in closed form
    decoder = DotProduct(IdEmbedding(num_items=10, hidden_size=4))
    hidden, tgt = torch.zeros(6, 4), torch.tensor([1, 2, 3, 4, 5, 10])
    if isinstance(loss, SampledSoftmax):  # the default K (256) exceeds these 10 items: 3 fixed negatives instead
        assert isinstance(loss.sampler, SharedUniform) and loss.sampler.num_negatives == 256 and loss.log_q_correction
        fixed = float(loss.loss_against(hidden, tgt, torch.tensor([6, 7, 8]), decoder))
        assert fixed == pytest.approx(math.log(4), rel=1e-6)  # the target and 3 negatives, all scored 0
        return
    value = float(loss(hidden, tgt, decoder).detach())
    assert math.isfinite(value)
    known = {"ce": (CrossEntropy, math.log(10)), "ce_chunked": (CrossEntropy, math.log(10)),
             "bce": (SampledBCE, 2 * math.log(2)), "bpr": (BPR, math.log(2))}
    if option in known:
        cls, expected = known[option]
        assert type(loss) is cls
        assert value == pytest.approx(expected, rel=1e-6)
    if isinstance(loss, (SampledBCE, BPR)):
        assert isinstance(loss.sampler, UniformNegatives) and loss.sampler.num_negatives == 1
    if isinstance(loss, CrossEntropy):
        assert loss.label_smoothing == 0.0 and loss.chunk_rows == (1024 if option == "ce_chunked" else None)
        chunked = instantiate(compose_train("loss=ce", "loss.chunk_rows=4").loss)  # 6 targets in blocks of 4 and 2
        assert chunked.chunk_rows == 4
        assert float(chunked(hidden, tgt, decoder).detach()) == pytest.approx(math.log(10), rel=1e-6)


def check_loss_sampler(option: str, compose_train, tmp_path: Path) -> None:
    cfg = compose_train("loss=sampled_softmax", f"loss/sampler={option}")
    loss = instantiate(cfg.loss)
    kind = {"uniform": SharedUniform, "popularity": SharedPopularity, "in_batch": InBatchNegatives}[option]
    assert isinstance(loss, SampledSoftmax) and type(loss.sampler) is kind
    loss.fit_data(TrainingData.from_counts(torch.tensor([0, 5, 0, 3, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0] * 20)))
    targets = torch.tensor([1, 3, 3, 4])
    drawn = loss.sampler.draw(targets, 319)
    if option == "in_batch":
        assert drawn.tolist() == [1, 3, 4]
    else:
        assert drawn.shape == (256,) and bool((drawn >= 1).all() and (drawn <= 319).all())
    if option == "popularity":  # only ids with training counts are drawn
        assert set(drawn.tolist()) <= {i for i in range(320) if i % 16 in (1, 3, 4)}


KNOWN_OPTIMIZERS = {
    "adam": (torch.optim.Adam, {"lr": 0.001, "weight_decay": 0.0, "fused": None}),
    "adamw": (torch.optim.AdamW, {"lr": 0.001, "weight_decay": 0.01, "fused": None}),
    "sgd": (torch.optim.SGD, {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.0}),
}


def check_optimizer(option: str, compose_train, tmp_path: Path) -> None:
    cfg = compose_train(f"optimizer={option}")
    factory = instantiate(cfg.optimizer)
    assert callable(factory) and not isinstance(factory, torch.optim.Optimizer)  # a partial
    opt = factory(params=[torch.nn.Parameter(torch.zeros(3))])
    assert type(opt) is get_class(cfg.optimizer._target_)
    assert opt.param_groups[0]["lr"] == cfg.optimizer.lr
    if option in KNOWN_OPTIMIZERS:
        cls, values = KNOWN_OPTIMIZERS[option]
        assert type(opt) is cls
        for key, value in values.items():
            assert opt.param_groups[0][key] == value, key


@pytest.mark.parametrize("option", ["adam", "adamw"])
def test_fused_adam_is_the_same_update_in_one_kernel(option, compose_train):
    """optimizer.fused=true (the Beauty experiments): torch's fused kernel, the per-tensor update's values."""
    steps = {}
    for fused in ("null", "true"):
        cfg = compose_train(f"optimizer={option}", f"optimizer.fused={fused}", "optimizer.lr=0.1",
                            "optimizer.weight_decay=0.0")
        torch.manual_seed(0)
        start = torch.randn(50, 4)
        param = torch.nn.Parameter(start.clone())
        opt = instantiate(cfg.optimizer)(params=[param])
        assert opt.param_groups[0]["fused"] is (True if fused == "true" else None)
        for _ in range(5):
            opt.zero_grad()
            (param * 3.0).sum().backward()  # a constant gradient: each step moves every weight by lr
            opt.step()
        steps[fused] = param.detach().clone()
        # 5 steps of lr 0.1 against the gradient
        assert torch.allclose(start - steps[fused], torch.full_like(start, 0.5), atol=0.01)
    torch.testing.assert_close(steps["true"], steps["null"], rtol=1e-5, atol=1e-6)


def check_scheduler(option: str, compose_train, tmp_path: Path) -> None:
    cfg = compose_train(f"scheduler={option}")
    if not cfg.get("scheduler"):
        assert option == "none"
        _, module = build(compose_train(f"scheduler={option}", *TINY))
        assert module.scheduler_factory is None
        return
    factory = instantiate(cfg.scheduler)
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(3))], lr=0.01)
    sched = factory(optimizer=opt, total_steps=1000)
    assert type(sched) is get_class(cfg.scheduler._target_)
    if option == "warmup_cosine":
        assert isinstance(sched, WarmupCosine)
        assert opt.param_groups[0]["lr"] == pytest.approx(0.01 / 100)  # step 0 of 100 warm-up steps
        lrs = {}
        for step in range(1, 1001):
            opt.step()
            sched.step()
            lrs[step] = opt.param_groups[0]["lr"]
        assert lrs[100] == pytest.approx(0.01)  # end of warm-up: full lr
        assert lrs[550] == pytest.approx(0.005)  # half way through the cosine
        assert lrs[1000] == pytest.approx(0.0, abs=1e-12)  # min_ratio 0


KNOWN_TRAINERS = {
    "cpu": {"accelerator": "cpu", "devices": 1, "precision": "32-true"},
    "gpu": {"accelerator": "gpu", "devices": 1, "precision": "16-mixed"},
    "ddp": {"accelerator": "auto", "devices": 2, "precision": "32-true", "strategy": "ddp",
            "use_distributed_sampler": True},
    "ddp_multinode": {"accelerator": "auto", "num_nodes": 2, "precision": "32-true", "strategy": "ddp",
                      "sync_batchnorm": False, "use_distributed_sampler": True},
}


def check_trainer(option: str, compose_train, tmp_path: Path) -> None:
    cfg = compose_train(f"trainer={option}")
    for key, value in KNOWN_TRAINERS.get(option, {}).items():
        assert cfg.trainer[key] == value, key
    runnable_here = cfg.trainer.accelerator == "cpu" and cfg.trainer.devices == 1
    kwargs = {} if runnable_here else {"accelerator": "cpu", "devices": 1}
    trainer = instantiate(cfg.trainer, logger=False, enable_progress_bar=False, **kwargs)
    assert isinstance(trainer, L.Trainer)
    assert isinstance(trainer.accelerator, CPUAccelerator) and trainer.num_devices == 1
    assert trainer.max_epochs == cfg.trainer.max_epochs
    assert Path(trainer.default_root_dir) == Path(cfg.paths.output_dir)
    composed = str(cfg.trainer.precision)
    # Lightning has no fp16 AMP on CPU and substitutes bf16
    allowed = {composed, "bf16-mixed"} if composed == "16-mixed" else {composed}
    assert trainer.precision in allowed
    if cfg.trainer.get("strategy") == "ddp":
        assert isinstance(trainer.strategy, DDPStrategy)
    if option == "ddp_multinode":
        assert OmegaConf.is_missing(cfg.trainer, "devices")  # processes per node: always given explicitly
        cpu = compose_train("trainer=cpu").trainer  # the rest as trainer/cpu (written out, not inherited)
        assert all(cfg.trainer[k] == v for k, v in cpu.items() if k not in ("accelerator", "devices"))
        assert trainer.num_nodes == 2 and trainer.world_size == 2  # 2 nodes x 1 device (nothing launched here)
        one_node = instantiate(cfg.trainer, logger=False, enable_progress_bar=False, accelerator="cpu", devices=1,
                               num_nodes=1)
        assert isinstance(one_node.strategy, DDPStrategy) and one_node.world_size == 1


KNOWN_LOGGERS = {
    "csv": {"csv": CSVLogger},
    "tensorboard": {"tensorboard": TensorBoardLogger},
    "wandb": {"wandb": WandbLogger},
    "many": {"csv": CSVLogger, "tensorboard": TensorBoardLogger, "wandb": WandbLogger},
    "none": {},
}


def check_logger(option: str, compose_train, tmp_path: Path) -> None:
    cfg = compose_train(f"logger={option}", "callbacks=none")
    built = {name: instantiate(c) for name, c in entries(cfg.get("logger")).items()}
    for name, logger in built.items():
        assert type(logger) is get_class(cfg.logger[name]._target_)
    if option in KNOWN_LOGGERS:
        assert {n: type(v) for n, v in built.items()} == KNOWN_LOGGERS[option]
    if "wandb" in built:
        assert cfg.logger.wandb.offline is True
        assert built["wandb"]._offline is True
    if "csv" in built:
        assert Path(built["csv"].log_dir) == Path(cfg.paths.output_dir) / "csv"
    if "tensorboard" in built:
        assert Path(built["tensorboard"].log_dir) == Path(cfg.paths.output_dir) / "tensorboard"
    trainer = build_trainer(cfg)
    assert [type(lg) for lg in trainer.loggers] == [type(v) for v in built.values()]


def check_callbacks(option: str, compose_train, tmp_path: Path) -> None:
    cfg = compose_train(f"callbacks={option}", "logger=none")
    built = {name: instantiate(c) for name, c in entries(cfg.get("callbacks")).items()}
    for name, callback in built.items():
        assert type(callback) is get_class(cfg.callbacks[name]._target_)
    if option == "none":
        assert built == {}
    if option == "default":
        assert {n: type(v) for n, v in built.items()} == {
            "model_checkpoint": ModelCheckpoint, "early_stopping": MinimumAwareEarlyStopping, "quiet": QuietLightning,
            "model_summary": CompactModelSummary, "progress_bar": ObjectiveProgressBar, "run_summary": RunSummary}
        ckpt, stop = built["model_checkpoint"], built["early_stopping"]
        assert ckpt.monitor == stop.monitor == "val/ndcg@10" and ckpt.mode == stop.mode == "max"
        assert Path(ckpt.dirpath) == Path(cfg.paths.output_dir) / "checkpoints"
        assert ckpt.save_top_k == 1 and ckpt.save_last is True and stop.patience == 10
        assert isinstance(stop, EarlyStopping)  # Lightning's, deciding again until trainer.min_steps is met
        bar, summary = built["progress_bar"], built["run_summary"]
        assert isinstance(bar, RichProgressBar) and bar.objective == summary.objective == "val/ndcg@10"
        assert bar.best.mode == summary.mode == "max" and summary.output_dir == cfg.paths.output_dir
    if option == "step_checkpoints":  # default's callbacks, last.ckpt written by step_checkpoint only
        default = compose_train("callbacks=default", "logger=none").callbacks
        assert list(cfg.callbacks) == [*default, "step_checkpoint"]
        assert built["model_checkpoint"].save_last is False and built["step_checkpoint"].save_last is True
    if option == "low_memory":  # default's callbacks and the evaluation heap policy
        default = compose_train("callbacks=default", "logger=none").callbacks
        assert list(cfg.callbacks) == [*default, "eval_heap"]
        heap = built["eval_heap"]
        assert isinstance(heap, EvalHeap)
        assert (heap.eval_bytes, heap.train_bytes) == (4 * 2**20, 32 * 2**20)
    trainer = build_trainer(cfg)
    for callback in built.values():
        assert any(type(c) is type(callback) for c in trainer.callbacks)


def check_paths(option: str, compose_train, tmp_path: Path) -> None:
    cfg = compose_raw(f"paths={option}")
    if option == "default":
        assert cfg.paths.log_dir == "outputs"
        assert cfg.paths.cache_dir == str(tmp_path / "cache-from-env")
        raw = OmegaConf.to_container(cfg.paths, resolve=False)
        assert raw["output_dir"] == "${hydra:runtime.output_dir}" and raw["root_dir"] == "${hydra:runtime.cwd}"


def check_hydra(option: str, compose_train, tmp_path: Path) -> None:
    cfg = compose_raw(f"hydra={option}", hydra_cfg=True)
    if option == "default":
        run = OmegaConf.to_container(cfg.hydra.run, resolve=False)["dir"]
        sweep = OmegaConf.to_container(cfg.hydra.sweep, resolve=False)
        assert run.startswith("${paths.log_dir}/runs/") and "%f" in run  # microseconds: never overwritten
        assert sweep["dir"].startswith("${paths.log_dir}/multiruns/")
        assert sweep["subdir"] == "${hydra.job.num}_${short_dirname:${hydra.job.override_dirname}}"
        assert cfg.hydra.job.chdir is False
        assert list(cfg.hydra.job.config.override_dirname.exclude_keys) == ["dataset.root", "hparams_search"]
        assert cfg.hydra.callbacks.trial_summary._target_ == "recforge.run.sweep.TrialSummary"
        assert get_class(cfg.hydra.callbacks.trial_summary._target_) is not None


def check_hydra_launcher(option: str, compose_train, tmp_path: Path) -> None:
    """A launcher composes with the multi-node trainer, builds, and its settings make a valid sbatch script."""
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from submitit.slurm.slurm import SlurmExecutor

    cfg = compose_raw(f"hydra/launcher={option}", "trainer=ddp_multinode", "trainer.devices=4",
                      "trainer.num_nodes=3", hydra_cfg=True)
    launcher = instantiate(cfg.hydra.launcher)
    assert type(launcher) is get_class(cfg.hydra.launcher._target_)
    if option != "slurm":
        return
    assert type(launcher).__name__ == "SlurmLauncher"
    params = dict(launcher.params)  # resolved: sized by the trainer
    assert {k: params[k] for k in ("nodes", "tasks_per_node", "gpus_per_node", "timeout_min", "partition")} == {
        "nodes": 3, "tasks_per_node": 4, "gpus_per_node": 4, "timeout_min": 240, "partition": None}
    assert params["max_num_timeout"] == 0 and params["mem_gb"] > 0 and params["cpus_per_task"] >= 1
    # what the launcher hands to submitit (as SlurmLauncher.launch does), rendered as the sbatch script
    original = SlurmExecutor.affinity
    SlurmExecutor.affinity = classmethod(lambda cls: 1)  # pretend srun exists: nothing is submitted
    try:
        import submitit

        executor = submitit.AutoExecutor(cluster="slurm", folder=tmp_path / "submitit",
                                         slurm_max_num_timeout=params.pop("max_num_timeout"))
    finally:
        SlurmExecutor.affinity = original
    params.pop("submitit_folder")
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
    script = executor._executor._make_submission_file_text("python -m recforge.train", "uid")
    for line in ("--nodes=3", "--ntasks-per-node=4", "--gpus-per-node=4", "--time=240", "--cpus-per-task=8",
                 "--mem=64GB"):
        assert f"#SBATCH {line}\n" in script, line
    assert "--partition" not in script


def check_hparams_search(option: str, compose_train, tmp_path: Path) -> None:
    cfg = compose_raw(f"hparams_search={option}", "seed=7", hydra_cfg=True)
    sweeper = cfg.hydra.sweeper
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"  # no -m needed
    if option == "optuna":
        assert sweeper._target_ == "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
        assert sweeper.sampler._target_ == "optuna.samplers.TPESampler" and sweeper.sampler.seed == 7
        assert sweeper.direction == "maximize" and sweeper.n_trials >= 1
        low = compose_raw(f"hparams_search={option}", "objective_mode=min", hydra_cfg=True)
        assert low.hydra.sweeper.direction == "minimize"
    # every searched key exists in the train config, and its expression parses into a W&B parameter
    base = compose_raw()
    for key, expression in sweeper.params.items():
        assert OmegaConf.select(base, key) is not None, key
        assert wandb_parameter(key, str(expression))


def check_sweeper_sampler(option: str, compose_train, tmp_path: Path) -> None:
    cfg = compose_raw("hparams_search=optuna", f"hydra/sweeper/sampler={option}", "seed=3", hydra_cfg=True)
    sampler = instantiate(cfg.hydra.sweeper.sampler)
    if option == "tpe_seeded":
        assert type(sampler).__name__ == "TPESampler" and cfg.hydra.sweeper.sampler.seed == 3
        assert cfg.hydra.sweeper.sampler.n_startup_trials == 5


def _leaves(node: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted key -> value for every leaf of a plain container."""
    if not isinstance(node, dict):
        return {prefix: node}
    out: dict[str, Any] = {}
    for key, value in node.items():
        out.update(_leaves(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def check_experiment(option: str, compose_train, tmp_path: Path) -> None:
    cfg = compose_train(f"experiment={option}", f"dataset.root={SHARED_DATA}")
    source = OmegaConf.to_container(OmegaConf.load(CONF / "experiment" / f"{option}.yaml"), resolve=False)
    # the groups the experiment selects ...
    for entry in source.pop("defaults", []):
        for key, value in (entry.items() if isinstance(entry, dict) else []):
            group = key.replace("override", "").strip().strip("/")
            if group == "dataset":
                assert cfg.dataset.name == value
            elif group in ("encoder", "loss", "optimizer"):
                expected = OmegaConf.load(CONF / group / f"{value}.yaml")
                target = (expected.get("_target_")
                          or (expected[group]._target_ if group in expected  # popularity is @package _global_
                              else compose_train(f"{group}={value}")[group]._target_))  # ce_chunked extends ce
                assert cfg[group]._target_ == target, group
    # ... and every value it sets wins over the group defaults
    for key, value in _leaves(source).items():
        assert OmegaConf.select(cfg, key) == value, key
    if Path(cfg.dataset.reader.get("path") or "/nonexistent").exists():
        _, module = build(cfg)
        if cfg.get("encoder") is None:  # text tasks: the model's encoder is the text_encoder group's
            assert type(module.encoder) is get_class(cfg.text_encoder._target_) and module.trainable
            return
        assert type(module.encoder) is get_class(cfg.encoder._target_)
        if module.trainable:
            assert module.encoder.item_embedder.hidden_size == cfg.hidden_size


def check_task(option: str, compose_train, tmp_path: Path) -> None:
    if option == "multi":  # one encoder, three heads (tests/models/test_multi_module.py trains it)
        cfg = compose_train("task=multi", *POINTWISE[1:], "dataset=ml-100k-multi")
        assert cfg.loss._target_ == "recforge.models.losses.CrossEntropy" and cfg.objective == "val/next_item/ndcg@10"
        dm, module = build(cfg)
        assert isinstance(dm, MultiTaskDataModule) and isinstance(module, MultiTaskModule)
        assert set(module.heads) == {"intent", "value"} and isinstance(module.weighting, FixedWeights)
        assert isinstance(module.heads["intent"].metrics, IntentMetrics)
        assert isinstance(module.heads["value"].metrics, ValueMetrics)
        assert module.heads["value"].head.item_embedder is module.decoder.item_embedder is module.encoder.item_embedder
        return
    if option == "next_item":
        cfg = compose_train("task=next_item", *TINY)
        _, module = _check_built(cfg)
        assert isinstance(module, NextItemModule) and module.val_ranks.ks == [5, 10, 20]
        assert module.sampled is None  # evaluation.sampled.negatives: null = full ranking
        for name, sampler in (("uniform", UniformCandidates), ("popularity", PopularityCandidates)):
            cfg = compose_train("task=next_item", *TINY, "evaluation.sampled.negatives=20",
                                f"evaluation.sampled.sampler={name}", "evaluation.sampled.seed=3")
            _, module = _check_built(cfg)
            assert isinstance(module.sampled, SampledRanking) and type(module.sampled.sampler) is sampler
            assert (module.sampled.negatives, module.sampled.seed) == (20, 3)
        return
    cfg = compose_train(f"task={option}", *POINTWISE)
    assert cfg.loss._target_ == {"value": "torch.nn.MSELoss", "intent": "torch.nn.BCEWithLogitsLoss"}[option]
    dm, module, _outputs = check_pointwise(cfg)
    labels = dm.parts["test"].labels
    if option == "value":
        assert isinstance(module.metrics, ValueMetrics) and cfg.objective == "val/rmse"
        assert set(labels.unique().tolist()) == {1.0, 2.0, 3.0, 4.0, 5.0}
        assert module.metrics.predictions(torch.tensor([0.2, 7.0])).tolist() == [1.0, 5.0]  # clipped
    else:
        assert isinstance(module.metrics, IntentMetrics) and cfg.objective == "val/auc"
        assert set(labels.unique().tolist()) == {0.0, 1.0}
        assert float(labels.mean()) == pytest.approx(0.553, abs=0.01)  # ML-100K: 55 % of ratings are >= 4


def check_text_encoder(option: str, compose_train, tmp_path: Path) -> None:
    cfg = compose_train(f"text_encoder={option}", "item_embedder=text", *TINY)
    _, module = _check_built(cfg)
    table = module.encoder.item_embedder.text
    assert table.ready  # build() attached the item texts
    encoder = table.text_encoder
    assert type(encoder) is get_class(cfg.text_encoder._target_)
    assert encoder.trainable is (cfg.text_encoder.lora is not None) is table.fine_tunes
    assert module.trainable


CHECKERS: dict[str, Callable[[str, Any, Path], None]] = {
    "task": check_task,
    "weighting": check_weighting,
    "text_encoder": check_text_encoder,
    "dataset": check_dataset,
    "dataset/split": check_split,
    "encoder": check_encoder,
    "decoder": check_decoder,
    "item_embedder": check_item_embedder,
    "fusion": check_fusion,
    "item_source": check_item_source,
    "source_fusion": check_source_fusion,
    "loss": check_loss,
    "loss/sampler": check_loss_sampler,
    "optimizer": check_optimizer,
    "scheduler": check_scheduler,
    "trainer": check_trainer,
    "logger": check_logger,
    "callbacks": check_callbacks,
    "paths": check_paths,
    "hydra": check_hydra,
    "experiment": check_experiment,
    "hparams_search": check_hparams_search,
    "hydra/sweeper/sampler": check_sweeper_sampler,
    "hydra/launcher": check_hydra_launcher,
}


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_option_composes_and_builds(group, option, compose_train, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("RECFORGE_CACHE", str(tmp_path / "cache-from-env"))  # read by paths.cache_dir
    assert group in CHECKERS, f"config group '{group}' has no checker in tests/test_config.py: add one"
    if not group.startswith("hydra") and group != "paths":
        # every _target_ the composition names can be imported (a nested group with the option that holds it)
        parent = {"loss/sampler": ["loss=sampled_softmax"], "weighting": ["task=multi"]}.get(group, [])
        cfg = compose_train(*parent, f"{group}={option}")
        for target in targets(OmegaConf.to_container(cfg, resolve=False)):
            assert get_object(target) is not None, target
    CHECKERS[group](option, compose_train, tmp_path)


# ------------------------------------------------------------------------------------------- console


def test_cfg_job_through_console_script(tmp_path):
    script = Path(sys.executable).with_name("recforge-train")
    env = {**os.environ, "RECFORGE_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([str(script), "--cfg", "job"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "_target_: recforge.models.encoders.sasrec.SASRec" in proc.stdout
    printed = OmegaConf.create(proc.stdout)
    assert printed.encoder._target_ == "recforge.models.encoders.sasrec.SASRec"
    assert printed.dataset.name == "synthetic" and printed.loss._target_ == "recforge.models.losses.CrossEntropy"
    assert "hydra" not in printed  # job config only
    assert not (tmp_path / "outputs").exists()  # printing the config runs nothing
