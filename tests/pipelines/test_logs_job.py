"""The logs job end to end: a file replay checked against pandas computing the
same per-window figures from the same input, and the synthetic stream."""
import datetime
import math

import numpy as np
import orjson
import pandas as pd
import pyarrow.dataset as ds
import pytest
import apache_beam as beam
from apache_beam.testing import test_stream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.utils.timestamp import Timestamp

from pipelines import logs, run
from tests.pipelines.job_streams import add, run_job
from transforms import privacy
from transforms.combiners import Quantiles
from transforms.logs import templates

T0 = 1767225600          # 2026-01-01T00:00:00Z
SERVICES = ('api', 'web', 'db')


def _iso(t):
    return pd.Timestamp(t, unit='s', tz='UTC').strftime('%Y-%m-%dT%H:%M:%SZ')


def _clf(t):
    return pd.Timestamp(t, unit='s', tz='UTC').strftime('%d/%b/%Y:%H:%M:%S +0000')


def make_input(n=4000, seed=11):
    """Records as a DataFrame (the oracle's input) and as log lines in three
    formats, shuffled (out of order), plus malformed lines."""
    rng = np.random.default_rng(seed)
    t = T0 + rng.integers(0, 300, n)
    service = rng.choice(SERVICES, n)
    fmt = rng.choice(['json', 'combined', 'syslog'], n, p=[0.7, 0.2, 0.1])
    incident = (service == 'api') & (t >= T0 + 120) & (t < T0 + 180)
    status = np.where(rng.random(n) < np.where(incident, 0.5, 0.01), 503, 200)
    latency = np.round(rng.lognormal(3.5, 0.7, n)).astype(float)   # whole ms
    has_latency = (fmt != 'syslog') & (rng.random(n) < 0.9)
    severity = np.where(status >= 500, 3, 6)
    lines = []
    for i in range(n):
        if fmt[i] == 'json':
            doc = {'timestamp': _iso(t[i]), 'service': str(service[i]),
                   'level': 'ERROR' if status[i] >= 500 else 'INFO',
                   'status': int(status[i]),
                   'message': f'request from 198.51.100.{i % 250} done'}
            if has_latency[i]:
                doc['latency_ms'] = float(latency[i])
            lines.append(orjson.dumps(doc))
        elif fmt[i] == 'combined':
            tail = f' {latency[i] / 1000:.3f}' if has_latency[i] else ''
            lines.append(
                f'{service[i]}:443 203.0.113.9 - - [{_clf(t[i])}] "GET /x '
                f'HTTP/1.1" {status[i]} 512 "-" "curl/8.5"{tail}'.encode())
        else:
            lines.append(f'<{128 + severity[i]}>1 {_iso(t[i])} host1 '
                         f'{service[i]} 42 - - job done'.encode())
    frame = pd.DataFrame({
        't': t, 'service': service,
        'error': status >= 500,
        'latency': np.where(has_latency, latency, np.nan),
    })
    bad = [b'{"timestamp": "2026-01-01T00:00:01Z", "serv', b'\xff\xfe\x00junk',
           b'{"service": "api", "message": "no time"}', b'not a log line',
           b'{"timestamp": "2026-01-01T00:00:05Z", "service": "api", '
           b'"status": "abc"}', b'<999>1 bad pri', b'[1, 2, 3]']
    all_lines = lines + bad
    order = rng.permutation(len(all_lines))
    return frame, [all_lines[i] for i in order], bad


