"""The block path of the video QoE job (bounded replays).

Python Beam pays its per-element cost at every step, so what crosses a
shuffle here is a few large elements.  A block of lines
(:class:`~transforms.columnar.LineBlock`) is decoded at once into the
points of its reports as Arrow columns
(:data:`~transforms.video.cmcd_columnar.POINT_SCHEMA`) and leaves as one
*fragment* per shard of session ids (:func:`shards_of`).  Canonical CMCD
JSON lines are read a block at a time by :mod:`transforms.video.
cmcd_columnar`, which accepts only lines it reads exactly as the reference
decoder does; every other line goes through the reference decoder
(:func:`transforms.decode.decode_payload`), so each ends as the same report,
dead letter or named filter as on the element path.

Fragments are grouped by shard, so a shard holds every report of its
session ids: sorted in point order and split where the session gap
separates them, they give each session and its window ``[first ts, last ts
+ gap)`` exactly as Beam's session windows merge them in a bounded run.
The sessions' metrics (:class:`SessionColumns`) and their rollup
contributions (:func:`add_rollup_partials`) are computed on columns; the
sessions leave as Arrow tables of rows, the rollup partials per hour of
windows to :class:`RollupRowsFn`, which merges them into Arrow tables of
rows (one ON_TIME pane per window, as a bounded run has).  A stream (or a
source without blocks) runs the element path.
"""
import collections
import pickle
import typing
import zlib

import apache_beam as beam
import datasketches
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from transforms import deadletter, memory, windows
from transforms.columnar import LineBlock
from transforms.decode import DecodeCounters, Filtered
from transforms.video import cmcd_columnar
from transforms.combiners import DEFAULT_K as QUANTILES_K
from transforms.video.rollups import HLL_LG_K, UNKNOWN, AlertInput, Rollup
from transforms.schemas import arrow_schema
from transforms.video.sessions import Session

# Session ids are spread over this many shards: what crosses the shuffle is
# one columnar fragment per (block, shard), not one element per session id.
SHARDS = 16
# The point columns in the order of a point tuple (sid first): sorting rows
# by them is sorting (sid, point) tuples.
SORT_KEYS = [(name, 'ascending') for name in cmcd_columnar.POINT_SCHEMA.names]


def dumps(value) -> bytes:
    """``value`` pickled, for an element that crosses a shuffle as bytes.

    Beam's coder of an untyped element pickles it to write it and, for
    the few large elements a replay has, again to estimate its size; bytes
    it copies and counts."""
    return pickle.dumps(value, pickle.HIGHEST_PROTOCOL)


def packed(value) -> bytes:
    """``value`` pickled and compressed with LZ4 (:func:`unpacked`), for
    the rollup partials, which a bounded runner holds until their hours'
    grouping: their session ids and (group, id) pairs compress to about
    a third."""
    data = pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
    return len(data).to_bytes(8, 'little') + pa.compress(
        data, codec='lz4', asbytes=True)


def unpacked(data: bytes):
    """The value :func:`packed` packed."""
    return pickle.loads(pa.decompress(
        data[8:], int.from_bytes(data[:8], 'little'), codec='lz4',
        asbytes=True))


# Fragments cross the shuffle as Arrow IPC streams compressed with LZ4: a
# bounded runner holds every fragment of a replay between the two stages
# (about 98 bytes a report pickled, 43 compressed; LZ4 costs about 0.1 CPU
# second per million reports each way).
_IPC_OPTIONS = pa.ipc.IpcWriteOptions(compression='lz4')


