"""``deadletters://DIR``: the raw payloads of dead letters, read back as a
source, to replay them through a job once the cause is fixed.

DIR is what a job's ``--sink`` or ``--dead_letter`` wrote to (``parquet://DIR``
or ``jsonl://DIR``): its ``dead_letter/`` table is read (DIR may also be that
table's own directory).  Every dead letter whose stage starts with one of
``stage=PREFIX,...`` (default ``decode``: records a decoder refused) gives its
raw payload, exactly as first read (Parquet keeps the bytes; JSON lines keep
text, with bytes that were not UTF-8 as backslash escapes); dead letters of
other stages (rows a sink refused, say, which are output rows and not input
records) are passed over and counted as ``replay.skipped``.  Each payload
replayed is counted as ``read``, so the run summary says how many are
decoded now and how many are refused again (in the new dead letters).

The logs job masks personal data in the dead letters it writes: a replay
reads the masked payloads.
"""
import apache_beam as beam
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from transforms.io import Source, UriError

DESCRIPTION = ('replay the raw payloads of the dead letters written under DIR '
               '(a parquet:// or jsonl:// sink directory); stage=PREFIX,... '
               'picks the stages replayed (default: decode)')
TABLE = 'dead_letter'
EXTENSIONS = ('.parquet', '.jsonl')
DEFAULT_STAGES = 'decode'


def validate(uri, kind):
    uri.check_params(('stage',))
    if not uri.location:
        raise UriError(f'{uri.text}: no directory; expected deadletters://DIR')
    if not _stages(uri):
        raise UriError(f'{uri.text}: stage= names no stage prefix')
    if kind == 'source' and not dead_letter_files(uri.location):
        raise UriError(
            f'{uri.text}: no dead-letter files (*.parquet, *.jsonl) under '
            f'{uri.location!r} or {uri.location.rstrip("/") + "/" + TABLE!r}')


def _stages(uri) -> tuple:
    return tuple(s.strip() for s in
                 uri.param('stage', DEFAULT_STAGES).split(',') if s.strip())


def dead_letter_files(directory: str) -> list:
    """The dead-letter files of a sink directory (DIR/dead_letter/*/FILE)
    or of the table directory itself (DIR/*/FILE), sorted."""
    root = directory.rstrip('/')
    for table_dir in (f'{root}/{TABLE}', root):
        patterns = [f'{table_dir}/*/*{ext}' for ext in EXTENSIONS]
        found = sorted(m.path for result in FileSystems.match(patterns)
                       for m in result.metadata_list)
        if found:
            return found
    return []


def read_dead_letters(path: str):
    """(raw payload bytes, stage) of each dead letter in one file."""
    with FileSystems.open(path) as f:
        data = f.read()
    if path.endswith('.parquet'):
        table = pq.read_table(pa.BufferReader(pa.py_buffer(data)),
                              columns=['raw', 'stage'])
        for raw, stage in zip(table.column('raw').to_pylist(),
                              table.column('stage').to_pylist()):
            yield raw or b'', stage or ''
        return
    for line in data.splitlines():
        if not line.strip():
            continue
        row = orjson.loads(line)
        raw = row.get('raw') or ''
        yield (raw.encode('utf-8', errors='surrogateescape')
               if isinstance(raw, str) else bytes(raw)), row.get('stage') or ''


def _paths(unused_impulse, directory):
    yield from dead_letter_files(directory)


class _PayloadsFn(beam.DoFn):
    """A dead-letter file -> the raw payloads of the stages replayed."""

    def __init__(self, job, stages):
        self._read = Metrics.counter(job, 'read')
        self._skipped = Metrics.counter(job, 'replay.skipped')
        self._stages = stages

    def process(self, path):
        for raw, stage in read_dead_letters(path):
            if stage.startswith(self._stages):
                self._read.inc()
                yield raw
            else:
                self._skipped.inc()


class DeadLettersSource(Source):
    def expand(self, pbegin):
        directory = self.uri.location
        if not dead_letter_files(directory):
            raise UriError(f'{self.uri.text}: no dead-letter files under '
                           f'{directory!r}')
        return (pbegin
                | 'Impulse' >> beam.Impulse()
                | 'Match' >> beam.FlatMap(_paths, directory)
                | 'Spread' >> beam.Reshuffle()
                | 'Payloads' >> beam.ParDo(_PayloadsFn(
                    self.context.job, _stages(self.uri))))


def open_source(uri, context):
    return DeadLettersSource(uri, context)
