"""``kafka://BROKERS/TOPIC?group=G``: Kafka topics as a source and a sink.

As a source, every partition of TOPIC is read by a splittable DoFn (the
``native`` I/O, on ``confluent-kafka``; runs on every runner, the local one
included).  Per partition it

* starts at the group's committed offset (``start=committed``, the default;
  the earliest offset where the group has none), or at ``earliest``,
  ``latest``, or the first record at or after an RFC 3339 time;
* emits each record's value with the record's timestamp as its event time
  (decoders then take event time from the payload);
* estimates the watermark as the largest event time seen minus
  ``watermark_lag`` (default 5s): the event time the job reads from the
  payloads where it gives one (``Context.event_time``; a replay published
  now carries today's record timestamps), else the record timestamp; what it
  emits is then stamped with the watermark it was read under (never above
  the event time of a record that is not late), so that the runner holds the
  watermark downstream until it is decoded; once the partition is caught up
  and idle,
  event time is taken to move on with the clock from its newest record (an
  empty partition: from now), so that windows close in a quiet stream while a
  replay of old records does not turn late at once; and a partition idle for
  ``idle`` (default 30s) stops holding the watermark back: it follows the
  most advanced partition of the topic (a record it receives later may then
  be late, and is kept as such);
* commits the offsets of what it has emitted for the consumer group, once the
  runner has committed the output (in bundle finalization where the runner
  finalizes bundles; on the bundle-based local runner, which keeps window
  state in memory, only once the records' windows have all emitted their
  final panes, see :mod:`transforms.io._kafka_commits`), so that a restarted
  job resumes where the last one stopped and a killed one reads its
  uncommitted records again rather than losing them;
* reports its progress (records claimed, backlog behind the partition's end).

``stream_blocks()`` (and ``blocks()``) emit a poll's records, up to
``BLOCK_BATCH``, as one ``LineBlock`` for the columnar fast path.

``stop`` says when a read ends: ``never`` (an unbounded stream, run in
streaming mode; the default), ``end`` (the offsets the partitions had when the
job started) or ``idle:DURATION`` (once no partition has had a new record for
DURATION).  A read that ends runs in batch mode: one ON_TIME pane per window.

On the bundle-based local runner, which never reads a splittable DoFn's
watermark estimator back, the reader tells its watermark through
``local_watermark`` (see pipelines/local_runner.py), so an unbounded read
closes windows there too as its watermark passes them.

A read polls for the records the partition holds and no more (it asks the
broker for the partition's end when it has caught up, rather than wait in
an empty fetch), ends once it has caught up, and unassigns the partition:
on the local runner the steps after the read run before the next one, so
a live stream's records reach the sinks within a poll.  A partition that
had caught up is read again LINGER_SECONDS later at the earliest.

With ``--kafka_io=xlang`` Beam's Java ``ReadFromKafka`` / ``WriteToKafka`` are
used instead; they need a runner with a Java expansion service (Dataflow,
Flink with Java available).

As a sink each row is one JSON message (see :mod:`transforms.io._messages`):
key = the row's entity (service, symbol ...), header ``table``, timestamp =
the row's event time.  ``{table}`` in TOPIC gives each table its own topic.
A bundle is done only once the broker has acknowledged all its messages.

Parameters ``config.NAME=VALUE`` are passed to the Kafka client as its
configuration property NAME (e.g. ``config.security.protocol=SSL``).
"""
import logging
import re
import sys
import threading
import time
import typing

import apache_beam as beam
import numpy as np
from apache_beam.io.restriction_trackers import (OffsetRange,
                                                 OffsetRestrictionTracker)
from apache_beam.io.iobase import RestrictionProgress
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.metrics import Metrics
from apache_beam.transforms import trigger
from apache_beam.transforms import window as beam_window
from apache_beam.transforms.core import RestrictionProvider
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.timestamp import Timestamp

from transforms import deadletter, windows
from transforms.io import Sink, Source, UriError, _kafka_commits, _messages

DESCRIPTION = ('Kafka topic, e.g. kafka://localhost:9092/logs?group=rtp '
               '(start=committed|earliest|latest|TIME, stop=never|end|'
               'idle:30s, watermark_lag=5s, idle=30s; {table} in a sink '
               'topic)')
SOURCE_PARAMS = ('group', 'start', 'stop', 'watermark_lag', 'idle')
SINK_PARAMS = ()
CONFIG_PREFIX = 'config.'
DEFAULT_LAG = '5s'
DEFAULT_IDLE = '30s'
UNBOUNDED_END = sys.maxsize
# One read of a partition lasts at most this long before it checkpoints, so
# that its output moves on and its offsets are committed.
READ_SECONDS = 1.0
POLL_SECONDS = 0.2
# A partition that had caught up is read again this long after at the
# earliest: what arrives meanwhile travels as one block.  It bounds what a
# live stream's records wait in the broker (and adds that to their
# latency); the shorter, the more, smaller blocks (the local runner runs
# every step after the read once per read).
LINGER_SECONDS = 0.25
BATCH = 1000
# Records per poll when a poll's records travel as one block: the fewer and
# larger the blocks, the less the runner's cost per element weighs.
BLOCK_BATCH = 20000
_LOG = logging.getLogger(__name__)


def _split_location(uri):
    brokers, _, topic = uri.location.partition('/')
    return brokers, topic


def _config(uri) -> dict:
    return {k[len(CONFIG_PREFIX):]: v for k, v in uri.params.items()
            if k.startswith(CONFIG_PREFIX)}


class StartSpec(typing.NamedTuple):
    mode: str                  # committed | earliest | latest | time
    time_ms: int = 0


def parse_start(text: str) -> StartSpec:
    if text in ('committed', 'earliest', 'latest'):
        return StartSpec(text)
    from transforms.synthetic import parse_start as parse_time  # RFC 3339
    try:
        return StartSpec('time', int(parse_time(text) * 1000))
    except ValueError:
        raise ValueError(
            f'start={text!r}: expected committed, earliest, latest or an '
            f'RFC 3339 time such as 2026-01-01T00:00:00Z') from None


class StopSpec(typing.NamedTuple):
    mode: str                  # never | end | idle
    idle_seconds: float = 0.0

    @property
    def bounded(self) -> bool:
        """Whether the read ends (the job then runs in batch mode)."""
        return self.mode in ('end', 'idle')


