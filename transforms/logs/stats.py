"""Per-service, per-window log statistics: counts, error rate, latency quantiles."""
import typing

import apache_beam as beam
from apache_beam.utils.timestamp import Timestamp

from transforms.combiners import (DEFAULT_K, MergingCombineFn, Moments,
                                  Quantiles)
from transforms.logs.records import LogRecord, is_error

RANKS = (0.5, 0.95, 0.99)


class ServiceStats(typing.NamedTuple):
    """One row of the ``service_stats`` table."""
    service: str
    window_start: Timestamp
    window_end: Timestamp
    pane_timing: str                  # EARLY | ON_TIME | LATE
    pane_index: int                   # the highest index is the final value
    count: int                        # records in the window (so far)
    errors: int                       # status >= 500 or level ERROR/FATAL
    error_rate: float                 # errors / count
    latency_count: int                # records that carry a latency
    latency_mean_ms: typing.Optional[float]
    latency_min_ms: typing.Optional[float]
    latency_max_ms: typing.Optional[float]
    latency_stddev_ms: typing.Optional[float]
    latency_p50_ms: typing.Optional[float]  # from a KLL sketch, see combiners
    latency_p95_ms: typing.Optional[float]
    latency_p99_ms: typing.Optional[float]

    # One row per service, window and pane (file names hash these).
    IDENTITY_FIELDS = ('service', 'window_start', 'window_end', 'pane_timing',
                       'pane_index')


beam.coders.registry.register_coder(ServiceStats, beam.coders.RowCoder)


class LogStats:
    """The mergeable accumulator: counts, latency moments, latency sketch."""
    __slots__ = ('count', 'errors', 'latency', 'sketch')

    def __init__(self, k=DEFAULT_K):
        self.count = 0
        self.errors = 0
        self.latency = Moments()
        self.sketch = Quantiles(k)

    def add(self, record: LogRecord) -> 'LogStats':
        self.count += 1
        if is_error(record):
            self.errors += 1
        if record.latency_ms is not None:
            self.latency.add(record.latency_ms)
            self.sketch.add(record.latency_ms)
        return self

    def merge(self, other: 'LogStats') -> 'LogStats':
        self.count += other.count
        self.errors += other.errors
        self.latency.merge(other.latency)
        self.sketch.merge(other.sketch)
        return self

    def __getstate__(self):
        return (self.count, self.errors, self.latency, self.sketch)

    def __setstate__(self, state):
        self.count, self.errors, self.latency, self.sketch = state


class LogStatsFn(MergingCombineFn):
    """``LogRecord`` values (or partial :class:`LogStats` of many records) ->
    :class:`LogStats` per key and window."""
    ACCUMULATOR = LogStats

    def __init__(self, k=DEFAULT_K):
        self._k = k

    def create_accumulator(self):
        return LogStats(self._k)

    def add_record(self, acc, record):
        return acc.add(record)


def stats_count(stats) -> int:
    """How many records a result (or an input: record or partial) covers."""
    return stats.count if isinstance(stats, LogStats) else 1


def to_service_stats(service, stats: LogStats, pane: dict) -> ServiceStats:
    moments = stats.latency.result()
    p50, p95, p99 = stats.sketch.quantiles(RANKS)
    return ServiceStats(
        service=service,
        count=stats.count,
        errors=stats.errors,
        error_rate=stats.errors / stats.count if stats.count else 0.0,
        latency_count=moments['count'],
        latency_mean_ms=moments['mean'],
        latency_min_ms=moments['min'],
        latency_max_ms=moments['max'],
        latency_stddev_ms=moments['stddev'],
        latency_p50_ms=p50,
        latency_p95_ms=p95,
        latency_p99_ms=p99,
        **pane)
