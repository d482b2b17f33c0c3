"""``synthetic://DOMAIN?events=N&seed=S&...``: a built-in deterministic stream.

In streaming mode the stream is played as it would arrive: records in arrival
order (out of order in event time, some late, some malformed), the watermark
advancing after every tick and processing time advancing by ``tick`` seconds,
so that EARLY, ON_TIME and LATE panes all occur.  On the local runner this is
Beam's ``TestStream``.  In batch mode the records are a bounded collection (all
panes ON_TIME).

The ``TestStream`` plays the ticks, not the records: one small element per
tick that has records (its index, stamped with the tick's earliest event
time), then the tick's watermark, then its processing time.  The step after
it (:class:`_TickRecords`) turns a tick's index into the tick's records, one
element each (:meth:`SyntheticSource.expand`), or one ``LineBlock`` of them
(:meth:`SyntheticSource.stream_blocks`, the columnar path).  Either way the
records of a tick travel in one bundle, stamped no later than their event
times, so the runner holds the watermark behind them exactly as when the
``TestStream`` held the records itself; but the records are not encoded into
the pipeline (the local runner round-trips a streaming pipeline through its
portable form, pickled and compressed), and a tick is one element, not one per
record, in the runner's bookkeeping.

Domains and their parameters: see ``python -m pipelines JOB --help``.
"""
import collections
import importlib
import importlib.util
import math
import threading
import typing

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.testing.test_stream import TestStream
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from transforms.columnar import LineBlock

from transforms.io import Source, UriError, counted, parse_uri

DESCRIPTION = ('built-in deterministic stream, e.g. synthetic://logs?events='
               '30000&seed=7 (parameters: see the job\'s --help)')


def _domain(uri):
    name = uri.location.strip('/')
    module_name = f'transforms.synthetic.{name}'
    if not name or not name.isidentifier() or \
            importlib.util.find_spec(module_name) is None:
        raise UriError(f'{uri.text}: unknown synthetic domain {name!r}')
    return importlib.import_module(module_name)


def params_of(uri) -> dict:
    module = _domain(uri)
    uri.check_params(module.PARAMS)
    params = {name: uri.param(name, default, kind)
              for name, (kind, default, _) in module.PARAMS.items()}
    for name, value in params.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise UriError(f'{uri.text}: {name} must be a finite number')
        if isinstance(value, (int, float)) and not isinstance(value, bool) \
                and value < 0:
            raise UriError(f'{uri.text}: {name} must not be negative')
    for name in ('rate', 'tick'):
        if name in params and params[name] <= 0:
            raise UriError(f'{uri.text}: {name} must be greater than zero')
    for name in ('late', 'malformed', 'exit', 'fail', 'json', 'requests'):
        if name in params and not 0 <= params[name] <= 1:
            raise UriError(f'{uri.text}: {name} is a fraction in [0, 1]')
    if params.get('events', 1) < 1:
        raise UriError(f'{uri.text}: events must be at least 1')
    try:
        module.parse_start(params['start'])
    except (KeyError, AttributeError):
        pass
    except ValueError as e:
        raise UriError(f'{uri.text}: {e}') from None
    return params


def validate(uri, kind):
    params_of(uri)


def generate(uri):
    """The :class:`~transforms.synthetic.SyntheticStream` a parsed
    ``synthetic://`` URI names."""
    return _domain(uri).generate(params_of(uri))


def describe_params(domain: str) -> str:
    module = importlib.import_module(f'transforms.synthetic.{domain}')
    return '; '.join(f'{name} ({default}): {text}'
                     for name, (_, default, text) in module.PARAMS.items())


def test_stream(stream) -> TestStream:
    """The stream as a TestStream: records, then watermark, then clock, per tick.
    (The source plays :func:`tick_stream` instead, the same stream with one
    element per tick; this one holds the records themselves, for tests.)

    Processing time starts at the epoch and advances by the tick, far below the
    event times: Beam's Python trigger driver compares processing-time firings
    with the window end, so a clock ahead of event time would mark EARLY panes
    as LATE.
    """
    ts = TestStream(coder=beam.coders.BytesCoder())
    watermark = None
    for records, tick_watermark in stream.ticks:
        if records:
            ts.add_elements([TimestampedValue(p, t) for t, p in records])
        if watermark is None or tick_watermark > watermark:
            ts.advance_watermark_to(Timestamp.of(tick_watermark))
            watermark = tick_watermark
        ts.advance_processing_time(stream.tick_seconds)
    return ts.advance_watermark_to_infinity()


# The ticks of the streams played lately in this process, by URI: what the
# TestStream's tick indices refer to (a worker that finds none generates the
# stream again: it is deterministic).
_PLAYED = collections.OrderedDict()
_PLAYED_LOCK = threading.Lock()
_PLAYED_KEPT = 2


