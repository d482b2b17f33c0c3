"""File sinks: Parquet and JSON lines, one set of files per window and pane.

The streaming pipeline plays a TestStream whose event times are in 2026 and
whose processing time starts at the epoch (see
transforms.io.synthetic.test_stream), windows it with an early/late trigger and
sums values per key; the expected panes below are worked out by hand from the
trigger's rules.
"""
import datetime
import io as pyio
import json
import os
import pathlib
import re
import typing

import apache_beam as beam
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from transforms import schemas, windows
from transforms.aggregate import AggregatePerKey
from transforms.deadletter import DeadLetter
from transforms.io import Context, open_sink

T0 = 1767225600          # 2026-01-01T00:00:00Z, a multiple of 60
UTC = datetime.timezone.utc
JOB = 'sinktest'


class PaneValue(typing.NamedTuple):
    window_start: Timestamp
    window_end: Timestamp
    pane_timing: str
    pane_index: int
    key: str
    value: float


class SumFn(beam.CombineFn):
    """(count, total) of float values."""

    def create_accumulator(self):
        return 0, 0.0

    def add_input(self, acc, value):
        return acc[0] + 1, acc[1] + value

    def merge_accumulators(self, accs):
        accs = list(accs)
        return sum(a[0] for a in accs), sum(a[1] for a in accs)

    def extract_output(self, acc):
        return acc


def count_of(x):
    """Records covered by a result (count, total); an input value is one."""
    return x[0] if isinstance(x, tuple) else 1


def make_row(key, result, pane):
    return PaneValue(key=key, value=result[1], **pane)


def _add(stream, *items):
    return stream.add_elements([
        TimestampedValue((key, value), Timestamp.of(T0 + offset))
        for key, value, offset in items])


def make_stream():
    stream = TestStream().advance_watermark_to(Timestamp.of(T0))
    _add(stream, ('a', 1.0, 1), ('b', 10.0, 2))
    stream.advance_processing_time(11)                     # EARLY pane 0
    _add(stream, ('a', 2.0, 3), ('b', 20.0, 4), ('a', 100.0, 61))
    stream.advance_watermark_to(Timestamp.of(T0 + 60))     # window 0 ON_TIME
    _add(stream, ('a', 5.0, 10))                           # late, accepted
    stream.advance_watermark_to(Timestamp.of(T0 + 130))    # window 1 ON_TIME
    return stream.advance_watermark_to_infinity()


# (window start offset, timing, index, key, value), accumulating panes.
EXPECTED = [
    (0, 'EARLY', 0, 'a', 1.0),
    (0, 'EARLY', 0, 'b', 10.0),
    (0, 'ON_TIME', 1, 'a', 3.0),
    (0, 'ON_TIME', 1, 'b', 30.0),
    (0, 'LATE', 2, 'a', 8.0),
    (60, 'ON_TIME', 0, 'a', 100.0),
]
FOLDERS = {0: '20260101T000000Z_20260101T000100Z',
           60: '20260101T000100Z_20260101T000200Z'}

EXPECTED_SCHEMA = pa.schema([
    pa.field('window_start', pa.timestamp('us', tz='UTC'), nullable=False),
    pa.field('window_end', pa.timestamp('us', tz='UTC'), nullable=False),
    pa.field('pane_timing', pa.string(), nullable=False),
    pa.field('pane_index', pa.int64(), nullable=False),
    pa.field('key', pa.string(), nullable=False),
    pa.field('value', pa.float64(), nullable=False),
])


