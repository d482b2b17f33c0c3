"""Writing windowed rows to files: one set of files per window and pane.

Each bundle's rows are grouped by (window, pane timing, pane index) and written
as one file per group, under ``DIR/TABLE/``::

    DIR/TABLE/20260101T000000Z_20260101T000100Z/TABLE-p0003-ON_TIME-<digest>.parquet

The digest is a hash of what identifies the file's rows (the record type's
``IDENTITY_FIELDS``, e.g. key, window and pane; all fields by default), so the
name is deterministic: a retried bundle writes the same name, and a file once
written is never rewritten (an existing name is skipped).  Dead letters are
identified by all their fields, processing time included, so that two equal
payloads refused in different bundles are both kept.  Files are written
under a temporary name and renamed into place, so a reader never sees half a
file.  Rows outside any interval window (e.g. dead letters before windowing)
go under ``DIR/TABLE/unwindowed/``.  A row type with ``window_start``,
``window_end``, ``pane_timing`` and ``pane_index`` fields is placed by those;
one that also declares ``FILE_PERIOD_SECONDS`` (rows of session windows, one
window per session) is placed by the period holding its ``window_start``, so
that a file holds many windows' rows rather than one.

A table some of whose rows were made by a grouping of another allowed
lateness than the job's (``io.Context.row_lateness``, a job's
``ROW_LATENESS``: the field that tells them apart) is split by that field's
value too, the value in the name::

    DIR/anomalies/20260101T000000Z_20260101T000500Z/anomalies-p0000-ON_TIME-kind=price-<digest>.parquet

so that a restart's :func:`roll_back` judges each file by the lateness of
the grouping that made its rows.
"""
import collections
import hashlib
import io
import operator
import os
import re
import typing
import urllib.parse
import uuid

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import IntervalWindow
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from transforms import schemas, windows
from transforms.io import UriError


def _stamp(ts) -> str:
    return windows.to_datetime(ts).strftime('%Y%m%dT%H%M%SZ')


# Field types whose values order totally and compare in C (or, for
# Timestamp, only when every field before is equal).
_ORDERED_TYPES = (str, int, bool, bytes, Timestamp)


def _identity_getter(record_type):
    """``operator.attrgetter`` of the record type's IDENTITY_FIELDS when they
    can order rows without ``repr`` (every one a non-optional str, int,
    bool, bytes or Timestamp), else None."""
    fields = getattr(record_type, 'IDENTITY_FIELDS', None)
    if not fields:
        return None
    try:
        hints = typing.get_type_hints(record_type)
    except (NameError, TypeError):
        return None
    if not all(hints.get(f) in _ORDERED_TYPES for f in fields):
        return None
    return operator.attrgetter(*fields) if len(fields) > 1 else \
        (lambda row, _get=operator.attrgetter(fields[0]): (_get(row),))


def _plain(value):
    return value.micros if isinstance(value, Timestamp) else value


def _identity_digest(identities) -> str:
    """A hash of a sorted list of identity tuples, column by column, with
    times as epoch microseconds (no ``repr`` of a Timestamp per row)."""
    columns = [list(map(_plain, column)) if column and
               isinstance(column[0], Timestamp) else list(column)
               for column in zip(*identities)]
    return hashlib.sha256(repr(columns).encode()).hexdigest()[:16]


