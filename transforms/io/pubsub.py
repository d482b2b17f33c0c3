"""``pubsub://projects/P/subscriptions/S`` or ``pubsub://projects/P/topics/T``:
Google Cloud Pub/Sub as a source, and topics as a sink.

As a source a subscription is read as it is.  A topic is read through a
subscription: ``subscription=NAME`` names it (``projects/P/subscriptions/
NAME``, made on the topic if absent, reused by every later run: a restart
resumes where the last run left off, as on a ``subscriptions/NAME`` source);
without it the runner makes one for the run, which a restart does not find
again (the job says so when it starts).  A stream never ends, so the job
runs in streaming mode (on the local runner ``stop=idle:DURATION`` ends it,
see below).  Parameters:

* ``subscription=NAME`` (topics only; default: a subscription made for
  the run): the subscription through which the topic is read, made if
  absent (its ack deadline ``_pubsub_acks.LEASE_SECONDS``); one that exists
  on another topic is refused.  On Dataflow and Flink it must exist
  (``gcloud pubsub subscriptions create NAME --topic T``).
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
with attributes ``table``, ``run`` (the run that published it), ``key`` (the
row's entity) and ``event_time``
(RFC 3339).  ``{table}`` in the topic name gives each table its own topic.

Against the Pub/Sub emulator, set ``PUBSUB_EMULATOR_HOST=HOST:PORT``: Google's
client libraries then talk to it.

On Dataflow (and Flink) the source is Beam's native ``ReadFromPubSub``:
the runner acknowledges a message once its checkpointed state holds it.  On
the local runner, which keeps window state in memory, the source pulls
itself (``google-cloud-pubsub``, up to ``BATCH`` messages a pull) and holds
each message un-acknowledged, its lease renewed, until every window it falls
in has emitted its final pane (see :mod:`transforms.io._pubsub_acks`): a
killed job's messages are delivered again to the next run, never lost.
There its watermark follows the event times the job reads from the payloads
(``io.Context.event_time``; else the timestamp attribute or publish time)
minus ``watermark_lag`` (default 5s), and moves on with the clock from the
newest message while no message comes; a pull's payloads travel as one ``LineBlock`` to the
columnar fast path (``stream_blocks``); and ``stop=idle:DURATION`` ends the
read once no message has come for DURATION (the job then runs in batch mode
unless ``--streaming``; the default ``never`` reads on).
"""
import re
import sys
import threading
import time
import typing

import apache_beam as beam
from apache_beam.io.restriction_trackers import (OffsetRange,
                                                 OffsetRestrictionTracker)
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.metrics import Metrics
from apache_beam.transforms import trigger
from apache_beam.transforms import window as beam_window
from apache_beam.transforms.core import RestrictionProvider
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import MIN_TIMESTAMP, Timestamp

from transforms import deadletter, windows
from transforms.io import Sink, Source, UriError, _messages, _pubsub_acks, \
    counted

DESCRIPTION = ('Pub/Sub, e.g. pubsub://projects/P/subscriptions/S or '
               'pubsub://projects/P/topics/T (subscription=NAME on a '
               'topic: read through that subscription, made if absent, so '
               'that a restart resumes; default: one made for the run, '
               'which a restart cannot resume; timestamp_attribute, '
               'id_attribute; local runner: watermark_lag=5s, '
               'stop=never|idle:30s; {table} in a sink topic)')
_PATH = re.compile(r'projects/(?P<project>[^/]+)/(?P<kind>topics|subscriptions)'
                   r'/(?P<name>[^/]+)')
_NAME = r'[A-Za-z][-A-Za-z0-9._~%+]{2,254}'
_PROJECT = r'[a-z][-a-z0-9]{4,28}[a-z0-9]|[a-z0-9][-a-z0-9.:]*'
DEFAULT_DEDUP_WINDOW = '10m'
DEFAULT_LAG = '5s'
# Runners whose Pub/Sub read is the local pull below (the others use Beam's
# native read).
LOCAL_RUNNERS = ('', 'DirectRunner', 'BundleBasedDirectRunner',
                 'SwitchingDirectRunner')
