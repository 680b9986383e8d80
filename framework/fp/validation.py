"""Checking configured values against their annotations, before anything is built.

A settings field or a plugin's constructor argument says what it accepts in its annotation:
``int``, ``float``, ``bool``, ``str``, ``X | None``, ``tuple``/``Sequence[X]``, ``Literal[...]``,
optionally wrapped in ``Annotated[..., Range(ge=1)]`` or ``Annotated[..., OneOf(...)]``. One
generic check turns a wrong type or an out-of-range value into one sentence naming the binding,
the value and what is allowed, so no per-field ``if`` is needed.
"""
from __future__ import annotations

import collections.abc
import inspect
import types
import typing
from dataclasses import dataclass, is_dataclass
from typing import Any, Annotated, Literal, Union

from fp.errors import ConfigError


@dataclass(frozen=True)
class Range:
    """Numeric bounds: ``ge``/``gt`` below, ``le``/``lt`` above (None: unbounded)."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def allows(self, value: float) -> bool:
        return ((self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
                and (self.le is None or value <= self.le) and (self.lt is None or value < self.lt))

    def describe(self) -> str:
        low, high = _first(self.ge, self.gt), _first(self.le, self.lt)
        if low is not None and high is not None:  # interval notation: "in [0, 1)"
            return (f"in {'[' if self.ge is not None else '('}{low}, {high}"
                    f"{']' if self.le is not None else ')'}")
        if low is not None:
            return f"at least {low}" if self.ge is not None else f"greater than {low}"
        if high is not None:
            return f"at most {high}" if self.le is not None else f"less than {high}"
        return "any number"


def _first(*values: float | None) -> float | None:
    return next((v for v in values if v is not None), None)


@dataclass(frozen=True)
class OneOf:
    """A closed set of allowed values (compared with ``==``)."""

    choices: tuple

    def __init__(self, *choices: Any) -> None:
        object.__setattr__(self, "choices", tuple(choices))

    def allows(self, value: Any) -> bool:
        return any(value == c and type(value) is type(c) for c in self.choices)

    def describe(self) -> str:
        return "one of " + ", ".join(repr(c) for c in self.choices)


def check(where: str, value: Any, hint: Any) -> None:
    """Raise a ConfigError if ``value`` does not satisfy the annotation ``hint``."""
    if is_reference(value):
        return  # a gin @reference or %macro: checked where it is resolved
    problem = violation(value, hint)
    if problem:
        raise ConfigError(f"{where} = {value!r} must be {problem}.")


def violation(value: Any, hint: Any) -> str | None:
    """What ``value`` should have been, or None when it fits ``hint``."""
    base, constraints = _split_annotated(hint)
    if typing.get_origin(base) in (Union, types.UnionType):
        arms = [a for a in typing.get_args(base) if fits(value, a)]
        if not arms:
            return describe_type(hint)
        problems = [violation(value, a) for a in arms]
        if None not in problems:
            return problems[0] + (", or None" if _allows_none(base) else "")
    elif not fits(value, base):
        return describe_type(hint)
    for constraint in constraints:
        if value is not None and hasattr(constraint, "allows") and not constraint.allows(value):
            return constraint.describe() + (", or None" if _allows_none(base) else "")
    return None


def fits(value: Any, hint: Any) -> bool:
    """Whether ``value`` has the type ``hint`` describes (unknown annotations accept anything)."""
    hint, _ = _split_annotated(hint)
    if hint is Any or hint is inspect.Parameter.empty or isinstance(hint, (str, typing.TypeVar)):
        return True
    if hint is None or hint is type(None):
        return value is None
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return any(fits(value, a) for a in args)
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    container = origin or hint
    if container in (tuple, list, collections.abc.Sequence, typing.Sequence):
        if not isinstance(value, (tuple, list)):
            return False
        if container is tuple and len(args) == 2 and args[1] is Ellipsis:
            args = (args[0],)
        if len(args) == 1:
            return all(fits(v, args[0]) for v in value)
        return not args or (len(args) == len(value) and all(map(fits, value, args)))
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def describe_type(hint: Any) -> str:
    """The annotation in words, for error messages."""
    hint, constraints = _split_annotated(hint)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        named = [describe_type(a) for a in args if a is not type(None)]
        words = " or ".join(named)
        return words + (", or None" if type(None) in args else "")
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    simple = {bool: "True or False", int: "an integer", float: "a number", str: "a string"}
    if hint in simple:
        return simple[hint]
    if (origin or hint) in (tuple, list, collections.abc.Sequence, typing.Sequence):
        inner = [a for a in args if a is not Ellipsis]
        return "a list or tuple" + (f" of {_plural(inner[0])}" if len(inner) == 1 else "")
    return getattr(hint, "__name__", str(hint))


def _plural(hint: Any) -> str:
    words = describe_type(hint)
    return {"an integer": "integers", "a number": "numbers", "a string": "strings"}.get(words, words)


def _split_annotated(hint: Any) -> tuple[Any, tuple]:
    if typing.get_origin(hint) is Annotated:
        base, *extras = typing.get_args(hint)
        return base, tuple(extras)
    return hint, ()


def _allows_none(hint: Any) -> bool:
    return type(None) in typing.get_args(hint) or hint is None


def is_reference(value: Any) -> bool:
    """gin's ``@configurable`` references and ``%macros`` are not literal values."""
    return type(value).__module__.startswith("gin")


def parameter_hints(target: Any) -> dict[str, Any]:
    """The annotated parameters of a configurable: a dataclass's fields, a class's ``__init__``
    or a function's signature (annotations that cannot be resolved are skipped)."""
    function = target if not isinstance(target, type) or is_dataclass(target) else target.__init__
    try:
        hints = typing.get_type_hints(function, include_extras=True)
    except Exception:  # an annotation naming something its module does not import
        return {}
    hints.pop("return", None)
    return hints


def check_fields(prefix: str, instance: Any) -> None:
    """Check every field of a settings dataclass against its annotation."""
    for name, hint in parameter_hints(type(instance)).items():
        check(f"{prefix}.{name}", getattr(instance, name), hint)
