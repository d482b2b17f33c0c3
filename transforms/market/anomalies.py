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
from apache_beam.coders import PickleCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms import window as beam_window
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import (ReadModifyWriteStateSpec,
                                              TimerSpec, on_timer)
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


def price_outliers(trades, k: float, min_trades: int):
    """(trade, vwap, deviation) of the trades of one window that deviate."""
    distinct = {}
    for t in trades:                   # repeats of a trade count once
        distinct.setdefault(t.trade_id or id(t), t)
    trades = list(distinct.values())
    if len(trades) < min_trades:
        return []
    price = np.array([t.price for t in trades])
    size = np.array([t.size for t in trades])
    median = float(np.median(price))
    spread = MAD_SCALE * float(np.median(np.abs(price - median)))
    if spread <= 0:
        return []
    # The reference is the VWAP of the trades within k robust deviations of
    # the median, so that an outlier does not move its own yardstick.
    inside = np.abs(price - median) <= k * spread
    vwap = float((price[inside] * size[inside]).sum() / size[inside].sum())
    deviation = np.abs(price - vwap) / spread
    return [(trades[i], vwap, float(deviation[i]))
            for i in np.flatnonzero(deviation > k)]


class _FlagFn(beam.DoFn):
    def __init__(self, k, min_trades, job):
        self._k = k
        self._min = min_trades
        self._flagged = Metrics.counter(job, 'anomalies.price')

    def process(self, kv, window=beam.DoFn.WindowParam,
                pane=beam.DoFn.PaneInfoParam):
        symbol, trades = kv
        fields = windows.pane_fields(window, pane)
        for trade, vwap, deviation in sorted(
                price_outliers(trades, self._k, self._min),
                key=lambda x: (x[0].event_time, x[0].trade_id or '')):
            self._flagged.inc()
            yield Anomaly(symbol, 'price', trade.event_time, trade.trade_id,
                          trade.price, vwap, deviation, **fields)


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
                | 'TradesPerWindow' >> beam.GroupByKey()
                | 'Flag' >> beam.ParDo(_FlagFn(self._k, self._min, self._job)))


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
