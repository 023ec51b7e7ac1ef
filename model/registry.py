"""Registries: one table from a configuration name to an implementation.

Every "kind" that a configuration chooses (objective, feature map, discretisation, time
scheme, linear solver, observable) is one :class:`Registry`. The configuration's allowed
values, the README's tables and the conformance tests read the table. An implementation
enters it three ways, none of which needs an import line elsewhere:

- **built in**: a module of mfld's own package decorates it,
  ``@GRID_SCHEMES.register("bdf2", doc="order 2")``; the registry imports every module of
  its ``builtins`` package the first time it is read, so a new file is found by being there;
- **a plug-in**: an installed package names it under the registry's entry-point group
  (``[project.entry-points."mfld.grid_schemes"] bdf3 = "pkg.module:BDF3"``); it is loaded
  the first time its name is asked for (an installed package is code the user chose to
  install; names read from a file choose only among installed ones);
- **for a while** (tests, notebooks): ``with GRID_SCHEMES.registered("bdf3", BDF3): ...``.

An entry may carry an ``options`` dataclass whose fields are its configuration keys
(:mod:`mfld.model.options`); the configuration's schema is composed from them.
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
import pkgutil
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")
V = TypeVar("V")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered implementation, the line that documents it, and the dataclass of its options (or None)."""

    name: str
    value: T
    doc: str
    options: type | None = None
    origin: str = ""
    order: int = 0


class PluginWarning(UserWarning):
    """An installed plug-in could not be loaded and is skipped."""


_ORDER = itertools.count()
PLUGIN = "plug-in "  # the origin of an entry loaded from an entry point: this, then the entry point's value


def generation() -> int:
    """A number that changes whenever any registry gains or loses an entry (what is composed from them, the
    configuration's schema, is cached by it)."""
    return _GENERATION[0]


_GENERATION = [0]


