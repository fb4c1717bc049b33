"""Several baselines in one namespace: what each contributes, and who holds what exists once.

Most objects simply add up, each named after its baseline (NetworkPolicies and
RoleBindings are additive, every ResourceQuota applies). Only what a namespace
holds once is decided here:

- Pod Security labels: the strictest level per mode;
- the LimitRange, and an ExternalSecret or ServiceAccount name two baselines
  both want: the higher `priority` wins, ties go to the name that sorts first,
  and the loser is told who won (a Supersession);
- the namespace's default ServiceAccount, which the operator does not own: it
  only sets automountServiceAccountToken, false if any baseline asks for false.

Every other object is named after its baseline so that two baselines never want the
same one (policy.names). Should two names still coincide (a baseline `b` with an
ingress rule `x-default-deny` and a baseline `b-ingress-x` with a default deny both
want NetworkPolicy `b-ingress-x-default-deny`), the object goes to the baseline that
ranks first as above, and the other is told: a Collision, which its status reports as
a conflict naming the object, never a silent loss.

The plan depends on the set of baselines only, never on the order they come in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from baseline_operator.api.resource import SecurityBaseline
from baseline_operator.api.spec import PodSecurityLevel
from baseline_operator.policy.exceptions import ActiveException, relaxed_pod_security
from baseline_operator.policy.names import applied_label
from baseline_operator.policy.objects import (
    EXTERNAL_SECRET,
    LIMIT_RANGE,
    ROLE,
    ROLE_BINDING,
    SERVICE_ACCOUNT,
    DesiredObject,
    Kind,
    ObjectRef,
    Ownership,
)
from baseline_operator.policy.podsecurity import MODES, level_key, rank, version_key
from baseline_operator.policy.render import render_namespace_objects
from baseline_operator.policy.render_rbac import service_account_role_name

DEFAULT_SERVICE_ACCOUNT = "default"

# Kinds a namespace holds one of, whatever their names: with two LimitRanges, the
# defaults a pod gets would depend on the order the admission plugin happens to read them.
_ONE_PER_NAMESPACE = frozenset({LIMIT_RANGE})
# Kinds whose names the user gives: two baselines may want the same one by design, and
# priority decides. Any other contest is an accident of naming (a Collision).
_USER_NAMED = frozenset({SERVICE_ACCOUNT, EXTERNAL_SECRET})


@dataclass(frozen=True)
class Supersession:
    """A baseline lost a priority contest for something a namespace holds once."""

    baseline: str  # the loser
    what: str  # "LimitRange", "ExternalSecret db-credentials", "ServiceAccount app-sa"
    winner: str
    message: str


@dataclass(frozen=True)
class Collision:
    """Two baselines generate an object of the same kind and name: one holds it."""

    baseline: str  # the one that does not get its object
    ref: ObjectRef
    holder: str
    message: str


@dataclass(frozen=True)
class NamespacePlan:
    namespace: str
    baselines: tuple[str, ...]  # names of the planned baselines, sorted
    labels: dict[str, str]  # the namespace labels the operator owns
    objects: tuple[DesiredObject, ...]  # after layering, sorted by ref
    superseded: tuple[Supersession, ...]
    # Generated names that coincided by accident; each loser must report Conflicted.
    collisions: tuple[Collision, ...] = ()


def plan_namespace(
    namespace: str,
    baselines: Sequence[SecurityBaseline],
    exceptions: Mapping[str, Sequence[ActiveException]] | None = None,
    namespace_labels_now: Mapping[str, str] | None = None,
) -> NamespacePlan:
    """Layer the baselines that select a namespace (selection is done by the caller).

    `exceptions` are each baseline's exceptions in force (by baseline name, see
    policy.exceptions.active_exceptions); an exception that covers the namespace lowers
    that baseline's own Pod Security enforce contribution before the baselines are layered,
    so a stricter overlapping baseline still wins. `namespace_labels_now` are the
    namespace's labels as they are (an exception's namespaceSelector reads them).
    """
    ranked = sorted(baselines, key=_precedence)
    names = [baseline.name for baseline in ranked]
    if len(set(names)) != len(names):
        raise ValueError(f"baselines must have distinct names, got {sorted(names)}")
    objects, superseded, collisions = _layer_objects(namespace, ranked)
    default_account = _default_service_account(namespace, ranked)
    if default_account is not None:
        objects.append(default_account)
    return NamespacePlan(
        namespace=namespace,
        baselines=tuple(sorted(names)),
        labels=namespace_labels(
            ranked,
            exceptions=exceptions,
            namespace=namespace,
            namespace_labels_now=namespace_labels_now,
        ),
        objects=tuple(sorted(objects, key=lambda item: item.ref)),
        superseded=tuple(sorted(superseded, key=lambda lost: (lost.baseline, lost.what))),
        collisions=tuple(sorted(collisions, key=lambda lost: (lost.baseline, lost.ref))),
    )


def _precedence(baseline: SecurityBaseline) -> tuple[int, str]:
    """Sort key: whoever sorts first wins what is held once (higher priority, then name)."""
    return (-baseline.spec.priority, baseline.name)


# ----------------------------------------------------------------------------- labels


def namespace_labels(
    baselines: Sequence[SecurityBaseline],
    exceptions: Mapping[str, Sequence[ActiveException]] | None = None,
    namespace: str = "",
    namespace_labels_now: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The applied mark of every baseline, and the strictest Pod Security level per mode
    (each baseline's enforce level relaxed first by its own exceptions in force)."""
    labels = {applied_label(baseline.name): "true" for baseline in baselines}
    levels = {
        baseline.name: _levels(
            baseline,
            (exceptions or {}).get(baseline.name, ()),
            namespace,
            namespace_labels_now or {},
        )
        for baseline in baselines
    }
    for mode in MODES:
        setters = [b for b in baselines if level_key(mode) in levels[b.name]]
        if not setters:
            continue
        # The strictest level wins; among equal levels, precedence picks whose version counts.
        winner = min(
            setters, key=lambda b: (-rank(levels[b.name][level_key(mode)]), *_precedence(b))
        )
        labels[level_key(mode)] = levels[winner.name][level_key(mode)]
        version = _version(winner, mode)
        if version is not None:
            labels[version_key(mode)] = version
    return dict(sorted(labels.items()))


