"""Calibration ``y = a * x + b`` per sensor and metric, as a side input.

The table (CSV with a header, or JSON lines) has the columns ``sensor_id,
metric, a, b, valid_from`` (RFC 3339 with a zone, or epoch milliseconds).  A
reading uses the row of its sensor and metric with the latest ``valid_from``
not after its event time; without one it passes through uncalibrated
(``calibrated=False``, counted ``calibration.missing``), never dropped.

The table's *version* is ``sha1:`` and the first 12 hex digits of its bytes:
every calibrated reading, and every statistic, names the version it used.

Side input, two ways (:class:`CalibrationTables`):

* read once (batch runs, and replays of a bounded or synthetic source): one
  table in the global window;
* re-read every ``refresh`` seconds (streaming from a live source): Beam's
  slowly-changing side input pattern: ``PeriodicImpulse`` fires every
  ``refresh`` with each impulse in its own fixed window, the table is read
  then, and readings are put in the same fixed windows to be calibrated
  (:class:`Calibrate`) so that each uses the table read for its window.  A
  failed re-read keeps the last good table (counted ``calibration.reload_failed``).
"""
import bisect
import csv
import hashlib
import io as _io
import json
import math
import time
import typing

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.transforms import window as beam_window

from transforms import formats
from transforms.decode import DecodeError
from transforms.sensors.records import CalibratedReading

COLUMNS = ('sensor_id', 'metric', 'a', 'b', 'valid_from')


class CalibrationError(ValueError):
    """A calibration table that cannot be read; the message names the row."""


class CalibrationTable:
    """Rows per (sensor_id, metric), sorted by valid_from (micros)."""

    def __init__(self, rows=(), version: str = ''):
        self.version = version
        self._rows = {}
        for sensor_id, metric, a, b, valid_us in rows:
            self._rows.setdefault((sensor_id, metric), []).append(
                (valid_us, a, b))
        self._starts = {}
        for key, entries in self._rows.items():
            entries.sort()
            self._starts[key] = [e[0] for e in entries]

    def __len__(self):
        return sum(len(v) for v in self._rows.values())

    def rows_of(self, sensor_id: str, metric: str) -> list:
        """[(valid_from us, a, b), ...] sorted, of one sensor and metric."""
        return self._rows.get((sensor_id, metric), [])

    def lookup(self, sensor_id: str, metric: str, event_us: int):
        """(a, b) of the row in force at ``event_us``, or None."""
        starts = self._starts.get((sensor_id, metric))
        if not starts:
            return None
        i = bisect.bisect_right(starts, event_us) - 1
        if i < 0:
            return None
        _, a, b = self._rows[(sensor_id, metric)][i]
        return a, b

    def __getstate__(self):
        rows = [(s, m, a, b, v) for (s, m), entries in self._rows.items()
                for v, a, b in entries]
        return (rows, self.version)

    def __setstate__(self, state):
        self.__init__(*state)

    def __repr__(self):
        return f'CalibrationTable({len(self)} rows, version={self.version!r})'


EMPTY = CalibrationTable()


def _number(value, what: str) -> float:
    if isinstance(value, bool):
        raise ValueError(f'{what} is not a number: {value!r}')
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f'{what} is not finite: {value!r}')
    return number


def _valid_from_us(value) -> int:
    try:
        if isinstance(value, str):
            return formats.time_from_text(value).micros
        return formats.json_event_time({'event_time': value}).micros
    except DecodeError as e:
        raise ValueError(str(e).replace('event_time', 'valid_from')) from None


def parse_table(data: bytes, name: str = 'calibration') -> CalibrationTable:
    """The bytes of a CSV or JSON-lines table -> CalibrationTable;
    CalibrationError naming the line for anything it cannot read."""
    version = 'sha1:' + hashlib.sha1(data).hexdigest()[:12]
    try:
        text = data.decode('utf-8-sig')
    except UnicodeDecodeError as e:
        raise CalibrationError(f'{name}: not UTF-8 (byte {e.start})') from None
    lines = text.splitlines()
    first = next((l for l in lines if l.strip()), '')
    rows = []
    if first.lstrip().startswith('{'):
        records = []
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                records.append((n, json.loads(line)))
            except ValueError as e:
                raise CalibrationError(f'{name}: line {n}: invalid JSON: {e}') \
                    from None
    else:
        reader = csv.DictReader(_io.StringIO(text), skipinitialspace=True)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or ())]
        if missing:
            raise CalibrationError(
                f'{name}: the header lacks {", ".join(missing)} '
                f'(columns: {", ".join(COLUMNS)})')
        records = [(n, row) for n, row in enumerate(reader, 2)]
    for n, obj in records:
        try:
            if not isinstance(obj, dict):
                raise ValueError('not an object')
            for column in COLUMNS:
                if obj.get(column) in (None, ''):
                    raise ValueError(f'missing {column}')
            sensor_id = str(obj['sensor_id']).strip()
            metric = str(obj['metric']).strip()
            rows.append((sensor_id, metric, _number(obj['a'], 'a'),
                         _number(obj['b'], 'b'),
                         _valid_from_us(obj['valid_from'])))
        except (ValueError, TypeError) as e:
            raise CalibrationError(f'{name}: line {n}: {e}') from None
    return CalibrationTable(rows, version)


