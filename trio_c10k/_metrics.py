"""``metrics_view``: the server's numbers in the Prometheus text format, through
``prometheus_client`` (the ``metrics`` extra); docs/metrics.md lists them.

Rule 1: the hot path only increments plain integers (``_counters``); everything else (the
connections open, the bytes queued, the threads busy, the broker) is read from the servers of
this process (``_server.running``) when the metrics are collected, in each server's event
loop (``call_in_loop``): the view runs in a worker thread, and the loop changes that state.
No read walks the connections: the bytes queued are summed over the WebSockets whose writer
task runs (``Counters.backlogged``) only, so a read (once a second in every ``--workers``
process) takes as long at 100,000 idle connections as at none. They are the bytes that wait
for a peer the kernel refused bytes to (a slow consumer): the send queue and the rest of the
batch the writer task is writing.
Rule 2: one process (no ``PROMETHEUS_MULTIPROC_DIR``): the view collects at each scrape,
then adds prometheus_client's default registry (the process's CPU and memory, the
application's own metrics).
Rule 3: several processes (``--workers``, or ``PROMETHEUS_MULTIPROC_DIR`` set): a scrape
reaches one of them and must count them all, so each process writes its numbers into
prometheus_client's files in that directory every ``SYNC_INTERVAL`` seconds (``keep_synced``),
and the one scraped writes its own first, then answers with the sum of every file
(``MultiProcessCollector``). Counters are summed over every process that ever ran (a
restarted worker's count is kept); gauges over the live ones, the broker's state is the
lowest (0 if any process lost Redis). The supervisor of ``--workers`` sets the directory up
and clears a dead child's gauges (``_multiprocess``).
Rule 4: prometheus_client is imported only when metrics are collected or written: a site
without the extra imports this module, and the view then fails with ``ImproperlyConfigured``
naming the extra.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import trio

from ._multiprocess import MULTIPROC_ENV
from ._server import Server, running
from ._threads import call_in_loop

if TYPE_CHECKING:
    from django.http import HttpRequest, HttpResponse

log = logging.getLogger("trio_c10k.server")

#: seconds between two writes of a process's numbers in multiprocess mode: the staleness of the
#: other processes' numbers in a scrape (the scraped one writes its own first)
SYNC_INTERVAL = 1.0

#: name -> (type, help, label names, how processes add up in multiprocess mode)
FAMILIES: dict[str, tuple[str, str, tuple[str, ...], str]] = {
    "trio_c10k_connections": ("gauge", "Connections open (HTTP and WebSocket)", (), "livesum"),
    "trio_c10k_websockets": ("gauge", "WebSocket connections open", (), "livesum"),
    "trio_c10k_connections_rejected": (
        "counter",
        "Connections answered 503 at the max_connections limit",
        (),
        "",
    ),
    "trio_c10k_http_responses": ("counter", "HTTP answers, by status class", ("status_class",), ""),
    "trio_c10k_websocket_handshakes_refused": (
        "counter",
        "WebSocket handshakes answered with another status than 101",
        ("status",),
        "",
    ),
    "trio_c10k_websocket_messages_received": ("counter", "WebSocket messages received", (), ""),
    "trio_c10k_websocket_messages_sent": ("counter", "WebSocket messages sent", (), ""),
    "trio_c10k_websocket_received_bytes": ("counter", "WebSocket bytes received", (), ""),
    "trio_c10k_websocket_sent_bytes": ("counter", "WebSocket bytes sent", (), ""),
    "trio_c10k_websocket_slow_consumers_closed": (
        "counter",
        "WebSockets closed with 1008 because their send queue overflowed",
        (),
        "",
    ),
    "trio_c10k_websocket_send_queue_bytes": (
        "gauge",
        "Bytes waiting in the send queues of WebSockets the kernel refused bytes to (slow consumers)",
        (),
        "livesum",
    ),
    "trio_c10k_worker_threads": ("gauge", "Worker threads (--threads)", (), "livesum"),
    "trio_c10k_worker_threads_busy": ("gauge", "Worker threads running a job", (), "livesum"),
    "trio_c10k_worker_jobs_waiting": ("gauge", "Jobs waiting for a worker thread", (), "livesum"),
    "trio_c10k_broker_up": ("gauge", "1 while Redis is reachable (--broker), else 0", (), "livemin"),
    "trio_c10k_broker_publish_backlog": (
        "gauge",
        "Broadcasts waiting to be published to Redis",
        (),
        "livesum",
    ),
}

Samples = dict[str, dict[tuple[str, ...], float]]


def _read(server: Server) -> Samples:
    """One server's numbers (in its event loop)."""
    counters, statistics = server.counters, server.statistics()
    busy, waiting = server.workers.busy_and_waiting()
    samples: Samples = {
        "trio_c10k_connections": {(): statistics.connections},
        "trio_c10k_websockets": {(): statistics.websockets},
        "trio_c10k_connections_rejected": {(): statistics.rejected},
        "trio_c10k_http_responses": {
            (f"{n}xx",): counters.responses[n] for n in range(1, 6) if counters.responses[n]
        },
        "trio_c10k_websocket_handshakes_refused": {
            (str(status),): count for status, count in counters.refused.items()
        },
        "trio_c10k_websocket_messages_received": {(): counters.messages_in},
        "trio_c10k_websocket_messages_sent": {(): counters.messages_out},
        "trio_c10k_websocket_received_bytes": {(): counters.bytes_in},
        "trio_c10k_websocket_sent_bytes": {(): counters.bytes_out},
        "trio_c10k_websocket_slow_consumers_closed": {(): counters.slow_closed},
        "trio_c10k_websocket_send_queue_bytes": {
            (): sum(ws._queued + unsent for ws, unsent in counters.backlogged.items())
        },
        "trio_c10k_worker_threads": {(): server.workers.size},
        "trio_c10k_worker_threads_busy": {(): busy},
        "trio_c10k_worker_jobs_waiting": {(): waiting},
    }
    if server.broker is not None:
        samples["trio_c10k_broker_up"] = {(): int(server.broker.up)}
        samples["trio_c10k_broker_publish_backlog"] = {(): server.broker.backlog}
    return samples


