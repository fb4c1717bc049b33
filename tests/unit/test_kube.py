"""The API wrapper's pure helpers: paths, Warning headers, the token's user, retries."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest

from baseline_operator.controller.main import event_loop_factory
from baseline_operator.kube.client import (
    ApiError,
    Endpoint,
    KubeApi,
    RetryPolicy,
    _lines,
    _retriable,
    _split_warning_header,
    object_path,
)
from baseline_operator.kube.config import token_username
from baseline_operator.policy.objects import NAMESPACE, NETWORK_POLICY, ObjectRef


def test_paths_of_core_grouped_and_cluster_scoped_objects() -> None:
    assert object_path(ObjectRef(NAMESPACE, None, "team-a")) == "/api/v1/namespaces/team-a"
    assert (
        object_path(ObjectRef(NETWORK_POLICY, "team-a", "x"))
        == "/apis/networking.k8s.io/v1/namespaces/team-a/networkpolicies/x"
    )


class _Chunks:
    """A response body as the stream hands it over: in chunks cut anywhere."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    async def iter_any(self):  # type: ignore[no-untyped-def]
        for chunk in self.chunks:
            yield chunk


async def _split(chunks: list[bytes]) -> list[bytes]:
    return [line async for line in _lines(_Chunks(chunks))]  # type: ignore[arg-type]


async def test_a_watch_stream_splits_into_its_lines_wherever_the_chunks_are_cut() -> None:
    events = [json.dumps({"type": "ADDED", "object": {"n": i, "pad": "x" * i}}) for i in range(40)]
    stream = ("\n".join(events) + "\n").encode()
    for size in (1, 7, 64, 1000, len(stream)):
        chunks = [stream[i : i + size] for i in range(0, len(stream), size)]
        assert [line.decode() for line in await _split(chunks)] == events


async def test_a_line_longer_than_any_chunk_blank_lines_and_an_unended_last_line() -> None:
    huge = b"y" * 300_000
    chunks = [b"a\n\n b", *[huge[i : i + 4096] for i in range(0, len(huge), 4096)], b"\n \nlast"]
    assert await _split(chunks) == [b"a", b" b" + huge, b"last"]
    assert await _split([]) == []
    assert await _split([b"\n", b"  ", b"\n"]) == []


def test_warning_headers_become_texts() -> None:
    header = (
        '299 - "existing pods in namespace \\"team-a\\" violate the new PodSecurity enforce'
        ' level \\"restricted:latest\\"", 299 - "web-1: allowPrivilegeEscalation != false"'
    )
    assert _split_warning_header(header) == [
        'existing pods in namespace "team-a" violate the new PodSecurity enforce level'
        ' "restricted:latest"',
        "web-1: allowPrivilegeEscalation != false",
    ]