def _path(uri: str) -> str:
    return uri[len('file://'):] if uri.startswith('file://') else uri


def load_table(uri: typing.Optional[str]) -> CalibrationTable:
    """Read the table a ``--calibration`` URI names (file://PATH, a plain
    path, or any Beam filesystem path such as gs://); EMPTY for None."""
    if not uri:
        return EMPTY
    path = _path(uri)
    try:
        with FileSystems.open(path) as f:
            data = f.read()
    except Exception as e:  # pylint: disable=broad-except
        raise CalibrationError(
            f'{uri}: cannot read: {" ".join(str(e).split())[:200]}') from None
    return parse_table(data, uri)


class _LoadFn(beam.DoFn):
    """Tick -> the table as read now; the last good one if the read fails."""

    def __init__(self, uri, job):
        self._uri = uri
        self._failed = Metrics.counter(job, 'calibration.reload_failed')
        self._loads = Metrics.counter(job, 'calibration.loads')
        self._last = None

    def process(self, _):
        try:
            table = load_table(self._uri)
            self._last = table
            self._loads.inc()
        except CalibrationError:
            self._failed.inc()
            table = self._last or EMPTY
        yield table


class CalibrationTables(beam.PTransform):
    """``PBegin`` -> ``PCollection[CalibrationTable]``: the side input.

    ``refresh_s`` None: read once, global window.  Otherwise one table every
    ``refresh_s`` seconds from now on, each in its fixed window of that size
    (``PeriodicImpulse``)."""

    def __init__(self, uri, refresh_s, job, label=None):
        super().__init__(label)
        self._uri = uri
        self._refresh_s = refresh_s
        self._job = job

    def expand(self, pbegin):
        if self._refresh_s is None:
            ticks = pbegin | 'Once' >> beam.Impulse()
        else:
            from apache_beam.transforms.periodicsequence import PeriodicImpulse  # pylint: disable=import-outside-toplevel
            now = time.time()
            start = now - now % self._refresh_s
            ticks = pbegin | 'Every' >> PeriodicImpulse(
                start_timestamp=start, fire_interval=self._refresh_s,
                apply_windowing=True)
        return ticks | 'Read' >> beam.ParDo(_LoadFn(self._uri, self._job))


class _CalibrateFn(beam.DoFn):
    def __init__(self, job, paired=False):
        # paired: (reading, payload) pairs in and (calibrated, payload) out
        self._paired = paired
        self._missing = Metrics.counter(job, 'calibration.missing')
        self._calibrated = Metrics.counter(job, 'calibration.applied')

    def process(self, reading, table):
        if self._paired:
            reading, raw = reading
            for calibrated in self._calibrate(reading, table):
                yield calibrated, raw
        else:
            yield from self._calibrate(reading, table)

    def _calibrate(self, reading, table):
        table = table or EMPTY
        row = table.lookup(reading.sensor_id, reading.metric,
                           reading.event_time.micros)
        if row is None:
            self._missing.inc()
            value, calibrated = reading.value, False
        else:
            a, b = row
            value, calibrated = a * reading.value + b, True
            self._calibrated.inc()
        yield CalibratedReading(
            reading.event_time, reading.sensor_id, reading.metric,
            reading.value, value, reading.unit, reading.quality, calibrated,
            table.version)


class Calibrate(beam.PTransform):
    """``PCollection[Reading]`` + the side input of :class:`CalibrationTables`
    -> ``PCollection[CalibratedReading]`` (timestamps kept).

    With ``refresh_s`` the readings are put in fixed windows of that size
    first, matching the tables' windows (a window without a table calibrates
    nothing: its readings pass uncalibrated, counted).

    ``paired``: the elements are ``(reading, payload)`` pairs (``Decode``
    ``with_raw``), calibrated into ``(calibrated reading, payload)``."""

    def __init__(self, tables, refresh_s, job, paired=False, label=None):
        super().__init__(label)
        self._paired = paired
        self._tables = tables
        self._refresh_s = refresh_s
        self._job = job

    def expand(self, readings):
        if self._refresh_s is not None:
            readings = readings | 'RefreshWindows' >> beam.WindowInto(
                beam_window.FixedWindows(self._refresh_s))
        side = beam.pvalue.AsSingleton(self._tables, default_value=None)
        return readings | 'Apply' >> beam.ParDo(
            _CalibrateFn(self._job, self._paired), side)