class WriteWindowedFilesFn(beam.DoFn):
    """Buffers a bundle's rows per window and pane; writes one file per group."""

    def __init__(self, directory, table, record_type, encode, extension, job,
                 rows_counter=None, split_field=None):
        self._directory = directory.rstrip('/')
        # Rows of different values of this field never share a file.
        self._split = split_field
        self._table = table
        self._record_type = record_type
        self._encode = encode          # (rows, record_type) -> bytes
        self._extension = extension
        self._job = job
        self._rows = Metrics.counter(job, rows_counter
                                     or f'rows_written.{table}')
        self._files = Metrics.counter(job, 'files_written')
        self._has_pane_fields = all(
            f in getattr(record_type, '_fields', ())
            for f in ('window_start', 'window_end', 'pane_timing', 'pane_index'))
        period = getattr(record_type, 'FILE_PERIOD_SECONDS', None)
        self._period_us = int(period * 1e6) if period else None
        self._identity = _identity_getter(record_type)

    def start_bundle(self):
        self._groups = collections.defaultdict(list)

    def process(self, row, window=beam.DoFn.WindowParam,
                pane=beam.DoFn.PaneInfoParam):
        if self._has_pane_fields:
            # The row says which window and pane it belongs to (alerts, say,
            # are computed in the global window about a statistics window).
            key = (row.window_start, row.window_end, row.pane_timing,
                   row.pane_index)
            if self._period_us:
                start = row.window_start.micros
                start -= start % self._period_us
                key = (Timestamp(micros=start),
                       Timestamp(micros=start + self._period_us),
                       row.pane_timing, row.pane_index)
        elif isinstance(window, IntervalWindow):
            key = (window.start, window.end,
                   windows.TIMING_NAMES.get(pane.timing, 'UNKNOWN'), pane.index)
        else:
            key = None
        if self._split is not None and key is not None:
            key = key + (getattr(row, self._split),)
        # Grouped by the Beam window too: what finish_bundle emits must be in
        # a window of this PCollection's windowing.
        self._groups[(window, key)].append(row)

    def finish_bundle(self):
        for (window, key), rows in self._groups.items():
            path = self._write(key, rows)
            if path is not None:
                yield WindowedValue(path, window.max_timestamp(), (window,))
        self._groups = None

    def _write(self, key, rows):
        # The name hashes what identifies the rows (IDENTITY_FIELDS of the
        # record type, all fields by default), so a retried bundle finds the
        # file it wrote before, and a rerun gives the same names even where
        # sketch-based values differ in their last digits.
        #
        # Rows are put in a deterministic order first.  Where the identity
        # fields order rows totally (plain types, no two rows alike: a key,
        # window and pane has one row), rows are sorted by them in C;
        # otherwise (optional or float identity fields, dead letters, ties)
        # by their repr, which costs a Python call per field of every row.
        digest = None
        if self._identity is not None:
            identities = list(map(self._identity, rows))
            order = sorted(range(len(rows)), key=identities.__getitem__)
            identities = [identities[i] for i in order]
            if not any(map(operator.eq, identities, identities[1:])):
                rows = [rows[i] for i in order]
                digest = _identity_digest(identities)
        if digest is None:
            rows = sorted(rows, key=repr)
            fields = getattr(self._record_type, 'IDENTITY_FIELDS', None)
            identity = [tuple(getattr(row, f) for f in fields)
                        for row in rows] if fields else rows
            digest = hashlib.sha256(repr(identity).encode()).hexdigest()[:16]
        return self._put(key, digest, self._encode(rows, self._record_type),
                         len(rows))

    def _put(self, key, digest, data, count):
        """Writes ``data`` (``count`` rows) under the name of its window and
        pane ``key`` and ``digest``, unless a file of that name exists."""
        if key is None:
            folder, name = 'unwindowed', f'{self._table}-{digest}'
        else:
            start, end, timing, index = key[:4]
            folder = f'{_stamp(start)}_{_stamp(end)}'
            split = '' if len(key) == 4 else \
                f'{self._split}={_quote(key[4])}-'
            name = f'{self._table}-p{index:04d}-{timing}-{split}{digest}'
        final = '/'.join(
            (self._directory, self._table, folder, name + self._extension))
        self._rows.inc(count)
        if '://' not in final:
            written = _put_local(final, data)
        else:
            written = _put_remote(final, data)
        if written:
            self._files.inc()
            return final
        return None


def _quote(value) -> str:
    """A split field's value as it stands in a file name."""
    return urllib.parse.quote(str(value), safe='')


def split_field(context, table):
    """The field a job splits ``table``'s files by (its ROW_LATENESS, in
    ``context.row_lateness``), or None."""
    declared = (getattr(context, 'row_lateness', None) or {}).get(table)
    return declared[0] if declared else None


def _put_local(final: str, data: bytes) -> bool:
    """``data`` to the local file ``final`` (through a temporary name),
    unless it exists: plain system calls, a few per file (Beam's
    FileSystems costs about as much as encoding a small Parquet file)."""
    if os.path.exists(final):
        return False         # same content already written (a retried bundle)
    os.makedirs(os.path.dirname(final) or '.', exist_ok=True)
    temp = f'{final}.tmp-{uuid.uuid4().hex}'
    with open(temp, 'wb') as f:
        f.write(data)
    os.rename(temp, final)
    return True


def _put_remote(final: str, data: bytes) -> bool:
    """The same through Beam's FileSystems (gs://, ...)."""
    if FileSystems.exists(final):
        return False
    temp = f'{final}.tmp-{uuid.uuid4().hex}'
    with FileSystems.create(temp) as f:
        f.write(data)
    FileSystems.rename([temp], [final])
    return True


