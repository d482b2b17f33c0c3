"""The logs job's columnar fast path: raw lines -> per (service, window)
partial :class:`~transforms.logs.stats.LogStats`, without a Python object per
record.

:func:`log_partials_fn` takes blocks of lines (:class:`~transforms.columnar.
LineBlock`, from a block-reading source) or single lines (buffered per bundle),
decodes the JSON lines of a block with Arrow (see :mod:`transforms.columnar`),
hands every other line to the reference decoder, assigns event-time windows
with numpy and emits one partial accumulator per (service, window), in that
window.  Downstream, ``WindowInto(KeepWindows())`` sets the trigger and the
same ``CombinePerKey(LogStatsFn())`` as the reference path merges partials, so
panes, lateness and results are those of the element-at-a-time path.

A JSON line is accepted by the vectorised reader only in the canonical shape
(``timestamp`` as RFC 3339 text with zone, ``service`` text, ``level`` text,
``status`` integer 100..599, ``latency_ms`` finite number >= 0, ``host`` text,
none of the alternative keys); everything else goes to the reference decoder.

With ``text_fast`` (the ``auto`` format, which reads access-log and syslog
lines too), the other lines are first matched, all at once, against two
strict shapes read with Arrow's RE2 (:func:`text_columns`): an access log
line with a virtual host (``vhost[:port] client ident user [dd/Mon/YYYY:
HH:MM:SS +hhmm] "request" status bytes "referer" "agent" [request_time]``,
printable ASCII only) and an RFC 5424 syslog line without structured data
(``<PRI>1 RFC3339-TIME host app procid msgid - message``, printable ASCII).
A line of either shape reads as the reference decoder reads it (service,
event time, error, latency are all the statistics use); every other line,
or one whose date does not exist or lies outside the event-time range, goes
to the reference decoder, one by one.
"""
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from transforms import columnar, deadletter, windows
from transforms.combiners import Moments, Quantiles
from transforms.decode import (DEFAULT_MAX_BYTES, MAX_EVENT_TIME,
                              MIN_EVENT_TIME, decode_payload)
from transforms.logs import decoders
from transforms.logs.records import ERROR_LEVELS
from transforms.logs.stats import LogStats

SCHEMA = pa.schema([
    ('timestamp', pa.string()), ('service', pa.string()),
    ('level', pa.string()), ('status', pa.int64()),
    ('latency_ms', pa.float64()), ('host', pa.string()),
])
# Keys the reference decoder would consult when a canonical one is absent, or
# that hold nested versions of them: a row with any of them goes to it.
ALTERNATIVE_KEYS = frozenset(
    decoders.TIME_KEYS[1:] + decoders.SERVICE_KEYS[1:] +
    decoders.LEVEL_KEYS[1:] + decoders.STATUS_KEYS[1:] +
    decoders.LATENCY_MS_KEYS[1:] + decoders.LATENCY_S_KEYS +
    decoders.HOST_KEYS[1:] + ('log', 'http'))
RFC3339 = columnar.RFC3339
ERROR_LEVEL_LIST = sorted(ERROR_LEVELS)


class Columns:
    """Decoded records as columns (what the statistics need of them)."""
    __slots__ = ('event_us', 'service', 'error', 'latency')

    def __init__(self, event_us, service, error, latency):
        self.event_us = event_us          # int64 microseconds
        self.service = service            # pyarrow string Array
        self.error = error                # bool
        self.latency = latency            # float64, NaN where none

    @classmethod
    def concat(cls, parts):
        parts = [p for p in parts if len(p.event_us)]
        if not parts:
            return cls(np.zeros(0, np.int64), pa.array([], pa.string()),
                       np.zeros(0, bool), np.zeros(0, np.float64))
        if len(parts) == 1:
            return parts[0]
        return cls(np.concatenate([p.event_us for p in parts]),
                   pa.concat_arrays([p.service for p in parts]),
                   np.concatenate([p.error for p in parts]),
                   np.concatenate([p.latency for p in parts]))

    @classmethod
    def of_records(cls, records):
        return cls(
            np.array([r.event_time.micros for r in records], np.int64),
            pa.array([r.service for r in records], pa.string()),
            np.array([(r.status is not None and r.status >= 500)
                      or r.level in ERROR_LEVELS for r in records], bool),
            np.array([np.nan if r.latency_ms is None else r.latency_ms
                      for r in records], np.float64))