def table_bytes(table: pa.Table) -> bytes:
    """``table`` as a compressed Arrow IPC stream (:func:`table_of`)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema, options=_IPC_OPTIONS) as out:
        out.write_table(table)
    return sink.getvalue().to_pybytes()


def table_of(data: bytes) -> pa.Table:
    """The table :func:`table_bytes` wrote."""
    return pa.ipc.open_stream(data).read_all()


def shards_of(sid: pa.Array, shards: int) -> np.ndarray:
    """The shard of each session id (CRC-32 of its UTF-8 bytes, so the same
    on every worker and run)."""
    encoded = pc.dictionary_encode(sid)
    codes = np.fromiter(
        (zlib.crc32(s.encode()) % shards
         for s in encoded.dictionary.to_pylist()), np.int64,
        len(encoded.dictionary))
    return codes[encoded.indices.to_numpy(zero_copy_only=False)]


class BlockFragmentsFn(beam.DoFn):
    """LineBlock s (or single payloads) -> (shard, fragment): the block's
    decoded reports of the session ids of a shard as one Arrow table
    (:data:`~transforms.video.cmcd_columnar.POINT_SCHEMA`), as compressed
    bytes (:func:`table_bytes`); dead letters to ``dead``."""

    def __init__(self, decoder, stage, job, source='', max_bytes=1 << 20,
                 json_fast=False, shards=SHARDS):
        # Canonical CMCD JSON lines are read a block at a time, the rest by
        # the reference decoder, one by one (json_fast: the format allows
        # JSON lines).
        self._blocks = cmcd_columnar.BlockDecoder(
            decoder, stage, source, max_bytes, json_fast)
        self._counters = DecodeCounters(job)
        self._shards = shards

    def process(self, element):
        if isinstance(element, LineBlock):
            points, refused, count = self._blocks.decode(element.data)
        else:
            points, refused, count = self._blocks.decode_each([element])
        for result in refused:
            if isinstance(result, Filtered):
                self._counters.filtered(result.name)
            else:
                self._counters.dead()
                yield beam.pvalue.TaggedOutput(deadletter.DEAD, result)
        self._counters.decoded(count)
        if not len(points):
            return
        table = points.table()
        shard = shards_of(points.sid, self._shards)
        order = np.argsort(shard, kind='stable')
        shard = shard[order]
        bounds = np.flatnonzero(np.diff(shard)) + 1
        # (take, not slice: a pickled slice carries its whole buffers.)
        for lo, hi in zip(np.append(0, bounds).tolist(),
                          np.append(bounds, shard.size).tolist()):
            yield int(shard[lo]), table_bytes(
                table.take(pa.array(order[lo:hi])))


def sort_points(table: pa.Table) -> pa.Table:
    """``table`` (:data:`~transforms.video.cmcd_columnar.POINT_SCHEMA`)
    sorted by :data:`SORT_KEYS`.

    The session id and ``ts`` are sorted as one int64 (the rank of the id
    among the distinct ids, then ``ts``, when both fit in 62 bits), which
    Arrow sorts much faster than a string key followed by another."""
    n = table.num_rows
    if n == 0:
        return table
    ts = _np(table['ts'])
    low = int(ts.min())
    ts_bits = (int(ts.max()) - low).bit_length()
    encoded = pc.dictionary_encode(table['sid'].combine_chunks())
    ids = len(encoded.dictionary)
    if ids.bit_length() + ts_bits > 62:
        return table.take(pc.sort_indices(table, sort_keys=SORT_KEYS))
    rank = _np(pc.rank(encoded.dictionary, sort_keys='ascending',
                       tiebreaker='first')).astype(np.int64)
    key = (rank[_np(encoded.indices)] << ts_bits) | (ts - low)
    rest = [name for name, _ in SORT_KEYS[2:]]     # (after sid and ts)
    keyed = pa.table([pa.array(key)] + [table[name] for name in rest],
                     names=['key'] + rest)
    return table.take(pc.sort_indices(
        keyed, sort_keys=[('key', 'ascending')] + SORT_KEYS[2:]))


def _np(array) -> np.ndarray:
    return array.to_numpy(zero_copy_only=False)


def _first_of_each(session, rows):
    """Of ``rows`` (ascending, ``session`` ascending along them), the first
    of each session."""
    if rows.size == 0:
        return rows
    keep = np.ones(rows.size, bool)
    keep[1:] = session[rows[1:]] != session[rows[:-1]]
    return rows[keep]


def _sums(index, values, m) -> np.ndarray:
    """Exact int64 sums of ``values`` per ``index`` in range(m)."""
    out = np.zeros(m, np.int64)
    np.add.at(out, index, values)
    return out


class SessionColumns:
    """Sorted points (a table sorted by :data:`SORT_KEYS`: a session id's
    reports together, in point order) -> sessions and their metrics as
    columns, computed exactly as :func:`~transforms.video.sessions.metrics`
    walks each session's points (docs/video_qoe.md defines them)."""

    def __init__(self, table: pa.Table, gap_ms: int):
        n = self.n = table.num_rows
        self.gap_ms = gap_ms
        self.sid = sid = table['sid'].combine_chunks()
        self.ts = ts = _np(table['ts'])
        sta = table['sta'].combine_chunks()
        self.br = br = _np(table['br'])
        self.msd = msd = _np(table['msd'])
        self.err = _np(table['err']).astype(bool)
        self.text = {name: table[name].combine_chunks()
                     for name in ('cid', 'cdn', 'st', 'sf')}
        # Session ids and sessions (a new id, or the gap since the last).
        new_sid = np.ones(n, bool)
        if n > 1:
            new_sid[1:] = _np(pc.not_equal(sid.slice(1), sid.slice(0, n - 1)))
        self.sid_code = np.cumsum(new_sid) - 1
        self.sid_array = sid.filter(pa.array(new_sid))
        new = new_sid.copy()
        new[1:] |= np.diff(ts) >= gap_ms
        self.session = session = np.cumsum(new) - 1
        m = self.m = int(session[-1]) + 1 if n else 0
        self.firsts = firsts = np.flatnonzero(new)
        self.lasts = np.append(firsts[1:] - 1, n - 1) if n else firsts
        self.state = {code: _np(pc.equal(sta, code)).astype(bool)
                      for code in ('p', 'r', 'f')}
        is_p, is_r, is_f = (self.state[c] for c in 'prf')
        self.played = np.bincount(session, is_p, m) > 0
        self.failed = np.bincount(session, is_f, m) > 0
        # The timeline: state reports, each until the next of its session.
        self.state_rows = rows = np.flatnonzero(
            _np(pc.not_equal(sta, '')).astype(bool))
        prev, cur = rows[:-1], rows[1:]
        same = session[prev] == session[cur]
        self.prev, self.cur = prev[same], cur[same]
        self.duration = ts[self.cur] - ts[self.prev]
        # The video br in force at each row: the last reported at or before
        # it in its session (-1: none yet).
        last = np.where(br >= 0, np.arange(n), -1)
        np.maximum.accumulate(last, out=last)
        self.in_force = np.where(
            (last >= 0) & (session[np.maximum(last, 0)] == session),
            br[np.maximum(last, 0)], -1)
        self.first_msd = _first_of_each(session, np.flatnonzero(msd >= 0))

    @property
    def sids(self) -> list:
        """The session ids, in order."""
        return self.sid_array.to_pylist()

    def table(self) -> pa.Table:
        """The ``sessions`` rows as an Arrow table (one ON_TIME pane per
        session window)."""
        m, session = self.m, self.session
        is_r = self.state['r']
        rows = self.state_rows
        s_prev_r = np.zeros(rows.size, bool)
        if rows.size > 1:
            s_prev_r[1:] = (session[rows[1:]] == session[rows[:-1]]) \
                & is_r[rows[:-1]]
        entries = is_r[rows] & ~s_prev_r
        rebuffer_count = np.bincount(session[rows], entries, m)
        prev = self.prev
        d_session = session[prev]
        was_r, was_p = is_r[prev], self.state['p'][prev]
        rebuffer = _sums(d_session, np.where(was_r, self.duration, 0), m)
        playing = _sums(d_session, np.where(was_p, self.duration, 0), m)
        br = self.in_force[prev]
        weighs = was_p & (br >= 0)
        weighted = _sums(d_session, np.where(weighs, br * self.duration, 0),
                         m)
        weighted_ms = _sums(d_session, np.where(weighs, self.duration, 0), m)
        b_rows = np.flatnonzero(self.br >= 0)
        change = np.zeros(b_rows.size, bool)
        if b_rows.size > 1:
            change[1:] = (session[b_rows[1:]] == session[b_rows[:-1]]) \
                & (self.br[b_rows[1:]] != self.br[b_rows[:-1]])
        switches = np.bincount(session[b_rows], change, m)
        start = np.full(m, -1, np.int64)
        start[session[self.first_msd]] = self.msd[self.first_msd]
        total = rebuffer + playing
        with np.errstate(invalid='ignore', divide='ignore'):
            ratio = rebuffer / total
            avg = weighted / weighted_ms
        firsts, lasts = self.firsts, self.lasts
        first_ms, last_ms = self.ts[firsts], self.ts[lasts]
        columns = {
            'session_id': self.sid.take(pa.array(firsts)),
            'session_start': first_ms * 1000, 'session_end': last_ms * 1000,
            'report_count': np.diff(np.append(firsts, self.n)),
            'video_start_time_ms': pa.array(start, mask=start < 0),
            'rebuffer_count': rebuffer_count.astype(np.int64),
            'rebuffer_ms': rebuffer, 'playing_ms': playing,
            'rebuffering_ratio': pa.array(ratio, mask=total <= 0),
            'error_count': np.bincount(session, self.err, m).astype(np.int64),
            'failed': self.failed,
            'exit_before_video_start': ~self.played & ~self.failed,
            'bitrate_switches': switches.astype(np.int64),
            'avg_bitrate_kbps': pa.array(avg, mask=weighted_ms <= 0),
            'window_start': first_ms * 1000,
            'window_end': (last_ms + self.gap_ms) * 1000,
            'pane_timing': pa.repeat(pa.scalar('ON_TIME', pa.string()), m),
            'pane_index': np.zeros(m, np.int64),
        }
        for field, name in (('content_id', 'cid'), ('cdn', 'cdn'),
                            ('stream_type', 'st'),
                            ('streaming_format', 'sf')):
            text = self.text[name]
            rows = _first_of_each(session, np.flatnonzero(
                _np(pc.not_equal(text, '')).astype(bool)))
            index = np.full(m, -1, np.int64)
            index[session[rows]] = rows
            columns[field] = text.take(pa.array(index, mask=index < 0))
        schema = arrow_schema(Session)
        return pa.Table.from_arrays(
            [pa.array(columns[f.name], f.type)
             if isinstance(columns[f.name], np.ndarray)
             else columns[f.name].cast(f.type) for f in schema],
            schema=schema)


