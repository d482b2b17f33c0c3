"""Sources and decoding: the synthetic generator, its TestStream, the file
source, and the Decode transform's handling of hostile input."""
import bz2
import collections
import gzip
import math
import time
import typing

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import (ElementEvent, ProcessingTimeEvent,
                                             WatermarkEvent)
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.utils.timestamp import MAX_TIMESTAMP, Duration, Timestamp

from apache_beam.metrics.metric import MetricsFilter

from transforms.columnar import LineBlock
from transforms.decode import Decode, DecodeError
from transforms.io import Context, UriError, open_source
from transforms.io import synthetic as synthetic_io
from transforms.io.synthetic import test_stream as make_test_stream
from transforms.logs import decoders
from transforms.synthetic import logs as synthetic_logs

T0 = 1767225600          # 2026-01-01T00:00:00Z
JOB = 'srctest'


def batch_pipeline():
    return TestPipeline(options=PipelineOptions(
        runner='BundleBasedDirectRunner'))


def params(**overrides):
    """The logs domain's parameters: its documented defaults, overridden."""
    values = {name: default
              for name, (_, default, _) in synthetic_logs.PARAMS.items()}
    unknown = set(overrides) - set(values)
    assert not unknown, unknown
    values.update(overrides)
    return values


def records_of(stream):
    """(event_time, payload, watermark before arrival) in arrival order."""
    out = []
    watermark = -math.inf
    for records, tick_watermark in stream.ticks:
        for t, payload in records:
            out.append((t, payload, watermark))
        watermark = tick_watermark
    return out


def refused_by_reference_decoder(payload):
    decode = decoders.make_decoder('auto', 'web', None)
    try:
        decode(payload.decode('utf-8'))
    except (DecodeError, UnicodeDecodeError):
        return True
    return False


# ------------------------------------------------------ synthetic generator

def test_the_same_params_give_the_same_stream():
    a = synthetic_logs.generate(params(events=2000, seed=5))
    b = synthetic_logs.generate(params(events=2000, seed=5))
    assert a.ticks == b.ticks
    assert a.tick_seconds == b.tick_seconds == 60.0     # the default tick


def test_a_different_seed_gives_a_different_stream():
    a = synthetic_logs.generate(params(events=2000, seed=5))
    b = synthetic_logs.generate(params(events=2000, seed=6))
    assert list(a.payloads()) != list(b.payloads())
    # Event times are the same grid: only the content and arrival differ.
    assert sorted(t for t, _, _ in records_of(a)) == \
        sorted(t for t, _, _ in records_of(b))


@pytest.mark.parametrize('events, rate', [(1, 100.0), (1000, 100.0),
                                          (777, 10.0)])
def test_record_count_and_event_time_grid(events, rate):
    stream = synthetic_logs.generate(params(events=events, rate=rate,
                                            seed=1))
    recs = records_of(stream)
    assert len(recs) == len(stream) == len(list(stream.payloads())) == events
    times = sorted(t for t, _, _ in recs)
    assert times[0] == T0
    # `rate` records in every whole second of event time.
    per_second = collections.Counter(int(t - T0) for t in times)
    full, rest = divmod(events, int(rate))
    assert [per_second[s] for s in range(full)] == [int(rate)] * full
    assert per_second.get(full, 0) == rest


@pytest.fixture(scope='module')
def dirty_stream():
    return synthetic_logs.generate(params(
        events=20000, seed=3, late=0.05, malformed=0.05))


def test_watermark_advances_every_tick(dirty_stream):
    marks = [w for _, w in dirty_stream.ticks]
    assert all(b > a for a, b in zip(marks, marks[1:]))
    # The first promise leaves room for the disorder bound.
    assert marks[0] == T0 + dirty_stream.tick_seconds - 5.0


def test_straggler_fraction_is_near_the_late_param(dirty_stream):
    recs = records_of(dirty_stream)
    late = [t for t, _, watermark in recs if t < watermark]
    assert 0.04 < len(late) / len(recs) < 0.06


def test_malformed_fraction_is_near_the_param(dirty_stream):
    payloads = list(dirty_stream.payloads())
    refused = sum(map(refused_by_reference_decoder, payloads))
    assert 0.04 < refused / len(payloads) < 0.06


def test_clean_stream_has_no_late_and_no_malformed_records():
    stream = synthetic_logs.generate(params(events=3000, seed=8, late=0.0,
                                            malformed=0.0))
    recs = records_of(stream)
    assert not [t for t, _, watermark in recs if t < watermark]
    decode = decoders.make_decoder('auto', 'web', None)
    for t, payload, _ in recs:
        record = decode(payload.decode('utf-8'))
        # The event time comes from the payload (to the second at worst).
        assert abs(record.event_time.micros / 1e6 - t) < 1.0, payload


