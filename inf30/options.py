"""Options dataclasses as the one source of truth: each field holds its default and its help text, which
the CLI (``cli.opt``) reads to declare the command's option. ``option(default, "help")`` declares a
field; :func:`default_of` and :func:`help_of` read one back."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any


def option(default: Any = dataclasses.MISSING, help: str = "", *,  # noqa: A002 - the CLI's word
           factory: Callable[[], Any] | None = None) -> Any:
    """A dataclass field with ``default`` (or ``factory`` for a mutable or computed one) and its help."""
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata={"help": help})
    return dataclasses.field(default=default, metadata={"help": help})


def field_of(cls: type, name: str) -> dataclasses.Field:
    """The dataclass field ``name`` of ``cls`` (KeyError naming the class when there is none)."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f
    raise KeyError(f"{cls.__name__} has no field {name!r}")


def default_of(cls: type, name: str) -> Any:
    """The default value of field ``name`` of ``cls`` (a factory's is called)."""
    f = field_of(cls, name)
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def help_of(cls: type, name: str) -> str:
    """The help text of field ``name`` of ``cls`` (empty when none was given)."""
    return field_of(cls, name).metadata.get("help", "")
