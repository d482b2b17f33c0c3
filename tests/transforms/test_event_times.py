"""A source's event times read a block at once (``PayloadEventTime.times``
with a job's ``block_times``) equal the decoder's, payload by payload."""
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz.targets import TARGETS
from transforms.decode import MIN_BLOCK_LINES, PayloadEventTime
from transforms.io import synthetic, parse_uri
from transforms.logs import columnar as logs_columnar
from transforms.logs import decoders as logs_decoders
from transforms.market import columnar as market_columnar
from transforms.sensors import columnar as sensors_columnar
from transforms.video import cmcd_columnar

BLOCK_TIMES = {
    'logs': logs_columnar.event_times,
    'trades': market_columnar.event_times,
    'sensors': sensors_columnar.event_times,
    'video': cmcd_columnar.EventTimes,
}
# The decoders with a vectorised reading (the jobs pass theirs to the
# source where the format is auto or json).
BLOCK_TARGETS = [t for t in TARGETS if t.columnar is not None]


def _reference(event_time, payloads):
    return [event_time(p) for p in payloads]


def _same(got, want):
    assert len(got) == len(want)
    for seconds, expected in zip(got, want):
        if expected is None:
            assert math.isnan(seconds)
        else:
            assert seconds == expected       # exactly: the same float


@pytest.mark.parametrize('target', BLOCK_TARGETS, ids=lambda t: t.name)
def test_a_block_read_at_once_gives_each_payload_the_decoders_time(target):
    fast = PayloadEventTime(target.decoder, block_times=BLOCK_TIMES[
        target.name.split('.')[0]]())
    one_by_one = PayloadEventTime(target.decoder)

    @settings(max_examples=10, deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(st.lists(target.lines, min_size=8, max_size=24))
    def check(drawn):
        # Enough payloads for the block reading (drawing that many costs).
        payloads = (drawn * (MIN_BLOCK_LINES // len(drawn) + 1))[
            :MIN_BLOCK_LINES + len(drawn)]
        _same(fast.times(payloads), _reference(one_by_one, payloads))

    check()


def test_canonical_lines_are_read_by_the_vectorised_reading():
    """The logs stream's JSON lines are dated by the block reading, not one
    by one (the other formats of the mixed stream are), and the times agree;
    undatable payloads and those too long are NaN, as the decoder's None."""
    uri = parse_uri('synthetic://logs?events=400&seed=7')
    payloads = [p for _, p in synthetic.generate(uri).records()]
    payloads[3] = b'not a log line'
    payloads[5] = payloads[4] + b' ' * 600
    block_times = logs_columnar.event_times(max_bytes=512)
    lengths = np.array([len(p) for p in payloads])
    starts = np.concatenate(([0], np.cumsum(lengths + 1)[:-1]))
    seconds, read = block_times(b'\n'.join(payloads), starts, starts + lengths)
    json_lines = np.array([p.startswith(b'{') and len(p) <= 512
                           for p in payloads])
    assert read.sum() > 0.6 * len(payloads)
    assert not read[~json_lines].any()
    decoder = logs_decoders.make_decoder('auto')
    one_by_one = PayloadEventTime(decoder, 512)
    want = _reference(one_by_one, payloads)
    assert want[3] is None and want[5] is None
    _same(seconds[read], [w for w, r in zip(want, read) if r])
    _same(PayloadEventTime(decoder, 512, block_times).times(payloads), want)


def test_a_payload_of_several_lines_is_dated_as_the_decode_step_reads_it():
    """A message or record holding several lines is decoded whole, as one
    record or one dead letter (never line by line): its event time is the
    record's, or None where the decode step refuses it (its lines' times
    are in no window).  So a source holds its acknowledgement or commit
    for no window and its dead letter may name it, read one by one or in
    a block alike."""
    from transforms import deadletter
    from transforms.decode import decode_payload
    uri = parse_uri('synthetic://logs?events=400&seed=7&malformed=0')
    payloads = [p for _, p in synthetic.generate(uri).records()]
    json_lines = [p for p in payloads if p.startswith(b'{')]
    several = b'\n'.join(json_lines[:3])           # three dated lines
    pretty = json_lines[3].replace(b',', b',\n')   # one record, many lines
    mixed = payloads[:MIN_BLOCK_LINES] + [several, pretty, b'\n'.join(
        payloads[10:14]), json_lines[4] + b'\n']
    decoder = logs_decoders.make_decoder('auto')
    one_by_one = PayloadEventTime(decoder)
    fast = PayloadEventTime(decoder, block_times=logs_columnar.event_times())
    for payload in mixed[MIN_BLOCK_LINES:]:
        result = decode_payload(payload, decoder, 'decode.logs')
        want = None if isinstance(result, deadletter.DeadLetter) \
            else float(result.event_time)
        assert one_by_one(payload) == want
    assert one_by_one(several) is None and one_by_one(pretty) is not None
    _same(fast.times(mixed), _reference(one_by_one, mixed))