class WriteWindowedFiles(beam.PTransform):
    """``PCollection[record_type]`` (any windowing) -> ``PCollection[str]`` paths."""

    def __init__(self, directory, table, record_type, encode, extension, job,
                 rows_counter=None, split_field=None):
        super().__init__()
        self._fn = WriteWindowedFilesFn(
            directory, table, record_type, encode, extension, job,
            rows_counter, split_field)

    def expand(self, rows):
        return rows | beam.ParDo(self._fn)


class WriteWindowedTablesFn(WriteWindowedFilesFn):
    """The same files for rows that arrive as Arrow tables of the record
    type (a record type with window and pane fields and identity fields):
    rows are grouped, ordered and named on columns, and a file is encoded
    from its table by ``encode_table(table)`` without a Python object per
    row.  Rows whose identities are not all distinct are written as
    :class:`WriteWindowedFilesFn` writes them."""

    def __init__(self, directory, table, record_type, encode, encode_table,
                 extension, job, rows_counter=None):
        super().__init__(directory, table, record_type, encode, extension,
                         job, rows_counter)
        self._encode_table = encode_table
        if not self._has_pane_fields or self._identity is None:
            raise TypeError(f'{record_type.__name__}: tables are written by '
                            'their window, pane and identity fields')

    def start_bundle(self):
        self._tables = collections.defaultdict(list)

    # pylint: disable-next=arguments-differ
    def process(self, table, window=beam.DoFn.WindowParam):
        # Kept split by file (window and pane, or period): at the bundle's
        # end each file's rows are sorted and written apart, and let go once
        # written, not all of the bundle's rows sorted at once.
        if not table.num_rows:
            return
        start = table['window_start'].cast(pa.int64()).to_numpy()
        end = table['window_end'].cast(pa.int64()).to_numpy()
        if self._period_us:
            start = start - start % self._period_us
            end = start + self._period_us
        encoded = pc.dictionary_encode(table['pane_timing'].combine_chunks()
                                       if isinstance(table['pane_timing'],
                                                     pa.ChunkedArray)
                                       else table['pane_timing'])
        timing = encoded.dictionary.to_pylist()
        columns = np.stack([
            start, end, table['pane_index'].cast(pa.int64()).to_numpy(),
            encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)],
            axis=1)
        if (columns == columns[0]).all():
            distinct, rows = columns[:1], None
        else:
            # (one int64 code per row from each column's rank: a 1-d
            # unique, many times faster than np.unique(axis=0))
            code = np.zeros(len(columns), np.int64)
            for j in range(columns.shape[1]):
                values, inverse = np.unique(columns[:, j],
                                            return_inverse=True)
                # (ranked again, so that the code stays below the rows)
                code = np.unique(code * values.size + inverse.reshape(-1),
                                 return_inverse=True)[1].reshape(-1)
            _, first, inverse = np.unique(code, return_index=True,
                                          return_inverse=True)
            distinct = columns[first]
            inverse = inverse.reshape(-1)
            order = np.argsort(inverse, kind='stable')
            bounds = np.searchsorted(inverse[order],
                                     np.arange(len(distinct) + 1)).tolist()
            rows = [order[lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:])]
        for i, (lo, hi, index, code) in enumerate(distinct.tolist()):
            key = (Timestamp(micros=lo), Timestamp(micros=hi), timing[code],
                   index)
            self._tables[(window, key)].append(
                table if rows is None else table.take(pa.array(rows[i])))

    def finish_bundle(self):
        fields = list(self._record_type.IDENTITY_FIELDS)
        sort = [(f, 'ascending') for f in fields]
        for window, key in sorted(self._tables, key=lambda k: k[1]):
            table = pa.concat_tables(self._tables.pop((window, key)))
            table = table.take(pc.sort_indices(table, sort_keys=sort))
            path = self._write_table(key, table, table, fields)
            del table
            if path is not None:
                yield WindowedValue(path, window.max_timestamp(), (window,))
        self._tables = None

    def _write_table(self, key, table, keys, fields):
        identity = [keys[f].cast(pa.int64()).to_pylist()
                    if pa.types.is_timestamp(keys[f].type)
                    else keys[f].to_pylist() for f in fields]
        rows = list(zip(*identity))
        if any(map(operator.eq, rows, rows[1:])):
            return self._write(key, schemas.from_arrow(table,
                                                       self._record_type))
        # The digest of WriteWindowedFilesFn (_identity_digest) for the
        # same rows: the identity columns, times as epoch microseconds.
        digest = hashlib.sha256(repr(identity).encode()).hexdigest()[:16]
        return self._put(key, digest, self._encode_table(table),
                         table.num_rows)


