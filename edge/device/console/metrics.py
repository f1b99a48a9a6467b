"""The gateway's Prometheus metrics (served by the console on /metrics), in Prometheus's conventions.

Counters end in ``_total``, times are ``_seconds``, sizes ``_bytes``. Most values are read from
the parts' own ``stats()`` at scrape time (:class:`_StatsCollector`), so /metrics and the health
snapshot never disagree. Three histograms are fed as things happen: inference time and batch size
per batch (:meth:`GatewayMetrics.observe_batch`, from the gateway's delivery of classified
batches) and capture->publish latency per result (:class:`ObservingSink`, around the spool sink:
the latency the result message itself carries).

    edge_camera_frames_read_total{camera}        edge_camera_frames_processed_total{camera}
    edge_camera_frames_skipped_total{camera}     edge_camera_reconnects_total{camera}
    edge_camera_up{camera}                       edge_camera_fps{camera,stage=read|processed|skipped}
    edge_camera_last_frame_age_seconds{camera}   edge_camera_decode_scale{camera}
    edge_inference_frames_total                  edge_inference_batches_total
    edge_inference_errors_total                  edge_inference_frames_failed_total
    edge_inference_duration_seconds (histogram)  edge_inference_batch_size (histogram)
    edge_capture_to_publish_seconds (histogram)  edge_results_published_total
    edge_results_suppressed_total                edge_results_frames_lost_total   edge_results_queue_depth
    edge_spool_messages  edge_spool_bytes  edge_spool_max_bytes  edge_spool_dropped_total
    edge_mqtt_connected  edge_mqtt_reconnects_total  edge_mqtt_published_total  edge_mqtt_acked_total
    edge_mqtt_inflight_messages                  edge_model_info{name,version,runtime}  edge_model_version{name}
    edge_build_info{version}                     edge_console_* (the console's own counters: JPEG encodes
                                                 and their seconds, its CPU seconds, refusals)
    process_* (CPU seconds, resident memory, open fds, start time)
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from edge.device.console.settings import ConsoleSources
from edge.inference.results import ResultSink
from edge.util.paths import version

logger = logging.getLogger(__name__)

# the classic text format, which every Prometheus (and promtool 2.x) parses; all names here are legacy-valid
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
INFERENCE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def _safe(source: Callable[[], Any], what: str) -> Any:
    """A source's value, or None when it cannot answer now (not started, remote backend away)."""
    try:
        return source()
    except Exception as exc:
        logger.debug("metrics: %s unavailable: %s", what, exc)
        return None


def _counter(name: str, doc: str, value: Any) -> Iterator[Metric]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        yield CounterMetricFamily(name, doc, value=value)


def _gauge(name: str, doc: str, value: Any) -> Iterator[Metric]:
    if isinstance(value, (int, float)):
        yield GaugeMetricFamily(name, doc, value=float(value))


