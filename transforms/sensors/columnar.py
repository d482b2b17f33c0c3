"""The sensors job's columnar fast path: blocks of lines -> calibrated
columns -> partial :class:`~transforms.sensors.stats.SensorAcc` per (sensor,
metric, window), and the readings of each sensor as one block for the
detector, without a Python object per reading.

A JSON line is accepted by the vectorised reader only in the canonical shape
(``event_time`` RFC 3339 text with a zone, ``sensor_id`` and ``metric``
printable ASCII of 1..128 characters without surrounding blanks, ``value`` a
finite JSON number, ``unit``/``quality`` text or absent); every other line
goes to the reference decoder and ends as the same reading or the same dead
letter.  Calibration is applied to whole columns (one binary search per
reading over its sensor's ``valid_from`` times) with the same table, from the
same side input, as the element path.
"""
import typing

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms import columnar, deadletter, windows
from transforms.decode import DEFAULT_MAX_BYTES, decode_payload
from transforms.sensors import calibration
from transforms.combiners import Moments, Quantiles
from transforms.sensors.stats import SensorAcc, Trend

READINGS = 'readings'
SCHEMA = pa.schema([
    ('event_time', pa.string()), ('sensor_id', pa.string()),
    ('metric', pa.string()), ('value', pa.float64()),
    ('unit', pa.string()), ('quality', pa.string()),
])
_NAME = r'^[\x21-\x7e]([\x20-\x7e]{0,126}[\x21-\x7e])?$'


class Columns:
    """Decoded readings as columns: what statistics and the detector need."""
    __slots__ = ('event_us', 'sensor', 'metric', 'value')

    def __init__(self, event_us, sensor, metric, value):
        self.event_us = event_us        # int64 microseconds
        self.sensor = sensor            # pyarrow string Array
        self.metric = metric
        self.value = value              # float64, raw

    @classmethod
    def concat(cls, parts):
        parts = [p for p in parts if len(p.event_us)]
        if not parts:
            return cls(np.zeros(0, np.int64), pa.array([], pa.string()),
                       pa.array([], pa.string()), np.zeros(0, np.float64))
        if len(parts) == 1:
            return parts[0]
        return cls(np.concatenate([p.event_us for p in parts]),
                   pa.concat_arrays([p.sensor for p in parts]),
                   pa.concat_arrays([p.metric for p in parts]),
                   np.concatenate([p.value for p in parts]))

    @classmethod
    def of_records(cls, records):
        return cls(np.array([r.event_time.micros for r in records], np.int64),
                   pa.array([r.sensor_id for r in records], pa.string()),
                   pa.array([r.metric for r in records], pa.string()),
                   np.array([r.value for r in records], np.float64))


def _accepted_rows(table: pa.Table) -> np.ndarray:
    n = table.num_rows
    ok = np.ones(n, bool)

    def column(name):
        return table.column(name) if name in table.column_names \
            else pa.nulls(n, SCHEMA.field(name).type)

    for name, pattern in (('event_time', columnar.RFC3339),
                          ('sensor_id', _NAME), ('metric', _NAME)):
        ok &= pc.fill_null(pc.match_substring_regex(column(name), pattern),
                           False).to_numpy(zero_copy_only=False)
    ok &= pc.fill_null(pc.is_finite(column('value')), False).to_numpy(
        zero_copy_only=False)
    return ok


def _columns_of(table: pa.Table, event_us) -> Columns:
    return Columns(
        event_us,
        table.column('sensor_id').combine_chunks(),
        table.column('metric').combine_chunks(),
        table.column('value').to_numpy(zero_copy_only=False).astype(
            np.float64))


