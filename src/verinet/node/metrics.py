"""The node's Prometheus metrics, in a registry of its own (several nodes may share a process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class NodeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.executions = Counter(
            "verinet_executions",
            "Model runs, by path (direct HTTP or job) and result (ok or the error's class)",
            ["path", "result"],
            registry=self.registry,
        )
        self.execution_seconds = Histogram(
            "verinet_execution_seconds",
            "Wall time of one model run, worker round trip included",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5, 30),
            registry=self.registry,
        )
        self.jobs = Counter(
            "verinet_jobs",
            "Jobs that ended for this node",
            ["mode", "result"],
            registry=self.registry,
        )
        self.transactions = Counter(
            "verinet_transactions", "Transactions sent, by kind", ["kind"], registry=self.registry
        )
        self.games = Counter(
            "verinet_dispute_games",
            "Dispute games this node played or judged, by role and outcome",
            ["role", "outcome"],
            registry=self.registry,
        )
        self.http_errors = Counter(
            "verinet_http_errors", "Requests refused, by error", ["error"], registry=self.registry
        )
        self.block = Gauge("verinet_chain_block", "Last block polled", registry=self.registry)
        self.active_jobs = Gauge(
            "verinet_active_jobs", "Jobs not yet final", registry=self.registry
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
