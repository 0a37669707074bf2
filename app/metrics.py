"""Prometheus metrics (`GET /metrics`): the engine's `RunObserver`, and a collector that reads
the fan-out's plain counts at scrape time.

Design record
- Each app has its own `CollectorRegistry` (two apps in one process, as in tests, count apart).
- Nothing is counted per token or per event on the hot path through prometheus-client: a run's
  tokens are added once, at its end (the run's `RunGuard` counts them anyway); events sent,
  tokens merged and disconnects are plain ints the subscriber adds once per send batch
  (app/streaming/subscriber.py), read here at each scrape; the open streams are the fan-out's
  own count.
- Labels are bounded: graph names (loaded at startup), statuses, event types, reasons, limit
  codes. No run, thread or key; the tenant only with METRICS_TENANT_LABEL (as many series as
  tenants in API_KEYS).
- Several workers: each worker serves its own `/metrics` (per-worker scraping); the library's
  multiprocess mode is not used (README, "Metrics").
"""

from __future__ import annotations

from collections.abc import Iterable

from fastapi import FastAPI, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from app.engine.record import RunRecord, RunStatus
from app.streaming.subscriber import FanOut

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
DURATION_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0)


class Metrics:
    """The app's metrics; `observer` for the RunManager, `fanout` read at each scrape."""

    def __init__(self, *, tenant_label: bool = False) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.tenant_label = tenant_label
        run_labels = ["graph", "tenant"] if tenant_label else ["graph"]
        r = self.registry
        self.runs_started = Counter(
            "lgstream_runs_started", "Runs started.", run_labels, registry=r
        )
        self.runs_finished = Counter(
            "lgstream_runs_finished", "Runs ended, by status.", [*run_labels, "status"], registry=r
        )
        self.runs_in_progress = Gauge(
            "lgstream_runs_in_progress", "Runs in progress.", run_labels, registry=r
        )
        self.tokens = Counter(
            "lgstream_tokens",
            "Model tokens streamed by runs (added at each run's end).",
            run_labels,
            registry=r,
        )
        self.time_to_first_token = Histogram(
            "lgstream_time_to_first_token_seconds",
            "From a run's start to its first token.",
            run_labels,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.run_duration = Histogram(
            "lgstream_run_duration_seconds",
            "From a run's start to its end.",
            run_labels,
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.cancel_latency = Histogram(
            "lgstream_cancel_latency_seconds",
            "From a run's first cancel request to its end.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.rate_limited = Counter(
            "lgstream_rate_limited",
            "Requests refused by a limit, by its code.",
            ["limit"],
            registry=r,
        )
        self._streams = _StreamCollector()
        r.register(self._streams)

    def watch(self, fanout: FanOut) -> None:
        """Report this fan-out's streams."""
        self._streams.fanout = fanout

    def _labels(self, record: RunRecord) -> tuple[str, ...]:
        return (record.graph, record.tenant) if self.tenant_label else (record.graph,)

    # -- RunObserver ---------------------------------------------------------------------

    def run_started(self, record: RunRecord) -> None:
        labels = self._labels(record)
        self.runs_started.labels(*labels).inc()
        self.runs_in_progress.labels(*labels).inc()

    def run_ended(self, record: RunRecord, tokens: int, cancel_latency_s: float | None) -> None:
        labels = self._labels(record)
        self.runs_in_progress.labels(*labels).dec()
        self.runs_finished.labels(*labels, record.status.value).inc()
        if tokens:
            self.tokens.labels(*labels).inc(tokens)
        if record.first_token_ms is not None:
            self.time_to_first_token.labels(*labels).observe(record.first_token_ms / 1000)
        if record.elapsed_ms is not None:
            self.run_duration.labels(*labels).observe(record.elapsed_ms / 1000)
        if cancel_latency_s is not None and record.status is RunStatus.CANCELLED:
            self.cancel_latency.observe(cancel_latency_s)

    def refused(self, limit: str) -> None:
        """A request was refused `429` by a limit (`rate_limited`, `too_many_runs`,
        `too_many_streams`, or `max_concurrent_runs`, the server's own)."""
        self.rate_limited.labels(limit).inc()


class _StreamCollector(Collector):
    """The fan-out's counts, read at scrape time."""

    def __init__(self) -> None:
        self.fanout: FanOut | None = None

    def describe(self) -> Iterable[Metric]:
        return self._families(None)

    def collect(self) -> Iterable[Metric]:
        return self._families(self.fanout)

    @staticmethod
    def _families(fanout: FanOut | None) -> list[Metric]:
        open_streams = GaugeMetricFamily("lgstream_streams_open", "Streams open.")
        sent = CounterMetricFamily(
            "lgstream_events_sent",
            "Events sent to clients (merged tokens counted each).",
            labels=["event"],
        )
        merged = CounterMetricFamily(
            "lgstream_tokens_merged",
            "Token events sent merged into the frame of the token before them (lagging or paced"
            " clients).",
        )
        disconnects = CounterMetricFamily(
            "lgstream_stream_disconnects",
            "Streams that ended before their run's end, by reason.",
            labels=["reason"],
        )
        if fanout is not None:
            open_streams.add_metric([], fanout.open_streams)
            for event, count in list(fanout.sent.items()):
                sent.add_metric([event], count)
            merged.add_metric([], fanout.tokens_merged)
            for reason, count in list(fanout.disconnects.items()):
                disconnects.add_metric([reason], count)
        else:
            open_streams.add_metric([], 0)
            merged.add_metric([], 0)
        return [open_streams, sent, merged, disconnects]


def install(app: FastAPI, metrics: Metrics) -> None:
    """Serve `GET /metrics` from `metrics` (auth: app/auth/middleware.py)."""
    app.state.metrics = metrics

    async def scrape(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.add_api_route("/metrics", scrape, methods=["GET"], include_in_schema=False)
