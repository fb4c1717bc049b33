"""The brake on mass removal.

A typo in a selector, a section deleted from a baseline, a rename in Git (the old
baseline deleted) would otherwise take deny policies, quotas, admin bindings and Pod
Security labels out of every namespace at once. When one generation of a baseline
would remove its posture from more than `share` of the namespaces that hold it (and
from at least `minimum` of them), the removal is held: nothing of that baseline is
deleted or unlabelled anywhere, the baseline says so (Ready=False, RemovalHeld) and an
Event says how to go ahead: annotate the baseline with
`security.baseline.dev/acknowledge-removal: "<generation>"`.

"Would remove its posture" from a namespace that holds it (carries its applied label):
the namespace is no longer selected, the baseline is being deleted, or one of its
objects there is no longer wanted (a section or a rule was removed).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from baseline_operator.controller.baselines import ACKNOWLEDGE_REMOVAL, BaselineEntry
from baseline_operator.controller.view import ClusterView
from baseline_operator.policy.layering import plan_namespace
from baseline_operator.policy.names import applied_label
from baseline_operator.policy.select import selects


@dataclass(frozen=True)
class HeldRemoval:
    generation: int
    removing: int  # namespaces that would lose the posture
    holding: int  # namespaces that hold it now

    def message(self, name: str) -> str:
        return (
            f"generation {self.generation} would remove the posture of baseline {name} from"
            f" {self.removing} of the {self.holding} namespaces that hold it; held until the"
            f' baseline is annotated {ACKNOWLEDGE_REMOVAL}="{self.generation}"'
        )


@dataclass
class RemovalBrake:
    view: ClusterView
    operator_namespace: str
    share: float = 0.5
    minimum: int = 5
    _held: dict[str, HeldRemoval] = field(default_factory=dict)

    def held(self, name: str) -> HeldRemoval | None:
        return self._held.get(name)

    def update(self, entry: BaselineEntry) -> bool:
        """Judge a baseline's current generation again; whether what is held changed."""
        verdict = self.judge(entry)
        before = self._held.get(entry.name)
        if verdict is None:
            self._held.pop(entry.name, None)
        else:
            self._held[entry.name] = verdict
        return before != verdict

    def forget(self, name: str) -> None:
        self._held.pop(name, None)

    def judge(self, entry: BaselineEntry) -> HeldRemoval | None:
        """Whether this generation's removal must wait for an acknowledgement."""
        if entry.removal_acknowledged_now or (entry.baseline is None and not entry.deleting):
            return None  # acknowledged; or an invalid spec, which changes nothing anyway
        if entry.audit_mode and not entry.deleting:
            return None  # Audit mode writes nothing
        label = applied_label(entry.name)
        holding = 0
        removing = 0
        for name in self.view.namespace_names():
            state = self.view.namespace(name)
            if state is None or state.terminating or label not in state.labels:
                continue
            holding += 1
            if self._removes(entry, name, state.labels):
                removing += 1
        if removing < self.minimum or removing <= self.share * holding:
            return None
        return HeldRemoval(entry.generation, removing, holding)

    def _removes(self, entry: BaselineEntry, namespace: str, labels: Mapping[str, str]) -> bool:
        baseline = entry.baseline
        if entry.deleting or baseline is None:
            return True
        if not selects(baseline, namespace, labels, self.operator_namespace):
            return True
        wanted = {item.ref for item in plan_namespace(namespace, [baseline]).objects}
        return any(
            observed.owner == entry.name and ref not in wanted
            for ref, observed in self.view.objects_in(namespace).items()
        )
