"""A vectorised reader of canonical CMCD JSON lines (a block at a time).

The reference decoder (:func:`transforms.video.decoders.decode_json` through
:func:`transforms.decode.decode_payload`) reads one line at a time in
Python.  This reader reads a whole block with Arrow's string kernels (RE2),
but it only *accepts* a line it can prove it reads exactly as the reference
does; every other line is handed back, by index, to the reference decoder.

A line is accepted when all of this holds (each is checked on whole columns):

* it is at most ``max_bytes`` long and is, byte for byte, a flat JSON object
  ``{"k":v,"k":v,...}`` without blanks whose keys are among :data:`KEYS`
  and whose values are non-negative integers of at most 15 digits (no sign,
  no leading zero, no fraction or exponent), ``true``, strings of the
  characters ``A-Z a-z 0-9 . _ ~ / -`` (so no escapes, no quote, no comma or
  colon inside), or lists of such strings (:data:`LINE`).  ASCII only, so
  valid UTF-8 and as many characters as bytes;
* its keys, in their order (the *shape* of the line), hold no key twice and
  include ``sid`` and ``ts``;
* it matches the whole-line pattern of its shape (:func:`shape_pattern`),
  which gives every key its CMCD type: :data:`INT_KEYS` and
  :data:`ILIST_KEYS` integers, :data:`BOOL_KEYS` ``true``, the tokens one of
  their reserved values, ``sid`` 1..64 and ``cid`` 0..64 characters, ``cdn``
  a string, ``ec`` a string or a list of strings;
* ``bl`` (if sent) is a multiple of 100, and ``ts`` as an event time lies
  within the range :func:`~transforms.decode.decode_payload` accepts.

The lengths (integers of at most 15 digits, ``sid`` and ``cid`` of at most
64 characters) are checked on the columns of the values cut, not in the
shape patterns: RE2 runs a pattern with counted repetitions (``{0,14}``,
``{1,64}``) at about half the speed of the same pattern with ``*`` and
``+``, and a line of a shape is matched by one pattern as either.

Shapes are taken from the first line left, one pattern at a time (at most
:data:`MAX_SHAPES` per block; a producer writes few), each run over the
lines' bytes as read (a shape pattern is :data:`LINE` with its keys fixed,
so no separate whole-line pass is needed).  The values of matched
lines are then cut at ``:`` (no key or value holds one).

For such a line the reference decoder's ``orjson`` gives exactly these
integers and strings, every CMCD check passes, and the report's fields are
the values as written; so the accepted lines become the same session points
(:func:`transforms.video.sessions.point_of`) as their reports would.
"""
import collections
import re
import typing

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms import deadletter
from transforms.columnar import line_bounds
from transforms.decode import (MAX_EVENT_TIME, MIN_EVENT_TIME, Filtered,
                               decode_payload)
from transforms.video import cmcd
from transforms.video.sessions import point_of

_CHAR = r'[A-Za-z0-9._~/\-]'
_INT = r'(?:0|[1-9][0-9]{0,14})'
_STR = rf'"{_CHAR}*"'
_LIST = rf'\[(?:{_STR}(?:,{_STR})*)?\]'
_VALUE = rf'(?:{_INT}|{_STR}|{_LIST}|true)'

# Integers >= 0 (CMCD 'int'); 'ilist' keys read here as a plain integer
# ('bl' a multiple of 100); booleans read only as true (false is refused).
INT_KEYS = ('ts', 'sn', 'msd', 'v', 'd', 'dl', 'rtp', 'pt', 'ttfb', 'ttfbb',
            'ttlb', 'rc', 'ltc', 'df', 'dfa')
ILIST_KEYS = ('br', 'bl', 'bsd', 'bsa', 'bsda', 'tb', 'ab', 'tpb', 'lb',
              'tab', 'lab', 'pb', 'tbl')
BOOL_KEYS = ('bs', 'su', 'bg', 'nr')
TOKEN_KEYS = {'e': cmcd.EVENT_TYPES, 'sta': cmcd.PLAYER_STATES,
              'st': cmcd.STREAM_TYPES, 'sf': cmcd.STREAMING_FORMATS}
STRING_KEYS = {'sid': 64, 'cid': 64, 'cdn': None}
LIST_KEYS = ('ec',)
KEYS = INT_KEYS + ILIST_KEYS + BOOL_KEYS + tuple(TOKEN_KEYS) \
    + tuple(STRING_KEYS) + LIST_KEYS
# Distinct shapes (key orders) tried per block before the rest goes to the
# reference decoder.
MAX_SHAPES = 32
_KEY_OF = re.compile(r'[{,]"([^"]*)":')
_KNOWN = frozenset(KEYS)

