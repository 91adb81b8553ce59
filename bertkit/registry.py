"""One tiny registry type, loud on duplicates and unknown names (timm's ``register_model`` idea)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from bertkit.errors import RegistryError

T = TypeVar("T")


class Registry(Generic[T]):
    """A name → object mapping with metadata.

    Args:
        kind: What the registry holds ("head", "pooling", ...), used in error messages.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._meta: dict[str, dict[str, Any]] = {}

    def register(self, name: str, **meta: Any) -> Callable[[T], T]:
        """Decorator registering an object under ``name``; a duplicate name raises RegistryError."""

        def decorator(obj: T) -> T:
            self.add(name, obj, **meta)
            return obj

        return decorator

    def add(self, name: str, obj: T, **meta: Any) -> None:
        """Register ``obj`` under ``name`` (raises on duplicates)."""
        key = name.lower()
        if key in self._items:
            raise RegistryError(
                f"{self.kind} '{name}' is already registered (by {self._items[key]!r}); choose another name"
            )
        self._items[key] = obj
        self._meta[key] = dict(meta)

    def unregister(self, name: str) -> None:
        """Remove a registration (for tests and plugins that replace an entry on purpose)."""
        key = self._key(name)
        del self._items[key]
        del self._meta[key]

    def _key(self, name: str) -> str:
        key = str(getattr(name, "value", name)).lower()
        if key not in self._items:
            valid = ", ".join(sorted(self._items)) or "(none registered)"
            raise RegistryError(f"unknown {self.kind} '{name}'; valid names: {valid}")
        return key

    def get(self, name: str) -> T:
        """Return the object registered as ``name``; unknown names raise listing the valid ones."""
        return self._items[self._key(name)]

    def meta(self, name: str) -> dict[str, Any]:
        """Return the metadata given at registration."""
        return self._meta[self._key(name)]

    def names(self) -> list[str]:
        """Sorted registered names."""
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return str(getattr(name, "value", name)).lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
