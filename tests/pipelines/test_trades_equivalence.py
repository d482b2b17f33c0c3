"""The trades job's columnar fast path and its element-at-a-time reference give
the same bars (every pane), anomalies and dead letters on the same input."""
import datetime

import numpy as np
import orjson
import pandas as pd
import pyarrow.dataset as ds
import pytest

from pipelines import run, trades
from transforms.synthetic import trades as synthetic_trades

HOSTILE = [
    b'{"event_time":"2026-01-01T14:31:00Z","symbol":"aapl","price":101,'
    b'"size":5}',
    b'{"event_time":1767278460000,"symbol":"AAPL","price":101,"size":5}',
    b'{"event_time":"2026-01-01T14:31:01Z","symbol":"AAPL","price":"101",'
    b'"size":5}',
    b'{"event_time":"2026-01-01T14:31:02Z","symbol":"AAPL","price":101,'
    b'"size":5,"trade_id":7}',
    b'{"event_time":"2026-01-01T14:31:03Z","symbol":"AAPL","price":101,'
    b'"size":5,"trade_id":" x1 "}',
    b'{"event_time":"2026-01-01T14:31:04Z","symbol":"AAPL","price":101,'
    b'"size":5,"conditions":"T"}',
    b'{"event_time":"2026-01-01T14:31:05Z","symbol":"AAPL","price":101,'
    b'"size":5,"conditions":["T","T"]}',
    b'{"event_time":"2026-01-01T14:31:06Z","symbol":"AAPL","price":101,'
    b'"size":5,"conditions":["a,b"]}',
    b'{"event_time":"2026-01-01T14:31:07Z","symbol":"AAPL","price":0,'
    b'"size":5}',
    b'{"event_time":"2026-01-01T14:31:08Z","symbol":"AAPL","price":1e400,'
    b'"size":5}',
    b'{"event_time":"2026-01-01T14:31:09.1234567Z","symbol":"AAPL",'
    b'"price":101,"size":5}',
    b'{"event_time":"2026-01-01T14:31:10","symbol":"AAPL","price":101,'
    b'"size":5}',
    b'{"event_time":"2026-01-01T14:31:11Z","symbol":"AAPL","price":101,'
    b'"size":5,"symbol":"MSFT"}',
    b'{"event_time":"2026-01-01T14:31:12Z","symbol":"AAPL","price":true,'
    b'"size":5}',
    b'{"event_time":"2026-01-01T14:31:13Z","symbol":"AAPL","price":101,'
    b'"size":5,"venue":7}',
    b'event_time,symbol,price,size,trade_id',
    b'2026-01-01T14:31:14Z,AAPL,101.5,10,c1',
    b'2026-01-01T14:31:14Z,AAPL,101.5,10,c1',
    b'', b'   ', b'[1]', b'\xff\xfe', b'{"event_time":"2026-01-01T14:31:15Z"',
]


def _run(tmp, execution, argv):
    out = tmp / execution
    summary = run.run(trades, argv + ['--sink', f'parquet://{out}',
                                      '--execution', execution,
                                      '--no-summary'])
    return out, summary


def _same_summary(summary):
    """The summary both paths must agree on: all of it (late records are
    kept one dead letter per record on both paths)."""
    return summary


def _rows(out, table, keys):
    path = out / table
    if not path.exists():
        return {}
    frame = ds.dataset(str(path), format='parquet').to_table().to_pandas()
    return {tuple(getattr(r, k) for k in keys): r
            for r in frame.itertuples(index=False)}


def _same(a, b, floats):
    assert a.keys() == b.keys()
    for key in a:
        for field in a[key]._fields:
            va, vb = getattr(a[key], field), getattr(b[key], field)
            if field in floats and va is not None and not (
                    isinstance(va, float) and np.isnan(va)):
                assert vb == pytest.approx(va, rel=1e-9), (key, field)
            elif field not in floats and field != 'error_time':
                assert (va == vb) or (va != va and vb != vb), (key, field)


def assert_same_outputs(element, columnar):
    bars_a = _rows(element, 'bars', ('symbol', 'window_start', 'pane_timing',
                                     'pane_index'))
    bars_b = _rows(columnar, 'bars', ('symbol', 'window_start', 'pane_timing',
                                      'pane_index'))
    assert bars_a
    _same(bars_a, bars_b, {'volume', 'vwap'})
    keys = ('symbol', 'kind', 'event_time', 'trade_id')
    _same(_rows(element, 'anomalies', keys), _rows(columnar, 'anomalies', keys),
          {'reference', 'deviation'})
    # The same dead letters: the decoders' ones to the reason, the late
    # records' (one per record on both paths) by their payloads, windows
    # and counts (how late a record was depends on the bundle it came in).
    # (Listed, not keyed: a repeated trade's late letters are equal rows.)
    dead_a, dead_b = _letters(element), _letters(columnar)
    assert sorted(dead_a) == sorted(dead_b)