def _accepted_rows(table: pa.Table) -> np.ndarray:
    """Rows the vectorised reading gets exactly right (bool mask)."""
    n = table.num_rows
    ok = np.ones(n, bool)
    for name in table.column_names:
        if name in ALTERNATIVE_KEYS:
            ok &= table.column(name).is_null().to_numpy(zero_copy_only=False)
    ts = table.column('timestamp') if 'timestamp' in table.column_names \
        else pa.nulls(n, pa.string())
    ok &= pc.fill_null(pc.match_substring_regex(ts, RFC3339),
                       False).to_numpy(zero_copy_only=False)
    service = table.column('service') if 'service' in table.column_names \
        else pa.nulls(n, pa.string())
    trimmed = pc.utf8_trim_whitespace(service)
    ok &= pc.fill_null(pc.and_(pc.equal(service, trimmed),
                               pc.greater(pc.utf8_length(service), 0)),
                       False).to_numpy(zero_copy_only=False)
    if 'status' in table.column_names:
        status = table.column('status')
        good = pc.or_(pc.is_null(status), pc.and_(
            pc.greater_equal(status, 100), pc.less_equal(status, 599)))
        ok &= pc.fill_null(good, False).to_numpy(zero_copy_only=False)
    if 'latency_ms' in table.column_names:
        latency = table.column('latency_ms')
        good = pc.or_(pc.is_null(latency), pc.and_(
            pc.is_finite(latency), pc.greater_equal(latency, 0.0)))
        ok &= pc.fill_null(good, False).to_numpy(zero_copy_only=False)
    return ok


def _levels(table: pa.Table):
    """Normalised levels as a string array, or None where a level is refused."""
    if 'level' not in table.column_names:
        return pa.array([''] * table.num_rows, pa.string())
    encoded = pc.dictionary_encode(table.column('level')).combine_chunks()
    names = []
    for value in encoded.dictionary.to_pylist():
        names.append(decoders.normalise_level(value))
    return pc.fill_null(pc.take(pa.array(names, pa.string()),
                                encoded.indices), '')


def _columns_of(table: pa.Table, event_us) -> Columns:
    n = table.num_rows
    level = _levels(table)
    error = pc.is_in(level, pa.array(ERROR_LEVEL_LIST)).to_numpy(
        zero_copy_only=False)
    if 'status' in table.column_names:
        error = error | pc.fill_null(pc.greater_equal(
            table.column('status'), 500), False).to_numpy(zero_copy_only=False)
    latency = table.column('latency_ms').to_numpy(zero_copy_only=False) \
        .astype(np.float64) if 'latency_ms' in table.column_names \
        else np.full(n, np.nan)
    return Columns(event_us,
                   table.column('service').combine_chunks(),
                   error.astype(bool), latency)


class BlockDecoder:
    """Decodes a block of lines to :class:`Columns` plus dead letters."""

    def __init__(self, decoder, stage, source='', max_bytes=DEFAULT_MAX_BYTES,
                 json_fast=True, text_fast=False):
        self.decoder = decoder
        self.stage = stage
        self.source = source
        self.max_bytes = max_bytes
        self.json_fast = json_fast
        # Access-log and syslog lines read at once (the auto format only).
        self.text_fast = text_fast

    def decode_each(self, payloads, kept: list = None):
        """Payloads decoded one by one: (columns, dead letters, count);
        ``kept``: a list to which the index of every payload that became a
        record is appended."""
        records, dead = self.reference(payloads, kept)
        return Columns.of_records(records), dead, len(records)

    def decode_rest(self, payloads, kept: list = None):
        """A block's lines that are not canonical JSON: those of the strict
        access-log and syslog shapes read at once (``text_fast``), every
        other one decoded one by one: (columns, dead letters, count);
        ``kept`` as in :meth:`decode_each` (the rows read at once come
        first)."""
        if self.text_fast and payloads:
            order = [] if kept is not None else None
            fast, rest = text_columns(payloads, self.max_bytes, order)
            if len(fast.event_us):
                rest_kept = [] if kept is not None else None
                records, dead = self.reference([payloads[i] for i in rest],
                                               rest_kept)
                merged = Columns.concat([fast, Columns.of_records(records)])
                if kept is not None:
                    kept.extend(np.concatenate(order).tolist())
                    kept.extend(rest[rest_kept].tolist())
                return merged, dead, len(merged.event_us)
        return self.decode_each(payloads, kept)

    def reference(self, lines, kept: list = None):
        """Lines decoded one by one: (records, dead letters)."""
        records, dead = [], []
        for i, raw in enumerate(lines):
            result = decode_payload(raw, self.decoder, self.stage, self.source,
                                    self.max_bytes)
            if isinstance(result, deadletter.DeadLetter):
                dead.append(result)
            else:
                records.append(result)
                if kept is not None:
                    kept.append(i)
        return records, dead

    def decode(self, data: bytes, bounds=None, lines: list = None):
        """``data``: lines joined by b'\\n'; ``bounds``: their (starts, ends)
        when known (an empty last line leaves no trace in the bytes);
        ``lines``: see ``columnar.decode_json_lines``."""
        starts, ends = bounds if bounds is not None else \
            columnar.line_bounds(data)
        if not self.json_fast or len(starts) == 0:
            return columnar.decode_one_by_one(self.decode_rest, data,
                                              (starts, ends), lines)
        return columnar.decode_json_lines(
            data, (starts, ends), schema=SCHEMA, time_field='timestamp',
            max_bytes=self.max_bytes, accept=_accepted_rows,
            columns_of=_columns_of, decode_each=self.decode_rest,
            concat=Columns.concat, lines=lines)


