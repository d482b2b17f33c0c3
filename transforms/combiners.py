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
    """A KLL quantile sketch (doubles) that pickles through its own
    serialisation.

    Between uses the sketch is kept serialised (a few hundred bytes for a
    window's values instead of about 2 kB of live sketch): a batch run on the
    local runner holds every (key, window) accumulator at once.  Adding
    values one by one keeps it live until it is merged or pickled."""
    __slots__ = ('_live', '_packed', '_k')

    def __init__(self, k: int = DEFAULT_K, sketch=None):
        self._k = k
        self._live = sketch       # a kll_doubles_sketch, or None
        self._packed = None       # its serialisation, or None

    @property
    def sketch(self):
        """The live sketch (made from its serialisation if packed)."""
        if self._live is None:
            self._live = datasketches.kll_doubles_sketch(self._k) \
                if self._packed is None else \
                datasketches.kll_doubles_sketch.deserialize(self._packed)
            self._packed = None
        return self._live

    def _pack(self) -> 'Quantiles':
        if self._live is not None:
            self._packed = bytes(self._live.serialize())
            self._live = None
        return self

    def _view(self):
        """The sketch for reading, left as it is kept."""
        if self._live is not None:
            return self._live
        if self._packed is None:
            return None
        return datasketches.kll_doubles_sketch.deserialize(self._packed)

    def add(self, x: float) -> 'Quantiles':
        self.sketch.update(float(x))
        return self

    def add_array(self, values) -> 'Quantiles':
        values = np.asarray(values, dtype=np.float64)
        if values.size:
            self.sketch.update(values)
        return self._pack()

    def merge(self, other: 'Quantiles') -> 'Quantiles':
        theirs = other._view()
        if theirs is not None and not theirs.is_empty():
            self.sketch.merge(theirs)
        return self._pack()

    @property
    def count(self) -> int:
        view = self._view()
        return 0 if view is None else view.n

    def quantiles(self, ranks) -> list:
        view = self._view()
        if view is None or view.is_empty():
            return [None] * len(ranks)
        return [float(view.get_quantile(r)) for r in ranks]

    @staticmethod
    def rank_error(k: int = DEFAULT_K) -> float:
        """The normalised rank error of a KLL sketch with this k (single-sided)."""
        return datasketches.kll_doubles_sketch.get_normalized_rank_error(k, False)

    def __getstate__(self):
        if self._packed is None:
            self.sketch.n    # an empty sketch is serialised too (its k)
            self._pack()
        return self._packed

    def __setstate__(self, state):
        self._live = None
        self._packed = state
        self._k = DEFAULT_K

    def __reduce__(self):
        return (_quantiles_from_bytes, (self.__getstate__(),))


def _quantiles_from_bytes(data: bytes) -> Quantiles:
    out = Quantiles()
    out._packed = data        # pylint: disable=protected-access
    return out


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
