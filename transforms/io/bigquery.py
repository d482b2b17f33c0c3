"""``bigquery://PROJECT:DATASET.TABLE_PREFIX``: BigQuery tables as a sink.

Each output table goes to the table ``TABLE_PREFIX + TABLE`` of the dataset
(``bigquery://my-proj:analytics.logs_`` writes ``logs_service_stats``,
``logs_alerts`` ...; without a prefix the table keeps its name).  The dataset
must exist; tables are created on first write with the schema derived from
the record type (Optional fields NULLABLE, the others REQUIRED), partitioned
by day of ``window_start`` (or of the record's first timestamp where it has
no window, e.g. ``error_time`` of dead letters).

``method``: ``auto`` (the default: streaming inserts in a streaming job, load
jobs in a batch run), ``streaming_inserts``, ``file_loads`` or
``storage_write_api`` (Beam's Java sink; needs a runner with a Java expansion
service).  Load jobs stage files in ``temp=gs://BUCKET/DIR`` (default: the
job's ``--temp_location``).  ``partition=DAY|HOUR|MONTH|YEAR``.

Rows BigQuery refuses (streaming inserts report them row by row) are routed to
the dead letters: they are written to the dataset's ``TABLE_PREFIX +
dead_letter`` table with the refused row as JSON, stage ``sink.bigquery`` and
BigQuery's reason, and counted as ``rejected.TABLE``.  Transient errors are
retried; a load job that fails stops the batch run (as BigQuery refuses the
whole load).

With ``BIGQUERY_EMULATOR_HOST`` set (``http://HOST:PORT``), the sink talks to
a BigQuery emulator with anonymous credentials, through the same Beam
transform.
"""
import datetime
import os
import re
import typing

import apache_beam as beam
import orjson
from apache_beam.io.gcp.bigquery_tools import RetryStrategy
from apache_beam.metrics import Metrics
from apache_beam.utils.timestamp import Timestamp

from transforms import schemas
from transforms.deadletter import DeadLetter
from transforms.io import Sink, UriError

DESCRIPTION = ('BigQuery tables PREFIX+TABLE, e.g. bigquery://my-project:'
               'analytics.logs_ (method=auto|streaming_inserts|file_loads|'
               'storage_write_api, temp=gs://..., partition=DAY)')
EMULATOR_ENV = 'BIGQUERY_EMULATOR_HOST'
_LOCATION = re.compile(r'(?P<project>[a-z][-a-z0-9.:]*[a-z0-9]):'
                       r'(?P<dataset>[A-Za-z0-9_]{1,1024})'
                       r'(\.(?P<prefix>[A-Za-z0-9_]*))?')
METHODS = {
    'streaming_inserts': beam.io.WriteToBigQuery.Method.STREAMING_INSERTS,
    'file_loads': beam.io.WriteToBigQuery.Method.FILE_LOADS,
    'storage_write_api': beam.io.WriteToBigQuery.Method.STORAGE_WRITE_API,
}
PARTITIONS = ('DAY', 'HOUR', 'MONTH', 'YEAR')
DEAD_LETTER_TABLE = 'dead_letter'


class Location(typing.NamedTuple):
    project: str
    dataset: str
    prefix: str

    def table(self, name) -> str:
        return f'{self.project}:{self.dataset}.{self.prefix}{name}'


def location(uri) -> Location:
    match = _LOCATION.fullmatch(uri.location)
    if not match:
        raise UriError(f'{uri.text}: expected bigquery://PROJECT:DATASET or '
                       f'bigquery://PROJECT:DATASET.TABLE_PREFIX')
    return Location(match['project'], match['dataset'], match['prefix'] or '')


def validate(uri, kind):
    uri.check_params(('method', 'temp', 'partition'))
    location(uri)
    method = uri.param('method', 'auto')
    if method != 'auto' and method not in METHODS:
        raise UriError(f'{uri.text}: method must be auto, '
                       f'{", ".join(METHODS)}')
    if uri.param('partition', 'DAY') not in PARTITIONS:
        raise UriError(f'{uri.text}: partition must be one of '
                       f'{", ".join(PARTITIONS)}')


def preflight_sink(uri, timeout=10):
    """BigQuery (or its emulator) answers and the dataset exists, before a
    local job writes to it."""
    from google.api_core import exceptions  # pylint: disable=import-outside-toplevel
    from google.auth import exceptions as auth  # pylint: disable=import-outside-toplevel
    where = location(uri)
    try:
        client = emulator_client(where.project)
        client = client.gcp_client if client is not None else \
            _production_client(where.project)
        from google.cloud import bigquery  # pylint: disable=import-outside-toplevel
        client.get_dataset(f'{where.project}.{where.dataset}',
                           timeout=timeout, retry=bigquery.DEFAULT_RETRY
                           .with_deadline(timeout))
    except exceptions.NotFound:
        raise UriError(f'{uri.text}: no dataset {where.dataset!r} in '
                       f'project {where.project!r}') from None
    except (exceptions.GoogleAPIError, auth.GoogleAuthError, OSError) as e:
        reason = ' '.join(str(e).split())[:300]
        raise UriError(f'{uri.text}: BigQuery does not answer '
                       f'({type(e).__name__}: {reason})') from None