class BlockDecoder:
    """Decodes a block of lines to :class:`Columns` plus dead letters."""

    def __init__(self, decoder, stage, source='', max_bytes=DEFAULT_MAX_BYTES,
                 json_fast=True):
        self.decoder = decoder
        self.stage = stage
        self.source = source
        self.max_bytes = max_bytes
        self.json_fast = json_fast

    def decode_each(self, payloads, kept: list = None):
        """``kept``: a list to which the index of every payload that became
        a reading is appended."""
        records, dead = [], []
        for i, raw in enumerate(payloads):
            result = decode_payload(raw, self.decoder, self.stage, self.source,
                                    self.max_bytes)
            if isinstance(result, deadletter.DeadLetter) or \
                    not hasattr(result, 'event_time'):
                dead.append(result)
            else:
                records.append(result)
                if kept is not None:
                    kept.append(i)
        return Columns.of_records(records), dead, len(records)

    def decode(self, data: bytes, bounds=None, lines: list = None):
        """``lines``: see ``columnar.decode_json_lines``."""
        starts, ends = bounds if bounds is not None else \
            columnar.line_bounds(data)
        if not self.json_fast or len(starts) == 0:
            return columnar.decode_one_by_one(self.decode_each, data,
                                              (starts, ends), lines)
        return columnar.decode_json_lines(
            data, (starts, ends), schema=SCHEMA, time_field='event_time',
            max_bytes=self.max_bytes, accept=_accepted_rows,
            columns_of=_columns_of, decode_each=self.decode_each,
            concat=Columns.concat, lines=lines)


def event_times(max_bytes=DEFAULT_MAX_BYTES) -> columnar.JsonEventTimes:
    """The event times of a block's lines that this fast path reads (see
    ``decode.PayloadEventTime``): the canonical JSON lines."""
    return columnar.JsonEventTimes(SCHEMA, 'event_time', _accepted_rows,
                                   max_bytes)


def _codes(array: pa.Array):
    """(int codes, names) of a string array (Arrow dictionary encoding)."""
    encoded = pc.dictionary_encode(array)
    return (encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64),
            encoded.dictionary.to_pylist())


def sensor_groups(columns: Columns):
    """(order, bounds, firsts, names) of the rows grouped by (sensor,
    metric); ``names[g]`` is the (sensor_id, metric) of group g."""
    s_codes, s_names = _codes(columns.sensor)
    m_codes, m_names = _codes(columns.metric)
    order, bounds, firsts = columnar.group_rows(s_codes, m_codes)
    names = [(s_names[s_codes[f]], m_names[m_codes[f]]) for f in firsts]
    return order, bounds, firsts, names, s_codes * (len(m_names) + 1) + m_codes


def calibrate(columns: Columns, table: calibration.CalibrationTable,
              groups=None):
    """(calibrated values, calibrated flags): ``a x + b`` with the row in
    force at each reading's time, the raw value where there is none."""
    value = columns.value.copy()
    calibrated = np.zeros(len(value), bool)
    if not len(value) or not len(table):
        return value, calibrated
    order, bounds, _, names, _ = groups or sensor_groups(columns)
    for g, (sensor_id, metric) in enumerate(names):
        rows = order[bounds[g]:bounds[g + 1]]
        entries = table.rows_of(sensor_id, metric)
        if not entries:
            continue
        valid = np.array([e[0] for e in entries], np.int64)
        i = np.searchsorted(valid, columns.event_us[rows], side='right') - 1
        has = i >= 0
        a = np.array([e[1] for e in entries])
        b = np.array([e[2] for e in entries])
        hit = rows[has]
        value[hit] = a[i[has]] * columns.value[hit] + b[i[has]]
        calibrated[hit] = True
    return value, calibrated


class ReadingBlock(typing.NamedTuple):
    """The calibrated readings of one sensor and metric from one block, for
    the detector (which sorts them with the rest)."""
    event_us: np.ndarray
    value: np.ndarray
    version: str

    def __len__(self):
        return len(self.event_us)


