"""Every kopf setting of the operator, in one startup handler (and its cleanup twin)."""

from __future__ import annotations

import logging
from typing import Any

import kopf

from baseline_operator.controller.cache import (
    BASELINE_INDEX,
    NAMESPACE_INDEX,
    POD_INDEX,
    object_index_name,
)
from baseline_operator.controller.runtime import Runtime
from baseline_operator.policy.objects import CLUSTER_KINDS, NAMESPACED_KINDS, POLICY_REPORT

PREFIX = "security.baseline.dev"
FINALIZER = f"{PREFIX}/finalizer"
INDEX_NAMES = (
    BASELINE_INDEX,
    NAMESPACE_INDEX,
    POD_INDEX,
    *(object_index_name(kind) for kind in (*NAMESPACED_KINDS, *CLUSTER_KINDS, POLICY_REPORT)),
)


async def configure(settings: kopf.OperatorSettings, memo: Any, **kwargs: Any) -> None:
    # kopf's own finalizer and bookkeeping live on the SecurityBaseline, under our prefix.
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=PREFIX, key="last-handled-configuration"
    )
    # kopf posts Events for its own handler failures on the baseline; the operator posts
    # the rest itself.
    settings.posting.enabled = True
    settings.posting.level = logging.WARNING
    # Watches: reconnect quickly and steadily; a silent stream is restarted after 70s.
    settings.watching.server_timeout = memo.watch_timeout
    settings.watching.client_timeout = memo.watch_timeout + 30
    settings.watching.connect_timeout = 30
    settings.watching.reconnect_backoff = 1.0
    settings.networking.request_timeout = 60
    settings.networking.connect_timeout = 30
    # Errors in kopf's own processing back off instead of spinning.
    settings.queueing.error_delays = (1, 2, 5, 10, 30, 60, 120)
    # One replica acts; leadership is a Lease of the operator's own (kopf peering off).
    settings.peering.standalone = True
    settings.execution.max_workers = 4

    indexes = {name: kwargs[name] for name in INDEX_NAMES if name in kwargs}
    # Tamper protection exempts the operator's ServiceAccount by name (its own writes are
    # also recognised by their field manager and uid preconditions, whoever it runs as).
    username = memo.username or memo.options.username
    memo.runtime = Runtime(
        kube=memo.kube, indexes=indexes, options=memo.options, operator_username=username
    )
    memo.runtime.start()


async def shut_down(memo: Any, **_: Any) -> None:
    runtime: Runtime | None = getattr(memo, "runtime", None)
    if runtime is not None:
        await runtime.stop()