class WriteWindowedTables(beam.PTransform):
    """``PCollection[pa.Table]`` (of ``record_type`` rows) ->
    ``PCollection[str]`` paths: the files WriteWindowedFiles writes for
    the same rows."""

    def __init__(self, directory, table, record_type, encode, encode_table,
                 extension, job, rows_counter=None):
        super().__init__()
        self._fn = WriteWindowedTablesFn(
            directory, table, record_type, encode, encode_table, extension,
            job, rows_counter)

    def expand(self, tables):
        return tables | beam.ParDo(self._fn)


def buffer_bytes(write) -> bytes:
    buf = io.BytesIO()
    write(buf)
    return buf.getvalue()


def check_writable(directory: str, text: str) -> None:
    """Before a run: a file can be made in ``directory``.  Raises UriError
    naming the URI and the cause.  Leaves nothing behind: the directories it
    made to try are removed again (the run makes them).  Non-local paths
    (gs://, ...) are left to the run."""
    if '://' in directory:
        return
    path = os.path.abspath(directory or '.')
    made = []
    try:
        missing, parent = [], path
        while not os.path.exists(parent):
            missing.append(parent)
            parent = os.path.dirname(parent)
        if not os.path.isdir(parent):
            raise NotADirectoryError(
                20, 'Not a directory', parent)
        for folder in reversed(missing):
            os.mkdir(folder)
            made.append(folder)
        probe = os.path.join(path, f'.probe-{uuid.uuid4().hex}')
        with open(probe, 'wb'):
            pass
        os.remove(probe)
    except OSError as e:
        cause = e.strerror or str(e)
        where = e.filename if e.filename and e.filename != path else None
        raise UriError(f'{text}: cannot write under {directory!r}: {cause}'
                       + (f' ({where})' if where else '')) from None
    finally:
        for folder in reversed(made):
            try:
                os.rmdir(folder)
            except OSError:
                pass      # something else wrote there meanwhile


def _parse_stamp(text):
    import datetime  # pylint: disable=import-outside-toplevel
    return datetime.datetime.strptime(text, '%Y%m%dT%H%M%SZ').replace(
        tzinfo=datetime.timezone.utc).timestamp()


def _file_lateness(name, declared, lateness):
    """The allowed lateness of the grouping that made the rows of the file
    ``name`` of a table whose ROW_LATENESS is ``declared`` ((field, {value:
    seconds}), or None): the value's in its name, else ``lateness``."""
    if not declared:
        return lateness
    field, by_value = declared
    found = re.search(rf'-{re.escape(field)}=([^/]*)-[0-9a-f]{{16}}\.[^.]+$',
                      name)
    if found is None:
        return lateness
    return by_value.get(urllib.parse.unquote(found.group(1)), lateness)


def roll_back(directory, horizon, committed_at, lateness,
              dead_letter_table='dead_letter', row_lateness=None) -> int:
    """Removes, under a local ``directory``, what a killed run wrote after its
    source's last commit (see transforms/io/_kafka_commits.py): every file
    written after ``committed_at``, and the files of windows that were not
    final at ``horizon`` (end + allowed lateness after it) for the grouping
    that made their rows: ``lateness``, the job's, unless ``row_lateness``
    (a job's ROW_LATENESS: table -> (field, {value: seconds})) gives the
    file's value of the field another.  A restart writes them again (a
    window final at the horizon for its grouping takes no record the
    restart reads again: removed, it would be lost).  Returns the number of
    files removed."""
    import pathlib  # pylint: disable=import-outside-toplevel
    root = pathlib.Path(directory)
    removed = 0
    if not root.is_dir():
        return 0
    for table in root.iterdir():
        if not table.is_dir():
            continue
        declared = (row_lateness or {}).get(table.name)
        for folder in table.iterdir():
            if not folder.is_dir():
                continue
            try:
                end = _parse_stamp(folder.name.split('_')[1])
            except (IndexError, ValueError):
                end = None            # unwindowed
            for path in folder.iterdir():
                if not path.is_file():
                    continue
                drop = path.stat().st_mtime > committed_at or (
                    table.name != dead_letter_table and end is not None
                    and end + _file_lateness(path.name, declared, lateness)
                    > horizon)
                if drop:
                    path.unlink()
                    removed += 1
    return removed
