"""Which baselines apply to which namespace."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from baseline_operator.api.resource import SecurityBaseline
from baseline_operator.api.spec import LabelSelector, SelectorOperator
from baseline_operator.policy.names import (
    ALWAYS_EXCLUDED_NAMESPACES,
    APPLIED_PREFIX,
    OPERATOR_NAMESPACE,
    applied_label,
)


def matches_selector(selector: LabelSelector, labels: Mapping[str, str]) -> bool:
    """metav1.LabelSelector semantics: every matchLabels pair and every expression holds."""
    for key, wanted in selector.match_labels.items():
        if labels.get(key) != wanted:
            return False
    for requirement in selector.match_expressions:
        present = requirement.key in labels
        value: str | None = labels.get(requirement.key)
        match requirement.operator:
            case SelectorOperator.IN:
                ok = present and value in requirement.values
            case SelectorOperator.NOT_IN:
                ok = not present or value not in requirement.values
            case SelectorOperator.EXISTS:
                ok = present
            case SelectorOperator.DOES_NOT_EXIST:
                ok = not present
        if not ok:
            return False
    return True


def is_always_excluded(namespace: str, operator_namespace: str = OPERATOR_NAMESPACE) -> bool:
    """Namespaces no baseline may ever touch: the control plane's and the operator's own."""
    return namespace in ALWAYS_EXCLUDED_NAMESPACES or namespace == operator_namespace


def selects(
    baseline: SecurityBaseline,
    namespace: str,
    labels: Mapping[str, str],
    operator_namespace: str = OPERATOR_NAMESPACE,
) -> bool:
    if is_always_excluded(namespace, operator_namespace):
        return False
    if namespace in baseline.spec.exclude_namespaces:
        return False
    return matches_selector(baseline.spec.namespace_selector, selectable_labels(labels))


def unserved_first(
    namespaces: Iterable[tuple[str, Mapping[str, str]]],
    baselines: Iterable[SecurityBaseline],
    operator_namespace: str = OPERATOR_NAMESPACE,
) -> list[str]:
    """Namespace names (with their labels), those that an enforcing baseline selects but
    that do not carry its `applied.` mark first, in their order otherwise.

    After a restart every namespace is looked at again; one created while the operator
    was down (or newly selected) has no posture at all and is served before the thousands
    that only need a check.
    """
    chosen = list(baselines)

    def unserved(name: str, labels: Mapping[str, str]) -> bool:
        return any(
            applied_label(baseline.name) not in labels
            and selects(baseline, name, labels, operator_namespace)
            for baseline in chosen
        )

    first: list[str] = []
    rest: list[str] = []
    for name, labels in namespaces:
        (first if unserved(name, labels) else rest).append(name)
    return first + rest


def selectable_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """A namespace's labels without the operator's own `applied.` marks.

    A selector that could see those marks would feed back on itself: applying a
    baseline would change which baselines select the namespace.
    """
    return {key: value for key, value in labels.items() if not key.startswith(APPLIED_PREFIX)}


def baselines_for(
    namespace: str,
    labels: Mapping[str, str],
    baselines: Iterable[SecurityBaseline],
    operator_namespace: str = OPERATOR_NAMESPACE,
) -> list[SecurityBaseline]:
    """The baselines that select a namespace, in name order (the order is part of determinism)."""
    chosen = [b for b in baselines if selects(b, namespace, labels, operator_namespace)]
    return sorted(chosen, key=lambda baseline: baseline.name)
