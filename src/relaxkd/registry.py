"""Small named registries (datasets, models, losses, aggregators) with helpful errors."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from relaxkd.errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects; ``@registry.register("name")`` adds one.

    An unknown name raises :class:`UserError` naming the bad key and listing the valid ones.
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise UserError(
                f"unknown {self.kind} {name!r}; valid {self.kind}s: {', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
