"""distill.* and prune.* end to end on tiny synthetic data: composed and instantiated, a frozen teacher that is in
neither the optimizer nor the checkpoints, a teacher of other data refused, a pruned run fine-tuned, exported with
its zeros and without prune's reparametrisation."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from recforge.deploy.export import export
from recforge.deploy.model import load_model
from recforge.errors import RecforgeError
from recforge.models.distill import Distillation
from recforge.models.pruning import prunable_weights, sparsity
from recforge.run.build import build, build_module
from recforge.run.compress import attach_teacher
from recforge.run.load import load_weights
from recforge.run.validate import validate_config
from recforge.train import train

PROJECT = Path(__file__).resolve().parents[1]
TINY = ["dataset.reader.num_users=120", "dataset.reader.num_items=60", "dataset.reader.max_length=20",
        "dataset.max_len=10", "dataset.batch_size=32", "callbacks.progress_bar=null", "logger=csv"]


def composed(out: Path, *overrides: str) -> DictConfig:
    with initialize_config_module("recforge.conf", version_base="1.3"):
        cfg = compose("train", overrides=[*TINY, *overrides])
    with open_dict(cfg):
        cfg.paths.root_dir, cfg.paths.output_dir, cfg.paths.cache_dir = str(PROJECT), str(out), str(out.parent / "cache")
    return cfg


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny SASRec (hidden 16) trained 2 epochs by recforge-train's train()."""
    out = tmp_path_factory.mktemp("teacher") / "run"
    torch.set_num_threads(1)
    train(composed(out, "hidden_size=16", "trainer.max_epochs=2"))
    return out


def test_default_config_has_distillation_and_pruning_off(tmp_path: Path) -> None:
    cfg = composed(tmp_path / "run")
    assert cfg.distill.teacher is None and cfg.prune.amount is None and cfg.prune.weights is None
    assert (cfg.distill.temperature, cfg.distill.alpha) == (2.0, 0.5)
    datamodule, module = build(cfg)
    attach_teacher(module, cfg, datamodule)
    assert module.distillation is None


def test_every_new_option_composes_validates_and_instantiates(tmp_path: Path) -> None:
    cfg = composed(tmp_path / "run", "distill.teacher=some/run", "distill.temperature=4", "distill.alpha=0.3",
                   "prune.amount=0.8", "prune.weights=some/run")
    validate_config(cfg)
    kd = instantiate(cfg.distill, teacher=torch.nn.Linear(2, 2))
    assert isinstance(kd, Distillation) and (kd.temperature, kd.alpha) == (4.0, 0.3)
    assert (cfg.prune.amount, cfg.prune.weights) == (0.8, "some/run")


@pytest.mark.parametrize(("override", "named"), [("prune.amount=1.0", "prune.amount"),
                                                 ("distill.alpha=2", "distill.alpha"),
                                                 ("distill.temperature=0", "distill.temperature")])
def test_out_of_range_options_are_one_line_errors(tmp_path: Path, override: str, named: str) -> None:
    with pytest.raises(RecforgeError, match=named) as caught:
        validate_config(composed(tmp_path / "run", override))
    assert "\n" not in str(caught.value)


