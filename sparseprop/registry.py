"""A small name -> callable registry with errors that list the valid names."""

from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from sparseprop.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps the short names used in configs (``init=orthogonal``) to implementations."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers ``obj`` under ``name``."""

        def add(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._items[name] = obj
            return obj

        return add

    def get(self, name: str, key: str | None = None) -> T:
        """The implementation called ``name``; a ConfigError naming the valid names otherwise."""
        try:
            return self._items[name]
        except KeyError:
            raise ConfigError(key or self.kind, name, f"choose one of {', '.join(self.names())}") from None

    def names(self) -> list[str]:
        """All registered names, sorted."""
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
