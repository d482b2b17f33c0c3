"""``file://GLOB``: replay of files, one record per line (gzip/bzip2 by extension).

Event time comes from each payload, not from the file, so a replay gives the
same windows as the live stream did.  Lines are read as raw bytes; decoding
(and refusing non-UTF-8) is the decoder's job, so nothing is lost here.

Two ways to read: one element per line (the reference path), or
:class:`~transforms.columnar.LineBlock` s of whole lines, about
``block_bytes`` each (the columnar fast path; ``?block_bytes=N``, default
4 MiB).  A file is one unit of parallelism.
"""
import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from transforms.columnar import LineBlock
from transforms.io import Source, UriError, counted

DESCRIPTION = ('replay files matching GLOB, one record per line (.gz/.bz2 '
               'too); block_bytes=N sets the read size of the columnar path')
DEFAULT_BLOCK_BYTES = 4 << 20


def validate(uri, kind):
    uri.check_params(('block_bytes',))
    if not uri.location:
        raise UriError(f'{uri.text}: no path; expected file://GLOB, '
                       f'e.g. file://logs/*.jsonl')
    if uri.param('block_bytes', DEFAULT_BLOCK_BYTES, int) < 1:
        raise UriError(f'{uri.text}: block_bytes must be at least 1')
    if kind == 'source':
        _check_matches(uri)


def _check_matches(uri):
    """A replay of nothing is a mistake: say so before anything starts."""
    if not FileSystems.match([uri.location])[0].metadata_list:
        raise UriError(f'{uri.text}: no file matches {uri.location!r}')


def _matching_paths(unused_impulse, pattern):
    for metadata in FileSystems.match([pattern])[0].metadata_list:
        yield metadata.path


class _BlocksFn(beam.DoFn):
    """A file path -> LineBlocks of whole lines."""

    def __init__(self, job, block_bytes):
        self._read = Metrics.counter(job, 'read')
        self._block_bytes = block_bytes

    def process(self, path):
        # FileSystems.open decompresses .gz/.bz2 by extension.
        with FileSystems.open(path) as f:
            rest = b''
            while True:
                chunk = f.read(self._block_bytes)
                if not chunk:
                    break
                data = rest + chunk
                cut = data.rfind(b'\n')
                if cut < 0:
                    rest = data
                    continue
                rest = data[cut + 1:]
                yield self._block(data[:cut])
            if rest:
                yield self._block(rest)

    def _block(self, data):
        self._read.inc(data.count(b'\n') + 1)
        return LineBlock(data)


class FileSource(Source):
    def _pattern(self):
        _check_matches(self.uri)
        return self.uri.location

    def expand(self, pbegin):
        read = Metrics.counter(self.context.job, 'read')
        return (pbegin
                | 'ReadLines' >> beam.io.ReadFromText(
                    self._pattern(), coder=beam.coders.BytesCoder())
                | 'CountRead' >> beam.Map(counted, read))

    def blocks(self):
        pattern = self._pattern()
        block_bytes = self.uri.param('block_bytes', DEFAULT_BLOCK_BYTES, int)
        job = self.context.job
        # Impulse -> paths -> (spread over workers) -> blocks: only
        # primitives every portable runner executes.
        return ('Impulse' >> beam.Impulse()
                | 'Match' >> beam.FlatMap(_matching_paths, pattern)
                | 'Spread' >> beam.Reshuffle()
                | 'Blocks' >> beam.ParDo(_BlocksFn(job, block_bytes)))


def open_source(uri, context):
    return FileSource(uri, context)
