"""The sensors job's columnar path gives the element path's results: the same
stats rows (fixed and sliding windows), the same incidents, the same dead
letters, on a replay with malformed lines and a calibration table."""
import glob
import json

import pytest

from pipelines import run, sensors
from transforms.synthetic import sensors as synthetic

PARAMS = {k: v[1] for k, v in synthetic.PARAMS.items()}
PARAMS.update(events=3000, sensors=4, seed=11, malformed=0.02)
CALIBRATION = ('sensor_id,metric,a,b,valid_from\n'
               'S000,temperature,1.8,32,2026-01-01T00:00:00Z\n'
               'S000,temperature,1.0,0,2026-01-01T00:40:00Z\n'
               'S003,pressure,0.5,1,2026-01-01T00:10:00Z\n')
EXTRA = [b'event_time,sensor_id,metric,value,unit,quality',
         b'2026-01-01T00:30:00Z,S001,pressure,101.5,kPa,good',
         b'{"event_time": 1767227400000, "sensor_id": "S002", '
         b'"metric": "temperature", "value": 20}',
         b'{"event_time": "2026-01-01T00:30:00Z", "sensor_id": " S002", '
         b'"metric": "temperature", "value": 20}',
         b'{"event_time": "2026-01-01T00:30:00Z", "sensor_id": "S002", '
         b'"metric": "temperature", "value": "20"}']


def rows(out, table):
    found = []
    for path in glob.glob(str(out / table / '**' / '*'), recursive=True):
        try:
            with open(path) as f:
                found.extend(json.loads(line) for line in f if line.strip())
        except IsADirectoryError:
            continue
    return found


def rounded(row):
    """Floats to 10 significant digits (merge order moves the last bits)."""
    return {k: float(f'{v:.10g}') if isinstance(v, float) else v
            for k, v in row.items()}


def assert_same_rows(got, want):
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert a.keys() == b.keys()
        for field in a:
            if isinstance(b[field], float):
                assert a[field] == pytest.approx(b[field], rel=1e-9,
                                                 abs=1e-12), (b, field)
            else:
                assert a[field] == b[field], (b, field)


@pytest.fixture(scope='module')
def replay(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('sensors-eq')
    source = tmp / 'in.jsonl'
    source.write_bytes(b'\n'.join(
        list(synthetic.generate(PARAMS).payloads()) + EXTRA) + b'\n')
    cal = tmp / 'cal.csv'
    cal.write_text(CALIBRATION)
    return tmp, source, cal


@pytest.mark.parametrize('window', ['fixed:5m', 'sliding:10m/5m'])
def test_columnar_and_element_paths_agree(replay, window):
    tmp, source, cal = replay
    outs = {}
    for execution in ('element', 'columnar'):
        out = tmp / f'{execution}-{window.replace(":", "_").replace("/", "_")}'
        summary = run.run(sensors, [
            '--source', f'file://{source}', '--sink', f'jsonl://{out}',
            '--calibration', str(cal), '--window', window,
            '--execution', execution, '--no-summary'])
        assert summary['balanced']
        outs[execution] = out, summary
    (element, s_el), (col, s_col) = outs['element'], outs['columnar']
    for key in ('read', 'decoded', 'dead_lettered', 'filtered', 'aggregated'):
        assert s_el[key] == s_col[key], key
    key = lambda r: (r['sensor_id'], r['metric'], r['window_start'])
    got = sorted(map(rounded, rows(col, 'stats')), key=key)
    want = sorted(map(rounded, rows(element, 'stats')), key=key)
    assert len(want) > 20
    assert_same_rows(got, want)
    key = lambda r: (r['sensor_id'], r['kind'], r['start'])
    assert sorted(rows(col, 'anomalies'), key=key) == \
        sorted(rows(element, 'anomalies'), key=key)
    dead = lambda out: sorted((r['raw'], r['stage'], r['reason'])  # noqa: E731
                              for r in rows(out, 'dead_letter'))
    assert len(dead(element)) > 10 and dead(col) == dead(element)


def test_a_stream_gives_the_same_panes_on_both_paths(tmp_path):
    """EARLY, ON_TIME and LATE panes of a synthetic stream with disorder,
    stragglers, duplicates and malformed readings: pane by pane the same."""
    outs = {}
    for execution in ('element', 'columnar'):
        out = tmp_path / execution
        summary = run.run(sensors, [
            '--streaming', '--source',
            'synthetic://sensors?events=1500&sensors=3&seed=5&late=0.05'
            '&malformed=0.02', '--sink', f'jsonl://{out}',
            '--execution', execution, '--no-summary'])
        outs[execution] = out, summary
    (element, s_el), (col, s_col) = outs['element'], outs['columnar']
    assert s_el == s_col
    assert s_el['panes_early'] and s_el['panes_late']
    key = lambda r: (r['sensor_id'], r['metric'], r['window_start'],  # noqa: E731
                     r['pane_timing'], r['pane_index'])
    got = sorted(map(rounded, rows(col, 'stats')), key=key)
    want = sorted(map(rounded, rows(element, 'stats')), key=key)
    assert len(want) > 50
    assert_same_rows(got, want)
    key = lambda r: (r['sensor_id'], r['kind'], r['start'])  # noqa: E731
    assert sorted(rows(col, 'anomalies'), key=key) == \
        sorted(rows(element, 'anomalies'), key=key)
