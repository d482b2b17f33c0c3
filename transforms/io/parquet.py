"""``parquet://DIR``: one sub-directory per output table, one set of files per
window and pane (see :mod:`transforms.io._windowed_files`).  Read a table back
with ``pyarrow.dataset.dataset('DIR/TABLE')``.  The Parquet schema is derived
from the table's record type."""
import pyarrow.parquet as pq

from transforms import schemas
from transforms.io import Sink, UriError
from transforms.io._windowed_files import (WriteWindowedFiles,
                                            WriteWindowedTables, buffer_bytes,
                                            check_writable, split_field)

DESCRIPTION = 'Parquet files under DIR/TABLE/, one set per window and pane'


def validate(uri, kind):
    uri.check_params(('compression',))
    if not uri.location:
        raise UriError(f'{uri.text}: no directory; expected parquet://DIR')
    if uri.param('compression', 'zstd') not in ('zstd', 'snappy', 'gzip', 'none'):
        raise UriError(f'{uri.text}: compression must be zstd, snappy, gzip '
                       f'or none')


def preflight_sink(uri):
    """The directory can be made and written (before a local run)."""
    check_writable(uri.location, uri.text)


# Tables with fewer rows are written without dictionary encoding: a pane's
# file holds a few rows, whose dictionaries cost a third of its encoding
# and save nothing.
DICTIONARY_MIN_ROWS = 1000


def write_parquet(table, buf, compression):
    pq.write_table(table, buf, compression=compression,
                   use_dictionary=table.num_rows >= DICTIONARY_MIN_ROWS)


def encode_parquet(rows, record_type, compression='zstd'):
    table = schemas.to_arrow(rows, record_type)
    return buffer_bytes(lambda buf: write_parquet(table, buf, compression))


class _Encoder:
    def __init__(self, compression):
        self.compression = compression

    def __call__(self, rows, record_type):
        return encode_parquet(rows, record_type, self.compression)


class _TableEncoder:
    def __init__(self, compression):
        self.compression = compression

    def __call__(self, table):
        return buffer_bytes(lambda buf: write_parquet(
            table, buf, self.compression))


class ParquetSink(Sink):
    def write(self, table, record_type):
        return WriteWindowedFiles(
            self.uri.location, table, record_type,
            _Encoder(self.uri.param('compression', 'zstd')), '.parquet',
            self.context.job, self.rows_counter(table),
            split_field(self.context, table))

    def write_tables(self, table, record_type):
        if not (hasattr(record_type, 'IDENTITY_FIELDS')
                and 'window_start' in record_type._fields) or \
                split_field(self.context, table):
            return super().write_tables(table, record_type)
        compression = self.uri.param('compression', 'zstd')
        return WriteWindowedTables(
            self.uri.location, table, record_type, _Encoder(compression),
            _TableEncoder(compression), '.parquet', self.context.job,
            self.rows_counter(table))


def open_sink(uri, context):
    return ParquetSink(uri, context)
