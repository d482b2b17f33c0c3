"""Decoding raw payloads into typed records, with tagged outputs ``ok`` / ``dead``.

A *decoder* is a plain function ``decode(text: str) -> record`` that raises
:class:`DecodeError` with a one-line reason for input it refuses.  :class:`Decode`
wraps it into a ``beam.PTransform`` that

* refuses oversized payloads before touching them,
* refuses payloads that are not UTF-8,
* turns every ``DecodeError`` *and every unexpected exception* into a dead letter
  (a hostile record never stops the job),
* stamps each good record with its event time taken from the payload
  (``record.event_time``, a ``Timestamp``), and
* counts decoded and dead records.

The format parsers themselves (JSON lines, nginx/Apache combined, syslog) live in
:mod:`transforms.formats`; what a domain makes of the parsed fields lives in
``transforms/<domain>/``.
"""
import typing

import numpy as np

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from transforms import deadletter

# 1 MiB: far beyond any sane log line, small enough to keep a worker alive.
DEFAULT_MAX_BYTES = 1 << 20

# Event times outside this range are refused: they are corrupt, and Beam's own
# timestamp range would reject them with an exception otherwise.
MIN_EVENT_TIME = Timestamp.of(0)                       # 1970-01-01
MAX_EVENT_TIME = Timestamp.of(253402300799)            # 9999-12-31T23:59:59Z


class DecodeError(ValueError):
    """Raised by a decoder for input it refuses; the message is the reason."""


class FilteredRecord(DecodeError):
    """Raised by a decoder for input that is not a record and not an error
    either (a CSV header line, say): it is counted under
    ``filtered.<name>`` instead of becoming a dead letter."""
    name = 'filtered'


class Filtered(typing.NamedTuple):
    """What decode_payload returns for a FilteredRecord."""
    name: str


def decode_payload(raw, decoder, stage: str, source: str = '',
                   max_bytes: int = DEFAULT_MAX_BYTES):
    """One payload -> the decoded record, a DeadLetter saying why not, or
    Filtered (a named filter: not a record, not an error).

    The single definition of what decoding accepts, shared by the
    element-at-a-time path and the columnar fast path's fallback.
    """
    if raw is None:
        return deadletter.dead_letter(b'', stage, 'empty record (None)', source)
    if isinstance(raw, str):
        text = raw
        size = len(raw.encode('utf-8', errors='surrogateescape'))
    else:
        size = len(raw)
        text = None
    if size > max_bytes:
        return deadletter.dead_letter(
            raw, stage, f'oversized: {size} bytes > limit {max_bytes}', source)
    if text is None:
        try:
            text = bytes(raw).decode('utf-8')
        except UnicodeDecodeError as e:
            return deadletter.dead_letter(
                raw, stage, f'not UTF-8: invalid byte at offset {e.start}',
                source)
    try:
        record = decoder(text)
        event_time = record.event_time
        in_range = MIN_EVENT_TIME <= event_time <= MAX_EVENT_TIME
    except FilteredRecord as e:
        return Filtered(e.name)
    except DecodeError as e:
        return deadletter.dead_letter(
            raw, stage, str(e) or 'refused by decoder', source)
    except Exception as e:  # pylint: disable=broad-except
        # A decoder bug must not stop the job: the record goes to the dead
        # letters with the exception named, so the bug can be found.
        return deadletter.dead_letter(
            raw, stage, f'unexpected {type(e).__name__}: {e}', source)
    if not in_range:
        return deadletter.dead_letter(
            raw, stage, f'event time out of range: {event_time}', source)
    return record


class DecodeCounters:
    """The counters a decoding step keeps: ``decoded``, ``dead_letters`` and
    ``filtered.NAME`` per named filter (made on first use)."""

    def __init__(self, job):
        self._job = job
        self._decoded = Metrics.counter(job, 'decoded')
        self._dead = Metrics.counter(job, 'dead_letters')
        self._filtered = {}

    def decoded(self, count=1):
        self._decoded.inc(count)

    def dead(self):
        self._dead.inc()

    def filtered(self, name):
        if name not in self._filtered:
            self._filtered[name] = Metrics.counter(self._job,
                                                   f'filtered.{name}')
        self._filtered[name].inc()


class DecodeFn(beam.DoFn):
    """Applies one decoder; emits records to ``ok`` and dead letters to ``dead``.

    ``with_raw``: ``ok`` holds ``(record, payload)`` pairs, the payload as it
    was read, for a grouping that keeps late records as dead letters with
    their payload (:class:`transforms.aggregate.AggregatePerKey`
    ``carries_raw``)."""

    def __init__(self, decoder: typing.Callable[[str], typing.Any], stage: str,
                 job: str, source: str = '', max_bytes: int = DEFAULT_MAX_BYTES,
                 with_raw: bool = False):
        self._decoder = decoder
        self._with_raw = with_raw
        self._stage = stage
        self._source = source
        self._max_bytes = max_bytes
        self._counters = DecodeCounters(job)

    def process(self, raw):
        result = decode_payload(raw, self._decoder, self._stage, self._source,
                                self._max_bytes)
        if isinstance(result, Filtered):
            self._counters.filtered(result.name)
        elif isinstance(result, deadletter.DeadLetter):
            self._counters.dead()
            yield beam.pvalue.TaggedOutput(deadletter.DEAD, result)
        else:
            self._counters.decoded()
            yield TimestampedValue((result, raw) if self._with_raw else result,
                                   result.event_time)