def _production_client(project):
    from google.cloud import bigquery  # pylint: disable=import-outside-toplevel
    return bigquery.Client(project=project)


def partition_field(record_type) -> typing.Optional[str]:
    hints = typing.get_type_hints(record_type)
    if 'window_start' in hints:
        return 'window_start'
    for name, hint in hints.items():
        if hint is Timestamp:
            return name
    return None


def emulator_client(project):
    """Beam's BigQuery client pointed at an emulator, or None (production)."""
    host = os.environ.get(EMULATOR_ENV)
    if not host:
        return None
    if '://' not in host:
        host = f'http://{host}'
    from transforms.io._bq_emulator import EmulatorBigQueryClient  # pylint: disable=import-outside-toplevel
    return EmulatorBigQueryClient(host, project)


def _to_row(row, counter):
    counter.inc()
    return schemas.to_bigquery_dict(row)


def _to_dead_letter(failed, table, source, counter):
    """A row BigQuery refused -> a dead letter naming the table and reason."""
    counter.inc()
    destination, row, errors = failed
    reasons = '; '.join(
        f'{e.get("reason", "error")}'
        + (f' at {e["location"]}' if e.get('location') else '')
        + (f': {e["message"]}' if e.get('message') else '')
        for e in (errors or [])) or 'refused'
    return DeadLetter(
        raw=orjson.dumps(row), stage='sink.bigquery',
        reason=f'{destination} ({table}): {reasons}'[:1000],
        error_time=Timestamp.of(
            datetime.datetime.now(datetime.timezone.utc).timestamp()),
        source=source)


class _WriteTable(beam.PTransform):
    """``PCollection[record_type]`` -> ``PCollection[DeadLetter]`` (the rows
    BigQuery refused, also written to the dead-letter table)."""

    def __init__(self, sink, table, record_type):
        super().__init__()
        self._sink = sink
        self._table = table
        self._record_type = record_type

    def _write(self, label, rows, table, record_type, method):
        sink = self._sink
        where = location(sink.uri)
        field = partition_field(record_type)
        extra = {'timePartitioning': {
            'type': sink.uri.param('partition', 'DAY'), 'field': field}} \
            if field else {}
        client = emulator_client(where.project)
        return rows | label >> beam.io.WriteToBigQuery(
            table=where.table(table),
            schema=schemas.bigquery_schema(record_type),
            method=method,
            create_disposition=beam.io.BigQueryDisposition.CREATE_IF_NEEDED,
            write_disposition=beam.io.BigQueryDisposition.WRITE_APPEND,
            additional_bq_parameters=extra,
            insert_retry_strategy=RetryStrategy.RETRY_ON_TRANSIENT_ERROR,
            custom_gcs_temp_location=sink.uri.param('temp'),
            # An emulator loads from local files, not gs:// ones.
            validate=client is None,
            test_client=client)

    def expand(self, rows):
        sink = self._sink
        job = sink.context.job
        method = METHODS.get(sink.uri.param('method', 'auto'))
        if method is None:
            method = METHODS['streaming_inserts'] if sink.context.streaming \
                else METHODS['file_loads']
        result = self._write(
            'Write', rows | 'ToRow' >> beam.Map(
                _to_row, Metrics.counter(job, sink.rows_counter(self._table))),
            self._table, self._record_type, method)
        if method != METHODS['streaming_inserts']:
            return result.destination_load_jobid_pairs \
                if method == METHODS['file_loads'] else result
        refused = result.failed_rows_with_errors | 'Refused' >> beam.Map(
            _to_dead_letter, self._table, sink.uri.text,
            Metrics.counter(job, f'rejected.{self._table}')
        ).with_output_types(DeadLetter)
        if self._table != DEAD_LETTER_TABLE:
            _ = self._write(
                'WriteRefused', refused | 'DeadLetterRow' >> beam.Map(
                    _to_row, Metrics.counter(
                        job, sink.rows_counter(DEAD_LETTER_TABLE))),
                DEAD_LETTER_TABLE, DeadLetter, method)
        return refused


class BigQuerySink(Sink):
    def write(self, table, record_type):
        return _WriteTable(self, table, record_type)


def open_sink(uri, context):
    return BigQuerySink(uri, context)