_MEMBER = '"(?:' + '|'.join(sorted(KEYS)) + rf')":{_VALUE}'
# A line as cut by LineBlock, with the b'\n' that ends it (not the last).
LINE = rf'\A\{{{_MEMBER}(?:,{_MEMBER})*\}}\n?\z'


class Columns(typing.NamedTuple):
    """The accepted lines, as columns (``lines``: their indices in the
    block; strings as Arrow arrays, '' where absent)."""
    lines: np.ndarray
    ts: np.ndarray             # int64 ms
    sn: np.ndarray             # int64, -1 if absent
    br: np.ndarray             # int64 video bitrate, -1 if absent
    msd: np.ndarray            # int64, -1 if absent
    err: np.ndarray            # bool: carries ec
    sid: pa.Array
    sta: pa.Array              # '' if absent
    cid: pa.Array
    cdn: pa.Array
    st: pa.Array
    sf: pa.Array

    def take(self, rows) -> 'Columns':
        index = pa.array(rows)
        return Columns(*(c[rows] if isinstance(c, np.ndarray)
                         else c.take(index) for c in self))

    @classmethod
    def concat(cls, parts) -> 'Columns':
        if len(parts) == 1:
            return parts[0]
        return cls(*(np.concatenate(cs) if isinstance(cs[0], np.ndarray)
                     else pa.concat_arrays(cs)
                     for cs in zip(*parts)))


def lines_array(data: bytes, starts, ends) -> pa.Array:
    """The lines of ``data`` (cut by :func:`transforms.columnar.line_bounds`)
    as one Arrow binary array without a copy: line i with its b'\\n'."""
    offsets = np.append(starts, len(data)).astype(np.int64)
    return pa.Array.from_buffers(
        pa.large_binary(), len(starts),
        [None, pa.py_buffer(offsets), pa.py_buffer(data)])


def _np(array) -> np.ndarray:
    return np.asarray(pc.fill_null(array, False).to_numpy(
        zero_copy_only=False), bool)


# In the shape patterns: the lengths are checked on the cut values
# (:data:`MAX_DIGITS`, :data:`STRING_KEYS`), see the module's docstring.
_ANY_INT = r'(?:0|[1-9][0-9]*)'
MAX_DIGITS = 15


def _value_pattern(key) -> str:
    """The value of ``key`` in the canonical form, exactly when CMCD allows
    it but for its length (a named group holds the value, without quotes)."""
    if key in INT_KEYS or key in ILIST_KEYS:
        return f'(?P<{key}>{_ANY_INT})'
    if key in TOKEN_KEYS:
        return f'"(?P<{key}>' + '|'.join(TOKEN_KEYS[key]) + ')"'
    if key in STRING_KEYS:
        low = '+' if key == 'sid' else '*'  # an empty sid is no session
        return f'"(?P<{key}>{_CHAR}{low})"'
    if key in BOOL_KEYS:
        return 'true'
    return f'(?:{_STR}|{_LIST})'             # ec: its presence is read


def shape_pattern(keys) -> str:
    """The whole line with these keys in this order, each with its CMCD
    type."""
    return (r'\A\{' + ','.join(f'"{k}":{_value_pattern(k)}' for k in keys)
            + r'\}\n?\z')


def _ints(values) -> np.ndarray:
    """Digit strings (null: absent) -> int64, -1 where null."""
    return pc.fill_null(pc.cast(values, pa.int64()), -1).to_numpy(
        zero_copy_only=False).astype(np.int64)



def _shape_of(line: bytes):
    """A line's keys in order, if they can be a shape read here (no key
    twice, ``sid`` and ``ts`` among them, every key in :data:`KEYS`), else
    None."""
    keys = tuple(_KEY_OF.findall(line.decode('utf-8', 'replace')))
    if len(set(keys)) != len(keys) or 'sid' not in keys \
            or 'ts' not in keys or not _KNOWN.issuperset(keys):
        return None
    return keys