def _jwt(claims: dict[str, str]) -> str:
    def part(data: dict[str, str]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256'})}.{part(claims)}.signature"


def test_the_token_names_the_service_account() -> None:
    sub = "system:serviceaccount:baseline-operator-system:baseline-operator"
    token = _jwt({"sub": sub})
    assert token_username(Endpoint("https://k", authorization=lambda: f"Bearer {token}")) == sub
    assert token_username(Endpoint("https://k", authorization=lambda: f"Basic {token}")) is None
    opaque = Endpoint("https://k", authorization=lambda: "Bearer opaque-token")
    assert token_username(opaque) is None
    assert token_username(Endpoint("https://k")) is None


def test_what_is_retried() -> None:
    assert _retriable(ApiError(429, "TooManyRequests", ""))
    assert _retriable(ApiError(503, "ServiceUnavailable", ""))
    assert _retriable(ApiError(0, "Unreachable", ""))
    # A stale resourceVersion or a failed uid precondition needs a fresh look, not the
    # same request again; nor does AlreadyExists, Invalid or Forbidden.
    assert not _retriable(ApiError(409, "Conflict", ""))
    assert not _retriable(ApiError(409, "AlreadyExists", ""))
    assert not _retriable(ApiError(422, "Invalid", ""))
    assert not _retriable(ApiError(403, "Forbidden", ""))


def test_errors_say_what_failed() -> None:
    missing_object = ApiError(404, "NotFound", "x", {"name": "x", "kind": "networkpolicies"})
    assert missing_object.not_found
    assert not missing_object.kind_not_served
    assert ApiError(404, "", "404 page not found", is_status=False).kind_not_served
    assert ApiError(
        404, "NotFound", "the server could not find the requested resource", {}
    ).kind_not_served
    assert ApiError(409, "AlreadyExists", "").already_exists
    assert not ApiError(409, "AlreadyExists", "").conflict
    assert ApiError(410, "Expired", "").gone
    gone = ApiError(404, "NotFound", "", {"name": "team-a", "kind": "namespaces"})
    assert gone.namespace_gone("team-a")
    assert not gone.namespace_gone("team-b")
    terminating = ApiError(403, "Forbidden", "", {"causes": [{"reason": "NamespaceTerminating"}]})
    assert terminating.namespace_gone("team-a")
    assert not ApiError(403, "Forbidden", "", {}).namespace_gone("team-a")


def test_backoff_is_capped_and_honours_retry_after() -> None:
    policy = RetryPolicy(first_delay=0.2, max_delay=10)
    assert policy.delay(0, retry_after=3) == 3
    assert policy.delay(0, retry_after=60) == 10
    assert 0.1 <= policy.delay(0, None) <= 0.2
    assert 5 <= policy.delay(20, None) <= 10


async def _raw_server(answer: bytes) -> tuple[asyncio.Server, int, list[bytes]]:
    """A TCP server that records every byte it receives and answers each request once."""
    received: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while chunk := await reader.read(65536):
                received.append(chunk)
                if b"\r\n\r\n" in b"".join(received):
                    writer.write(answer)
                    await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, port, received


_OK = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 20\r\n\r\n"
    b'{"kind":"Namespace"}'
)


async def test_a_write_whose_fence_closes_before_its_bytes_leave_sends_nothing() -> None:
    """The fence is checked in the step that hands a write's bytes to the socket: a leader
    frozen after the earlier checks, with the write already handed to the HTTP client,
    sends not one byte of it on waking (not even the request line)."""
    await _fence_closing_before_the_bytes_leave()


def test_on_the_operators_event_loop_too_a_fenced_write_sends_nothing() -> None:
    """The same on the loop `baseline-operator run` uses (uvloop's transports, not
    asyncio's): the fence holds whichever loop hands the bytes over."""
    factory = event_loop_factory()
    assert factory is not None, "uvloop is a dependency of the operator on this platform"
    with asyncio.Runner(loop_factory=factory) as runner:
        assert type(runner.get_loop()).__module__.startswith("uvloop")
        runner.run(_fence_closing_before_the_bytes_leave())


async def _fence_closing_before_the_bytes_leave() -> None:
    server, port, received = await _raw_server(_OK)
    checks: list[bool] = []
    # Open before the request and once its slot is free; closed when its bytes would leave.
    answers = iter([True, True, False, True, True, True])

    def may_write() -> bool:
        checks.append(True)
        return next(answers)

    kube = KubeApi(Endpoint(f"http://127.0.0.1:{port}"), may_write=may_write)
    try:
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}}
        with pytest.raises(ApiError) as caught:
            await kube.apply(body)
        assert caught.value.fenced  # refused, not retried as if the server were unreachable
        assert len(checks) == 3
        await asyncio.sleep(0.05)  # anything sent would have arrived by now
        assert received == []
        await kube.apply(body)  # the fence open again: sent
        assert len(checks) == 6
        request = b"".join(received)
        assert request.startswith(b"PATCH /api/v1/namespaces/a?")
        assert request.endswith(b'"metadata":{"name":"a"}}')
    finally:
        await kube.close()
        server.close()
        await server.wait_closed()
