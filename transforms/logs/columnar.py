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
"""
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from transforms import columnar, deadletter, windows
from transforms.combiners import Moments, Quantiles
from transforms.decode import DEFAULT_MAX_BYTES, decode_payload
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
                 json_fast=True):
        self.decoder = decoder
        self.stage = stage
        self.source = source
        self.max_bytes = max_bytes
        self.json_fast = json_fast

    def decode_each(self, payloads, kept: list = None):
        """Payloads decoded one by one: (columns, dead letters, count);
        ``kept``: a list to which the index of every payload that became a
        record is appended."""
        records, dead = self.reference(payloads, kept)
        return Columns.of_records(records), dead, len(records)

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
            kept = [] if lines is not None else None
            records, dead = self.reference(
                [data[s:e] for s, e in zip(starts, ends)], kept)
            if lines is not None:
                lines.append(np.asarray(kept, np.int64))
            return Columns.of_records(records), dead, len(records)
        return columnar.decode_json_lines(
            data, (starts, ends), schema=SCHEMA, time_field='timestamp',
            max_bytes=self.max_bytes, accept=_accepted_rows,
            columns_of=_columns_of, decode_each=self.decode_each,
            concat=Columns.concat, lines=lines)


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
