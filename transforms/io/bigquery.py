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

Every row carries one column more than its record type: ``written_at``
(TIMESTAMP), when the sink wrote it.  A local run that resumes a Kafka
group's last commit, or a Pub/Sub subscription's last acknowledgement,
removes first (:func:`roll_back`, one ``DELETE`` per table) what the killed
run wrote after it: rows written after the commit, and rows of windows not
final at its horizon for the grouping that made them (``window_end`` +
allowed lateness after it: the job's, or the one its ``ROW_LATENESS`` gives
rows of a field's value), which the restart writes again, as
``transforms/io/_windowed_files.py`` does for files.  The Pub/Sub acknowledgement state such a restart needs lives in the
same dataset, in the table ``TABLE_PREFIX + pubsub_acks`` (:class:`AckState`:
appended to, one row per state, never updated).  BigQuery refuses a
``DELETE`` of rows still in the streaming buffer of ``tabledata.insertAll``
(streaming inserts of the last 30 minutes or so): such a restart stops
with one line saying so.

With ``BIGQUERY_EMULATOR_HOST`` set (``http://HOST:PORT``), the sink talks to
a BigQuery emulator with anonymous credentials, through the same Beam
transform.
"""
import datetime
import json
import os
import re
import threading
import time
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
# The column the sink adds to every row: when it wrote the row.
WRITTEN_AT = 'written_at'
WRITTEN_AT_FIELD = {'name': WRITTEN_AT, 'type': 'TIMESTAMP',
                    'mode': 'REQUIRED'}
# The table (after the prefix) holding a Pub/Sub restart's state.
ACK_STATE_TABLE = 'pubsub_acks'


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


def _stamp(seconds) -> str:
    return datetime.datetime.fromtimestamp(
        seconds, datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%S.%fZ')


def table_schema(record_type) -> dict:
    """The BigQuery schema of a table of ``record_type`` rows: its fields,
    then ``written_at``."""
    schema = schemas.bigquery_schema(record_type)
    return {'fields': schema['fields'] + [dict(WRITTEN_AT_FIELD)]}


def _to_row(row, counter):
    counter.inc()
    out = schemas.to_bigquery_dict(row)
    out[WRITTEN_AT] = _stamp(time.time())
    return out


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
            schema=table_schema(record_type),
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
        # In the global window: Beam's streaming inserts group their rows
        # (a Reshuffle) in the rows' own windows, and that GroupByKey drops
        # a row whose window is behind the watermark, i.e. every LATE pane
        # (and every pane a restart writes again behind its resumed
        # watermark).  A row is a finished value: its window is in its
        # columns.
        rows = rows | 'Unwindowed' >> beam.WindowInto(
            beam.window.GlobalWindows())
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


# --------------------------------------------------------------------------
# A restart's roll-back (pipelines/run.py) and Pub/Sub state.

def _client(project):
    """A google-cloud-bigquery client: the emulator's or production's."""
    client = emulator_client(project)
    return client.gcp_client if client is not None else \
        _production_client(project)


def _query(client, uri, sql, parameters):
    from google.api_core import exceptions  # pylint: disable=import-outside-toplevel
    from google.cloud import bigquery  # pylint: disable=import-outside-toplevel
    config = bigquery.QueryJobConfig(query_parameters=parameters)
    try:
        job = client.query(sql, job_config=config)
        rows = list(job.result())
    except exceptions.GoogleAPIError as e:
        reason = ' '.join(str(e).split())[:300]
        if 'streaming buffer' in reason:
            raise UriError(
                f'{uri.text}: the rows to roll back are still in BigQuery\'s '
                f'streaming buffer, which refuses DELETE (streaming inserts '
                f'of the last 30 minutes or so); restart later') from None
        raise UriError(f'{uri.text}: rolling back failed '
                       f'({type(e).__name__}: {reason})') from None
    return job, rows


# The latest timestamp BigQuery holds (9999-12-31), in seconds.
_MAX_SECONDS = 253402300799.0


def _stamp_parameter(name, seconds):
    from google.cloud import bigquery  # pylint: disable=import-outside-toplevel
    return bigquery.ScalarQueryParameter(
        name, 'TIMESTAMP', datetime.datetime.fromtimestamp(
            seconds, datetime.timezone.utc))


def _open_windows(horizon, lateness, declared, columns):
    """The SQL condition (and its parameters) of the rows whose window was
    not final at ``horizon`` for the grouping that made them: ``window_end``
    + ``lateness`` after it, or, for a row whose ``declared`` field (a
    job's ROW_LATENESS: (field, {value: seconds})) has a value given there,
    + that value's lateness.  None where no row's can be."""
    from google.cloud import bigquery  # pylint: disable=import-outside-toplevel
    field, by_value = declared if declared and declared[0] in columns \
        else (None, {})
    values = sorted(by_value)
    parts = []
    for i, value in enumerate(values):
        if horizon - by_value[value] < _MAX_SECONDS:
            parts.append(f'({field} = @value_{i} AND '
                         f'window_end > @final_before_{i})')
    if horizon - lateness < _MAX_SECONDS:
        listed = ', '.join(f'@value_{i}' for i in range(len(values)))
        parts.append(f'(({field} IS NULL OR {field} NOT IN ({listed})) AND '
                     f'window_end > @final_before)' if values
                     else '(window_end > @final_before)')
    if not parts:
        return None, []
    sql = ' OR '.join(parts)
    parameters = []
    if re.search(r'@final_before\b', sql):
        parameters.append(_stamp_parameter('final_before',
                                           horizon - lateness))
    for i, value in enumerate(values):
        if re.search(rf'@value_{i}\b', sql):
            parameters.append(bigquery.ScalarQueryParameter(
                f'value_{i}', 'STRING', value))
        if f'@final_before_{i})' in sql:
            parameters.append(_stamp_parameter(f'final_before_{i}',
                                               horizon - by_value[value]))
    return sql, parameters


def roll_back(uri, tables, horizon, committed_at, lateness,
              row_lateness=None) -> int:
    """Removes from the ``tables`` (names after the prefix) of the
    ``bigquery://`` sink ``uri`` what a killed run wrote after its source's
    last commit: rows written after ``committed_at``, and rows of windows
    not final at ``horizon`` for the grouping that made them
    (``window_end`` + ``lateness`` after it, or the lateness a job's
    ``row_lateness``, table -> (field, {value: seconds}), gives rows of that
    value; the dead letters have no window).  The restart writes them
    again.  Returns the number of rows removed."""
    from google.api_core import exceptions  # pylint: disable=import-outside-toplevel
    from google.cloud import bigquery  # pylint: disable=import-outside-toplevel
    preflight_sink(uri)       # one line, soon, where BigQuery does not answer
    where = location(uri)
    client = _client(where.project)
    removed = 0
    for name in tables:
        table_id = f'{where.project}.{where.dataset}.{where.prefix}{name}'
        try:
            columns = {f.name for f in client.get_table(table_id).schema}
        except exceptions.NotFound:
            continue
        except exceptions.GoogleAPIError as e:
            raise UriError(f'{uri.text}: BigQuery does not answer '
                           f'({type(e).__name__})') from None
        conditions, parameters = [], []
        if WRITTEN_AT in columns:
            conditions.append(f'{WRITTEN_AT} > @committed_at')
            parameters.append(bigquery.ScalarQueryParameter(
                'committed_at', 'TIMESTAMP', datetime.datetime.fromtimestamp(
                    min(committed_at, _MAX_SECONDS), datetime.timezone.utc)))
        if name != DEAD_LETTER_TABLE and 'window_end' in columns:
            condition, found = _open_windows(
                horizon, lateness, (row_lateness or {}).get(name), columns)
            if condition is not None:
                conditions.append(f'({condition})')
                parameters.extend(found)
        if not conditions:
            continue
        job, _ = _query(client, uri, f'DELETE FROM `{table_id}` WHERE '
                        + ' OR '.join(conditions), parameters)
        removed += job.num_dml_affected_rows or 0
    return removed


def origins_written(uri, source) -> set:
    """The tags of the dead letters from ``source`` (its URI text) in the
    dead-letter table of the ``bigquery://`` sink ``uri`` (as
    ``deadletter.origins_written`` reads them from files)."""
    from google.api_core import exceptions  # pylint: disable=import-outside-toplevel
    from google.cloud import bigquery  # pylint: disable=import-outside-toplevel
    where = location(uri)
    client = _client(where.project)
    table_id = f'{where.project}.{where.dataset}.{where.prefix}' \
               f'{DEAD_LETTER_TABLE}'
    try:
        client.get_table(table_id)
    except exceptions.NotFound:
        return set()
    prefix = f'{source}#'
    _, rows = _query(
        client, uri, f'SELECT DISTINCT source FROM `{table_id}` '
        f'WHERE STARTS_WITH(source, @prefix)',
        [bigquery.ScalarQueryParameter('prefix', 'STRING', prefix)])
    return {r['source'][len(prefix):] for r in rows}


class AckState:
    """Where a local Pub/Sub read into a ``bigquery://`` sink keeps its
    acknowledgement state (``transforms/io/_pubsub_acks.py``): the table
    ``TABLE_PREFIX + pubsub_acks`` of the sink's dataset, one row appended
    per state (streaming inserts: no DML, which BigQuery queues and which
    cannot touch the streaming buffer), the latest one read back.

    Why a table beside the sink's tables and not a local file or a state
    option: the state describes what the sink holds, so it goes where the
    sink goes (any machine restarting into the same dataset finds it, with
    the same permissions) and cannot be paired with another sink."""
    CREATED_WAIT_SECONDS = 120
    SCHEMA = (('subscription', 'STRING'), ('state', 'STRING'),
              ('sequence', 'INT64'), (WRITTEN_AT, 'TIMESTAMP'))

    def __init__(self, uri, subscription):
        self.uri = uri
        self.subscription = subscription
        where = location(uri)
        self.table_id = f'{where.project}.{where.dataset}.{where.prefix}' \
                        f'{ACK_STATE_TABLE}'
        self._client = None
        self._lock = threading.Lock()
        self._sequence = 0

    def __str__(self):
        return f'{self.uri.text} (table {self.table_id})'

    def client(self):
        if self._client is None:
            self._client = _client(location(self.uri).project)
        return self._client

    def read(self):
        """The latest state (a dict), or None where none was written."""
        from google.api_core import exceptions  # pylint: disable=import-outside-toplevel
        from google.cloud import bigquery  # pylint: disable=import-outside-toplevel
        preflight_sink(self.uri)
        try:
            try:
                self.client().get_table(self.table_id)
            except exceptions.NotFound:
                # Made now, before the run writes to it.
                self.client().create_table(bigquery.Table(
                    self.table_id, schema=[
                        bigquery.SchemaField(name, kind, mode='REQUIRED')
                        for name, kind in self.SCHEMA]), exists_ok=True)
                return None
        except exceptions.GoogleAPIError as e:
            reason = ' '.join(str(e).split())[:300]
            raise UriError(f'{self.uri.text}: the Pub/Sub state table '
                           f'{self.table_id} cannot be read or made '
                           f'({type(e).__name__}: {reason})') from None
        _, rows = _query(
            self.client(), self.uri,
            f'SELECT state, sequence FROM `{self.table_id}` '
            f'WHERE subscription = @subscription '
            f'ORDER BY sequence DESC LIMIT 1',
            [bigquery.ScalarQueryParameter('subscription', 'STRING',
                                           self.subscription)])
        if not rows:
            return None
        with self._lock:
            self._sequence = max(self._sequence, rows[0]['sequence'])
        return json.loads(rows[0]['state'])

    def write(self, state):
        client = self.client()
        with self._lock:
            # Ordered even when two states share a microsecond.
            self._sequence = max(self._sequence + 1, time.time_ns() // 1000)
            sequence = self._sequence
        row = {'subscription': self.subscription,
               'state': json.dumps(state, separators=(',', ':')),
               'sequence': sequence, WRITTEN_AT: _stamp(time.time())}
        from google.api_core import exceptions  # pylint: disable=import-outside-toplevel
        deadline = time.monotonic() + self.CREATED_WAIT_SECONDS
        while True:
            try:
                errors = client.insert_rows_json(self.table_id, [row])
                break
            except exceptions.NotFound:
                # BigQuery takes a while before a table made by read()
                # takes streaming inserts.
                if time.monotonic() > deadline:
                    raise
                time.sleep(2.0)
        if errors:
            raise OSError(f'{self}: state refused: {errors}')
