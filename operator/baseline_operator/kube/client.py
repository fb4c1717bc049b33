"""All requests the operator makes to the API server, in one place.

Every request is one a real kube-apiserver (1.30+) accepts: POST to create,
PUT carrying a resourceVersion to put an object back exactly, server-side apply
(PATCH application/apply-patch+yaml with a field manager) for the fields the
operator sets on objects it does not own and for namespace labels, JSON merge
patch of a status subresource, DELETE with a uid precondition, paginated LIST and
WATCH with label and field selectors (namespaces as metadata only), POST of Events.

The client is aiohttp, as kopf's own: every request, watches included, is a
coroutine on the operator's event loop, with no thread per request or per watch
and no cap from a thread pool. A semaphore bounds how many ordinary requests are
in flight (the request budget); watches are long-lived and outside it. Transient
failures (429, 5xx, connection errors, timeouts) are retried with capped
exponential backoff honouring Retry-After; nothing else is, because a refused
request (a stale resourceVersion, a failed precondition, AlreadyExists) needs a
fresh look, not the same request again.
"""

from __future__ import annotations

import asyncio
import json
import random
import ssl
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp
import structlog
from aiohttp.abc import AbstractStreamWriter

from baseline_operator.api.kinds import FIELD_MANAGER, Body, Kind, ObjectRef

log = structlog.get_logger(__name__)

APPLY_CONTENT_TYPE = "application/apply-patch+yaml"
MERGE_PATCH_CONTENT_TYPE = "application/merge-patch+json"
# Lists and watches of namespaces need only their metadata (selection reads labels).
METADATA_ONLY_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
METADATA_ONLY = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"
_RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})


class ApiError(Exception):
    """A request the API server refused (or never answered), after retries."""

    def __init__(
        self,
        status: int,
        reason: str,
        message: str,
        details: Mapping[str, Any] | None = None,
        *,
        is_status: bool = True,
    ) -> None:
        super().__init__(f"{status} {reason}: {message}" if status else message)
        self.status = status
        self.reason = reason
        self.message = message
        self.details: Mapping[str, Any] = details or {}
        # Whether the answer was a metav1.Status (a plain-text 404 means "no such resource
        # type here", not "no such object").
        self.is_status = is_status

    @property
    def fenced(self) -> bool:
        """Not sent: this replica may not write now (see KubeApi.may_write)."""
        return self.reason == "Fenced"

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        """A stale resourceVersion or a failed precondition (409 Conflict)."""
        return self.status == 409 and self.reason != "AlreadyExists"

    @property
    def already_exists(self) -> bool:
        return self.status == 409 and self.reason == "AlreadyExists"

    @property
    def gone(self) -> bool:
        """410 Gone: a watch or list asked for a resourceVersion that was compacted."""
        return self.status == 410 or self.reason in ("Expired", "Gone")

    @property
    def kind_not_served(self) -> bool:
        """The API server does not serve the resource at all (its CRD is not installed): a
        plain-text 404, or a Status that names no object."""
        return self.status == 404 and (not self.is_status or not self.details.get("name"))

    def namespace_gone(self, namespace: str | None) -> bool:
        """The request failed because its namespace is gone or being deleted."""
        if namespace is None:
            return False
        causes = self.details.get("causes") or []
        if self.status == 403 and any(
            isinstance(cause, Mapping) and cause.get("reason") == "NamespaceTerminating"
            for cause in causes
        ):
            return True
        return (
            self.status == 404
            and self.details.get("kind") == "namespaces"
            and self.details.get("name") == namespace
        )


@dataclass(frozen=True)
class Response:
    status: int
    body: Body
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Endpoint:
    """Where the API server is and how to authenticate to it."""

    server: str
    ca_file: str | None = None
    # The CA's PEM text itself (a kubeconfig's certificate-authority-data), next to or
    # instead of ca_file.
    ca_data: str | None = None
    insecure: bool = False
    certificate_file: str | None = None
    key_file: str | None = None
    # The Authorization header's value, read afresh per request: in a pod, the
    # ServiceAccount token is rotated.
    authorization: Callable[[], str | None] = lambda: None
    headers: Mapping[str, str] = field(default_factory=dict)

    def ssl_context(self) -> ssl.SSLContext | bool:
        if not self.server.startswith("https"):
            return False
        if self.insecure:
            return False
        context = ssl.create_default_context(cafile=self.ca_file, cadata=self.ca_data)
        if self.certificate_file:
            context.load_cert_chain(self.certificate_file, self.key_file)
        return context


@dataclass
class RetryPolicy:
    attempts: int = 6
    first_delay: float = 0.2
    max_delay: float = 10.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_delay)
        base: float = min(self.first_delay * (2**attempt), self.max_delay)
        return base * (0.5 + random.random() / 2)  # jitter: replicas and workers spread out


