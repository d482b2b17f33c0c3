"""The columnar fast path: blocks of lines in, Arrow columns out.

Python Beam pays a per-element cost at every step, so the fast path moves
*blocks* of raw lines (:class:`LineBlock`, thousands of lines in one bytes
object) and decodes each block at once into Arrow columns, then pre-aggregates
per (key, window) before the shuffle (see ``transforms/<domain>/columnar.py``).

Exactness comes first: a vectorised parser only *accepts* a line when it can
prove it reads it as the element-at-a-time (reference) decoder would; every
other line is handed to the reference decoder, one by one, and ends as the
same record or the same dead letter as on the reference path.  So the fast
path is fast on clean input and exactly as correct as the reference on dirty
input.

:func:`json_block` parses the JSON-object lines of a block with Arrow's JSON
reader and isolates the lines the reader refuses (by the row number in its
error, or by bisection when the error has none).
"""
import codecs
import re
import typing

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindow, IntervalWindow
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from transforms import aggregate, deadletter, windows
from transforms.decode import (MAX_EVENT_TIME, MIN_EVENT_TIME, DecodeCounters,
                               Filtered)

NEWLINE = 10
# The RFC 3339 shapes Arrow's timestamp cast reads exactly as
# formats.parse_time does (at most microseconds, a zone always).
RFC3339 = (r'^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:[0-5]\d(\.\d{1,6})?'
           r'(Z|[+-]\d{2}:\d{2})$')
OPEN_BRACE = ord('{')
CLOSE_BRACE = ord('}')
# Lines whose objects and arrays Arrow reads as types nested deeper than
# this go to the reference decoder (see json_block).
MAX_JSON_DEPTH = 32
_ROW = re.compile(r'\bin row (\d+)')
# Arrow's reader refusing a top-level field's value for its type.
_MISTYPED = re.compile(r'\bColumn\(/([^/()]+)\) changed from ')


def keeps_semantics(trigger, *window_specs) -> bool:
    """Whether the fast path gives exactly Beam's results for these windows
    and trigger: fixed and sliding windows, and late panes firing on every
    late element (a partial aggregate is one element however many records it
    holds).  Session windows and late=N>1 need the element path."""
    return (all(spec.kind in ('fixed', 'sliding') for spec in window_specs)
            and (trigger.late or 1) == 1)


class LineBlock(typing.NamedTuple):
    """Many raw lines in one payload, separated by b'\\n' (no trailing one
    needed).  What a block-reading source emits instead of one line each."""
    data: bytes

    def lines(self) -> list:
        return self.data.split(b'\n')


def line_bounds(data: bytes):
    """(starts, ends) byte offsets of the lines of ``data`` (int64 arrays),
    exactly as ``data.split(b'\\n')`` cuts them: every b'\\n' separates two
    lines (so ``b'a\\n'`` is ``a`` and an empty line).  A trailing b'\\r' is
    kept; decoders strip it."""
    newlines = np.flatnonzero(
        np.frombuffer(data, np.uint8) == NEWLINE).astype(np.int64)
    ends = np.append(newlines, len(data))
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = newlines + 1
    return starts, ends


def utf8_invalid_lines(data: bytes, starts, ends) -> np.ndarray:
    """Indices of the lines that are not valid UTF-8 (linear time)."""
    bad = []
    view = memoryview(data)
    offset = 0
    while offset < len(data):
        try:
            codecs.utf_8_decode(view[offset:], 'strict', True)
            break
        except UnicodeDecodeError as e:
            position = offset + e.start
            line = int(np.searchsorted(ends, position, side='left'))
            bad.append(line)
            if line >= len(ends):
                break
            offset = int(ends[line]) + 1
    return np.asarray(bad, dtype=np.int64)


