"""The sensors job end to end: a file replay of the synthetic sensor stream
with a calibration table, every statistic checked against pandas on the same
calibrated readings, the incidents the stream was built with, and a table
that cannot be read refused before the job starts."""
import datetime
import glob
import json
import math

import numpy as np
import orjson
import pandas as pd
import pytest

from pipelines import run, sensors
from transforms.synthetic import sensors as synthetic

PARAMS = {k: v[1] for k, v in synthetic.PARAMS.items()}
PARAMS.update(events=4500, sensors=5, seed=7)
WINDOW_S = 300
CALIBRATION = ('sensor_id,metric,a,b,valid_from\n'
               'S000,temperature,1.8,32,2026-01-01T00:00:00Z\n'
               'S000,temperature,1.0,0,2026-01-01T01:00:00Z\n'
               'S001,pressure,0.001,0,2026-01-01T00:00:00Z\n')
CAL = {('S000', 'temperature'): [(0, 1.8, 32.0), (3600, 1.0, 0.0)],
       ('S001', 'pressure'): [(0, 0.001, 0.0)]}
T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc).timestamp()


def oracle(lines):
    """The calibrated readings as pandas reads them (independently of the
    job's decoders and calibration)."""
    rows = []
    for line in lines:
        try:
            doc = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        v = doc.get('value') if isinstance(doc, dict) else None
        if not isinstance(doc, dict) or not doc.get('sensor_id') or \
                isinstance(v, bool) or not isinstance(v, (int, float)) or \
                not math.isfinite(v):
            continue
        t = datetime.datetime.fromisoformat(
            doc['event_time'].replace('Z', '+00:00')).timestamp()
        key = (doc['sensor_id'], doc['metric'])
        a, b, calibrated = 1.0, 0.0, False
        for start, ra, rb in CAL.get(key, []):
            if t - T0 >= start:
                a, b, calibrated = ra, rb, True
        rows.append({'sensor_id': key[0], 'metric': key[1], 't': t,
                     'value': a * v + b, 'calibrated': calibrated})
    df = pd.DataFrame(rows)
    df['window'] = (df['t'] // WINDOW_S * WINDOW_S).astype('int64')
    return df


def read_table(out, table):
    rows = []
    for path in glob.glob(str(out / table / '**' / '*'), recursive=True):
        try:
            with open(path) as f:
                rows.extend(json.loads(line) for line in f if line.strip())
        except IsADirectoryError:
            continue
    return rows


@pytest.fixture(scope='module')
def replay(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('sensors')
    lines = list(synthetic.generate(PARAMS).payloads())
    source = tmp / 'in.jsonl'
    source.write_bytes(b'\n'.join(lines) + b'\n')
    cal = tmp / 'calibration.csv'
    cal.write_text(CALIBRATION)
    out = tmp / 'out'
    summary = run.run(sensors, [
        '--source', f'file://{source}', '--sink', f'jsonl://{out}',
        '--calibration', str(cal), '--window', f'fixed:{WINDOW_S}s',
        '--no-summary'])
    return lines, out, summary


def test_every_record_is_accounted_for(replay):
    lines, _, summary = replay
    assert summary['balanced'] and summary['read'] == len(lines)
    assert summary['dead_lettered'] > 0          # the malformed ones
    assert summary['dropped_late'] == 0


def test_every_statistic_equals_pandas_on_the_calibrated_readings(replay):
    lines, out, _ = replay
    df = oracle(lines)
    rows = read_table(out, 'stats')
    assert len(rows) == df.groupby(['sensor_id', 'window']).ngroups
    by_key = df.groupby(['sensor_id', 'window'])
    for row in rows:
        start = datetime.datetime.fromisoformat(
            row['window_start'].replace('Z', '+00:00')).timestamp()
        g = by_key.get_group((row['sensor_id'], int(start)))
        assert row['count'] == len(g)
        assert row['mean'] == pytest.approx(g['value'].mean(), rel=1e-9)
        assert row['min'] == pytest.approx(g['value'].min())
        assert row['max'] == pytest.approx(g['value'].max())
        if len(g) > 1:
            assert row['stddev'] == pytest.approx(g['value'].std(), rel=1e-6)
        assert row['p50'] == pytest.approx(g['value'].median(),
                                           abs=g['value'].std() + 1e-9)
        assert row['uncalibrated_count'] == int((~g['calibrated']).sum())
        if len(g) > 2 and g['t'].nunique() > 1:
            slope, intercept = np.polyfit(g['t'] - start, g['value'], 1)
            assert row['slope'] == pytest.approx(slope, rel=1e-6, abs=1e-12)
            assert row['intercept'] == pytest.approx(intercept, rel=1e-6)
        versions = row['calibration_version']
        assert versions.startswith('sha1:') == bool(g['calibrated'].any())


def test_the_incidents_built_into_the_stream_are_found(replay):
    _, out, _ = replay
    incidents = read_table(out, 'anomalies')
    kinds = {(i['sensor_id'], i['kind']) for i in incidents}
    assert ('S001', 'stuck') in kinds
    assert ('S002', 'silence') in kinds
    silence = next(i for i in incidents if i['kind'] == 'silence')
    assert silence['severity'] >= synthetic.SILENT_S
    # One record per incident: never one per reading.
    assert len(incidents) < 30


def test_an_unreadable_calibration_table_stops_the_job_in_one_line(
        tmp_path, capsys):
    bad = tmp_path / 'cal.csv'
    bad.write_text('sensor_id,metric,a\nS000,temperature,1\n')
    with pytest.raises(SystemExit) as err:
        run.run(sensors, ['--calibration', str(bad), '--sink',
                          f'jsonl://{tmp_path / "out"}'])
    assert err.value.code == 2
    message = capsys.readouterr().err.strip()
    assert len(message.splitlines()) == 1
    assert '--calibration' in message and 'valid_from' in message


def test_the_synthetic_default_runs(tmp_path):
    summary = run.run(sensors, ['--source',
                                'synthetic://sensors?sensors=3&events=1500',
                                '--sink', f'jsonl://{tmp_path}', '--no-summary'])
    assert summary['balanced'] and summary['read'] == 1500


def test_a_live_stream_refreshes_the_calibration_every_period(tmp_path):
    """From Pub/Sub, the table is re-read by a PeriodicImpulse every
    --calibration_refresh and readings are calibrated in windows of it."""
    import apache_beam as beam  # pylint: disable=import-outside-toplevel
    from pipelines import options  # pylint: disable=import-outside-toplevel
    from transforms import io  # pylint: disable=import-outside-toplevel
    cal = tmp_path / 'cal.csv'
    cal.write_text(CALIBRATION)
    args, beam_options = options.parse(sensors.OPTIONS, [
        '--source', 'pubsub://projects/demo-project/subscriptions/readings',
        '--streaming',
        '--sink', 'console://', '--calibration', str(cal),
        '--calibration_refresh', '2m'])
    pipeline = beam.Pipeline(options=beam_options)
    sensors.build(pipeline, args, io.Context('sensors', True))
    names = [t.unique_name for t in
             pipeline.to_runner_api().components.transforms.values()]
    assert any('CalibrationTable/Every' in n for n in names), names
    assert any('Calibrate/RefreshWindows' in n for n in names)
    assert not any('DecodePartials' in n for n in names)   # element path
