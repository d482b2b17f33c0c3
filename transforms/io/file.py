"""``file://GLOB``: replay of files, one record per line (gzip/bzip2 by extension).

Event time comes from each payload, not from the file, so a replay gives the
same windows as the live stream did.  Lines are read as raw bytes; decoding
(and refusing non-UTF-8) is the decoder's job, so nothing is lost here.
"""
import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from transforms.io import Source, UriError

DESCRIPTION = 'replay files matching GLOB, one record per line (.gz/.bz2 too)'


def validate(uri, kind):
    uri.check_params(())
    if not uri.location:
        raise UriError(f'{uri.text}: no path; expected file://GLOB, '
                       f'e.g. file://logs/*.jsonl')


class FileSource(Source):
    def expand(self, pbegin):
        read = Metrics.counter(self.context.job, 'read')
        pattern = self.uri.location
        if not FileSystems.match([pattern])[0].metadata_list:
            raise UriError(f'{self.uri.text}: no file matches {pattern!r}')
        return (pbegin
                | 'ReadLines' >> beam.io.ReadFromText(
                    pattern, coder=beam.coders.BytesCoder())
                | 'CountRead' >> beam.Map(_count, read))


def _count(raw, counter):
    counter.inc()
    return raw


def open_source(uri, context):
    return FileSource(uri, context)
