"""Bars against pandas, and their streaming semantics with TestStream."""
import pickle
import random

import apache_beam as beam
import numpy as np
import pandas as pd
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from pipelines.run import counters, summarize
from transforms import windows
from transforms.aggregate import AggregatePerKey
from transforms.market.anomalies import GapDetector, price_outliers
from transforms.market.bars import Bar, BarAcc, BarsFn, bar_count, to_bar
from transforms.market.records import Trade

T0 = 1767278400                      # 2026-01-01T14:40:00Z, a whole minute
JOB = 'barstest'
INELIGIBLE = frozenset({'T', 'Z'})


def trade(offset, price, size=100.0, trade_id=None, symbol='ACME',
          conditions=''):
    return Trade(Timestamp.of(T0 + offset), symbol, price, size, trade_id,
                 'XNAS', conditions)


def pandas_bar(frame):
    """The oracle: dedupe by id, sort by (time, id), eligible for OHLC."""
    with_id = frame[frame.trade_id.notna()].drop_duplicates('trade_id')
    frame = pd.concat([with_id, frame[frame.trade_id.isna()]])
    eligible = frame[~frame.conditions.isin(['T', 'Z'])]
    ordered = eligible.assign(key=eligible.trade_id.fillna('')) \
        .sort_values(['t', 'key'])
    return {
        'open': ordered.price.iloc[0], 'close': ordered.price.iloc[-1],
        'high': ordered.price.max(), 'low': ordered.price.min(),
        'volume': frame['size'].sum(),
        'vwap': (frame.price * frame['size']).sum() / frame['size'].sum(),
        'count': len(frame),
    }


@pytest.mark.parametrize('seed', range(8))
def test_merged_accumulators_equal_pandas(seed):
    rng = random.Random(seed)
    trades = []
    for i in range(300):
        t = trade(rng.randrange(0, 60), round(rng.uniform(99, 101), 2),
                  float(rng.randrange(1, 500)),
                  None if rng.random() < 0.1 else f'id{i}',
                  conditions=rng.choice(['', '', '', 'T', 'Z', '@']))
        trades.append(t)
        if t.trade_id and rng.random() < 0.2:
            trades.append(t)                    # a re-send
    rng.shuffle(trades)
    fn = BarsFn(INELIGIBLE)
    parts = []
    for chunk in np.array_split(np.arange(len(trades)), rng.randrange(1, 7)):
        acc = fn.create_accumulator()
        for i in chunk:
            acc = fn.add_input(acc, trades[i])
        parts.append(pickle.loads(pickle.dumps(acc)))
    acc = fn.merge_accumulators(parts)
    frame = pd.DataFrame([{'t': t.event_time.micros, 'price': t.price,
                           'size': t.size, 'trade_id': t.trade_id,
                           'conditions': t.conditions} for t in trades])
    want = pandas_bar(frame)
    bar = to_bar('ACME', acc, windows.pane_fields(
        beam.transforms.window.IntervalWindow(T0, T0 + 60),
        beam.utils.windowed_value.PANE_INFO_UNKNOWN))
    assert (bar.open, bar.close, bar.high, bar.low) == \
        (want['open'], want['close'], want['high'], want['low'])
    assert bar.trade_count == want['count']
    assert bar.volume == pytest.approx(want['volume'], rel=1e-12)
    assert bar.vwap == pytest.approx(want['vwap'], rel=1e-9)
    assert bar.trade_count + bar.duplicate_count == len(trades)
    assert bar_count(acc) == len(trades)


def test_open_close_ties_break_by_trade_id():
    acc = BarAcc()
    for t in (trade(5, 10.0, trade_id='b'), trade(5, 11.0, trade_id='a'),
              trade(9, 12.0, trade_id='a'), trade(9, 13.0, trade_id='c')):
        acc.add(t, INELIGIBLE)
    # 'a' repeats: the second 'a' is a re-send and counts once.
    assert acc.open[2] == 11.0 and acc.close[2] == 13.0
    assert acc.count == 3 and acc.duplicates == 1


def run_bars(stream, check, trigger='late=1,lateness=5m'):
    spec_t = windows.parse_trigger(trigger)
    p = TestPipeline(options=PipelineOptions(
        runner='BundleBasedDirectRunner', streaming=True))
    bars = (p | stream | beam.Map(lambda t: (t.symbol, t))
            | windows.ApplyWindow(windows.parse_window('fixed:60s'), spec_t)
            | AggregatePerKey(BarsFn(INELIGIBLE), to_bar, bar_count,
                              spec_t.accumulates_panes, JOB))
    rows = bars | beam.Map(lambda b: (b.pane_timing, b.pane_index, b.open,
                                      b.close, b.volume, b.trade_count))
    assert_that(rows, check)
    result = p.run()
    result.wait_until_finish()
    return summarize(counters(result, JOB))


