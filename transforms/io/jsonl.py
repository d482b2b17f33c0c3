"""``jsonl://DIR``: JSON lines under DIR/TABLE/, one set of files per window and
pane; times as RFC 3339 UTC, bytes as text with backslash escapes."""
import orjson

from transforms import schemas
from transforms.io import Sink, UriError
from transforms.io._windowed_files import (WriteWindowedFiles,
                                            check_writable, split_field)

DESCRIPTION = 'JSON lines under DIR/TABLE/, one set per window and pane'


def validate(uri, kind):
    uri.check_params(())
    if not uri.location:
        raise UriError(f'{uri.text}: no directory; expected jsonl://DIR')


def preflight_sink(uri):
    """The directory can be made and written (before a local run)."""
    check_writable(uri.location, uri.text)


def encode_jsonl(rows, record_type):
    return b''.join(
        orjson.dumps(schemas.to_json_dict(row)) + b'\n' for row in rows)


class JsonlSink(Sink):
    def write(self, table, record_type):
        return WriteWindowedFiles(self.uri.location, table, record_type,
                                  encode_jsonl, '.jsonl', self.context.job,
                                  self.rows_counter(table),
                                  split_field(self.context, table))


def open_sink(uri, context):
    return JsonlSink(uri, context)