# Messages per pull (Beam's local read pulls 10 per bundle).
BATCH = 1000
PULL_SECONDS = 2.0
# A read lasts at most this long before it checkpoints (its output moves on
# and what it read may be acknowledged once final).
READ_SECONDS = 1.0
# Pause after an empty pull (the emulator answers at once).
IDLE_PAUSE = 0.2
UNBOUNDED_END = sys.maxsize
# "Just after" a timestamp, at any magnitude Beam's timestamps take.
_AFTER = 0.01


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
    uri.check_params(('timestamp_attribute', 'id_attribute', 'dedup_window',
                      'watermark_lag', 'stop', 'subscription'))
    if not re.fullmatch(_NAME, match['name']):
        raise UriError(f'{uri.text}: {match["name"]!r} is not a valid '
                       f'{match["kind"][:-1]} name')
    named = uri.param('subscription')
    if named is not None:
        if match['kind'] != 'topics':
            raise UriError(f'{uri.text}: subscription= names the '
                           f'subscription a topic is read through; this '
                           f'source is a subscription already')
        if not re.fullmatch(_NAME, named):
            raise UriError(f'{uri.text}: subscription={named!r} is not a '
                           f'valid subscription name')
    for name, default in (('dedup_window', DEFAULT_DEDUP_WINDOW),
                          ('watermark_lag', DEFAULT_LAG)):
        try:
            windows.parse_duration(uri.param(name, default))
        except ValueError as e:
            raise UriError(f'{uri.text}: {name}: {e}') from None
    _stop_seconds(uri)


def _stop_seconds(uri):
    """``stop=never`` -> None; ``stop=idle:DURATION`` -> seconds."""
    text = uri.param('stop', 'never')
    if text == 'never':
        return None
    kind, _, duration = text.partition(':')
    try:
        if kind != 'idle':
            raise ValueError('expected never or idle:DURATION, e.g. idle:30s')
        return windows.parse_duration(duration)
    except ValueError as e:
        raise UriError(f'{uri.text}: stop={text!r}: {e}') from None


def local_read(context) -> bool:
    """Whether the runner reads Pub/Sub with the local pull of this module."""
    return context.runner in LOCAL_RUNNERS


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


# A local run of a killed job resumes from the last acknowledgements
# (io.resumes).
RESUMES = True


def unbounded(uri) -> bool:
    return _stop_seconds(uri) is None


def subscription_of(uri):
    """The subscription a source ``uri`` reads (``projects/P/subscriptions/
    S``), or None: a topic without ``subscription=``, read through a
    subscription made for the run (a restart cannot resume it)."""
    match = _path(uri)
    if match['kind'] == 'subscriptions':
        return uri.location.strip('/')
    named = uri.param('subscription')
    if named is None:
        return None
    return f'projects/{match["project"]}/subscriptions/{named}'


def resumable(uri) -> bool:
    """Whether a restart on ``uri`` finds the last run's subscription."""
    return subscription_of(uri) is not None


def _ensure_subscription(client, subscription, topic):
    """Makes ``subscription`` on ``topic`` if absent; the subscription's
    ack deadline.  Raises ValueError if it reads another topic."""
    from google.api_core import exceptions  # pylint: disable=import-outside-toplevel
    try:
        found = client.get_subscription(
            request={'subscription': subscription}, timeout=30)
    except exceptions.NotFound:
        try:
            found = client.create_subscription(
                name=subscription, topic=topic,
                ack_deadline_seconds=_pubsub_acks.LEASE_SECONDS, timeout=30)
        except exceptions.AlreadyExists:     # made meanwhile by another run
            found = client.get_subscription(
                request={'subscription': subscription}, timeout=30)
    if found.topic != topic:
        raise ValueError(f'subscription {subscription} reads '
                         f'{found.topic}, not {topic}')
    return found.ack_deadline_seconds


