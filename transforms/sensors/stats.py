"""Per-sensor, per-window statistics of calibrated readings, with the trend.

:class:`SensorAcc` is a mergeable accumulator: :class:`~transforms.combiners.
Moments` of the values, a KLL sketch for p50/p95, and :class:`Trend`, the
least-squares line of value against event time kept as *centred* sufficient
statistics (count, mean time, mean value, the sum of squared time deviations
and the sum of cross deviations), updated one point at a time (Welford) and
merged with Chan et al.'s pairwise formula.  Centring keeps the fit exact for
epoch-sized times, where the textbook sums (of t, t^2, t*y) cancel
catastrophically, and times are kept as integer microseconds after the first
one (no float holds an epoch-sized time): ``slope = Sty / Stt`` equals
``numpy.polyfit(t, y, 1)`` on the window's points.
"""

import numpy as np

from transforms.combiners import (DEFAULT_K, MergingCombineFn, Moments,
                                  Quantiles, _quantiles_from_bytes)
from transforms.sensors.records import CalibratedReading, SensorStats

RANKS = (0.5, 0.95)


class Trend:
    """The mergeable least-squares line: n, mean time, mean value, Stt, Sty.

    Times are integer microseconds, held relative to an *origin* (the first
    time seen) so that no float ever carries an epoch-sized time: ``mt`` is
    seconds after the origin.  Accumulators with different origins merge by
    shifting one mean; the sums of deviations do not depend on the origin."""
    __slots__ = ('n', 'origin', 'mt', 'my', 'stt', 'sty')

    def __init__(self, n=0, origin=0, mt=0.0, my=0.0, stt=0.0, sty=0.0):
        self.n, self.origin = n, origin
        self.mt, self.my, self.stt, self.sty = mt, my, stt, sty

    def add(self, t_us: int, y: float) -> 'Trend':
        if self.n == 0:
            self.origin = int(t_us)
        t = (int(t_us) - self.origin) / 1e6
        self.n += 1
        dt = t - self.mt
        self.mt += dt / self.n
        self.my += (y - self.my) / self.n
        self.stt += dt * (t - self.mt)
        self.sty += dt * (y - self.my)
        return self

    @classmethod
    def of_arrays(cls, t_us, y) -> 'Trend':
        t_us = np.asarray(t_us, dtype=np.int64)
        y = np.asarray(y, dtype=np.float64)
        if t_us.size == 0:
            return cls()
        origin = int(t_us[0])
        t = (t_us - origin) / 1e6
        mt, my = float(t.mean()), float(y.mean())
        dt = t - mt
        return cls(int(t.size), origin, mt, my, float((dt * dt).sum()),
                   float((dt * (y - my)).sum()))

    def merge(self, other: 'Trend') -> 'Trend':
        if other.n == 0:
            return self
        if self.n == 0:
            (self.n, self.origin, self.mt, self.my, self.stt,
             self.sty) = other.__getstate__()
            return self
        n = self.n + other.n
        dt = other.mt + (other.origin - self.origin) / 1e6 - self.mt
        dy = other.my - self.my
        w = self.n * other.n / n
        self.stt += other.stt + dt * dt * w
        self.sty += other.sty + dt * dy * w
        self.mt += dt * other.n / n
        self.my += dy * other.n / n
        self.n = n
        return self

    def line(self, at_us: int):
        """(slope per second, value at time ``at_us``), None where undefined."""
        if self.n < 2 or self.stt <= 0:
            return None, None
        slope = self.sty / self.stt
        at = (int(at_us) - self.origin) / 1e6
        return slope, self.my + slope * (at - self.mt)

    def __getstate__(self):
        return (self.n, self.origin, self.mt, self.my, self.stt, self.sty)

    def __setstate__(self, state):
        self.n, self.origin, self.mt, self.my, self.stt, self.sty = state

    def __reduce__(self):
        return (Trend, self.__getstate__())