def test_teacher_is_frozen_outside_the_optimizer_and_the_checkpoint(teacher_run: Path, tmp_path: Path) -> None:
    cfg = composed(tmp_path / "run", "hidden_size=8", f"distill.teacher={teacher_run}")
    datamodule, module = build(cfg)
    attach_teacher(module, cfg, datamodule)
    teacher = module.distillation.teacher
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student_before = {k: v.clone() for k, v in module.state_dict().items()}
    trainer = L.Trainer(max_steps=2, limit_val_batches=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    trainer.fit(module, datamodule=datamodule)
    for key, value in teacher.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    in_optimizer = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert not in_optimizer & {id(p) for p in teacher.parameters()}
    assert module.state_dict().keys() == student_before.keys()  # nothing of the teacher (hidden 16) was added
    assert any(not torch.equal(v, student_before[k]) for k, v in module.state_dict().items())  # the student learned
    trainer.save_checkpoint(tmp_path / "student.ckpt")
    saved = torch.load(tmp_path / "student.ckpt", weights_only=True)["state_dict"]
    assert saved.keys() == student_before.keys()
    assert all(v.shape[-1] != 16 for k, v in saved.items() if k.endswith("weight") and v.dim() == 2)


def test_a_distilled_run_trains_and_differs_from_one_without_teacher(teacher_run: Path, tmp_path: Path) -> None:
    plain = train(composed(tmp_path / "plain", "hidden_size=8", "trainer.max_epochs=1"))
    kd = train(composed(tmp_path / "kd", "hidden_size=8", "trainer.max_epochs=1", f"distill.teacher={teacher_run}"))
    assert set(kd["test"]) == set(plain["test"])
    assert kd["test"] != plain["test"]  # same seed and data: only the teacher's term differs


def test_a_teacher_with_another_item_id_map_is_refused(teacher_run: Path, tmp_path: Path) -> None:
    other = tmp_path / "other_teacher"
    shutil.copytree(teacher_run, other)
    ids = json.loads((other / "item_ids.json").read_text())
    ids["item_ids"][1], ids["item_ids"][2] = ids["item_ids"][2], ids["item_ids"][1]
    (other / "item_ids.json").write_text(json.dumps(ids))
    cfg = composed(tmp_path / "run", "hidden_size=8", f"distill.teacher={other}")
    datamodule, module = build(cfg)
    with pytest.raises(RecforgeError, match="distill.teacher=.*item id map") as caught:
        attach_teacher(module, cfg, datamodule)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("amount", [0.5, 0.8])
def test_pruned_fine_tuned_run_exports_permanently_pruned(teacher_run: Path, tmp_path: Path, amount: float) -> None:
    out = tmp_path / "pruned"
    metrics = train(composed(out, "hidden_size=16", "trainer.max_epochs=1", f"prune.amount={amount}",
                             f"prune.weights={teacher_run}"))
    state = torch.load(metrics["best_checkpoint"], weights_only=True)["state_dict"]
    masks = [v for k, v in state.items() if k.endswith("_mask")]
    assert len(masks) == 8  # 2 layers x (qkv, out_proj, linear1, linear2)
    assert sum(int((m == 0).sum()) for m in masks) == sum(round(amount * m.numel()) for m in masks)
    model = load_model(out)  # as recforge-export loads it: pruning made permanent
    weights = [getattr(m, n) for m, n in prunable_weights(model.scorer.encoder)]
    assert sparsity(weights) == sum(round(amount * w.numel()) for w in weights) / sum(w.numel() for w in weights)
    path = export(model, "torchscript", None, tmp_path / "model.pt")
    exported = torch.jit.load(str(path)).state_dict()
    assert not any(k.endswith(("_orig", "_mask")) for k in exported)
    qkv = exported["encoder.stack.layers.layers.0.self_attn.in_proj_weight"]  # (48, 16)
    assert int((qkv == 0).sum()) == round(amount * 768)
    check = json.loads(path.with_name(path.name + ".json").read_text())["check"]
    assert check["max_abs_diff"] == 0.0  # the export scores as the loaded (pruned) model
    fresh = build_module(OmegaConf.load(out / "config.yaml"), model.num_items)  # as recforge-eval loads it
    load_weights(fresh, state, Path(metrics["best_checkpoint"]), out)
    assert not any(k.endswith(("_orig", "_mask")) for k in fresh.state_dict())
    torch.testing.assert_close(fresh.encoder.stack.layers.layers[0].self_attn.in_proj_weight,
                               model.scorer.encoder.stack.layers.layers[0].self_attn.in_proj_weight)


def test_pruning_refuses_ckpt_path(teacher_run: Path, tmp_path: Path) -> None:
    last = teacher_run / "checkpoints" / "last.ckpt"
    with pytest.raises(RecforgeError, match="prune.weights="):
        train(composed(tmp_path / "run", "hidden_size=16", "prune.amount=0.5", f"ckpt_path={last}"))
