"""The keys of the work queue: what one unit of work is about."""

from __future__ import annotations

WorkKey = tuple[str, str]

# How long a status waits for more namespaces to finish before it is written.
STATUS_DEBOUNCE = 1.0


def namespace_key(name: str) -> WorkKey:
    return ("namespace", name)


def cluster_key(baseline: str) -> WorkKey:
    return ("cluster", baseline)


def status_key(baseline: str) -> WorkKey:
    return ("status", baseline)


def workloads_key(namespace: str) -> WorkKey:
    return ("workloads", namespace)


def exception_key(name: str) -> WorkKey:
    """A BaselineException's status and Events."""
    return ("exception", name)