def _levels(
    baseline: SecurityBaseline,
    active: Sequence[ActiveException],
    namespace: str,
    namespace_labels_now: Mapping[str, str],
) -> dict[str, str]:
    """One baseline's Pod Security levels by label key, with its exceptions applied."""
    own = {
        level_key(mode): level for mode in MODES if (level := _level(baseline, mode)) is not None
    }
    if not active:
        return own
    return relaxed_pod_security(own, active, namespace, namespace_labels_now)


def _level(baseline: SecurityBaseline, mode: str) -> str | None:
    settings = baseline.spec.pod_security
    level: PodSecurityLevel | None = getattr(settings, mode) if settings else None
    return None if level is None else level.value


def _version(baseline: SecurityBaseline, mode: str) -> str | None:
    settings = baseline.spec.pod_security
    version: str | None = getattr(settings, f"{mode}_version") if settings else None
    return version


# ----------------------------------------------------------------------------- objects

# What an object competes for: a name of a kind, or (name None) the kind as a whole.
_Claim = tuple[Kind, str | None]


def _claim(item: DesiredObject) -> _Claim:
    kind = item.ref.kind
    return (kind, None) if kind in _ONE_PER_NAMESPACE else (kind, item.ref.name)


def _describe(claim: _Claim) -> str:
    kind, name = claim
    return kind.kind if name is None else f"{kind.kind} {name}"


def _layer_objects(
    namespace: str, ranked: Sequence[SecurityBaseline]
) -> tuple[list[DesiredObject], list[Supersession], list[Collision]]:
    """Every baseline's objects, minus what an earlier-ranked baseline already holds.

    ExternalSecrets and ServiceAccounts keep user-given names, so two baselines
    may want the same one (a Supersession); everything else is named after its
    baseline and only meets another object when names coincide by accident, which
    the same rule settles and reports as a Collision.
    """
    holders: dict[_Claim, SecurityBaseline] = {}
    kept: list[DesiredObject] = []
    superseded: list[Supersession] = []
    collisions: list[Collision] = []
    for baseline in ranked:
        rendered = render_namespace_objects(baseline, namespace)
        dropped: set[ObjectRef] = set()
        for item in rendered:
            claim = _claim(item)
            winner = holders.get(claim)
            if winner is None:
                continue
            dropped.add(item.ref)
            if item.ref.kind in _ONE_PER_NAMESPACE or item.ref.kind in _USER_NAMED:
                superseded.append(_supersession(baseline, _describe(claim), winner))
            else:
                collisions.append(_collision(baseline, item.ref, winner))
            if item.ref.kind == SERVICE_ACCOUNT:
                dropped |= _grants_of(baseline, item.ref)
        for item in rendered:
            if item.ref in dropped:
                continue
            if holders.get(_claim(item)) is baseline:
                # One baseline generating one name twice (a name shortened with a hash
                # can meet another): its own plan cannot hold both.
                collisions.append(_collision(baseline, item.ref, baseline))
                continue
            kept.append(item)
            holders[_claim(item)] = baseline
    return kept, superseded, collisions


def _collision(loser: SecurityBaseline, ref: ObjectRef, holder: SecurityBaseline) -> Collision:
    if holder is loser:
        message = f"{ref} is generated twice by this baseline; only the first is kept"
    else:
        message = (
            f"{ref} is also generated by baseline {holder.name}, which holds it;"
            " rename one of the baselines or the rule that names it"
        )
    return Collision(baseline=loser.name, ref=ref, holder=holder.name, message=message)


def _grants_of(baseline: SecurityBaseline, account: ObjectRef) -> set[ObjectRef]:
    """The Role and RoleBinding a baseline made for one of its ServiceAccounts."""
    name = service_account_role_name(baseline.name, account.name)
    return {
        ObjectRef(ROLE, account.namespace, name),
        ObjectRef(ROLE_BINDING, account.namespace, name),
    }


def _supersession(loser: SecurityBaseline, what: str, winner: SecurityBaseline) -> Supersession:
    return Supersession(
        baseline=loser.name,
        what=what,
        winner=winner.name,
        message=f"{what} held by baseline {winner.name} (priority {winner.spec.priority})",
    )


def _default_service_account(
    namespace: str, baselines: Sequence[SecurityBaseline]
) -> DesiredObject | None:
    """The fields the operator sets on the namespace's own default ServiceAccount."""
    settings = [
        b.spec.rbac.default_service_account
        for b in baselines
        if b.spec.rbac is not None and b.spec.rbac.default_service_account is not None
    ]
    if not settings:
        return None
    body = {
        "apiVersion": SERVICE_ACCOUNT.api_version,
        "kind": SERVICE_ACCOUNT.kind,
        "metadata": {"name": DEFAULT_SERVICE_ACCOUNT, "namespace": namespace},
        # One baseline that wants no token mounted is enough: the safer setting wins.
        "automountServiceAccountToken": all(
            setting.automount_service_account_token for setting in settings
        ),
    }
    return DesiredObject(ObjectRef.of(body), body, None, Ownership.FIELDS)
