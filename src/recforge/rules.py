"""Argument rules a part declares where it is defined, applied to a composed config and to a part built in Python.

A part (an encoder, a datamodule, a reader, a split, ...) states what each of its constructor arguments must be
in two class attributes:

- ``argument_rules``: argument name -> :class:`Expect` (type and range; one argument each), e.g.
  ``rule_table(num_heads=int_at_least(1), dropout=DROPOUT)``.
- ``argument_checks``: functions over several arguments of the same part (``train_stride <= max_len``), each
  given an :class:`Arguments` view (the values that met their own rule, and the key naming each) and returning
  one message or None.

:mod:`recforge.run.validate` applies them to every ``_target_`` node of the composed config (keys named by their
dotted path); a constructor applies them to its own arguments with :func:`check_arguments` (keys named by the
group the part sits in, e.g. ``encoder.mask_prob``). Either way a message is one clause,
``<key>=<value> must be <phrase>[, not <kind>]``, and several are joined with "; " into one line.

This module imports nothing of recforge but its errors, so every part can import it.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from recforge.errors import RecforgeError

ABSENT: Any = object()  # an argument that is not given, or whose value does not meet its own rule


# ------------------------------------------------------------------------------------------- expectations


def is_int(value: Any) -> bool:
    """An integer, not a boolean (numpy integers count, for parts built in Python)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


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
UNIT_OPEN = number_in(0, 1, low_open=True, high_open=True)  # (0, 1)
UNIT_CLOSED = number_in(0, 1, high_open=False)  # [0, 1]
DROPOUT = number_in(0, 1)  # [0, 1)


# ------------------------------------------------------------------------------------------- declarations


class Arguments:
    """Several arguments of one part, as an ``argument_checks`` function sees them: ``args[name]`` is the value,
    or :data:`ABSENT` when the argument is not given or breaks its own rule (which reports it);
    ``args.key(name)`` is the key that names it in messages. An argument that is itself a part is its class in a
    config (the node's ``_target_``) and an object in Python: :func:`part_class` gives the class either way."""

    def __init__(self, values: Mapping[str, Any], key: Callable[[str], str]) -> None:
        self._values, self._key = values, key

    def __getitem__(self, name: str) -> Any:
        return self._values.get(name, ABSENT)

    def key(self, name: str) -> str:
        return self._key(name)


ArgumentCheck = Callable[[Arguments], "str | None"]


def rule_table(**rules: Expect) -> Mapping[str, Expect]:
    """A part's ``argument_rules`` (argument name -> Expect), read-only: a class attribute every instance shares."""
    return MappingProxyType(rules)


def argument_rules(cls: type) -> Mapping[str, Expect]:
    """The rules ``cls`` declares for its arguments (inherited like any class attribute)."""
    return getattr(cls, "argument_rules", {})


def argument_problems(cls: type, values: Mapping[str, Any], key: Callable[[str], str],
                      rules: Mapping[str, Expect] | None = None) -> list[str]:
    """Every violation of the rules of ``cls`` (``rules`` if given, else its declared ones) by the given ``values``
    (name -> value; an argument that is not given is not checked), in the order of ``values``, then of its
    ``argument_checks``."""
    rules = argument_rules(cls) if rules is None else rules
    problems: list[str] = []
    accepted = {}
    for name, value in values.items():
        expect = rules.get(name)
        if expect is not None and (problem := expect.problem(key(name), value)):
            problems.append(problem)
        else:
            accepted[name] = value
    args = Arguments(accepted, key)
    for check in getattr(cls, "argument_checks", ()):
        if problem := check(args):
            problems.append(problem)
    return problems


class ArgumentError(RecforgeError, ValueError):
    """An argument of a part built in Python breaks the part's declared rules (a ValueError as well)."""


def check_arguments(cls: type, group: str, /, **values: Any) -> None:
    """For a constructor: raise one :class:`ArgumentError` naming every violation of the declared rules and
    checks of ``cls`` by ``values``, each key named ``<group>.<argument>`` (as in the config)."""
    problems = argument_problems(cls, values, lambda name: f"{group}.{name}" if group else name)
    if problems:
        raise ArgumentError("; ".join(problems) + ".")


def part_class(value: Any) -> type | None:
    """The class of an argument that is a part: itself when a class (a config node's resolved ``_target_``), else
    the object's type; None when absent."""
    return None if value is ABSENT else value if isinstance(value, type) else type(value)
