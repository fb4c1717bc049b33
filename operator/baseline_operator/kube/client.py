"""All requests the operator makes to the API server, in one place.

Every request is one a real kube-apiserver (1.30+) accepts: server-side apply
(PATCH application/apply-patch+yaml with a field manager), JSON merge patch of
a status subresource, DELETE with a uid precondition, POST of Events, GET/PUT
of a Lease. The official client is synchronous, so each request runs in a
worker thread (`asyncio.to_thread`); a semaphore bounds how many run at once
(the request budget), and transient failures (429, 5xx, timeouts, optimistic-
concurrency conflicts) are retried with capped exponential backoff, honouring
Retry-After.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import structlog
import urllib3
from kubernetes import client as k8s

from baseline_operator.policy.names import FIELD_MANAGER
from baseline_operator.policy.objects import Body, Kind, ObjectRef

log = structlog.get_logger(__name__)

APPLY_CONTENT_TYPE = "application/apply-patch+yaml"
MERGE_PATCH_CONTENT_TYPE = "application/merge-patch+json"
_RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})


class ApiError(Exception):
    """A request the API server refused (or never answered), after retries."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}" if status else message)
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409


@dataclass(frozen=True)
class Response:
    status: int
    body: Body
    warnings: tuple[str, ...] = ()


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


@dataclass
class KubeApi:
    """The operator's only door to the API server."""

    api_client: k8s.ApiClient
    budget: int = 8
    timeout: float = 30.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def __post_init__(self) -> None:
        self._slots = asyncio.Semaphore(self.budget)

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
            if exc.not_found:
                return False
            raise
        return True

    async def get(self, ref: ObjectRef) -> Body | None:
        try:
            return (await self.request("GET", object_path(ref))).body
        except ApiError as exc:
            if exc.not_found:
                return None
            raise

    async def patch_status(self, kind: Kind, name: str, status: Body) -> Body:
        """Merge-patch the status subresource of a cluster-scoped object."""
        path = object_path(ObjectRef(kind, None, name)) + "/status"
        response = await self.request(
            "PATCH", path, body={"status": status}, content_type=MERGE_PATCH_CONTENT_TYPE
        )
        return response.body

    async def create(self, kind: Kind, namespace: str | None, body: Body) -> Body:
        return (await self.request("POST", collection_path(kind, namespace), body=body)).body

    async def replace(self, ref: ObjectRef, body: Body) -> Body:
        return (await self.request("PUT", object_path(ref), body=body)).body

    # ------------------------------------------------------------------ transport

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, str]] = (),
        body: Body | None = None,
        content_type: str = "application/json",
    ) -> Response:
        for attempt in range(self.retry.attempts):
            async with self._slots:
                try:
                    response = await asyncio.to_thread(
                        self._send, method, path, list(query), body, content_type
                    )
                except (urllib3.exceptions.HTTPError, OSError) as exc:
                    failure: ApiError = ApiError(0, "Unreachable", f"{method} {path}: {exc}")
                    retry_after: float | None = None
                else:
                    if 200 <= response[0] < 300:
                        return Response(response[0], response[1], response[3])
                    failure = _error_from(response[0], response[1])
                    retry_after = response[2]
            if not _retriable(failure, method) or attempt == self.retry.attempts - 1:
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

    def _send(
        self,
        method: str,
        path: str,
        query: list[tuple[str, str]],
        body: Body | None,
        content_type: str,
    ) -> tuple[int, Body, float | None, tuple[str, ...]]:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        _, url, headers, serialized, _ = self.api_client.param_serialize(
            method=method,
            resource_path=path,
            query_params=query,
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        raw = self.api_client.call_api(
            method, url, header_params=headers, body=serialized, _request_timeout=self.timeout
        )
        data: bytes = raw.read()  # type: ignore[no-untyped-call]
        try:
            parsed = json.loads(data) if data else {}
        except ValueError:
            parsed = {"message": data.decode("utf-8", "replace")[:500]}
        retry_after = raw.headers.get("Retry-After")
        warnings = tuple(_warnings(raw.headers))
        return (
            raw.status,
            parsed if isinstance(parsed, dict) else {},
            float(retry_after) if retry_after and retry_after.isdigit() else None,
            warnings,
        )


def _error_from(status: int, body: Body) -> ApiError:
    message = str(body.get("message") or body).strip()
    return ApiError(status, str(body.get("reason") or ""), message)


def _retriable(error: ApiError, method: str) -> bool:
    if error.status == 0 or error.status in _RETRIED_STATUSES:
        return True
    # An optimistic-concurrency conflict is worth another try; a failed uid precondition
    # (the object was replaced) or AlreadyExists is not.
    return error.status == 409 and method in {"PUT", "PATCH"} and error.reason == "Conflict"


def _warnings(headers: Any) -> list[str]:
    """The `Warning: 299 - "text"` headers of a response, as text."""
    values = headers.getlist("Warning") if hasattr(headers, "getlist") else []
    if not values and headers.get("Warning"):
        values = [headers.get("Warning")]
    texts = []
    for value in values:
        for part in _split_warning_header(value):
            texts.append(part)
    return texts


def _split_warning_header(value: str) -> list[str]:
    # RFC 7234 warn-value: code SP agent SP quoted-text; several may share one header.
    texts: list[str] = []
    rest = value.strip()
    while rest:
        code_agent, quote_start, remainder = rest.partition('"')
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
        del code_agent
    return texts


def collection_path(kind: Kind, namespace: str | None) -> str:
    root = f"/apis/{kind.group}/{kind.version}" if kind.group else f"/api/{kind.version}"
    if kind.namespaced and namespace:
        return f"{root}/namespaces/{quote(namespace)}/{kind.plural}"
    return f"{root}/{kind.plural}"


def object_path(ref: ObjectRef) -> str:
    return f"{collection_path(ref.kind, ref.namespace)}/{quote(ref.name)}"
