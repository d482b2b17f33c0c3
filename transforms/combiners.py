"""Mergeable combiners: count/mean/min/max/stddev and quantile sketches.

Every accumulator here is *mergeable*: partial accumulators built on different
workers (or, on the columnar fast path, from whole batches at once) merge into
exactly the accumulator one worker would have built.  That is what lets runners
lift the combine before the shuffle.

* :class:`Moments` keeps count, mean, M2 (sum of squared deviations), min and max,
  updated with Welford's algorithm and merged with Chan et al.'s parallel
  formula, so the variance is numerically stable (no sum-of-squares
  cancellation).  ``stddev`` is the sample standard deviation (ddof=1), as
  pandas computes it; it is ``None`` below two values.
* :class:`Quantiles` wraps an Apache DataSketches KLL sketch (doubles).  With
  the default ``k=200`` the normalised rank error of a quantile is about 1.33%
  (99% confidence): the reported p99 is a value whose true rank lies within
  0.99 +/- 0.0133.  The sketch's size is bounded (a few kB) whatever the
  number of inputs.
"""
import math
import typing

import apache_beam as beam
import datasketches
import numpy as np

DEFAULT_K = 200


class Moments:
    """count, mean, M2, min, max — mergeable and numerically stable."""
    __slots__ = ('count', 'mean', 'm2', 'min', 'max')

    def __init__(self, count=0, mean=0.0, m2=0.0, min_=math.inf, max_=-math.inf):
        self.count = count
        self.mean = mean
        self.m2 = m2
        self.min = min_
        self.max = max_

    def add(self, x: float) -> 'Moments':
        self.count += 1
        delta = x - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (x - self.mean)
        if x < self.min:
            self.min = x
        if x > self.max:
            self.max = x
        return self

    @classmethod
    def of_array(cls, values) -> 'Moments':
        """The accumulator of a whole array at once (vectorised)."""
        values = np.asarray(values, dtype=np.float64)
        if values.size == 0:
            return cls()
        mean = float(values.mean())
        return cls(int(values.size), mean, float(((values - mean) ** 2).sum()),
                   float(values.min()), float(values.max()))

    def merge(self, other: 'Moments') -> 'Moments':
        if other.count == 0:
            return self
        if self.count == 0:
            self.count, self.mean, self.m2 = other.count, other.mean, other.m2
            self.min, self.max = other.min, other.max
            return self
        n = self.count + other.count
        delta = other.mean - self.mean
        self.mean += delta * other.count / n
        self.m2 += other.m2 + delta * delta * self.count * other.count / n
        self.count = n
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)
        return self

    @property
    def stddev(self) -> typing.Optional[float]:
        if self.count < 2:
            return None
        return math.sqrt(max(self.m2, 0.0) / (self.count - 1))

    def result(self) -> dict:
        empty = self.count == 0
        return {
            'count': self.count,
            'mean': None if empty else self.mean,
            'min': None if empty else self.min,
            'max': None if empty else self.max,
            'stddev': self.stddev,
        }

    def __getstate__(self):
        return (self.count, self.mean, self.m2, self.min, self.max)

    def __setstate__(self, state):
        self.count, self.mean, self.m2, self.min, self.max = state

    def __reduce__(self):
        # One constructor call: a slotted class without it pickles through
        # copyreg (a few Python calls per accumulator crossing a shuffle).
        return (Moments, self.__getstate__())

    def __repr__(self):
        return f'Moments({self.__getstate__()})'


class Quantiles:
    """A KLL quantile sketch (doubles) that pickles through its own serialisation."""
    __slots__ = ('sketch',)

    def __init__(self, k: int = DEFAULT_K, sketch=None):
        self.sketch = sketch if sketch is not None else \
            datasketches.kll_doubles_sketch(k)

    def add(self, x: float) -> 'Quantiles':
        self.sketch.update(float(x))
        return self

    def add_array(self, values) -> 'Quantiles':
        values = np.asarray(values, dtype=np.float64)
        if values.size:
            self.sketch.update(values)
        return self

    def merge(self, other: 'Quantiles') -> 'Quantiles':
        if not other.sketch.is_empty():
            self.sketch.merge(other.sketch)
        return self

    @property
    def count(self) -> int:
        return self.sketch.n

    def quantiles(self, ranks) -> list:
        if self.sketch.is_empty():
            return [None] * len(ranks)
        return [float(self.sketch.get_quantile(r)) for r in ranks]

    @staticmethod
    def rank_error(k: int = DEFAULT_K) -> float:
        """The normalised rank error of a KLL sketch with this k (single-sided)."""
        return datasketches.kll_doubles_sketch.get_normalized_rank_error(k, False)

    def __getstate__(self):
        return bytes(self.sketch.serialize())

    def __setstate__(self, state):
        self.sketch = datasketches.kll_doubles_sketch.deserialize(state)

    def __reduce__(self):
        return (_quantiles_from_bytes, (self.__getstate__(),))


def _quantiles_from_bytes(data: bytes) -> Quantiles:
    return Quantiles(sketch=datasketches.kll_doubles_sketch.deserialize(data))


class MergingCombineFn(beam.CombineFn):
    """A CombineFn over accumulators that ``merge`` themselves (Moments,
    Quantiles, domain accumulators built of them).  ``add_input`` also takes
    a partial accumulator of the same type, as the columnar fast path emits,
    and merges it.  The output is the accumulator unless overridden."""
    ACCUMULATOR = None     # the accumulator class

    def add_record(self, acc, record):
        raise TypeError(f'{type(self).__name__} takes partial accumulators '
                        f'only, not {type(record).__name__}')

    def add_input(self, acc, value):
        if isinstance(value, self.ACCUMULATOR):
            return acc.merge(value)
        return self.add_record(acc, value)

    def merge_accumulators(self, accs):
        # Beam may merge nothing (an empty pane): that is a new accumulator.
        result = None
        for acc in accs:
            result = acc if result is None else result.merge(acc)
        return self.create_accumulator() if result is None else result

    def extract_output(self, acc):
        return acc


class MomentsFn(MergingCombineFn):
    """``PCollection[float]`` -> dict(count, mean, min, max, stddev) per key/window."""
    ACCUMULATOR = Moments

    def create_accumulator(self):
        return Moments()

    def add_record(self, acc, x):
        return acc.add(float(x))

    def extract_output(self, acc):
        return acc.result()


class QuantilesFn(MergingCombineFn):
    """``PCollection[float]`` -> list of quantiles (for ``ranks``) per key/window."""

    ACCUMULATOR = Quantiles

    def __init__(self, ranks=(0.5, 0.95, 0.99), k: int = DEFAULT_K):
        self._ranks = tuple(ranks)
        self._k = k

    def create_accumulator(self):
        return Quantiles(self._k)

    def add_record(self, acc, x):
        return acc.add(x)

    def extract_output(self, acc):
        return acc.quantiles(self._ranks)
