"""Prometheus text-format metrics, written by hand (no extra dependency): request counts, latency, batch sizes,
errors, images and queue depth. Updated from the event loop only, so no locks are needed."""
from __future__ import annotations

from collections import Counter, defaultdict
from typing import Iterable, Mapping, Sequence

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Histogram:
    """Cumulative-bucket histogram per label value, as Prometheus expects it."""

    def __init__(self, buckets: Sequence[float]) -> None:
        self.buckets = tuple(buckets)
        self.counts: dict[str, list[int]] = defaultdict(lambda: [0] * len(self.buckets))
        self.sums: Counter[str] = Counter()
        self.totals: Counter[str] = Counter()

    def observe(self, label: str, value: float) -> None:
        counts = self.counts[label]
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                counts[i] += 1
        self.sums[label] += value
        self.totals[label] += 1

    def lines(self, name: str, label_name: str) -> Iterable[str]:
        for label in sorted(self.counts):
            tag = f'{label_name}="{_escape(label)}"'
            for bound, count in zip(self.buckets, self.counts[label]):
                yield f'{name}_bucket{{{tag},le="{bound:g}"}} {count}'
            yield f'{name}_bucket{{{tag},le="+Inf"}} {self.totals[label]}'
            yield f"{name}_sum{{{tag}}} {self.sums[label]:.6f}"
            yield f"{name}_count{{{tag}}} {self.totals[label]}"


class Metrics:
    """What /metrics reports."""

    def __init__(self) -> None:
        self.requests: Counter[tuple[str, str, int]] = Counter()
        self.latency = Histogram(LATENCY_BUCKETS)
        self.batch_sizes = Histogram(BATCH_BUCKETS)
        self.errors: Counter[str] = Counter()
        self.images: Counter[str] = Counter()

    def record_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests[(route, method, status)] += 1
        self.latency.observe(route, seconds)

    def record_batch(self, model: str, size: int) -> None:
        self.batch_sizes.observe(model, size)
        self.images[model] += size

    def record_error(self, code: str) -> None:
        self.errors[code] += 1

    def render(self, queue_depths: Mapping[str, int]) -> str:
        out = ["# HELP finegrain_requests_total HTTP requests by route, method and status.",
               "# TYPE finegrain_requests_total counter"]
        out += [f'finegrain_requests_total{{route="{_escape(r)}",method="{m}",status="{s}"}} {n}'
                for (r, m, s), n in sorted(self.requests.items())]
        out += ["# HELP finegrain_request_duration_seconds Time to answer a request, by route.",
                "# TYPE finegrain_request_duration_seconds histogram",
                *self.latency.lines("finegrain_request_duration_seconds", "route"),
                "# HELP finegrain_batch_size Images per backbone call, by model.",
                "# TYPE finegrain_batch_size histogram",
                *self.batch_sizes.lines("finegrain_batch_size", "model"),
                "# HELP finegrain_images_embedded_total Images embedded, by model.",
                "# TYPE finegrain_images_embedded_total counter"]
        out += [f'finegrain_images_embedded_total{{model="{_escape(m)}"}} {n}' for m, n in sorted(self.images.items())]
        out += ["# HELP finegrain_errors_total Error answers, by error code.", "# TYPE finegrain_errors_total counter"]
        out += [f'finegrain_errors_total{{code="{_escape(c)}"}} {n}' for c, n in sorted(self.errors.items())]
        out += ["# HELP finegrain_queue_depth Images waiting for the backbone, by model.",
                "# TYPE finegrain_queue_depth gauge"]
        out += [f'finegrain_queue_depth{{model="{_escape(m)}"}} {n}' for m, n in sorted(queue_depths.items())]
        return "\n".join(out) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