class SensorPartials:
    """columns -> partial SensorAcc per (sensor, metric, window), and one
    ReadingBlock per (sensor, metric) on the ``readings`` output."""

    def __init__(self, window: windows.WindowSpec, k: int,
                 readings: bool = True):
        self.window = window
        self.k = k
        self.readings = readings        # emit ReadingBlocks (the detector)
        self.table = calibration.EMPTY

    @staticmethod
    def row_keys(columns: Columns):
        """(code of each row's (sensor, metric), the key of each code)."""
        order, bounds, _, names, _ = sensor_groups(columns)
        codes = np.empty(len(columns.event_us), np.int64)
        codes[order] = np.repeat(np.arange(len(names)), np.diff(bounds))
        return codes, names

    def __call__(self, columns: Columns):
        table = self.table
        if not len(columns.event_us):
            return
        groups = sensor_groups(columns)
        order, bounds, _, names, key_codes = groups
        value, calibrated = calibrate(columns, table, groups)
        for g, key in enumerate(names if self.readings else ()):
            rows = order[bounds[g]:bounds[g + 1]]
            t = columns.event_us[rows]
            yield (READINGS, key, int(t.min()), int(t.max()) + 1, int(t.max()),
                   ReadingBlock(t, value[rows], table.version))
        win_rows, starts = windows.window_starts(self.window, columns.event_us)
        if win_rows.size == 0:
            return
        size = int(round(self.window.size * 1e6))
        name_of = {int(key_codes[order[bounds[g]]]): key
                   for g, key in enumerate(names)}
        order, bounds, firsts = columnar.group_rows(key_codes[win_rows],
                                                    starts)
        rows = win_rows[order]
        for g, acc in enumerate(accumulators(
                columns.event_us[rows], value[rows], calibrated[rows],
                bounds, table.version, self.k)):
            first = rows[bounds[g]]
            start = int(starts[order[bounds[g]]])
            yield (name_of[int(key_codes[first])], start, start + size,
                   int(columns.event_us[rows[bounds[g]:bounds[g + 1]]].max()),
                   acc)


def accumulators(event_us, value, calibrated, bounds, version, k):
    """One SensorAcc per group of consecutive rows (``bounds``), with the
    moments and the trend of all groups computed at once (``reduceat``),
    each as SensorAcc.of_arrays would compute it."""
    lo = bounds[:-1]
    counts = np.diff(bounds)
    group = np.repeat(np.arange(len(counts)), counts)
    mean = np.add.reduceat(value, lo) / counts
    dev = value - mean[group]
    m2 = np.add.reduceat(dev * dev, lo)
    low = np.minimum.reduceat(value, lo)
    high = np.maximum.reduceat(value, lo)
    origin = event_us[lo]
    t = (event_us - origin[group]) / 1e6
    mt = np.add.reduceat(t, lo) / counts
    dt = t - mt[group]
    stt = np.add.reduceat(dt * dt, lo)
    sty = np.add.reduceat(dt * dev, lo)
    uncalibrated = counts - np.add.reduceat(calibrated.astype(np.int64), lo)
    out = []
    counts_l, mean_l, m2_l = counts.tolist(), mean.tolist(), m2.tolist()
    low_l, high_l, origin_l = low.tolist(), high.tolist(), origin.tolist()
    mt_l, stt_l, sty_l = mt.tolist(), stt.tolist(), sty.tolist()
    unc_l, lo_l = uncalibrated.tolist(), lo.tolist()
    for g, n in enumerate(counts_l):
        # Built field by field: SensorAcc() would make a Moments and a Trend
        # only to replace them.
        acc = SensorAcc.__new__(SensorAcc)
        acc.moments = Moments(n, mean_l[g], m2_l[g], low_l[g], high_l[g])
        acc.sketch = Quantiles(k).add_array(value[lo_l[g]:lo_l[g] + n])
        acc.trend = Trend(n, origin_l[g], mt_l[g], mean_l[g], stt_l[g],
                          sty_l[g])
        acc.uncalibrated = unc_l[g]
        acc.versions = {version} if unc_l[g] < n else set()
        out.append(acc)
    return out


class SensorPartialsFn(columnar.PartialsFn):
    """PartialsFn with the calibration table as a side input."""

    def process(self, element, table, timestamp=beam.DoFn.TimestampParam,
                window=beam.DoFn.WindowParam):
        self._make_partials.table = table or calibration.EMPTY
        yield from super().process(element, timestamp, window)
