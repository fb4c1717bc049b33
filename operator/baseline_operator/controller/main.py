"""Starting the operator: logging, the API connection, leadership, and kopf."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
import sys
import urllib.parse
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp.web
import kopf
import structlog

from baseline_operator.controller.handlers import build_registry
from baseline_operator.controller.leader import LeaderElector
from baseline_operator.controller.metrics import OperatorMetrics
from baseline_operator.controller.options import OperatorOptions
from baseline_operator.kube.client import ApiError, Endpoint, KubeApi, RetryPolicy
from baseline_operator.kube.config import connection_info, load_endpoint, token_username

log = structlog.get_logger(__name__)


def configure_logging(verbosity: int) -> None:
    """One log stream: the operator's and kopf's records, key=value on a terminal, JSON lines
    otherwise (for log collectors)."""
    level = logging.DEBUG if verbosity >= 1 else logging.INFO
    renderer: Any = (
        structlog.dev.ConsoleRenderer()
        if sys.stderr.isatty()
        else structlog.processors.JSONRenderer()
    )
    shared: list[Any] = [
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso"),
    ]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(level),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    # kopf's own debug output is verbose: only at -vv; its per-object handler lines at -v.
    logging.getLogger("kopf").setLevel(logging.DEBUG if verbosity >= 2 else logging.INFO)
    logging.getLogger("kopf.objects").setLevel(logging.INFO if verbosity >= 1 else logging.WARNING)


@contextlib.asynccontextmanager
async def serving_liveness(endpoint: str | None) -> AsyncIterator[None]:
    """Answer 200 on the liveness endpoint until the block ends (kopf serves it afterwards)."""
    if not endpoint:
        yield
        return
    url = urllib.parse.urlsplit(endpoint)

    async def alive(_: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
        return aiohttp.web.json_response({"leader": False, "waiting": True})

    app = aiohttp.web.Application()
    app.router.add_get(url.path or "/", alive)
    runner = aiohttp.web.AppRunner(app)
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, url.hostname, url.port or 80)
    await site.start()
    try:
        yield
    finally:
        await runner.cleanup()


def identity() -> str:
    return os.environ.get("POD_NAME") or socket.gethostname()


async def who_am_i(kube: KubeApi) -> str | None:
    """The user the API server authenticates the operator as (a SelfSubjectReview)."""
    try:
        answer = await kube.request(
            "POST",
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            body={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
        )
    except ApiError as exc:
        log.warning("cannot tell who the operator is", error=str(exc))
        return None
    user = ((answer.body.get("status") or {}).get("userInfo") or {}).get("username")
    return user if isinstance(user, str) and user else None


async def operate(
    kube: KubeApi,
    connection: Callable[[], kopf.ConnectionInfo],
    options: OperatorOptions,
    *,
    stop_flag: asyncio.Event | None = None,
    ready_flag: asyncio.Event | None = None,
    memo: kopf.Memo | None = None,
    metrics: OperatorMetrics | None = None,
) -> None:
    """Run the operator until `stop_flag` is set (or a signal arrives).

    `memo` may be given to look at the running operator (`memo.runtime`) from outside.
    """
    registry = build_registry()

    def login(**_: Any) -> kopf.ConnectionInfo:
        # Read afresh on every login: in a pod, the service account token is rotated.
        return connection()

    kopf.on.login(registry=registry)(login)
    memo = memo if memo is not None else kopf.Memo()
    memo.kube = kube
    memo.options = options
    memo.metrics = metrics
    await kopf.operator(
        registry=registry,
        memo=memo,
        clusterwide=True,
        standalone=True,
        liveness_endpoint=options.liveness,
        stop_flag=stop_flag,
        ready_flag=ready_flag,
    )


@contextlib.asynccontextmanager
async def operator_in_process(
    kube: KubeApi,
    connection: Callable[[], kopf.ConnectionInfo],
    options: OperatorOptions,
    metrics: OperatorMetrics | None = None,
) -> AsyncIterator[kopf.Memo]:
    """The operator running in this event loop until the block ends (demo, tests,
    benchmarks); the memo it yields shows the running operator (`memo.runtime`)."""
    memo = kopf.Memo()
    stop = asyncio.Event()
    task = asyncio.create_task(
        operate(kube, connection, options, stop_flag=stop, memo=memo, metrics=metrics)
    )
    try:
        yield memo
    finally:
        # On stopping, kopf waits up to 5 s for every task started while it ran; with the API
        # server in the same loop that includes the handlers of idle pooled connections.
        await kube.close()
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop the operator runs on: uvloop's where it is installed (a dependency
    wherever it builds), as kopf's own CLI does; else asyncio's (None). Measured on a real
    API server, uvloop's transports and TLS take about a fifth off the operator's CPU per
    write, and a fresh install converges that much sooner (docs/benchmarks.md)."""
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:
        return None
    return uvloop.new_event_loop


def run_operator(options: OperatorOptions) -> int:
    """Run the operator on the in-cluster credentials or the kubeconfig. A KubeconfigError
    (settings that cannot be read or are not supported) is raised before anything starts."""
    endpoint = load_endpoint()
    configure_logging(options.verbosity)
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        return runner.run(_run(endpoint, options))


async def _run(endpoint: Endpoint, options: OperatorOptions) -> int:
    kube = KubeApi(
        endpoint,
        budget=options.request_budget,
        timeout=options.request_timeout,
    )
    metrics = OperatorMetrics()
    kube.on_request = metrics.on_request
    served: aiohttp.web.AppRunner | None = None
    if options.metrics_address:
        # Every replica serves metrics, the standby too (baseline_operator_leader says 0).
        host, _, port = options.metrics_address.rpartition(":")
        try:
            served = await metrics.serve(host or "0.0.0.0", int(port))
        except (OSError, ValueError) as exc:  # the operator's work matters more than its metrics
            log.error("metrics not served", address=options.metrics_address, error=str(exc))
    if options.username is None:
        # Tamper protection lets exactly this user through: the ServiceAccount token's
        # subject in a pod, else whoever the API server says the operator is.
        username = token_username(endpoint) or await who_am_i(kube)
        options = dataclasses.replace(options, username=username)
    options = dataclasses.replace(options, instance=identity())
    stop = asyncio.Event()
    holder: asyncio.Task[None] | None = None
    if options.leader_election:
        # The Lease has a client of its own, outside the workers' request budget, with short
        # timeouts and no retries: the elector retries on its own schedule, within its
        # renew deadline.
        elector = LeaderElector(
            KubeApi(endpoint, budget=2, timeout=5.0, retry=RetryPolicy(attempts=1)),
            options.namespace,
            identity(),
        )
        # A replica waiting for its turn is alive: answer the liveness probe meanwhile.
        async with serving_liveness(options.liveness):
            await elector.acquire()
        # Fencing: past the renew deadline (before any other replica may take the Lease),
        # no write of the operator's leaves this process; the elector then sets `stop`.
        kube.may_write = elector.may_write
        holder = asyncio.create_task(elector.hold(stop), name="leader-lease")
    metrics.leader = True
    try:
        await operate(
            kube, lambda: connection_info(endpoint), options, stop_flag=stop, metrics=metrics
        )
    finally:
        metrics.leader = False
        if holder is not None:
            holder.cancel()
        if served is not None:
            await served.cleanup()
        await kube.close()
    # Stopping because leadership was lost is a failure: the pod restarts and waits its turn.
    return 1 if options.leader_election and stop.is_set() else 0