def recover(uri, directory, state=None):
    """Before a local job reads ``uri`` into file sinks under ``directory``
    (or, ``state`` given, a sink keeping the state itself: ``state(
    subscription)`` is where, e.g. ``bigquery.AckState``):
    ``(horizon, committed_at)`` to roll them back to, or None (see
    :mod:`transforms.io._pubsub_acks`).  A topic source with
    ``subscription=`` has its subscription made here if absent; one without
    reads a subscription made for the run: nothing to recover."""
    match = _path(uri)
    subscription = subscription_of(uri)
    if subscription is None:
        return None
    from google.api_core import exceptions  # pylint: disable=import-outside-toplevel
    from google.cloud import pubsub_v1  # pylint: disable=import-outside-toplevel
    try:
        with pubsub_v1.SubscriberClient() as client:
            if match['kind'] == 'topics':
                deadline = _ensure_subscription(
                    client, subscription, uri.location.strip('/'))
            else:
                deadline = client.get_subscription(
                    request={'subscription': subscription},
                    timeout=30).ack_deadline_seconds
    except exceptions.NotFound:
        raise UriError(f'{uri.text}: no such {match["kind"][:-1]}') from None
    except ValueError as e:
        raise UriError(f'{uri.text}: {e}') from None
    except exceptions.GoogleAPIError as e:
        reason = ' '.join(str(e).split())[:300]
        raise UriError(f'{uri.text}: Pub/Sub does not answer '
                       f'({type(e).__name__}: {reason})') from None
    return _pubsub_acks.recover(
        subscription, state(subscription) if state is not None else
        _pubsub_acks.state_path(directory, subscription), deadline)


def dead_lettered(uri, tags):
    """After the roll-back of a resumed run: ``tags`` are those of the
    dead letters the sink holds (``deadletter.origins_written``)."""
    subscription = subscription_of(uri)
    if subscription is None:
        return
    prefix = _pubsub_acks.ORIGIN_PREFIX
    whole, outputs = set(), {}
    for tag in tags:
        if not tag.startswith(prefix):
            continue
        origin, output = deadletter.split_tag(tag)
        if output:
            # a late dead letter of one of the message's outputs
            # (deadletter.output_source): that output alone is written
            outputs.setdefault(origin[len(prefix):], set()).add(output)
        else:
            whole.add(origin[len(prefix):])
    _pubsub_acks.dead_lettered(subscription, whole, outputs)


def _message_id(message, attribute):
    return message.attributes.get(attribute) or message.message_id or ''


class PubSubSource(Source):
    """``PBegin -> PCollection[bytes]``: the message payloads."""

    def expand(self, pbegin):
        _path(self.uri)            # (a bad path raises its one-line error)
        path = self.uri.location.strip('/')
        id_attribute = self.uri.param('id_attribute')
        native_dedup = 'Dataflow' in self.context.runner
        job = self.context.job
        if local_read(self.context):
            messages = pbegin | 'PullPubSub' >> _LocalRead(
                self.uri, self.context, blocks=False)
        else:
            if _stop_seconds(self.uri) is not None:
                raise ValueError(f'{self.uri.text}: stop= ends a read on the '
                                 f'local runner only; a {self.context.runner}'
                                 f' job reads a subscription on')
            subscription = subscription_of(self.uri)
            read = beam.io.ReadFromPubSub(
                topic=path if subscription is None else None,
                subscription=subscription,
                with_attributes=True,
                timestamp_attribute=self.uri.param('timestamp_attribute'),
                id_label=id_attribute if native_dedup else None)
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

    def stream_blocks(self):
        """On the local runner, a pull's payloads as one LineBlock (those
        holding a newline, one by one), stamped as the watermark follows
        the payloads' event times; None elsewhere, or with
        ``id_attribute`` (deduplication is per message)."""
        if not local_read(self.context) or self.context.event_time is None \
                or self.uri.param('id_attribute'):
            return None
        return _LocalRead(self.uri, self.context, blocks=True)

    def blocks(self):
        return self.stream_blocks()