def add(stream, *trades):
    return stream.add_elements(
        [TimestampedValue(t, t.event_time) for t in trades])


def test_a_late_trade_corrects_its_bar_and_a_later_one_is_dropped():
    stream = TestStream().advance_watermark_to(Timestamp.of(T0))
    add(stream, trade(10, 100.0, trade_id='1'), trade(20, 101.0, trade_id='2'))
    stream.advance_watermark_to(Timestamp.of(T0 + 65))       # bar closes
    add(stream, trade(30, 103.0, trade_id='3'))                # late, in time
    stream.advance_watermark_to(Timestamp.of(T0 + 60 + 300 + 1))
    add(stream, trade(40, 99.0, trade_id='4'))                 # too late
    stream.advance_watermark_to_infinity()
    summary = run_bars(stream, equal_to([
        ('ON_TIME', 0, 100.0, 101.0, 200.0, 2),
        ('LATE', 1, 100.0, 103.0, 300.0, 3),
    ]))
    assert summary['dropped_late'] == 1 and summary['late_accepted'] == 1


@pytest.mark.parametrize('watermark_s, counted_once', [
    (60 + 300 - 1, True),      # within the allowed lateness of its window
    (60 + 300 + 1, False),     # beyond it: dropped as late, never counted
])
def test_a_resend_is_known_until_its_window_expires(watermark_s,
                                                    counted_once):
    """The horizon of a bar's ids is its window's end plus the allowed
    lateness (5 min here): a re-send arriving before it counts as a
    duplicate (a LATE pane, the same bar); after it the window's state is
    gone and the re-send is dropped as late, not counted twice."""
    stream = TestStream().advance_watermark_to(Timestamp.of(T0))
    add(stream, trade(10, 100.0, trade_id='1'), trade(20, 101.0, trade_id='2'))
    stream.advance_watermark_to(Timestamp.of(T0 + watermark_s))
    add(stream, trade(10, 100.0, trade_id='1'))                # the re-send
    stream.advance_watermark_to_infinity()
    on_time = ('ON_TIME', 0, 100.0, 101.0, 200.0, 2)
    want = [on_time, ('LATE', 1, 100.0, 101.0, 200.0, 2)] if counted_once \
        else [on_time]
    summary = run_bars(stream, equal_to(want))
    assert summary['dropped_late'] == (0 if counted_once else 1)


def test_an_out_of_order_earlier_trade_becomes_the_open():
    stream = TestStream().advance_watermark_to(Timestamp.of(T0))
    add(stream, trade(30, 100.0, trade_id='2'))
    add(stream, trade(5, 95.0, trade_id='1'))                  # arrives later
    add(stream, trade(45, 98.0, trade_id='3', conditions='T'))  # volume only
    stream.advance_watermark_to_infinity()
    run_bars(stream, equal_to([('ON_TIME', 0, 95.0, 100.0, 300.0, 3)]),
             trigger='default')


def test_price_outliers_flag_fat_fingers_only():
    rng = np.random.default_rng(0)
    trades = [trade(i * 0.1, float(100 + rng.normal(0, 0.05)), trade_id=str(i))
              for i in range(200)]
    trades[50] = trade(5.0, 1000.0, trade_id='ff1')            # x10 print
    trades[120] = trade(12.0, 10.0, trade_id='ff2')            # x0.1 print
    flagged = {x[1] for x in price_outliers(trades, 10.0, 20)}
    assert flagged == {'ff1', 'ff2'}
    assert price_outliers(trades[:10], 10.0, 20) == []         # too few


def _bar(symbol, minute, last_offset):
    start = T0 + 60 * minute
    return Bar(symbol, Timestamp.of(start), Timestamp.of(start + 60),
               'ON_TIME', 0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1, 0,
               Timestamp.of(start), Timestamp.of(start + last_offset))


def test_a_silent_symbol_is_reported_once_while_others_trade():
    stream = TestStream().advance_watermark_to(Timestamp.of(T0))
    for minute in range(8):
        bars = [_bar('AAA', minute, 59)]
        if minute < 2 or minute >= 6:          # BBB silent minutes 2..5
            bars.append(_bar('BBB', minute, 50))
        stream.add_elements([TimestampedValue(b, b.window_end.micros / 1e6
                                              - 1e-6) for b in bars])
        stream.advance_watermark_to(Timestamp.of(T0 + 60 * (minute + 1)))
    stream.advance_watermark_to_infinity()
    with TestPipeline(options=PipelineOptions(
            runner='BundleBasedDirectRunner', streaming=True)) as p:
        gaps = p | stream | GapDetector(120.0, JOB)
        assert_that(gaps | beam.Map(lambda a: (a.symbol, a.kind,
                                               a.event_time.micros // 10**6
                                               - T0)),
                    equal_to([('BBB', 'gap', 60 + 50)]))
