"""Sensor reading decoders: JSON lines and CSV read alike; refusals name why."""
import pytest
from apache_beam.utils.timestamp import Timestamp

from transforms.decode import DecodeError, FilteredRecord
from transforms.sensors import decoders

T = Timestamp.of(1767225600)


@pytest.mark.parametrize('line', [
    '{"event_time": "2026-01-01T00:00:00Z", "sensor_id": " s1 ", '
    '"metric": "temp", "value": 21.5, "unit": "C", "quality": "good"}',
    '{"event_time": 1767225600000, "sensor_id": "s1", "metric": "temp", '
    '"value": 21.5, "unit": "C", "quality": "good"}',
    '2026-01-01T00:00:00Z,s1,temp,21.5,C,good',
    '1767225600000, s1 ,temp,21.5,C,good',
])
def test_json_and_csv_give_the_same_reading(line):
    r = decoders.decode_reading_line(line)
    assert (r.event_time, r.sensor_id, r.metric, r.value, r.unit,
            r.quality) == (T, 's1', 'temp', 21.5, 'C', 'good')


def test_optional_fields_default_to_empty():
    r = decoders.decode_reading_line('2026-01-01T00:00:00Z,s1,temp,-3')
    assert (r.value, r.unit, r.quality) == (-3.0, '', '')


def test_a_csv_header_is_filtered_not_dead():
    with pytest.raises(FilteredRecord):
        decoders.decode_reading_line(
            'event_time,sensor_id,metric,value,unit,quality')


@pytest.mark.parametrize('line, reason', [
    ('{"event_time": "2026-01-01T00:00:00Z", "metric": "t", "value": 1}',
     'missing sensor_id'),
    ('{"event_time": "2026-01-01T00:00:00Z", "sensor_id": "s", '
     '"metric": "t", "value": "1"}', 'wrongly typed field value'),
    ('{"event_time": "2026-01-01T00:00:00Z", "sensor_id": "s", '
     '"metric": "t", "value": true}', 'wrongly typed field value'),
    ('{"event_time": "2026-01-01T00:00:00Z", "sensor_id": "s", '
     '"metric": "t", "value": 1e999}', 'infinity'),
    ('2026-01-01T00:00:00Z,s1,temp,nan', 'wrongly typed field value'),
    ('2026-01-01T00:00:00Z,s1,temp,', 'missing value'),
    ('1767225600,s1,temp,1', 'epoch seconds are ambiguous'),
    ('2026-01-01T00:00:00Z,s1,temp,1,C,good,extra', 'too many CSV fields'),
    ('', 'empty line'),
    ('{"event_time": "2026-01-01T00:00:00Z"', 'JSON'),
])
def test_refusals_say_why(line, reason):
    with pytest.raises(DecodeError, match=reason):
        decoders.decode_reading_line(line)