def _letters(out):
    path = out / 'dead_letter'
    if not path.exists():
        return []
    frame = ds.dataset(str(path), format='parquet').to_table().to_pandas()
    return [(stage, raw, reason.split(' arrived ')[0]
             if stage == 'window.late' else reason)
            for stage, raw, reason in zip(frame.stage, frame.raw,
                                          frame.reason)]


def test_stream_with_disorder_late_duplicates_and_malformed(tmp_path):
    argv = ['--streaming', '--source',
            'synthetic://trades?events=3000&rate=10&seed=9&late=0.05'
            '&malformed=0.03&duplicates=0.05&fat_finger=0.01&gap_s=60']
    element, s1 = _run(tmp_path, 'element', argv)
    columnar, s2 = _run(tmp_path, 'columnar', argv)
    assert _same_summary(s1) == _same_summary(s2)
    assert s1['panes_early'] and s1['panes_late'] and s1['late_kept']
    assert not s1['dropped_late']
    assert_same_outputs(element, columnar)


@pytest.mark.parametrize('window', ['fixed:60s', 'sliding:2m/1m'])
def test_hostile_file_replay(tmp_path, window):
    params = {k: v[1] for k, v in synthetic_trades.PARAMS.items()}
    params.update(events=4000, rate=20.0, seed=4, malformed=0.02,
                  duplicates=0.05, fat_finger=0.005)
    lines = list(synthetic_trades.generate(params).payloads())
    rng = np.random.default_rng(3)
    for line in HOSTILE:
        lines.insert(int(rng.integers(0, len(lines))), line)
    path = tmp_path / 'hostile.jsonl'
    path.write_bytes(b'\n'.join(lines) + b'\n')
    argv = ['--source', f'file://{path}?block_bytes=16384', '--window', window]
    element, s1 = _run(tmp_path, 'element', argv)
    columnar, s2 = _run(tmp_path, 'columnar', argv)
    assert _same_summary(s1) == _same_summary(s2)
    assert s1['read'] == len(lines) and s1['balanced']
    assert s1['filters'] == {'csv_header': 1}
    assert_same_outputs(element, columnar)


T0 = 1767276000.0          # 2026-01-01T14:00:00Z


