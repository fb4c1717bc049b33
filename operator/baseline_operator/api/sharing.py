"""Equal values held once, for the tens of thousands of entries the caches keep.

Every watch event is parsed into fresh objects: the same namespace name, the same
label set, the same essence digest arrive again and again, each a new copy. Across
5,000 namespaces the objects of one baseline differ only in their namespace, uid
and resourceVersion; everything else can be one shared value. Strings go through
`sys.intern` (an interned string is freed with its last reference); other values
go through a `SharedValues` table, bounded so that a long life of changing specs
cannot grow it for ever.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Hashable, Iterable, Mapping
from types import MappingProxyType
from typing import Generic, TypeVar

V = TypeVar("V")

# A table is emptied when it reaches this many values: what entries already share stays
# shared; only later arrivals start a new table. Far above the distinct label sets, digests
# and field sets of any real set of baselines.
SHARED_LIMIT = 20_000

EMPTY_MAPPING: Mapping[str, str] = MappingProxyType({})
EMPTY_KEYS: frozenset[str] = frozenset()


def shared_str(value: str) -> str:
    """The one copy of an equal string (namespace and object names, label keys, digests)."""
    return sys.intern(value)


class SharedValues(Generic[V]):
    """One instance per distinct value, looked up by a hashable key."""

    def __init__(self, limit: int = SHARED_LIMIT) -> None:
        self._values: dict[Hashable, V] = {}
        self._limit = limit

    def get(self, key: Hashable, make: Callable[[], V]) -> V:
        found = self._values.get(key)
        if found is not None:
            return found
        if len(self._values) >= self._limit:
            self._values.clear()
        value = self._values[key] = make()
        return value

    def __len__(self) -> int:
        return len(self._values)


_label_sets: SharedValues[Mapping[str, str]] = SharedValues()
_label_items: SharedValues[tuple[tuple[str, str], ...]] = SharedValues()
_key_sets: SharedValues[frozenset[str]] = SharedValues()


def shared_labels(labels: Mapping[str, str]) -> Mapping[str, str]:
    """A read-only label set, one instance per distinct set (the labels of generated objects
    repeat in every namespace)."""
    if not labels:
        return EMPTY_MAPPING
    items = tuple(sorted((shared_str(str(k)), shared_str(str(v))) for k, v in labels.items()))
    return _label_sets.get(items, lambda: MappingProxyType(dict(items)))


def shared_label_items(labels: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """A label set as sorted (key, value) pairs, one instance per distinct set (the labels
    the operator sets repeat in every namespace a baseline selects)."""
    items = tuple(sorted((shared_str(str(k)), shared_str(str(v))) for k, v in labels.items()))
    return _label_items.get(items, lambda: items)


def interned_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """A label set of its own (a namespace's is nearly always unique), with every key and
    value shared: keys repeat everywhere, and the value of `kubernetes.io/metadata.name`
    is the namespace's name, held once."""
    return {shared_str(str(k)): shared_str(str(v)) for k, v in labels.items()}


def shared_keys(keys: Iterable[str]) -> frozenset[str]:
    """A set of field or label keys, one instance per distinct set."""
    frozen = frozenset(shared_str(key) for key in keys)
    if not frozen:
        return EMPTY_KEYS
    return _key_sets.get(frozen, lambda: frozen)


def shared_digests(digests: Mapping[str, str]) -> Mapping[str, str]:
    """A read-only mapping of field names to digests, one instance per distinct mapping."""
    return shared_labels(digests)
