"""The kopf handlers: they translate events into keys on the work queue, nothing more.

Namespaces and generated objects are followed with index and event handlers,
which persist nothing on the objects; only the SecurityBaseline carries kopf's
finalizer and bookkeeping (in annotations under security.baseline.dev).
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from baseline_operator.api.resource import GROUP, PLURAL, VERSION
from baseline_operator.controller import settings as operator_settings
from baseline_operator.controller.cache import (
    BASELINE_INDEX,
    NAMESPACE_INDEX,
    POD_INDEX,
    index_baseline,
    index_namespace,
    index_object,
    index_own_object,
    index_pod,
    object_index_name,
)
from baseline_operator.controller.runtime import Runtime
from baseline_operator.policy.objects import CLUSTER_KINDS, NAMESPACED_KINDS, POLICY_REPORT

# How long kopf waits before calling the finalizer again while cleanup is still under way.
CLEANUP_RETRY_DELAY = 5.0


def runtime_of(memo: Any) -> Runtime:
    runtime: Runtime = memo.runtime
    return runtime


def on_baseline_event(event: kopf.RawEvent, body: kopf.Body, memo: Any, **_: Any) -> None:
    runtime_of(memo).on_baseline(event.get("type"), body)


def on_namespace_event(event: kopf.RawEvent, body: kopf.Body, memo: Any, **_: Any) -> None:
    runtime_of(memo).on_namespace(event.get("type"), body)


def on_object_event(event: kopf.RawEvent, body: kopf.Body, memo: Any, **_: Any) -> None:
    runtime_of(memo).on_object(event.get("type"), body)


def on_workload_event(event: kopf.RawEvent, body: kopf.Body, memo: Any, **_: Any) -> None:
    """A pod, or the operator's PolicyReport, changed: look at that namespace's workloads."""
    runtime_of(memo).on_workload(body)


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


def build_registry(workload_audit: bool = True) -> kopf.OperatorRegistry:
    """A registry with every handler of the operator (a fresh one per operator run).

    Without `workload_audit`, pods are not watched at all (a large cluster may prefer that;
    baselines with workloadAudit.enabled then report nothing).
    """
    registry = kopf.OperatorRegistry()

    kopf.on.startup(registry=registry)(operator_settings.configure)
    kopf.on.cleanup(registry=registry)(operator_settings.shut_down)

    kopf.index(group=GROUP, version=VERSION, plural=PLURAL, id=BASELINE_INDEX, registry=registry)(
        _index_baseline
    )
    kopf.index(group="", version="v1", plural="namespaces", id=NAMESPACE_INDEX, registry=registry)(
        _index_namespace
    )
    for kind in (*NAMESPACED_KINDS, *CLUSTER_KINDS):
        kopf.index(
            group=kind.group,
            version=kind.version,
            plural=kind.plural,
            id=object_index_name(kind),
            registry=registry,
        )(_index_object)
        kopf.on.event(
            group=kind.group,
            version=kind.version,
            plural=kind.plural,
            id=f"{kind.plural}_event",
            registry=registry,
        )(on_object_event)

    kopf.on.event(
        group=GROUP, version=VERSION, plural=PLURAL, id="baseline_event", registry=registry
    )(on_baseline_event)
    kopf.on.event(
        group="", version="v1", plural="namespaces", id="namespace_event", registry=registry
    )(on_namespace_event)
    if workload_audit:
        kopf.index(group="", version="v1", plural="pods", id=POD_INDEX, registry=registry)(
            _index_pod
        )
        kopf.on.event(group="", version="v1", plural="pods", id="pod_event", registry=registry)(
            on_workload_event
        )
        group, version, plural = POLICY_REPORT.group, POLICY_REPORT.version, POLICY_REPORT.plural
        kopf.index(
            group=group,
            version=version,
            plural=plural,
            id=object_index_name(POLICY_REPORT),
            registry=registry,
        )(_index_own_object)
        kopf.on.event(
            group=group, version=version, plural=plural, id="policyreport_event", registry=registry
        )(on_workload_event)
    kopf.on.delete(group=GROUP, version=VERSION, plural=PLURAL, id="cleanup", registry=registry)(
        finalize_baseline
    )
    return registry


# kopf passes many keyword arguments; the index functions want only the body.
def _index_baseline(body: Any, **_: Any) -> Any:
    return index_baseline(body)


def _index_namespace(body: Any, **_: Any) -> Any:
    return index_namespace(body)


def _index_object(body: Any, **_: Any) -> Any:
    return index_object(body)


def _index_own_object(body: Any, **_: Any) -> Any:
    return index_own_object(body)


def _index_pod(body: Any, **_: Any) -> Any:
    return index_pod(body)
