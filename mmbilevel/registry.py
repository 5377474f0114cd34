"""Case-insensitive registries for names given on the command line."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Map case-insensitive names to objects or factories.

    Every name that the command line accepts (activations, variants, data
    sets, models) is looked up through one of these, so an unknown name
    always raises the same ``ValueError`` listing the valid ones.

    Args:
        kind: what the registry holds, used in error messages
            (for example ``"Legendre function"``).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T | None = None) -> Callable[[T], T] | T:
        """Register ``entry`` under ``name``; without ``entry``, act as a decorator."""
        if entry is None:

            def decorator(obj: T) -> T:
                self._add(name, obj)
                return obj

            return decorator
        self._add(name, entry)
        return entry

    def _add(self, name: str, entry: T) -> None:
        key = name.lower()
        if key in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[key] = entry

    def get(self, name: str) -> T:
        """Return the entry for ``name``, ignoring case.

        Raises:
            ValueError: ``name`` is not registered; the message lists the valid names.
        """
        if not isinstance(name, str):
            raise TypeError(f"{self.kind} name must be a string, got {type(name).__name__}")
        try:
            return self._entries[name.lower()]
        except KeyError:
            valid = ", ".join(self.names())
            raise ValueError(f"unknown {self.kind} {name!r}; valid names are: {valid}") from None

    def names(self) -> list[str]:
        """Return the registered names in sorted order."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