def _trade(t, symbol, price, trade_id, size=10):
    stamp = datetime.datetime.fromtimestamp(
        t, datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%S.%fZ')
    return orjson.dumps({'event_time': stamp, 'symbol': symbol,
                         'price': price, 'size': size, 'trade_id': trade_id})


def _restart_stream():
    """A restart's stream: it resumes at the horizon T0+150 (the watermark
    starts there) and reads again trades the killed run had handed on,
    registered with that horizon (``final_by``), beside trades it reads
    for the first time.  Returns (timed bundles, registered payloads)."""
    bar1 = [(T0 + 5 + 7 * i, _trade(T0 + 5 + 7 * i, 'AAPL', 100 + i % 3,
                                    f'a{i}')) for i in range(6)]
    # a fat finger the killed run had in its (final) bar: kept out of the
    # bar, still judged in its anomaly window
    bar1.append((T0 + 50, _trade(T0 + 50, 'AAPL', 1000.0, 'fat')))
    bar2 = [(T0 + 61 + 9 * i, _trade(T0 + 61 + 9 * i, s, 100 + i % 4,
                                     f'{s[0].lower()}{10 + i}'))
            for i in range(5) for s in ('AAPL', 'MSFT')]
    new1 = [(T0 + 30, _trade(T0 + 30, 'AAPL', 101, 'n1')),  # late for bar 1
            (T0 + 40, _trade(T0 + 40, 'MSFT', 99, 'n2'))]
    new3 = [(T0 + 121 + 11 * i, _trade(T0 + 121 + 11 * i, 'AAPL', 100 + i,
                                       f'n{3 + i}')) for i in range(4)]
    again = bar1 + bar2
    first = [again[0], new1[0], again[3], again[1]] + again[4:9]
    second = again[9:] + [again[2], new1[1]] + new3 + [new3[0], b'nope']
    second = [p if isinstance(p, tuple) else (T0 + 130, p) for p in second]
    return (first, second), [p for _, p in again], len(bar1), \
        [p for _, p in new1]


def test_a_restart_keeps_trades_read_again_out_of_final_bars_on_both_paths(
        monkeypatch, tmp_path):
    """From ``kafka://`` with fixed bars the columnar path keeps its
    partials: the trades a restart reads again (their origins registered
    with the horizon it resumes, as the read registers them) are left out
    of the bars final at that horizon where the partials are built
    (``columnar.PartialsFn(keep_out=...)``), as the element path's
    grouping leaves them out (``aggregate._CountCarried``), by the same
    rule (``aggregate.kept_out``), and still enter their anomaly window.
    Both paths give the same panes, dead letters and counters, and the
    bars hold what an oracle says: the bar final at the horizon gets
    nothing again, the others every trade."""
    from apache_beam.testing.test_stream import TestStream
    from transforms import deadletter
    from tests.pipelines.job_streams import add, run_job
    horizon = T0 + 150
    bundles, registered, kept_out, may_be_late = _restart_stream()
    argv = ['--source', 'kafka://localhost:9092/trades?group=g',
            '--trigger', 'early=10s,late=1,lateness=60s,accumulating',
            '--anomaly_min_trades', '5', '--anomaly_k', '5']
    outs, summaries = {}, {}
    for execution in ('element', 'columnar'):
        deadletter.forget_origins()
        for n, payload in enumerate(registered):
            deadletter.register_origin(payload, f'partition=0&offset={n}',
                                       final_by=horizon)
        # read for the first time, behind the watermark: registered as
        # the origin of a late letter (no final_by), as the read does
        for n, payload in enumerate(may_be_late, start=100):
            deadletter.register_origin(payload, f'partition=0&offset={n}')
        stream = TestStream().advance_watermark_to(horizon)
        for bundle in bundles:
            stream = add(stream, *bundle)
        stream = stream.advance_watermark_to(T0 + 1000) \
            .advance_watermark_to_infinity()
        out = tmp_path / execution
        labels = []
        summaries[execution] = run_job(
            trades, stream, monkeypatch, out,
            argv + ['--execution', execution],
            lambda outputs: labels.append(outputs))
        outs[execution] = out / 'out'
        # every registration taken (bound to its trade)
        assert not deadletter._ORIGINS
    deadletter.forget_origins()
    element, columnar = summaries['element'], summaries['columnar']
    assert element == columnar
    assert element['kept_out_on_restart'] == kept_out
    assert element['late_kept'] == 2 and not element['dropped_late']
    assert_same_outputs(outs['element'], outs['columnar'])
    # The oracle: every trade read, less the bar final at the horizon's
    # trades read again, is in a final bar; the late ones in dead letters.
    trades_read = pd.DataFrame(
        [orjson.loads(p) | {'t': t} for bundle in bundles
         for t, p in bundle if p != b'nope'])
    trades_read = trades_read.drop_duplicates('trade_id')
    trades_read['start'] = (trades_read.t // 60 * 60).astype(int)
    closes = trades_read.start + 60 + 60
    in_final_bar = ~((closes <= horizon)
                     & trades_read.trade_id.isin(
                         [orjson.loads(p)['trade_id'] for p in registered]))
    late = (closes <= horizon) & in_final_bar
    expected = trades_read[in_final_bar & ~late].groupby(
        ['symbol', 'start']).size().to_dict()
    for execution in ('element', 'columnar'):
        bars = ds.dataset(str(outs[execution] / 'bars'),
                          format='parquet').to_table().to_pandas()
        final = bars.sort_values('pane_index').groupby(
            ['symbol', 'window_start']).last()
        got = {(s, int(w.timestamp())): int(c) for (s, w), c in
               final.trade_count.items()}
        assert got == expected, execution
        anomalies = ds.dataset(str(outs[execution] / 'anomalies'),
                               format='parquet').to_table().to_pandas()
        assert 'fat' in set(anomalies.trade_id), execution
    assert late.sum() == 2
    # The late letters name the same source on both paths.
    sources = {}
    for execution in ('element', 'columnar'):
        letters = ds.dataset(str(outs[execution] / 'dead_letter'),
                             format='parquet').to_table().to_pandas()
        sources[execution] = sorted(
            (raw, source) for raw, source, stage in zip(
                letters.raw, letters.source, letters.stage)
            if stage == 'window.late')
    assert sources['element'] == sources['columnar']
    assert len(sources['element']) == 2