@dataclass(frozen=True)
class WatchEvent:
    type: str  # ADDED, MODIFIED, DELETED, BOOKMARK
    object: Body


@dataclass(frozen=True)
class Page:
    items: list[Body]
    resource_version: str
    next: str | None  # the continue token, if more pages follow


@dataclass
class KubeApi:
    """The operator's only door to the API server."""

    endpoint: Endpoint
    budget: int = 8
    timeout: float = 30.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    # Counts every request by verb and answer status (for logs, tests and benchmarks).
    on_request: Callable[[str, str, int, float], None] | None = None
    # Fencing: while this says no, no write leaves (a leader whose lease may have passed to
    # another replica must not write); checked before each attempt, retries included, once
    # a request slot is free, and in the step that hands the request's bytes to the socket
    # (_FencedBody).
    may_write: Callable[[], bool] | None = None

    def __post_init__(self) -> None:
        self._slots = asyncio.Semaphore(self.budget)
        self._session: aiohttp.ClientSession | None = None
        self._request_timeout = aiohttp.ClientTimeout(total=self.timeout)

    # ------------------------------------------------------------------ lifecycle

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                ssl=self.endpoint.ssl_context(), limit=0, enable_cleanup_closed=True
            )
            # No cookie jar: the API server sets no cookies, and a jar costs every request a
            # look at it and every answer a parse of its headers into it.
            self._session = aiohttp.ClientSession(
                base_url=None,
                connector=connector,
                headers=dict(self.endpoint.headers),
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def close(self) -> None:
        """Close the connections (a later request opens new ones)."""
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    # ------------------------------------------------------------------ objects

    async def apply(self, body: Body, *, force: bool = True, dry_run: bool = False) -> Response:
        """Server-side apply: create or update exactly the fields in `body` as our manager."""
        ref = ObjectRef.of(body)
        query = [("fieldManager", FIELD_MANAGER), ("force", "true" if force else "false")]
        if dry_run:
            query.append(("dryRun", "All"))
        return await self.request(
            "PATCH", object_path(ref), query=query, body=body, content_type=APPLY_CONTENT_TYPE
        )

    async def create(self, kind: Kind, namespace: str | None, body: Body) -> Body:
        query = [("fieldManager", FIELD_MANAGER)]
        return (
            await self.request("POST", collection_path(kind, namespace), query=query, body=body)
        ).body

    async def replace(self, ref: ObjectRef, body: Body) -> Body:
        """PUT: the whole object, exactly; `body` carries the resourceVersion it replaces."""
        query = [("fieldManager", FIELD_MANAGER)]
        return (await self.request("PUT", object_path(ref), query=query, body=body)).body

    async def delete(self, ref: ObjectRef, uid: str | None) -> bool:
        """Delete one object, only if it is still the one we saw (uid). False if already gone."""
        body: Body = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "propagationPolicy": "Background",
        }
        if uid:
            body["preconditions"] = {"uid": uid}
        try:
            await self.request("DELETE", object_path(ref), body=body)
        except ApiError as exc:
            if exc.not_found and not exc.kind_not_served:
                return False
            raise
        return True

    async def get(self, ref: ObjectRef) -> Body | None:
        try:
            return (await self.request("GET", object_path(ref))).body
        except ApiError as exc:
            if exc.not_found and not exc.kind_not_served:
                return None
            raise

    async def patch_status(self, kind: Kind, name: str, status: Body) -> Body:
        """Merge-patch the status subresource of a cluster-scoped object."""
        path = object_path(ObjectRef(kind, None, name)) + "/status"
        response = await self.request(
            "PATCH", path, body={"status": status}, content_type=MERGE_PATCH_CONTENT_TYPE
        )
        return response.body

    # ------------------------------------------------------------------ list and watch

    async def list_page(
        self,
        kind: Kind,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        metadata_only: bool = False,
        limit: int = 500,
        after: str | None = None,
    ) -> Page:
        """One page of a cluster-wide list (`after` is the previous page's continue token)."""
        query = [("limit", str(limit))]
        if label_selector:
            query.append(("labelSelector", label_selector))
        if field_selector:
            query.append(("fieldSelector", field_selector))
        if after:
            query.append(("continue", after))
        response = await self.request(
            "GET",
            collection_path(kind, None),
            query=query,
            accept=METADATA_ONLY_LIST if metadata_only else "application/json",
        )
        metadata = response.body.get("metadata") or {}
        items = response.body.get("items") or []
        return Page(
            items=[item for item in items if isinstance(item, dict)],
            resource_version=str(metadata.get("resourceVersion") or ""),
            next=metadata.get("continue") or None,
        )

    async def watch(
        self,
        kind: Kind,
        resource_version: str,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        metadata_only: bool = False,
        timeout_seconds: int = 300,
    ) -> AsyncIterator[WatchEvent]:
        """The changes after `resource_version`, with bookmarks, until the server ends the
        stream. An ERROR event (410 Gone when the version was compacted) is raised as
        ApiError; so is a refused request."""
        query = [
            ("watch", "true"),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(timeout_seconds)),
        ]
        if resource_version:
            query.append(("resourceVersion", resource_version))
        if label_selector:
            query.append(("labelSelector", label_selector))
        if field_selector:
            query.append(("fieldSelector", field_selector))
        timeout = aiohttp.ClientTimeout(
            total=None, connect=self.timeout, sock_read=timeout_seconds + 30
        )
        headers = self._headers(METADATA_ONLY if metadata_only else "application/json")
        url = self.endpoint.server.rstrip("/") + collection_path(kind, None)
        try:
            async with self._client().get(
                url, params=query, headers=headers, timeout=timeout
            ) as answer:
                if answer.status != 200:
                    raise _error_from(answer.status, await answer.read())
                async for line in _lines(answer.content):
                    event = json.loads(line)
                    if not isinstance(event, dict):
                        continue
                    event_type = str(event.get("type") or "")
                    body = event.get("object") or {}
                    if event_type == "ERROR":
                        status = body if isinstance(body, dict) else {}
                        raise ApiError(
                            int(status.get("code") or 0),
                            str(status.get("reason") or ""),
                            str(status.get("message") or ""),
                        )
                    if isinstance(body, dict):
                        yield WatchEvent(event_type, body)
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError, RuntimeError) as exc:
            # RuntimeError: aiohttp's "Connection closed." when the connection drops
            # between two reads of the stream.
            raise ApiError(0, "Unreachable", f"watch {kind.plural}: {exc!r}") from exc

    # ------------------------------------------------------------------ transport

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, str]] = (),
        body: Body | None = None,
        content_type: str = "application/json",
        accept: str = "application/json",
    ) -> Response:
        for attempt in range(self.retry.attempts):
            self._check_fence(method, path)
            async with self._slots:
                # Checked again once a slot is free: a write may have waited for one past
                # the moment leadership came into doubt.
                self._check_fence(method, path)
                failure, retry_after, response = await self._send(
                    method, path, query, body, content_type, accept
                )
            if response is not None:
                return response
            assert failure is not None
            if not _retriable(failure) or attempt == self.retry.attempts - 1:
                raise failure
            delay = self.retry.delay(attempt, retry_after)
            log.info(
                "retrying request",
                method=method,
                path=path,
                status=failure.status,
                reason=failure.reason,
                delay=round(delay, 2),
            )
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _check_fence(self, method: str, path: str) -> None:
        if method != "GET" and self.may_write is not None and not self.may_write():
            raise ApiError(0, "Fenced", f"{method} {path}: not the leader now; not sent")

    async def get_text(self, path: str, query: Sequence[tuple[str, str]] = ()) -> str:
        """A GET whose answer is text (e.g. /metrics)."""
        url = self.endpoint.server.rstrip("/") + path
        headers = self._headers("text/plain, application/json")
        timeout = aiohttp.ClientTimeout(total=self.timeout * 2)
        async with self._client().get(
            url, params=list(query), headers=headers, timeout=timeout
        ) as answer:
            text = await answer.text()
            if answer.status >= 300:
                raise _error_from(answer.status, text.encode())
            return text

    def _headers(self, accept: str) -> dict[str, str]:
        headers = {"Accept": accept}
        authorization = self.endpoint.authorization()
        if authorization:
            headers["Authorization"] = authorization
        return headers

    async def _send(
        self,
        method: str,
        path: str,
        query: Sequence[tuple[str, str]],
        body: Body | None,
        content_type: str,
        accept: str,
    ) -> tuple[ApiError | None, float | None, Response | None]:
        headers = self._headers(accept)
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            encoded = json.dumps(body, separators=(",", ":")).encode()
            data = _FencedBody(encoded, content_type, lambda: self._check_fence(method, path))
        url = self.endpoint.server.rstrip("/") + path
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            async with self._client().request(
                method,
                url,
                params=list(query),
                data=data,
                headers=headers,
                timeout=self._request_timeout,
            ) as answer:
                raw = await answer.read()
                status = answer.status
                retry_after = answer.headers.get("Retry-After")
                warnings = tuple(
                    text
                    for value in answer.headers.getall("Warning", [])
                    for text in _split_warning_header(value)
                )
        except (aiohttp.ClientError, OSError, TimeoutError, RuntimeError) as exc:
            # RuntimeError: aiohttp's "Connection closed." (the connection dropped while
            # the answer was read).
            self._count(method, path, 0, loop.time() - started)
            if isinstance(data, _FencedBody) and data.refused is not None:
                return data.refused, None, None
            return ApiError(0, "Unreachable", f"{method} {path}: {exc!r}"), None, None
        self._count(method, path, status, loop.time() - started)
        if 200 <= status < 300:
            parsed = _parse(raw)
            return (
                None,
                None,
                Response(status, parsed if isinstance(parsed, dict) else {}, warnings),
            )
        seconds = float(retry_after) if retry_after and retry_after.isdigit() else None
        return _error_from(status, raw), seconds, None

    def _count(self, method: str, path: str, status: int, seconds: float) -> None:
        if self.on_request is not None:
            self.on_request(method, path, status, seconds)


