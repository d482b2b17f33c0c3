"""``pubsub://projects/P/subscriptions/S`` or ``pubsub://projects/P/topics/T``:
Google Cloud Pub/Sub as a source, and topics as a sink.

As a source a subscription is read as it is; a topic is read through a
subscription the runner makes for the job.  A stream never ends, so the job
runs in streaming mode.  Parameters:

* ``timestamp_attribute=NAME``: the attribute holding each message's event
  time (RFC 3339 or epoch milliseconds), from which the runner estimates the
  watermark; without it, the publish time.  Decoders take event time from the
  payload either way.
* ``id_attribute=NAME``: the attribute holding a unique message id; messages
  published again with the same id are dropped (by Dataflow's own
  deduplication there; elsewhere by a keyed deduplication over
  ``dedup_window``, default 10m; the counters ``pubsub.received`` and
  ``pubsub.unique`` tell how many were dropped; ``read`` counts the unique
  messages).

As a sink each row is one JSON message (see :mod:`transforms.io._messages`)
with attributes ``table``, ``key`` (the row's entity) and ``event_time``
(RFC 3339).  ``{table}`` in the topic name gives each table its own topic.

Against the Pub/Sub emulator, set ``PUBSUB_EMULATOR_HOST=HOST:PORT``: Google's
client libraries then talk to it.
"""
import re

import apache_beam as beam
from apache_beam.metrics import Metrics

from transforms import windows
from transforms.io import Sink, Source, UriError, _messages, counted

DESCRIPTION = ('Pub/Sub, e.g. pubsub://projects/P/subscriptions/S or '
               'pubsub://projects/P/topics/T (timestamp_attribute, '
               'id_attribute; {table} in a sink topic)')
_PATH = re.compile(r'projects/(?P<project>[^/]+)/(?P<kind>topics|subscriptions)'
                   r'/(?P<name>[^/]+)')
_NAME = r'[A-Za-z][-A-Za-z0-9._~%+]{2,254}'
_PROJECT = r'[a-z][-a-z0-9]{4,28}[a-z0-9]|[a-z0-9][-a-z0-9.:]*'
DEFAULT_DEDUP_WINDOW = '10m'


def _path(uri):
    match = _PATH.fullmatch(uri.location.strip('/'))
    if not match:
        raise UriError(f'{uri.text}: expected pubsub://projects/PROJECT/'
                       f'subscriptions/NAME or pubsub://projects/PROJECT/'
                       f'topics/NAME')
    return match


def validate(uri, kind):
    match = _path(uri)
    if not re.fullmatch(_PROJECT, match['project']):
        raise UriError(f'{uri.text}: {match["project"]!r} is not a project id')
    if kind == 'sink':
        uri.check_params(())
        if match['kind'] != 'topics':
            raise UriError(f'{uri.text}: a sink publishes to a topic: '
                           f'pubsub://projects/P/topics/T')
        _messages.check_topic_pattern(uri, match['name'], _NAME)
        return
    uri.check_params(('timestamp_attribute', 'id_attribute', 'dedup_window'))
    if not re.fullmatch(_NAME, match['name']):
        raise UriError(f'{uri.text}: {match["name"]!r} is not a valid '
                       f'{match["kind"][:-1]} name')
    try:
        windows.parse_duration(uri.param('dedup_window', DEFAULT_DEDUP_WINDOW))
    except ValueError as e:
        raise UriError(f'{uri.text}: dedup_window: {e}') from None


