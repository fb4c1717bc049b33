"""plan_namespace: labels, the default ServiceAccount, and who holds what exists once."""

from __future__ import annotations

from itertools import permutations
from typing import Any

import pytest

from baseline_operator.api.resource import SecurityBaseline
from baseline_operator.policy.layering import NamespacePlan, Supersession, plan_namespace
from baseline_operator.policy.names import could_generate, object_name
from baseline_operator.policy.objects import Ownership
from tests.unit.conftest import by_name, make_baseline

PSA = "pod-security.kubernetes.io/"


def _plan(*baselines: SecurityBaseline) -> NamespacePlan:
    return plan_namespace("shop", list(baselines))


def _secret(name: str, key: str) -> dict[str, Any]:
    return {
        "name": name,
        "secretStoreRef": {"name": "vault"},
        "data": [{"secretKey": "value", "remoteRef": {"key": key}}],
    }


# ----------------------------------------------------------------------------- labels


def test_every_planned_baseline_marks_the_namespace() -> None:
    plan = _plan(make_baseline("team"), make_baseline("org"))
    assert plan.baselines == ("org", "team")
    assert plan.labels == {
        "applied.security.baseline.dev/org": "true",
        "applied.security.baseline.dev/team": "true",
    }


def test_no_baselines_plan_nothing() -> None:
    plan = _plan()
    assert plan == NamespacePlan("shop", (), {}, (), ())


def test_pod_security_takes_the_strictest_level_per_mode() -> None:
    org = make_baseline(
        "org", priority=100, podSecurity={"enforce": "baseline", "warn": "restricted"}
    )
    team = make_baseline("team", podSecurity={"enforce": "restricted", "audit": "privileged"})
    plan = _plan(org, team)
    assert {k: v for k, v in plan.labels.items() if k.startswith(PSA)} == {
        f"{PSA}enforce": "restricted",  # team's, although org has the higher priority
        f"{PSA}audit": "privileged",  # only team sets audit
        f"{PSA}warn": "restricted",
    }


def test_the_version_comes_from_the_baseline_whose_level_won() -> None:
    org = make_baseline(
        "org", priority=100, podSecurity={"enforce": "baseline", "enforceVersion": "v1.29"}
    )
    team = make_baseline("team", podSecurity={"enforce": "restricted"})
    labels = _plan(org, team).labels
    assert labels[f"{PSA}enforce"] == "restricted"
    # The winner gives no version, so none is set, not org's v1.29.
    assert f"{PSA}enforce-version" not in labels

    team_pinned = make_baseline(
        "team", podSecurity={"enforce": "restricted", "enforceVersion": "v1.30"}
    )
    assert _plan(org, team_pinned).labels[f"{PSA}enforce-version"] == "v1.30"


def test_equal_levels_take_the_version_of_the_higher_priority() -> None:
    low = make_baseline(
        "a-low", priority=1, podSecurity={"warn": "restricted", "warnVersion": "v1.28"}
    )
    high = make_baseline(
        "z-high", priority=2, podSecurity={"warn": "restricted", "warnVersion": "latest"}
    )
    assert _plan(low, high).labels[f"{PSA}warn-version"] == "latest"


def test_equal_levels_and_priorities_take_the_version_of_the_first_name() -> None:
    first = make_baseline("alpha", podSecurity={"audit": "baseline", "auditVersion": "v1.27"})
    second = make_baseline("beta", podSecurity={"audit": "baseline", "auditVersion": "v1.29"})
    assert _plan(second, first).labels[f"{PSA}audit-version"] == "v1.27"


# ----------------------------------------------------------------------------- default SA


def _default_account(plan: NamespacePlan) -> dict[str, Any]:
    (item,) = [o for o in plan.objects if o.ref.kind.kind == "ServiceAccount"]
    assert item.ownership is Ownership.FIELDS
    assert item.baseline is None
    return item.body