def parse_stop(text: str) -> StopSpec:
    if text in ('never', 'end'):
        return StopSpec(text)
    if text.startswith('idle:'):
        try:
            return StopSpec('idle', windows.parse_duration(text[5:]))
        except ValueError as e:
            raise ValueError(f'stop={text!r}: {e}') from None
    raise ValueError(f'stop={text!r}: expected never, end or idle:DURATION '
                     f'(e.g. idle:30s)')


def validate(uri, kind):
    brokers, topic = _split_location(uri)
    if not brokers or not topic:
        raise UriError(f'{uri.text}: expected kafka://HOST:PORT[,HOST:PORT]/'
                       f'TOPIC')
    allowed = SOURCE_PARAMS if kind == 'source' else SINK_PARAMS
    uri.check_params([p for p in uri.params if p.startswith(CONFIG_PREFIX)]
                     + list(allowed))
    if kind == 'source':
        if '{' in topic:
            raise UriError(f'{uri.text}: a source reads one topic; {{table}} '
                           f'is for sinks')
        _messages.check_topic_pattern(uri, topic)
        try:
            parse_start(uri.param('start', 'committed'))
            parse_stop(uri.param('stop', 'never'))
            windows.parse_duration(uri.param('watermark_lag', DEFAULT_LAG))
            windows.parse_duration(uri.param('idle', DEFAULT_IDLE))
        except ValueError as e:
            raise UriError(f'{uri.text}: {e}') from None
    else:
        _messages.check_topic_pattern(uri, topic)


def _reason(exception):
    error = exception.args[0] if exception.args else None
    return error.str() if hasattr(error, 'str') else str(exception)


def preflight(uri, timeout=10):
    """The brokers answer and the topic exists (before a local job starts)."""
    import confluent_kafka  # pylint: disable=import-outside-toplevel
    brokers, topic = _split_location(uri)
    consumer = confluent_kafka.Consumer({
        'bootstrap.servers': brokers, 'group.id': 'preflight',
        'log_level': 0, **_config(uri)})
    try:
        metadata = consumer.list_topics(topic, timeout=timeout)
    except confluent_kafka.KafkaException as e:
        raise UriError(f'{uri.text}: the brokers {brokers} do not answer '
                       f'within {timeout} s ({_reason(e)})') from None
    finally:
        consumer.close()
    found = metadata.topics.get(topic)
    if found is None or found.error is not None or not found.partitions:
        raise UriError(f'{uri.text}: no topic {topic!r} on {brokers}')


def preflight_sink(uri, timeout=10):
    """The brokers answer (before a local job writes to them)."""
    import confluent_kafka  # pylint: disable=import-outside-toplevel
    brokers, _ = _split_location(uri)
    consumer = confluent_kafka.Consumer({
        'bootstrap.servers': brokers, 'group.id': 'preflight',
        'log_level': 0, **_config(uri)})
    try:
        consumer.list_topics(timeout=timeout)
    except confluent_kafka.KafkaException as e:
        raise UriError(f'{uri.text}: the brokers {brokers} do not answer '
                       f'within {timeout} s ({_reason(e)})') from None
    finally:
        consumer.close()


def recover(uri, job, timeout=30):
    """Before a local job reads ``uri`` from its group's committed offsets:
    what the group's last commit says (see :mod:`transforms.io._kafka_commits`)
    as ``(horizon, committed_at)``, the earliest over the partitions, or None
    where no partition has one.  Where the last run ended (or none ran), a
    new commit of the same offsets marks when this run starts: a run killed
    before its first commit of its own leaves only files written after it."""
    import confluent_kafka  # pylint: disable=import-outside-toplevel
    if parse_start(uri.param('start', 'committed')).mode != 'committed':
        return None
    spec = spec_of(uri, job)
    consumer = consumer_for(spec)
    try:
        topic = consumer.list_topics(spec.topic, timeout=timeout).topics[
            spec.topic]
        parts = [_with_metadata(spec, p, confluent_kafka.OFFSET_INVALID, None)
                 for p in sorted(topic.partitions)]
        found = consumer.committed(parts, timeout=timeout)
        resumes = [r for r in (_kafka_commits.Resume.parse(tp.offset,
                                                           tp.metadata)
                               for tp in found) if r is not None]
        last = (min(r.horizon for r in resumes),
                min(r.committed_at for r in resumes)) if resumes else None
        if all(r.complete for r in resumes):
            begin, now = [], time.time()
            for tp in found:
                low, _ = consumer.get_watermark_offsets(
                    _topic_partition(spec._replace(partition=tp.partition)),
                    timeout=timeout)
                offset = tp.offset if tp.offset >= 0 else low
                begin.append(_with_metadata(
                    spec, tp.partition, offset, _kafka_commits.metadata(
                        _kafka_commits.COMPLETE, now, offset)))
            consumer.commit(offsets=begin, asynchronous=False)
        return last
    finally:
        consumer.close()


def dead_lettered(uri, job, tags):
    """After the roll-back of a resumed run: ``tags`` are those of the
    dead letters the sink holds (``deadletter.origins_written``,
    ``partition=P&offset=O``); a restart does not read those records
    again.  A tag naming an output too (``partition=P&offset=O&window=NAME
    &key=K``, see ``deadletter.output_source``) is a late dead letter of
    one of a record's several outputs (video_qoe: its session, its
    rollups): that record is read again, registered with the outputs whose
    letters the sink holds, and kept out of those alone."""
    spec = spec_of(uri, job)
    found, outputs = {}, {}
    for tag in tags:
        origin, output = deadletter.split_tag(tag)
        match = _ORIGIN.fullmatch(origin)
        if not match:
            continue
        partition, offset = int(match[1]), int(match[2])
        if output:
            outputs.setdefault(partition, {}).setdefault(
                offset, set()).add(output)
        else:
            found.setdefault(partition, set()).add(offset)
    with _BACKLOG_LOCK:
        for table in (_DEAD_LETTERED, _OUTPUTS_WRITTEN):
            for key in [k for k in table if k[:2] == (spec.brokers,
                                                      spec.topic)]:
                del table[key]
        for partition, offsets in found.items():
            _DEAD_LETTERED[_backlog_key(spec._replace(
                partition=partition))] = frozenset(offsets)
        for partition, written in outputs.items():
            _OUTPUTS_WRITTEN[_backlog_key(spec._replace(
                partition=partition))] = {
                    offset: frozenset(names)
                    for offset, names in written.items()}


_ORIGIN = re.compile(r'partition=(\d+)&offset=(\d+)')
# The tag a record's dead letter carries after the source URI.
_origin_tag = _kafka_commits.origin_tag


# A local run of a killed job resumes from the last commit (io.resumes).
RESUMES = True


