"""The operator's configuration: one frozen object from the command line to every part."""

from __future__ import annotations

from dataclasses import dataclass

from baseline_operator.policy.admission import EXTERNAL_SECRETS_USERNAME
from baseline_operator.policy.names import OPERATOR_NAMESPACE, OPERATOR_SERVICE_ACCOUNT


@dataclass(frozen=True)
class OperatorOptions:
    # The operator's own namespace (its Lease; always excluded from selection).
    namespace: str = OPERATOR_NAMESPACE
    service_account: str = OPERATOR_SERVICE_ACCOUNT
    # Namespaces reconciled at once, and requests in flight at once (the request budget).
    # More workers than requests: a reconcile spends part of its time between requests
    # (reading the view, planning, waiting for its labels' write after its objects'), and
    # other namespaces' writes fill the budget meanwhile. The budget alone bounds the
    # load on the API server. How much 16 buy over 4 is not settled by the measurements
    # so far (docs/benchmarks.md).
    workers: int = 16
    request_budget: int = 8
    # How long one request may take before it is given up (and retried).
    request_timeout: float = 30.0
    # Every namespace is looked at again this often, and objects of others found where
    # the operator wanted to create one are read again.
    resync_seconds: float = 300.0
    # The watches are restarted by the server after this long (a bookmark keeps the place).
    watch_timeout: int = 300
    # Events name this instance (the pod's name).
    instance: str = "baseline-operator"
    # Whether pods may be watched at all (only when a baseline asks for workloadAudit).
    workload_audit: bool = True
    leader_election: bool = True
    liveness: str | None = None
    # Where Prometheus metrics are served (host:port); empty: not served.
    metrics_address: str = ""
    verbosity: int = 0
    # The brake on mass removal: a generation that would remove a baseline's posture from
    # more than this share of the namespaces holding it (and at least `minimum` of them)
    # waits for an acknowledgement.
    removal_brake_share: float = 0.5
    removal_brake_minimum: int = 5
    # The user tamper protection lets through; by default this ServiceAccount's.
    username: str | None = None
    # The External Secrets Operator's user, which tamper protection lets change its own
    # finalizers on generated ExternalSecrets.
    eso_username: str = EXTERNAL_SECRETS_USERNAME

    @property
    def operator_username(self) -> str:
        return self.username or (f"system:serviceaccount:{self.namespace}:{self.service_account}")
