"""Anomaly flags for trade streams.

* **Price anomalies** (:class:`PriceAnomalies`): per symbol and anomaly
  window, a trade whose price deviates from the window's VWAP by more than
  ``k`` robust standard deviations (1.4826 x the median absolute deviation of
  the window's prices) is flagged.  The VWAP is taken over the trades within
  ``k`` robust deviations of the median price: neither the reference nor the
  spread is moved by the outliers they are meant to find, as a plain VWAP
  and standard deviation would be.
  Windows with fewer than ``min_trades`` trades are not judged.
* **Gaps** (:class:`GapDetector`): a symbol that stops trading for longer
  than ``max_gap`` while the market goes on.  Bars (one per symbol and
  window, carrying their last trade time) feed one keyed state; an event-time
  timer fires when the watermark passes the earliest possible gap, and a gap
  is reported for each symbol whose last trade is ``max_gap`` behind a trade
  of any other symbol (so the end of a replay is not a gap).  Each gap is
  reported once.
"""
import typing

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.coders import PickleCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms import window as beam_window
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import (ReadModifyWriteStateSpec,
                                              TimerSpec, on_timer)
from apache_beam.utils import windowed_value
from apache_beam.utils.timestamp import Timestamp

from transforms import windows
from transforms.combiners import MergingCombineFn
from transforms.market.records import Trade

MAD_SCALE = 1.4826      # MAD -> standard deviation for normal data


class Anomaly(typing.NamedTuple):
    """One row of the ``anomalies`` table."""
    symbol: str
    kind: str                         # 'price' | 'gap'
    event_time: Timestamp             # the trade (price) or the last trade (gap)
    trade_id: typing.Optional[str]
    price: typing.Optional[float]
    reference: typing.Optional[float]  # the window's VWAP (price)
    deviation: float                  # robust std devs (price) or seconds (gap)
    window_start: Timestamp           # anomaly window (price) / gap start
    window_end: Timestamp             # anomaly window end / when it was seen
    pane_timing: str
    pane_index: int

    IDENTITY_FIELDS = ('symbol', 'kind', 'event_time', 'trade_id',
                       'window_start', 'window_end')


beam.coders.registry.register_coder(Anomaly, beam.coders.RowCoder)


# The bounds of a PriceSummary (see its docstring).
EXACT_PRICES = 4096     # distinct prices counted exactly
MAX_BINS = 4096         # log-price bins beyond that
BIN_WIDTH = 1e-5        # log-width of a finest bin (relative width 0.001%)
EXTREMES = 128          # trades kept at each end of the price range
_FLUSH = 1024           # trades added one by one, folded in per this many