def test_stragglers_stay_within_six_minutes():
    stream = synthetic_logs.generate(params(events=5000, seed=4, late=1.0))
    for i, (records, watermark) in enumerate(stream.ticks):
        arrival_end = T0 + (i + 1) * stream.tick_seconds
        for t, _ in records:
            assert 20.0 <= arrival_end - t <= 360.0 + stream.tick_seconds


# ----------------------------------------------------------- its TestStream

def test_test_stream_plays_elements_then_watermark_to_infinity():
    stream = synthetic_logs.generate(params(events=400, seed=2, late=0.05))
    events = make_test_stream(stream)._events
    assert isinstance(events[0], ElementEvent)
    assert isinstance(events[-1], WatermarkEvent)
    assert events[-1].new_watermark == MAX_TIMESTAMP
    played = [(tv.timestamp, tv.value) for e in events
              if isinstance(e, ElementEvent) for tv in e.timestamped_values]
    assert played == [(Timestamp.of(t), p) for t, p, _ in records_of(stream)]
    marks = [e.new_watermark for e in events if isinstance(e, WatermarkEvent)]
    assert all(b > a for a, b in zip(marks, marks[1:]))
    assert marks[:-1] == [Timestamp.of(w) for _, w in stream.ticks]
    clock = [e.advance_by for e in events
             if isinstance(e, ProcessingTimeEvent)]
    # (ticks are made lazily, a stream at a time: no len())
    assert clock == [Duration.of(stream.tick_seconds)] * len(
        list(stream.ticks))
    # Processing time stays far below event time (see test_stream's doc).
    assert len(list(stream.ticks)) < T0


def test_the_source_plays_one_element_per_tick_then_its_watermark_and_clock():
    stream = synthetic_logs.generate(params(events=400, seed=2, late=0.05))
    events = synthetic_io.tick_stream(stream.ticks,
                                      stream.tick_seconds)._events
    played = [tv for e in events if isinstance(e, ElementEvent)
              for tv in e.timestamped_values]
    ticks = [(i, records) for i, (records, _) in enumerate(stream.ticks)
             if records]
    # One element per tick with records: its index, stamped no later than
    # any of its records (the runner holds the watermark behind them).
    assert [tv.value for tv in played] == [i for i, _ in ticks]
    assert [tv.timestamp for tv in played] == [
        Timestamp.of(min(t for t, _ in records)) for _, records in ticks]
    marks = [e.new_watermark for e in events if isinstance(e, WatermarkEvent)]
    assert marks[:-1] == [Timestamp.of(w) for _, w in stream.ticks]
    assert marks[-1] == MAX_TIMESTAMP
    clock = [e.advance_by for e in events
             if isinstance(e, ProcessingTimeEvent)]
    assert clock == [Duration.of(stream.tick_seconds)] * len(
        list(stream.ticks))
    # Each tick's element comes before its watermark and its clock.
    kinds = [type(e).__name__[0] for e in events]
    assert ''.join(kinds).startswith('EWP')


def _play(uri, blocks, expected):
    """Runs the streaming synthetic source (its records, or its blocks),
    asserts it emits ``expected`` ``(value, timestamp)`` pairs and returns
    its ``read`` counter."""
    p = TestPipeline(options=PipelineOptions(
        runner='BundleBasedDirectRunner', streaming=True))
    source = open_source(uri, Context(JOB, streaming=True))
    read = p | 'Read' >> (source.stream_blocks() if blocks else source)
    assert_that(read | beam.Map(lambda v, t=beam.DoFn.TimestampParam: (v, t)),
                equal_to(expected))
    result = p.run()
    result.wait_until_finish()
    counted = result.metrics().query(MetricsFilter().with_namespace(JOB)
                                     .with_name('read'))['counters']
    return sum(c.committed or c.attempted for c in counted)


def test_the_streaming_source_emits_every_record_at_its_event_time():
    uri = 'synthetic://logs?events=300&seed=3&late=0.1&malformed=0.1&tick=1'
    stream = synthetic_logs.generate(params(events=300, seed=3, late=0.1,
                                            malformed=0.1, tick=1.0))
    read = _play(uri, False, [(p, Timestamp.of(t))
                              for t, p in stream.records()])
    assert read == 300


def test_the_streaming_source_emits_a_tick_as_one_line_block():
    uri = 'synthetic://logs?events=300&seed=3&late=0.1&malformed=0.1&tick=1'
    stream = synthetic_logs.generate(params(events=300, seed=3, late=0.1,
                                            malformed=0.1, tick=1.0))
    expected = []
    for records, _ in stream.ticks:
        lines = [(t, p) for t, p in records if b'\n' not in p]
        if lines:
            expected.append((LineBlock(b'\n'.join(p for _, p in lines)),
                             Timestamp.of(min(t for t, _ in lines))))
        expected += [(p, Timestamp.of(t)) for t, p in records
                     if b'\n' in p]
    assert sum(len(v.lines()) if isinstance(v, LineBlock) else 1
               for v, _ in expected) == 300
    assert len(expected) < len(list(stream.ticks))     # blocks, not records
    assert _play(uri, True, expected) == 300