# Printable ASCII: no space, none of '"' and '\', and all of it.
_TOKEN = r'[!-~]+'
_QUOTED_TEXT = r'"[ !#-\[\]-~]*"'
MONTHS = ('Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep',
          'Oct', 'Nov', 'Dec')
# The access-log lines the reference decoder (formats.parse_combined, then
# decoders.decode_combined_log) reads with a virtual host: exactly four
# tokens before the time, so the first is the virtual host.  The time is
# 26 bytes: dd/Mon/YYYY:HH:MM:SS +hhmm.
ACCESS_LINE = (
    r'^(?P<vhost>[A-Za-z0-9][A-Za-z0-9._-]*)(?::[0-9]{1,5})? '
    + _TOKEN + ' ' + _TOKEN + ' ' + _TOKEN +
    r' \[(?P<time>[0-9]{2}/(?:' + '|'.join(MONTHS) + r')/[0-9]{4}:'
    r'[0-9]{2}:[0-9]{2}:[0-9]{2} [+-][0-9]{4})\] ' + _QUOTED_TEXT +
    r' (?P<status>[1-5][0-9]{2}) (?:[0-9]{1,15}|-) '
    + _QUOTED_TEXT + ' ' + _QUOTED_TEXT +
    r'(?: (?P<rt>[0-9]{1,15}(?:\.[0-9]{1,9})?))?$')
# RFC 5424 lines without structured data (decoders.decode_syslog_log).
SYSLOG_LINE = (
    r'^<(?P<pri>[0-9]{1,3})>1 (?P<time>[0-9]{4}-[0-9]{2}-[0-9]{2}T'
    r'[0-9]{2}:[0-9]{2}:[0-5][0-9](?:\.[0-9]{1,6})?'
    r'(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])) '
    r'(?:' + _TOKEN + ') (?P<app>' + _TOKEN + ') (?:' + _TOKEN + ') (?:'
    + _TOKEN + r') -(?: [ -~]*)?$')
_SYSLOG_ERROR = np.array([decoders.SYSLOG_LEVELS[s] in ERROR_LEVELS
                          for s in range(8)])
# The bytes an access line's virtual host begins with (ACCESS_LINE).
_ALNUM = np.zeros(256, bool)
_ALNUM[np.frombuffer(b'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz'
                     b'0123456789', np.uint8)] = True
# Month names as numbers of their three bytes, sorted, and their months.
_MONTH_CODES = np.array([int.from_bytes(m.encode(), 'big') for m in MONTHS])
_MONTH_ORDER = np.argsort(_MONTH_CODES)


def _fixed(values, width: int) -> np.ndarray:
    """A binary or string array whose values all have ``width`` bytes as a
    (rows, width) uint8 matrix (one copy, no Python object per row)."""
    fixed = values.cast(pa.binary()).cast(pa.binary(width))
    return np.frombuffer(fixed.buffers()[1], np.uint8,
                         count=width * len(fixed),
                         offset=width * fixed.offset).reshape(-1, width)


def _number(digits: np.ndarray) -> np.ndarray:
    """Columns of ASCII digits -> their numbers (int64)."""
    out = np.zeros(len(digits), np.int64)
    for column in range(digits.shape[1]):
        out = out * 10 + (digits[:, column].astype(np.int64) - 48)
    return out


def _month_length(year: np.ndarray, month: np.ndarray):
    """(days since the epoch of each month's first day, the month's days),
    for years 1970..9999 and months 1..12 (others clipped)."""
    months = ((np.clip(year, 1970, 9999) - 1970) * 12
              + np.clip(month, 1, 12) - 1).astype('datetime64[M]')
    first = months.astype('datetime64[D]').astype(np.int64)
    return first, (months + 1).astype('datetime64[D]').astype(np.int64) \
        - first


