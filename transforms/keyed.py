"""The generic core: JSON events ``{"ts": RFC 3339, "key": str, "value": number}``
-> per key and window count/mean/min/max/stddev, on either path.

It is the smallest complete use of the library (decode -> window -> combine,
element by element or columnar) and what ``bench/core_bench.py`` measures; the
jobs follow the same pattern with their own records.
"""
import math
import typing

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.utils.timestamp import Timestamp

from transforms import columnar, deadletter, formats, windows
from transforms.combiners import MergingCombineFn, Moments
from transforms.decode import DEFAULT_MAX_BYTES, DecodeError, decode_payload

RFC3339 = columnar.RFC3339
SCHEMA = pa.schema([('ts', pa.string()), ('key', pa.string()),
                    ('value', pa.float64())])


class KeyedValue(typing.NamedTuple):
    event_time: Timestamp
    key: str
    value: float


class KeyedStats(typing.NamedTuple):
    key: str
    window_start: Timestamp
    window_end: Timestamp
    pane_timing: str
    pane_index: int
    count: int
    mean: typing.Optional[float]
    min: typing.Optional[float]
    max: typing.Optional[float]
    stddev: typing.Optional[float]

    IDENTITY_FIELDS = ('key', 'window_start', 'window_end', 'pane_timing',
                       'pane_index')


beam.coders.registry.register_coder(KeyedValue, beam.coders.RowCoder)
beam.coders.registry.register_coder(KeyedStats, beam.coders.RowCoder)


def decode_keyed_value(text: str) -> KeyedValue:
    """The reference decoder: one JSON object line -> KeyedValue."""
    obj = formats.parse_json_object(text)
    if obj.get('ts') is None:
        raise DecodeError('missing ts')
    key = obj.get('key')
    if not isinstance(key, str) or not key:
        raise DecodeError('missing or wrongly typed key')
    value = obj.get('value')
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value):
        raise DecodeError(f'value is not a finite number: {value!r}'[:200])
    return KeyedValue(formats.parse_time(obj['ts']), key, float(value))


class Columns(typing.NamedTuple):
    event_us: np.ndarray
    key: pa.Array
    value: np.ndarray

    @classmethod
    def concat(cls, parts):
        return cls(np.concatenate([p.event_us for p in parts]),
                   pa.concat_arrays([p.key for p in parts]),
                   np.concatenate([p.value for p in parts]))

    @classmethod
    def of_records(cls, records):
        return cls(np.array([r.event_time.micros for r in records], np.int64),
                   pa.array([r.key for r in records], pa.string()),
                   np.array([r.value for r in records], np.float64))


def _accepted_rows(table: pa.Table) -> np.ndarray:
    if not {'ts', 'key', 'value'} <= set(table.column_names):
        return np.zeros(table.num_rows, bool)
    return pc.fill_null(pc.and_(pc.and_(
        pc.match_substring_regex(table['ts'], RFC3339),
        pc.greater(pc.utf8_length(table['key']), 0)),
        pc.is_finite(table['value'])), False).to_numpy(zero_copy_only=False)


def _columns_of(table: pa.Table, event_us) -> 'Columns':
    return Columns(event_us, table['key'].combine_chunks(),
                   table['value'].to_numpy(zero_copy_only=False))


class BlockDecoder:
    """Blocks of lines -> Columns; lines not in the canonical shape go to the
    reference decoder."""

    def __init__(self, stage='decode.keyed', max_bytes=DEFAULT_MAX_BYTES):
        self.stage = stage
        self.max_bytes = max_bytes

    def decode_each(self, payloads):
        records, dead = [], []
        for raw in payloads:
            result = decode_payload(raw, decode_keyed_value, self.stage, '',
                                    self.max_bytes)
            (dead if isinstance(result, deadletter.DeadLetter)
             else records).append(result)
        return Columns.of_records(records), dead, len(records)

    def decode(self, data, bounds=None):
        starts, ends = bounds if bounds is not None else \
            columnar.line_bounds(data)
        return columnar.decode_json_lines(
            data, (starts, ends), schema=SCHEMA, time_field='ts',
            max_bytes=self.max_bytes, accept=_accepted_rows,
            columns_of=_columns_of, decode_each=self.decode_each,
            concat=Columns.concat)


def event_times(max_bytes=DEFAULT_MAX_BYTES) -> columnar.JsonEventTimes:
    """The event times of a block's lines that this fast path reads (see
    ``decode.PayloadEventTime``)."""
    return columnar.JsonEventTimes(SCHEMA, 'ts', _accepted_rows, max_bytes)


class KeyedPartials:
    """Columns -> (key, start, end, latest, Moments) per (key, window)."""

    def __init__(self, window: windows.WindowSpec):
        self.window = window

    def __call__(self, columns: Columns):
        rows, starts = windows.window_starts(self.window, columns.event_us)
        if rows.size == 0:
            return []
        size = int(round(self.window.size * 1e6))
        grouped = pa.table({
            'key': columns.key.take(pa.array(rows)), 'start': starts,
            'event': columns.event_us[rows], 'value': columns.value[rows],
        }).group_by(['key', 'start'], use_threads=False).aggregate([
            ('value', 'count'), ('value', 'mean'), ('value', 'min'),
            ('value', 'max'), ('value', 'variance', pc.VarianceOptions(ddof=0)),
            ('event', 'max')]).to_pydict()
        return [
            (key, start, start + size, last,
             Moments(n, mean, var * n, lo, hi))
            for key, start, last, n, mean, var, lo, hi in zip(
                grouped['key'], grouped['start'], grouped['event_max'],
                grouped['value_count'], grouped['value_mean'],
                grouped['value_variance'], grouped['value_min'],
                grouped['value_max'])]


class KeyedMomentsFn(MergingCombineFn):
    """KeyedValue records or Moments partials -> Moments."""
    ACCUMULATOR = Moments

    def create_accumulator(self):
        return Moments()

    def add_record(self, acc, record):
        return acc.add(record.value)


def moments_count(x) -> int:
    return x.count if isinstance(x, Moments) else 1


def to_keyed_stats(key, moments: Moments, pane: dict) -> KeyedStats:
    r = moments.result()
    return KeyedStats(key=key, count=r['count'], mean=r['mean'], min=r['min'],
                      max=r['max'], stddev=r['stddev'], **pane)
