"""Registries: one table from a configuration name to an implementation.

Every "kind" that a configuration chooses (objective, feature map,
discretisation, time scheme, observable) is one :class:`Registry`; the
configuration's allowed values, the README's tables and the conformance tests
read the table, so adding an implementation is its own file plus one line here
or in the registry next to it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered implementation with the line that documents it."""

    name: str
    value: T
    doc: str


class Registry(Mapping[str, T]):
    """Name -> implementation for the configuration key ``key`` (e.g. ``"model.objective"``)."""

    def __init__(self, key: str, entries: list[Entry[T]] | None = None) -> None:
        self.key = key
        self._entries: dict[str, Entry[T]] = {}
        for e in entries or []:
            self.add(e.name, e.value, e.doc)

    def add(self, name: str, value: T, doc: str) -> T:
        """Register ``value`` under ``name``; a second registration of a name is refused."""
        if name in self._entries:
            raise ValueError(f"{self.key}: {name!r} is registered already")
        self._entries[name] = Entry(name, value, doc)
        return value

    def __getitem__(self, name: str) -> T:
        try:
            return self._entries[name].value
        except KeyError:
            raise ValueError(f"{self.key} must be one of {sorted(self._entries)}, got {name!r}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"<{self.key} registry: {', '.join(self._entries)}>"

    def doc(self, name: str) -> str:
        """The documentation line of ``name``."""
        return self._entries[name].doc