class _StatsCollector(Collector):
    """Everything read from the parts' stats at scrape time."""

    def __init__(self, sources: ConsoleSources, console_stats: Callable[[], dict[str, float]]) -> None:
        self._sources = sources
        self._console_stats = console_stats

    def collect(self) -> Iterator[Metric]:
        yield from self._cameras()
        pipeline = _safe(self._sources.pipeline_stats, "pipeline") or {}
        yield from _counter("edge_inference_frames", "Frames classified", pipeline.get("frames_classified"))
        yield from _counter("edge_inference_batches", "Batches classified", pipeline.get("batches"))
        yield from _counter("edge_inference_errors", "Batches whose classification failed", pipeline.get("errors"))
        yield from _counter("edge_inference_frames_failed", "Frames in failed batches", pipeline.get("frames_failed"))
        results = _safe(self._sources.results_stats, "results") or {}
        yield from _counter("edge_results_published", "Result messages written to the spool", results.get("published"))
        yield from _counter("edge_results_suppressed", "Results left out because the top-1 did not change",
                            results.get("suppressed_unchanged"))
        yield from _counter("edge_results_frames_lost", "Classified frames whose results could not be spooled",
                            results.get("frames_lost"))
        yield from _gauge("edge_results_queue_depth", "Classified batches waiting for the result thread",
                          results.get("queue_depth"))
        yield from self._mqtt()
        yield from self._model()
        build = GaugeMetricFamily("edge_build_info", "The gateway's version", labels=["version"])
        build.add_metric([version()], 1.0)
        yield build
        console = self._console_stats()
        yield from _counter("edge_console_jpeg_encodes", "Live-view JPEG encodes (only while someone watches)",
                            console.get("encodes"))
        yield from _counter("edge_console_jpeg_encode_seconds", "CPU time spent drawing and encoding live-view JPEGs",
                            console.get("encode_seconds"))
        yield from _counter("edge_console_cpu_seconds", "CPU time of the console's threads (event loop and workers)",
                            console.get("cpu_seconds"))
        yield from _counter("edge_console_auth_refusals", "Console requests refused for missing or wrong credentials",
                            console.get("auth_refusals"))
        yield from _counter("edge_console_busy_refusals", "Console connections refused over the connection cap",
                            console.get("busy_refusals"))

    def _cameras(self) -> Iterator[Metric]:
        cameras: Sequence[Any] = _safe(self._sources.camera_stats, "cameras") or ()
        families = {
            "frames_read": CounterMetricFamily("edge_camera_frames_read", "Frames read from the source",
                                               labels=["camera"]),
            "frames_processed": CounterMetricFamily("edge_camera_frames_processed", "Frames taken for inference",
                                                    labels=["camera"]),
            "frames_skipped": CounterMetricFamily("edge_camera_frames_skipped",
                                                  "Frames read but never classified (replaced or over the fps cap)",
                                                  labels=["camera"]),
            "reconnects": CounterMetricFamily("edge_camera_reconnects", "Times the camera went offline and reconnected",
                                              labels=["camera"]),
        }
        up = GaugeMetricFamily("edge_camera_up", "1 when the camera delivers frames (state online)", labels=["camera"])
        fps = GaugeMetricFamily("edge_camera_fps", "Frames per second over the last ~5 s", labels=["camera", "stage"])
        age = GaugeMetricFamily("edge_camera_last_frame_age_seconds", "Seconds since the last frame was read",
                                labels=["camera"])
        scale = GaugeMetricFamily("edge_camera_decode_scale", "MJPEG frames decoded at 1/this of the source size",
                                  labels=["camera"])
        for cam in cameras:
            for attr, family in families.items():
                family.add_metric([cam.name], float(getattr(cam, attr)))
            up.add_metric([cam.name], 1.0 if cam.state == "online" else 0.0)
            for stage, value in (("read", cam.camera_fps), ("processed", cam.process_fps),
                                 ("skipped", cam.skipped_fps)):
                fps.add_metric([cam.name, stage], float(value))
            if cam.last_frame_age_s is not None:
                age.add_metric([cam.name], float(cam.last_frame_age_s))
            if cam.decode_scale is not None:
                scale.add_metric([cam.name], float(cam.decode_scale))
        yield from families.values()
        yield from (up, fps, age, scale)

    def _mqtt(self) -> Iterator[Metric]:
        mqtt = _safe(self._sources.mqtt_stats, "mqtt") or {}
        spool = mqtt.get("spool") or {}
        yield from _gauge("edge_spool_messages", "Messages in the spool waiting for the broker's ack", spool.get("depth"))
        yield from _gauge("edge_spool_bytes", "Bytes of the messages in the spool", spool.get("bytes"))
        yield from _gauge("edge_spool_max_bytes", "The spool's cap (spool.max_mb)", spool.get("max_bytes"))
        yield from _counter("edge_spool_dropped", "Oldest messages dropped because the spool was full",
                            spool.get("dropped"))
        if "connected" in mqtt:
            yield GaugeMetricFamily("edge_mqtt_connected", "1 while connected to the broker",
                                    value=1.0 if mqtt["connected"] else 0.0)
        yield from _counter("edge_mqtt_reconnects", "Broker reconnections", mqtt.get("reconnects"))
        yield from _counter("edge_mqtt_published", "Spooled messages handed to the broker", mqtt.get("published"))
        yield from _counter("edge_mqtt_acked", "Spooled messages the broker acknowledged", mqtt.get("acked"))
        yield from _gauge("edge_mqtt_inflight_messages", "Messages sent and not yet acknowledged", mqtt.get("inflight"))

    def _model(self) -> Iterator[Metric]:
        model = _safe(self._sources.model, "model") or {}
        if model.get("name") is None:
            return
        info = GaugeMetricFamily("edge_model_info", "The model version serving (value 1)",
                                 labels=["name", "version", "runtime"])
        info.add_metric([str(model["name"]), str(model.get("version")), str(model.get("runtime"))], 1.0)
        yield info
        if isinstance(model.get("version"), int):
            number = GaugeMetricFamily("edge_model_version", "The version number serving", labels=["name"])
            number.add_metric([str(model["name"])], float(model["version"]))
            yield number


class GatewayMetrics:
    """The registry /metrics renders: the stats collector, three histograms and the process metrics."""

    def __init__(self, sources: ConsoleSources, console_stats: Callable[[], dict[str, float]]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_StatsCollector(sources, console_stats))
        ProcessCollector(registry=self.registry)
        self.inference_seconds = Histogram(
            "edge_inference_duration_seconds", "Time the classifier took per batch", buckets=INFERENCE_BUCKETS,
            registry=self.registry)
        self.batch_size = Histogram("edge_inference_batch_size", "Frames per classified batch",
                                    buckets=BATCH_BUCKETS, registry=self.registry)
        self.capture_to_publish = Histogram(
            "edge_capture_to_publish_seconds", "From a frame's capture to its result in the spool",
            buckets=LATENCY_BUCKETS, registry=self.registry)

    def observe_batch(self, frames: int, inference_s: float) -> None:
        """One classified batch (called on the inference thread: two histogram updates, nothing else)."""
        self.batch_size.observe(frames)
        self.inference_seconds.observe(inference_s)

    def render(self) -> bytes:
        """The Prometheus text exposition (format 0.0.4)."""
        return generate_latest(self.registry)


class ObservingSink:
    """A ResultSink that records each result's capture->publish latency, then hands the batch on."""

    def __init__(self, sink: ResultSink, metrics: GatewayMetrics) -> None:
        self._sink = sink
        self._histogram = metrics.capture_to_publish

    def publish_results(self, items: Sequence[tuple[str, dict[str, Any]]]) -> list[int]:
        seqs = self._sink.publish_results(items)
        for _camera, payload in items:
            total_ms = (payload.get("latency_ms") or {}).get("total")
            if isinstance(total_ms, (int, float)):
                self._histogram.observe(max(0.0, total_ms / 1000.0))
        return seqs