class _Spec(typing.NamedTuple):
    """What the local read of one subscription needs."""
    subscription: str
    topic: typing.Optional[str]
    timestamp_attribute: typing.Optional[str]
    lag_seconds: float
    stop_idle_seconds: typing.Optional[float]


def _spec(uri) -> _Spec:
    match = _path(uri)
    path = uri.location.strip('/')
    return _Spec(
        subscription=subscription_of(uri),
        topic=path if match['kind'] == 'topics' else None,
        timestamp_attribute=uri.param('timestamp_attribute'),
        lag_seconds=windows.parse_duration(uri.param('watermark_lag',
                                                     DEFAULT_LAG)),
        stop_idle_seconds=_stop_seconds(uri))


class _LocalRead(beam.PTransform):
    """``PBegin -> PCollection[PubsubMessage]`` (``blocks``: LineBlocks and
    single payloads, the pulled ones counted ``read``) on the local runner:
    pulled in batches, acknowledged once final."""

    def __init__(self, uri, context, blocks):
        super().__init__()
        self._spec = _spec(uri)
        self._context = context
        self._blocks = blocks

    def expand(self, pbegin):
        context = self._context
        fn = (_PullFn if self._spec.stop_idle_seconds is not None
              else _PullUnboundedFn)(
            context.job, context.final_at, context.event_time, self._blocks,
            context.late_from)
        return (pbegin
                | 'Impulse' >> beam.Impulse()
                | 'Subscription' >> beam.Map(_subscribe, self._spec)
                | 'Eager' >> beam.WindowInto(
                    # The read starts at once, stamped with the earliest
                    # time (the runner's grouping of the splittable read
                    # would otherwise stamp it with the end of the global
                    # window, ahead of every message's event time).
                    beam_window.GlobalWindows(),
                    trigger=trigger.Repeatedly(trigger.AfterCount(1)),
                    accumulation_mode=trigger.AccumulationMode.DISCARDING,
                    timestamp_combiner=beam_window.TimestampCombiner
                    .OUTPUT_AT_EARLIEST)
                | 'Pull' >> beam.ParDo(fn))


def _subscribe(unused_impulse, spec):
    """A topic is read through its ``subscription=`` (made if absent), else
    through a subscription made for the run."""
    from google.cloud import pubsub_v1  # pylint: disable=import-outside-toplevel
    if spec.subscription is not None:
        if spec.topic is not None:
            with pubsub_v1.SubscriberClient() as client:
                _ensure_subscription(client, spec.subscription, spec.topic)
        return spec
    project = spec.topic.split('/')[1]
    name = f'projects/{project}/subscriptions/rtp_{int(time.time())}_' \
        f'{threading.get_ident() % 100000:x}'
    with pubsub_v1.SubscriberClient() as client:
        client.create_subscription(name=name, topic=spec.topic,
                                   ack_deadline_seconds=_pubsub_acks
                                   .LEASE_SECONDS)
    return spec._replace(subscription=name)


class _Restrictions(RestrictionProvider):
    """One position per pull, without end (a bounded read ends by claiming
    the end once idle)."""

    def initial_restriction(self, spec):
        return OffsetRange(0, UNBOUNDED_END)

    def create_tracker(self, restriction):
        return OffsetRestrictionTracker(restriction)

    def restriction_size(self, spec, restriction):
        return 1