def _weighted_median(values, counts):
    """numpy's median of ``values`` repeated ``counts`` times (values
    sorted ascending)."""
    n = int(counts.sum())
    cum = np.cumsum(counts)

    def at(rank):
        return values[int(np.searchsorted(cum, rank, side='right'))]
    if n % 2:
        return float(at((n - 1) // 2))
    return float(np.mean(np.array([at(n // 2 - 1), at(n // 2)])))


def _collapse(keys, counts):
    """Sorted distinct keys and their summed counts."""
    unique, inverse = np.unique(keys, return_inverse=True)
    return unique, np.bincount(inverse, weights=counts,
                               minlength=len(unique)).astype(np.int64)


class PriceSummary:
    """What a price judgement needs of the trades of one symbol and window,
    in bounded memory, mergeable in any order into the same summary:

    * the number of trade records, their notional (sum of price x size) and
      volume (sum of size);
    * a price histogram: each distinct price and its count while a window has
      at most EXACT_PRICES distinct prices (median and MAD are then exactly
      numpy's over the window's prices); beyond, counts per log-price bin of
      relative width BIN_WIDTH x 2**level, the level the smallest that keeps
      at most MAX_BINS bins (median and MAD then within a bin width);
    * the EXTREMES highest and EXTREMES lowest distinct trades (event time,
      trade id, price, size, and how many records of it were seen): the
      only trades that can be outliers, unless more than EXTREMES at one end
      are (see :func:`summary_outliers`).

    Every trade record counts, a re-sent one too (the reference statistics
    cannot drop repeats without keeping every id); a flagged trade is
    reported once.  ``level`` is -1 while prices are exact."""
    __slots__ = ('count', 'notional', 'volume', 'keys', 'counts', 'level',
                 'high', 'low', 'pending')

    def __init__(self):
        self.count = 0
        self.notional = 0.0
        self.volume = 0.0
        self.keys = np.zeros(0, np.float64)   # prices, or bin indices
        self.counts = np.zeros(0, np.int64)
        self.level = -1
        self.high = {}     # (price, event us, id or '', size) -> records
        self.low = {}
        self.pending = []  # trades added one by one, not yet folded in

    @classmethod
    def of_columns(cls, event_us, trade_id, price, size):
        """The summary of trades given as columns (``trade_id`` an Arrow
        string array, null where a trade has no id)."""
        out = cls()
        price = np.asarray(price, np.float64)
        size = np.asarray(size, np.float64)
        if not len(price):
            return out
        out.count = int(len(price))
        out.notional = float((price * size).sum())
        out.volume = float(size.sum())
        out.keys, out.counts = _collapse(price, np.ones(len(price)))
        if len(out.keys) > EXACT_PRICES:
            out._to_bins(0)
        # Candidates for the extremes: trades at the EXTREMES highest and
        # lowest distinct prices (repeats may share a price).
        values = np.unique(price)
        hi = values[max(0, len(values) - EXTREMES)]
        lo = values[min(len(values), EXTREMES) - 1]
        rows = np.flatnonzero((price >= hi) | (price <= lo))
        ids = trade_id.take(pa.array(rows)).to_pylist() \
            if isinstance(trade_id, pa.Array) else \
            [trade_id[int(r)] for r in rows]
        event_us = np.asarray(event_us, np.int64)
        items = {}
        for r, tid in zip(rows.tolist(), ids):
            item = (float(price[r]), int(event_us[r]), tid or '',
                    float(size[r]))
            items[item] = items.get(item, 0) + 1
        out.high = _top(items, high=True)
        out.low = _top(items, high=False)
        return out

    @classmethod
    def of_trades(cls, trades):
        trades = list(trades)
        return cls.of_columns([t.event_time.micros for t in trades],
                              [t.trade_id for t in trades],
                              [t.price for t in trades],
                              [t.size for t in trades])

    def add(self, trade) -> 'PriceSummary':
        self.pending.append(trade)
        if len(self.pending) >= _FLUSH:
            self._fold()
        return self

    def _fold(self):
        if self.pending:
            pending, self.pending = self.pending, []
            self._merge(PriceSummary.of_trades(pending))

    def merge(self, other: 'PriceSummary') -> 'PriceSummary':
        other._fold()
        self._fold()
        return self._merge(other)

    def _merge(self, other):
        if not other.count:
            return self
        self.count += other.count
        self.notional += other.notional
        self.volume += other.volume
        keys, counts, level = other.keys, other.counts, other.level
        if level != self.level:
            if level < self.level:
                keys, counts = _bins(keys, counts, level, self.level)
            else:
                self._to_bins(level)
        self.keys, self.counts = _collapse(
            np.concatenate([self.keys, keys]),
            np.concatenate([self.counts, counts]))
        if self.level < 0 and len(self.keys) > EXACT_PRICES:
            self._to_bins(0)
        while self.level >= 0 and len(self.keys) > MAX_BINS:
            self._to_bins(self.level + 1)
        for mine, theirs, high in ((self.high, other.high, True),
                                   (self.low, other.low, False)):
            items = dict(mine)
            for item, seen in theirs.items():
                items[item] = items.get(item, 0) + seen
            if high:
                self.high = _top(items, high=True)
            else:
                self.low = _top(items, high=False)
        return self

    def _to_bins(self, level):
        self.keys, self.counts = _bins(self.keys, self.counts, self.level,
                                       level)
        self.level = level
        while len(self.keys) > MAX_BINS:
            self._to_bins(self.level + 1)

    def histogram(self):
        """(sorted values, counts): the exact prices, or each bin's middle
        (geometric) value."""
        self._fold()
        if self.level < 0:
            return self.keys, self.counts
        width = BIN_WIDTH * 2 ** self.level
        return np.exp((self.keys + 0.5) * width), self.counts

    def __len__(self):
        return self.count + len(self.pending)

    def __reduce__(self):
        self._fold()
        return (_summary, (self.count, self.notional, self.volume, self.keys,
                           self.counts, self.level, self.high, self.low))


def _summary(count, notional, volume, keys, counts, level, high, low):
    out = PriceSummary()
    out.count, out.notional, out.volume = count, notional, volume
    out.keys, out.counts, out.level = keys, counts, level
    out.high, out.low = high, low
    return out


def _bins(keys, counts, level, to_level):
    """Histogram keys at ``level`` (-1: prices) as bins of ``to_level``."""
    if level < 0:
        index = np.floor(np.log(keys) / BIN_WIDTH).astype(np.int64)
        level = 0
    else:
        index = keys.astype(np.int64)
    return _collapse(index >> (to_level - level), counts)


def _top(items: dict, high: bool) -> dict:
    """The EXTREMES highest (or lowest) distinct trades by (price, event time,
    trade id, size)."""
    if high:
        chosen = sorted(items, key=lambda x: (-x[0], x[1], x[2], x[3]))
    else:
        chosen = sorted(items)
    return {item: items[item] for item in chosen[:EXTREMES]}


def summary_outliers(summary: PriceSummary, k: float, min_trades: int,
                     truncated=None):
    """(event us, trade id, price, vwap, deviation) of the trades of one
    window that deviate, in event-time order (ties by trade id).

    The rule: median and MAD of the window's prices (exact up to
    EXACT_PRICES distinct prices, within a bin width beyond); the reference
    is the VWAP of the trades within k robust deviations of the median, so
    that an outlier does not move its own yardstick; a trade is flagged when
    it is more than k robust deviations from the reference.  Outliers are
    found among the summary's extremes: a window with EXTREMES or more
    trades beyond k deviations at one end of its range is not judged (the
    trades not kept would move the reference unseen) and ``truncated`` (a
    counter) is incremented."""
    if len(summary) < min_trades or not len(summary):
        return []
    values, counts = summary.histogram()
    median = _weighted_median(values, counts)
    spread = MAD_SCALE * _weighted_median(*_collapse(
        np.abs(values - median), counts))
    if spread <= 0:
        return []
    limit = k * spread
    # More than EXTREMES trades beyond k deviations at one end: the ones not
    # kept would move the reference unseen; such a window is not judged.
    for side, beyond in ((summary.high, lambda p: p - median > limit),
                         (summary.low, lambda p: median - p > limit)):
        if len(side) == EXTREMES and all(beyond(x[0]) for x in side):
            if truncated is not None:
                truncated.inc()
            return []
    items = dict(summary.low)
    items.update(summary.high)
    out_notional = out_volume = 0.0
    for (price, _, _, size), seen in items.items():
        if abs(price - median) > limit:
            out_notional += seen * price * size
            out_volume += seen * size
    inside_volume = summary.volume - out_volume
    if inside_volume <= 0:
        return []
    vwap = (summary.notional - out_notional) / inside_volume
    out = []
    for event_us, trade_id, price in sorted(
            {(x[1], x[2], x[0]) for x in items}):
        deviation = abs(price - vwap) / spread
        if deviation > k:
            out.append((event_us, trade_id or None, price, vwap, deviation))
    return out


def price_outliers(trades, k: float, min_trades: int):
    """(event us, trade id, price, vwap, deviation) of a window's trades."""
    return summary_outliers(PriceSummary.of_trades(trades), k, min_trades)


class PriceSummaryFn(MergingCombineFn):
    """Trades (or partial PriceSummaries) -> PriceSummary per symbol and
    anomaly window."""
    ACCUMULATOR = PriceSummary

    def create_accumulator(self):
        return PriceSummary()

    def add_record(self, acc, trade):
        return acc.add(trade)


_ONLY_PANE = windowed_value.PaneInfo(
    is_first=True, is_last=True, timing=windowed_value.PaneInfoTiming.ON_TIME,
    index=0, nonspeculative_index=0)


class _FlagFn(beam.DoFn):
    """(symbol, PriceSummary) per window -> price Anomaly rows.
    With ``window_in_key`` the key is (symbol, start us, end us) in the global
    window (bounded input: the window's only pane)."""

    def __init__(self, k, min_trades, job, window_in_key=False):
        self._k = k
        self._min = min_trades
        self._window_in_key = window_in_key
        self._flagged = Metrics.counter(job, 'anomalies.price')
        self._truncated = Metrics.counter(job, 'anomalies.price_truncated')

    def process(self, kv, window=beam.DoFn.WindowParam,
                pane=beam.DoFn.PaneInfoParam):
        key, summary = kv
        if self._window_in_key:
            symbol, start, end = key
            fields = windows.pane_fields(beam_window.IntervalWindow(
                Timestamp(micros=start), Timestamp(micros=end)), _ONLY_PANE)
        else:
            symbol, fields = key, windows.pane_fields(window, pane)
        for event_us, trade_id, price, vwap, deviation in summary_outliers(
                summary, self._k, self._min, self._truncated):
            self._flagged.inc()
            yield Anomaly(symbol, 'price', Timestamp(micros=event_us),
                          trade_id, price, vwap, deviation, **fields)


class FlagPrices(beam.PTransform):
    """``PCollection[(symbol, Trade | PriceSummary)]`` in anomaly windows (or
    keyed by (symbol, start, end) with ``window_in_key``) ->
    ``PCollection[Anomaly]``: one bounded summary per symbol and window
    (combined before the shuffle), never the window's trades."""

    def __init__(self, k, min_trades, job, window_in_key=False, label=None):
        super().__init__(label)
        self._fn = _FlagFn(k, min_trades, job, window_in_key)

    def expand(self, keyed):
        return (keyed
                | 'SummaryPerWindow' >> beam.CombinePerKey(PriceSummaryFn())
                | 'Flag' >> beam.ParDo(self._fn))


class PriceAnomalies(beam.PTransform):
    """``PCollection[Trade]`` (event-timestamped) -> ``PCollection[Anomaly]``
    judged once per symbol and anomaly window (ON_TIME pane; trades later
    than the window's end are not judged)."""

    def __init__(self, window: windows.WindowSpec, k: float, min_trades: int,
                 job: str, label=None):
        super().__init__(label)
        self._window = window
        self._k = k
        self._min = min_trades
        self._job = job

    def expand(self, trades):
        return (trades
                | 'KeyBySymbol' >> beam.Map(
                    lambda t: (t.symbol, t)).with_output_types(
                        typing.Tuple[str, Trade])
                | 'AnomalyWindow' >> beam.WindowInto(self._window.window_fn())
                | 'Judge' >> FlagPrices(self._k, self._min, self._job))


class _GapFn(beam.DoFn):
    LAST = ReadModifyWriteStateSpec('last', PickleCoder())
    CHECK = TimerSpec('check', TimeDomain.WATERMARK)

    def __init__(self, max_gap_s: float, job: str):
        self._gap_us = int(round(max_gap_s * 1e6))
        self._gaps = Metrics.counter(job, 'anomalies.gap')

    def process(self, kv, last=beam.DoFn.StateParam(LAST),
                check=beam.DoFn.TimerParam(CHECK)):
        _, bar = kv
        if bar.last_trade_time is None:
            return
        state = last.read() or {'last': {}, 'reported': {}, 'max': None}
        symbol, us = bar.symbol, bar.last_trade_time.micros
        if us > state['last'].get(symbol, -1):
            state['last'][symbol] = us
        if state['max'] is None or us > state['max']:
            state['max'] = us
        last.write(state)
        pending = [t for s, t in state['last'].items()
                   if state['reported'].get(s) != t]
        if pending:
            check.set(Timestamp(micros=min(pending) + self._gap_us))

    @on_timer(CHECK)
    def gaps(self, fired=beam.DoFn.TimestampParam,
             last=beam.DoFn.StateParam(LAST),
             check=beam.DoFn.TimerParam(CHECK)):
        state = last.read()
        if not state:
            return
        newest = state['max']
        for symbol, us in sorted(state['last'].items()):
            if state['reported'].get(symbol) == us:
                continue
            if us + self._gap_us <= fired.micros and \
                    newest >= us + self._gap_us:
                state['reported'][symbol] = us
                self._gaps.inc()
                yield Anomaly(
                    symbol, 'gap', Timestamp(micros=us), None, None, None,
                    (newest - us) / 1e6, Timestamp(micros=us),
                    Timestamp(micros=newest), 'ON_TIME', 0)
        last.write(state)
        pending = [t + self._gap_us for s, t in state['last'].items()
                   if state['reported'].get(s) != t
                   and t + self._gap_us > fired.micros]
        if pending:
            check.set(Timestamp(micros=min(pending)))


class GapDetector(beam.PTransform):
    """``PCollection[Bar]`` -> ``PCollection[Anomaly]`` (kind 'gap'): symbols
    silent for more than ``max_gap_s`` while others trade.  ``deviation`` is
    the silence seen so far, in seconds."""

    def __init__(self, max_gap_s: float, job: str, label=None):
        super().__init__(label)
        self._max_gap_s = max_gap_s
        self._job = job

    def expand(self, bars):
        return (bars
                | 'OneKey' >> beam.Map(lambda b: ('', b)).with_output_types(
                    typing.Tuple[str, typing.Any])
                | 'GlobalWindow' >> beam.WindowInto(
                    beam_window.GlobalWindows())
                | 'Detect' >> beam.ParDo(_GapFn(self._max_gap_s, self._job)))
