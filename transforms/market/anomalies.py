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


class PriceSample:
    """The trades of one symbol and window as columns: what a price judgement
    needs.  Mergeable by concatenation, so the columnar path can carry a
    block's trades as one element instead of one per trade."""
    __slots__ = ('event_us', 'trade_id', 'price', 'size')

    def __init__(self, event_us, trade_id, price, size):
        self.event_us = np.asarray(event_us, np.int64)
        # An Arrow string array (null where a trade has no id): it pickles as
        # buffers, not as one Python string per trade.
        self.trade_id = trade_id if isinstance(trade_id, pa.Array) \
            else pa.array(list(trade_id), pa.string())
        self.price = np.asarray(price, np.float64)
        self.size = np.asarray(size, np.float64)

    @classmethod
    def of_trades(cls, trades):
        trades = list(trades)
        return cls([t.event_time.micros for t in trades],
                   [t.trade_id for t in trades],
                   [t.price for t in trades], [t.size for t in trades])

    @classmethod
    def concat(cls, samples):
        samples = list(samples)
        if len(samples) == 1:
            return samples[0]
        return cls(np.concatenate([s.event_us for s in samples]),
                   pa.concat_arrays([s.trade_id for s in samples]),
                   np.concatenate([s.price for s in samples]),
                   np.concatenate([s.size for s in samples]))

    def __len__(self):
        return len(self.event_us)

    def __getstate__(self):
        return (self.event_us, self.trade_id, self.price, self.size)

    def __setstate__(self, state):
        self.event_us, self.trade_id, self.price, self.size = state


def sample_outliers(sample: PriceSample, k: float, min_trades: int):
    """(event us, trade id, price, vwap, deviation) of the trades of one window
    that deviate, in event-time order (ties by trade id)."""
    # Repeats of a trade id count once (the first seen is kept).
    ids = sample.trade_id
    has_id = ids.is_valid().to_numpy(zero_copy_only=False)
    rows = np.arange(len(ids))
    keep = ~has_id
    if has_id.any():
        first = pa.table({'id': ids.filter(pa.array(has_id)),
                          'row': rows[has_id]}).group_by(
            'id', use_threads=False).aggregate([('row', 'min')])
        keep[first['row_min'].to_numpy()] = True
    keep = rows[keep]
    if len(keep) < min_trades:
        return []
    price, size = sample.price[keep], sample.size[keep]
    median = float(np.median(price))
    spread = MAD_SCALE * float(np.median(np.abs(price - median)))
    if spread <= 0:
        return []
    # The reference is the VWAP of the trades within k robust deviations of
    # the median, so that an outlier does not move its own yardstick.
    inside = np.abs(price - median) <= k * spread
    vwap = float((price[inside] * size[inside]).sum() / size[inside].sum())
    deviation = np.abs(price - vwap) / spread
    out = []
    for j in np.flatnonzero(deviation > k):
        i = int(keep[j])
        out.append((int(sample.event_us[i]), ids[i].as_py(),
                    float(sample.price[i]), vwap, float(deviation[j])))
    return sorted(out, key=lambda x: (x[0], x[1] or ''))


def price_outliers(trades, k: float, min_trades: int):
    """(event us, trade id, price, vwap, deviation) of a window's trades."""
    return sample_outliers(PriceSample.of_trades(trades), k, min_trades)


_ONLY_PANE = windowed_value.PaneInfo(
    is_first=True, is_last=True, timing=windowed_value.PaneInfoTiming.ON_TIME,
    index=0, nonspeculative_index=0)


class _FlagFn(beam.DoFn):
    """(symbol, trades or PriceSamples) per window -> price Anomaly rows.
    With ``window_in_key`` the key is (symbol, start us, end us) in the global
    window (bounded input: the window's only pane)."""

    def __init__(self, k, min_trades, job, window_in_key=False):
        self._k = k
        self._min = min_trades
        self._window_in_key = window_in_key
        self._flagged = Metrics.counter(job, 'anomalies.price')

    def process(self, kv, window=beam.DoFn.WindowParam,
                pane=beam.DoFn.PaneInfoParam):
        key, values = kv
        if self._window_in_key:
            symbol, start, end = key
            fields = windows.pane_fields(beam_window.IntervalWindow(
                Timestamp(micros=start), Timestamp(micros=end)), _ONLY_PANE)
        else:
            symbol, fields = key, windows.pane_fields(window, pane)
        values = list(values)
        samples = [v for v in values if isinstance(v, PriceSample)]
        trades = [v for v in values if not isinstance(v, PriceSample)]
        if trades:
            samples.append(PriceSample.of_trades(trades))
        for event_us, trade_id, price, vwap, deviation in sample_outliers(
                PriceSample.concat(samples), self._k, self._min):
            self._flagged.inc()
            yield Anomaly(symbol, 'price', Timestamp(micros=event_us),
                          trade_id, price, vwap, deviation, **fields)


class FlagPrices(beam.PTransform):
    """``PCollection[(symbol, Trade | PriceSample)]`` in anomaly windows (or
    keyed by (symbol, start, end) with ``window_in_key``) ->
    ``PCollection[Anomaly]``."""

    def __init__(self, k, min_trades, job, window_in_key=False, label=None):
        super().__init__(label)
        self._fn = _FlagFn(k, min_trades, job, window_in_key)

    def expand(self, keyed):
        return (keyed
                | 'TradesPerWindow' >> beam.GroupByKey()
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
