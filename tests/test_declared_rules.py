"""Argument rules declared by the parts themselves (recforge.rules): every declared name is a constructor parameter,
a part built in Python gets the same messages as its config, and recforge.run.validate applies a declaration it has
never heard of."""
from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest
from omegaconf import OmegaConf

import recforge.data
import recforge.models
import recforge.rules
from recforge.data.synthetic import SyntheticSequences
from recforge.errors import RecforgeError
from recforge.models.embedders import IdEmbedding
from recforge.models.encoders.sasrec import SASRec
from recforge.rules import (
    ABSENT,
    ArgumentError,
    Arguments,
    check_arguments,
    int_at_least,
    rule_table,
)
from recforge.run.validate import config_problems


def declaring_classes() -> list[type]:
    """Every class of recforge.models and recforge.data that declares argument rules or checks itself."""
    found = {}
    for package in (recforge.models, recforge.data):
        for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            module = importlib.import_module(info.name)
            for _, cls in inspect.getmembers(module, inspect.isclass):
                if "argument_rules" in vars(cls) or "argument_checks" in vars(cls):
                    found[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return list(found.values())


def test_every_declared_rule_names_a_constructor_parameter():
    classes = declaring_classes()
    assert len(classes) >= 15
    for cls in classes:
        params = inspect.signature(cls).parameters
        assert set(cls.argument_rules) <= set(params), cls


def test_a_part_built_in_python_reports_like_its_config():
    with pytest.raises(ArgumentError) as err:
        SASRec(IdEmbedding(5, 4), num_heads=0, dropout=1.0)
    assert str(err.value) == ("encoder.num_heads=0 must be an integer >= 1; "
                              "encoder.dropout=1.0 must be a number in [0, 1).")
    assert isinstance(err.value, RecforgeError) and isinstance(err.value, ValueError)
    with pytest.raises(ArgumentError, match=r"^dataset\.reader\.min_length=5 must be <= dataset\.reader\.max_length=3\.$"):
        SyntheticSequences(min_length=5, max_length=3)


def _budget_fits(args: Arguments) -> str | None:
    low, high = args["low"], args["high"]
    return None if low is ABSENT or high is ABSENT or low <= high else f"{args.key('low')}={low} must be <= {high}"


class Budget:
    """A part validate.py does not know: its declaration alone gets it checked."""

    argument_rules = rule_table(low=int_at_least(0), high=int_at_least(1))
    argument_checks = (_budget_fits,)

    def __init__(self, low: int = 0, high: int = 1) -> None:
        check_arguments(Budget, "budget", low=low, high=high)


def test_validate_applies_any_declaration(monkeypatch):
    monkeypatch.setattr(recforge.rules, "Budget", Budget, raising=False)  # importable as a _target_
    target = "recforge.rules.Budget"
    cfg = OmegaConf.create({"cap": 4, "budget": {"_target_": target, "low": "${cap}", "high": 0}})
    assert config_problems(cfg) == ["budget.high=0 must be an integer >= 1"]
    cfg = OmegaConf.create({"cap": 4, "budget": {"_target_": target, "low": "${cap}", "high": 2}})
    assert config_problems(cfg) == ["cap=4 must be <= 2"]  # named by the key the user sets
    with pytest.raises(ArgumentError, match=r"^budget\.low=-1 must be an integer >= 0\.$"):
        Budget(low=-1)