class SensorAcc:
    """The accumulator of one sensor, metric and window."""
    __slots__ = ('moments', 'sketch', 'trend', 'versions', 'uncalibrated')

    def __init__(self, k=DEFAULT_K):
        self.moments = Moments()
        self.sketch = Quantiles(k)
        self.trend = Trend()
        self.versions = set()
        self.uncalibrated = 0

    @property
    def count(self) -> int:
        return self.moments.count

    def add(self, r: CalibratedReading) -> 'SensorAcc':
        self.moments.add(r.value)
        self.sketch.add(r.value)
        self.trend.add(r.event_time.micros, r.value)
        if r.calibrated:
            self.versions.add(r.calibration_version)
        else:
            self.uncalibrated += 1
        return self

    @classmethod
    def of_arrays(cls, event_us, value, calibrated, versions,
                  k=DEFAULT_K) -> 'SensorAcc':
        acc = cls(k)
        acc.moments = Moments.of_array(value)
        acc.sketch.add_array(value)
        acc.trend = Trend.of_arrays(event_us, value)
        calibrated = np.asarray(calibrated, dtype=bool)
        acc.uncalibrated = int((~calibrated).sum())
        acc.versions = set(versions)
        return acc

    def merge(self, other: 'SensorAcc') -> 'SensorAcc':
        self.moments.merge(other.moments)
        self.sketch.merge(other.sketch)
        self.trend.merge(other.trend)
        self.versions |= other.versions
        self.uncalibrated += other.uncalibrated
        return self

    def __getstate__(self):
        return (self.moments, self.sketch, self.trend, self.versions,
                self.uncalibrated)

    def __setstate__(self, state):
        (self.moments, self.sketch, self.trend, self.versions,
         self.uncalibrated) = state

    def __reduce__(self):
        # Flat: every accumulator crosses the shuffle once per key and
        # window, and the default pickling of nested slotted objects costs
        # about 25 us a round trip (a tenth of the bench's time).
        m, t = self.moments, self.trend
        return (_sensor_acc, (m.count, m.mean, m.m2, m.min, m.max,
                              self.sketch.__getstate__(), t.n, t.origin, t.mt,
                              t.my, t.stt, t.sty, self.versions,
                              self.uncalibrated))


def _sensor_acc(count, mean, m2, low, high, sketch, n, origin, mt, my, stt,
                sty, versions, uncalibrated) -> SensorAcc:
    acc = SensorAcc.__new__(SensorAcc)
    acc.moments = Moments(count, mean, m2, low, high)
    acc.sketch = _quantiles_from_bytes(sketch)   # kept serialised until used
    acc.trend = Trend(n, origin, mt, my, stt, sty)
    acc.versions = versions
    acc.uncalibrated = uncalibrated
    return acc


class SensorStatsFn(MergingCombineFn):
    """``CalibratedReading`` values (or partial :class:`SensorAcc`) ->
    :class:`SensorAcc` per key and window."""
    ACCUMULATOR = SensorAcc

    def __init__(self, k=DEFAULT_K):
        self._k = k

    def create_accumulator(self):
        return SensorAcc(self._k)

    def add_record(self, acc, record):
        return acc.add(record)


def stats_count(x) -> int:
    return x.count if isinstance(x, SensorAcc) else 1


def to_sensor_stats(key, acc: SensorAcc, pane: dict) -> SensorStats:
    sensor_id, metric = key
    m = acc.moments.result()
    p50, p95 = acc.sketch.quantiles(RANKS)
    slope, intercept = acc.trend.line(pane['window_start'].micros)
    return SensorStats(
        sensor_id=sensor_id, metric=metric, count=m['count'], mean=m['mean'],
        min=m['min'], max=m['max'], stddev=m['stddev'], p50=p50, p95=p95,
        slope=slope, intercept=intercept,
        calibration_version=','.join(sorted(acc.versions)),
        uncalibrated_count=acc.uncalibrated, **pane)