class _ReadState:
    """What the reads of one subscription keep across checkpoints."""
    __slots__ = ('newest', 'last_message', 'hold_until', 'hold_at',
                 'watermark')

    def __init__(self, resume):
        now = time.monotonic()
        self.newest = None              # newest event time seen
        self.last_message = now         # monotonic
        self.watermark = None
        # A restart holds the watermark at the killed run's horizon until
        # its messages come again (their leases expired).
        self.hold_until = now + resume.hold_seconds if resume else now
        self.hold_at = None if resume is None or resume.complete \
            else resume.horizon


_STATES = {}
_STATES_LOCK = threading.Lock()


class _PullFn(beam.DoFn):
    """``_Spec`` -> the subscription's messages, held un-acknowledged until
    final (a bounded read: ``stop=idle``)."""

    def __init__(self, job, final_at, event_time, blocks, late_from=None):
        self._job = job
        self._final_at = final_at
        # (io.Context.late_from) where late dead letters name their output
        self._late_from = late_from
        self._event_time = event_time
        self._blocks = blocks
        self._read = Metrics.counter(job, 'read')
        self._replayed = Metrics.counter(job, 'filtered.replayed_final')
        self._replayed_dead = Metrics.counter(
            job, 'filtered.replayed_dead_letter')
        self._again = Metrics.counter(job, 'pubsub.delivered_again')

    @staticmethod
    def _client():
        from google.cloud import pubsub_v1  # pylint: disable=import-outside-toplevel
        return pubsub_v1.SubscriberClient()

    def process(self, spec,
                tracker=beam.DoFn.RestrictionParam(_Restrictions()),
                watermark=beam.DoFn.WatermarkEstimatorParam(
                    ManualWatermarkEstimator.default_provider())):
        from google.api_core import exceptions  # pylint: disable=import-outside-toplevel
        from apache_beam.io.gcp.pubsub import PubsubMessage  # pylint: disable=import-outside-toplevel
        ledger = _pubsub_acks.track(spec.subscription, self._client)
        ledger.read_started()
        resume = _pubsub_acks.resume(spec.subscription)
        key = (spec.subscription, _pubsub_acks.generation())
        with _STATES_LOCK:
            state = _STATES.get(key)
            if state is None:
                state = _STATES[key] = _ReadState(resume)
                if state.hold_at is not None:
                    # Windows final before the restart stay closed.
                    self._advance(watermark, state, state.hold_at)
        # The local runner restores a residual's watermark estimator empty
        # (it never reads it back, see local_watermark): start it where
        # this read's watermark is, so that a message is judged "may be
        # late" under the watermark the groupings downstream may be at
        # already (watermarks never go back: a value stamped lower does not
        # hold one that passed its window), not the beginning of time.
        # (Before, the first pull of each checkpointed call judged its
        # messages so: their late dead letters named no message, and a
        # restart wrote them again or counted them in their windows too.)
        current = watermark.current_watermark()
        if state.watermark is not None and \
                (current is None or current < state.watermark):
            watermark.set_watermark(state.watermark)
        replayed = resume.ids if resume is not None else frozenset()
        dead_lettered = resume.dead_lettered if resume is not None \
            else frozenset()
        # message id -> the outputs whose late dead letters the sink holds
        outputs_written = (resume.outputs_written or {}) \
            if resume is not None else {}
        # Held by the killed run, handed over before the look that took
        # the horizon it recorded: kept out of their windows final then.
        kept = (resume.kept or {}) if resume is not None and \
            not resume.complete else {}
        keeps_out = self._late_from is not None and \
            getattr(self._late_from, 'keeps_out', False)
        stamp = self._event_time
        position = tracker.current_restriction().start
        started = time.monotonic()
        while True:
            if not tracker.try_claim(position):
                return
            position += 1
            try:
                received = ledger.client.pull(
                    subscription=spec.subscription, max_messages=BATCH,
                    timeout=PULL_SECONDS, retry=None).received_messages
            except (exceptions.DeadlineExceeded,
                    exceptions.ServiceUnavailable):
                received = []
            if received:
                ledger.lease([r.ack_id for r in received])
            floor = watermark.current_watermark() or MIN_TIMESTAMP
            lines, skipped = [], []
            # of the state resumed, skipped: settled once acknowledged
            settling = []
            for item in received:
                message = item.message
                message_id = message.message_id
                data = message.data or b''
                if ledger.acknowledged(message_id):
                    # Acknowledged by this run, delivered again (Pub/Sub
                    # delivers at least once: the acknowledgement crossed
                    # a redelivery): its outputs are written; read once.
                    skipped.append(item.ack_id)
                    self._again.inc()
                    continue
                if message_id in replayed:
                    # Its final panes were written before the restart; its
                    # acknowledgement may not have reached the service.
                    skipped.append(item.ack_id)
                    settling.append(message_id)
                    self._read.inc()
                    self._replayed.inc()
                    continue
                if message_id in dead_lettered:
                    # A payload the job cannot date whose dead letter the
                    # sink holds (written before the kill, before its
                    # acknowledgement): that dead letter is its only
                    # output.  Held (acknowledged with the next release),
                    # not processed again.
                    if ledger.hold(message_id, item.ack_id, float('-inf'),
                                   float('-inf')):
                        self._read.inc()
                        self._replayed_dead.inc()
                    else:
                        self._again.inc()
                    continue
                if stamp is not None:
                    # The event time the windows use (None: a payload the
                    # job cannot date, a dead letter once decoded); the
                    # value is stamped with the watermark it was read
                    # under, so that the runner holds the watermark
                    # downstream until it is decoded.
                    seconds, at = stamp(data), floor
                else:
                    seconds = at = _attribute_time(
                        message, spec.timestamp_attribute)
                # Final once its windows are and nothing it produced is
                # pending (what it produces is stamped no earlier than it
                # is: a late or undated record is final once its dead
                # letter is written).
                final = self._final_at(seconds) if self._final_at and \
                    seconds is not None else float('-inf')
                # A payload the job cannot date is one decode dead letter
                # (one of several lines too: the decoder reads it whole,
                # as PayloadEventTime does): it carries the message id
                # (see deadletter.register_origin), so that a restart
                # knows it was written.
                # So does a record that may be late, its windows final
                # under the watermark it is read under (the grouping that
                # decides lateness is behind that watermark): its
                # window.late dead letter, its only output, carries the
                # message id too.  Forgotten when it is acknowledged.
                # Where the job's late dead letters name their output
                # (io.Context.late_from), so does a record that may be late
                # for any of its groupings, and one delivered again some of
                # whose outputs' late dead letters the sink holds: it is
                # registered with those, and kept out of them alone.
                written = outputs_written.get(message_id, ())
                # Where the job gives late_from, the first of its windows
                # to close: no state records a horizon past it while it is
                # held (see _pubsub_acks.release), or, where a restart can
                # keep it out of its windows final at a state's horizon
                # (keeps_out), none while it may be late and is not
                # settled.
                first = self._late_from(seconds) if \
                    self._late_from is not None and seconds is not None \
                    else None
                final_by = kept.get(message_id) if first is not None \
                    and keeps_out else None
                if final_by is not None and first > final_by:
                    final_by = None
                if final_by is not None and final <= final_by:
                    # All its windows final: in their final panes.
                    skipped.append(item.ack_id)
                    settling.append(message_id)
                    self._read.inc()
                    self._replayed.inc()
                    continue
                maybe_late = seconds is not None and (
                    self._final_at and final <= float(floor) or
                    first is not None and first <= float(floor))
                origin = data if stamp is not None and seconds is None or \
                    maybe_late or written or final_by is not None \
                    else None
                if not ledger.hold(
                        message_id, item.ack_id, final,
                        float(at) + _AFTER, origin,
                        None if keeps_out else first,
                        first if keeps_out else None,
                        bool(maybe_late) or final_by is not None):
                    self._again.inc()     # held already: read once
                    continue
                if origin is not None:
                    deadletter.register_origin(
                        origin, _pubsub_acks.origin_tag(message_id), written,
                        final_by)
                if seconds is not None:
                    state.newest = seconds if state.newest is None \
                        else max(state.newest, seconds)
                if self._blocks:
                    if b'\n' in data:
                        self._read.inc()
                        yield TimestampedValue(data, at)
                    else:
                        lines.append(data)
                else:
                    yield TimestampedValue(
                        PubsubMessage._from_message(message), at)  # pylint: disable=protected-access
            if lines:
                from transforms.columnar import LineBlock  # pylint: disable=import-outside-toplevel
                self._read.inc(len(lines))
                yield TimestampedValue(LineBlock(b'\n'.join(lines)), floor)
            if skipped:
                ledger.acknowledge(skipped)
                # (only now: until the service has them, the states this
                # run writes list the resumed ones, see _Ledger.settled)
                ledger.settled(settling)
            now = time.monotonic()
            if received:
                state.last_message = now
                if state.newest is not None:
                    self._advance(watermark, state,
                                  state.newest - spec.lag_seconds)
            else:
                # Idle: event time is taken to move on with the clock from
                # the newest message.  (Before the first one it stays put: a
                # pull may come back empty while a backlog waits, and a
                # replay of old records must not turn late at once.)
                if state.newest is not None:
                    self._advance(watermark, state, state.newest + now
                                  - state.last_message - spec.lag_seconds)
                if spec.stop_idle_seconds is not None and \
                        now >= state.hold_until and \
                        now - state.last_message >= spec.stop_idle_seconds:
                    tracker.try_claim(UNBOUNDED_END)     # done
                    return
                time.sleep(IDLE_PAUSE)
            if now - started >= READ_SECONDS or not received:
                # Checkpoint: the output moves on, and what was read may be
                # acknowledged once final.
                tracker.defer_remainder()
                return

    @staticmethod
    def _advance(estimator, state, seconds):
        if time.monotonic() < state.hold_until:
            if state.hold_at is None:
                return
            seconds = min(seconds, state.hold_at)
        mark = Timestamp.of(max(0.0, seconds))
        current = estimator.current_watermark()
        if current is None or mark > current:
            estimator.set_watermark(mark)
            state.watermark = mark

    @staticmethod
    def local_watermark(spec):
        """The read's watermark as this process last estimated it (the
        local runner holds its output watermark there,
        pipelines/local_runner.py)."""
        with _STATES_LOCK:
            state = _STATES.get((spec.subscription,
                                 _pubsub_acks.generation()))
        return None if state is None else state.watermark


