"""The sensors job end to end: a file replay of the synthetic sensor stream
with a calibration table, every statistic checked against pandas on the same
calibrated readings, the incidents the stream was built with, and a table
that cannot be read refused before the job starts."""
import datetime
import glob
import json
import math

import apache_beam as beam
import numpy as np
import orjson
import pandas as pd
import pyarrow.dataset as ds
import pytest
from apache_beam.testing import test_stream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.utils.timestamp import Timestamp

from pipelines import run, sensors
from tests.pipelines.job_streams import add, run_job
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


# ------------------------------------------ a stream: late readings are kept

LATENESS_S = 120


def reading(sensor, offset_s, value, metric='temperature'):
    """(event time s, a JSON reading of ``sensor`` at T0 + offset_s)."""
    at = datetime.datetime.fromtimestamp(T0 + offset_s, datetime.timezone.utc)
    return T0 + offset_s, orjson.dumps({
        'event_time': at.isoformat().replace('+00:00', 'Z'),
        'sensor_id': sensor, 'metric': metric, 'value': value, 'unit': 'C',
        'quality': 'good'})


@pytest.mark.parametrize('execution', ['columnar', 'element'])
def test_a_stream_keeps_readings_after_the_allowed_lateness(
        monkeypatch, tmp_path, execution):
    """Fixed windows with the job's trigger (late=1): readings within the
    allowed lateness correct their window in LATE panes; readings after it
    are dead letters (stage window.late), none dropped, and the summary
    adds up."""
    stream = test_stream.TestStream().advance_watermark_to(Timestamp.of(T0))
    add(stream, reading('S1', 10, 1.0), reading('S1', 20, 2.0),
        reading('S1', 30, 4.0), reading('S2', 15, 7.0, 'pressure'))
    stream.advance_watermark_to(Timestamp.of(T0 + WINDOW_S + 1))  # ON_TIME
    stream.advance_processing_time(1)
    add(stream, reading('S1', 40, 8.0))         # within the lateness: LATE
    stream.advance_processing_time(1)
    stream.advance_watermark_to(Timestamp.of(T0 + WINDOW_S + 2))
    add(stream, reading('S1', 50, 16.0))        # another LATE pane
    stream.advance_processing_time(1)
    stream.advance_watermark_to(Timestamp.of(T0 + WINDOW_S + LATENESS_S + 30))
    stream.advance_processing_time(1)
    # After the allowed lateness of [0, 300): 30 s after it closed.
    # Two of S1 in one bundle: one partial on the columnar path, two dead
    # letters with a payload each.
    add(stream, reading('S2', 60, 32.0, 'pressure'),
        reading('S1', 55, 64.0), reading('S1', 58, 128.0))
    stream.advance_processing_time(1)
    stream.advance_watermark_to_infinity()
    accepted = {('S1', 'temperature'): [1.0, 2.0, 4.0, 8.0, 16.0],
                ('S2', 'pressure'): [7.0]}

    late_payloads = [reading('S2', 60, 32.0, 'pressure')[1],
                     reading('S1', 55, 64.0)[1], reading('S1', 58, 128.0)[1]]

    def check(outputs):
        letters = (outputs['dead_letter']
                   | 'Late' >> beam.Filter(lambda d: d.stage == 'window.late'))
        late = letters | 'Why' >> beam.Map(lambda d: (
            d.reason.split(' for window')[0],
            'arrived 30.000 s after it closed' in d.reason))
        assert_that(late, equal_to([
            ("1 record(s) of ('S1', 'temperature')", True),
            ("1 record(s) of ('S1', 'temperature')", True),
            ("1 record(s) of ('S2', 'pressure')", True)]),
            label='LateReadings')
        # the payloads as read, one per reading on both paths
        raws = letters | 'Raw' >> beam.Map(lambda d: bytes(d.raw))
        assert_that(raws, equal_to(late_payloads), label='LateRaw')

    summary = run_job(sensors, stream, monkeypatch, tmp_path, [
        '--trigger', f'late=1,lateness={LATENESS_S}s,accumulating',
        '--execution', execution], check)
    assert summary['read'] == summary['decoded'] == 9
    assert summary['dropped_late'] == 0
    assert summary['late_kept'] == 3 and summary['late_accepted'] == 2
    assert summary['late_dead_letters'] == 3
    assert summary['window_assignments'] == 9 == \
        summary['aggregated'] + summary['late_kept']
    stats = ds.dataset(str(tmp_path / 'out' / 'stats')).to_table() \
        .to_pandas()
    final = stats.loc[stats.groupby(['sensor_id', 'metric'])
                      .pane_index.idxmax()]
    for row in final.itertuples():
        values = accepted[(row.sensor_id, row.metric)]
        assert row.count == len(values)
        assert row.mean == pytest.approx(np.mean(values))
        assert row.max == max(values)