def oracle(frame):
    frame = frame.assign(window=(frame.t - T0) // 60 * 60 + T0)
    g = frame.groupby(['service', 'window'])
    out = g.agg(count=('t', 'size'), errors=('error', 'sum'),
                latency_count=('latency', 'count'),
                latency_mean_ms=('latency', 'mean'),
                latency_min_ms=('latency', 'min'),
                latency_max_ms=('latency', 'max'),
                latency_stddev_ms=('latency', lambda x: x.std(ddof=1)))
    out['error_rate'] = out.errors / out['count']
    return out, g


def read_table(directory, table):
    return ds.dataset(str(directory / table), format='parquet').to_table() \
        .to_pandas()


def final_panes(frame, keys):
    return frame.sort_values('pane_index').groupby(keys).tail(1)


@pytest.fixture(scope='module')
def replay(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('replay')
    frame, lines, bad = make_input()
    path = tmp / 'input.log'
    path.write_bytes(b'\n'.join(lines) + b'\n')
    out = tmp / 'out'
    summary = run.run(logs, [
        '--source', f'file://{path}', '--sink', f'parquet://{out}',
        '--trigger', 'default', '--no-summary'])
    return frame, bad, out, summary


def test_replay_matches_pandas_per_window(replay):
    frame, _, out, _ = replay
    expected, groups = oracle(frame)
    got = final_panes(read_table(out, 'service_stats'),
                      ['service', 'window_start'])
    got['window'] = got.window_start.astype('int64') // 10**6
    got = got.set_index(['service', 'window']).sort_index()
    assert list(got.index) == list(expected.index)
    assert (got.pane_timing == 'ON_TIME').all()
    for column in ('count', 'errors', 'latency_count'):
        assert (got[column].values == expected[column].values).all(), column
    for column in ('error_rate', 'latency_mean_ms', 'latency_min_ms',
                   'latency_max_ms', 'latency_stddev_ms'):
        np.testing.assert_allclose(got[column].values,
                                   expected[column].values, rtol=1e-9,
                                   err_msg=column)
    eps = Quantiles.rank_error()
    for (service, window), values in groups.latency:
        values = np.sort(values.dropna().values)
        row = got.loc[(service, window)]
        for rank, column in ((0.5, 'latency_p50_ms'), (0.95, 'latency_p95_ms'),
                             (0.99, 'latency_p99_ms')):
            lo = np.searchsorted(values, row[column], side='left') / len(values)
            hi = np.searchsorted(values, row[column], side='right') / len(values)
            assert lo - eps <= rank <= hi + eps, (service, window, column)


def test_every_record_is_accounted_for(replay):
    frame, bad, out, summary = replay
    assert summary['read'] == len(frame) + len(bad)
    assert summary['decoded'] == len(frame)
    assert summary['dead_lettered'] == len(bad)
    assert summary['balanced']
    assert summary['aggregated'] == len(frame)
    assert summary['dropped_late'] == 0
    dead = read_table(out, 'dead_letter')
    assert sorted(dead.raw) == sorted(bad)
    assert (dead.stage == 'decode.logs').all()
    assert dead.reason.str.len().min() > 0
    assert summary['rows_written']['dead_letter'] == len(bad)


def test_alerts_follow_the_error_rate_with_hysteresis(replay):
    frame, _, out, _ = replay
    expected, _ = oracle(frame)
    # The rule, applied by hand to pandas' figures: raise above 0.05, recover
    # below 0.04, windows with fewer than 20 records not evaluated.
    want = []
    for service in sorted(set(frame.service)):
        raised = False
        for window, row in expected.loc[service].sort_index().iterrows():
            if row['count'] < 20:
                continue
            if not raised and row.error_rate > 0.05:
                raised = True
                want.append((service, 'error_rate', 'RAISED', window))
            elif raised and row.error_rate < 0.04:
                raised = False
                want.append((service, 'error_rate', 'RECOVERED', window))
    alerts = read_table(out, 'alerts')
    alerts = alerts[alerts.metric == 'error_rate']
    got = sorted(zip(alerts.key, alerts.metric, alerts.state,
                     alerts.window_start.astype('int64') // 10**6))
    assert got == sorted(want)
    assert ('api', 'error_rate', 'RAISED', T0 + 120) in got


def test_file_names_are_deterministic(replay, tmp_path):
    """Windowed tables get the same names on a rerun (dead letters carry their
    processing time in their identity, so theirs differ by design)."""
    frame, bad, out, _ = replay
    source = out.parent / 'input.log'
    again = tmp_path / 'again'
    run.run(logs, ['--source', f'file://{source}', '--sink',
                   f'parquet://{again}', '--trigger', 'default',
                   '--no-summary'])
    def names(root):
        return sorted(p.relative_to(root).as_posix()
                      for table in ('service_stats', 'alerts')
                      for p in (root / table).rglob('*.parquet'))
    assert names(out) == names(again) and names(out)


def test_synthetic_stream_has_every_kind_of_pane(tmp_path):
    out = tmp_path / 'out'
    summary = run.run(logs, [
        '--streaming', '--source',
        'synthetic://logs?events=6000&rate=20&seed=5&late=0.03',
        '--sink', f'parquet://{out}', '--no-summary'])
    assert summary['balanced']
    assert summary['read'] == 6000
    assert summary['dead_lettered'] > 0
    assert summary['panes_early'] > 0
    assert summary['panes_on_time'] > 0
    assert summary['panes_late'] > 0
    assert summary['late_accepted'] > 0
    # Records after the allowed lateness are kept as dead letters.
    assert summary['late_kept'] > 0 and summary['dropped_late'] == 0
    assert summary['decoded'] == summary['aggregated'] + summary['late_kept']
    assert summary['alerts_raised'] >= 1 and summary['alerts_recovered'] >= 1
    stats = read_table(out, 'service_stats')
    assert set(stats.pane_timing) == {'EARLY', 'ON_TIME', 'LATE'}
    # For each service and window the highest pane index is the final value,
    # and in accumulating mode no later pane has fewer records.
    for _, group in stats.groupby(['service', 'window_start']):
        counts = group.sort_values('pane_index')['count'].tolist()
        assert counts == sorted(counts)
    dead = read_table(out, 'dead_letter')
    late = dead[dead.stage == 'window.late']
    assert len(dead) - len(late) == summary['dead_lettered']
    assert len(late) and late.reason.str.contains('after it closed').all()
    # Personal data never reaches a written file.
    for raw in dead.raw:
        assert b'@example.com' not in raw and b'203.0.113.' not in raw
    assert not math.isnan(stats.error_rate.max())


def test_templates_on_a_loghub_sample(shared_dir, tmp_path):
    """--templates on over a real log: every decoded record is in one template
    row of its service and window, ids are those of the template text."""
    sample = shared_dir / 'loghub' / 'OpenSSH' / 'OpenSSH_2k.log'
    if not sample.is_file():
        pytest.skip('the Loghub OpenSSH sample is not in ../shared/loghub')
    lines = sample.read_bytes().splitlines()[:600] + [b'not a log line']
    path = tmp_path / 'ssh.log'
    path.write_bytes(b'\n'.join(lines) + b'\n')
    out = tmp_path / 'out'
    summary = run.run(logs, [
        '--source', f'file://{path}', '--sink', f'parquet://{out}',
        '--trigger', 'default', '--syslog_year', '2017', '--templates', 'on',
        '--template_min_count', '5', '--no-summary'])
    assert summary['balanced'] and summary['decoded'] == 600
    assert summary['dead_lettered'] == 1
    stats = read_table(out, 'service_stats')
    rows = read_table(out, 'templates')
    per_window = rows.groupby(['service', 'window_start'])['count'].sum()
    expected = stats.set_index(['service', 'window_start'])['count']
    assert per_window.sort_index().to_dict() == expected.sort_index().to_dict()
    assert all(tid == templates.template_id(svc, text) for tid, svc, text in
               zip(rows.template_id, rows.service, rows.template))
    assert (rows.first_seen <= rows.last_seen).all()
    assert '<ip>' in ' '.join(rows.example)          # examples are masked
    alerts = read_table(out, 'template_alerts')
    new = alerts[alerts.kind == 'new_template']
    assert len(new) >= 5 and new.template_id.is_unique
    assert (new['count'] == 5).all()
    assert summary['rows_written']['templates'] == len(rows)


def test_templates_keep_late_records_as_the_other_groupings_do(tmp_path):
    """--templates on: a template hit after the allowed lateness is not
    dropped unseen: it is counted (``late_template_hits``), so that every
    decoded record is in a template's final pane or counted late; the late
    record itself is a dead letter once (stage window.late), as the service
    statistics keep it, not a second time for its template."""
    import json
    out = tmp_path / 'out'
    summary = run.run(logs, [
        '--streaming', '--source',
        'synthetic://logs?events=3000&rate=20&seed=5&late=0.03',
        '--sink', f'parquet://{out}', '--no-summary', '--templates', 'on'])
    assert summary['late_kept'] > 0 and summary['dropped_late'] == 0
    dead = read_table(out, 'dead_letter')
    late = dead[dead.stage == 'window.late']
    assert len(late) == summary['late_dead_letters']
    assert not late.raw.map(lambda raw: b'"template_id"' in bytes(raw)).any()
    counters = json.loads((out / run.SUMMARY_FILE).read_text())['counters']
    hits = counters['late_template_hits']
    assert hits > 0
    templates = read_table(out, 'templates')
    final = templates.sort_values('pane_index').groupby(
        ['template_id', 'window_start']).tail(1)
    assert final['count'].sum() + hits == summary['decoded']


def _log_line(offset_s, service, message, fmt='json'):
    """(event time s, one log line of ``service`` at T0 + offset_s)."""
    at = datetime.datetime.fromtimestamp(T0 + offset_s, datetime.timezone.utc)
    stamp = at.isoformat().replace('+00:00', 'Z')
    if fmt == 'json':
        return T0 + offset_s, orjson.dumps({
            'timestamp': stamp, 'service': service, 'level': 'INFO',
            'status': 200, 'latency_ms': 12.0, 'message': message})
    return T0 + offset_s, (f'<134>1 {stamp} host1 {service} 42 - - '
                           f'{message}').encode()


@pytest.mark.parametrize('execution', ['columnar', 'element'])
def test_a_late_record_is_a_dead_letter_with_its_payload(
        monkeypatch, tmp_path, execution):
    """Lines after the allowed lateness (60 s windows, lateness 2m) are dead
    letters, stage window.late, one per record, each holding the bytes read
    (masked as every dead letter is), with its window and how late it was
    in its reason.  On the columnar path the two late 'api' lines are one
    partial aggregate (one bundle, one key, one window): it makes two dead
    letters, each with its own line, one read by Arrow and one by the
    reference decoder."""
    stream = test_stream.TestStream().advance_watermark_to(Timestamp.of(T0))
    add(stream, _log_line(5, 'api', 'ok'), _log_line(10, 'web', 'ok'))
    stream.advance_watermark_to(Timestamp.of(T0 + 60 + 120 + 30))
    stream.advance_processing_time(1)
    late_json = _log_line(20, 'api', 'mail from bob@example.com failed')
    late_api = _log_line(25, 'api', 'retry', fmt='syslog')
    late_syslog = _log_line(30, 'web', 'job done', fmt='syslog')
    add(stream, late_json, late_api, late_syslog)
    stream.advance_processing_time(1)
    stream.advance_watermark_to_infinity()
    masker = privacy.Masker(mode='mask')
    want_raw = {masker.mask(late_json[1].decode()).encode(), late_api[1],
                late_syslog[1]}
    assert b'bob@example.com' not in b''.join(want_raw)

    def check(outputs):
        late = (outputs['dead_letter']
                | 'Late' >> beam.Filter(lambda d: d.stage == 'window.late'))
        why = late | 'Why' >> beam.Map(lambda d: (
            d.reason.split(' for window')[0],
            'for window [2026-01-01T00:00:00+00:00, 2026-01-01T00:01:00'
            '+00:00) arrived 30.000 s after it closed (allowed lateness '
            '2m)' in d.reason))
        assert_that(why, equal_to([("1 record(s) of 'api'", True)] * 2 +
                                  [("1 record(s) of 'web'", True)]),
                    label='LateWhy')
        raws = late | 'Raw' >> beam.Map(lambda d: bytes(d.raw))
        assert_that(raws, equal_to(sorted(want_raw)), label='LateRaw')

    summary = run_job(logs, stream, monkeypatch, tmp_path, [
        '--trigger', 'late=1,lateness=2m,accumulating',
        '--execution', execution], check)
    assert summary['decoded'] == 5 and summary['late_kept'] == 3
    assert summary['late_dead_letters'] == 3
    assert summary['dropped_late'] == 0
    assert summary['window_assignments'] == 5 == \
        summary['aggregated'] + summary['late_kept']