def unbounded(uri) -> bool:
    """Whether reading this URI never ends (the job then runs streaming)."""
    return not parse_stop(uri.param('stop', 'never')).bounded


# --------------------------------------------------------------------------
# The native source: one restriction (an offset range) per partition.

class PartitionSpec(typing.NamedTuple):
    """One partition to read, with everything its read needs to know."""
    brokers: str
    topic: str
    partition: int
    group: str
    start: StartSpec
    stop: StopSpec
    lag_seconds: float
    config: tuple              # ((name, value), ...) for the client
    idle_seconds: float = 30.0  # idle this long: no longer holds the watermark


def consumer_for(spec: PartitionSpec):
    import confluent_kafka  # pylint: disable=import-outside-toplevel
    config = {
        'bootstrap.servers': spec.brokers,
        'group.id': spec.group,
        'enable.auto.commit': False,
        'enable.auto.offset.store': False,
        'auto.offset.reset': 'earliest',
        'enable.partition.eof': False,
        'logger': _LOG,        # the client's log through Python logging
    }
    config.update(dict(spec.config))
    return confluent_kafka.Consumer(config)


def _with_metadata(spec, partition, offset, metadata):
    import confluent_kafka  # pylint: disable=import-outside-toplevel
    if metadata is None:
        return confluent_kafka.TopicPartition(spec.topic, partition, offset)
    return confluent_kafka.TopicPartition(spec.topic, partition, offset,
                                          metadata=metadata)


def _topic_partition(spec, offset=None):
    import confluent_kafka  # pylint: disable=import-outside-toplevel
    if offset is None:
        return confluent_kafka.TopicPartition(spec.topic, spec.partition)
    return confluent_kafka.TopicPartition(spec.topic, spec.partition, offset)


def start_offset(consumer, spec: PartitionSpec) -> int:
    """Where a read of this partition starts, by ``spec.start``."""
    low, high = consumer.get_watermark_offsets(
        _topic_partition(spec), timeout=30)
    mode = spec.start.mode
    if mode == 'committed':
        committed = consumer.committed([_topic_partition(spec)], timeout=30)[0]
        resume = _kafka_commits.Resume.parse(committed.offset,
                                             committed.metadata)
        with _BACKLOG_LOCK:
            _RESUME[_backlog_key(spec)] = resume
        if committed.offset >= 0:
            return max(low, min(committed.offset, high))
        return low
    if mode == 'earliest':
        return low
    if mode == 'latest':
        return high
    found = consumer.offsets_for_times(
        [_topic_partition(spec, spec.start.time_ms)], timeout=30)[0]
    return high if found.offset < 0 else found.offset


# Backlog (partition end - position) per partition, as last seen by a read in
# this process; the trackers report progress from it.  And when a partition
# last gave a record (wall clock), across the reads of its restriction: a read
# lasts about a second, an idle stop waits longer.
_BACKLOG = {}
_LAST_RECORD = {}
_WATERMARKS = {}
# The highest of them so far (a read's estimator starts empty, and its
# first estimate may be below an idle partition's last one).
_HIGHEST = {}
_PENDING_COMMITS = {}
_RESUME = {}
# partition -> offsets whose dead letters a resumed run's sink holds
_DEAD_LETTERED = {}
# partition -> {offset: the outputs ('window=NAME&key=K') whose late dead
# letters a resumed run's sink holds} of records with several outputs
_OUTPUTS_WRITTEN = {}
# When a partition's last read ended caught up (monotonic clock).
_CAUGHT_UP = {}
_BACKLOG_LOCK = threading.Lock()


def _backlog_key(spec):
    return (spec.brokers, spec.topic, spec.partition, spec.group)


def _known_watermark(key, estimator) -> float:
    """A partition's watermark (seconds): the later of its read's
    estimator and the highest estimate of a read in this process (the
    runner holds what the read emits at one of those)."""
    current = estimator.current_watermark()
    with _BACKLOG_LOCK:
        known = _HIGHEST.get(key)
    marks = [float(m) for m in (current, known) if m is not None]
    return max(marks) if marks else float(MIN_TIMESTAMP)


def _most_advanced(spec):
    """The highest watermark of the topic's partitions read in this process
    (for the group), or None."""
    with _BACKLOG_LOCK:
        marks = [mark for (brokers, topic, _, group), mark in
                 _WATERMARKS.items()
                 if (brokers, topic, group) == (spec.brokers, spec.topic,
                                                spec.group)]
    return max(marks) if marks else None


class PartitionRange(OffsetRange):
    """Offsets of one partition, knowing which partition (for progress)."""

    def __init__(self, start, stop, key=None):
        super().__init__(start, stop)
        self.key = key

    def split_at(self, split_pos):
        return (PartitionRange(self.start, split_pos, self.key),
                PartitionRange(split_pos, self.stop, self.key))


class PartitionTracker(OffsetRestrictionTracker):
    """Offsets of one partition; an open-ended range is an unbounded read."""

    def __init__(self, offset_range):
        super().__init__(offset_range)
        self._backlog_key = getattr(offset_range, 'key', None)

    def is_bounded(self):
        return self._range.stop != UNBOUNDED_END

    def current_progress(self):
        if self.is_bounded():
            return super().current_progress()
        position = self._current_position
        done = 0 if position is None else position + 1 - self._range.start
        with _BACKLOG_LOCK:
            backlog = _BACKLOG.get(self._backlog_key, 0)
        return RestrictionProgress(completed=done, remaining=backlog)


class PartitionRestrictions(RestrictionProvider):
    def initial_restriction(self, spec):
        consumer = consumer_for(spec)
        try:
            start = start_offset(consumer, spec)
            key = _backlog_key(spec)
            if spec.stop.mode == 'end':
                _, end = consumer.get_watermark_offsets(
                    _topic_partition(spec), timeout=30)
                return PartitionRange(start, max(start, end), key)
            return PartitionRange(start, UNBOUNDED_END, key)
        finally:
            consumer.close()

    def create_tracker(self, restriction):
        return PartitionTracker(restriction)

    def restriction_size(self, spec, restriction):
        if restriction.stop != UNBOUNDED_END:
            return restriction.size()
        with _BACKLOG_LOCK:
            return max(1, _BACKLOG.get(_backlog_key(spec), 1))


