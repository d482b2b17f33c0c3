"""The per-sensor incident detector: one incident per excursion, silence by
event-time timer at the right watermark, no false silence from a late
reading within the lateness."""
import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from transforms.sensors.detectors import (DetectIncidents, DetectorConfig,
                                          SensorModel)
from transforms.sensors.records import CalibratedReading

T0 = 1_767_225_600
STEP = 10                     # seconds between readings
CONFIG = DetectorConfig(warmup=50, quiet=5, max_silence_s=60.0)


def reading(i, value, sensor='s1', offset=0.0):
    t = T0 + i * STEP + offset
    return CalibratedReading(Timestamp.of(t), sensor, 'temp', value, value,
                             'C', '', False, '')


def wavy(i):
    return 20.0 + (0.3 if i % 2 else -0.3) + 0.05 * (i % 7)


def stamped(r):
    return TimestampedValue(r, r.event_time)


def streaming():
    return TestPipeline(options=PipelineOptions(
        runner='BundleBasedDirectRunner', streaming=True))


def kinds(incidents):
    return incidents | beam.Map(lambda x: (
        x.sensor_id, x.kind, (x.start.micros // 10**6 - T0) // STEP,
        x.reading_count, x.state))


def test_a_long_excursion_is_one_incident_not_one_per_reading():
    model = SensorModel('s1', 'temp', CONFIG)
    out = []
    for i in range(200):
        value = wavy(i) + (30.0 if 100 <= i < 140 else 0.0)   # 40 readings off
        out.extend(model.observe((T0 + i * STEP) * 10**6, value))
    spikes = [x for x in out if x.kind == 'spike']
    assert len(spikes) == 1
    assert (spikes[0].start.micros // 10**6 - T0) // STEP == 100
    assert spikes[0].reading_count >= 40 and spikes[0].state == 'CLOSED'
    assert spikes[0].peak_value > 45


def test_stuck_values_open_once_and_close_on_change():
    model = SensorModel('s1', 'temp', CONFIG._replace(stuck_readings=10))
    out = []
    for i in range(120):
        value = 21.5 if 60 <= i < 90 else wavy(i)
        out.extend(model.observe((T0 + i * STEP) * 10**6, value))
    stuck = [x for x in out if x.kind == 'stuck']
    assert [(x.start.micros // 10**6 - T0) // STEP for x in stuck] == [60]
    assert stuck[0].reading_count == 30


def test_trend_breach_when_the_projection_crosses_the_limit():
    # No weekly profile here: within one hour-of-week bin the profile would
    # learn the ramp itself (it adapts per reading).
    config = CONFIG._replace(trend_high=30.0, horizon_s=600.0, gamma=0.0)
    model = SensorModel('s1', 'temp', config)
    out = []
    for i in range(300):
        ramp = 0.05 * max(0, i - 100)            # 0.005 units/s from i=100
        out.extend(model.observe((T0 + i * STEP) * 10**6, wavy(i) + ramp))
    out.extend(model.flush_open())
    trend = [x for x in out if x.kind == 'trend']
    assert len(trend) == 1
    first = (trend[0].start.micros // 10**6 - T0) // STEP
    # The level reaches 30 near i=300; 600 s ahead is 60 readings earlier.
    assert 180 < first < 290


def test_silence_fires_when_the_watermark_passes_without_a_reading():
    stream = TestStream().advance_watermark_to(Timestamp.of(T0))
    stream.add_elements([stamped(reading(i, wavy(i))) for i in range(60)])
    last = T0 + 59 * STEP
    stream.advance_watermark_to(Timestamp.of(last + 1))
    # Not yet: 60 s of silence + 30 s lateness have not passed.
    stream.advance_watermark_to(Timestamp.of(last + 80))
    stream.add_elements([stamped(reading(60, wavy(60), sensor='s2'))])
    stream.advance_watermark_to(Timestamp.of(last + 95))
    stream.advance_watermark_to(Timestamp.of(last + 200))
    with streaming() as p:
        out = (p | stream
               | DetectIncidents(CONFIG, 30.0, True, 'sensors_test'))
        # (s2 falls silent too when the stream ends: the watermark's final
        # jump fires its timer.  s1 is the sensor under test.)
        silences = out | beam.Filter(
            lambda x: x.kind == 'silence' and x.sensor_id == 's1')
        assert_that(kinds(silences), equal_to([
            ('s1', 'silence', 59, 0, 'OPEN')]), label='one silence')
        # Emitted by the timer at last + max_silence + lateness (90 s), and
        # not before: the watermark stood at last + 80 s for a while.
        assert_that(silences | beam.Map(
            lambda x, ts=beam.DoFn.TimestampParam: (
                x.end.micros // 10**6, ts.micros // 10**6)),
            equal_to([(last + 60, last + 90)]), label='declared on time')


def test_a_late_reading_within_the_lateness_is_not_a_false_silence():
    stream = TestStream().advance_watermark_to(Timestamp.of(T0))
    stream.add_elements([stamped(reading(i, wavy(i))) for i in range(60)])
    last = T0 + 59 * STEP
    # The watermark passes last + 70 s (silence would be due at 60 s)...
    stream.advance_watermark_to(Timestamp.of(last + 70))
    # ... and a reading from last + 50 s arrives late, within the lateness.
    stream.add_elements([stamped(reading(59, wavy(59), offset=50))])
    stream.advance_watermark_to(Timestamp.of(last + 100))
    # No silence from the last reading on time (due at last + 90 s, which
    # the watermark reached after the late reading came).  The stream's
    # end (the watermark at infinity) finds the sensor silent since the
    # late reading: that silence is real.  (The local runner used to drop
    # what a timer emitted at the end, its output watermark gone ahead.)
    with streaming() as p:
        out = (p | stream
               | DetectIncidents(CONFIG, 30.0, True, 'sensors_test'))
        assert_that(out | beam.Filter(lambda x: x.kind == 'silence')
                    | beam.Map(lambda x: x.start.micros // 10**6),
                    equal_to([last + 50]), label='no false silence')


def test_silence_between_readings_in_a_bounded_replay():
    model = SensorModel('s1', 'temp', CONFIG)
    out = []
    for i in list(range(80)) + list(range(100, 120)):
        out.extend(model.observe((T0 + i * STEP) * 10**6, wavy(i)))
    silences = [x for x in out if x.kind == 'silence']
    assert len(silences) == 1
    assert silences[0].severity == (100 - 79) * STEP