class SessionsAndRollupsFn(beam.DoFn):
    """(shard, fragments as bytes) -> ``sessions`` rows (main output, one
    ON_TIME pane per session window, accounted as ``AggregatePerKey``
    accounts a bounded window) and rollup partials (tag ``rollups``: (hour,
    the :class:`RollupPartials` of the windows starting in that hour,
    :func:`packed`)), in the global window.

    A shard's fragments hold every report of its session ids: sorted, they
    are split into sessions where the gap separates them and both tables
    are computed on columns.  Shards are buffered (up to ``max_buffer``
    points; a shard of more is flushed in pieces of whole session ids) and
    computed together; the rollup partials of ``MERGE_EVERY`` flushes are
    merged per (dimension key, rollup window) and leave then (and when the
    bundle ends).

    Memory: a flush needs about 650 bytes a point (the sorted points, the
    sessions' columns, the rollup contributions), so ``max_buffer`` bounds
    it; the runner keeps the partials sent (a (group, session id) pair is 8
    bytes) and the sink the sessions tables."""
    ROLLUPS = 'rollups'
    MERGE_EVERY = 4
    # Free C heap pages are returned after a flush once this many bytes of
    # fragments were read since the last time.
    TRIM_BYTES = 32 << 20

    def __init__(self, gap_seconds, rollup_window, job, max_buffer=125_000):
        self._gap_ms = int(round(gap_seconds * 1000))
        self._rollup_window = rollup_window
        self._max_buffer = max_buffer
        self._job = job

    def setup(self):
        self._assigned = Metrics.counter(self._job, 'assigned')
        self._aggregated = Metrics.counter(self._job, 'aggregated')
        self._on_time = Metrics.counter(self._job, 'panes.ON_TIME')

    def start_bundle(self):
        self._buffer, self._buffered, self._partials = [], 0, []
        self._read = 0

    def process(self, kv):
        _, fragments = kv
        self._read += sum(map(len, fragments))
        table = pa.concat_tables([table_of(f) for f in fragments])
        if table.num_rows > self._max_buffer:
            # A shard larger than a flush (a long replay's shard holds
            # hundreds of thousands of points): sorted once and flushed in
            # pieces of whole session ids, each at most max_buffer points
            # (but one id's points), so that a flush's memory stays bounded.
            yield from self._flush()
            table = sort_points(table)
            for lo, hi in _pieces(table['sid'], self._max_buffer):
                yield from self._flush(table.slice(lo, hi - lo))
            return
        self._buffer.append(table)
        self._buffered += table.num_rows
        if self._buffered >= self._max_buffer:
            yield from self._flush()

    def finish_bundle(self):
        for table in self._flush():
            yield WindowedValue(table, _MAX_TIMESTAMP, _GLOBAL)
        yield from self._send_partials()

    def _send_partials(self):
        """The rollup partials kept since the last sent, merged, one element
        per hour of windows (an hour's partials of every bundle and of
        every MERGE_EVERY flushes meet in RollupRowsFn)."""
        parts, self._partials = self._partials, []
        partials = RollupPartials.concat(parts)
        if len(parts) > 1:
            partials = partials.merged()
        del parts
        for hour, part in partials.by_hour():
            yield beam.pvalue.TaggedOutput(self.ROLLUPS, WindowedValue(
                (hour, packed(part)), _MAX_TIMESTAMP, _GLOBAL))

    def _flush(self, sorted_points=None):
        """The buffer's points (or ``sorted_points``, already sorted, the
        buffer then empty) -> their sessions table; their rollup partials
        kept."""
        if sorted_points is None:
            buffered, self._buffer, self._buffered = self._buffer, [], 0
            if not buffered:
                return
            sorted_points = sort_points(pa.concat_tables(buffered))
        columns = SessionColumns(sorted_points, self._gap_ms)
        del sorted_points
        self._partials.append(
            add_rollup_partials(columns, self._rollup_window))
        self._assigned.inc(columns.n)
        self._aggregated.inc(columns.n)
        self._on_time.inc(columns.m)
        table = columns.table()
        del columns
        if len(self._partials) >= self.MERGE_EVERY:
            # (sent now, not kept to the bundle's end: the runner holds
            # them until the hours' grouping either way, and a bundle
            # that kept them held them two or three times over as it
            # split and pickled them at its end)
            yield from self._send_partials()
        if self._read >= self.TRIM_BYTES:
            # The fragments read since are freed: their pages go back to
            # the system, not into a fragmented heap (not at every flush,
            # where pages given back are soon faulted in again).
            self._read = 0
            memory.release_free_memory()
        yield table