def preflight_sink(uri, timeout=10):
    """Pub/Sub answers and the topic exists (a ``{table}`` pattern is checked
    for reachability only), before a local job publishes to it."""
    from google.api_core import exceptions  # pylint: disable=import-outside-toplevel
    from google.api_core import retry as retries  # pylint: disable=import-outside-toplevel
    from google.auth import exceptions as auth  # pylint: disable=import-outside-toplevel
    from google.cloud import pubsub_v1  # pylint: disable=import-outside-toplevel
    match = _path(uri)
    retry = retries.Retry(timeout=timeout)
    pattern = '{table}' in match['name']
    try:
        client = pubsub_v1.PublisherClient()
        if pattern:
            client.list_topics(request={'project': f'projects/'
                                        f'{match["project"]}',
                                        'page_size': 1},
                               retry=retry, timeout=timeout)
        else:
            client.get_topic(request={'topic': uri.location.strip('/')},
                             retry=retry, timeout=timeout)
    except exceptions.NotFound:
        raise UriError(f'{uri.text}: no such topic') from None
    except (exceptions.GoogleAPIError, auth.GoogleAuthError) as e:
        reason = ' '.join(str(e).split())[:300]
        raise UriError(f'{uri.text}: Pub/Sub does not answer '
                       f'({type(e).__name__}: {reason})') from None


def unbounded(uri) -> bool:
    return True


def _message_id(message, attribute):
    return message.attributes.get(attribute) or message.message_id or ''


class PubSubSource(Source):
    """``PBegin -> PCollection[bytes]``: the message payloads."""

    def expand(self, pbegin):
        match = _path(self.uri)
        path = self.uri.location.strip('/')
        id_attribute = self.uri.param('id_attribute')
        native_dedup = 'Dataflow' in self.context.runner
        read = beam.io.ReadFromPubSub(
            topic=path if match['kind'] == 'topics' else None,
            subscription=path if match['kind'] == 'subscriptions' else None,
            with_attributes=True,
            timestamp_attribute=self.uri.param('timestamp_attribute'),
            id_label=id_attribute if native_dedup else None)
        job = self.context.job
        messages = pbegin | 'ReadFromPubSub' >> read
        if id_attribute and not native_dedup:
            window = windows.parse_duration(
                self.uri.param('dedup_window', DEFAULT_DEDUP_WINDOW))
            messages = (
                messages
                | 'KeyById' >> beam.Map(
                    lambda m: (_message_id(m, id_attribute), m))
                | 'Deduplicate' >> _Deduplicate(window, job)
                | 'DropIds' >> beam.Values())
        return messages | 'Payloads' >> beam.Map(
            _payload, Metrics.counter(job, 'read'))


def _payload(message, counter):
    counter.inc()
    return message.data or b''


class _Deduplicate(beam.PTransform):
    """``(id, message)`` -> the first message of each id seen within
    ``seconds`` of processing time; the others are counted and dropped."""

    def __init__(self, seconds, job):
        super().__init__()
        self._seconds = seconds
        self._job = job

    def expand(self, keyed):
        from apache_beam.transforms.deduplicate import DeduplicatePerKey  # pylint: disable=import-outside-toplevel
        received = keyed | 'CountIn' >> beam.Map(
            counted, Metrics.counter(self._job, 'pubsub.received'))
        unique = received | DeduplicatePerKey(
            processing_time_duration=self._seconds)
        return unique | 'CountOut' >> beam.Map(
            counted, Metrics.counter(self._job, 'pubsub.unique'))


class _ToPubsubMessage(beam.DoFn):
    def __init__(self, table, topic, job, rows_counter):
        self._table = table
        self._topic = topic
        self._rows = Metrics.counter(job, rows_counter)

    def process(self, row):
        from apache_beam.io.gcp.pubsub import PubsubMessage  # pylint: disable=import-outside-toplevel
        message = _messages.to_message(row, self._topic, self._table)
        attributes = {'table': self._table}
        if message.key is not None:
            attributes['key'] = message.key.decode()
        if message.event_time_ms is not None:
            attributes['event_time'] = _messages.rfc3339(message.event_time_ms)
        self._rows.inc()
        yield PubsubMessage(message.value, attributes)


class PubSubSink(Sink):
    def write(self, table, record_type):
        match = _path(self.uri)
        topic = f'projects/{match["project"]}/topics/' \
            f'{_messages.topic_for(match["name"], table)}'
        return (beam.ParDo(_ToPubsubMessage(
                    table, topic, self.context.job, self.rows_counter(table)))
                | beam.io.WriteToPubSub(topic, with_attributes=True))


def open_source(uri, context):
    return PubSubSource(uri, context)


def open_sink(uri, context):
    return PubSubSink(uri, context)
