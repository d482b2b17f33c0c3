"""The columnar fast path and the element-at-a-time reference give the same
outputs — every pane of every window, the alerts and the dead letters — on the
same input: a stream (out of order, late, malformed) and a hostile file."""
import numpy as np
import pyarrow.dataset as ds
import pytest

from pipelines import logs, run
from transforms.synthetic import logs as synthetic_logs

FLOATS = ('error_rate', 'latency_mean_ms', 'latency_min_ms', 'latency_max_ms',
          'latency_stddev_ms', 'latency_p50_ms', 'latency_p95_ms',
          'latency_p99_ms')

# Lines the vectorised reader must hand to the reference decoder (or get
# exactly right): alternative keys, odd types, odd times, odd shapes.
HOSTILE = [
    b'{"@timestamp":"2026-01-01T00:00:03Z","service":"auth","status":500}',
    b'{"timestamp":"2026-01-01T00:00:04Z","app":"auth","latency_ms":3}',
    b'{"timestamp":"2026-01-01T00:00:05Z","service":"auth","status":200.0}',
    b'{"timestamp":"2026-01-01T00:00:06Z","service":"auth","status":200.5}',
    b'{"timestamp":"2026-01-01T00:00:07Z","service":"auth","level":50}',
    b'{"timestamp":"2026-01-01T00:00:08Z","service":"auth","level":"crit"}',
    b'{"timestamp":"2026-01-01T00:00:09Z","service":" auth ","status":503}',
    b'{"timestamp":"2026-01-01T00:00:10Z","service":{"name":"auth"}}',
    b'{"timestamp":"2026-01-01T00:00:11.123456789Z","service":"auth"}',
    b'{"timestamp":"2026-01-01T00:00:12","service":"auth"}',
    b'{"timestamp":"2026-02-30T00:00:12Z","service":"auth"}',
    b'{"timestamp":"1969-12-31T23:59:59Z","service":"auth"}',
    b'{"timestamp":1767225613000,"service":"auth"}',
    b'{"timestamp":"2026-01-01T00:00:14Z","service":"auth","latency_ms":-1}',
    b'{"timestamp":"2026-01-01T00:00:15Z","service":"auth","latency_ms":"7"}',
    b'{"timestamp":"2026-01-01T00:00:16Z","service":"auth","latency_s":0.25}',
    b'{"timestamp":"2026-01-01T00:00:17Z","service":"auth","status":1e400}',
    b'{"timestamp":"2026-01-01T00:00:18Z","service":"auth","status":'
    b'123456789012345678901234567890}',
    b'{"timestamp":"2026-01-01T00:00:19Z","service":"auth","service":"db"}',
    b'{"timestamp":"2026-01-01T00:00:20Z","service":"auth","host":7}',
    b'{"timestamp":"2026-01-01T00:00:21Z","service":"auth","message":{"a":1}}',
    b'{"timestamp":"2026-01-01T00:00:22Z","service":"auth","log":{"level":'
    b'"error"}}',
    b'{"timestamp":"2026-01-01T00:00:23Z","service":"auth"}\r',
    b'   {"timestamp":"2026-01-01T00:00:24Z","service":"auth"}',
    b'{"timestamp":"2026-01-01T00:00:25Z","service":"au\xffth"}',
    b'{"timestamp":"2026-01-01T00:00:26Z","service":"auth",',
    b'{"timestamp":"2026-01-01T00:00:27Z","service":"auth"} trailing',
    b'[1,2,3]', b'{}', b'', b'   ', b'null', b'\x00\x01',
    b'{"timestamp":"2026-01-01T00:00:28Z","service":"auth","status":null,'
    b'"status_code":503}',
    b'auth:443 192.0.2.1 - - [01/Jan/2026:00:00:29 +0000] "GET / HTTP/1.1" '
    b'503 12 "-" "curl/8" 0.250',
    b'<131>1 2026-01-01T00:00:30Z h auth 1 - - failed for bob@example.com',
]


def _run(tmp, execution, argv):
    out = tmp / execution
    summary = run.run(logs, argv + ['--sink', f'parquet://{out}',
                                    '--execution', execution, '--no-summary'])
    return out, summary


def _same_summary(summary):
    """The summary both paths must agree on: all of it (late records are
    kept one dead letter per record on both paths)."""
    return summary


def _table(out, name):
    path = out / name
    if not path.exists():
        return []
    frame = ds.dataset(str(path), format='parquet').to_table().to_pandas()
    return frame


def _stats_by_pane(out):
    frame = _table(out, 'service_stats')
    return {(r.service, r.window_start, r.pane_timing, r.pane_index): r
            for r in frame.itertuples(index=False)}


