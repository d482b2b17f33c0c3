"""Output schemas derived from the record types: one definition, never restated.

A record type is a ``typing.NamedTuple`` (registered as a Beam schema with
``RowCoder``).  Its Arrow schema — and from it the Parquet and BigQuery schemas —
is derived here from the type hints.
"""
import base64
import datetime
import functools
import typing

import pyarrow as pa
from apache_beam.utils.timestamp import Timestamp

_ARROW = {
    str: pa.string(),
    int: pa.int64(),
    float: pa.float64(),
    bool: pa.bool_(),
    bytes: pa.binary(),
    Timestamp: pa.timestamp('us', tz='UTC'),
}


def _unwrap_optional(hint):
    if typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return hint, False


@functools.lru_cache(maxsize=None)
def arrow_schema(record_type) -> pa.Schema:
    """The Arrow schema of a NamedTuple record type (kept per type: every
    file a sink writes asks for it)."""
    fields = []
    for name, hint in typing.get_type_hints(record_type).items():
        base, nullable = _unwrap_optional(hint)
        if base not in _ARROW:
            raise TypeError(
                f'{record_type.__name__}.{name}: type {hint} has no Arrow '
                f'mapping; use one of {sorted(t.__name__ for t in _ARROW)}')
        fields.append(pa.field(name, _ARROW[base], nullable=nullable))
    return pa.schema(fields)


def _convert(value):
    if isinstance(value, Timestamp):
        return value.micros
    return value


def to_arrow(rows, record_type) -> pa.Table:
    """A list of records (NamedTuples of ``record_type``) as an Arrow table."""
    schema = arrow_schema(record_type)
    columns = list(zip(*rows)) if rows else [[] for _ in schema]
    arrays = []
    for field, column in zip(schema, columns):
        if pa.types.is_timestamp(field.type):
            # Rows of a pane share their window's Timestamps: convert each
            # distinct object once.
            seen = {}
            column = [None if v is None else
                      seen[id(v)] if id(v) in seen else
                      seen.setdefault(id(v), _convert(v)) for v in column]
            arrays.append(pa.array(column, type=pa.int64()).cast(field.type))
        else:
            arrays.append(pa.array(list(column), type=field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def from_arrow(table: pa.Table, record_type) -> list:
    """The rows of an Arrow table (of ``record_type``'s schema) as records,
    times as Timestamps: the inverse of :func:`to_arrow`."""
    schema = arrow_schema(record_type)
    columns = []
    for field in schema:
        column = table[field.name]
        if pa.types.is_timestamp(field.type):
            column = [None if v is None else Timestamp(micros=v)
                      for v in column.cast(pa.int64()).to_pylist()]
        else:
            column = column.to_pylist()
        columns.append(column)
    return [record_type(*values) for values in zip(*columns)]


def rfc3339(value: Timestamp) -> str:
    """A timestamp as RFC 3339 UTC text, e.g. 2026-01-01T00:00:00.500000Z."""
    return (datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
            + datetime.timedelta(microseconds=value.micros)
            ).isoformat().replace('+00:00', 'Z')


def to_json_dict(row) -> dict:
    """A record as a JSON-ready dict: times as RFC 3339 UTC, bytes as text."""
    out = {}
    for name, value in row._asdict().items():
        if isinstance(value, Timestamp):
            value = rfc3339(value)
        elif isinstance(value, bytes):
            value = value.decode('utf-8', errors='backslashreplace')
        out[name] = value
    return out


_BIGQUERY = {
    str: 'STRING',
    int: 'INT64',
    float: 'FLOAT64',
    bool: 'BOOL',
    bytes: 'BYTES',
    Timestamp: 'TIMESTAMP',
}


def bigquery_schema(record_type) -> dict:
    """The BigQuery table schema of a record type (``{'fields': [...]}``):
    Optional fields are NULLABLE, the others REQUIRED."""
    fields = []
    for name, hint in typing.get_type_hints(record_type).items():
        base, nullable = _unwrap_optional(hint)
        if base not in _BIGQUERY:
            raise TypeError(f'{record_type.__name__}.{name}: type {hint} has '
                            f'no BigQuery mapping')
        fields.append({'name': name, 'type': _BIGQUERY[base],
                       'mode': 'NULLABLE' if nullable else 'REQUIRED'})
    return {'fields': fields}


def to_bigquery_dict(row) -> dict:
    """A record as a BigQuery JSON row: times as RFC 3339 UTC, bytes base64."""
    out = to_json_dict(row)
    for name, value in row._asdict().items():
        if isinstance(value, bytes):
            out[name] = base64.b64encode(value).decode('ascii')
    return out
