"""A small typed registry: ``register``, ``names()``, ``get(name)`` and ``create(name, **kw)``.

One registry per kind of component (architectures, data sets, attacks, ...). Unknown names raise
:class:`~robustlens.errors.UnknownNameError` with the closest registered name, and ``create`` refuses
keyword arguments the factory does not take instead of passing them on silently.

Example:
    >>> reg: Registry[type] = Registry("widget")
    >>> @reg.register("round-widget")
    ... class Round:
    ...     def __init__(self, radius: float = 1.0) -> None:
    ...         self.radius = radius
    >>> reg.names()
    ['round-widget']
    >>> reg.create("round-widget", radius=2.0).radius
    2.0
    >>> reg.get("rund-widget")
    Traceback (most recent call last):
    ...
    robustlens.errors.UnknownNameError: unknown widget 'rund-widget'; did you mean 'round-widget'? ...
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from robustlens.errors import ParameterError, UnknownNameError

T = TypeVar("T")

__all__ = ["Registry", "closest"]


def closest(name: str, choices: list[str]) -> str | None:
    """The registered name nearest to ``name`` (case-insensitive), or ``None`` if none is close."""
    lowered = {c.lower(): c for c in choices}
    if name.lower() in lowered:
        return lowered[name.lower()]
    match = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.5)
    return lowered[match[0]] if match else None


class Registry(Generic[T]):
    """Maps names to factories (classes or functions) of one kind of component."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers its target under ``name`` (lower-case, unique)."""
        if name != name.lower() or not name:
            raise ParameterError(f"{self.kind} names must be non-empty lower-case, got {name!r}")

        def add(obj: T) -> T:
            if name in self._items:
                raise ParameterError(f"{self.kind} {name!r} is already registered")
            self._items[name] = obj
            return obj

        return add

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def get(self, name: str) -> T:
        """The factory registered under ``name``; a typo gets a suggestion."""
        if not isinstance(name, str):
            raise UnknownNameError(f"{self.kind} names are strings, got {type(name).__name__}")
        key = name.lower()
        if key in self._items:
            return self._items[key]
        guess = closest(key, self.names())
        hint = f"; did you mean {guess!r}?" if guess else ""
        raise UnknownNameError(
            f"unknown {self.kind} {name!r}{hint} Registered: {', '.join(self.names())}"
        )

    def create(self, name: str, /, **kwargs: Any) -> Any:
        """Call the factory registered under ``name`` with ``kwargs``, refusing unknown keywords."""
        factory = self.get(name)
        if not callable(factory):
            raise ParameterError(f"{self.kind} {name!r} is not callable")
        params = inspect.signature(factory).parameters
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        if not takes_any:
            unknown = sorted(set(kwargs) - set(params))
            if unknown:
                raise ParameterError(
                    f"{self.kind} {name!r} takes no argument {', '.join(map(repr, unknown))}; "
                    f"it takes {', '.join(p for p in params if p != 'self') or 'none'}"
                )
        return factory(**kwargs)