def _pieces(sid, size):
    """(lo, hi) row ranges of points sorted by session id (``sid``), each
    of whole ids and at most ``size`` rows unless one id has more."""
    n = len(sid)
    if isinstance(sid, pa.ChunkedArray):
        sid = sid.combine_chunks()
    codes = _np(pc.dictionary_encode(sid).indices)
    # (sorted: each id's rows are one run; the edges of the runs)
    edges = np.concatenate(([0], np.flatnonzero(np.diff(codes)) + 1, [n]))
    pieces, lo = [], 0
    while lo < n:
        hi = int(edges[np.searchsorted(edges, lo + size, 'right') - 1])
        if hi <= lo:        # (one id of more than size points)
            hi = int(edges[np.searchsorted(edges, lo, 'right')])
        pieces.append((lo, hi))
        lo = hi
    return pieces


_GLOBAL = (GlobalWindow(),)
_HOUR_US = 3600 * 10**6


class RollupRowsFn(beam.DoFn):
    """(hour, [packed :class:`RollupPartials`]) -> the ``qoe_rollups`` rows
    of the windows starting in that hour as one Arrow table (main output)
    and what the alerts judge of each row, as one pickled list of
    :class:`~transforms.video.rollups.AlertInput` (tag ``alerts``).

    The partials of a (dimension, value, window) from every bundle meet
    here and merge on columns (:meth:`RollupPartials.rows`: sums added,
    each sketch built once from every bundle's inputs); a bounded window
    has one pane, ON_TIME.  Accounted as ``AggregatePerKey`` accounts a bounded
    window: ``assigned`` the reports of each partial, ``aggregated`` those
    of each row, a ``panes.ON_TIME`` per row."""
    ALERTS = 'alerts'

    def __init__(self, job):
        self._job = job

    def setup(self):
        self._assigned = Metrics.counter(self._job, 'assigned')
        self._aggregated = Metrics.counter(self._job, 'aggregated')
        self._on_time = Metrics.counter(self._job, 'panes.ON_TIME')

    def process(self, kv):
        _, parts = kv
        partials = RollupPartials.concat([unpacked(p) for p in parts])
        table, alerts, assigned = partials.rows()
        self._assigned.inc(assigned)
        # (one element of the hour's rows for the alerts, not one per row,
        # pickled once: Beam's coder of a list pickles each item apart)
        yield beam.pvalue.TaggedOutput(self.ALERTS, dumps(alerts))
        self._aggregated.inc(assigned)
        self._on_time.inc(table.num_rows)
        yield table
