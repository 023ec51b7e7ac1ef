"""Options that components declare: each configuration key is a field of a frozen dataclass.

A component (an objective, a discretisation, a time scheme, ...) or a section of the run
(``[data]``, ``[time]``) declares its keys as the fields of an ``Options`` dataclass, each
made by one of the helpers below: its default, what it means, the check its value must pass,
and the version of mfld that introduced it. The configuration's schema, the shipped default
file, the README's reference table and the versions of keys (:data:`mfld.config` 's
``KEY_SINCE``) are all read off these fields, so a new key is written once, where it is used::

    @dataclass(frozen=True, kw_only=True)
    class HuberOptions:
        section: ClassVar[str] = "model"
        delta: float = positive(1.0, "Huber: the residual where the loss turns linear", since="0.3.0")

A field whose value is declared by another component (the step ``time.eta`` that every
discretisation reads) names that key with :func:`ref` and declares nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

FIRST_VERSION = "0.1.0"
"""The version a key declares by default: it was there from the first files on."""


def _anything(value: object) -> bool:
    return True


@dataclass(frozen=True)
class Key:
    """One configuration key: its type, its check, what the check requires, what it means, its default and the
    version of mfld that first wrote it. ``choices`` names the values a choice takes (a registry's are listed with
    their documentation lines, as registered when asked)."""

    type: type | tuple[type, ...]
    check: Callable[[Any], bool] = _anything
    need: str = ""
    doc: str = ""
    default: Any = None
    since: str = FIRST_VERSION
    options: Iterable[str] | None = None
    docs: bool = True

    @property
    def requirement(self) -> str:
        """What a value must be, in words (a choice's names are listed as registered when asked)."""
        if self.need or self.options is None:
            return self.need
        names = ", ".join(repr(o) for o in self.options)
        return f"a list whose items are each one of {names}" if isinstance(self.default, list) else f"one of {names}"

    @property
    def choices(self) -> dict[str, str] | None:
        """``{value: its documentation}`` of a choice (None for other keys)."""
        if self.options is None:
            return None
        doc = getattr(self.options, "doc", None)
        return {n: (doc(n) if self.docs and doc is not None else "") for n in self.options}

    def accepts(self, value: object) -> bool:
        """Whether ``value`` has the key's type (a bool is not a number) and passes its check."""
        types = self.type if isinstance(self.type, tuple) else (self.type,)
        if isinstance(value, bool) and bool not in types:
            return False
        return isinstance(value, types) and bool(self.check(value))


def option(
    default: Any,
    doc: str,
    types: type | tuple[type, ...] | None = None,
    check: Callable[[Any], bool] | None = None,
    requirement: str = "",
    since: str = FIRST_VERSION,
    key: str | None = None,
    options: Iterable[str] | None = None,
    docs: bool = True,
) -> Any:
    """A dataclass field that declares a configuration key (named ``<section>.<field>`` unless ``key`` says)."""
    spec = Key(types or _builtin_type(default), check or _anything, requirement, doc, default, since, options, docs)
    metadata: dict[str, Any] = {"option": spec}
    if key is not None:
        metadata["key"] = key
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def _builtin_type(value: object) -> type:
    """The type a key takes when its declaration names none: its default's (a bool is not an int)."""
    return bool if isinstance(value, bool) else int if isinstance(value, int) else type(value)


def ref(key: str) -> Any:
    """A field whose value is the key ``key``, declared elsewhere (``eta: float = ref("time.eta")``)."""
    return field(metadata={"key": key})


def internal(default: Any = None) -> Any:
    """A field that is no configuration key: what the run assembly fills in (a time scheme's own options)."""
    return field(default=default, metadata={"internal": True})


def choice(default: str, doc: str, options: Iterable[str], docs: bool = True, **kw: Any) -> Any:
    """A key naming one of ``options`` (a registry: its entries, plug-ins included, looked up when checked)."""
    # Membership and names are asked when checking, not here: a registry read while its own package is being
    # imported would import that package's modules before they can import it back; and an entry registered
    # after this declaration is accepted too.
    return option(default, doc, str, lambda v: v in options, options=options, docs=docs, **kw)


def positive_int(default: int, doc: str, **kw: Any) -> Any:
    return option(default, doc, int, lambda v: v >= 1, "an integer >= 1", **kw)


def nonneg_int(default: int, doc: str, **kw: Any) -> Any:
    return option(default, doc, int, lambda v: v >= 0, "an integer >= 0", **kw)


def positive(default: float, doc: str, **kw: Any) -> Any:
    return option(default, doc, (int, float), lambda v: v > 0 and v == v and v != math.inf, "a finite number > 0", **kw)


def nonneg(default: float, doc: str, **kw: Any) -> Any:
    return option(default, doc, (int, float), lambda v: v >= 0 and v != math.inf, "a finite number >= 0", **kw)


def flag(default: bool, doc: str, **kw: Any) -> Any:
    return option(default, doc, bool, **kw)


def text(default: str, doc: str, **kw: Any) -> Any:
    return option(default, doc, str, **kw)


def section_of(options: type) -> str:
    """The section of an options dataclass: its ``section`` class attribute ("" for top-level keys)."""
    return str(getattr(options, "section", ""))


def keys_of(options: type) -> dict[str, str]:
    """``{field name: configuration key}`` of every field of an options dataclass (not the :func:`internal` ones)."""
    prefix = section_of(options)
    return {
        f.name: f.metadata.get("key", f"{prefix}.{f.name}" if prefix else f.name)
        for f in fields(options)
        if not f.metadata.get("internal")
    }


def declared(options: type) -> dict[str, Key]:
    """``{configuration key: Key}`` of the keys an options dataclass declares (not those it only refers to)."""
    names = keys_of(options)
    return {names[f.name]: f.metadata["option"] for f in fields(options) if "option" in f.metadata}


def from_values(options: type, values: Mapping[str, Any]) -> Any:
    """An instance of ``options`` with each field read from ``values`` (flat, by configuration key); a key that is
    not there takes the field's default."""
    kwargs = {}
    keys = keys_of(options)
    for f in fields(options):
        if f.name not in keys:
            continue
        key = keys[f.name]
        if key in values:
            kwargs[f.name] = values[key]
        elif f.default is MISSING and f.default_factory is MISSING:
            raise KeyError(f"{options.__name__}.{f.name}: the configuration has no key {key!r}")
    return options(**kwargs)