@beam.DoFn.unbounded_per_element()
class _PullUnboundedFn(_PullFn):
    pass


def _attribute_time(message, attribute) -> float:
    """The message's time as Beam's read takes it: the attribute (epoch
    milliseconds or RFC 3339) where given and readable, else the publish
    time."""
    text = message.attributes.get(attribute) if attribute else None
    if text:
        try:
            return int(text) / 1000.0
        except ValueError:
            try:
                return float(Timestamp.from_rfc3339(text))
            except ValueError:
                pass
    return message.publish_time.timestamp()


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
    def __init__(self, table, topic, job, rows_counter, run_id=''):
        self._table = table
        self._topic = topic
        self._run_id = run_id
        self._rows = Metrics.counter(job, rows_counter)

    def process(self, row):
        from apache_beam.io.gcp.pubsub import PubsubMessage  # pylint: disable=import-outside-toplevel
        message = _messages.to_message(row, self._topic, self._table)
        attributes = _messages.attributes(self._table, self._run_id)
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
                    table, topic, self.context.job, self.rows_counter(table),
                    self.context.run_id))
                | beam.io.WriteToPubSub(topic, with_attributes=True))


def open_source(uri, context):
    return PubSubSource(uri, context)


def open_sink(uri, context):
    return PubSubSink(uri, context)