class _ReadPartitionFn(beam.DoFn):
    """``PartitionSpec`` -> the partition's record values, event-timestamped."""

    def __init__(self, job, final_at=None, event_time=None, blocks=False,
                 late_from=None):
        self._job = job
        # event time -> when the record's windows are final (commit rule)
        self._final_at = final_at
        # event time -> when the first of them closes, where each of the
        # job's late dead letters names its output (io.Context.late_from)
        self._late_from = late_from
        # payload -> event time (None: the record timestamps are event times)
        self._event_time = event_time
        # emit a poll's records as one LineBlock (the columnar fast path)
        self._blocks = blocks
        self._read = Metrics.counter(job, 'read')
        self._replayed = Metrics.counter(job, 'filtered.replayed_final')
        self._replayed_dead = Metrics.counter(
            job, 'filtered.replayed_dead_letter')
        self._commits = Metrics.counter(job, 'kafka.commits')
        self._consumers = {}

    def _consumer(self, spec):
        key = (spec.brokers, spec.group, spec.config)
        if key not in self._consumers:
            self._consumers[key] = consumer_for(spec)
        return self._consumers[key]

    def teardown(self):
        for consumer in self._consumers.values():
            consumer.close()
        self._consumers.clear()

    def _commit(self, consumer, spec, next_offset):
        consumer.commit(offsets=[_topic_partition(spec, next_offset)],
                        asynchronous=False)
        self._commits.inc()

    def process(self, spec,
                tracker=beam.DoFn.RestrictionParam(PartitionRestrictions()),
                watermark=beam.DoFn.WatermarkEstimatorParam(
                    ManualWatermarkEstimator.default_provider())):
        yield from self.read(spec, tracker, watermark, None)

    def _commit_final(self, spec, offsets):
        """Commits what ``_kafka_commits.release`` found final (called by
        the local runner between bundles)."""
        consumer = self._consumer(spec)
        consumer.commit(offsets=[
            _with_metadata(spec, partition, offset, meta)
            for partition, offset, meta in offsets], asynchronous=False)
        self._commits.inc()

    def read(self, spec, tracker, watermark, finalizer):
        restriction = tracker.current_restriction()
        if restriction.start >= restriction.stop:
            return
        key = _backlog_key(spec)
        with _BACKLOG_LOCK:
            caught_up_at = _CAUGHT_UP.pop(key, None)
        if caught_up_at is not None:
            # Caught up at the end of its last read: read again LINGER_SECONDS
            # after it at the earliest, what came meanwhile in one block.
            pause = caught_up_at + LINGER_SECONDS - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        consumer = self._consumer(spec)
        consumer.assign([_topic_partition(spec, restriction.start)])
        lag = spec.lag_seconds
        started = time.monotonic()
        final_only = finalizer is None and self._final_at is not None
        resume = None
        if final_only:
            _kafka_commits.track(spec, self._final_at,
                                 lambda offsets, s=spec:
                                 self._commit_final(s, offsets))
            with _BACKLOG_LOCK:
                resume = _RESUME.get(key)
                dead_lettered = _DEAD_LETTERED.get(key, frozenset())
                outputs_written = _OUTPUTS_WRITTEN.get(key, {})
            _kafka_commits.started(
                spec, spec.partition, restriction.start,
                resume.horizon if resume is not None else None)
            if resume is not None and not resume.complete:
                # Windows final before the restart stay closed.
                self._advance(watermark, resume.horizon, key)
        newest_read = None
        stamped = None            # the latest timestamp emitted
        steps = []                # (offset, newest event time before it)
        # (offset, final at, stamped, payload) of the records that may be
        # late: their windows final under the watermark they are read under
        late = []
        late_from = self._late_from
        # A restart keeps a record it reads again out of those of its
        # windows final at the commit's horizon (deadletter.Origin
        # .final_by), rather than the commits being held before them:
        # where the job's windows allow it (windows.LateFrom.keeps_out).
        keeps_out = late_from is not None and \
            getattr(late_from, 'keeps_out', False)
        # the earliest event time of the records this read emitted (where
        # the job gives late_from: the first of their windows to close)
        earliest = None
        with _BACKLOG_LOCK:
            last_record, newest = _LAST_RECORD.setdefault(key, (started, None))
            pending = _PENDING_COMMITS.pop(key, None)
        if pending is not None:
            # The runner committed the last read's output before it started
            # this one: that read's offsets are safe to commit now.
            self._commit(consumer, spec, pending)
        next_offset = None
        finished = False
        stamp = self._event_time
        # The commit rule and the replay skip use the event time the
        # watermark and the windows use: the payload's where the job gives
        # it, read for every record (the first record whose windows are not
        # final may be anywhere in a poll), else the record timestamp.
        exact = final_only and stamp is not None
        lateness = getattr(self._final_at, 'least_lateness', 0.0)
        replaying = resume is not None and not resume.complete
        # Records read before the restart whose dead letters are written
        # may lie past its read offset (written before the kill, but after
        # the last commit's look).
        reread = resume.read if replaying else None
        if replaying and dead_lettered:
            reread = max(reread, max(dead_lettered) + 1)
        else:
            dead_lettered = frozenset()
        if replaying and outputs_written:
            reread = max(reread, max(outputs_written) + 1)
        else:
            outputs_written = {}
        batch = BLOCK_BATCH if self._blocks else BATCH
        try:
            while True:
                messages, seen_high = _poll(
                    consumer, spec, batch, next_offset
                    if next_offset is not None else restriction.start)
                block = _Block() if self._blocks else None
                claimed = True
                times = None
                if stamp is not None:
                    # Values are stamped with the watermark they were read
                    # under, never above their event times: the runner then
                    # holds the watermark downstream until they are decoded,
                    # whatever the records' own timestamps (a replay
                    # published now carries today's).
                    floor = watermark.current_watermark() or MIN_TIMESTAMP
                    if exact:
                        times = _event_times(messages, stamp)
                if final_only:
                    # The partition's watermark as last estimated (the
                    # estimator of a read on the local runner starts
                    # empty): the grouping that decides lateness is behind
                    # it (per record where the values carry the record
                    # timestamps).
                    mark = _known_watermark(key, watermark)
                    at = float(floor) if stamp is not None else None
                # A poll reaching back before the restart's read offset is
                # read record by record (its already counted records are
                # skipped, the rest still travel in one block).
                whole = _whole_block(messages, restriction.stop) \
                    if block is not None and stamp is not None else None
                if whole is not None and replaying and \
                        messages[0].offset() < reread:
                    whole = None
                if whole is not None:
                    # The whole poll in one block, claimed at once.
                    data, count, last_offset = whole
                    if tracker.try_claim(last_offset):
                        next_offset = last_offset + 1
                        self._read.inc(count)
                        if exact:
                            steps.extend(_steps(messages, times, newest_read))
                            newest_read = _max_time(newest_read, times)
                            _register_undated(messages, times,
                                              spec.partition)
                            _register_late(messages, times, mark,
                                           self._final_at, spec.partition,
                                           late, at, late_from)
                            if late_from is not None:
                                earliest = _min_time(earliest, times)
                        stamped = _later(stamped, floor)
                        yield _line_block(data, floor)
                    else:
                        claimed = False
                for index, message in enumerate(
                        messages if whole is None else ()):
                    error = message.error()
                    if error is not None:
                        if not error.fatal():
                            _LOG.warning('kafka://%s/%s partition %d: %s',
                                         spec.brokers, spec.topic,
                                         spec.partition, error.str())
                            continue
                        raise RuntimeError(
                            f'kafka://{spec.brokers}/{spec.topic} partition '
                            f'{spec.partition}: {error.str()}')
                    offset = message.offset()
                    if not tracker.try_claim(offset):
                        claimed = False
                        break
                    next_offset = offset + 1
                    kind, millis = message.timestamp()
                    seconds = millis / 1000.0 if kind and millis >= 0 \
                        else time.time()
                    value = message.value() or b''
                    if final_only:
                        # None: a payload the job cannot date, a dead letter
                        # written as soon as it is decoded.
                        event_time = _dated(times[index]) if exact \
                            else seconds
                        if replaying and resume.already_counted(
                                offset, event_time, self._final_at):
                            # Read before the restart, into windows whose
                            # final panes were written (or processed into
                            # the dead letters then): already counted.
                            self._read.inc()
                            self._replayed.inc()
                            continue
                        if offset in dead_lettered:
                            # Read before the restart, after its last
                            # commit's look: its dead letter (its only
                            # output: it could not be dated, or it was
                            # late) is written.
                            self._read.inc()
                            self._replayed_dead.inc()
                            continue
                        if offset % STEP_RECORDS == 0 and offset and \
                                newest_read is not None:
                            steps.append((offset, newest_read))
                        newest_read = _max_time(newest_read, (event_time,))
                        if event_time is None:
                            if exact:
                                deadletter.register_origin(
                                    value, _origin_tag(spec.partition,
                                                       offset))
                        elif late_from is not None:
                            # Its late dead letters name their output: a
                            # record that may be late for any of its
                            # groupings (the first of its windows to close
                            # is final under the partition's watermark), or
                            # one some of whose outputs' late dead letters
                            # the sink holds (read again, registered with
                            # those, and kept out of them alone).
                            earliest = event_time if earliest is None \
                                else min(earliest, event_time)
                            written = outputs_written.get(offset)
                            first = late_from(event_time)
                            # Handed on before the commit's look (before
                            # its "r"), some of its windows final at its
                            # horizon: in those final panes, or its late
                            # dead letters for them written (the horizon
                            # was held before its windows while it was
                            # not settled): kept out of them.
                            final_by = resume.horizon if keeps_out and \
                                replaying and offset < resume.read and \
                                first <= resume.horizon else None
                            if written or final_by is not None or \
                                    event_time < mark and first <= mark:
                                deadletter.register_origin(
                                    value, _origin_tag(spec.partition,
                                                       offset),
                                    written or (), final_by)
                                late.append((offset, first, at if exact
                                             else seconds, value))
                        elif event_time + lateness < mark:
                            # (a window closes after its records' times
                            # plus the allowed lateness)
                            final = self._final_at(event_time)
                            if final <= mark:
                                # May be late: its window.late dead letter
                                # names it (see _register_late).
                                deadletter.register_origin(
                                    value, _origin_tag(spec.partition,
                                                       offset))
                                late.append((offset, final, at if exact
                                             else seconds, value))
                    if stamp is not None:
                        seconds = floor
                    stamped = _later(stamped, seconds)
                    if block is None or not block.add(value, seconds):
                        self._read.inc()
                        yield TimestampedValue(value, seconds)
                    if stamp is None:
                        self._advance(watermark, seconds - lag, key)
                        if final_only:
                            mark = max(mark, seconds - lag)
                        newest = seconds if newest is None else max(
                            newest, seconds)
                if block:
                    self._read.inc(len(block.values))
                    yield block.emit()
                if stamp is not None:
                    # The watermark follows the event times the job reads
                    # from the payloads, not the records' own timestamps
                    # (those of a replay published now are not event times).
                    seen = _newest_event_time(messages, stamp, times)
                    if seen is not None:
                        newest = seen if newest is None else max(newest, seen)
                        self._advance(watermark, newest - lag, key)
                if not claimed:
                    return
                now = time.monotonic()
                if messages:
                    last_record = now
                    with _BACKLOG_LOCK:
                        _LAST_RECORD[key] = (now, newest)
                _, high = consumer.get_watermark_offsets(
                    _topic_partition(spec), cached=True) or (0, 0)
                high = max(high, seen_high)
                position = next_offset if next_offset is not None \
                    else restriction.start
                with _BACKLOG_LOCK:
                    _BACKLOG[key] = max(0, high - position)
                caught_up = high >= 0 and position >= high
                if restriction.stop != UNBOUNDED_END and \
                        position >= restriction.stop:
                    tracker.try_claim(restriction.stop)   # done
                    finished = True
                    return
                if spec.stop.mode == 'idle' and caught_up and \
                        now - last_record >= spec.stop.idle_seconds:
                    tracker.try_claim(restriction.stop)   # done
                    finished = True
                    return
                if caught_up and not messages:
                    # Idle and caught up: event time is taken to move on
                    # with the clock from the newest record (from now, for
                    # a partition that never had one).
                    self._advance(watermark, (
                        time.time() if newest is None
                        else newest + now - last_record) - lag, key)
                    if now - last_record >= spec.idle_seconds:
                        # Idle: no longer holds the others back.
                        ahead = _most_advanced(spec)
                        if ahead is not None:
                            self._advance(watermark, float(ahead), key)
                if caught_up:
                    with _BACKLOG_LOCK:
                        _CAUGHT_UP[key] = now
                if now - started >= READ_SECONDS or caught_up:
                    # Checkpoint: the output moves on, offsets are committed,
                    # and a partition that has caught up does not keep the
                    # worker (on the local runner, one thread runs the reads
                    # and every step after them: what a read has emitted
                    # goes on only once it returns).
                    tracker.defer_remainder()
                    return
        finally:
            # Not fetching between reads: the next read of the partition
            # assigns it again at its offset.
            consumer.unassign()
            if final_only:
                if next_offset is not None:
                    _kafka_commits.emitted(
                        spec, spec.partition, next_offset, newest_read,
                        stamped, steps, late,
                        None if earliest is None or keeps_out
                        else late_from(earliest))
            elif next_offset is not None:
                if finalizer is not None:
                    finalizer.register(
                        lambda c=consumer, s=spec, o=next_offset:
                        self._commit(c, s, o))
                elif finished:
                    # No later read follows: commit what was emitted.
                    self._commit(consumer, spec, next_offset)
                else:
                    # Committed when the next read of this partition starts,
                    # once the runner has committed this read's output: a
                    # job killed in between reads those records again (at
                    # least once), never loses them.
                    with _BACKLOG_LOCK:
                        _PENDING_COMMITS[key] = next_offset

    @staticmethod
    def _advance(estimator, seconds, key):
        mark = Timestamp.of(max(0.0, seconds))
        current = estimator.current_watermark()
        if current is None or mark > current:
            estimator.set_watermark(mark)
            with _BACKLOG_LOCK:
                _WATERMARKS[key] = mark
                if key not in _HIGHEST or mark > _HIGHEST[key]:
                    _HIGHEST[key] = mark

    @staticmethod
    def local_watermark(spec):
        """The partition's watermark as this process last estimated it: the
        bundle-based local runner holds its output watermark at it
        (pipelines/local_runner.py); other runners read the estimator."""
        with _BACKLOG_LOCK:
            return _WATERMARKS.get(_backlog_key(spec))


