"""Prometheus metrics with TF Serving's names, on a private registry.

TF Serving exports its TensorFlow monitoring metrics with '/' replaced by ':' (so
``/tensorflow/serving/request_count`` is scraped as ``:tensorflow:serving:request_count``), counters
without a ``_total`` suffix and latencies as histograms in microseconds with buckets
10 * 1.8^i (33 buckets). Dashboards written for TF Serving therefore work unchanged.

The values live in prometheus-client metric objects (thread-safe, a registry of our own, never
the global one); :meth:`ServerMetrics.render` writes them in TF Serving's exposition (it differs
from prometheus-client's own writer only in not adding ``_total`` / ``_created`` samples).
"""
from __future__ import annotations

import math
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram

# monitoring::Buckets::Exponential(10, 1.8, 33): 33 buckets, the last one open-ended.
LATENCY_BUCKETS_US = tuple(10 * 1.8**i for i in range(32)) + (math.inf,)
# monitoring::Buckets::Exponential(1, 2, 15) for examples per request.
EXAMPLE_BUCKETS = tuple(float(2**i) for i in range(14)) + (math.inf,)


class ServerMetrics:
    """The server's metrics; one instance per server process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.request_count = Counter(
            "/tensorflow/serving/request_count".replace("/", ":"), "The total number of requests.",
            ["model_name", "status"], registry=r)
        self.request_latency = Histogram(
            ":tensorflow:serving:request_latency",
            "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
            ["model_name", "API", "entrypoint"], buckets=LATENCY_BUCKETS_US, registry=r)
        self.runtime_latency = Histogram(
            ":tensorflow:serving:runtime_latency",
            "Distribution of wall time (in microseconds) for Tensorflow runtime.",
            ["model_name", "API", "runtime"], buckets=LATENCY_BUCKETS_US, registry=r)
        self.example_counts = Histogram(
            ":tensorflow:serving:request_example_counts", "The number of tensorflow.Examples per request.",
            ["model"], buckets=EXAMPLE_BUCKETS, registry=r)
        self.example_count_total = Counter(
            ":tensorflow:serving:request_example_count_total", "The total number of tensorflow.Examples.",
            ["model"], registry=r)
        self.load_attempt_count = Counter(
            ":tensorflow:cc:saved_model:load_attempt_count",
            "The number of times a SavedModel was successfully loaded.", ["model_path", "status"], registry=r)
        self.warmup_latency = Histogram(
            ":tensorflow:serving:model_warmup_latency",
            "Distribution of wall time (in microseconds) for warming up the model.",
            ["model_path", "status"], buckets=LATENCY_BUCKETS_US, registry=r)

    # --- recording -------------------------------------------------------------------------
    def record_request(self, model_name: str, api: str, entrypoint: str, status: str, latency_s: float) -> None:
        self.request_count.labels(model_name, status).inc()
        self.request_latency.labels(model_name, api, entrypoint).observe(latency_s * 1e6)

    def record_runtime(self, model_name: str, api: str, runtime: str, latency_s: float) -> None:
        self.runtime_latency.labels(model_name, api, runtime).observe(latency_s * 1e6)

    def record_examples(self, model_name: str, count: int) -> None:
        self.example_counts.labels(model_name).observe(count)
        self.example_count_total.labels(model_name).inc(count)

    def record_load(self, model_path: str, ok: bool) -> None:
        self.load_attempt_count.labels(model_path, "success" if ok else "fail").inc()

    def record_warmup(self, model_path: str, ok: bool, latency_s: float) -> None:
        self.warmup_latency.labels(model_path, "OK" if ok else "ERROR").observe(latency_s * 1e6)

    # --- exposition ------------------------------------------------------------------------
    def render(self) -> str:
        """Prometheus text exposition in TF Serving's shape (no _total/_created suffixes)."""
        lines: list[str] = []
        for metric in self.registry.collect():
            samples = [s for s in metric.samples if not s.name.endswith("_created")]
            if not samples:
                continue
            if metric.type == "counter":
                lines.append(f"# TYPE {metric.name} counter")
                for s in samples:
                    if s.name.endswith("_total"):
                        lines.append(f"{metric.name}{{{_labels(s.labels.items())}}} {_num(s.value)}")
            elif metric.type == "histogram":
                lines.append(f"# TYPE {metric.name} histogram")
                for s in samples:
                    lines.append(f"{s.name}{{{_labels(s.labels.items())}}} {_num(s.value)}")
        return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(items: Iterable[tuple[str, str]]) -> str:
    return ",".join(f'{k}="{_escape(v)}"' for k, v in items)


def _num(value: float) -> str:
    if value == math.inf:
        return "+Inf"
    if float(value).is_integer() and abs(value) < 2**63:
        return str(int(value))
    return repr(float(value))