def decode_block(data: bytes, starts, ends, max_bytes: int, shapes=None):
    """The canonical lines of a block -> (:class:`Columns` or None, indices
    of the other lines, for the reference decoder).

    ``shapes`` (a ``collections.Counter`` of key orders, optional): the
    shapes of earlier blocks, tried first, the most frequent first (each
    pass matches the lines no earlier shape took, so the fewer lines the
    later passes see, the better); updated with this block's."""
    n = len(starts)
    starts, ends = np.asarray(starts), np.asarray(ends)
    lines = lines_array(data, starts, ends)
    # (No whole-line pass first: a line a shape pattern matches is a line
    # LINE matches, and the shape passes read the bytes as they are; only
    # lines that open as a JSON object are looked at.)
    index = np.flatnonzero(((ends - starts) <= max_bytes) & _np(
        pc.starts_with(lines, '{"')))
    if index.size == 0:
        return None, np.arange(n, dtype=np.int64)
    if index.size < n:
        lines = lines.take(pa.array(index))
    remaining = np.arange(len(index))
    parts = []
    known = [k for k, _ in shapes.most_common(MAX_SHAPES // 2)] \
        if shapes else []
    tried = set()
    passes = 0
    while remaining.size and passes < MAX_SHAPES:
        if known:
            keys = known.pop(0)
        else:
            # The shape of the first line left that has a new one: its
            # keys in order.  (Lines passed over go to the reference: a
            # shape tried, so a value of the wrong type; or no shape read
            # here.  They cost no pass, so a block that mixes forms still
            # gets its JSON lines read here.)
            first = 0
            while first < remaining.size:
                keys = _shape_of(lines[int(remaining[first])].as_py())
                if keys is not None and keys not in tried:
                    break
                first += 1
            remaining = remaining[first:]
            if not remaining.size:
                break
        passes += 1
        tried.add(keys)
        subset = lines if remaining.size == len(lines) else \
            lines.take(pa.array(remaining))
        matched = _np(pc.match_substring_regex(subset, shape_pattern(keys)))
        if not matched.any():
            continue
        rows = remaining[matched]
        remaining = remaining[~matched]
        if shapes is not None:
            shapes[keys] += rows.size
        # (ASCII only, as the shape requires: a string view is safe.)
        parts.append(_columns(index[rows], list(keys), pc.cast(
            subset.filter(pa.array(matched)), pa.large_string())))
    if shapes is not None and len(shapes) > 4 * MAX_SHAPES:
        kept = shapes.most_common(MAX_SHAPES)
        shapes.clear()
        shapes.update(dict(kept))
    parts = [p for p in parts if p.lines.size]
    if not parts:
        return None, np.arange(n, dtype=np.int64)
    columns = Columns.concat(parts)
    fallback = np.setdiff1d(np.arange(n, dtype=np.int64), columns.lines,
                            assume_unique=True)
    return columns, fallback


def _columns(lines, keys, text) -> Columns:
    """The lines of one shape (each matched :func:`shape_pattern`) ->
    Columns; rows out of the event time range, with a ``bl`` not a
    multiple of 100, or with a value longer than its limit, left out.

    No value or key holds ':', so each line holds exactly one ``:`` per
    key, found in one pass over the bytes: value i runs from after colon
    i to before the next key's ``,"k"`` (the last to before ``}``).
    Integers are read from their digits and strings gathered from their
    bytes with numpy, without a string kernel per key."""
    size = len(lines)
    width = len(keys)
    offsets = np.frombuffer(text.buffers()[1], np.int64)[
        text.offset:text.offset + size + 1]
    data = np.frombuffer(text.buffers()[2], np.uint8)
    lo, hi = int(offsets[0]), int(offsets[-1])
    colons = (np.flatnonzero(data[lo:hi] == ord(':')) + lo).reshape(
        size, width)
    # The closing brace of each line (before its b'\n', if any).
    close = offsets[1:] - 1
    close = close - (data[close] == ord('\n'))
    position = {k: i for i, k in enumerate(keys)}

    def bounds(key):
        i = position[key]
        end = colons[:, i + 1] - (len(keys[i + 1]) + 3) \
            if i + 1 < width else close
        return colons[:, i] + 1, end

    # What the shape pattern leaves unchecked: the values' lengths.
    good = np.ones(size, bool)
    for key in keys:
        limit = MAX_DIGITS if key in INT_KEYS or key in ILIST_KEYS \
            else STRING_KEYS.get(key) and STRING_KEYS[key] + 2  # quotes
        if limit:
            begin, end = bounds(key)
            good &= (end - begin) <= limit

    def ints(key):
        if key not in position:
            return np.full(size, -1, np.int64)
        begin, end = bounds(key)
        # 1 to 15 digits (a longer value's row is left out, read as 0)
        length = np.where(good, end - begin, 0)
        value = np.zeros(size, np.int64)
        for d in range(int(length.max()) if size else 0):
            has = d < length
            digit = data[np.where(has, begin + d, 0)].astype(np.int64) - 48
            value = np.where(has, value * 10 + digit, value)
        return value

    def texts(key):
        if key not in position:
            return pa.repeat(pa.scalar('', pa.string()), size)
        begin, end = bounds(key)
        begin, length = begin + 1, end - begin - 2   # without the quotes
        out = np.zeros(size + 1, np.int64)
        np.cumsum(length, out=out[1:])
        gather = np.repeat(begin - out[:-1], length) + np.arange(out[-1])
        return pa.Array.from_buffers(
            pa.large_string(), size,
            [None, pa.py_buffer(out), pa.py_buffer(data[gather])]
        ).cast(pa.string())

    ts, bl = ints('ts'), ints('bl')
    good &= (ts * 1000 >= MIN_EVENT_TIME.micros) \
        & (ts * 1000 <= MAX_EVENT_TIME.micros) \
        & ((bl == -1) | (bl % 100 == 0))
    columns = Columns(
        lines=lines, ts=ts, sn=ints('sn'), br=ints('br'), msd=ints('msd'),
        err=np.full(size, 'ec' in keys), sid=texts('sid'), sta=texts('sta'),
        cid=texts('cid'), cdn=texts('cdn'), st=texts('st'), sf=texts('sf'))
    return columns if good.all() else columns.take(np.flatnonzero(good))


# The columns of a block's decoded reports: the session id and the fields
# of :func:`~transforms.video.sessions.point_of`, in its order.
POINT_SCHEMA = pa.schema([
    ('sid', pa.string()), ('ts', pa.int64()), ('sn', pa.int64()),
    ('sta', pa.string()), ('br', pa.int64()), ('msd', pa.int64()),
    ('err', pa.bool_()), ('cid', pa.string()), ('cdn', pa.string()),
    ('st', pa.string()), ('sf', pa.string())])


class Points:
    """Decoded reports of a block as Arrow columns (:data:`POINT_SCHEMA`):
    the session id and the fields of
    :func:`~transforms.video.sessions.point_of`, one row per report."""
    __slots__ = tuple(POINT_SCHEMA.names)

    def __init__(self, columns: typing.Optional[Columns] = None, rows=()):
        """The rows of ``columns`` (vectorised), then ``rows`` ((sid,
        point) pairs)."""
        rows = list(rows)
        extra = [[sid for sid, _ in rows]] + (
            list(zip(*(p for _, p in rows))) if rows else [()] * 10)
        for field, more in zip(POINT_SCHEMA, extra):
            arrays = []
            if columns is not None:
                base = getattr(columns, field.name)
                arrays.append(pa.array(base, field.type)
                              if isinstance(base, np.ndarray) else base)
            if more:
                arrays.append(pa.array(list(more), field.type))
            setattr(self, field.name,
                    arrays[0] if len(arrays) == 1 else
                    pa.concat_arrays(arrays) if arrays else
                    pa.array([], field.type))

    def __len__(self):
        return len(self.sid)

    def table(self) -> pa.Table:
        return pa.Table.from_arrays([getattr(self, n) for n in self.__slots__],
                                    schema=POINT_SCHEMA)

    def rows(self):
        """(sid, point) per report."""
        lists = [getattr(self, n).to_pylist() for n in self.__slots__]
        return zip(lists[0], zip(*lists[1:]))


class BlockDecoder:
    """A block of lines -> (:class:`Points`, refused, count): canonical JSON
    lines by :func:`decode_block`, every other line by the reference decoder
    (:func:`~transforms.decode.decode_payload`); ``refused`` holds the dead
    letters and :class:`~transforms.decode.Filtered` of the lines refused,
    in line order."""

    def __init__(self, decoder, stage, source='', max_bytes=1 << 20,
                 json_fast=True):
        self.decoder = decoder
        self.stage = stage
        self.source = source
        self.max_bytes = max_bytes
        self.json_fast = json_fast
        # The shapes (key orders) of the blocks read so far, by count.
        self._shapes = collections.Counter()

    def _each(self, payloads):
        rows, refused = [], []
        for raw in payloads:
            result = decode_payload(raw, self.decoder, self.stage,
                                    self.source, self.max_bytes)
            if isinstance(result, (Filtered, deadletter.DeadLetter)):
                refused.append(result)
            else:
                rows.append((result.session_id, point_of(result)))
        return rows, refused

    def decode_each(self, payloads):
        rows, refused = self._each(payloads)
        return Points(rows=rows), refused, len(rows)

    def decode(self, data: bytes, bounds=None):
        starts, ends = bounds if bounds is not None else line_bounds(data)
        columns, others = None, np.arange(len(starts))
        if self.json_fast and len(starts):
            columns, others = decode_block(data, starts, ends,
                                           self.max_bytes, self._shapes)
        rows, refused = self._each(
            [data[starts[i]:ends[i]] for i in others.tolist()])
        points = Points(columns, rows)
        return points, refused, len(points)


class EventTimes:
    """``(data, starts, ends) -> (seconds, read)``: the event time of the
    lines of a block that :func:`decode_block` reads (float seconds, as
    ``float(Timestamp)``), NaN and ``read`` False for the others (see
    ``decode.PayloadEventTime``)."""

    def __init__(self, max_bytes=1 << 20):
        self._max_bytes = max_bytes

    def __call__(self, data: bytes, starts, ends):
        seconds = np.full(len(starts), np.nan)
        read = np.zeros(len(starts), bool)
        if len(starts):
            columns, _ = decode_block(data, starts, ends, self._max_bytes)
            if columns is not None:
                seconds[columns.lines] = columns.ts * 1000 / 1e6
                read[columns.lines] = True
        return seconds, read