class _ReadPartitionFinalizingFn(_ReadPartitionFn):
    """Commits offsets once the runner has committed the bundle's output."""

    def process(self, spec,
                finalizer=beam.DoFn.BundleFinalizerParam,
                tracker=beam.DoFn.RestrictionParam(PartitionRestrictions()),
                watermark=beam.DoFn.WatermarkEstimatorParam(
                    ManualWatermarkEstimator.default_provider())):
        yield from self.read(spec, tracker, watermark, finalizer)


@beam.DoFn.unbounded_per_element()
class _ReadPartitionUnboundedFn(_ReadPartitionFn):
    pass


@beam.DoFn.unbounded_per_element()
class _ReadPartitionFinalizingUnboundedFn(_ReadPartitionFinalizingFn):
    pass


class _Block:
    """A poll's record values, to travel as one LineBlock: those holding no
    b'\\n' (the rest go one by one)."""
    __slots__ = ('values', 'seconds')

    def __init__(self):
        self.values = []
        self.seconds = None

    def add(self, value, seconds) -> bool:
        if not isinstance(value, bytes) or b'\n' in value:
            return False
        self.values.append(value)
        if self.seconds is None or seconds < self.seconds:
            self.seconds = seconds     # the earliest: see read()
        return True

    def __bool__(self):
        return bool(self.values)

    def emit(self):
        return _line_block(b'\n'.join(self.values), self.seconds)


