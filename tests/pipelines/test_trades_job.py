"""The trades job end to end: a file replay of the synthetic trade stream,
checked against pandas resampling the same input, and the synthetic stream
itself (EARLY/ON_TIME/LATE panes, anomalies, every record accounted for).

``TRADES_ORACLE_EVENTS=1000000 pytest tests/pipelines/test_trades_job.py -k
pandas`` runs the oracle comparison on a million trades."""
import datetime
import math
import os

import orjson
import pandas as pd
import pyarrow.dataset as ds
import pytest
import apache_beam as beam
from apache_beam.testing import test_stream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.utils.timestamp import Timestamp

from pipelines import options as job_options
from pipelines import run, trades
from tests.pipelines.job_streams import Played, add, run_job
from transforms.synthetic import trades as synthetic_trades

EVENTS = int(os.environ.get('TRADES_ORACLE_EVENTS', '20000'))
INELIGIBLE = {'T', 'Z'}


def _params(**overrides):
    params = {k: v[1] for k, v in synthetic_trades.PARAMS.items()}
    params.update(overrides)
    return params


def _valid(doc):
    """The oracle's own reading of a line (independent of the decoders)."""
    if not isinstance(doc, dict):
        return None
    t, symbol = doc.get('event_time'), doc.get('symbol')
    price, size = doc.get('price'), doc.get('size')
    if not isinstance(t, str) or not isinstance(symbol, str) or not symbol:
        return None
    for x in (price, size):
        if isinstance(x, bool) or not isinstance(x, (int, float)) \
                or not math.isfinite(x) or x <= 0:
            return None
    when = datetime.datetime.fromisoformat(t.replace('Z', '+00:00'))
    conditions = doc.get('conditions') or []
    if isinstance(conditions, str):
        conditions = [conditions]
    return {'t': round(when.timestamp() * 1e6), 'symbol': symbol.upper(),
            'price': float(price), 'size': float(size),
            'trade_id': None if doc.get('trade_id') is None
            else str(doc['trade_id']),
            'eligible': not (set(conditions) & INELIGIBLE)}


def oracle(lines):
    rows = []
    for line in lines:
        try:
            row = _valid(orjson.loads(line))
        except (orjson.JSONDecodeError, ValueError):
            row = None
        if row:
            rows.append(row)
    frame = pd.DataFrame(rows)
    with_id = frame[frame.trade_id.notna()].drop_duplicates(
        ['symbol', 'trade_id'])
    frame = pd.concat([with_id, frame[frame.trade_id.isna()]])
    frame['window'] = frame.t // 60_000_000 * 60_000_000
    frame['key'] = frame.trade_id.fillna('')
    frame['notional'] = frame.price * frame['size']
    bars = {}
    for (symbol, window), g in frame.groupby(['symbol', 'window']):
        e = g[g.eligible].sort_values(['t', 'key'])
        bars[(symbol, window)] = {
            'open': e.price.iloc[0] if len(e) else None,
            'close': e.price.iloc[-1] if len(e) else None,
            'high': e.price.max() if len(e) else None,
            'low': e.price.min() if len(e) else None,
            'volume': g['size'].sum(),
            'vwap': g.notional.sum() / g['size'].sum(),
            'trade_count': len(g),
        }
    return bars, len(rows)


def read_table(directory, table):
    return ds.dataset(str(directory / table), format='parquet').to_table() \
        .to_pandas()