@pytest.mark.parametrize(
    ("settings", "automount"),
    [
        ([False], False),
        ([True], True),
        ([True, True], True),
        ([True, False], False),
        ([False, True], False),
    ],
)
def test_default_service_account_mounts_a_token_only_if_no_baseline_says_false(
    settings: list[bool], automount: bool
) -> None:
    baselines = [
        make_baseline(
            f"b{index}", rbac={"defaultServiceAccount": {"automountServiceAccountToken": s}}
        )
        for index, s in enumerate(settings)
    ]
    assert _default_account(_plan(*baselines)) == {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": "default", "namespace": "shop"},
        "automountServiceAccountToken": automount,
    }


def test_baselines_that_say_nothing_leave_the_default_service_account_alone() -> None:
    plan = _plan(make_baseline("org", rbac={"admins": [{"kind": "Group", "name": "ops"}]}))
    assert all(o.ref.name != "default" for o in plan.objects)
    with_setting = _plan(
        make_baseline("org"), make_baseline("team", rbac={"defaultServiceAccount": {}})
    )
    assert _default_account(with_setting)["automountServiceAccountToken"] is False


# ----------------------------------------------------------------------------- held once


def test_the_limit_range_goes_to_the_higher_priority() -> None:
    org = make_baseline("org", priority=100, resources={"limitRange": {"max": {"cpu": "4"}}})
    team = make_baseline("team", priority=10, resources={"limitRange": {"max": {"cpu": "8"}}})
    plan = _plan(team, org)
    objects = by_name(plan.objects)
    assert "LimitRange org-limits" in objects
    assert "LimitRange team-limits" not in objects
    assert plan.superseded == (
        Supersession(
            baseline="team",
            what="LimitRange",
            winner="org",
            message="LimitRange held by baseline org (priority 100)",
        ),
    )


def test_limit_range_ties_go_to_the_name_that_sorts_first() -> None:
    alpha = make_baseline("alpha", resources={"limitRange": {"max": {"cpu": "4"}}})
    beta = make_baseline("beta", resources={"limitRange": {"max": {"cpu": "8"}}})
    plan = _plan(beta, alpha)
    assert [o.ref.name for o in plan.objects] == ["alpha-limits"]
    assert [(s.baseline, s.winner) for s in plan.superseded] == [("beta", "alpha")]


def test_a_lower_priority_without_a_limit_range_loses_nothing() -> None:
    org = make_baseline("org", priority=100)
    team = make_baseline("team", resources={"limitRange": {"max": {"cpu": "8"}}})
    plan = _plan(org, team)
    assert [o.ref.name for o in plan.objects] == ["team-limits"]
    assert plan.superseded == ()


def test_quotas_of_every_baseline_apply_side_by_side() -> None:
    org = make_baseline("org", priority=100, resources={"quota": {"hard": {"pods": "100"}}})
    team = make_baseline("team", resources={"quota": {"hard": {"pods": "20"}}})
    plan = _plan(org, team)
    objects = by_name(plan.objects)
    assert objects["ResourceQuota org-quota"]["spec"] == {"hard": {"pods": "100"}}
    assert objects["ResourceQuota team-quota"]["spec"] == {"hard": {"pods": "20"}}
    assert plan.superseded == ()


def test_network_policies_and_bindings_of_every_baseline_add_up() -> None:
    spec: dict[str, Any] = {
        "networkPolicy": {"defaultDeny": ["Ingress"], "allowDNS": True},
        "rbac": {"viewers": [{"kind": "Group", "name": "everyone"}]},
    }
    plan = _plan(make_baseline("org", priority=5, **spec), make_baseline("team", **spec))
    assert sorted(by_name(plan.objects)) == [
        "NetworkPolicy org-allow-dns",
        "NetworkPolicy org-default-deny",
        "NetworkPolicy team-allow-dns",
        "NetworkPolicy team-default-deny",
        "RoleBinding org-viewers",
        "RoleBinding team-viewers",
    ]
    assert plan.superseded == ()


