"""The synthetic generators stream: their ticks are made lazily, holding only
the records that have not arrived yet, and are the same ticks the
all-at-once grouping (``arrival_ticks``: sort every record by arrival) makes
of the same records."""
import itertools
import tracemalloc

import orjson
import pytest

from transforms.synthetic import (Ticks, arrival_ticks, logs, sensors,
                                  stream_ticks, trades, video)


def _params(module, **values):
    params = {name: default for name, (_, default, _) in
              module.PARAMS.items()}
    params.update(values)
    return params


CASES = [
    (logs, _params(logs, events=3000, seed=4, late=0.3, rate=40.0,
                   tick=0.5)),
    (logs, _params(logs, events=2000, seed=1, disorder=0.0, late=0.0)),
    (trades, _params(trades, events=4000, seed=9, late=0.05,
                     duplicates=0.2, rate=10.0, tick=2.0)),
    (trades, _params(trades, events=3000, seed=2, rate=500.0, tick=0.1)),
    (sensors, _params(sensors, events=4000, seed=1, late=0.2,
                      duplicates=0.1, sensors=50, interval=1.0, tick=1.0)),
    (sensors, _params(sensors, events=3000, seed=7, sensors=3,
                      interval=60.0)),
    (video, _params(video, sessions=200, seed=2, late=0.2, json=0.5,
                    span=1.0, tick=1.0)),
    (video, _params(video, sessions=150, seed=8, span=30.0, disorder=0.0)),
]


@pytest.mark.parametrize('module,params', CASES,
                         ids=[f'{m.__name__.split(".")[-1]}-{i}'
                              for i, (m, _) in enumerate(CASES)])
def test_streamed_ticks_equal_the_sorted_records(module, params):
    records = list(module._records(params))
    start = records[0][0] if module is not video else None
    stream = module.generate(params)
    # Every record's bound holds for every record generated after it.
    later = [r[3] for r in records]
    arrivals = [r[1] for r in records]
    suffix_min = list(itertools.accumulate(reversed(arrivals), min))[::-1]
    assert all(b <= m for b, m in zip(later[:-1], suffix_min[1:]))
    expected = arrival_ticks([r[:3] for r in records], params['tick'],
                             params['disorder'],
                             _start(module, params, start))
    assert list(stream.ticks) == expected
    assert stream.ticks == expected           # Ticks compare as lists
    assert len(stream) == len(records)


def _start(module, params, _):
    from transforms.synthetic import parse_start
    start = parse_start(params['start'])
    if module is video:
        return int(round(start * 1000)) / 1000
    return start


def test_stream_ticks_holds_only_records_not_yet_arrived():
    """One record per second, each arriving 2 s after its time: ticks of 1 s
    never hold more than the three records in flight."""
    held = []

    def records():
        for i in range(1000):
            held.append(i)
            yield float(i), i + 2.0, b'%d' % i, float(i)

    out = []
    for batch, watermark in stream_ticks(records(), 1.0, 0.0, 0.0):
        out.append((batch, watermark))
        # records generated so far minus records delivered so far
        delivered = sum(len(b) for b, _ in out)
        assert len(held) - delivered <= 3
    assert [p for b, _ in out for _, p in b] == [b'%d' % i
                                                 for i in range(1000)]


@pytest.mark.parametrize('module,params', [
    (logs, _params(logs, events=10 ** 9)),
    (trades, _params(trades, events=10 ** 9)),
    (sensors, _params(sensors, events=10 ** 9)),
    (video, _params(video, sessions=10 ** 8, span=10 ** 8 / 13 / 40)),
], ids=['logs', 'trades', 'sensors', 'video'])
def test_a_huge_stream_starts_at_once_in_little_memory(module, params):
    tracemalloc.start()
    try:
        ticks = iter(module.generate(params).ticks)
        got = sum(len(batch) for batch, _ in itertools.islice(ticks, 30))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert got > 0
    assert peak < 20 * 2 ** 20


def test_ticks_are_made_anew_on_each_iteration():
    calls = []

    def make():
        calls.append(1)
        return iter([([(1.0, b'a')], 0.0)])

    ticks = Ticks(make)
    assert list(ticks) == list(ticks) == [([(1.0, b'a')], 0.0)]
    assert len(calls) == 2                    # list() does not walk it twice


def test_logs_stream_is_the_same_for_a_seed_and_has_every_kind_of_line():
    """The vectorised log generator: a seed gives one stream (records drawn
    a chunk at a time), another seed another; JSON, access-log and syslog
    lines in about their 70/20/10 shares, and malformed records at about the
    asked fraction."""
    params = _params(logs, events=3 * logs.CHUNK + 17, seed=11,
                     malformed=0.05)
    first = list(logs._records(params))
    assert first == list(logs._records(params))
    assert [r[2] for r in first] != [
        r[2] for r in logs._records(dict(params, seed=12))]
    payloads = [r[2] for r in first]
    n = len(payloads)
    json_share = sum(p.startswith(b'{"timestamp"') for p in payloads) / n
    access_share = sum(b' HTTP/1.1" ' in p and p[:1].isalpha()
                       for p in payloads) / n
    syslog_share = sum(p.startswith((b'<131>1 ', b'<134>1 '))
                       for p in payloads) / n
    assert 0.60 < json_share < 0.72
    assert 0.15 < access_share < 0.25
    assert 0.06 < syslog_share < 0.14
    assert 0.03 < 1 - json_share - access_share - syslog_share < 0.08
    # The JSON lines, formatted without a JSON library, are what orjson
    # writes for the same object.
    for payload in payloads:
        if payload.startswith(b'{"timestamp"') and payload.endswith(b'"}'):
            assert orjson.dumps(orjson.loads(payload)) == payload
    # Event times advance at the rate; arrivals are never before them.
    assert all(a >= t for t, a, _, _ in first)
    assert first[1][0] - first[0][0] == pytest.approx(1 / params['rate'])


@pytest.mark.parametrize('module,params', CASES[:3],
                         ids=['logs-0', 'logs-1', 'trades-2'])
def test_a_stream_is_played_as_its_ticks(module, params):
    """The source plays a stream as ticks of columns: from the logs
    stream's own columns (numpy event times, no tuple per record), or from
    any stream's ``(records, watermark)`` ticks; either way the records,
    their order and the watermarks are the stream's ticks."""
    import numpy as np
    from transforms.io import synthetic as synthetic_io
    stream = module.generate(params)
    expected = list(stream.ticks)
    for ticks in (stream.ticks, expected):      # a list has no columns
        played = synthetic_io._as_played(ticks)
        assert [(list(t.records()), t.watermark) for t in played] == expected
        assert [t.first() for t in played if t.payloads] == [
            min(time for time, _ in records) for records, _ in expected
            if records]
    columns = synthetic_io._as_played(stream.ticks)
    assert isinstance(columns[0].times, np.ndarray) == (module is logs)