def _in_range(event_us: np.ndarray) -> np.ndarray:
    return (event_us >= MIN_EVENT_TIME.micros) & \
        (event_us <= MAX_EVENT_TIME.micros)


def _access_columns(struct: pa.StructArray):
    """(accepted mask, Columns of the accepted) of matched access lines."""
    time = _fixed(struct.field('time'), 26)   # dd/Mon/YYYY:HH:MM:SS +hhmm
    day, year = _number(time[:, 0:2]), _number(time[:, 7:11])
    hour, minute = _number(time[:, 12:14]), _number(time[:, 15:17])
    second = _number(time[:, 18:20])
    off_h, off_m = _number(time[:, 22:24]), _number(time[:, 24:26])
    code = (time[:, 3].astype(np.int64) << 16) | \
        (time[:, 4].astype(np.int64) << 8) | time[:, 5]
    month = _MONTH_ORDER[np.searchsorted(_MONTH_CODES[_MONTH_ORDER],
                                         code)] + 1
    # Second 60 (a leap second) and years before 1970 are the reference's.
    ok = ((year >= 1970) & (day >= 1) & (hour <= 23) & (minute <= 59)
          & (second <= 59) & (off_h <= 23) & (off_m <= 59))
    first, length = _month_length(year, month)
    ok &= day <= length
    sign = np.where(time[:, 21] == ord('-'), -1, 1)
    seconds = ((first + day - 1) * 86400 + hour * 3600 + minute * 60
               + second - sign * (off_h * 3600 + off_m * 60))
    event_us = seconds * 1_000_000
    ok &= _in_range(event_us)
    status = _number(_fixed(struct.field('status'), 3))
    rt = struct.field('rt').cast(pa.string())
    latency = pc.if_else(pc.equal(rt, ''), None, rt).cast(pa.float64()) \
        .to_numpy(zero_copy_only=False) * 1000.0
    keep = np.flatnonzero(ok)
    return ok, Columns(event_us[keep],
                       struct.field('vhost').cast(pa.string()).take(
                           pa.array(keep)),
                       status[keep] >= 500, latency[keep])


def _syslog_columns(struct: pa.StructArray):
    """(accepted mask, Columns of the accepted) of matched syslog lines."""
    pri = struct.field('pri').cast(pa.string()).cast(pa.int64()).to_numpy(
        zero_copy_only=False)
    time = struct.field('time').cast(pa.string())
    # The date must exist (Arrow's cast refuses the whole array otherwise).
    head = _fixed(pc.binary_slice(struct.field('time'), 0, 19), 19)
    year, month, day = (_number(head[:, 0:4]), _number(head[:, 5:7]),
                        _number(head[:, 8:10]))
    hour, minute = _number(head[:, 11:13]), _number(head[:, 14:16])
    ok = ((pri <= 191) & (year >= 1970) & (month >= 1) & (month <= 12)
          & (day >= 1) & (hour <= 23) & (minute <= 59))
    _, length = _month_length(year, month)
    ok &= day <= length
    keep = np.flatnonzero(ok)
    event_us = np.zeros(len(pri), np.int64)
    try:
        event_us[keep] = time.take(pa.array(keep)).cast(
            pa.timestamp('us', tz='UTC')).cast(pa.int64()).to_numpy(
                zero_copy_only=False)
    except pa.ArrowInvalid:           # a shape the checks let by
        return np.zeros(len(pri), bool), None
    ok &= _in_range(event_us)
    keep = np.flatnonzero(ok)
    app = struct.field('app').cast(pa.string())
    service = pc.if_else(pc.equal(app, '-'), 'syslog', app)
    return ok, Columns(event_us[keep], service.take(pa.array(keep)),
                       _SYSLOG_ERROR[pri[keep] & 7],
                       np.full(len(keep), np.nan))


