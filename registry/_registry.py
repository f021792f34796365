"""One small name → factory registry, shared by plugins, evaluators, attack methods, datasets and backbones."""
from __future__ import annotations

import difflib
import warnings
from importlib import metadata
from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """Raised for a name that is not registered; its message lists close matches."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class Registry(Generic[T]):
    """Maps names to factories.

    * ``@registry.register("Name")`` registers a class or function; registering a name
      twice warns and keeps the newer entry (so a user can replace a built-in).
    * ``registry.create(name, **kwargs)`` calls the factory.
    * Third-party entries are discovered once, lazily, from the Python entry-point
      group ``entry_point_group`` (a module imported for its decorators, or an object
      registered under the entry point's name).
    """

    def __init__(self, kind: str, entry_point_group: str | None = None) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._entries: dict[str, T] = {}
        self._discovered = entry_point_group is None

    def register(self, name: str | None = None) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            key = name or getattr(obj, "__name__")
            if key in self._entries and self._entries[key] is not obj:
                warnings.warn(f"{self.kind} {key!r} is already registered; overwriting it",
                              RuntimeWarning, stacklevel=2)
            self._entries[key] = obj
            return obj
        return decorator

    def add(self, name: str, obj: T) -> T:
        return self.register(name)(obj)

    def remove(self, name: str) -> None:
        self._entries.pop(name, None)

    def _discover(self) -> None:
        if self._discovered:
            return
        self._discovered = True
        for ep in metadata.entry_points(group=self.entry_point_group):
            try:
                loaded = ep.load()
            except Exception as exc:  # a broken third-party package must not break us
                warnings.warn(f"could not load {self.kind} entry point {ep.name!r}: {exc}",
                              RuntimeWarning, stacklevel=2)
                continue
            if isinstance(loaded, type(metadata)) or not callable(loaded):
                continue  # a module imported for its decorators
            if ep.name in self._entries and self._entries[ep.name] is not loaded:
                warnings.warn(f"{self.kind} entry point {ep.name!r} ({ep.value}) has the name of an "
                              f"already registered {self.kind}; keeping the registered one",
                              RuntimeWarning, stacklevel=2)
                continue
            self._entries[ep.name] = loaded

    def names(self) -> list[str]:
        self._discover()
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        self._discover()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def get(self, name: str) -> T:
        self._discover()
        try:
            return self._entries[name]
        except KeyError:
            close = difflib.get_close_matches(name, self._entries, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}{hint} (known: {', '.join(self._entries)})") from None

    def create(self, name: str, *args, **kwargs):
        return self.get(name)(*args, **kwargs)  # type: ignore[operator]