def _poll(consumer, spec, batch, position):
    """``(records, end)``: the next records of the partition the consumer
    is assigned, from ``position``, and the partition's end offset as the
    broker last told it (-1: unknown).  Up to ``batch`` of what the
    partition holds, as soon as they have arrived (never waiting for more
    than it holds, so a trickle of records goes on at once rather than
    after POLL_SECONDS); none, without waiting, where the broker says it
    holds nothing more."""
    import confluent_kafka  # pylint: disable=import-outside-toplevel
    partition = _topic_partition(spec)
    _, high = consumer.get_watermark_offsets(partition, cached=True) or (0, 0)
    if high is None or high <= position:
        # Caught up as last seen: ask the broker (a round trip) rather than
        # wait in a fetch for records that may not come.
        try:
            _, high = consumer.get_watermark_offsets(
                partition, timeout=POLL_SECONDS, cached=False)
        except confluent_kafka.KafkaException:
            return consumer.consume(batch, timeout=POLL_SECONDS), -1
    if high <= position:
        return [], high
    return consumer.consume(min(batch, high - position),
                            timeout=POLL_SECONDS), high


def _whole_block(messages, stop):
    """``(values joined by b'\\n', count, last offset)`` of a poll whose
    records can all travel in one block (no error, no missing value, none
    holding a newline, all before ``stop``), else None."""
    if not messages or messages[-1].error() is not None or \
            messages[-1].offset() >= stop:
        return None
    if any(m.error() is not None for m in messages):
        return None
    values = [m.value() for m in messages]
    if None in values:
        return None
    data = b'\n'.join(values)
    if data.count(b'\n') != len(values) - 1:
        return None
    return data, len(values), messages[-1].offset()


def _line_block(data, seconds):
    from transforms.columnar import LineBlock  # pylint: disable=import-outside-toplevel
    return TimestampedValue(LineBlock(data), seconds)


# How many of a poll's last records are tried for their event time.
EVENT_TIME_TRIES = 8


def _event_times(messages, event_time) -> np.ndarray:
    """The event time of each record of a poll (float64 seconds, NaN where
    the job cannot date it or the record is an error): the poll's values
    read at once where ``event_time`` can (``decode.PayloadEventTime
    .times``), else one by one."""
    values = [None if m.error() is not None else m.value() for m in messages]
    many = getattr(event_time, 'times', None)
    if many is not None:
        return many(values)
    return np.array([np.nan if seconds is None else seconds for seconds in
                     (None if v is None else event_time(v) for v in values)],
                    np.float64)


# A read tells the commit ledger where it stands every this many records.
STEP_RECORDS = 256


def _steps(messages, times, newest):
    """``(offset, newest event time before it)`` every STEP_RECORDS
    offsets of a poll read at once (``newest``: before the poll)."""
    if not len(times):
        return []
    ahead = np.fmax.accumulate(times)
    if newest is not None:
        ahead = np.fmax(ahead, newest)
    found = []
    for index, message in enumerate(messages):
        offset = message.offset()
        if index and offset % STEP_RECORDS == 0 and \
                ahead[index - 1] == ahead[index - 1]:
            found.append((offset, float(ahead[index - 1])))
    return found


def _later(stamped, seconds):
    """The later of ``stamped`` (None: none yet) and a timestamp."""
    seconds = float(seconds)
    return seconds if stamped is None else max(stamped, seconds)


def _register_undated(messages, times, partition):
    """A poll's records the job cannot date (each one a decode dead letter:
    a payload of several lines is decoded whole, as one) are registered
    as dead letters' origins."""
    for index in np.flatnonzero(np.isnan(times)).tolist():
        value = messages[index].value()
        if value is not None:
            deadletter.register_origin(
                value, _origin_tag(partition, messages[index].offset()))


