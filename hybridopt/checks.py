"""Field checks of the config dataclasses, driven by their type hints and a table of ranges.

A config calls :func:`check_fields` first thing in ``__post_init__``: every field's value must
match its annotation (types first), then the range its table gives it (values second). Each
error is a ``TypeError`` (wrong type) or ``ValueError`` (bad value) that names
``Config.field``, the bad value and what was expected::

    GradientConfig.lr must be a number > 0; got lr = 'fast' (str).

What an annotation allows:

- ``int``: an int, never a bool (``True`` is an int to Python, not to a config);
- ``float``: a finite int or float, never a bool;
- ``bool``: only ``True`` or ``False`` (not ``"false"``, not ``0``);
- ``str``: a string; ``Literal["a", "b"]``: one of those strings;
- ``Callable``: anything callable; ``dict``: a dict;
- ``X | None``: also None; any other class: an instance of it.

Strings are never converted: a config file that says ``lr: 1e-3`` in YAML (a string there)
gets the type error, not a guess.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import functools
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["UNIT", "Range", "above", "at_least", "between", "check_fields", "field_error"]


@dataclass(frozen=True)
class Range:
    """Allowed values of a number field: ``low <= value <= high``, ``<`` at an open end."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        if self.low is not None and not (value > self.low if self.low_open else value >= self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def __str__(self) -> str:
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"in {left}{self.low:g}, {self.high:g}{right}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {self.high:g}"
        return ""


def at_least(low: float) -> Range:
    """``value >= low``."""
    return Range(low=low)


def above(low: float) -> Range:
    """``value > low``."""
    return Range(low=low, low_open=True)


def between(low: float, high: float) -> Range:
    """``low <= value <= high``."""
    return Range(low=low, high=high)


UNIT = between(0, 1)
"""Probabilities and decay rates: ``[0, 1]``."""


@dataclass(frozen=True)
class _Spec:
    """What one annotation allows, read once per config class."""

    kinds: tuple[Any, ...]  # "int", "float", "bool", "str", "callable", "dict", "any" or a class
    choices: tuple[str, ...] = ()
    optional: bool = False


def _spec(hint: Any) -> _Spec:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        parts = [_spec(arg) for arg in typing.get_args(hint) if arg is not type(None)]
        return _Spec(
            kinds=tuple(k for p in parts for k in p.kinds),
            choices=tuple(c for p in parts for c in p.choices),
            optional=type(None) in typing.get_args(hint) or any(p.optional for p in parts),
        )
    if origin is typing.Literal:
        return _Spec(kinds=(), choices=tuple(typing.get_args(hint)))
    if hint is Any:
        return _Spec(kinds=("any",))
    if hint is collections.abc.Callable or origin is collections.abc.Callable:
        return _Spec(kinds=("callable",))
    if hint is dict or origin is dict:
        return _Spec(kinds=("dict",))
    names = {int: "int", float: "float", bool: "bool", str: "str"}
    if hint in names:
        return _Spec(kinds=(names[hint],))
    if isinstance(hint, type):
        return _Spec(kinds=(hint,))
    raise TypeError(f"check_fields cannot check the annotation {hint!r}")  # a library bug


@functools.cache
def _specs(cls: type) -> dict[str, _Spec]:
    hints = typing.get_type_hints(cls)
    return {f.name: _spec(hints[f.name]) for f in dataclasses.fields(cls)}


def _is_kind(value: Any, kind: Any) -> bool:
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "str":
        return isinstance(value, str)
    if kind == "callable":
        return callable(value)
    if kind == "dict":
        return isinstance(value, dict)
    if kind == "any":
        return True
    return isinstance(value, kind)


_WORDS = {"int": "an int", "float": "a number", "bool": "a bool (True or False)",
          "str": "a string", "callable": "a callable", "dict": "a dict", "any": "anything"}


def _expected(spec: _Spec, rule: Range | None, finite: bool = False) -> str:
    parts = []
    for kind in spec.kinds:
        word = _WORDS[kind] if isinstance(kind, str) else f"a {kind.__name__}"
        if kind == "float" and finite:
            word = "a finite number"
        if kind in ("int", "float") and rule is not None and str(rule):
            word = f"{word} {rule}"
        parts.append(word)
    parts += [f'"{choice}"' for choice in spec.choices]
    if spec.optional:
        parts.append("None")
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " or " + parts[-1]


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def field_error(
    owner: str, name: str, value: Any, expected: str, error: type[Exception] = ValueError
) -> Exception:
    """The error for a bad field: ``Owner.name must be <expected>; got name = value (type).``

    Args:
        owner: the config class's name, e.g. ``"GradientConfig"``.
        name: the field.
        value: its bad value.
        expected: what it must be, e.g. ``"a number > 0"``.
        error: ``TypeError`` for a wrong type, ``ValueError`` for a bad value.
    """
    return error(
        f"{owner}.{name} must be {expected}; got {name} = {_show(value)} "
        f"({type(value).__name__})."
    )


def check_fields(config: Any, ranges: Mapping[str, Range] | None = None) -> None:
    """Check every field of a dataclass ``config`` against its annotation and range.

    Call it first in ``__post_init__``; relations between fields come after it.

    Args:
        config: a dataclass instance whose fields are annotated with the types above.
        ranges: allowed ranges of number fields, by field name (None values always pass the
            range; whether None is allowed at all is the annotation's business).

    Raises:
        TypeError: a value of the wrong type.
        ValueError: a value of the right type out of its range or choices, or NaN/infinite.
    """
    ranges = ranges or {}
    owner = type(config).__name__
    for name, spec in _specs(type(config)).items():
        value, rule = getattr(config, name), ranges.get(name)
        if value is None and spec.optional:
            continue
        if spec.choices and isinstance(value, str):
            if value in spec.choices or "str" in spec.kinds:
                continue
            raise field_error(owner, name, value, _expected(spec, rule))
        kinds = [k for k in spec.kinds if _is_kind(value, k)]
        if not kinds:
            raise field_error(owner, name, value, _expected(spec, rule), TypeError)
        if "float" in kinds and isinstance(value, float) and not math.isfinite(value):
            raise field_error(owner, name, value, _expected(spec, rule, finite=True))
        if rule is not None and {"int", "float"} & set(kinds) and value not in rule:
            raise field_error(owner, name, value, _expected(spec, rule))


def check_int(name: str, value: Any, minimum: int, allow_none: bool = False) -> None:
    """An option that must be an int >= ``minimum`` (bools refused), or None if allowed."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= {minimum}; got {value!r}.")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}; got {name} = {value}.")