def _read_in_loop(server: Server) -> Samples:
    token = server.workers.token
    try:
        if trio.lowlevel.current_trio_token() is token:  # the loop itself (``keep_synced``)
            return _read(server)
    except RuntimeError:  # not in a trio run: a worker thread, a plain thread
        pass
    return call_in_loop(token, _read, server)


def process_samples() -> Samples:
    """The numbers of every server running in this process, added up (the broker's state:
    the lowest)."""
    total: Samples = {}
    for server in list(running):
        try:
            samples = _read_in_loop(server)
        except trio.RunFinishedError:  # it stopped meanwhile
            continue
        for name, values in samples.items():
            into = total.setdefault(name, {})
            for labels, value in values.items():
                if name == "trio_c10k_broker_up":
                    into[labels] = min(into.get(labels, value), value)
                else:
                    into[labels] = into.get(labels, 0) + value
    return total


class _Collector:
    """A prometheus_client collector of this process's numbers, read at each scrape."""

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        samples = process_samples()
        for name, (kind, text, labels, _) in FAMILIES.items():
            if name not in samples:
                continue
            family_type = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            family = family_type(name, text, labels=labels)
            for values, value in sorted(samples[name].items()):
                family.add_metric(values, value)
            yield family


class _Files:
    """This process's numbers as prometheus_client's multiprocess metrics (Rule 3)."""

    def __init__(self) -> None:
        self._metrics: dict[str, Any] = {}
        self._written: dict[tuple[str, tuple[str, ...]], float] = {}
        self._lock = threading.Lock()  # the loop's task and a scrape's thread may both write

    def write(self) -> None:
        samples = process_samples()  # first: it may wait for the loop, which may wait for the lock
        with self._lock:
            for name, values in samples.items():
                for labels, value in values.items():
                    child = self._metric(name)
                    if labels:
                        child = child.labels(*labels)
                    if FAMILIES[name][0] == "gauge":
                        child.set(value)
                        continue
                    written = self._written.get((name, labels), 0)
                    if value > written:  # a counter only grows (one read late is skipped)
                        child.inc(value - written)
                        self._written[name, labels] = value

    def _metric(self, name: str) -> Any:
        """The prometheus_client metric, made on first use: an unlabelled one writes its
        value at once, so the broker's gauges exist only where there is a broker."""
        metric = self._metrics.get(name)
        if metric is None:
            from prometheus_client import Counter, Gauge

            kind, text, labels, mode = FAMILIES[name]
            if kind == "counter":
                metric = Counter(name, text, labels, registry=None)
            else:
                metric = Gauge(name, text, labels, registry=None, multiprocess_mode=mode)  # type: ignore[arg-type]  # a mode from FAMILIES
            self._metrics[name] = metric
        return metric


_files = _Files()


async def keep_synced() -> None:
    """Write this process's numbers into the multiprocess directory every ``SYNC_INTERVAL``
    seconds, until cancelled (Rule 3); without prometheus_client, logs why and returns."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError as exc:
        log.warning("%s is set but %s: pip install 'trio-c10k[metrics]'", MULTIPROC_ENV, exc)
        return
    while True:
        _files.write()
        await trio.sleep(SYNC_INTERVAL)


def metrics_view(request: HttpRequest) -> HttpResponse:
    """A Django view answering the server's metrics in the Prometheus text format.

    Mount it in the URLconf behind the site's own access control, for example
    ``path("metrics/", staff_member_required(metrics_view))`` or a check of
    ``request.META["REMOTE_ADDR"]`` (see docs/metrics.md). With ``--workers`` it answers for
    every process (Rule 3).

    Raises:
        ImproperlyConfigured: prometheus_client is not installed.
    """
    from django.core.exceptions import ImproperlyConfigured
    from django.http import HttpResponse

    try:
        from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
        from prometheus_client.multiprocess import MultiProcessCollector
    except ImportError as exc:
        raise ImproperlyConfigured(
            f"trio_c10k.metrics_view needs prometheus_client ({exc}): pip install 'trio-c10k[metrics]'"
        ) from None
    registry = CollectorRegistry(auto_describe=False)
    if os.environ.get(MULTIPROC_ENV):
        _files.write()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # prometheus_client leaves it untyped
        body = generate_latest(registry)
    else:
        registry.register(_Collector())
        body = generate_latest(registry) + generate_latest(REGISTRY)
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)