def _register_late(messages, times, mark, final_at, partition, late,
                   stamped=None, late_from=None):
    """A poll's records that may be late (their windows final at or before
    ``mark``, the watermark they are read under: the grouping that decides
    lateness is behind it, so a superset; in an ordered stream only the
    records older than the watermark are tried) are registered as their
    dead letters' origins: a window.late dead letter, a late record's only
    output, names it, so that a restart does not write it again.  Added
    to ``late`` for the commit ledger, which forgets those that turn out
    in their windows (``_kafka_commits.release``), the values stamped
    ``stamped`` (default ``mark``).  Only records more than
    the allowed lateness older than ``mark`` are tried (a window closes
    after its records' times plus the lateness).  ``late_from`` (where the
    job's late dead letters name their output, ``io.Context.late_from``):
    a record that may be late for any of its groupings, the first of its
    windows to close by ``mark``, is registered (older than ``mark``
    tried)."""
    lateness = 0.0 if late_from is not None else \
        getattr(final_at, 'least_lateness', 0.0)
    for index in np.flatnonzero(times + lateness < mark).tolist():
        seconds = float(times[index])
        final = (late_from or final_at)(seconds)
        if final <= mark:
            message = messages[index]
            value = message.value()
            deadletter.register_origin(
                value, _origin_tag(partition, message.offset()))
            late.append((message.offset(), final,
                         mark if stamped is None else stamped, value))


def _dated(seconds):
    """A float event time, None for NaN (undated)."""
    return None if seconds != seconds else float(seconds)


def _newest_event_time(messages, event_time, times=None):
    """The event time of a poll's last record the job can read, or None.  A
    partition is read in offset order, so in a time-ordered stream this is
    the poll's newest event time; in a disordered one it errs low, which
    only holds windows open longer.  ``times``: the records' event times
    where already read (:func:`_event_times`); else one of the poll's last
    EVENT_TIME_TRIES records is read."""
    if times is not None:
        dated = np.flatnonzero(~np.isnan(times))
        return float(times[dated[-1]]) if dated.size else None
    tried = 0
    for index in range(len(messages) - 1, -1, -1):
        message = messages[index]
        if message.error() is not None:
            continue
        seconds = event_time(message.value())
        if seconds is not None:
            return seconds
        tried += 1
        if tried >= EVENT_TIME_TRIES:
            break
    return None


def _min_time(earliest, times):
    """``earliest`` and the dated event times in ``times`` (NaN: undated),
    the least, or None."""
    if times.size == 0 or np.isnan(times).all():
        return earliest
    least = float(np.nanmin(times))
    return least if earliest is None else min(earliest, least)


def _max_time(newest, times):
    """``newest`` and the event times in ``times`` (None or NaN: undated),
    the greatest, or None."""
    if isinstance(times, np.ndarray):
        if times.size == 0 or np.isnan(times).all():
            return newest
        greatest = float(np.nanmax(times))
        return greatest if newest is None else max(newest, greatest)
    for seconds in times:
        if seconds is not None and (newest is None or seconds > newest):
            newest = seconds
    return newest


def read_fn(job, bounded, finalizes_bundles, final_at=None, event_time=None,
            blocks=False, late_from=None) -> _ReadPartitionFn:
    """The reading DoFn for a bounded or unbounded read, committing offsets in
    bundle finalization where the runner finalizes bundles, else (given
    ``final_at``) once the records' windows are final; its watermark follows
    ``event_time(payload)`` where given, and it emits a poll's records as one
    LineBlock if ``blocks``; ``late_from``: see ``io.Context.late_from``."""
    fn_class = {
        (True, False): _ReadPartitionFn,
        (True, True): _ReadPartitionFinalizingFn,
        (False, False): _ReadPartitionUnboundedFn,
        (False, True): _ReadPartitionFinalizingUnboundedFn,
    }[bounded, finalizes_bundles]
    return fn_class(job, final_at, event_time, blocks, late_from)


def _partitions(unused_impulse, spec_template: PartitionSpec):
    """The topic's partitions, listed when the job starts."""
    consumer = consumer_for(spec_template)
    try:
        metadata = consumer.list_topics(spec_template.topic, timeout=30)
    finally:
        consumer.close()
    topic = metadata.topics.get(spec_template.topic)
    if topic is None or topic.error is not None or not topic.partitions:
        reason = topic.error.str() if topic is not None and topic.error \
            else 'no partitions'
        raise RuntimeError(f'kafka://{spec_template.brokers}/'
                           f'{spec_template.topic}: {reason}')
    for partition in sorted(topic.partitions):
        yield spec_template._replace(partition=partition)


def spec_of(uri, job) -> PartitionSpec:
    """The partition spec (partition -1) a kafka:// source URI describes."""
    brokers, topic = _split_location(uri)
    return PartitionSpec(
        brokers=brokers, topic=topic, partition=-1,
        group=uri.param('group', f'realtime-pipelines-{job}'),
        start=parse_start(uri.param('start', 'committed')),
        stop=parse_stop(uri.param('stop', 'never')),
        lag_seconds=windows.parse_duration(
            uri.param('watermark_lag', DEFAULT_LAG)),
        idle_seconds=windows.parse_duration(
            uri.param('idle', DEFAULT_IDLE)),
        config=tuple(sorted(_config(uri).items())))