@pytest.fixture(scope='module')
def replay(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('trades')
    stream = synthetic_trades.generate(_params(events=EVENTS, seed=17))
    lines = list(stream.payloads())
    path = tmp / 'trades.jsonl'
    path.write_bytes(b'\n'.join(lines) + b'\n')
    out = tmp / 'out'
    summary = run.run(trades, [
        '--source', f'file://{path}', '--sink', f'parquet://{out}',
        '--trigger', 'default', '--runner', 'FnApiRunner', '--no-summary'])
    return lines, out, summary


def test_final_bars_equal_pandas_resampling(replay):
    lines, out, summary = replay
    want, valid = oracle(lines)
    bars = read_table(out, 'bars')
    final = bars.sort_values('pane_index').groupby(
        ['symbol', 'window_start']).tail(1)
    got = {(r.symbol, r.window_start.value // 1000): r
           for r in final.itertuples(index=False)}
    assert set(got) == set(want)
    for key, w in want.items():
        g = got[key]
        for field in ('open', 'close', 'high', 'low'):
            value = getattr(g, field)
            if w[field] is None:
                assert value is None or math.isnan(value), (key, field)
            else:
                assert value == w[field], (key, field)
        assert g.trade_count == w['trade_count'], key
        assert g.volume == pytest.approx(w['volume'], rel=1e-12), key
        assert g.vwap == pytest.approx(w['vwap'], rel=1e-9), key
    assert summary['decoded'] == valid
    assert summary['balanced']
    assert summary['aggregated'] == summary['decoded']   # repeats included
    print(f'\n{len(want)} bars from {summary["read"]} lines '
          f'({summary["decoded"]} trades, {summary["dead_lettered"]} dead) '
          f'equal pandas: prices exactly, VWAP to 1e-9')


def test_fat_fingers_are_flagged(replay):
    lines, out, _ = replay
    anomalies = read_table(out, 'anomalies')
    price = anomalies[anomalies.kind == 'price']
    assert len(price) > 0
    # Every flagged print is far from its window's reference.
    assert (price.deviation > 10).all()
    ratio = price.price / price.reference
    assert ((ratio > 5) | (ratio < 0.2)).all()


def test_synthetic_stream_panes_gaps_and_accounting(tmp_path):
    out = tmp_path / 'out'
    summary = run.run(trades, [
        '--streaming', '--source',
        'synthetic://trades?events=6000&rate=20&seed=3&late=0.03',
        '--sink', f'parquet://{out}', '--no-summary'])
    assert summary['balanced']
    assert summary['panes_early'] and summary['panes_on_time'] \
        and summary['panes_late']
    assert summary['late_kept'] > 0 and summary['dropped_late'] == 0
    assert summary['decoded'] == summary['aggregated'] + \
        summary['late_kept']
    late = read_table(out, 'dead_letter')
    assert (late.stage == 'window.late').sum() > 0
    anomalies = read_table(out, 'anomalies')
    assert 'gap' in set(anomalies.kind)
    bars = read_table(out, 'bars')
    for _, group in bars.groupby(['symbol', 'window_start']):
        counts = group.sort_values('pane_index').trade_count.tolist()
        assert counts == sorted(counts)


def test_csv_with_a_header_gives_the_same_bars_and_counts_the_header(
        replay, tmp_path):
    lines, json_out, _ = replay
    rows = []
    for line in lines[:3000]:
        try:
            doc = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(doc, dict) or _valid(doc) is None:
            continue
        conditions = doc.get('conditions') or []
        rows.append(','.join([
            doc['event_time'], doc['symbol'], repr(float(doc['price'])),
            repr(float(doc['size'])), str(doc.get('trade_id') or ''),
            doc.get('venue') or '', '|'.join(conditions)]))
    path = tmp_path / 'trades.csv'
    header = 'event_time,symbol,price,size,trade_id,venue,conditions'
    path.write_text('\n'.join([header] + rows) + '\n')
    out = tmp_path / 'csv'
    summary = run.run(trades, [
        '--source', f'file://{path}', '--sink', f'parquet://{out}',
        '--trigger', 'default', '--no-summary'])
    assert summary['filters'] == {'csv_header': 1}
    assert summary['read'] == len(rows) + 1
    assert summary['decoded'] == len(rows) and summary['balanced']
    want, _ = oracle([orjson.dumps(_as_doc(r)) for r in rows])
    bars = read_table(out, 'bars')
    got = {(r.symbol, r.window_start.value // 1000): r
           for r in bars.itertuples(index=False)}
    assert set(got) == set(want)
    for key, w in want.items():
        assert got[key].trade_count == w['trade_count']
        assert got[key].vwap == pytest.approx(w['vwap'], rel=1e-9)


def _as_doc(row):
    t, symbol, price, size, trade_id, venue, conditions = row.split(',')
    return {'event_time': t, 'symbol': symbol, 'price': float(price),
            'size': float(size), 'trade_id': trade_id or None,
            'venue': venue, 'conditions': [c for c in conditions.split('|')
                                           if c]}


T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc).timestamp()


def _trade(offset_s, symbol, price, size=10.0):
    """(event time s, one JSON trade of ``symbol`` at T0 + offset_s)."""
    at = datetime.datetime.fromtimestamp(T0 + offset_s, datetime.timezone.utc)
    return T0 + offset_s, orjson.dumps({
        'event_time': at.isoformat().replace('+00:00', 'Z'),
        'symbol': symbol, 'price': price, 'size': size,
        'trade_id': f'{symbol}-{offset_s}', 'venue': 'XNAS',
        'conditions': []})


@pytest.mark.parametrize('execution', ['columnar', 'element'])
def test_a_late_trade_is_a_dead_letter_with_its_payload(
        monkeypatch, tmp_path, execution):
    """Trades after the allowed lateness (60 s bars, lateness 2m) are dead
    letters, stage window.late, one per trade, each holding the bytes read,
    with its window and how late it was.  On the columnar path the three
    late AAA trades (one repeated: a duplicate is a record too) are one
    partial bar: it makes three dead letters, each with its own line.  The
    bars hold the others only."""
    stream = test_stream.TestStream().advance_watermark_to(Timestamp.of(T0))
    add(stream, _trade(5, 'AAA', 10.0), _trade(10, 'BBB', 20.0))
    stream.advance_watermark_to(Timestamp.of(T0 + 60 + 120 + 30))
    stream.advance_processing_time(1)
    late = [_trade(20, 'AAA', 11.0), _trade(30, 'BBB', 21.0, 5.0),
            _trade(25, 'AAA', 12.0, 3.0), _trade(25, 'AAA', 12.0, 3.0)]
    add(stream, *late)
    stream.advance_processing_time(1)
    stream.advance_watermark_to_infinity()

    def check(outputs):
        letters = (outputs['dead_letter']
                   | 'Late' >> beam.Filter(lambda d: d.stage == 'window.late'))
        why = letters | 'Why' >> beam.Map(lambda d: (
            d.reason.split(' for window')[0],
            'for window [2026-01-01T00:00:00+00:00, 2026-01-01T00:01:00'
            '+00:00) arrived 30.000 s after it closed (allowed lateness '
            '2m)' in d.reason))
        assert_that(why, equal_to([("1 record(s) of 'AAA'", True)] * 3 +
                                  [("1 record(s) of 'BBB'", True)]),
                    label='LateWhy')
        raws = letters | 'Raw' >> beam.Map(lambda d: bytes(d.raw))
        assert_that(raws, equal_to([raw for _, raw in late]),
                    label='LateRaw')
        final = outputs['bars'] | 'Final' >> beam.Map(
            lambda b: (b.symbol, b.trade_count, b.close))
        assert_that(final, equal_to([('AAA', 1, 10.0), ('BBB', 1, 20.0)]),
                    label='Bars')

    summary = run_job(trades, stream, monkeypatch, tmp_path, [
        '--trigger', 'late=1,lateness=2m,accumulating',
        '--execution', execution], check)
    assert summary['decoded'] == 6 and summary['late_kept'] == 4
    assert summary['late_dead_letters'] == 4
    assert summary['dropped_late'] == 0
    assert summary['window_assignments'] == 6 == \
        summary['aggregated'] + summary['late_kept']


def test_a_restart_keeps_a_trade_read_again_out_of_its_final_bar(
        monkeypatch, tmp_path):
    """A trade is in a 60 s bar and in a 5 m anomaly window: its bar is
    final an anomaly window earlier than its offset may be committed (every
    window of it final).  A restart resumes a horizon past the bar (the
    roll-back keeps that bar) and reads the trade again (its offset was not
    committed): it must keep it out of that bar, or the trade is late for
    it, a late dead letter beside the trade in the kept bar: counted twice
    (the Kafka kill test of the trades job found 11 to 64 such trades).
    From a source a restart resumes the job tells its read when a trade may
    first be late (its bar's close) with windows whose close a restart may
    keep it out of (``LateFrom.keeps_out``).  With fixed bars the columnar
    partials take each line's origin and leave a trade out of its bars
    final at the restart's horizon (``columnar.PartialsFn(keep_out=...)``,
    both paths compared in test_trades_equivalence.py); with sliding bars
    each trade reaches the bars grouping with its origin (record by
    record), which keeps it out (``aggregate._CountCarried``, tested on
    its own in test_aggregate_stream.py).  A file source, which no restart
    resumes, keeps the columnar path with no keep-out."""
    from transforms import io
    seen = []
    monkeypatch.setattr(io, 'open_source', lambda text, context: (
        seen.append(context), Played(test_stream.TestStream(), 'trades'))[1])
    final_at = None
    labels = {}
    (tmp_path / 't.jsonl').write_text('')
    keep_out = {}
    for name, source, window in (
            ('kafka', 'kafka://localhost:9092/trades?group=g', 'fixed:60s'),
            ('file', f'file://{tmp_path / "t.jsonl"}', 'fixed:60s'),
            ('sliding', 'kafka://localhost:9092/trades?group=g',
             'sliding:2m/1m')):
        args, beam_options = job_options.parse(trades.OPTIONS, [
            '--streaming', '--source', source, '--sink',
            f'parquet://{tmp_path / "out"}', '--trigger',
            'late=1,lateness=1h,accumulating', '--window', window])
        final_at = run._final_at(args)
        pipeline = beam.Pipeline(options=beam_options)
        trades.build(pipeline, args, io.Context(
            job='trades', streaming=True, keeps_late=True,
            final_at=final_at))
        parts = {t.full_label: t
                 for t in pipeline._current_transform().parts}
        labels[name] = set(parts)
        if 'DecodePartials' in parts:
            keep_out[name] = parts[
                'DecodePartials'].transform._do_transform.dofn._keep_out
    kafka, file, sliding = seen
    assert file.late_from is None and 'DecodePartials' in labels['file']
    assert keep_out['file'] is None
    late_from = kafka.late_from
    assert late_from is not None and late_from.keeps_out
    # fixed bars: the columnar partials keep a trade read again out of its
    # bars closing by the horizon (end + the bars' lateness)
    assert 'DecodePartials' in labels['kafka'] and \
        'Origins' not in labels['kafka']
    assert keep_out['kafka'] == 3600.0
    # sliding bars: record by record, each trade with its origin
    assert sliding.late_from is not None and sliding.late_from.keeps_out
    assert 'Origins' in labels['sliding'] and \
        'DecodePartials' not in labels['sliding']
    # offsets are committed once the anomaly window closes, the bar an
    # anomaly window earlier
    assert final_at(T0 + 10) == T0 + 300 + 3600
    assert late_from(T0 + 10) == T0 + 60 + 3600