def _projected(row):
    return (int(row.window_start.micros // 1_000_000) - T0, row.pane_timing,
            row.pane_index, row.key, row.value)


def run_streaming_sink(directory, check_panes=True):
    p = TestPipeline(options=PipelineOptions(
        runner='BundleBasedDirectRunner', streaming=True))
    trigger = windows.parse_trigger(
        'early=10s,late=1,lateness=5m,accumulating')
    rows = (p
            | make_stream()
            | windows.ApplyWindow(windows.parse_window('fixed:60s'), trigger)
            | AggregatePerKey(SumFn(), make_row, count_of, True, JOB))
    if check_panes:
        assert_that(rows | beam.Map(_projected), equal_to(EXPECTED),
                    label='PanesEmitted')
    rows | open_sink(f'parquet://{directory}', Context(JOB, True)).write(
        'table', PaneValue)
    p.run().wait_until_finish()


def _files(root):
    return sorted(p for p in pathlib.Path(root).rglob('*') if p.is_file())


def _row_tuple(row):
    start = row['window_start']
    end = row['window_end']
    assert end - start == datetime.timedelta(seconds=60), row
    return (int(start.timestamp()) - T0, row['pane_timing'], row['pane_index'],
            row['key'], row['value'])


@pytest.fixture(scope='module')
def streamed(tmp_path_factory):
    directory = tmp_path_factory.mktemp('parquet_stream')
    run_streaming_sink(directory)
    return directory


def test_files_are_placed_by_window_and_named_by_pane(streamed):
    files = _files(streamed)
    assert files, 'nothing written'
    groups = set()
    for path in files:
        rel = path.relative_to(streamed).parts
        assert len(rel) == 3 and rel[0] == 'table', path
        m = re.fullmatch(r'table-p(\d{4})-(EARLY|ON_TIME|LATE)-[0-9a-f]{16}'
                         r'\.parquet', rel[2])
        assert m, rel[2]
        groups.add((rel[1], int(m.group(1)), m.group(2)))
    expected_groups = {(FOLDERS[o], i, t) for o, t, i, _, _ in EXPECTED}
    # At least one file per (window, pane) group, and no other group.
    assert groups == expected_groups


def test_dataset_reads_back_every_pane_row(streamed):
    table = ds.dataset(streamed / 'table').to_table()
    rows = [_row_tuple(r) for r in table.to_pylist()]
    assert len(rows) == len(EXPECTED)        # one row per emitted pane
    assert sorted(rows) == sorted(EXPECTED)


def test_each_file_holds_one_window_and_pane_matching_its_name(streamed):
    for path in _files(streamed):
        rows = [_row_tuple(r) for r in pq.read_table(path).to_pylist()]
        assert rows, path
        panes = {(o, t, i) for o, t, i, _, _ in rows}
        assert len(panes) == 1, (path, rows)
        offset, timing, index = panes.pop()
        assert path.parent.name == FOLDERS[offset]
        assert path.name.startswith(f'table-p{index:04d}-{timing}-')


def test_file_schema_is_derived_from_the_record_type(streamed):
    assert schemas.arrow_schema(PaneValue).equals(EXPECTED_SCHEMA)
    for path in _files(streamed):
        schema = pq.read_schema(path)
        assert schema.equals(EXPECTED_SCHEMA, check_metadata=False), path


def test_a_rerun_rewrites_no_file(tmp_path):
    run_streaming_sink(tmp_path, check_panes=False)
    first = _files(tmp_path)
    assert len(first) >= len({(o, t, i) for o, t, i, _, _ in EXPECTED})
    # Backdate every file, so that a rewrite could not keep its time.
    for path in first:
        os.utime(path, ns=(10**18, 10**18))
    before = {p: (p.stat().st_mtime_ns, p.stat().st_ino, p.read_bytes())
              for p in first}
    run_streaming_sink(tmp_path, check_panes=False)
    after = _files(tmp_path)
    assert after == first
    assert {p: (p.stat().st_mtime_ns, p.stat().st_ino, p.read_bytes())
            for p in after} == before
    assert not [p for p in tmp_path.rglob('*') if '.tmp-' in p.name]
    assert len(ds.dataset(tmp_path / 'table').to_table()) == len(EXPECTED)


# ------------------------------------------------------------- dead letters

DEAD = [
    DeadLetter(b'\xff\xfe\x00raw', 'decode.test', 'not UTF-8: invalid byte',
               Timestamp(micros=(T0 + 5) * 1_000_000 + 123456), 'file://x'),
    DeadLetter(b'', 'decode.test', 'empty record',
               Timestamp(micros=T0 * 1_000_000 + 1), ''),
    DeadLetter(b'{"a": 1}\n', 'validate', 'missing service',
               Timestamp.of(T0 + 7), 'synthetic://logs'),
]


def _write_batch(uri, table, record_type, rows):
    p = TestPipeline(options=PipelineOptions(runner='BundleBasedDirectRunner'))
    p | beam.Create(rows) | open_sink(uri, Context(JOB)).write(
        table, record_type)
    p.run().wait_until_finish()


def test_dead_letters_go_under_unwindowed(tmp_path):
    _write_batch(f'parquet://{tmp_path}', 'dead_letter', DeadLetter, DEAD)
    files = _files(tmp_path)
    assert files
    for path in files:
        assert path.parent == tmp_path / 'dead_letter' / 'unwindowed'
        assert re.fullmatch(r'dead_letter-[0-9a-f]{16}\.parquet', path.name)
    rows = ds.dataset(tmp_path / 'dead_letter').to_table().to_pylist()
    got = sorted((r['raw'], r['stage'], r['reason'], r['error_time'],
                  r['source']) for r in rows)
    expected = sorted([
        (b'\xff\xfe\x00raw', 'decode.test', 'not UTF-8: invalid byte',
         datetime.datetime(2026, 1, 1, 0, 0, 5, 123456, tzinfo=UTC),
         'file://x'),
        (b'', 'decode.test', 'empty record',
         datetime.datetime(2026, 1, 1, 0, 0, 0, 1, tzinfo=UTC), ''),
        (b'{"a": 1}\n', 'validate', 'missing service',
         datetime.datetime(2026, 1, 1, 0, 0, 7, tzinfo=UTC),
         'synthetic://logs'),
    ])
    assert got == expected


def test_jsonl_sink_writes_rfc3339_times_and_bytes_as_text(tmp_path):
    _write_batch(f'jsonl://{tmp_path}', 'dead_letter', DeadLetter, DEAD)
    files = _files(tmp_path)
    assert files
    assert all(p.parent == tmp_path / 'dead_letter' / 'unwindowed'
               and p.suffix == '.jsonl' for p in files)
    lines = [line for p in files for line in p.read_bytes().split(b'\n')
             if line]
    docs = sorted((json.loads(line) for line in lines),
                  key=lambda d: d['error_time'])
    assert docs == [
        {'raw': '', 'stage': 'decode.test', 'reason': 'empty record',
         'error_time': '2026-01-01T00:00:00.000001Z', 'source': ''},
        {'raw': '\\xff\\xfe\x00raw', 'stage': 'decode.test',
         'reason': 'not UTF-8: invalid byte',
         'error_time': '2026-01-01T00:00:05.123456Z', 'source': 'file://x'},
        {'raw': '{"a": 1}\n', 'stage': 'validate', 'reason': 'missing service',
         'error_time': '2026-01-01T00:00:07Z', 'source': 'synthetic://logs'},
    ]
    # Every file ends with a newline: whole lines only.
    assert all(p.read_bytes().endswith(b'\n') for p in files)


def test_jsonl_rows_of_a_windowed_type_are_placed_by_their_fields(tmp_path):
    rows = [
        PaneValue(Timestamp.of(T0 + 60), Timestamp.of(T0 + 120), 'LATE', 3,
                  'k', 2.5),
        PaneValue(Timestamp.of(T0 + 60), Timestamp.of(T0 + 120), 'LATE', 3,
                  'j', -1.0),
    ]
    _write_batch(f'jsonl://{tmp_path}', 'panes', PaneValue, rows)
    files = _files(tmp_path)
    assert [p.relative_to(tmp_path).parts[:2] for p in files] == \
        [('panes', '20260101T000100Z_20260101T000200Z')] * len(files)
    assert all(p.name.startswith('panes-p0003-LATE-') for p in files)
    docs = [json.loads(line) for p in files
            for line in p.read_text().splitlines()]
    assert sorted(docs, key=lambda d: d['key']) == [
        {'window_start': '2026-01-01T00:01:00Z',
         'window_end': '2026-01-01T00:02:00Z', 'pane_timing': 'LATE',
         'pane_index': 3, 'key': 'j', 'value': -1.0},
        {'window_start': '2026-01-01T00:01:00Z',
         'window_end': '2026-01-01T00:02:00Z', 'pane_timing': 'LATE',
         'pane_index': 3, 'key': 'k', 'value': 2.5},
    ]


# ---------------------------------------------------------------- schemas

class Sparse(typing.NamedTuple):
    name: str
    seen: typing.Optional[Timestamp]
    score: typing.Optional[float]
    count: typing.Optional[int]
    payload: bytes
    flag: bool
    note: typing.Optional[str]


def test_to_arrow_round_trips_optional_nones_through_parquet():
    rows = [
        Sparse('x', None, None, None, b'\xff', True, None),
        Sparse('y', Timestamp(micros=T0 * 1_000_000 + 500_000), 1.5, 3, b'',
               False, 'n'),
        Sparse('z', Timestamp.of(0), 0.0, 0, b'\x00', False, ''),
    ]
    expected_schema = pa.schema([
        pa.field('name', pa.string(), nullable=False),
        pa.field('seen', pa.timestamp('us', tz='UTC'), nullable=True),
        pa.field('score', pa.float64(), nullable=True),
        pa.field('count', pa.int64(), nullable=True),
        pa.field('payload', pa.binary(), nullable=False),
        pa.field('flag', pa.bool_(), nullable=False),
        pa.field('note', pa.string(), nullable=True),
    ])
    table = schemas.to_arrow(rows, Sparse)
    assert table.schema.equals(expected_schema)
    buf = pyio.BytesIO()
    pq.write_table(table, buf)
    back = pq.read_table(pa.BufferReader(buf.getvalue()))
    assert back.schema.equals(expected_schema, check_metadata=False)
    assert back.to_pylist() == [
        {'name': 'x', 'seen': None, 'score': None, 'count': None,
         'payload': b'\xff', 'flag': True, 'note': None},
        {'name': 'y',
         'seen': datetime.datetime(2026, 1, 1, 0, 0, 0, 500000, tzinfo=UTC),
         'score': 1.5, 'count': 3, 'payload': b'', 'flag': False, 'note': 'n'},
        {'name': 'z', 'seen': datetime.datetime(1970, 1, 1, tzinfo=UTC),
         'score': 0.0, 'count': 0, 'payload': b'\x00', 'flag': False,
         'note': ''},
    ]
    assert back.column('seen').null_count == 1
    assert schemas.to_arrow([], Sparse).num_rows == 0


def test_a_type_without_arrow_mapping_is_refused_by_name():
    class Bad(typing.NamedTuple):
        when: datetime.datetime

    with pytest.raises(TypeError, match='Bad.when'):
        schemas.arrow_schema(Bad)


# ------------------------------------------------ deterministic order and name

class KeyedPane(typing.NamedTuple):
    IDENTITY_FIELDS = ('key', 'window_start', 'window_end', 'pane_timing',
                       'pane_index')
    window_start: Timestamp
    window_end: Timestamp
    pane_timing: str
    pane_index: int
    key: str
    value: float


class TiedPane(KeyedPane):
    """Identity fields that may tie (value is not part of them)."""
    IDENTITY_FIELDS = ('window_start',)


def _direct_write(directory, record_type, rows):
    """The sink's DoFn on one bundle, without a pipeline: path -> bytes."""
    # pylint: disable=import-outside-toplevel
    from apache_beam.transforms.window import GlobalWindow
    from transforms.io._windowed_files import WriteWindowedFilesFn
    fn = WriteWindowedFilesFn(
        str(directory), 'panes', record_type,
        lambda rs, _: '\n'.join(map(repr, rs)).encode(), '.txt', JOB)
    fn.start_bundle()
    for row in rows:
        fn.process(row, window=GlobalWindow(), pane=None)
    paths = [wv.value for wv in fn.finish_bundle()]
    return {pathlib.Path(p).name: pathlib.Path(p).read_bytes() for p in paths}


@pytest.mark.parametrize('record_type', [KeyedPane, TiedPane])
def test_file_name_and_content_do_not_depend_on_row_order(tmp_path,
                                                          record_type):
    start, end = Timestamp.of(T0), Timestamp.of(T0 + 60)
    rows = [record_type(start, end, 'ON_TIME', 0, f'k{i % 7}-{i}', i / 3)
            for i in range(40)]
    if record_type is TiedPane:
        rows += [rows[0]._replace(value=-1.0)]   # equal identity, other value
    first = _direct_write(tmp_path / 'a', record_type, rows)
    second = _direct_write(tmp_path / 'b', record_type, rows[::-1])
    assert len(first) == 1 and first == second
    (content,) = first.values()
    # Rows in a total order: by identity where it orders them, else by repr.
    if record_type is KeyedPane:
        expected = sorted(rows, key=lambda r: r.key)
    else:
        expected = sorted(rows, key=repr)
    assert content == '\n'.join(map(repr, expected)).encode()
    # Another row set gives another name.
    third = _direct_write(tmp_path / 'c', record_type, rows[1:])
    assert set(third) != set(first)


class _Recorder:
    """Standard output that records what is written and when it is flushed."""

    def __init__(self):
        self.events = []

    def write(self, text):
        self.events.append(('write', text))
        return len(text)

    def flush(self):
        self.events.append(('flush', None))


def test_the_console_sink_flushes_its_rows_when_a_bundle_ends(monkeypatch):
    """A pane printed to a pipe is seen when its bundle ends, not when the
    pipe's buffer fills."""
    from transforms import io as transforms_io
    import sys
    recorder = _Recorder()
    monkeypatch.setattr(sys, 'stdout', recorder)
    sink = transforms_io.open_sink('console://', transforms_io.Context(JOB))
    rows = [PaneValue(key='k', value=i, window_start=Timestamp(0),
                      window_end=Timestamp(60), pane_timing='ON_TIME',
                      pane_index=0) for i in range(3)]
    with beam.Pipeline(options=PipelineOptions(
            ['--runner=BundleBasedDirectRunner'])) as pipeline:
        _ = (pipeline | beam.Create(rows).with_output_types(PaneValue)
             | sink.write('values', PaneValue))
    writes = [i for i, (kind, _) in enumerate(recorder.events)
              if kind == 'write' and _.startswith('values\t')]
    assert len(writes) == 3
    assert ('flush', None) in recorder.events[writes[-1]:]


class KindValue(typing.NamedTuple):
    window_start: Timestamp
    window_end: Timestamp
    pane_timing: str
    pane_index: int
    kind: str
    value: float


@pytest.mark.parametrize('scheme', ['parquet', 'jsonl'])
def test_a_table_split_by_a_field_keeps_its_values_apart_for_the_roll_back(
        tmp_path, scheme):
    """A job's ROW_LATENESS (table -> (field, {value: lateness})): rows of
    one window and pane but of different values of the field go to
    different files, the value in the name, so that a restart's roll-back
    judges each by the lateness of the grouping that made it: at a horizon
    at the window's end, the rows of the value without lateness are final
    (kept), the others, under the job's hour, are not (removed)."""
    import time
    from transforms.io import _windowed_files
    start, end = Timestamp.of(T0), Timestamp.of(T0 + 300)
    rows = [KindValue(start, end, 'ON_TIME', 0, kind, float(i))
            for i, kind in enumerate(['price', 'a-b/c', 'price', 'a-b/c'])]
    declared = {'t': ('kind', {'price': 0.0})}
    p = TestPipeline(options=PipelineOptions(runner='BundleBasedDirectRunner'))
    p | beam.Create(rows) | open_sink(
        f'{scheme}://{tmp_path}', Context(JOB, row_lateness=declared)).write(
            't', KindValue)
    p.run().wait_until_finish()
    files = _files(tmp_path)
    names = sorted(re.sub('-[0-9a-f]{16}', '', path.name) for path in files)
    assert names == [f't-p0000-ON_TIME-kind=a-b%2Fc.{scheme}',
                     f't-p0000-ON_TIME-kind=price.{scheme}']
    removed = _windowed_files.roll_back(
        tmp_path, T0 + 300, time.time() + 60, 3600, row_lateness=declared)
    assert removed == 1
    left = _files(tmp_path)
    assert len(left) == 1 and 'kind=price' in left[0].name
    # Without the declaration both windows are open at that horizon.
    assert _windowed_files.roll_back(tmp_path, T0 + 300, time.time() + 60,
                                     3600) == 1