def test_an_external_secret_name_goes_to_the_higher_priority() -> None:
    org = make_baseline("org", priority=100, externalSecrets=[_secret("db", "org/db")])
    team = make_baseline(
        "team", externalSecrets=[_secret("db", "team/db"), _secret("cache", "team/cache")]
    )
    plan = _plan(team, org)
    objects = {o.ref.name: o for o in plan.objects}
    assert set(objects) == {"db", "cache"}
    assert objects["db"].baseline == "org"
    assert objects["db"].body["spec"]["data"][0]["remoteRef"]["key"] == "org/db"
    assert objects["cache"].baseline == "team"
    assert plan.superseded == (
        Supersession(
            "team",
            "ExternalSecret db",
            "org",
            "ExternalSecret db held by baseline org (priority 100)",
        ),
    )


def test_external_secret_ties_go_to_the_name_that_sorts_first() -> None:
    alpha = make_baseline("alpha", externalSecrets=[_secret("db", "a")])
    beta = make_baseline("beta", externalSecrets=[_secret("db", "b")])
    plan = _plan(beta, alpha)
    assert [o.baseline for o in plan.objects] == ["alpha"]
    assert [(s.baseline, s.what, s.winner) for s in plan.superseded] == [
        ("beta", "ExternalSecret db", "alpha")
    ]


def test_a_superseded_service_account_takes_its_role_and_binding_along() -> None:
    rules = [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]
    org = make_baseline(
        "org", priority=100, rbac={"serviceAccounts": [{"name": "app-sa", "rules": rules}]}
    )
    team = make_baseline(
        "team",
        rbac={
            "serviceAccounts": [
                {"name": "app-sa", "automountServiceAccountToken": True, "rules": rules},
                {"name": "worker", "rules": rules},
            ]
        },
    )
    plan = _plan(team, org)
    assert sorted(by_name(plan.objects)) == [
        "Role org-sa.app-sa",
        "Role team-sa.worker",
        "RoleBinding org-sa.app-sa",
        "RoleBinding team-sa.worker",
        "ServiceAccount app-sa",
        "ServiceAccount worker",
    ]
    assert by_name(plan.objects)["ServiceAccount app-sa"]["automountServiceAccountToken"] is False
    assert [(s.baseline, s.what, s.winner, s.message) for s in plan.superseded] == [
        (
            "team",
            "ServiceAccount app-sa",
            "org",
            "ServiceAccount app-sa held by baseline org (priority 100)",
        )
    ]


def test_service_account_ties_go_to_the_name_that_sorts_first() -> None:
    alpha = make_baseline("alpha", rbac={"serviceAccounts": [{"name": "app-sa"}]})
    beta = make_baseline("beta", rbac={"serviceAccounts": [{"name": "app-sa"}]})
    plan = _plan(beta, alpha)
    assert [(o.ref.name, o.baseline) for o in plan.objects] == [("app-sa", "alpha")]
    assert [s.winner for s in plan.superseded] == ["alpha"]


def test_service_account_grants_cannot_meet_another_baselines_names() -> None:
    # With a dash, account "admins" of baseline "x" and the admins binding of baseline
    # "x-sa" were both RoleBinding x-sa-admins (issue 7, item 6); account "sa-y" of "x"
    # and account "y" of "x-sa" were both Role x-sa-sa-y.
    rules = [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]
    team = [{"kind": "Group", "name": "team"}]
    first = make_baseline(
        "x",
        rbac={
            "serviceAccounts": [
                {"name": "admins", "rules": rules},
                {"name": "sa-y", "rules": rules},
                {"name": "deployer", "rules": rules},
            ]
        },
    )
    second = make_baseline(
        "x-sa",
        rbac={
            "serviceAccounts": [{"name": "y", "rules": rules}],
            "admins": team,
            "deployers": team,
        },
    )
    plan = _plan(second, first)
    assert plan.superseded == () and plan.collisions == ()
    names = sorted(by_name(plan.objects))
    assert "RoleBinding x-sa-admins" in names and "RoleBinding x-sa.admins" in names
    assert "Role x-sa.sa-y" in names and "Role x-sa-sa.y" in names
    assert "Role x-sa-deployer" in names and "Role x-sa.deployer" in names


