"""Reconciling one baseline's cluster-scoped objects: its admission policies and bindings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from baseline_operator.controller.brake import RemovalBrake
from baseline_operator.controller.status import StatusKeeper
from baseline_operator.controller.view import ClusterView
from baseline_operator.controller.writer import FailureKind, WriteFailure, Writer
from baseline_operator.policy.admission import EXTERNAL_SECRETS_USERNAME, render_cluster_objects
from baseline_operator.policy.diff import OwnerState, diff_objects


class ClusterObjectsFailed(Exception):
    """The admission policies of a baseline could not be written; retried with backoff."""


@dataclass
class ClusterObjectsReconciler:
    view: ClusterView
    writer: Writer
    status: StatusKeeper
    brake: RemovalBrake
    operator_username: str
    eso_username: str = EXTERNAL_SECRETS_USERNAME

    async def reconcile(self, name: str) -> None:
        entry = self.view.baselines().get(name)
        if entry is not None and not entry.deleting and not entry.enforcing:
            return  # invalid spec or Audit mode: its admission policies stay as they are
        if entry is not None and entry.deleting and self.brake.held(name) is not None:
            return  # the deletion's removal is held: its admission policies stay
        if entry is None or entry.deleting:
            desired: tuple[Any, ...] = ()
            owners = {name: OwnerState(active=False)}  # always removed with the baseline
        else:
            assert entry.baseline is not None
            # The exceptions in force at the last moment they were judged: re-rendered when
            # that set changes (controller.exceptions).
            desired = tuple(
                render_cluster_objects(
                    entry.baseline,
                    self.operator_username,
                    self.eso_username,
                    exceptions=self.view.active_exceptions(name),
                )
            )
            owners = {name: OwnerState(adopt=entry.baseline.spec.adopt, active=True)}
        wanted = {item.ref for item in desired}
        observed = {
            ref: obj
            for ref, obj in self.view.cluster_objects().items()
            if obj.owner == name or ref in wanted
        }
        applies, deletes, conflicts = diff_objects(desired, observed, owners)
        failures: list[WriteFailure] = []
        for item in applies:  # a policy before its binding: render order is ref order
            failure = await self.writer.apply(item)
            if failure is not None:
                failures.append(failure)
        for gone in sorted(deletes, key=lambda d: d.ref.kind.kind, reverse=True):  # bindings first
            failure = await self.writer.delete(gone)
            if failure is not None:
                failures.append(failure)
        reported = sorted((f for f in failures if f.reported), key=lambda f: f.ref)
        problem = None
        if reported:
            problem = reported[0].message
        elif conflicts:
            problem = conflicts[0].message
        self.status.cluster_problem(name, problem)
        if any(f.kind is FailureKind.REFUSED for f in failures) or any(
            f.kind is FailureKind.STALE for f in failures
        ):
            raise ClusterObjectsFailed(
                f"admission policies of baseline {name}: {failures[0].message}"
            )