class Decode(beam.PTransform):
    """``PCollection[bytes|str]`` -> tagged ``ok`` (records, event-timestamped) and
    ``dead`` (:class:`~transforms.deadletter.DeadLetter`).

    Any windowing is kept; decoding is element-wise.  Use as::

        decoded = lines | Decode(decode_log_line, stage='decode.logs', job='logs')
        decoded.ok, decoded.dead

    ``with_raw=True``: ``ok`` holds ``(record, payload)`` pairs (see
    :class:`DecodeFn`).
    """

    def __init__(self, decoder, stage: str, job: str, source: str = '',
                 max_bytes: int = DEFAULT_MAX_BYTES, with_raw: bool = False,
                 label=None):
        super().__init__(label)
        self._fn = DecodeFn(decoder, stage, job, source, max_bytes, with_raw)

    def expand(self, raw):
        return raw | beam.ParDo(self._fn).with_outputs(
            deadletter.DEAD, main=deadletter.OK)


# Fewer payloads than this are read one by one: a vectorised reading costs
# about a millisecond whatever the block's size (Arrow's JSON reader), about
# what a hundred payloads read one by one cost.
MIN_BLOCK_LINES = 128


class PayloadEventTime:
    """``payload -> event time in seconds`` (None for a payload the decoder
    refuses): the event time a job takes from a record, for a source whose
    watermark must follow it (a Kafka record's own timestamp may be when it
    was published, not when it happened).  ``times(payloads)`` reads many
    at once: where the job gives ``block_times`` (``(data, starts, ends) ->
    (seconds, read)``, e.g. ``columnar.JsonEventTimes``: the lines its
    vectorised reading reads exactly as the decoder), the payloads as one
    block, the lines it does not read one by one.  Picklable."""

    def __init__(self, decoder, max_bytes: int = DEFAULT_MAX_BYTES,
                 block_times=None):
        self._decoder = decoder
        self._max_bytes = max_bytes
        self._block_times = block_times

    def __call__(self, raw) -> typing.Optional[float]:
        if raw is None or len(raw) > self._max_bytes:
            return None
        try:
            text = raw.decode('utf-8') if isinstance(raw, bytes) else raw
            event_time = self._decoder(text).event_time
        except Exception:  # pylint: disable=broad-except
            return None    # the decode step dead-letters it
        if not MIN_EVENT_TIME <= event_time <= MAX_EVENT_TIME:
            return None
        return float(event_time)

    def times(self, payloads) -> np.ndarray:
        """The event time of each payload (float64 seconds; NaN where
        ``self(payload)`` is None), equal to ``self(payload)``."""
        out = np.full(len(payloads), np.nan)
        rest = range(len(payloads))
        if self._block_times is not None and \
                len(payloads) >= MIN_BLOCK_LINES:
            block = [i for i, raw in enumerate(payloads)
                     if isinstance(raw, bytes) and b'\n' not in raw]
            if block:
                lengths = np.fromiter((len(payloads[i]) for i in block),
                                      np.int64, len(block))
                starts = np.concatenate(([0], np.cumsum(lengths + 1)[:-1]))
                seconds, read = self._block_times(
                    b'\n'.join([payloads[i] for i in block]), starts,
                    starts + lengths)
                block = np.asarray(block, np.int64)
                out[block[read]] = seconds[read]
                unread = np.ones(len(payloads), bool)
                unread[block[read]] = False
                rest = np.flatnonzero(unread).tolist()
        for i in rest:
            seconds = self(payloads[i])
            if seconds is not None:
                out[i] = seconds
        return out


class _KeyRecordFn(beam.DoFn):
    def __init__(self, key, paired):
        self._key = key
        self._paired = paired

    def process(self, element):
        yield self._key(element[0] if self._paired else element), element


class KeyRecords(beam.ParDo):
    """``record -> (key(record), record)``, or with ``paired``
    ``(record, payload) -> (key(record), (record, payload))``: decoded
    records keyed for their grouping, the payload kept beside a record
    where :class:`Decode` ``with_raw`` carries it (for a grouping that
    keeps late records as dead letters with their payload).  One step
    either way, so its name is the same whether payloads are carried or
    not.  ``key`` must be picklable (e.g. ``operator.attrgetter``)."""

    def __init__(self, key, paired: bool = False):
        super().__init__(_KeyRecordFn(key, paired))


def _record(pair):
    return pair[0]


def records_and_keyed(decoded, key, paired: bool, keyed_label: str,
                      records_label: typing.Optional[str] = None):
    """What a job wires after :class:`Decode` (``with_raw=paired``), or a
    step that keeps its pairs: ``(records, keyed)``, the records alone (with
    ``paired``, taken from the pairs by a step ``records_label``; None
    without that label) and :class:`KeyRecords` of ``decoded`` (a step
    ``keyed_label``).  The labels are the job's: its steps keep their names
    (a running job updates in place), which a composite transform would
    nest under its own."""
    if paired:
        records = decoded | records_label >> beam.Map(_record) \
            if records_label else None
    else:
        records = decoded
    return records, decoded | keyed_label >> KeyRecords(key, paired)