def json_candidates(data: bytes, starts, ends, max_bytes: int) -> np.ndarray:
    """Boolean mask of lines worth giving to the JSON reader: they start with
    '{', end with '}' (before trailing blanks: a truncated line does not),
    are within the size limit and are valid UTF-8."""
    if len(starts) == 0:
        return np.zeros(0, bool)
    raw = np.frombuffer(data, np.uint8)
    lengths = ends - starts
    first = np.zeros(len(starts), np.uint8)
    nonempty = lengths > 0
    first[nonempty] = raw[starts[nonempty]]
    mask = (first == OPEN_BRACE) & (lengths <= max_bytes)
    mask &= _last_byte(raw, starts, ends) == CLOSE_BRACE
    mask[utf8_invalid_lines(data, starts, ends)] = False
    return mask


def _last_byte(raw: np.ndarray, starts, ends, blanks: int = 16):
    """Each line's last byte but JSON's blanks (space, tab, CR), 0 for a
    line of blanks, or of more trailing blanks than ``blanks`` (such a line
    is left to the reference decoder)."""
    last = ends - 1
    byte = np.zeros(len(starts), np.uint8)
    inside = last >= starts
    byte[inside] = raw[last[inside]]
    for _ in range(blanks):
        blank = inside & _blank(byte)
        if not blank.any():
            return byte
        last[blank] -= 1
        inside = last >= starts
        byte[blank & ~inside] = 0
        more = blank & inside
        byte[more] = raw[last[more]]
    byte[inside & _blank(byte)] = 0
    return byte


def _blank(byte: np.ndarray) -> np.ndarray:
    return (byte == 32) | (byte == 9) | (byte == 13)    # space, tab, CR


def _typed_as_text(data: bytes, ends, name: str) -> list:
    """The lines of ``data`` (``ends``: their ends) where the field ``name``
    holds a string, object or array written the compact way
    (``"status":"abc"``), found with ``bytes.find``."""
    found = []
    for opener in (b'"', b'{', b'['):
        needle = b'"' + name.encode() + b'":' + opener
        at = data.find(needle)
        while at >= 0:
            found.append(at)
            at = data.find(needle, at + len(needle))
    return np.unique(np.searchsorted(
        ends, np.asarray(found, np.int64))).tolist() if found else []