class _Tick(typing.NamedTuple):
    """A tick as played: the event times (seconds; a numpy array, or a
    list) and payloads of its records, in arrival order, and its
    watermark."""
    times: typing.Any
    payloads: list
    watermark: float

    def records(self):
        """``(event time, payload)`` pairs."""
        times = self.times.tolist() if isinstance(self.times, np.ndarray) \
            else self.times
        return zip(times, self.payloads)

    def first(self) -> float:
        """The earliest event time (the tick has records)."""
        return float(self.times.min()) if isinstance(
            self.times, np.ndarray) else min(self.times)


def _as_played(ticks) -> list:
    """A stream's ticks as :class:`_Tick` s: from its columns where it has
    them (no tuple per record), else from its ``(records, watermark)``."""
    columns = getattr(ticks, 'columns', None)
    if columns is not None:
        return [_Tick(*tick) for tick in columns()]
    return [_Tick([t for t, _ in records], [p for _, p in records], mark)
            for records, mark in ticks]


def _played(text: str):
    """``(ticks as a list of _Tick, seconds per tick)`` of the stream
    ``text`` names (generated once)."""
    with _PLAYED_LOCK:
        played = _PLAYED.get(text)
        if played is not None:
            _PLAYED.move_to_end(text)
            return played
    stream = generate(parse_uri(text))
    played = _as_played(stream.ticks), stream.tick_seconds
    with _PLAYED_LOCK:
        _PLAYED[text] = played
        while len(_PLAYED) > _PLAYED_KEPT:
            _PLAYED.popitem(last=False)
    return played


def tick_stream(ticks, tick_seconds) -> TestStream:
    """The ticks (``(records, watermark)`` pairs, or :class:`_Tick` s) as a
    TestStream: per tick, its index (if it has records, stamped with their
    earliest event time), then its watermark, then the clock.  Processing
    time starts at the epoch, as in :func:`test_stream`."""
    ts = TestStream(coder=beam.coders.VarIntCoder())
    watermark = None
    for index, tick in enumerate(ticks):
        if not isinstance(tick, _Tick):
            records, mark = tick
            tick = _Tick([t for t, _ in records], [], mark)
        if len(tick.times):
            ts.add_elements([TimestampedValue(index, tick.first())])
        if watermark is None or tick.watermark > watermark:
            ts.advance_watermark_to(Timestamp.of(tick.watermark))
            watermark = tick.watermark
        ts.advance_processing_time(tick_seconds)
    return ts.advance_watermark_to_infinity()


class _TickRecords(beam.DoFn):
    """A tick's index -> its records, each in its event time (``blocks``
    False), or those holding no b'\\n' as one LineBlock stamped with their
    earliest event time and the others one by one (``blocks`` True).  Counts
    them ``read``."""

    def __init__(self, text, job, blocks):
        self._text = text
        self._blocks = blocks
        self._read = Metrics.counter(job, 'read')

    def setup(self):
        self._ticks, _ = _played(self._text)

    def process(self, index):
        tick = self._ticks[index]
        payloads = tick.payloads
        self._read.inc(len(payloads))
        if not self._blocks:
            for t, payload in tick.records():
                yield TimestampedValue(payload, t)
            return
        if not payloads:
            return
        block = b'\n'.join(payloads)
        if block.count(b'\n') == len(payloads) - 1:     # no payload has one
            yield TimestampedValue(LineBlock(block), tick.first())
            return
        lines = [(t, p) for t, p in tick.records() if b'\n' not in p]
        if lines:
            yield TimestampedValue(
                LineBlock(b'\n'.join(p for _, p in lines)),
                min(t for t, _ in lines))
        for t, payload in tick.records():
            if b'\n' in payload:
                yield TimestampedValue(payload, t)


class _Play(beam.PTransform):
    """``PBegin -> PCollection``: the stream's records as they arrive, one
    per element or in one LineBlock per tick (``blocks``)."""

    def __init__(self, text, job, blocks):
        super().__init__()
        self._text = text
        self._job = job
        self._blocks = blocks

    def expand(self, pbegin):
        ticks, tick_seconds = _played(self._text)
        return (pbegin
                | 'Ticks' >> tick_stream(ticks, tick_seconds)
                | 'Records' >> beam.ParDo(
                    _TickRecords(self._text, self._job, self._blocks)))


class SyntheticSource(Source):
    def expand(self, pbegin):
        if self.context.streaming:
            return pbegin | 'Play' >> _Play(self.uri.text, self.context.job,
                                            blocks=False)
        stream = generate(self.uri)
        read = Metrics.counter(self.context.job, 'read')
        records = pbegin | 'Create' >> beam.Create(
            list(stream.payloads()), reshuffle=False)
        return records | 'CountRead' >> beam.Map(counted, read)

    def stream_blocks(self):
        """A tick's records as one LineBlock (those holding a newline one by
        one), in a streaming job: the columnar fast path on the stream."""
        if not self.context.streaming:
            return None
        return _Play(self.uri.text, self.context.job, blocks=True)


def open_source(uri, context):
    return SyntheticSource(uri, context)
