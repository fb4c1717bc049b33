"""Prometheus metrics of the operator, served on their own port.

Counters and histograms are fed where things happen (every API request through
`KubeApi.on_request`, every unit of work through the queue's observer); everything
that is a state (queue depth, namespaces per baseline and state, informer restarts,
leadership, workload findings) is read from the running operator when Prometheus
scrapes, so nothing is kept twice. Label values are bounded: verbs, status codes,
resource kinds the operator knows, baseline names and check ids; never a namespace or
a pod name.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp.web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from baseline_operator.api.kinds import ALL_KINDS, LEASE, POD, POLICY_REPORT, SECURITY_BASELINE

PREFIX = "baseline_operator"
WRITE_VERBS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_KNOWN_PLURALS = frozenset(
    kind.plural for kind in (*ALL_KINDS, LEASE, POD, POLICY_REPORT, SECURITY_BASELINE)
) | {"events", "baselineexceptions", "selfsubjectreviews", "customresourcedefinitions"}
# /api/v1/namespaces/NS/PLURAL[/NAME[/SUB]] or /apis/G/V/[namespaces/NS/]PLURAL[/NAME[/SUB]]
_PATH = re.compile(
    r"^/apis?/(?:[^/]+/)?v[^/]+/(?:namespaces/[^/]+/(?P<nsplural>[^/]+)|(?P<plural>[^/]+))"
)


def resource_of(path: str) -> str:
    """The resource (plural) a request path addresses, or "other" (bounded values)."""
    match = _PATH.match(path)
    if match is None:
        return "other"
    plural = match.group("nsplural") or match.group("plural") or "other"
    return plural if plural in _KNOWN_PLURALS else "other"


class RuntimeState(Protocol):
    """What the collector reads from the running operator at scrape time."""

    def metric_samples(self) -> MetricSamples: ...


@dataclass(frozen=True)
class MetricSamples:
    queue_depth: int
    queue_oldest_age: float
    # resource -> (watch restarts, relists after 410 Gone, objects held)
    informers: dict[str, tuple[int, int, int]]
    # baseline -> state -> namespaces
    namespaces: dict[str, dict[str, int]]
    pods_audited: int
    # check id -> findings (failing), across baselines' configurations, worst per namespace
    findings: dict[str, int]
    # baseline -> (active exceptions, seconds until the next of them expires, or None)
    exceptions: dict[str, tuple[int, float | None]] = field(default_factory=dict)
    # Events recorded and not posted yet, and Events dropped because the buffer was full
    events_waiting: int = 0
    events_dropped: int = 0


class OperatorMetrics:
    """Every metric of one operator process (its own registry: tests run several)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.leader = False
        self._state: Callable[[], MetricSamples | None] = lambda: None
        self.api_requests = Counter(
            f"{PREFIX}_api_requests",
            "API requests by verb and answer status code (0: no answer).",
            ["verb", "code"],
            registry=self.registry,
        )
        self.api_latency = Histogram(
            f"{PREFIX}_api_request_duration_seconds",
            "API request latency by verb (watches excluded).",
            ["verb"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.writes = Counter(
            f"{PREFIX}_writes",
            "Writes that the API server accepted, by verb and resource.",
            ["verb", "resource"],
            registry=self.registry,
        )
        self.reconciles = Counter(
            f"{PREFIX}_reconciles",
            "Units of work done, by kind (namespace, cluster, status, workloads, exceptions)"
            " and result (done, retry).",
            ["kind", "result"],
            registry=self.registry,
        )
        self.reconcile_latency = Histogram(
            f"{PREFIX}_reconcile_duration_seconds",
            "How long one unit of work took, by kind.",
            ["kind"],
            registry=self.registry,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.repairs = Counter(
            f"{PREFIX}_object_rewrites",
            "Generated objects put back whole (drift repaired, or a changed baseline"
            " rewritten), by resource.",
            ["resource"],
            registry=self.registry,
        )
        self.registry.register(_StateCollector(self))
        self._request_children: dict[tuple[str, int], tuple[Any, Any]] = {}

    def watch(self, state: Callable[[], MetricSamples | None]) -> None:
        """Read states from this running operator at scrape time."""
        self._state = state

    def on_request(self, method: str, path: str, status: int, seconds: float) -> None:
        """KubeApi's observer: one call per request answered (or not)."""
        # The labelled children are looked up once per verb and status (a handful), not
        # per request: a fresh install makes tens of thousands.
        children = self._request_children.get((method, status))
        if children is None:
            children = (
                self.api_requests.labels(method, str(status)),
                self.api_latency.labels(method),
            )
            self._request_children[(method, status)] = children
        requests, latency = children
        requests.inc()
        latency.observe(seconds)
        if method in WRITE_VERBS and 200 <= status < 300:
            self.writes.labels(method, resource_of(path)).inc()
            if method == "PUT":
                self.repairs.labels(resource_of(path)).inc()

    def on_work(self, key: Any, seconds: float, failed: bool) -> None:
        """The work queue's observer: one call per unit of work."""
        kind = key[0] if isinstance(key, tuple) and key and isinstance(key[0], str) else "other"
        self.reconciles.labels(kind, "retry" if failed else "done").inc()
        self.reconcile_latency.labels(kind).observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    async def serve(self, host: str, port: int) -> aiohttp.web.AppRunner:
        """Serve /metrics on its own port until the returned runner is cleaned up."""

        async def metrics(_: aiohttp.web.Request) -> aiohttp.web.Response:
            return aiohttp.web.Response(
                body=self.exposition(), content_type="text/plain", charset="utf-8"
            )

        app = aiohttp.web.Application()
        app.router.add_get("/metrics", metrics)
        runner = aiohttp.web.AppRunner(app, access_log=None)
        await runner.setup()
        await aiohttp.web.TCPSite(runner, host, port).start()
        return runner


class _StateCollector(Collector):
    def __init__(self, metrics: OperatorMetrics) -> None:
        self.metrics = metrics

    def describe(self) -> list[Metric]:
        return []  # states come and go with the running operator

    def collect(self) -> Iterator[Metric]:
        leader = GaugeMetricFamily(
            f"{PREFIX}_leader", "1 while this replica holds the leader Lease and acts."
        )
        leader.add_metric([], 1.0 if self.metrics.leader else 0.0)
        yield leader
        samples = self.metrics._state()
        if samples is None:
            return
        yield GaugeMetricFamily(
            f"{PREFIX}_queue_depth", "Keys waiting or being worked on.", value=samples.queue_depth
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_queue_oldest_item_age_seconds",
            "How long the oldest waiting key has waited.",
            value=samples.queue_oldest_age,
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_events_waiting",
            "Events recorded and not yet posted (they are posted at a limited rate).",
            value=samples.events_waiting,
        )
        yield CounterMetricFamily(
            f"{PREFIX}_events_dropped",
            "Events dropped because too many waited to be posted.",
            value=samples.events_dropped,
        )
        restarts = CounterMetricFamily(
            f"{PREFIX}_watch_restarts",
            "Watches that broke and were resumed, by resource.",
            labels=["resource"],
        )
        relists = CounterMetricFamily(
            f"{PREFIX}_relists", "Lists again after 410 Gone, by resource.", labels=["resource"]
        )
        cached = GaugeMetricFamily(
            f"{PREFIX}_cached_objects", "Objects each informer holds.", labels=["resource"]
        )
        for resource, (restart, relist, held) in sorted(samples.informers.items()):
            restarts.add_metric([resource], restart)
            relists.add_metric([resource], relist)
            cached.add_metric([resource], held)
        yield restarts
        yield relists
        yield cached
        namespaces = GaugeMetricFamily(
            f"{PREFIX}_namespaces",
            "Namespaces a baseline selects, by its outcome there (selected counts them all).",
            labels=["baseline", "state"],
        )
        conflicts = GaugeMetricFamily(
            f"{PREFIX}_conflicts",
            "Namespaces where something stands in a baseline's way (Conflicted).",
            labels=["baseline"],
        )
        for baseline, states in sorted(samples.namespaces.items()):
            for state, count in sorted(states.items()):
                namespaces.add_metric([baseline, state], count)
            conflicts.add_metric([baseline], states.get("conflicted", 0))
        yield namespaces
        yield conflicts
        yield GaugeMetricFamily(
            f"{PREFIX}_pods_audited",
            "Pods the workload audit judged (namespaces with workloadAudit).",
            value=samples.pods_audited,
        )
        findings = GaugeMetricFamily(
            f"{PREFIX}_workload_findings",
            "Failing findings of the workload audit, by check.",
            labels=["check"],
        )
        for check, count in sorted(samples.findings.items()):
            findings.add_metric([check], count)
        yield findings
        active = GaugeMetricFamily(
            f"{PREFIX}_exceptions_active",
            "BaselineExceptions in force, by the baseline they relax.",
            labels=["baseline"],
        )
        expiry = GaugeMetricFamily(
            f"{PREFIX}_exception_next_expiry_seconds",
            "Seconds until the next active exception of a baseline expires.",
            labels=["baseline"],
        )
        for baseline, (count, seconds) in sorted(samples.exceptions.items()):
            active.add_metric([baseline], count)
            if seconds is not None:
                expiry.add_metric([baseline], seconds)
        yield active
        yield expiry
