"""Sensor reading decoders: one line of text -> :class:`Reading`.

JSON lines ``{"event_time", "sensor_id", "metric", "value", "unit"?,
"quality"?}`` and CSV with the same columns (a header line is counted under
``filtered.csv_header``).  ``event_time`` follows the rules of the other jobs
(RFC 3339 with a zone, or epoch milliseconds; the time and CSV field
parsers are those of :mod:`transforms.formats`, shared with the trades
job).  ``sensor_id`` and ``metric`` are stripped text of 1..128 characters
without control characters; ``value`` is a finite number (a JSON number, or
decimal text in CSV); ``unit`` and ``quality`` are optional text.
"""
import functools
import math

from transforms import formats
from transforms.decode import DecodeError
from transforms.sensors.records import Reading

FORMATS = ('auto', 'json', 'csv')
CSV_COLUMNS = ('event_time', 'sensor_id', 'metric', 'value', 'unit', 'quality')
REQUIRED = ('event_time', 'sensor_id', 'metric', 'value')
MAX_NAME_CHARS = 128
_MAX_NUMBER_CHARS = 64


def _name(field: str, value) -> str:
    if not isinstance(value, str):
        raise formats.wrong_type(field, value)
    text = value.strip()
    if not text:
        raise DecodeError(f'missing {field}')
    if len(text) > MAX_NAME_CHARS or not text.isprintable():
        raise DecodeError(f'invalid {field}: {formats.short_repr(value)}')
    return text


def _finite(number: float, value) -> float:
    if not math.isfinite(number):
        raise DecodeError(f'field value not finite: {formats.short_repr(value)}')
    return number


def _json_value(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise formats.wrong_type('value', value)
    try:
        return _finite(float(value), value)
    except OverflowError:
        raise DecodeError(
            f'field value not finite: {formats.short_repr(value)}') from None


def _text_value(text: str) -> float:
    stripped = text.strip()
    if not stripped:
        raise DecodeError('missing value')
    if len(stripped) > _MAX_NUMBER_CHARS or \
            not formats.DECIMAL_TEXT_RE.fullmatch(stripped):
        raise formats.wrong_type('value', text)
    return _finite(float(stripped), text)


def _optional_text(field: str, value) -> str:
    if value is None:
        return ''
    if not isinstance(value, str):
        raise formats.wrong_type(field, value)
    return value.strip()


def decode_json_reading(text: str) -> Reading:
    if isinstance(text, str) and text.startswith('\ufeff'):
        text = text[1:]
    obj = formats.parse_json_object(text)
    event_time = formats.json_event_time(obj)
    for field in REQUIRED[1:]:
        if obj.get(field) is None:
            raise DecodeError(f'missing {field}')
    return Reading(
        event_time=event_time,
        sensor_id=_name('sensor_id', obj['sensor_id']),
        metric=_name('metric', obj['metric']),
        value=_json_value(obj['value']),
        unit=_optional_text('unit', obj.get('unit')),
        quality=_optional_text('quality', obj.get('quality')))


def decode_csv_reading(text: str) -> Reading:
    fields = formats.csv_fields(text)
    if fields and fields[0].strip().lower() == CSV_COLUMNS[0]:
        raise formats.HeaderLine()
    if len(fields) > len(CSV_COLUMNS):
        raise DecodeError(
            f'too many CSV fields: {len(fields)} > {len(CSV_COLUMNS)}')
    fields = fields + [''] * (len(CSV_COLUMNS) - len(fields))
    row = dict(zip(CSV_COLUMNS, fields))
    for field in REQUIRED:
        if not row[field].strip():
            raise DecodeError(f'missing {field}')
    return Reading(
        event_time=formats.time_from_text(row['event_time']),
        sensor_id=_name('sensor_id', row['sensor_id']),
        metric=_name('metric', row['metric']),
        value=_text_value(row['value']),
        unit=row['unit'].strip(),
        quality=row['quality'].strip())


def decode_reading_line(text: str) -> Reading:
    """JSON when the first non-space character is '{', else CSV."""
    if not isinstance(text, str):
        raise DecodeError(f'reading is not text: {type(text).__name__}')
    stripped = text.lstrip().lstrip('\ufeff').lstrip()
    if not stripped:
        raise DecodeError('empty line')
    if stripped[0] == '{':
        return decode_json_reading(stripped)
    return decode_csv_reading(text)


@functools.lru_cache(maxsize=None)
def make_decoder(fmt: str):
    if fmt == 'auto':
        return decode_reading_line
    if fmt == 'json':
        return decode_json_reading
    if fmt == 'csv':
        return decode_csv_reading
    raise ValueError(
        f'unknown reading format {fmt!r}; accepted: {", ".join(FORMATS)}')
