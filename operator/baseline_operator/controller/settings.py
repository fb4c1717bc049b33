"""Every kopf setting of the operator, in one startup handler (and its cleanup twin)."""

from __future__ import annotations

import logging
from typing import Any

import kopf

from baseline_operator.controller.runtime import Runtime

PREFIX = "security.baseline.dev"
FINALIZER = f"{PREFIX}/finalizer"


async def configure(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
    options = memo.options
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
    # kopf watches only SecurityBaselines; a silent stream is restarted after a while.
    settings.watching.server_timeout = options.watch_timeout
    settings.watching.client_timeout = options.watch_timeout + 30
    settings.watching.connect_timeout = 30
    settings.watching.reconnect_backoff = 1.0
    settings.networking.request_timeout = 60
    settings.networking.connect_timeout = 30
    # Errors in kopf's own processing back off instead of spinning.
    settings.queueing.error_delays = (1, 2, 5, 10, 30, 60, 120)
    # One replica acts; leadership is a Lease of the operator's own (kopf peering off).
    settings.peering.standalone = True
    settings.execution.max_workers = 2

    memo.runtime = Runtime(kube=memo.kube, options=options, metrics=getattr(memo, "metrics", None))
    memo.runtime.start()


async def shut_down(memo: Any, **_: Any) -> None:
    runtime: Runtime | None = getattr(memo, "runtime", None)
    if runtime is not None:
        await runtime.stop()
