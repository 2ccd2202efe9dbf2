"""Prometheus metrics of the model server, on a registry of its own.

Every request path calls into :class:`Metrics`, so the per-call cost matters: label
children are looked up once and cached in plain dicts (prometheus_client's
``labels()`` validates and locks on every call).
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Iterable

# Sub-millisecond (a single-sample ONNX Runtime call is ~12 µs) up to the 10 s range
# (large batches, slow models); the SageMaker contract caps a request at 60 s.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)
BATCH_SIZE_BUCKETS: tuple[float, ...] = tuple(float(2**i) for i in range(11))  # 1, 2, 4, ..., 1024

CONTENT_TYPE_TEXT = "text/plain; version=0.0.4; charset=utf-8"
CONTENT_TYPE_OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


class Metrics:
    """Server metrics: requests, latencies, batching, queue depth, model loads, process memory.

    Metric names (all labelled by ``model`` and ``version`` unless noted):

    - ``mlxport_requests_total`` and ``mlxport_request_failures_total`` (code >= 400), both
      also labelled by ``protocol`` ("sagemaker", "v2", ...) and HTTP ``code``.
    - ``mlxport_request_duration_seconds``, ``mlxport_queue_duration_seconds``,
      ``mlxport_compute_duration_seconds``: histograms from 100 µs to 60 s.
    - ``mlxport_batch_size``: histogram with buckets 1, 2, 4, ..., 1024.
    - ``mlxport_queue_depth``, ``mlxport_model_load_seconds``, ``mlxport_model_loaded``: gauges.
    - ``process_resident_memory_bytes`` and the other ``process_*`` metrics.

    Every method is thread-safe and cheap enough to call on every request.
    """

    def __init__(self) -> None:
        """Create the metrics on a fresh ``CollectorRegistry`` (never the global one)."""
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        mv = ("model", "version")
        mvpc = (*mv, "protocol", "code")
        # attribute: (type, name, help, labels, buckets) -- one row per metric the class docstring lists.
        table: dict[str, tuple[Any, str, str, tuple[str, ...], tuple[float, ...] | None]] = {
            "_requests": (Counter, "mlxport_requests",
                          "Requests answered, by model, version, protocol and HTTP status code.", mvpc, None),
            "_failures": (Counter, "mlxport_request_failures",
                          "Requests answered with an HTTP status code >= 400.", mvpc, None),
            "_duration": (Histogram, "mlxport_request_duration_seconds",
                          "Time from request received to response ready.", mv, LATENCY_BUCKETS),
            "_queue": (Histogram, "mlxport_queue_duration_seconds",
                       "Time a request waited in the batching queue.", mv, LATENCY_BUCKETS),
            "_compute": (Histogram, "mlxport_compute_duration_seconds",
                         "Time of one model call (one merged batch).", mv, LATENCY_BUCKETS),
            "_batch": (Histogram, "mlxport_batch_size",
                       "Samples per model call after dynamic batching.", mv, BATCH_SIZE_BUCKETS),
            "_depth": (Gauge, "mlxport_queue_depth", "Requests waiting in the batching queue.", mv, None),
            "_load_seconds": (Gauge, "mlxport_model_load_seconds",
                              "Seconds the last load (including warm-up) took.", mv, None),
            "_loaded": (Gauge, "mlxport_model_loaded",
                        "1 while the model version is loaded and serving, else 0.", mv, None),
        }
        for attr, (kind, name, text, labels, buckets) in table.items():
            extra = {"buckets": buckets} if buckets is not None else {}
            setattr(self, attr, kind(name, text, labels, registry=reg, **extra))
        _register_process_collector(reg)
        # Caches of label children: (metric id, label values) -> child.
        self._children: dict[tuple[Any, ...], Any] = {}
        # Unloaded versions: their draining scheduler must not bring the queue-depth series back.
        self._gone: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def _child(self, metric: Any, *values: str) -> Any:
        """Return the cached child of ``metric`` for ``values``, creating it on first use."""
        key = (id(metric), *values)
        child = self._children.get(key)
        if child is None:
            # Rare path; the lock keeps model_unloaded() from removing a child mid-creation.
            with self._lock:
                child = self._children.get(key)
                if child is None:
                    child = metric.labels(*values)
                    self._children[key] = child
        return child

    def request(self, model: str, version: str, protocol: str, code: int, seconds: float) -> None:
        """Count one answered request and observe its total duration.

        Args:
            model: Model name; "" when the request named no known model (never pass an
                unknown name from the URL: each label value is kept for good).
            version: Model version; "" when unknown.
            protocol: Which API answered: "sagemaker", "v2", ...
            code: HTTP status code sent; >= 400 also counts as a failure.
            seconds: Time from request received to response ready.
        """
        self._child(self._requests, model, version, protocol, str(code)).inc()
        if code >= 400:
            self._child(self._failures, model, version, protocol, str(code)).inc()
        self._child(self._duration, model, version).observe(seconds)

    def queue(self, model: str, version: str, seconds: float) -> None:
        """Observe how long one request waited in the batching queue.

        Args:
            model: Model name.
            version: Model version.
            seconds: Queue wait of the request.
        """
        self._child(self._queue, model, version).observe(seconds)

    def compute(self, model: str, version: str, seconds: float, batch_size: int) -> None:
        """Observe one model call: its duration and how many samples it carried.

        Args:
            model: Model name.
            version: Model version.
            seconds: Duration of the model call.
            batch_size: Samples in the (possibly merged) batch.
        """
        self._child(self._compute, model, version).observe(seconds)
        self._child(self._batch, model, version).observe(batch_size)

    def queue_depth(self, model: str, version: str, depth: int) -> None:
        """Set the number of requests now waiting for this model version.

        Args:
            model: Model name.
            version: Model version.
            depth: Requests in the queue.
        """
        if (model, version) in self._gone:
            return
        self._child(self._depth, model, version).set(depth)

    def model_loaded(self, model: str, version: str, seconds: float) -> None:
        """Record that a model version is loaded and warmed, and how long that took.

        Args:
            model: Model name.
            version: Model version.
            seconds: Load plus warm-up time.
        """
        self._gone.discard((model, version))
        self._child(self._load_seconds, model, version).set(seconds)
        self._child(self._loaded, model, version).set(1)

    def model_unloaded(self, model: str, version: str) -> None:
        """Record that a model version was unloaded.

        ``mlxport_model_loaded`` drops to 0 for it, and its queue-depth and load-time gauges are
        removed (later ``queue_depth`` calls for it are ignored until it is loaded again).
        Counters and histograms stay (Prometheus rates must not see them vanish).

        Args:
            model: Model name.
            version: Model version.
        """
        self._child(self._loaded, model, version).set(0)
        with self._lock:
            self._gone.add((model, version))
            for metric in (self._depth, self._load_seconds):
                if self._children.pop((id(metric), model, version), None) is not None:
                    _remove_quietly(metric, model, version)

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """Render every metric for a scrape.

        Args:
            accept: The scraper's ``Accept`` header. OpenMetrics is sent only when it asks
                for ``application/openmetrics-text``; otherwise the classic text format.

        Returns:
            The exposition body and its ``Content-Type``.
        """
        if accept and "application/openmetrics-text" in accept:
            from prometheus_client.openmetrics.exposition import generate_latest as generate_om

            return generate_om(self.registry), CONTENT_TYPE_OPENMETRICS
        from prometheus_client import generate_latest

        # The 0.0.4 content type: the same text, and every Prometheus version accepts it
        # (prometheus_client's default now says version=1.0.0, which older scrapers reject).
        return generate_latest(self.registry), CONTENT_TYPE_TEXT


def _remove_quietly(metric: Any, *values: str) -> None:
    try:
        metric.remove(*values)
    except KeyError:
        pass


def _register_process_collector(registry: Any) -> None:
    """Add ``process_*`` metrics: prometheus_client's /proc reader, else psutil (macOS)."""
    from prometheus_client import ProcessCollector

    collector = ProcessCollector(registry=registry)
    if any(family.samples for family in collector.collect()):
        return
    # No /proc (macOS): report resident memory through psutil when it is installed.
    registry.unregister(collector)
    try:
        import psutil
    except ImportError:
        return
    process = psutil.Process()
    registry.register(_CallbackCollector([
        ("process_resident_memory_bytes", "Resident memory size in bytes.",
         lambda: float(process.memory_info().rss)),
        ("process_virtual_memory_bytes", "Virtual memory size in bytes.",
         lambda: float(process.memory_info().vms)),
    ]))


class _CallbackCollector:
    """Gauges whose values are read from callbacks at scrape time."""

    def __init__(self, gauges: list[tuple[str, str, Callable[[], float]]]) -> None:
        self._gauges = gauges

    def collect(self) -> Iterable[Any]:
        from prometheus_client.core import GaugeMetricFamily

        for name, doc, read in self._gauges:
            yield GaugeMetricFamily(name, doc, value=read())

    def describe(self) -> Iterable[Any]:
        from prometheus_client.core import GaugeMetricFamily

        for name, doc, _ in self._gauges:
            yield GaugeMetricFamily(name, doc)