class Registry(Mapping[str, T]):
    """Name -> implementation for the configuration key ``key`` (e.g. ``"model.objective"``).

    ``group`` is the entry-point group through which installed packages add entries (``"mfld.objectives"``);
    ``builtins`` the package whose modules register the built-in entries (imported when the registry is first
    read); ``adopt(name, obj)`` turns what a plug-in's entry point loads into an entry (and may refuse it).
    """

    def __init__(
        self,
        key: str,
        entries: list[Entry[T]] | None = None,
        *,
        group: str | None = None,
        builtins: str | None = None,
        adopt: Callable[[str, Any], T] | None = None,
    ) -> None:
        self.key = key
        self.group = group
        self._builtins = builtins
        self._adopt = adopt
        self._entries: dict[str, Entry[T]] = {}
        self._loaded = builtins is None
        self._offered: tuple[tuple[str, ...], list[Any]] | None = None  # (sys.path, entry points) last read
        self._broken: set[str] = set()  # plug-ins that failed to load, warned of once
        for e in entries or []:
            self.add(e.name, e.value, e.doc, e.options, e.origin)

    # -- registering ------------------------------------------------------------------------------------------
    def add(self, name: str, value: T, doc: str = "", options: type | None = None, origin: str | None = None) -> T:
        """Register ``value`` under ``name`` (with ``options``, or else its ``Options`` attribute, if a dataclass
        type); a second registration of a name is refused. ``origin`` is the registering module (the caller's)."""
        if name in self._entries:
            raise ValueError(f"{self.key}: {name!r} is registered already")
        if options is None and isinstance(getattr(value, "Options", None), type):
            options = value.Options  # type: ignore[attr-defined]
        origin = sys._getframe(1).f_globals.get("__name__", "") if origin is None else origin
        self._entries[name] = Entry(name, value, doc, options, origin, next(_ORDER))
        _GENERATION[0] += 1
        return value

    def register(self, name: str, *, doc: str = "", options: type | None = None) -> Callable[[V], V]:
        """A decorator registering what it decorates: ``@OBJECTIVES.register("classical", doc="...")``."""

        origin = sys._getframe(1).f_globals.get("__name__", "")

        def decorate(value: V) -> V:
            self.add(name, value, doc, options, origin)  # type: ignore[arg-type]
            return value

        return decorate

    @contextlib.contextmanager
    def registered(self, name: str, value: T, doc: str = "", options: type | None = None) -> Iterator[T]:
        """Register ``value`` as ``name`` inside the ``with`` block only (a name already there is shadowed, then
        restored): how tests and notebooks add a component for a while."""
        self._load_builtins()
        before = self._entries.pop(name, None)
        self._entries[name] = Entry(name, value, doc, options, "", next(_ORDER))
        _GENERATION[0] += 1
        try:
            yield value
        finally:
            del self._entries[name]
            if before is not None:
                self._entries[name] = before
            _GENERATION[0] += 1

    # -- discovery --------------------------------------------------------------------------------------------
    def _load_builtins(self) -> None:
        """Import every module of the ``builtins`` package once: their decorators register the built-ins."""
        if self._loaded:
            return
        self._loaded = True  # before importing: a module that reads the registry while loading sees what is there
        package = importlib.import_module(str(self._builtins))
        for info in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
            importlib.import_module(info.name)

    def _entry_points(self) -> list[Any]:
        """The group's entry points, read again only when the import path changes."""
        if self.group is None:
            return []
        path = tuple(sys.path)
        if self._offered is None or self._offered[0] != path:
            from importlib.metadata import entry_points

            self._offered = (path, list(entry_points(group=self.group)))
        return self._offered[1]

    def plugins(self) -> list[str]:
        """Names that installed packages offer under the entry-point group (loaded or not)."""
        return sorted({ep.name for ep in self._entry_points()})

    def _discover(self, name: str) -> bool:
        """Load ``name`` from an installed package's entry point, if one offers it."""
        found = [ep for ep in self._entry_points() if ep.name == name]
        if not found:
            return False
        try:
            obj = found[0].load()
        except Exception as e:  # a broken plug-in is reported by its name, not as a traceback of foreign code
            raise ValueError(
                f"{self.key}: the plug-in {name!r} ({found[0].value}) cannot be loaded: {type(e).__name__}: {e}"
            ) from None
        value = self._adopt(name, obj) if self._adopt is not None else obj
        self.add(
            name, value, (getattr(obj, "__doc__", None) or "").strip().split("\n")[0], origin=PLUGIN + found[0].value
        )
        return True

    def forget_plugins(self) -> None:
        """Drop the entries loaded from plug-ins (they are loaded again when asked for): for tests that install
        and remove a package."""
        for name in [n for n, e in self._entries.items() if e.origin.startswith(PLUGIN)]:
            del self._entries[name]
        self._offered = None
        self._broken.clear()
        _GENERATION[0] += 1

    def load_plugins(self) -> None:
        """Load every entry that installed packages offer. One that fails to load is skipped with a warning (once per
        process): a broken package must not stop runs that do not name it; naming it raises its error."""
        for name in self.plugins():
            if name not in self._entries and name not in self._broken:
                try:
                    self._discover(name)
                except ValueError as e:
                    self._broken.add(name)
                    warnings.warn(f"{e}; it is skipped", PluginWarning, stacklevel=2)

    # -- reading ----------------------------------------------------------------------------------------------
    def entry(self, name: str) -> Entry[T]:
        """The entry ``name``: built in, registered, or loaded now from an installed plug-in."""
        self._load_builtins()
        if name not in self._entries and not self._discover(name):
            installed = self.plugins()
            plugins = f"; installed plug-ins: {', '.join(installed)}" if installed else ""
            raise ValueError(f"{self.key} must be one of {sorted(self._entries)}, got {name!r}{plugins}")
        return self._entries[name]

    def __getitem__(self, name: str) -> T:
        return self.entry(name).value

    def __contains__(self, name: object) -> bool:
        self._load_builtins()
        return isinstance(name, str) and (name in self._entries or self._discover(name))

    def __iter__(self) -> Iterator[str]:
        """The names in a fixed order, whatever order the modules were imported in: the built-ins by module (in
        name order) and by registration within one, then the rest (plug-ins, scoped ones) as they came."""
        self._load_builtins()
        package = f"{self._builtins}." if self._builtins else None

        def rank(e: Entry[T]) -> tuple[int, str, int]:
            builtin = package is not None and e.origin.startswith(package)
            return (0, e.origin, e.order) if builtin else (1, "", e.order)

        return iter([e.name for e in sorted(self._entries.values(), key=rank)])

    def __len__(self) -> int:
        self._load_builtins()
        return len(self._entries)

    def __repr__(self) -> str:
        return f"<{self.key} registry: {', '.join(self)}>"

    def doc(self, name: str) -> str:
        """The documentation line of ``name``."""
        return self.entry(name).doc

    def options(self, name: str) -> type | None:
        """The options dataclass of ``name`` (None: it has no keys of its own)."""
        return self.entry(name).options
