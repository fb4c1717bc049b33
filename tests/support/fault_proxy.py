"""A fault-injecting HTTP proxy on loopback, between the operator and a real kube-apiserver.

The operator's kubeconfig points at `http://127.0.0.1:PORT` (plain HTTP on loopback);
the proxy passes each request on over TLS to the API server, the bearer token included,
and answers with what the API server answered, except for a share (`rate`, 20% by
default) of requests, which get one fault, chosen at random with equal weight:

- `429`: Too Many Requests with `Retry-After: 1` (not passed on);
- `500`, `503`: an error Status (not passed on);
- `reset`: the connection is aborted, half the time before the request is passed on,
  half the time after (the client cannot tell whether a write happened);
- `delay`: passed on, and the answer held back `delay` seconds, past the client's
  timeout (at most `max_delayed` at once; beyond that a `503` instead).

Watches are faulted the same way when they start; while faults are on, a watch stream
is cut (the connection aborted) at a random moment of each stretch of
`watch_cut_within[1]` seconds with the probability `rate`.

`enabled` turns the faults on and off while it runs; `counts` says what was injected.
"""

from __future__ import annotations

import asyncio
import json
import random
import ssl
from collections import Counter
from dataclasses import dataclass, field

import aiohttp
import aiohttp.web

FAULTS = ("429", "500", "503", "reset", "delay")
# Not passed on between the two connections. (Content-Encoding is: bodies pass as they are.)
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)


def _status(code: int, reason: str, message: str) -> aiohttp.web.Response:
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    return aiohttp.web.Response(status=code, text=json.dumps(body), content_type="application/json")


@dataclass
class FaultProxy:
    upstream: str  # https://127.0.0.1:PORT of the API server
    ca_file: str | None
    rate: float = 0.2
    delay: float = 31.0  # the operator's client gives up after 30 s
    max_delayed: int = 2
    watch_cut_within: tuple[float, float] = (0.5, 8.0)
    seed: int | None = None
    enabled: bool = False
    counts: Counter[str] = field(default_factory=Counter)
    _random: random.Random = field(init=False)
    _delayed: int = field(default=0, init=False)
    _session: aiohttp.ClientSession | None = field(default=None, init=False)
    _runner: aiohttp.web.AppRunner | None = field(default=None, init=False)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set, init=False)
    url: str = field(default="", init=False)

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> str:
        context = ssl.create_default_context(cafile=self.ca_file) if self.ca_file else False
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=context, limit=0),
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
        )
        app = aiohttp.web.Application(client_max_size=64 * 1024**2)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # Stopping drops what is still open (watches, held answers) at once.
        self._runner = aiohttp.web.AppRunner(
            app, handle_signals=False, access_log=None, shutdown_timeout=0.5
        )
        await self._runner.setup()
        site = aiohttp.web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    @property
    def injected(self) -> int:
        return sum(count for kind, count in self.counts.items() if kind != "requests")

    # ------------------------------------------------------------------ requests

    def _choose(self) -> str | None:
        if not self.enabled or self._random.random() >= self.rate:
            return None
        fault = self._random.choice(FAULTS)
        if fault == "delay" and self._delayed >= self.max_delayed:
            fault = "503"
        return fault

    async def _handle(self, request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
        self.counts["requests"] += 1
        watch = request.query.get("watch") in ("true", "1")
        fault = self._choose()
        if fault is not None:
            self.counts[f"{'watch ' if watch else ''}{fault}"] += 1
        if fault == "429":
            answer = _status(429, "TooManyRequests", "injected: too many requests")
            answer.headers["Retry-After"] = "1"
            return answer
        if fault in ("500", "503"):
            code = int(fault)
            reason = "InternalError" if code == 500 else "ServiceUnavailable"
            return _status(code, reason, f"injected: {reason}")
        if fault == "reset" and self._random.random() < 0.5:
            return self._abort(request)
        body = await request.read()
        headers = {
            key: value for key, value in request.headers.items() if key.lower() not in _HOP_BY_HOP
        }
        assert self._session is not None
        try:
            upstream = await self._session.request(
                request.method,
                self.upstream + request.path_qs,
                data=body or None,
                headers=headers,
                allow_redirects=False,
            )
        except (aiohttp.ClientError, OSError):
            return self._abort(request)
        try:
            if watch and upstream.status == 200:
                return await self._stream(request, upstream)
            payload = await upstream.read()
        finally:
            if not watch:
                upstream.release()
        if fault == "reset":  # passed on: the client cannot tell whether a write happened
            return self._abort(request)
        if fault == "delay":
            self._delayed += 1
            try:
                await asyncio.sleep(self.delay)
            finally:
                self._delayed -= 1
        answer = aiohttp.web.Response(status=upstream.status, body=payload)
        for key, value in upstream.headers.items():
            if key.lower() not in _HOP_BY_HOP:
                answer.headers.add(key, value)
        return answer

    async def _stream(
        self, request: aiohttp.web.Request, upstream: aiohttp.ClientResponse
    ) -> aiohttp.web.StreamResponse:
        """Pass a watch on as it comes. While faults are on, each stretch of
        `watch_cut_within[1]` seconds of it is cut short at a random moment with the
        probability `rate` (watches begun before the faults are cut too)."""
        answer = aiohttp.web.StreamResponse(status=upstream.status)
        for key, value in upstream.headers.items():
            if key.lower() not in _HOP_BY_HOP:
                answer.headers.add(key, value)
        await answer.prepare(request)
        loop = asyncio.get_running_loop()
        low, high = self.watch_cut_within
        stretch_ends: float | None = None
        cut_at: float | None = None
        try:
            while True:
                now = loop.time()
                if not self.enabled:
                    stretch_ends = cut_at = None
                elif cut_at is None and (stretch_ends is None or now >= stretch_ends):
                    stretch_ends = now + high
                    if self._random.random() < self.rate:
                        cut_at = now + self._random.uniform(low, high)
                if cut_at is not None and now >= cut_at:
                    self.counts["watch cut"] += 1
                    self._abort(request)  # mid-way
                    return answer
                wait = 0.5 if cut_at is None else min(0.5, cut_at - now)
                try:
                    chunk = await asyncio.wait_for(upstream.content.readany(), wait)
                except TimeoutError:
                    continue
                if not chunk:
                    break
                await answer.write(chunk)
        except (aiohttp.ClientError, ConnectionError):
            self._abort(request)
            return answer
        finally:
            upstream.close()
        await answer.write_eof()
        return answer

    @staticmethod
    def _abort(request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
        transport = request.transport
        if transport is not None:
            transport.abort()
        # Nothing is written on an aborted connection; aiohttp drops this answer.
        return aiohttp.web.Response(status=503)