def _too_deep(schema: pa.Schema, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether a type of the schema nests structs and lists deeper than
    ``limit`` (looked at without recursion: the nesting may be thousands
    of levels deep)."""
    pending = [(field.type, 1) for field in schema]
    while pending:
        type_, depth = pending.pop()
        if depth > limit:
            return True
        if pa.types.is_struct(type_):
            pending += [(type_.field(i).type, depth + 1)
                        for i in range(type_.num_fields)]
        elif pa.types.is_list(type_) or pa.types.is_large_list(type_) or \
                pa.types.is_fixed_size_list(type_):
            pending.append((type_.value_type, depth + 1))
    return False


def _runs(indices: np.ndarray):
    """Runs of consecutive integers in a sorted array, as (first, last) pairs."""
    if indices.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(indices) != 1)
    firsts = np.concatenate(([indices[0]], indices[breaks + 1]))
    lasts = np.concatenate((indices[breaks], [indices[-1]]))
    return list(zip(firsts.tolist(), lasts.tolist()))


class JsonSegment(typing.NamedTuple):
    """Rows ``lines`` (indices into the block) parsed into ``table``."""
    lines: np.ndarray
    table: pa.Table


def json_block(data: bytes, starts, ends, candidates: np.ndarray,
               schema: pa.Schema, bisect_below: int = 32):
    """Parse the candidate lines with Arrow's JSON reader.

    ``schema`` fixes the types of the fields the caller reads; other fields
    are inferred.  Returns ``(segments, refused)``: tables whose rows align
    with the listed block lines, and the indices of lines the reader refused
    (to be decoded one by one by the reference decoder).
    """
    lines = np.flatnonzero(candidates)
    parse = pajson.ParseOptions(explicit_schema=schema,
                                unexpected_field_behavior='infer')
    # Lines where a field of the schema holds what its type refuses (a
    # number holding text, say), found in the whole blob once the reader
    # names that field: Arrow refuses a whole read at each such line, and
    # the lines before it were read twice at each.  They are left out of
    # the blob, which is read again (once per field at most).
    mistyped, looked_for = [], set()
    while True:
        segments, refused = _json_blob(data, starts, ends, lines, schema,
                                       parse, bisect_below, looked_for)
        if isinstance(segments, JsonSegment):     # left out: read again
            mistyped.append(segments.lines)
            lines = np.setdiff1d(lines, segments.lines, assume_unique=True)
            continue
        break
    refused = [lines[np.asarray(sorted(refused), dtype=np.int64)]] \
        if refused else []
    refused = np.sort(np.concatenate(refused + mistyped)) \
        if refused or mistyped else np.zeros(0, np.int64)
    return segments, refused


def _json_blob(data, starts, ends, lines, schema, parse, bisect_below,
               looked_for):
    """:func:`json_block`'s reading of ``lines`` as one blob: ``(segments,
    refused rows of lines)``, or ``(JsonSegment(lines to leave out, None),
    None)`` when the reader names a mistyped field not in ``looked_for``
    (added) that some lines hold."""
    if lines.size == 0:
        return [], []
    # One blob of the candidate lines, built from a few large slices.
    blob = b'\n'.join(data[starts[a]:ends[b]] for a, b in _runs(lines))
    blob_starts, blob_ends = line_bounds(blob)
    segments, refused = [], []

    class _LeaveOut(Exception):
        pass

    def read(lo, hi):            # rows [lo, hi) of the blob
        while lo < hi:
            chunk = memoryview(blob)[blob_starts[lo]:blob_ends[hi - 1]]
            try:
                table = pajson.read_json(
                    pa.BufferReader(pa.py_buffer(chunk)),
                    read_options=pajson.ReadOptions(
                        use_threads=False, block_size=len(chunk) + 1),
                    parse_options=parse)
            except (pa.ArrowInvalid, UnicodeDecodeError) as e:
                field = _MISTYPED.search(str(e))
                if field and field.group(1) not in looked_for and \
                        field.group(1) in schema.names:
                    looked_for.add(field.group(1))
                    found = _typed_as_text(blob, blob_ends, field.group(1))
                    if found:
                        raise _LeaveOut(lines[np.asarray(found, np.int64)])
                match = _ROW.search(str(e))
                if match and int(match.group(1)) < hi - lo:
                    bad = lo + int(match.group(1))
                    read(lo, bad)
                    refused.append(bad)
                    lo = bad + 1
                    continue
                return bisect(lo, hi)
            if table.num_rows != hi - lo:     # the reader skipped something
                return bisect(lo, hi)
            if _too_deep(table.schema):
                # Arrow infers a struct as deep as a line's nesting, and
                # filtering a table thousands of levels deep overflows the
                # stack (the process dies): such lines go to the reference
                # decoder, found by halving.
                return bisect(lo, hi)
            segments.append(JsonSegment(lines[lo:hi], table))
            return None

    def bisect(lo, hi):          # an error that names no row: halve
        if hi - lo <= bisect_below:
            refused.extend(range(lo, hi))
            return
        mid = (lo + hi) // 2
        read(lo, mid)
        read(mid, hi)

    try:
        read(0, len(blob_starts))
    except _LeaveOut as out:
        return JsonSegment(out.args[0], None), None
    return segments, refused


def decode_one_by_one(decode_each, data: bytes, bounds, lines: list = None):
    """A block's lines (``bounds``: their starts and ends in ``data``) decoded
    one by one by ``decode_each(payloads, kept)``; ``lines`` as in
    :func:`decode_json_lines` (the line of every row, one array)."""
    starts, ends = bounds
    kept = [] if lines is not None else None
    out = decode_each([data[s:e] for s, e in zip(starts, ends)], kept)
    if lines is not None:
        lines.append(np.asarray(kept, np.int64))
    return out


def decode_json_lines(data: bytes, bounds, *, schema: pa.Schema,
                      time_field: str, max_bytes: int, accept, columns_of,
                      decode_each, concat, lines: list = None):
    """The skeleton of every columnar block decoder.

    The JSON-object lines of the block are read by Arrow (``schema`` types the
    fields read); ``accept(table)`` marks the rows the vectorised reading gets
    exactly right; of those, rows whose ``time_field`` Arrow cannot read or
    whose time is out of range are also handed back.  ``columns_of(table,
    event_us)`` turns the accepted rows into the job's columns.  Every other
    line goes, one by one, to ``decode_each(payloads) -> (columns, refused,
    count)`` (the reference decoder).  Returns ``(concat(parts), refused,
    record count)``.  ``lines``: a list to which the block's line index of
    every row of the result is appended, in arrays in row order (each
    ``decode_each(payloads, kept)`` appends to ``kept`` the index of every
    payload that became a row).
    """
    starts, ends = bounds if bounds is not None else line_bounds(data)
    fallback, parts = [], []
    for table, rows, event_us in accepted_rows(data, starts, ends, schema,
                                               time_field, max_bytes, accept,
                                               fallback):
        parts.append(columns_of(table, event_us))
        if lines is not None:
            lines.append(rows)
    others = np.sort(np.concatenate(fallback))
    payloads = [data[a:b] for a, b in zip(starts[others].tolist(),
                                          ends[others].tolist())]
    if lines is None:
        columns, refused_lines, _ = decode_each(payloads)
    else:
        kept = []
        columns, refused_lines, _ = decode_each(payloads, kept)
        lines.append(others[np.asarray(kept, np.int64)])
    parts.append(columns)
    merged = concat(parts)
    return merged, refused_lines, len(merged.event_us)


def block_lines(data: bytes, starts, ends) -> pa.Array:
    """The lines of a block as an Arrow binary array, exactly as ``data
    [starts[i]:ends[i]]`` (lines that hold no b'\\n', each followed by
    one, the last by none, as ``line_bounds`` cuts them): the bytes without
    their newlines (``bytes.replace``, a pass in C) and the offsets from
    numpy, no Python object per line."""
    if len(starts) == 0:
        return pa.array([], pa.binary())
    values = bytes(data).replace(b'\n', b'')
    # line i starts after the i newlines before it
    offsets = np.append(starts - np.arange(len(starts)),
                        ends[-1] - (len(starts) - 1))
    large = len(values) >= 2 ** 31
    return pa.Array.from_buffers(
        pa.large_binary() if large else pa.binary(), len(starts),
        [None, pa.py_buffer(offsets.astype(np.int64 if large else np.int32)),
         pa.py_buffer(values)])


def accepted_rows(data: bytes, starts, ends, schema: pa.Schema,
                  time_field: str, max_bytes: int, accept, fallback: list):
    """The JSON-object lines of a block that the vectorised reading reads
    exactly as the reference decoder (``accept``), with an event time in
    range: yields ``(table, lines, event_us)`` per segment of them (their
    rows, their indices in the block, their event times in int64
    microseconds), and appends to ``fallback`` the indices of every other
    line, for the reference decoder."""
    candidates = json_candidates(data, starts, ends, max_bytes)
    segments, refused = json_block(data, starts, ends, candidates, schema)
    fallback += [np.flatnonzero(~candidates), refused]
    for segment in segments:
        ok = accept(segment.table)
        fallback.append(segment.lines[~ok])
        if not ok.any():
            continue
        table = segment.table.filter(pa.array(ok))
        lines = segment.lines[ok]
        try:
            event_us = table[time_field].cast(
                pa.timestamp('us', tz='UTC')).cast(pa.int64()).to_numpy(
                    zero_copy_only=False)
        except pa.ArrowInvalid:        # a shape the regex let by: 2026-02-30
            fallback.append(lines)
            continue
        inside = ((event_us >= MIN_EVENT_TIME.micros)
                  & (event_us <= MAX_EVENT_TIME.micros))
        fallback.append(lines[~inside])
        if inside.any():
            yield (table.filter(pa.array(inside)), lines[inside],
                   event_us[inside].astype(np.int64))


class JsonEventTimes:
    """``(data, starts, ends) -> (seconds, read)``: the event time of the
    lines of a block (float seconds, as ``float(Timestamp)``) that the
    vectorised JSON reading reads exactly as the reference decoder, by the
    rule the job's block decoder follows (``schema``, ``time_field``,
    ``accept``); NaN and ``read`` False for every other line, which the
    caller reads one by one.  For ``decode.PayloadEventTime``: a source's
    watermark and commit horizon from a block at a fraction of a decode per
    line.  Picklable where ``accept`` is a module-level function."""

    def __init__(self, schema: pa.Schema, time_field: str, accept,
                 max_bytes: int):
        self._schema = schema
        self._time_field = time_field
        self._accept = accept
        self._max_bytes = max_bytes

    def __call__(self, data: bytes, starts, ends):
        seconds = np.full(len(starts), np.nan)
        read = np.zeros(len(starts), bool)
        for _, lines, event_us in accepted_rows(
                data, starts, ends, self._schema, self._time_field,
                self._max_bytes, self._accept, []):
            seconds[lines] = event_us / 1e6
            read[lines] = True
        return seconds, read


def string_codes(array: pa.Array):
    """(int64 code of each value, the value of each code) of an Arrow
    string array (dictionary encoding)."""
    encoded = pc.dictionary_encode(array)
    return (encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64),
            encoded.dictionary.to_pylist())


def group_rows(*keys):
    """Group ids of rows by the combination of key arrays.

    Returns ``(order, bounds, firsts)``: ``order`` sorts the rows by group,
    group ``g`` is ``order[bounds[g]:bounds[g+1]]``, and ``firsts[g]`` is the
    row index of its first member (to read the keys of the group).
    """
    n = len(keys[0])
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(1, np.int64), \
            np.zeros(0, np.int64)
    codes = []
    for key in keys:
        _, inverse = np.unique(np.asarray(key), return_inverse=True)
        codes.append(inverse.astype(np.int64))
    combined = codes[0]
    for code in codes[1:]:
        combined = combined * (int(code.max()) + 1) + code
    order = np.argsort(combined, kind='stable')
    sorted_codes = combined[order]
    breaks = np.flatnonzero(np.diff(sorted_codes)) + 1
    bounds = np.concatenate(([0], breaks, [n])).astype(np.int64)
    return order, bounds, order[bounds[:-1]]


_GLOBAL = (GlobalWindow(),)
_NO_ROWS = np.zeros(0, np.int64)


class PartialsFn(beam.DoFn):
    """Raw payloads or :class:`LineBlock` s -> partial aggregates per (key,
    window), each emitted in its window (tag ``ok``), and dead letters (tag
    ``dead``).

    ``decoder.decode(data, bounds)`` decodes a block of lines and
    ``decoder.decode_each(payloads)`` single payloads, each to ``(columns,
    dead letters and Filtered, record count)``; ``make_partials(columns)``
    yields ``(key, window start us, window end us, latest event us,
    accumulator)`` for the main output, or ``(tag, key, ...)`` for the
    output named ``tag``.  A block
    is decoded when it arrives; single payloads (a stream) are buffered per
    bundle and decoded together when the bundle finishes, so the partials of
    a bundle are what the element-at-a-time path would have combined before
    the shuffle.  ``window_in_key`` emits ``((key, start, end), accumulator)``
    in the global window instead (bounded input; see AggregatePerKey).

    ``carry_raw`` (a stream whose late records are kept): each partial of
    the main output leaves as ``windows.WithRaw(accumulator, lines)``,
    ``lines`` the payloads of the records it covers (an Arrow binary array,
    taken from the block's lines), for the dead letters of a late partial
    (``AggregatePerKey(carries_raw=True)``; the grouping step drops them
    from every partial that is not late).  The decoder then takes a list
    to which it appends the line of every row (``decode(data, bounds,
    lines)``, ``decode_each(payloads, kept)``), and ``make_partials`` has
    ``window`` (the window spec of its main output) and ``row_keys(columns)
    -> (codes, names)``: each row's key as an integer code, and the key of
    each code; the records of a partial are the rows of its key that its
    window holds.

    ``keep_out`` (with ``carry_raw``; fixed windows of the main output):
    the allowed lateness (seconds) of the main output's grouping, where a
    local read registers the records a restart reads again with the
    horizon it resumes (``deadletter.Origin.final_by``).  The origin of
    each row's line is taken from the registry (as
    ``deadletter.BindOrigins`` takes it on the element path), and a row
    whose window the keep-out rule (``aggregate.kept_out``) closes to it
    is left out of the main output's partials, counted
    ``final_replayed``, as ``AggregatePerKey`` keeps a record out on the
    element path; the other outputs (``(tag, ...)``) still take it.
    ``make_partials(columns, main=kept)`` then builds the main output's
    partials of ``kept`` (the other rows) alone.
    """

    def __init__(self, decoder, make_partials, job, max_buffer=20000,
                 window_in_key=False, carry_raw=False, keep_out=None):
        if carry_raw and window_in_key:
            raise ValueError('carry_raw is for windowed (streaming) input')
        if keep_out is not None and not (
                carry_raw and make_partials.window.kind == 'fixed'):
            raise ValueError('keep_out needs carry_raw and fixed windows')
        self._keep_out = keep_out
        self._final_replayed = Metrics.counter(job, 'final_replayed')
        self._carry_raw = carry_raw
        self._window_in_key = window_in_key
        self._decoder = decoder
        self._make_partials = make_partials
        self._max_buffer = max_buffer
        self._job = job
        self._counters = DecodeCounters(job)

    def start_bundle(self):
        self._buffer = []

    def process(self, element, timestamp=beam.DoFn.TimestampParam,
                window=beam.DoFn.WindowParam):
        if isinstance(element, LineBlock):
            if self._carry_raw:
                bounds = line_bounds(element.data)
                columns, dead, count, raw = self._decode_carried(
                    element.data, bounds)
                yield from self._emit(columns, count, raw)
            else:
                columns, dead, count = self._decoder.decode(element.data)
                yield from self._emit(columns, count)
            yield from self._dead_letters(dead, timestamp, window)
            return
        self._buffer.append((element, timestamp, window))
        if len(self._buffer) >= self._max_buffer:
            yield from self._flush()

    def finish_bundle(self):
        yield from self._flush()

    def _flush(self):
        buffered, self._buffer = self._buffer, []
        if not buffered:
            return
        # Payloads that cannot travel in a block (text, or holding a newline)
        # are decoded one by one; the rest as one block.
        blockable = [isinstance(raw, bytes) and b'\n' not in raw
                     for raw, _, _ in buffered]
        singles = [b[0] for b, ok in zip(buffered, blockable) if not ok]
        raws = [b[0] for b, ok in zip(buffered, blockable) if ok]
        dead = []
        if singles:
            raw = None
            if self._carry_raw:
                kept = []
                columns, dead_singles, count = self._decoder.decode_each(
                    singles, kept)
                raw = (pa.array([deadletter.to_bytes(p) for p in singles],
                                pa.binary()), np.asarray(kept, np.int64))
            else:
                columns, dead_singles, count = self._decoder.decode_each(
                    singles)
            dead += dead_singles
            yield from self._emit(columns, count, raw)
        if raws:
            lengths = np.fromiter(map(len, raws), np.int64, len(raws))
            starts = np.concatenate(([0], np.cumsum(lengths + 1)[:-1]))
            data = b'\n'.join(raws)
            if self._carry_raw:
                columns, dead_block, count, raw = self._decode_carried(
                    data, (starts, starts + lengths))
            else:
                columns, dead_block, count = self._decoder.decode(
                    data, (starts, starts + lengths))
                raw = None
            dead += dead_block
            yield from self._emit(columns, count, raw)
        # A dead letter keeps the timestamp and window of its input element.
        where = {}
        for raw, ts, w in buffered:
            where.setdefault(deadletter.to_bytes(raw), (ts, w))
        for letter in dead:
            yield from self._dead_letters(
                [letter], *where.get(getattr(letter, 'raw', None),
                                     buffered[0][1:]))

    def _decode_carried(self, data, bounds):
        """decode() with the payloads of its rows: (columns, dead letters,
        count, (the block's lines, the line of each row))."""
        lines = []
        columns, dead, count = self._decoder.decode(data, bounds, lines)
        of_rows = np.concatenate(lines) if lines else np.zeros(0, np.int64)
        return columns, dead, count, (block_lines(data, *bounds), of_rows)

    def _rows_of_partials(self, columns):
        """(key, window start us) -> the rows of ``columns`` that partial
        covers: the rows of its key in its window."""
        rows, starts = windows.window_starts(self._make_partials.window,
                                             columns.event_us)
        if rows.size == 0:
            return {}
        codes, names = self._make_partials.row_keys(columns)
        order, bounds, firsts = group_rows(codes[rows], starts)
        members = rows[order]
        return {(names[codes[rows[f]]], int(starts[f])):
                members[bounds[g]:bounds[g + 1]]
                for g, f in enumerate(firsts.tolist())}

    def _kept_rows(self, columns, lines, line_of_row):
        """The rows the keep-out rule leaves in the main output's
        partials (a bool mask), or None where it keeps none out; each
        row's origin is taken from the registry."""
        claimed = deadletter.claim_origins(
            lines.take(pa.array(line_of_row)))
        if claimed is None:
            return None
        # (fixed windows: one window per row, in row order)
        _, starts = windows.window_starts(self._make_partials.window,
                                          columns.event_us)
        size = int(round(self._make_partials.window.size * 1e6))
        out = np.zeros(len(line_of_row), bool)
        for row, origin in zip(claimed[0].tolist(), claimed[1]):
            if origin is not None and origin.final_by is not None:
                start = int(starts[row])
                out[row] = aggregate.kept_out(origin, IntervalWindow(
                    Timestamp(micros=start), Timestamp(micros=start + size)),
                    self._keep_out)
        if not out.any():
            return None
        self._final_replayed.inc(int(out.sum()))
        return ~out

    def _emit(self, columns, count, raw=None):
        self._counters.decoded(count)
        covered = None
        items = None
        if raw is not None:
            lines, line_of_row = raw
            kept = self._kept_rows(columns, lines, line_of_row) \
                if self._keep_out is not None else None
            if kept is not None:
                main = columns.take(kept)
                items = self._make_partials(columns, main=main)
                line_of_row = line_of_row[kept]
                covered = self._rows_of_partials(main)
            else:
                covered = self._rows_of_partials(columns)
        for item in items if items is not None else \
                self._make_partials(columns):
            # (tag, key, ...) goes to the output named tag; (key, ...) to main.
            tag, (key, start, end, last_us, accumulator) = \
                (item[0], item[1:]) if len(item) == 6 else (None, item)
            if covered is not None and tag is None:
                rows = covered.get((key, int(start)), _NO_ROWS)
                accumulator = windows.WithRaw(
                    accumulator, lines.take(pa.array(line_of_row[rows])))
            if self._window_in_key:     # bounded input: see AggregatePerKey
                value = WindowedValue(((key, start, end), accumulator),
                                      Timestamp(micros=last_us), _GLOBAL)
            else:
                value = WindowedValue(
                    (key, accumulator), Timestamp(micros=last_us),
                    (IntervalWindow(Timestamp(micros=start),
                                    Timestamp(micros=end)),))
            yield value if tag is None else beam.pvalue.TaggedOutput(tag, value)

    def _dead_letters(self, letters, timestamp, window):
        for letter in letters:
            if isinstance(letter, Filtered):        # a named filter
                self._counters.filtered(letter.name)
                continue
            self._counters.dead()
            yield beam.pvalue.TaggedOutput(
                deadletter.DEAD, WindowedValue(letter, timestamp, (window,)))