def assert_same_outputs(element, columnar):
    a, b = _stats_by_pane(element), _stats_by_pane(columnar)
    assert a.keys() == b.keys()
    assert len(a) > 0
    for key in a:
        ra, rb = a[key], b[key]
        assert (ra.count, ra.errors, ra.latency_count) == \
            (rb.count, rb.errors, rb.latency_count), key
        for field in FLOATS:
            va, vb = getattr(ra, field), getattr(rb, field)
            if va is None or (isinstance(va, float) and np.isnan(va)):
                assert vb is None or np.isnan(vb), (key, field)
            else:
                assert vb == pytest.approx(va, rel=1e-9, abs=1e-12), \
                    (key, field)
    alerts_a = sorted(map(tuple, _table(element, 'alerts').itertuples(
        index=False))) if len(_table(element, 'alerts')) else []
    alerts_b = sorted(map(tuple, _table(columnar, 'alerts').itertuples(
        index=False))) if len(_table(columnar, 'alerts')) else []
    assert alerts_a == alerts_b
    # The same dead letters: the decoders' ones to the reason, the late
    # records' (one per record on both paths) by their payloads, windows
    # and counts (how late a record was depends on the bundle it came in).
    dead_a = _table(element, 'dead_letter')
    dead_b = _table(columnar, 'dead_letter')
    late_a = dead_a[dead_a.stage == 'window.late']
    late_b = dead_b[dead_b.stage == 'window.late']
    dead_a = dead_a[dead_a.stage != 'window.late']
    dead_b = dead_b[dead_b.stage != 'window.late']
    assert sorted(zip(dead_a.raw, dead_a.reason)) == \
        sorted(zip(dead_b.raw, dead_b.reason))
    assert sorted(zip(late_a.raw, late_a.reason.map(_late_what))) == \
        sorted(zip(late_b.raw, late_b.reason.map(_late_what)))


def _late_what(reason):
    """What a late record's reason says, up to how late it was."""
    return reason.split(' arrived ')[0]


def test_stream_with_disorder_late_data_and_malformed_records(tmp_path):
    # Few records per service and window, so the quantile sketches are exact
    # and the outputs can be compared to the last digit.
    argv = ['--streaming', '--source',
            'synthetic://logs?events=3000&rate=10&seed=9&late=0.05'
            '&malformed=0.03']
    element, s1 = _run(tmp_path, 'element', argv)
    columnar, s2 = _run(tmp_path, 'columnar', argv)
    assert _same_summary(s1) == _same_summary(s2)
    assert s1['panes_early'] and s1['panes_late'] and s1['late_kept']
    assert not s1['dropped_late']
    assert_same_outputs(element, columnar)


@pytest.mark.parametrize('window, trigger', [
    ('sliding:2m/1m', 'early=10s,late=1,lateness=2m,accumulating'),
    ('fixed:60s', 'early=10s,late=1,lateness=2m,discarding'),
])
def test_stream_with_other_windows_and_accumulation(tmp_path, window,
                                                    trigger):
    argv = ['--streaming', '--window', window, '--trigger', trigger,
            '--source', 'synthetic://logs?events=1500&rate=5&seed=21'
            '&late=0.05&malformed=0.03']
    element, s1 = _run(tmp_path, 'element', argv)
    columnar, s2 = _run(tmp_path, 'columnar', argv)
    assert _same_summary(s1) == _same_summary(s2)
    assert s1['panes_late'] and s1['balanced']
    assert_same_outputs(element, columnar)


def test_hostile_file_replay(tmp_path):
    stream = synthetic_logs.generate(dict(
        synthetic_logs.PARAMS and {k: v[1] for k, v in
                                   synthetic_logs.PARAMS.items()},
        events=2000, rate=10.0, seed=4, malformed=0.02))
    lines = list(stream.payloads())
    rng = np.random.default_rng(3)
    for line in HOSTILE:
        lines.insert(int(rng.integers(0, len(lines))), line)
    path = tmp_path / 'hostile.log'
    path.write_bytes(b'\n'.join(lines) + b'\n\n')   # a blank last line
    argv = ['--source', f'file://{path}?block_bytes=8192']
    element, s1 = _run(tmp_path, 'element', argv)
    columnar, s2 = _run(tmp_path, 'columnar', argv)
    assert _same_summary(s1) == _same_summary(s2)
    assert s1['read'] == len(lines) + 1 and s1['balanced']
    assert_same_outputs(element, columnar)


def test_make_runs_stream_in_blocks_against_the_element_path(tmp_path,
                                                             monkeypatch):
    # make run's stream (its services, stragglers, malformed records and
    # trigger), shorter and at 15 records/s, so that a service's window holds
    # fewer records than the quantile sketch keeps and both paths' p99 are
    # exact: the columnar path reads it as one LineBlock per tick, the
    # element path record by record, from the same TestStream.
    from transforms.io import synthetic
    blocks = []
    stream_blocks = synthetic.SyntheticSource.stream_blocks

    def spied(self):
        transform = stream_blocks(self)
        blocks.append(transform)
        return transform

    monkeypatch.setattr(synthetic.SyntheticSource, 'stream_blocks', spied)
    argv = ['--streaming', '--source',
            'synthetic://logs?events=4000&rate=15&seed=42&late=0.05'
            '&malformed=0.02']
    element, s1 = _run(tmp_path, 'element', argv)
    assert not blocks
    columnar, s2 = _run(tmp_path, 'columnar', argv)
    assert len(blocks) == 1 and blocks[0] is not None
    assert _same_summary(s1) == _same_summary(s2)
    for s in (s1, s2):
        assert s['balanced'] and s['read'] == 4000
        assert s['panes_early'] and s['panes_on_time'] and s['panes_late']
        assert s['late_kept'] and not s['dropped_late']
        assert s['window_assignments'] == s['aggregated'] + s['late_kept']
    assert_same_outputs(element, columnar)
    # The late records are kept on both paths, as dead letters of stage
    # window.late, one per record holding its payload (compared above).
    late_a = _table(element, 'dead_letter')
    late_b = _table(columnar, 'dead_letter')
    late_a = late_a[late_a.stage == 'window.late']
    late_b = late_b[late_b.stage == 'window.late']
    assert len(late_a) == s1['late_kept'] == s1['late_dead_letters']
    assert 0 < len(late_b) == s2['late_kept'] == s2['late_dead_letters']