_MAX_TIMESTAMP = GlobalWindow().max_timestamp()
_DIM_NAMES = ('content', 'cdn', 'stream_type')


def _codes(keys, limit):
    """int64 keys -> (distinct keys ascending, the index of each key among
    them), by counting where the keys span at most ``limit`` values (else
    by sorting, as ``np.unique``)."""
    if keys.size == 0:
        return keys, keys
    low, high = int(keys.min()), int(keys.max())
    if high - low >= limit:
        distinct, inverse = np.unique(keys, return_inverse=True)
        return distinct, inverse.reshape(-1)
    present = np.bincount(keys - low, minlength=high - low + 1) > 0
    rank = np.cumsum(present) - 1
    return np.flatnonzero(present) + low, rank[keys - low]


# The sums of a rollup partial, in the order of its ``sums`` columns.
SUM_NAMES = ('count', 'plays', 'errors', 'failures', 'rebuffer_ms',
             'playing_ms', 'exits')
# Dimension index -> the row's dimension (0 is 'all').
_DIMENSIONS = ('all', 'content', 'cdn', 'stream_type')


class RollupPartials(typing.NamedTuple):
    """Rollup partials as columns: one entry per (dimension, value, rollup
    window) group, its sums as a row of an int64 matrix; the sketches'
    inputs as (group, value) pairs (session ids, start-up times), built into
    sketches once per group, when the groups of every bundle have met
    (:meth:`rows`).  Partials of any number of flushes and bundles
    concatenate (:meth:`concat`); equal groups merge in :meth:`rows`."""
    dim: np.ndarray            # int8, index into _DIMENSIONS
    value: pa.Array            # string: 'all', or the dimension's value
    start: np.ndarray          # int64: window start (us)
    size: int                  # window size (us)
    sums: np.ndarray           # int64 (groups, len(SUM_NAMES))
    sid_group: np.ndarray      # int32: the group of each session id pair
    sid: np.ndarray            # int32: its session id, an index into sids
    sids: pa.Array             # string: the session ids the pairs name
    start_group: np.ndarray    # int64: the group of each start-up time
    start_ms: np.ndarray       # int64: the start-up time

    @classmethod
    def empty(cls) -> 'RollupPartials':
        none = np.zeros(0, np.int64)
        return cls(np.zeros(0, np.int8), pa.array([], pa.string()), none, 0,
                   np.zeros((0, len(SUM_NAMES)), np.int64),
                   np.zeros(0, np.int32),
                   np.zeros(0, np.int32), pa.array([], pa.string()), none,
                   none)

    def __len__(self):
        return self.dim.size

    @classmethod
    def concat(cls, parts) -> 'RollupPartials':
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty()
        if len(parts) == 1:
            return parts[0]
        offsets = np.cumsum([0] + [len(p) for p in parts[:-1]])
        # (parts naming the same session ids, as one flush's dimensions
        # do, share them)
        shared = all(p.sids is parts[0].sids for p in parts)
        id_offsets = np.zeros(len(parts), np.int64) if shared else \
            np.cumsum([0] + [len(p.sids) for p in parts[:-1]])
        return cls(
            np.concatenate([p.dim for p in parts]),
            pa.concat_arrays([p.value for p in parts]),
            np.concatenate([p.start for p in parts]), parts[0].size,
            np.concatenate([p.sums for p in parts]),
            np.concatenate([p.sid_group + o for p, o in zip(parts, offsets)])
            .astype(np.int32),
            np.concatenate([p.sid + o for p, o in zip(parts, id_offsets)])
            .astype(np.int32),
            parts[0].sids if shared else
            pa.concat_arrays([p.sids for p in parts]),
            np.concatenate([p.start_group + o
                            for p, o in zip(parts, offsets)]),
            np.concatenate([p.start_ms for p in parts]))

    def by_hour(self):
        """(hour us, the partials of the windows starting in that hour)."""
        hours = self.start - self.start % _HOUR_US
        distinct, hour_of = np.unique(hours, return_inverse=True)
        hour_of = hour_of.reshape(-1)
        if distinct.size == 1:
            yield int(distinct[0]), self
            return
        # Groups, pairs and start-up times ordered by hour, each hour a
        # slice of them.
        groups = np.argsort(hour_of, kind='stable')
        index = np.empty_like(groups)
        g_bounds = np.searchsorted(hour_of[groups],
                                   np.arange(distinct.size + 1)).tolist()
        sid_hour = hour_of[self.sid_group]
        sids = np.argsort(sid_hour, kind='stable')
        s_bounds = np.searchsorted(sid_hour[sids],
                                   np.arange(distinct.size + 1)).tolist()
        start_hour = hour_of[self.start_group]
        starts = np.argsort(start_hour, kind='stable')
        t_bounds = np.searchsorted(start_hour[starts],
                                   np.arange(distinct.size + 1)).tolist()
        for h, hour in enumerate(distinct.tolist()):
            mine = groups[g_bounds[h]:g_bounds[h + 1]]
            index[mine] = np.arange(mine.size)
            s = sids[s_bounds[h]:s_bounds[h + 1]]
            t = starts[t_bounds[h]:t_bounds[h + 1]]
            # (only the session ids this hour's pairs name, found by
            # marking them, not by sorting)
            codes = self.sid[s]
            named = np.zeros(len(self.sids), bool)
            named[codes] = True
            rank = (np.cumsum(named) - 1).astype(np.int32)
            yield hour, RollupPartials(
                self.dim[mine], self.value.take(pa.array(mine)),
                self.start[mine], self.size, self.sums[mine],
                index[self.sid_group[s]].astype(np.int32), rank[codes],
                self.sids.filter(pa.array(named)),
                index[self.start_group[t]], self.start_ms[t])

    def _groups(self):
        """(the group of each entry, the number of groups, each group's
        first entry): entries of equal (dimension, value, window) are one
        group; groups ordered by dimension, value and window."""
        encoded = pc.dictionary_encode(self.value)
        value_code = _np(encoded.indices).astype(np.int64)
        names = encoded.dictionary
        value_rank = _np(pc.rank(names, sort_keys='ascending',
                                 tiebreaker='first')).astype(np.int64) - 1
        dim_rank = np.argsort(np.argsort(_DIMENSIONS))[self.dim]
        w_codes, w_inverse = np.unique(self.start, return_inverse=True)
        w_inverse = w_inverse.reshape(-1)
        key = (dim_rank * len(names) + value_rank[value_code]) \
            * w_codes.size + w_inverse
        groups, group = np.unique(key, return_inverse=True)
        group = group.reshape(-1)
        g = groups.size
        first = np.zeros(g, np.int64)
        first[group[::-1]] = np.arange(group.size)[::-1]
        return group, g, first

    def merged(self) -> 'RollupPartials':
        """The same partials with equal groups merged (sums added; the
        sketches' inputs kept, now naming the merged group): what a bundle
        keeps between flushes, so its partials grow with its groups, not
        with its flushes."""
        if not len(self):
            return self
        group, g, first = self._groups()
        order = np.argsort(group, kind='stable')
        bounds = np.searchsorted(group[order], np.arange(g))
        return RollupPartials(
            self.dim[first], self.value.take(pa.array(first)),
            self.start[first], self.size,
            np.add.reduceat(self.sums[order], bounds, axis=0),
            group[self.sid_group].astype(np.int32), self.sid, self.sids,
            group[self.start_group], self.start_ms)

    def rows(self):
        """The partials' groups merged -> (``qoe_rollups`` rows as an Arrow
        table, sorted by dimension, value and window; their
        :class:`~transforms.video.rollups.AlertInput` s in that order;
        the reports of the partials): one ON_TIME pane per window, the
        values :func:`~transforms.video.rollups.rollup_values` gives for the
        merged :class:`~transforms.video.rollups.RollupAcc`."""
        # Groups: (dimension, value, window), ordered as the rows are.
        group, g, first = self._groups()
        sums = np.zeros((g, len(SUM_NAMES)), np.int64)
        np.add.at(sums, group, self.sums)
        # Distinct sessions: one HLL sketch of each group's session ids,
        # through a union as RollupAcc keeps them.
        pair_group = group[self.sid_group]
        order = np.argsort(pair_group, kind='stable')
        sid_bounds = np.searchsorted(pair_group[order],
                                     np.arange(g + 1)).tolist()
        sids = self.sids.take(pa.array(self.sid[order])).to_pylist()
        active = np.zeros(g, np.int64)
        for i in np.flatnonzero(np.diff(sid_bounds)).tolist():
            sketch = datasketches.hll_sketch(HLL_LG_K)
            collections.deque(
                map(sketch.update, sids[sid_bounds[i]:sid_bounds[i + 1]]),
                maxlen=0)
            union = datasketches.hll_union(HLL_LG_K)
            union.update(sketch)
            active[i] = int(round(union.get_result().get_estimate()))
        # Start-up times: one KLL sketch per group that has any.
        start_group = group[self.start_group]
        order = np.argsort(start_group, kind='stable')
        start_bounds = np.searchsorted(start_group[order],
                                       np.arange(g + 1)).tolist()
        start_values = self.start_ms[order]
        p50 = np.zeros(g)
        p95 = np.zeros(g)
        has = np.diff(start_bounds) > 0
        start_values = start_values.astype(np.float64)
        for i in np.flatnonzero(has).tolist():
            # (the sketch Quantiles keeps, without its packing)
            sketch = datasketches.kll_doubles_sketch(QUANTILES_K)
            sketch.update(start_values[start_bounds[i]:start_bounds[i + 1]])
            p50[i] = sketch.get_quantile(0.5)
            p95[i] = sketch.get_quantile(0.95)
        column = dict(zip(SUM_NAMES, sums.T))
        total = column['rebuffer_ms'] + column['playing_ms']
        with np.errstate(invalid='ignore', divide='ignore'):
            ratio = column['rebuffer_ms'] / total
        window_start = self.start[first]
        dimension = pa.array(_DIMENSIONS, pa.string()).take(
            pa.array(self.dim[first]))
        value = self.value.take(pa.array(first))
        columns = {
            'dimension': dimension, 'value': value,
            'window_start': window_start,
            'window_end': window_start + self.size,
            'pane_timing': pa.repeat(pa.scalar('ON_TIME', pa.string()), g),
            'pane_index': np.zeros(g, np.int64),
            'count': column['count'], 'active_sessions': active,
            'plays': column['plays'],
            'video_start_time_p50_ms': pa.array(p50, mask=~has),
            'video_start_time_p95_ms': pa.array(p95, mask=~has),
            'rebuffer_ms': column['rebuffer_ms'],
            'playing_ms': column['playing_ms'],
            'rebuffering_ratio': pa.array(ratio, mask=total <= 0),
            'errors': column['errors'], 'failures': column['failures'],
            'exits_before_video_start': column['exits'],
        }
        schema = arrow_schema(Rollup)
        table = pa.Table.from_arrays(
            [pa.array(columns[f.name]).cast(f.type)
             if isinstance(columns[f.name], np.ndarray)
             else columns[f.name].cast(f.type) for f in schema],
            schema=schema)
        # (a Timestamp per window, not per row)
        w_starts, w_index = np.unique(window_start, return_inverse=True)
        w_index = w_index.reshape(-1).tolist()
        stamps = [Timestamp(micros=t) for t in w_starts.tolist()]
        starts = list(map(stamps.__getitem__, w_index))
        stamps = [Timestamp(micros=t + self.size) for t in w_starts.tolist()]
        ends = list(map(stamps.__getitem__, w_index))
        alerts = list(map(AlertInput._make, zip(
            dimension.to_pylist(), value.to_pylist(), starts, ends,
            ['ON_TIME'] * g, [0] * g, active.tolist(),
            table['video_start_time_p95_ms'].to_pylist(),
            table['rebuffering_ratio'].to_pylist())))
        return table, alerts, int(self.sums[:, 0].sum())


