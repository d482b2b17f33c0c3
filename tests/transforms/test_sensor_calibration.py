"""Calibration y = a*x + b: the table, the row in force at a reading's event
time, the side input refreshed window by window, a broken re-read."""
import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms import window as beam_window
from apache_beam.utils.timestamp import Timestamp

from transforms.sensors import calibration
from transforms.sensors.records import Reading

T0 = 1_767_225_600          # 2026-01-01T00:00:00Z
CSV = (b'sensor_id,metric,a,b,valid_from\n'
       b's1,temp,2.0,1.0,2026-01-01T00:00:00Z\n'
       b's1,temp,3.0,0.0,2026-01-01T01:00:00Z\n'
       b's2,temp,1.0,-5.0,1767225600000\n')


def reading(t, sensor='s1', value=10.0):
    return Reading(Timestamp.of(t), sensor, 'temp', value, 'C', '')


def test_the_latest_row_not_after_the_event_time_applies():
    table = calibration.parse_table(CSV)
    assert table.lookup('s1', 'temp', (T0 - 1) * 10**6) is None
    assert table.lookup('s1', 'temp', T0 * 10**6) == (2.0, 1.0)
    assert table.lookup('s1', 'temp', (T0 + 3599) * 10**6) == (2.0, 1.0)
    assert table.lookup('s1', 'temp', (T0 + 3600) * 10**6) == (3.0, 0.0)
    assert table.lookup('s2', 'temp', T0 * 10**6) == (1.0, -5.0)
    assert table.lookup('s3', 'temp', T0 * 10**6) is None
    assert table.version.startswith('sha1:') and len(table) == 3


def test_json_lines_read_as_the_csv_does():
    lines = b'\n'.join([
        b'{"sensor_id": "s1", "metric": "temp", "a": 2, "b": 1, '
        b'"valid_from": "2026-01-01T00:00:00Z"}',
        b'{"sensor_id": "s1", "metric": "temp", "a": 3, "b": 0, '
        b'"valid_from": 1767229200000}'])
    table = calibration.parse_table(lines)
    assert table.lookup('s1', 'temp', (T0 + 3600) * 10**6) == (3.0, 0.0)
    assert table.version != calibration.parse_table(CSV).version


@pytest.mark.parametrize('data, message', [
    (b'sensor_id,metric,a\ns1,temp,1\n', 'the header lacks b, valid_from'),
    (b'sensor_id,metric,a,b,valid_from\ns1,temp,x,0,2026-01-01T00:00:00Z\n',
     'line 2'),
    (b'sensor_id,metric,a,b,valid_from\ns1,temp,1,0,yesterday\n', 'line 2'),
    (b'{"sensor_id": "s1"}\n', 'line 1: missing metric'),
])
def test_a_broken_table_names_the_line(data, message):
    with pytest.raises(calibration.CalibrationError, match=message):
        calibration.parse_table(data, 'cal.csv')


def test_a_broken_reload_keeps_the_last_good_table(tmp_path):
    path = tmp_path / 'cal.csv'
    path.write_bytes(CSV)
    load = calibration._LoadFn(str(path), 'sensors_test')  # pylint: disable=protected-access
    first = list(load.process(0))[0]
    path.write_bytes(b'sensor_id,metric\n')
    again = list(load.process(1))[0]
    assert again is first and len(again) == 3


def test_each_refresh_window_uses_the_table_read_for_it():
    """The slowly-changing side input: one table per refresh window (as
    PeriodicImpulse with apply_windowing gives), readings windowed alike."""
    v1 = calibration.CalibrationTable(
        [('s1', 'temp', 2.0, 1.0, 0)], 'v1')
    v2 = calibration.CalibrationTable(
        [('s1', 'temp', 3.0, 0.0, 0)], 'v2')
    stream = (TestStream()
              .advance_watermark_to(Timestamp.of(T0), tag='tables')
              .advance_watermark_to(Timestamp.of(T0), tag='readings')
              .add_elements([beam_window.TimestampedValue(v1, T0)],
                            tag='tables')
              .add_elements([beam_window.TimestampedValue(
                  reading(T0 + 10), T0 + 10),
                  beam_window.TimestampedValue(
                  reading(T0 + 20, sensor='s9'), T0 + 20)], tag='readings')
              .advance_watermark_to(Timestamp.of(T0 + 300), tag='tables')
              .add_elements([beam_window.TimestampedValue(v2, T0 + 300)],
                            tag='tables')
              .add_elements([beam_window.TimestampedValue(
                  reading(T0 + 310), T0 + 310)], tag='readings')
              .advance_watermark_to(Timestamp.of(T0 + 600), tag='tables')
              .advance_watermark_to(Timestamp.of(T0 + 600), tag='readings'))
    with TestPipeline(options=PipelineOptions(
            runner='BundleBasedDirectRunner', streaming=True)) as p:
        streams = p | stream
        tables = streams['tables'] | beam.WindowInto(
            beam_window.FixedWindows(300))
        out = streams['readings'] | calibration.Calibrate(
            tables, 300, 'sensors_test')
        assert_that(out | beam.Map(lambda r: (
            r.sensor_id, r.event_time.micros // 10**6 - T0, r.value,
            r.calibrated, r.calibration_version)), equal_to([
                ('s1', 10, 21.0, True, 'v1'),
                ('s9', 20, 10.0, False, 'v1'),     # no row: passes, flagged
                ('s1', 310, 30.0, True, 'v2'),
            ]))
