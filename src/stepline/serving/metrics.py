"""Request counters and latency histograms, rendered in Prometheus' text format for ``/metrics``.

Hand-written (about fifty lines) rather than ``prometheus_client``: the server updates
them from its event loop only, needs four families, and the text format is stable; the
client library would be one more dependency of the ``serve`` extra.
"""
from __future__ import annotations

import bisect
from collections import defaultdict

#: Upper bounds (seconds) of the latency buckets.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class _Histogram:
    def __init__(self, bounds):
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def lines(self, name: str, labels: str) -> list[str]:
        out, cumulative = [], 0
        sep = "," if labels else ""
        for bound, count in zip(list(self.bounds) + ["+Inf"], self.counts):
            cumulative += count
            out.append(f'{name}_bucket{{{labels}{sep}le="{bound}"}} {cumulative}')
        out.append(f"{name}_sum{{{labels}}} {self.total:.6f}")
        out.append(f"{name}_count{{{labels}}} {cumulative}")
        return out


class Metrics:
    """Requests by endpoint and status, their latency, batch sizes and reloads."""

    def __init__(self):
        self.requests = defaultdict(int)  # (endpoint, status) -> count
        self.latency = {}  # endpoint -> histogram
        self.batches = _Histogram(BATCH_BUCKETS)

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests[(endpoint, status)] += 1
        histogram = self.latency.get(endpoint)
        if histogram is None:
            histogram = self.latency[endpoint] = _Histogram(LATENCY_BUCKETS)
        histogram.observe(seconds)

    def observe_batch(self, rows: int) -> None:
        self.batches.observe(rows)

    def render(self, model) -> str:
        """The Prometheus text exposition of every metric (``model``: the ServedModel)."""
        lines = ["# HELP stepline_requests_total Requests handled, by endpoint and HTTP status.",
                 "# TYPE stepline_requests_total counter"]
        for (endpoint, status), count in sorted(self.requests.items()):
            lines.append(f'stepline_requests_total{{endpoint="{endpoint}",status="{status}"}} {count}')
        lines += ["# HELP stepline_request_errors_total Requests answered with a 4xx or 5xx status.",
                  "# TYPE stepline_request_errors_total counter"]
        errors = defaultdict(int)
        for (endpoint, status), count in self.requests.items():
            if status >= 400:
                errors[endpoint] += count
        lines += [f'stepline_request_errors_total{{endpoint="{e}"}} {n}' for e, n in sorted(errors.items())]
        lines += ["# HELP stepline_request_duration_seconds Time from request to response.",
                  "# TYPE stepline_request_duration_seconds histogram"]
        for endpoint, histogram in sorted(self.latency.items()):
            lines += histogram.lines("stepline_request_duration_seconds", f'endpoint="{endpoint}"')
        lines += ["# HELP stepline_batch_rows Rows per dynamic batch.", "# TYPE stepline_batch_rows histogram"]
        lines += self.batches.lines("stepline_batch_rows", "")
        lines += ["# HELP stepline_model_reloads_total New dumps swapped in.",
                  "# TYPE stepline_model_reloads_total counter", f"stepline_model_reloads_total {model.reloads}",
                  "# HELP stepline_model_refused_total New dumps refused (broken or untrusted).",
                  "# TYPE stepline_model_refused_total counter", f"stepline_model_refused_total {len(model.refused)}",
                  "# HELP stepline_model_info The live version (root digest) of the served dump.",
                  "# TYPE stepline_model_info gauge",
                  f'stepline_model_info{{model="{model.name}",version="{model.live.digest if model.live else ""}"}} 1']
        return "\n".join(lines) + "\n"