class _FencedBody(aiohttp.BytesPayload):
    """A write's body, which checks the fence in the step that hands it to the socket.

    aiohttp holds a request's line and headers back and sends them with the first bytes of
    its body, from a task of its own that runs after every task already ready on the event
    loop. A process frozen (SIGSTOP, a paused VM) between the checks before the request and
    that task would, on waking, send a write it queued while it was still the leader. Here
    the check and the hand-over happen with nothing between them that can yield: refused,
    nothing of the request leaves, and the connection is closed. (An aiohttp that sent the
    headers first would leave the server a request without its body, never acted on.)
    """

    def __init__(self, value: bytes, content_type: str, check_fence: Callable[[], None]):
        super().__init__(value, content_type=content_type)
        self._check_fence = check_fence
        self.refused: ApiError | None = None

    def _refuse_if_fenced(self) -> None:
        try:
            self._check_fence()
        except ApiError as refusal:
            self.refused = refusal
            raise

    async def write(self, writer: AbstractStreamWriter) -> None:
        self._refuse_if_fenced()
        await super().write(writer)

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
        self._refuse_if_fenced()
        await super().write_with_length(writer, content_length)


async def _lines(content: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    """Newline-separated chunks of a stream, of any length (an object may exceed the
    reader's line limit). Each byte is copied once: a chunk holds dozens of events while
    a rollout streams, and cutting them off the front of a buffer one by one copied the
    rest of the chunk for each."""
    pending: list[bytes] = []  # the start of a line that has not ended yet
    async for chunk in content.iter_any():
        *ended, rest = chunk.split(b"\n")
        if ended:
            if pending:
                ended[0] = b"".join([*pending, ended[0]])
                pending = []
            for line in ended:
                if line.strip():
                    yield line
        if rest:
            pending.append(rest)
    last = b"".join(pending)
    if last.strip():
        yield last


def _parse(raw: bytes) -> Any:
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except ValueError:
        return {"message": raw.decode("utf-8", "replace")[:500]}


def _error_from(status: int, raw: bytes) -> ApiError:
    parsed = _parse(raw)
    body = parsed if isinstance(parsed, dict) else {}
    is_status = body.get("kind") == "Status"
    message = str(body.get("message") or body or raw[:200].decode("utf-8", "replace")).strip()
    details = body.get("details") if isinstance(body.get("details"), dict) else None
    return ApiError(status, str(body.get("reason") or ""), message, details, is_status=is_status)


def _retriable(error: ApiError) -> bool:
    if error.fenced:
        return False
    return error.status == 0 or error.status in _RETRIED_STATUSES


def _split_warning_header(value: str) -> list[str]:
    # RFC 7234 warn-value: code SP agent SP quoted-text; several may share one header.
    texts: list[str] = []
    rest = value.strip()
    while rest:
        _, quote_start, remainder = rest.partition('"')
        if not quote_start:
            break
        text_chars: list[str] = []
        index = 0
        while index < len(remainder):
            char = remainder[index]
            if char == "\\" and index + 1 < len(remainder):
                text_chars.append(remainder[index + 1])
                index += 2
                continue
            if char == '"':
                break
            text_chars.append(char)
            index += 1
        texts.append("".join(text_chars))
        rest = remainder[index + 1 :].lstrip(" ,")
    return texts


def collection_path(kind: Kind, namespace: str | None) -> str:
    root = f"/apis/{kind.group}/{kind.version}" if kind.group else f"/api/{kind.version}"
    if kind.namespaced and namespace:
        return f"{root}/namespaces/{quote(namespace)}/{kind.plural}"
    return f"{root}/{kind.plural}"


def object_path(ref: ObjectRef) -> str:
    return f"{collection_path(ref.kind, ref.namespace)}/{quote(ref.name)}"
