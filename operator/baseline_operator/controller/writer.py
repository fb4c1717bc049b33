"""Making the writes a diff asks for, and telling the view about each one.

Which request a change becomes:

- an object the operator makes, not there yet: POST (create). AlreadyExists means
  someone else's object holds the name: that one object is read, and the next pass
  decides (a conflict, or an adoption as `adopt` allows);
- an object of the operator's that differs, or one adopted: PUT of the whole object,
  carrying the resourceVersion it replaces. It puts back exactly what the baseline
  wants, including fields another manager added, which server-side apply would keep;
- fields the operator sets on an object of others (the default ServiceAccount), and
  namespace labels: server-side apply as `baseline-operator`;
- an object no longer wanted: DELETE with a uid precondition.

Every failure is classified, not described: the namespace is gone (nothing to do,
nothing to report), the view was stale (look again soon), the kind is not served
(wait for the next resync), or the server refused (report and retry with backoff).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import structlog

from baseline_operator.controller.view import ClusterView
from baseline_operator.kube.client import ApiError, KubeApi
from baseline_operator.policy.diff import Apply, ApplyReason, Delete, observe
from baseline_operator.policy.names import is_managed
from baseline_operator.policy.objects import NAMESPACE, ObjectRef, Ownership

log = structlog.get_logger(__name__)


class FailureKind(StrEnum):
    NAMESPACE_GONE = "NamespaceGone"  # the namespace is gone or terminating: not a failure
    STALE = "Stale"  # the view was behind the server: look again once the watch catches up
    NOT_SERVED = "NotServed"  # the API server does not serve the kind (its CRD is missing)
    REFUSED = "Refused"  # the server refused the write: report it and retry with backoff
    FENCED = "Fenced"  # not sent: this replica is not (surely) the leader now


@dataclass(frozen=True)
class WriteFailure:
    ref: ObjectRef
    kind: FailureKind
    message: str

    @property
    def reported(self) -> bool:
        """Whether the failure is the baseline's to report (not the view's or the namespace's)."""
        return self.kind in (FailureKind.NOT_SERVED, FailureKind.REFUSED)


def classify(ref: ObjectRef, error: ApiError) -> WriteFailure:
    if error.fenced:
        return WriteFailure(ref, FailureKind.FENCED, str(error))
    if error.namespace_gone(ref.namespace):
        return WriteFailure(ref, FailureKind.NAMESPACE_GONE, str(error))
    if error.kind_not_served:
        kind = ref.kind
        return WriteFailure(
            ref,
            FailureKind.NOT_SERVED,
            f"{ref}: {kind.plural}.{kind.group}/{kind.version} is not served by the API server"
            " (is its CRD installed?)",
        )
    if error.conflict or error.not_found:
        return WriteFailure(ref, FailureKind.STALE, f"{ref}: {error}")
    return WriteFailure(ref, FailureKind.REFUSED, f"{ref}: {error}")


@dataclass(frozen=True)
class LabelsApplied:
    """The outcome of applying a namespace's labels: a failure, or the API server's
    warnings. Raising the Pod Security enforce level makes the server warn of every running
    pod the new level would reject, in the answer to the write itself."""

    failure: WriteFailure | None
    warnings: tuple[str, ...] = ()


@dataclass
class Writer:
    kube: KubeApi
    view: ClusterView

    async def apply(self, item: Apply) -> WriteFailure | None:
        ref = item.desired.ref
        seen = self.view.watched_version(ref)
        try:
            if item.desired.ownership is Ownership.FIELDS or item.reason is ApplyReason.RELEASE:
                answer = (await self.kube.apply(item.body)).body
            elif item.reason is ApplyReason.CREATE:
                return await self._create(item, seen)
            else:
                answer = await self._replace(item)
        except ApiError as exc:
            return self._failed(ref, exc)
        self.view.wrote(ref, answer, seen=seen)
        return None

    async def delete(self, item: Delete) -> WriteFailure | None:
        seen = self.view.watched_version(item.ref)
        try:
            await self.kube.delete(item.ref, item.uid)
        except ApiError as exc:
            if exc.conflict:
                return None  # replaced since it was seen (uid): not ours to delete any more
            return self._failed(item.ref, exc)
        self.view.wrote(item.ref, None, seen=seen)
        return None

    def _failed(self, ref: ObjectRef, error: ApiError) -> WriteFailure:
        failure = classify(ref, error)
        if failure.kind is FailureKind.NOT_SERVED:
            self.view.kind_not_served(ref.kind)
        return failure

    async def apply_labels(self, namespace: str, labels: dict[str, str]) -> LabelsApplied:
        """Server-side apply of the operator's labels on a namespace (exactly this set)."""
        ref = ObjectRef(NAMESPACE, None, namespace)
        metadata: dict[str, Any] = {"name": namespace}
        if labels:
            metadata["labels"] = labels
        seen = self.view.watched_version(ref)
        try:
            answer = await self.kube.apply(
                {"apiVersion": "v1", "kind": "Namespace", "metadata": metadata}
            )
        except ApiError as exc:
            if exc.not_found and not exc.kind_not_served:
                return LabelsApplied(WriteFailure(ref, FailureKind.NAMESPACE_GONE, str(exc)))
            return LabelsApplied(classify(ref, exc))
        self.view.wrote(ref, answer.body, seen=seen)
        return LabelsApplied(None, answer.warnings)

    async def _create(self, item: Apply, seen: str | None) -> WriteFailure | None:
        ref = item.desired.ref
        try:
            answer = await self.kube.create(ref.kind, ref.namespace, item.body)
        except ApiError as exc:
            if not exc.already_exists:
                raise
        else:
            self.view.wrote(ref, answer, seen=seen)
            return None
        # Someone else's object (or one of ours the watch has not shown yet) holds the name.
        current = await self.kube.get(ref)
        if current is None:
            return WriteFailure(ref, FailureKind.STALE, f"{ref}: deleted while being created")
        labels = (current.get("metadata") or {}).get("labels") or {}
        if is_managed(labels):
            self.view.wrote(ref, current, seen=seen)
        else:
            self.view.found(observe(current))
        return WriteFailure(ref, FailureKind.STALE, f"{ref}: exists; looked at it again")

    async def _replace(self, item: Apply) -> dict[str, Any]:
        """PUT the whole object over the version the diff saw (409 when it moved on).

        Always a PUT for the operator's own objects, whatever `item.repair` says: it needs no
        read, leaves nothing of another manager's, and after a create by POST (an Update
        entry in managedFields) a server-side apply would not remove fields the baseline no
        longer wants.
        """
        ref = item.desired.ref
        body = copy.deepcopy(item.body)
        version = item.resource_version or self.view.version_of(ref)
        if version:
            body["metadata"]["resourceVersion"] = version
        finalizers = item.finalizers or self.view.finalizers_of(ref)
        if finalizers:
            # Finalizers are others' (the External Secrets Operator's): they are kept.
            body["metadata"]["finalizers"] = list(finalizers)
        return await self.kube.replace(ref, body)