def test_synthetic_batch_source_reads_every_payload():
    uri = 'synthetic://logs?events=60&seed=9&malformed=0.2'
    expected = list(synthetic_logs.generate(params(
        events=60, seed=9, malformed=0.2)).payloads())
    p = batch_pipeline()
    assert_that(p | open_source(uri, Context(JOB)), equal_to(expected))
    p.run().wait_until_finish()


# -------------------------------------------------------------- file source

LINES = [b'{"first": 1}', b'', b'caf\xc3\xa9', b'\xff\xfe not utf-8',
         b'with\rcarriage return inside', b'last']


def test_file_source_reads_raw_lines_from_plain_and_compressed_files(
        tmp_path):
    (tmp_path / 'a.log').write_bytes(b'\n'.join(LINES) + b'\n')
    with gzip.open(tmp_path / 'b.log.gz', 'wb') as f:
        f.write(b'\n'.join(b'gz ' + line for line in LINES))   # no final \n
    (tmp_path / 'c.log.bz2').write_bytes(bz2.compress(b'bz\n\n'))
    (tmp_path / 'other.txt').write_bytes(b'not matched\n')
    expected = LINES + [b'gz ' + line for line in LINES] + [b'bz', b'']
    p = batch_pipeline()
    raw = p | open_source(f'file://{tmp_path}/*.log*', Context(JOB))
    assert_that(raw, equal_to(expected))
    p.run().wait_until_finish()


def test_file_source_matching_nothing_fails_when_built(tmp_path):
    (tmp_path / 'a.log').write_bytes(b'x\n')
    p = batch_pipeline()
    with pytest.raises(UriError, match='no file matches'):
        p | open_source(f'file://{tmp_path}/*.jsonl', Context(JOB))


@pytest.mark.parametrize('block_bytes', [1, 5, None])
@pytest.mark.parametrize('ending', [b'\n', b'', b'\n\n'])
def test_file_blocks_hold_the_same_lines_as_the_line_reader(
        tmp_path, block_bytes, ending):
    """The columnar path's blocks, whatever their size, cut the file into the
    same lines as reading line by line (an empty last line included)."""
    (tmp_path / 'a.log').write_bytes(b'\n'.join(LINES) + ending)
    expected = LINES + ([b''] if ending == b'\n\n' else [])
    query = '' if block_bytes is None else f'?block_bytes={block_bytes}'
    source = open_source(f'file://{tmp_path}/a.log{query}', Context(JOB))
    p = batch_pipeline()
    lines = p | source.blocks() | beam.FlatMap(lambda block: block.lines())
    assert_that(lines, equal_to(expected), label='Blocks')
    by_line = p | 'Lines' >> open_source(f'file://{tmp_path}/a.log',
                                         Context(JOB))
    assert_that(by_line, equal_to(expected), label='ByLine')
    p.run().wait_until_finish()


# ------------------------------------------------------------------- Decode

class Event(typing.NamedTuple):
    event_time: Timestamp
    name: str


def tiny_decoder(text):
    """'NAME@SECONDS' -> Event; 'boom...' is a decoder bug."""
    name, sep, seconds = text.partition('@')
    if name.startswith('boom'):
        return len(name) // 0
    if not sep:
        raise DecodeError(f'no time in {name!r}')
    return Event(Timestamp.of(float(seconds)), name)


class _NameAndTimestamp(beam.DoFn):
    def process(self, record, ts=beam.DoFn.TimestampParam):
        yield record.name, ts.micros


def run_decode(inputs, check_ok, check_dead, max_bytes=1 << 20,
               decoder=tiny_decoder):
    p = batch_pipeline()
    decoded = (p
               | beam.Create(inputs)
               | Decode(decoder, stage='decode.tiny', job=JOB,
                        source='file://in', max_bytes=max_bytes))
    assert_that(decoded.ok | beam.ParDo(_NameAndTimestamp()), check_ok,
                label='CheckOk')
    assert_that(decoded.dead, check_dead, label='CheckDead')
    p.run().wait_until_finish()


def dead_letters(expected):
    """A check of dead letters: (raw, reason prefix) pairs, any order; the
    stage and source are the Decode's, the error time is the clock's."""
    started = time.time()

    def check(dead):
        got = sorted(dead, key=lambda d: d.raw)
        want = sorted(expected)
        assert [d.raw for d in got] == [raw for raw, _ in want], got
        for letter, (_, reason) in zip(got, want):
            assert letter.reason.startswith(reason), (letter, reason)
            assert letter.stage == 'decode.tiny'
            assert letter.source == 'file://in'
            assert started - 1 <= letter.error_time.micros / 1e6 \
                <= started + 600
    return check