class KafkaSource(Source):
    """``PBegin -> PCollection[bytes]``: the topic's record values."""

    def spec(self) -> PartitionSpec:
        return spec_of(self.uri, self.context.job)

    def expand(self, pbegin):
        return self._read(pbegin, blocks=False)

    def blocks(self):
        """The records of each poll as one LineBlock (values holding a
        newline, one by one): the columnar fast path, in a stream too."""
        if self.context.kafka_io == 'xlang':
            return None
        return beam.ptransform_fn(
            lambda pbegin: self._read(pbegin, blocks=True))()

    def stream_blocks(self):
        return self.blocks()

    def _read(self, pbegin, blocks):
        if self.context.kafka_io == 'xlang':
            return pbegin | 'ReadFromKafka' >> self._xlang()
        spec = self.spec()
        return (pbegin
                | 'Impulse' >> beam.Impulse()
                | 'Partitions' >> beam.FlatMap(_partitions, spec)
                | 'Spread' >> beam.Reshuffle()
                | 'Eager' >> beam.WindowInto(
                    # Each partition's read starts as soon as it is listed,
                    # stamped with the earliest time (a runner that groups
                    # the reads would otherwise wait for the end of the
                    # global window, ahead of every record's event time).
                    beam_window.GlobalWindows(),
                    trigger=trigger.Repeatedly(trigger.AfterCount(1)),
                    accumulation_mode=trigger.AccumulationMode.DISCARDING,
                    timestamp_combiner=beam_window.TimestampCombiner
                    .OUTPUT_AT_EARLIEST)
                | 'ReadPartitions' >> beam.ParDo(read_fn(
                    self.context.job, spec.stop.bounded,
                    self.context.finalizes_bundles, self.context.final_at,
                    self.context.event_time, blocks,
                    self.context.late_from)))

    def _xlang(self):
        from apache_beam.io.kafka import ReadFromKafka  # pylint: disable=import-outside-toplevel
        spec = self.spec()
        config = {'bootstrap.servers': spec.brokers, 'group.id': spec.group,
                  **dict(spec.config)}
        if spec.start.mode in ('earliest', 'latest'):
            config['auto.offset.reset'] = spec.start.mode
        read = ReadFromKafka(
            consumer_config=config, topics=[spec.topic],
            start_read_time=spec.start.time_ms or None,
            commit_offset_in_finalize=True,
            timestamp_policy=ReadFromKafka.create_time_policy,
            max_num_records=None)
        job = self.context.job
        return read | 'Values' >> beam.Map(
            _count_value, Metrics.counter(job, 'read'))


def _count_value(key_value, counter):
    counter.inc()
    return key_value[1] or b''


# --------------------------------------------------------------------------
# The sink.

class Publisher:
    """A Kafka producer (idempotent) that waits while its local queue is full
    and, when flushed, raises if a message was refused or not delivered."""

    def __init__(self, brokers, config=()):
        import confluent_kafka  # pylint: disable=import-outside-toplevel
        self._where = f'kafka://{brokers}'
        self._producer = confluent_kafka.Producer({
            'bootstrap.servers': brokers, 'enable.idempotence': True,
            'linger.ms': 20, 'logger': _LOG, 'error_cb': self._failed,
            **dict(config)})
        self._errors = []
        self._fatal = None

    def _failed(self, error):
        if error.fatal() and self._fatal is None:
            # E.g. a topic deleted under the idempotent producer: it stops.
            self._fatal = _text(error)

    def _delivered(self, error, unused_message):
        if error is not None:
            self._errors.append(_text(error))

    def send(self, topic, value, key=None, timestamp_ms=None, headers=()):
        while True:
            try:
                self._producer.produce(
                    topic, value=value, key=key, headers=list(headers),
                    timestamp=timestamp_ms or 0, on_delivery=self._delivered)
                break
            except BufferError:
                self._producer.poll(0.1)      # the local queue is full
            except Exception as e:  # pylint: disable=broad-except
                self._raise_fatal(e)
        self._producer.poll(0)

    def flush(self, seconds=60):
        try:
            left = self._producer.flush(seconds)
        except Exception as e:  # pylint: disable=broad-except
            # The client raises odd errors (SystemError) once it has failed.
            self._raise_fatal(e)
        errors, self._errors = self._errors, []
        if left or errors:
            raise RuntimeError(
                f'{self._where}: {left} message(s) not delivered within '
                f'{seconds} s'
                + (f'; {len(errors)} refused: {errors[0]}' if errors else ''))

    def _raise_fatal(self, exception):
        cause = self._fatal or (
            f'a fatal client error ({type(exception).__name__}: {exception}),'
            f' as when a topic is deleted while it is written to')
        raise RuntimeError(f'{self._where}: the producer stopped: '
                           f'{cause}') from None


def _text(error) -> str:
    """A KafkaError's text (which may not be readable once the client has
    failed)."""
    try:
        return error.str()
    except Exception:  # pylint: disable=broad-except
        return error.name()


def create_topic(brokers, topic, partitions, topic_config=None, config=(),
                 exist_ok=True):
    """Create a topic with ``partitions`` partitions (replication 1) and the
    given topic configuration; an existing one is left as it is if
    ``exist_ok``."""
    from confluent_kafka.admin import AdminClient, NewTopic  # pylint: disable=import-outside-toplevel
    admin = AdminClient({'bootstrap.servers': brokers, **dict(config)})
    if exist_ok and topic in admin.list_topics(timeout=30).topics:
        return
    future = admin.create_topics([NewTopic(
        topic, num_partitions=partitions, replication_factor=1,
        config=dict(topic_config or {}))])[topic]
    future.result(30)       # admin is kept alive until the topic exists


class _ProduceFn(beam.DoFn):
    """Rows -> JSON messages; a bundle ends when the broker has them all."""

    def __init__(self, brokers, topic, table, config, job, rows_counter,
                 run_id=''):
        self._brokers = brokers
        self._topic = _messages.topic_for(topic, table)
        self._table = table
        self._headers = [(k, v.encode()) for k, v in
                         _messages.attributes(table, run_id).items()]
        self._config = config
        self._rows = Metrics.counter(job, rows_counter)
        self._publisher = None

    def setup(self):
        self._publisher = Publisher(self._brokers, self._config)

    def process(self, row):
        message = _messages.to_message(row, self._topic, self._table)
        self._publisher.send(message.topic, message.value, message.key,
                             message.event_time_ms, self._headers)
        self._rows.inc()

    def finish_bundle(self):
        self._publisher.flush(60)


class KafkaSink(Sink):
    def write(self, table, record_type):
        brokers, topic = _split_location(self.uri)
        config = tuple(sorted(_config(self.uri).items()))
        if self.context.kafka_io == 'xlang':
            from apache_beam.io.kafka import WriteToKafka  # pylint: disable=import-outside-toplevel
            return (beam.Map(_key_value, _messages.topic_for(topic, table),
                             table).with_output_types(typing.Tuple[bytes, bytes])
                    | WriteToKafka(
                        producer_config={'bootstrap.servers': brokers,
                                         **dict(config)},
                        topic=_messages.topic_for(topic, table)))
        return beam.ParDo(_ProduceFn(brokers, topic, table, config,
                                     self.context.job,
                                     self.rows_counter(table),
                                     self.context.run_id))


def _key_value(row, topic, table):
    message = _messages.to_message(row, topic, table)
    return message.key or b'', message.value


def open_source(uri, context):
    return KafkaSource(uri, context)


def open_sink(uri, context):
    return KafkaSink(uri, context)