def test_names_that_still_coincide_are_a_collision_naming_the_object() -> None:
    # NetworkPolicy names keep their dash: "b" + "ingress-x-default-deny" meets
    # "b-ingress-x" + "default-deny". One holds it; the other reports, it is not dropped.
    first = make_baseline("b", networkPolicy={"ingress": [{"name": "x-default-deny"}]})
    second = make_baseline("b-ingress-x", networkPolicy={"defaultDeny": ["Ingress"]})
    plan = _plan(second, first)
    refs = [o.ref for o in plan.objects]
    assert len(refs) == len(set(refs)) == 1
    assert plan.superseded == ()
    (collision,) = plan.collisions
    assert (collision.baseline, collision.holder) == ("b-ingress-x", "b")
    assert str(collision.ref) == "NetworkPolicy shop/b-ingress-x-default-deny"
    assert "also generated by baseline b" in collision.message
    assert "NetworkPolicy shop/b-ingress-x-default-deny" in collision.message


def test_the_plan_does_not_depend_on_input_order() -> None:
    baselines = [
        make_baseline(
            "org",
            priority=100,
            podSecurity={"enforce": "baseline", "enforceVersion": "v1.29"},
            resources={"limitRange": {"max": {"cpu": "4"}}},
            externalSecrets=[_secret("db", "org")],
        ),
        make_baseline(
            "team",
            podSecurity={"enforce": "restricted"},
            rbac={"defaultServiceAccount": {"automountServiceAccountToken": True}},
            resources={"limitRange": {"max": {"cpu": "2"}}},
            externalSecrets=[_secret("db", "team")],
        ),
        make_baseline(
            "audit",
            priority=100,
            rbac={"defaultServiceAccount": {}},
            externalSecrets=[_secret("db", "audit")],
        ),
    ]
    plans = [plan_namespace("shop", list(order)) for order in permutations(baselines)]
    for plan in plans[1:]:
        assert plan == plans[0]
        assert [o.body for o in plan.objects] == [o.body for o in plans[0].objects]
    # "audit" and "org" tie at 100; "audit" sorts first and takes the ExternalSecret.
    assert {(s.baseline, s.what, s.winner) for s in plans[0].superseded} == {
        ("org", "ExternalSecret db", "audit"),
        ("team", "ExternalSecret db", "audit"),
        ("team", "LimitRange", "org"),
    }


def test_two_baselines_of_the_same_name_are_refused() -> None:
    with pytest.raises(ValueError, match="distinct names"):
        _plan(make_baseline("org"), make_baseline("org", priority=1))


@pytest.mark.parametrize(
    ("kind", "name", "generated"),
    [
        ("NetworkPolicy", "prod-default-deny", True),
        ("NetworkPolicy", "prod-ingress-web", True),
        ("NetworkPolicy", "prod-ingress-", False),
        ("NetworkPolicy", "production-default-deny", False),
        ("Role", "prod-sa.app", True),
        ("Role", "prod-sa-app", True),  # the name an older release gave it
        ("Role", "prod-admins", False),
        ("RoleBinding", "prod-admins", True),
        ("RoleBinding", "my-admins", False),
        ("ServiceAccount", "anything", True),
        ("LimitRange", "prod-limits", True),
        ("ResourceQuota", "prod-quota-2", False),
    ],
)
def test_which_names_a_baseline_generates(kind: str, name: str, generated: bool) -> None:
    assert could_generate("prod", kind, name) is generated


def test_hashed_names_are_recognised_as_generated() -> None:
    baseline = "a" * 50
    name = object_name(baseline, "ingress-" + "b" * 30)
    assert len(name) == 63
    assert could_generate(baseline, "NetworkPolicy", name)
    assert not could_generate("other", "NetworkPolicy", name)
