"""``console://``: print each row as one JSON line prefixed by its table (for
trying a job out; not for production)."""
import sys

import apache_beam as beam
import orjson
from apache_beam.metrics import Metrics

from transforms import schemas
from transforms.io import Sink

DESCRIPTION = 'print rows as JSON lines on standard output (for trying things)'


def validate(uri, kind):
    uri.check_params(())


class _Print(beam.DoFn):
    def __init__(self, table, job, rows_counter):
        self._table = table
        self._rows = Metrics.counter(job, rows_counter)

    def process(self, row):
        line = orjson.dumps(schemas.to_json_dict(row)).decode()
        sys.stdout.write(f'{self._table}\t{line}\n')
        self._rows.inc()
        return ()

    def finish_bundle(self):
        # A pane is seen when its bundle ends, not when a pipe's buffer
        # fills (standard output to a pipe is block-buffered).
        sys.stdout.flush()


class ConsoleSink(Sink):
    def write(self, table, record_type):
        return beam.ParDo(_Print(table, self.context.job,
                                 self.rows_counter(table)))


def open_sink(uri, context):
    return ConsoleSink(uri, context)