def text_columns(payloads, max_bytes=DEFAULT_MAX_BYTES, lines: list = None):
    """The payloads of the strict access-log and syslog shapes read at once:
    ``(Columns, indices of the payloads left to the reference decoder)``;
    ``lines``: a list to which the payload index of each row read is
    appended (one numpy array per shape read)."""
    n = len(payloads)
    usable = np.fromiter((isinstance(p, bytes) and 0 < len(p) <= max_bytes
                          for p in payloads), bool, n)
    if not usable.any():
        return Columns.concat([]), np.arange(n)
    index = np.flatnonzero(usable)
    binary = pa.array([payloads[i] for i in index.tolist()], pa.binary())
    # Each shape is matched only against the lines that begin as it must
    # (the regular expressions cost a millisecond per thousand lines).
    offsets = np.frombuffer(binary.buffers()[1], np.int32,
                            count=len(binary) + 1)
    first = np.frombuffer(binary.buffers()[2], np.uint8)[offsets[:-1]]
    taken = np.zeros(n, bool)
    parts = []
    for pattern, read, begins in (
            (ACCESS_LINE, _access_columns, _ALNUM[first]),
            (SYSLOG_LINE, _syslog_columns, first == ord('<'))):
        if not begins.any():
            continue
        some = np.flatnonzero(begins)
        matched = pc.extract_regex(binary.take(pa.array(some)), pattern)
        valid = matched.is_valid().to_numpy(zero_copy_only=False)
        if not valid.any():
            continue
        rows = some[valid]
        ok, columns = read(matched.filter(pa.array(valid)))
        if ok.any():
            taken[index[rows[ok]]] = True
            parts.append(columns)
            if lines is not None:
                lines.append(index[rows[ok]])
    return Columns.concat(parts), np.flatnonzero(~taken)


def event_times(max_bytes=DEFAULT_MAX_BYTES) -> columnar.JsonEventTimes:
    """The event times of a block's lines that this fast path reads (see
    ``decode.PayloadEventTime``): the canonical JSON lines."""
    return columnar.JsonEventTimes(SCHEMA, 'timestamp', _accepted_rows,
                                   max_bytes)


def partials(columns: Columns, window: windows.WindowSpec, k: int):
    """(service, window start us, window end us, max event us, LogStats) per
    group of the columns' records (vectorised: one Arrow group-by)."""
    rows, starts = windows.window_starts(window, columns.event_us)
    if rows.size == 0:
        return []
    size = int(round(window.size * 1e6))
    every_row_once = rows.size == len(columns.event_us)
    take = (lambda a: a) if every_row_once else (lambda a: a[rows])
    service = columns.service if every_row_once else \
        columns.service.take(pa.array(rows))
    latency = take(columns.latency)
    table = pa.table({
        'service': service, 'start': starts,
        'error': take(columns.error), 'event': take(columns.event_us),
        'latency': pa.array(latency, pa.float64(), mask=np.isnan(latency)),
    })
    grouped = table.group_by(['service', 'start'], use_threads=False) \
        .aggregate([
            ('error', 'count'), ('error', 'sum'), ('event', 'max'),
            ('latency', 'count'), ('latency', 'mean'), ('latency', 'min'),
            ('latency', 'max'),
            ('latency', 'variance', pc.VarianceOptions(ddof=0)),
            ('latency', 'list')])
    out = []
    columns_of = {name: grouped.column(name).to_pylist() for name in (
        'service', 'start', 'error_count', 'error_sum', 'event_max',
        'latency_count', 'latency_mean', 'latency_min', 'latency_max',
        'latency_variance')}
    lists = grouped.column('latency_list').combine_chunks()
    offsets = lists.offsets.to_numpy()
    values = lists.values.to_numpy(zero_copy_only=False)
    for g in range(grouped.num_rows):
        stats = LogStats(k)
        stats.count = columns_of['error_count'][g]
        stats.errors = int(columns_of['error_sum'][g])
        n = columns_of['latency_count'][g]
        if n:
            stats.latency = Moments(
                n, columns_of['latency_mean'][g],
                columns_of['latency_variance'][g] * n,
                columns_of['latency_min'][g], columns_of['latency_max'][g])
            group_values = values[offsets[g]:offsets[g + 1]]
            stats.sketch = Quantiles(k).add_array(
                group_values[~np.isnan(group_values)])
        start = columns_of['start'][g]
        out.append((columns_of['service'][g], start, start + size,
                    columns_of['event_max'][g], stats))
    return out


class LogPartials:
    """columns -> partial LogStats per (service, window); picklable."""

    def __init__(self, window: windows.WindowSpec, k: int):
        self.window = window
        self.k = k

    def __call__(self, columns):
        return partials(columns, self.window, self.k)

    @staticmethod
    def row_keys(columns):
        """(code of each row's service, the service of each code)."""
        return columnar.string_codes(columns.service)


def log_partials_fn(block_decoder: BlockDecoder, window: windows.WindowSpec,
                    job: str, k: int, window_in_key: bool = False,
                    carry_raw: bool = False) -> columnar.PartialsFn:
    """Raw lines or LineBlocks -> ``(service, LogStats)`` partials, each in its
    window (tag ``ok``), and dead letters (tag ``dead``); ``carry_raw``: see
    ``columnar.PartialsFn``."""
    return columnar.PartialsFn(block_decoder, LogPartials(window, k), job,
                               window_in_key=window_in_key,
                               carry_raw=carry_raw)
