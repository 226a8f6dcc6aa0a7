"""A named registry with one lookup that suggests the closest name when a user mistypes one."""
from __future__ import annotations

import difflib
import fnmatch
from typing import Callable, Generic, TypeVar

from .errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to factories; `get` fails with a did-you-mean message instead of a KeyError."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(item: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._items[name] = item
            return item
        return decorator

    def get(self, name: str) -> T:
        if name in self._items:
            return self._items[name]
        close = difflib.get_close_matches(name, list(self._items), n=3)
        hint = f"did you mean {', '.join(repr(c) for c in close)}?" if close else \
            f"choose one of: {', '.join(self.names())}"
        raise ConfigError(f"unknown {self.kind} '{name}'", expected=f"one of {', '.join(self.names())}",
                          found=repr(name), fix=hint)

    def names(self, pattern: str = "*") -> list[str]:
        return sorted(n for n in self._items if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: str) -> bool:
        return name in self._items