def test_good_records_carry_their_event_time_as_timestamp():
    run_decode(
        [b'a@1767225600.5', 'b@1767225601', b'c@0', b'd@253402300799'],
        equal_to([('a', 1767225600_500000), ('b', 1767225601_000000),
                  ('c', 0), ('d', 253402300799_000000)]),
        equal_to([]))


def test_oversized_records_are_refused_before_decoding():
    run_decode(
        [b'ok@1767225600', b'abc@1767225600.0',        # 13 and 16 bytes
         b'longer-name@1767225600',                    # 22 bytes
         'ééé@1767225600',                             # 17 bytes, 14 chars
         b'boom-but-too-long'],                        # never decoded
        equal_to([('ok', T0 * 10**6), ('abc', T0 * 10**6)]),
        dead_letters([
            (b'longer-name@1767225600', 'oversized: 22 bytes > limit 16'),
            ('ééé@1767225600'.encode(), 'oversized: 17 bytes > limit 16'),
            (b'boom-but-too-long', 'oversized: 17 bytes > limit 16'),
        ]),
        max_bytes=16)


def test_non_utf8_unexpected_errors_and_refusals_are_dead_letters():
    run_decode(
        [b'ab\xffc@1767225600', b'\xc3@1', b'boom@1', b'no time here',
         'str refused', b'x@1e400', b'good@1767225600'],
        equal_to([('good', T0 * 10**6)]),
        dead_letters([
            (b'ab\xffc@1767225600', 'not UTF-8: invalid byte at offset 2'),
            (b'\xc3@1', 'not UTF-8: invalid byte at offset 0'),
            (b'boom@1', 'unexpected ZeroDivisionError'),
            (b'no time here', "no time in 'no time here'"),
            (b'str refused', "no time in 'str refused'"),
            (b'x@1e400', 'unexpected'),
        ]))


def test_event_times_out_of_range_are_dead_letters():
    run_decode(
        [b'before@-0.000001', b'after@253402300800', b'edge@0'],
        equal_to([('edge', 0)]),
        dead_letters([
            (b'before@-0.000001', 'event time out of range'),
            (b'after@253402300800', 'event time out of range'),
        ]))


def test_a_dead_letter_keeps_the_exact_raw_payload():
    raw = b'\x00\xff\r\n\t weird \xe2\x82'      # truncated UTF-8 at the end
    run_decode([raw, None], equal_to([]), dead_letters([
        (raw, 'not UTF-8: invalid byte at offset 1'),
        (b'', 'empty record (None)'),
    ]))


def _none_time(text):
    return Event(None, text)


def test_a_decoder_returning_no_event_time_gives_a_dead_letter():
    run_decode([b'x'], equal_to([]), dead_letters([(b'x', '')]),
               decoder=_none_time)


# ------------------------------------------- Kafka: event times and blocks

def test_payload_event_time_reads_what_the_decoder_reads():
    import pickle
    from transforms.decode import PayloadEventTime
    event_time = pickle.loads(pickle.dumps(PayloadEventTime(
        decoders.make_decoder('auto'), max_bytes=200)))
    line = (b'{"timestamp":"2026-01-01T00:01:02.500Z","service":"auth",'
            b'"level":"INFO"}')
    assert event_time(line) == float(decoders.make_decoder('auto')(
        line.decode()).event_time) == 1767225662.5
    for refused in (b'not a log line at all \xff', b'{"service":"x"}', None,
                    b'{"timestamp":"2026-01-01T00:00:00Z","service":"'
                    + b'x' * 300 + b'"}'):
        assert event_time(refused) is None


class _Message:
    """What the Kafka reader asks of a consumed record."""

    def __init__(self, offset, value, error=None):
        self.offset = lambda: offset
        self.value = lambda: value
        self.error = lambda: error


def test_a_poll_travels_whole_only_if_every_record_can():
    from transforms.columnar import LineBlock
    from transforms.io.kafka import _whole_block
    poll = [_Message(7, b'a'), _Message(8, b''), _Message(9, b'c')]
    data, count, last = _whole_block(poll, stop=10)
    assert (count, last) == (3, 9)
    assert LineBlock(data).lines() == [b'a', b'', b'c']
    for spoiled in ([*poll[:2], _Message(9, b'c\nd')],      # holds a newline
                    [*poll[:2], _Message(9, None)],         # no value
                    [*poll[:2], _Message(9, None, 'an error')]):
        assert _whole_block(spoiled, stop=10) is None
    assert _whole_block(poll, stop=9) is None      # past a bounded read's end
    assert _whole_block([], stop=10) is None