def add_rollup_partials(c: SessionColumns, rollup_window) -> 'RollupPartials':
    """The rollup partials of the sessions of ``c`` as columns: the
    contributions of :func:`~transforms.video.rollups.walk_report` and
    :func:`~transforms.video.rollups.close_session`, summed per (dimension,
    value, rollup window) with numpy, with the (group, session id) pairs and
    (group, start-up time) values the sketches are built of."""
    n = c.n
    if n == 0:
        return RollupPartials.empty()
    gap_ms, session, ts = c.gap_ms, c.session, c.ts
    # Dimension values (a missing one is 'unknown'), as codes into names.
    dim_codes, dim_names = [], []
    for name in ('cid', 'cdn', 'st'):
        # (encoded as read, then '' named UNKNOWN in the few distinct
        # values, merged with an UNKNOWN read as such)
        encoded = pc.dictionary_encode(c.text[name])
        names = [v or UNKNOWN for v in encoded.dictionary.to_pylist()]
        codes = _np(encoded.indices).astype(np.int64)
        if len(set(names)) < len(names):
            names, remap = np.unique(names, return_inverse=True)
            names, codes = names.tolist(), remap.reshape(-1)[codes]
        dim_codes.append(codes)
        dim_names.append(names)
    is_p, is_f = c.state['p'], c.state['f']
    play = np.zeros(n, np.int64)
    play[_first_of_each(session, np.flatnonzero(is_p))] = 1
    failure = np.zeros(n, np.int64)
    failure[_first_of_each(session, np.flatnonzero(is_f))] = 1
    start = np.full(n, -1, np.int64)
    start[c.first_msd] = c.msd[c.first_msd]
    # Durations: each state report until the next of its session, if it
    # was r or p, at the time and dimensions of the state's report.
    prev = c.prev
    was_r, was_p = c.state['r'][prev], is_p[prev]
    keep = was_r | was_p
    prev, duration, was_r = prev[keep], c.duration[keep], was_r[keep]
    # Exits: sessions that neither played nor failed, at last report + gap.
    exited = np.flatnonzero(~c.played & ~c.failed)
    k, e = prev.size, exited.size
    # All contributions: reports, durations, exits.
    src = np.concatenate((np.arange(n), prev, c.firsts[exited]))
    time_ms = np.concatenate((ts, ts[prev], ts[c.lasts[exited]] + gap_ms))
    zeros_k, zeros_e = np.zeros(k, np.int64), np.zeros(e, np.int64)
    values = {
        'count': np.concatenate((np.ones(n, np.int64), zeros_k, zeros_e)),
        'plays': np.concatenate((play, zeros_k, zeros_e)),
        'errors': np.concatenate((c.err.astype(np.int64), zeros_k, zeros_e)),
        'failures': np.concatenate((failure, zeros_k, zeros_e)),
        'rebuffer_ms': np.concatenate((
            np.zeros(n, np.int64), np.where(was_r, duration, 0), zeros_e)),
        'playing_ms': np.concatenate((
            np.zeros(n, np.int64), np.where(was_r, 0, duration), zeros_e)),
        'exits': np.concatenate((np.zeros(n + k, np.int64),
                                 np.ones(e, np.int64))),
    }
    starts_ms = np.concatenate((start, zeros_k - 1, zeros_e - 1))
    who = c.sid_code[src]
    win_rows, win_starts = windows.window_starts(rollup_window,
                                                 time_ms * 1000)
    size = int(round(rollup_window.size * 1e6))
    limit = 4 * win_rows.size + 1024
    step = size if rollup_window.kind == 'fixed' else \
        int(round(rollup_window.period * 1e6))
    w_codes, w_inverse = _codes(win_starts // step, limit)
    w_count = w_codes.size
    # The session ids reporting in each window: a (session id, window) pair
    # repeated in the rows before is left out (a distinct-count sketch
    # counts a session id once however often it is added).
    # (Fixed windows: a contribution in one window, rows in order.)
    identity = rollup_window.kind == 'fixed'

    def at_windows(v):
        return v if identity else v[win_rows]

    reporting = win_rows < n
    who_w = at_windows(who)
    src_w = at_windows(src)
    fresh = np.ones(win_rows.size, bool)
    fresh[1:] = (who_w[1:] != who_w[:-1]) | (w_inverse[1:] != w_inverse[:-1])
    # Each value where it is not 0 (the rows, their values), in window rows.
    sparse = {}
    for name, v in values.items():
        v = at_windows(v)
        rows = np.flatnonzero(v)
        weights = None if name in (
            'count', 'plays', 'errors', 'failures', 'exits') else v[rows]
        if rows.size and rows[-1] - rows[0] + 1 == rows.size:
            rows = slice(int(rows[0]), int(rows[-1]) + 1)   # (no gather)
        sparse[name] = (rows, weights)
    starts_w = at_windows(starts_ms)
    has_start = np.flatnonzero(starts_w >= 0)
    parts = []
    for d in range(4):
        if d == 0:
            value_code = np.zeros(win_rows.size, np.int64)
            names = pa.array(['all'], pa.string())
        else:
            value_code = dim_codes[d - 1][src_w]
            names = pa.array(dim_names[d - 1], pa.string())
        key = value_code * w_count + w_inverse
        groups_k, group = _codes(key, limit)
        g = groups_k.size
        sums = np.empty((g, len(SUM_NAMES)), np.int64)
        for j, name in enumerate(SUM_NAMES):
            rows, weights = sparse[name]
            sums[:, j] = np.bincount(group[rows], weights, g)
        # Session ids reporting per group (a (session id, group) pair once
        # per run of rows).
        new_value = fresh.copy()
        new_value[1:] |= value_code[1:] != value_code[:-1]
        rows = np.flatnonzero(reporting & new_value)
        value_of, window_of = np.divmod(groups_k, w_count)
        parts.append(RollupPartials(
            np.full(g, d, np.int8), names.take(pa.array(value_of)),
            w_codes[window_of] * step, size, sums,
            group[rows].astype(np.int32), who_w[rows].astype(np.int32),
            c.sid_array,
            group[has_start], starts_w[has_start]))
    return RollupPartials.concat(parts)
