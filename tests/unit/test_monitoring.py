"""manifests/monitoring and docs/operations.md name only metrics the operator exposes."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

from baseline_operator.controller.metrics import MetricSamples, OperatorMetrics

REPO = Path(__file__).parents[2]
METRIC = re.compile(r"\bbaseline_operator_[a-z_]+\b")


def exposed_names() -> set[str]:
    """Every sample name of an operator with some of everything to report."""
    metrics = OperatorMetrics()
    metrics.on_request("POST", "/api/v1/namespaces/a/serviceaccounts", 201, 0.01)
    metrics.on_request("PUT", "/api/v1/namespaces/a/limitranges/x", 200, 0.01)
    metrics.on_work(("namespace", "a"), 0.02, False)
    metrics.watch(
        lambda: MetricSamples(
            queue_depth=1,
            queue_oldest_age=0.5,
            informers={"namespaces": (0, 0, 3)},
            namespaces={"prod": {"selected": 1, "compliant": 1}},
            pods_audited=2,
            findings={"run-as-non-root": 1},
            exceptions={"prod": (1, 3600.0)},
        )
    )
    text = metrics.exposition().decode()
    return {
        sample.name for family in text_string_to_metric_families(text) for sample in family.samples
    }


def test_the_alerts_use_only_exposed_metrics() -> None:
    documents = [
        doc
        for path in sorted((REPO / "manifests" / "monitoring").glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]
    kinds = {doc["kind"] for doc in documents}
    assert {"Service", "ServiceMonitor", "PrometheusRule", "Kustomization"} <= kinds
    rule = next(doc for doc in documents if doc["kind"] == "PrometheusRule")
    expressions = [r["expr"] for group in rule["spec"]["groups"] for r in group["rules"]]
    used = {name for expression in expressions for name in METRIC.findall(expression)}
    assert used
    assert used <= exposed_names(), used - exposed_names()


def test_the_docs_table_lists_every_metric_family() -> None:
    docs = (REPO / "docs" / "operations.md").read_text()
    section = docs.split("## Metrics", 1)[1].split("\n## ", 1)[0]
    documented = set(METRIC.findall(section))
    families = {
        re.sub(r"_(bucket|count|sum)$", "", name)
        for name in exposed_names()
        if not name.endswith("_created")  # the client's creation stamps, not ours to list
    }
    assert families <= documented, families - documented


def test_the_deployment_exposes_the_metrics_port() -> None:
    deployment = yaml.safe_load((REPO / "manifests" / "base" / "deployment.yaml").read_text())
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports["metrics"] == 8081
