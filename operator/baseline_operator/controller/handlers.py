"""The kopf handlers: kopf handles the operator's own resource, the SecurityBaseline.

kopf keeps the baseline's finalizer and calls `finalize_baseline` when one is
deleted; everything else the operator follows (namespaces, generated objects,
pods, baselines' specs) comes from its own informers (controller/informer.py),
which persist nothing on any object.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from baseline_operator.api.resource import GROUP, PLURAL, VERSION
from baseline_operator.controller import settings as operator_settings
from baseline_operator.controller.runtime import Runtime

# How long kopf waits before calling the finalizer again while cleanup is still under way.
CLEANUP_RETRY_DELAY = 5.0


def runtime_of(memo: Any) -> Runtime:
    runtime: Runtime = memo.runtime
    return runtime


async def finalize_baseline(
    name: str, memo: Any, logger: logging.Logger | logging.LoggerAdapter[Any], **_: Any
) -> None:
    remains = await runtime_of(memo).finalize(name)
    if remains:
        shown = ", ".join(remains[:5]) + (
            f" (+{len(remains) - 5} more)" if len(remains) > 5 else ""
        )
        raise kopf.TemporaryError(f"cleanup still under way: {shown}", delay=CLEANUP_RETRY_DELAY)
    logger.info("everything the baseline made is cleaned up")


def build_registry() -> kopf.OperatorRegistry:
    """A registry with every handler of the operator (a fresh one per operator run)."""
    registry = kopf.OperatorRegistry()
    kopf.on.startup(registry=registry)(operator_settings.configure)
    kopf.on.cleanup(registry=registry)(operator_settings.shut_down)
    kopf.on.delete(group=GROUP, version=VERSION, plural=PLURAL, id="cleanup", registry=registry)(
        finalize_baseline
    )
    return registry
