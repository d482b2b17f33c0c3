"""The columnar building blocks, each against a plain-Python or Beam oracle."""
import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from apache_beam.transforms.window import GlobalWindow, WindowFn
from apache_beam.utils.timestamp import Timestamp

from transforms import columnar, windows
from transforms.combiners import DEFAULT_K
from fuzz import strategies
from transforms.logs.columnar import (SCHEMA, BlockDecoder, log_partials_fn,
                                      text_columns)
from transforms.logs.decoders import make_decoder
from transforms.logs.records import is_error

GOOD = (b'{"timestamp":"2026-01-01T00:00:%02dZ","service":"s%d",'
        b'"status":%d,"latency_ms":%s}')


def _random_lines(rng, n):
    pieces = [b'', b'\r', b'{', b'}', b'\xff', b'a', b'"', b'\n', b' ']
    return [b''.join(rng.choice(pieces) for _ in range(rng.randrange(6)))
            for _ in range(n)]


@pytest.mark.parametrize('seed', range(20))
def test_block_lines_are_the_lines_split_gives(seed):
    rng = random.Random(seed)
    data = b''.join(rng.choice([b'\n', b'x', b'\r', b'{}', b'\xff'])
                    for _ in range(rng.randrange(40)))
    starts, ends = columnar.line_bounds(data)
    assert columnar.block_lines(data, starts, ends).to_pylist() == \
        data.split(b'\n')


@pytest.mark.parametrize('seed', range(20))
def test_line_bounds_cut_as_split_does(seed):
    rng = random.Random(seed)
    data = b''.join(rng.choice([b'\n', b'x', b'\r', b'{}'])
                    for _ in range(rng.randrange(40)))
    starts, ends = columnar.line_bounds(data)
    assert [data[s:e] for s, e in zip(starts, ends)] == data.split(b'\n')


def test_utf8_invalid_lines():
    lines = [b'ok', b'\xff', 'é'.encode(), b'a\xc3', b'', b'\xe2\x82\xac']
    data = b'\n'.join(lines)
    starts, ends = columnar.line_bounds(data)
    bad = columnar.utf8_invalid_lines(data, starts, ends).tolist()
    expected = []
    for i, line in enumerate(lines):
        try:
            line.decode('utf-8')
        except UnicodeDecodeError:
            expected.append(i)
    assert bad == expected


@pytest.mark.parametrize('seed', range(10))
def test_json_block_accounts_for_every_candidate_once(seed):
    rng = random.Random(seed)
    lines = []
    for i in range(300):
        if rng.random() < 0.8:
            lines.append(GOOD % (i % 60, i % 3, 200, b'1.5'))
        else:
            lines.append(rng.choice([
                b'{"status":"abc"}', b'{"status":200.5}', b'{trunc',
                b'{"service":{"a":1}}', b'{"a":1} x', b'{"level":3}']))
    data = b'\n'.join(lines)
    starts, ends = columnar.line_bounds(data)
    candidates = columnar.json_candidates(data, starts, ends, 10_000)
    segments, refused = columnar.json_block(data, starts, ends, candidates,
                                            SCHEMA, bisect_below=4)
    parsed = np.concatenate([s.lines for s in segments] + [refused])
    assert sorted(parsed.tolist()) == np.flatnonzero(candidates).tolist()
    for segment in segments:
        assert segment.table.num_rows == len(segment.lines)
        # Rows align with their lines: the service read is the line's.
        for line, service in zip(segment.lines,
                                 segment.table.column('service').to_pylist()):
            if service is not None:
                assert f'"service":"{service}"'.encode() in lines[line]


def test_lines_the_reader_would_refuse_are_left_out_of_its_reads():
    """A truncated line (no closing brace) is no candidate; once the reader
    names a field typed as a number that holds text, every line where it
    does (written the compact way) is refused before the next read (the
    reader refused the whole read at each, and the lines before it were
    read twice); trailing blanks are JSON's; the block decodes as the
    reference decoder decodes it, line by line."""
    good = [GOOD % (i % 60, i % 3, 200, b'1.5') for i in range(40)]
    odd = {3: good[3][:30], 7: GOOD % (7, 1, 200, b'1.5') + b' \r',
           11: b'{"timestamp":"2026-01-01T00:00:11Z","service":"s1",'
               b'"status":"abc"}',
           12: b'{"service":"s1","latency_ms":{"p":1}}',
           20: b'{"status": "abc"}', 25: GOOD % (5, 1, 200, b'1.5') + b' x',
           30: b'{"message":"said \\"status\\":\\"ok\\""}',
           31: GOOD % (1, 1, 200, b'1.5') + b' ' * 40}
    lines = [odd.get(i, line) for i, line in enumerate(good)]
    data = b'\n'.join(lines)
    starts, ends = columnar.line_bounds(data)
    candidates = columnar.json_candidates(data, starts, ends, 1 << 20)
    assert np.flatnonzero(~candidates).tolist() == [3, 25, 31]
    segments, refused = columnar.json_block(data, starts, ends, candidates,
                                            SCHEMA)
    read = np.concatenate([s.lines for s in segments])
    assert sorted(read.tolist() + refused.tolist()) == \
        np.flatnonzero(candidates).tolist()
    assert {11, 12, 20} <= set(refused.tolist())
    assert {7, 30} <= set(read.tolist())
    decoder = BlockDecoder(make_decoder('auto'), 'decode.logs')
    columns, dead, count = decoder.decode(data)
    records, dead_ref = decoder.reference(lines)
    assert count == len(records)
    assert sorted(columns.event_us.tolist()) == sorted(
        r.event_time.micros for r in records)
    assert sorted(d.raw for d in dead) == sorted(d.raw for d in dead_ref)


def test_group_rows_matches_a_dict_grouping():
    rng = np.random.default_rng(0)
    a = rng.choice(['x', 'y', 'z'], 500).astype(object)
    b = rng.integers(0, 4, 500)
    order, bounds, firsts = columnar.group_rows(a, b)
    groups = {}
    for i, key in enumerate(zip(a, b)):
        groups.setdefault(key, []).append(i)
    got = {}
    for g in range(len(firsts)):
        members = sorted(order[bounds[g]:bounds[g + 1]].tolist())
        got[(a[firsts[g]], b[firsts[g]])] = members
    assert got == groups


@pytest.mark.parametrize('spec', ['fixed:60s', 'fixed:1h', 'sliding:5m/1m',
                                  'sliding:90s/60s', 'sliding:10s/3s'])
def test_vectorised_windows_are_beams(spec):
    rng = np.random.default_rng(1)
    event_us = np.concatenate([
        [0, 59_999_999, 60_000_000],
        1767225600_000_000 + rng.integers(0, 10**10, 200)])
    window = windows.parse_window(spec)
    rows, starts = windows.window_starts(window, event_us)
    fn = window.window_fn()
    for i, t in enumerate(event_us):
        expected = sorted(w.start.micros for w in fn.assign(
            WindowFn.AssignContext(Timestamp(micros=int(t)))))
        assert sorted(starts[rows == i].tolist()) == expected


def test_block_decoder_equals_the_reference_line_by_line():
    lines = [GOOD % (i % 60, i % 4, 503 if i % 7 == 0 else 200,
                     b'null' if i % 5 == 0 else b'%d.25' % i)
             for i in range(200)]
    rng = random.Random(5)
    lines += _random_lines(rng, 50)
    rng.shuffle(lines)
    data = b'\n'.join(lines)
    decoder = BlockDecoder(make_decoder('auto'), 'decode.logs')
    columns, dead, count = decoder.decode(data)
    records, dead_ref = decoder.reference(data.split(b'\n'))
    assert count == len(records) == len(columns.event_us)
    got = sorted(zip(columns.event_us.tolist(), columns.service.tolist(),
                     columns.error.tolist(),
                     [None if np.isnan(x) else x for x in columns.latency]))
    want = sorted((r.event_time.micros, r.service, is_error(r), r.latency_ms)
                  for r in records)
    assert got == want
    assert sorted((d.raw, d.reason) for d in dead) == \
        sorted((d.raw, d.reason) for d in dead_ref)
    # The line of each row, where late records keep their payloads: the
    # row's record is the reference decoder's record of that line.
    lines = []
    columns, _, _ = decoder.decode(data, None, lines)
    of_rows = np.concatenate(lines)
    assert len(of_rows) == count
    split = data.split(b'\n')
    for row, line in enumerate(of_rows.tolist()):
        (record,), _ = decoder.reference([split[line]])
        latency = columns.latency[row]
        assert (record.event_time.micros, record.service,
                record.latency_ms) == \
            (columns.event_us[row], columns.service[row].as_py(),
             None if np.isnan(latency) else latency)


@pytest.mark.parametrize('text_fast', [False, True])
@pytest.mark.parametrize('spec', ['fixed:60s', 'sliding:60s/20s'])
def test_a_carried_partial_holds_the_lines_of_its_records(spec, text_fast):
    """PartialsFn(carry_raw=True): each partial carries one line per record
    it covers, each a line whose record is of the partial's key and window
    (Arrow-read lines, syslog lines read at once with ``text_fast`` and
    reference-decoded ones alike)."""
    lines = [GOOD % (i % 60, i % 3, 200, b'%d.5' % i) for i in range(90)]
    lines += [b'<134>1 2026-01-01T00:00:%02dZ host1 s%d 42 - - hi' % (i, i % 2)
              for i in range(0, 60, 7)]
    rng = random.Random(3)
    lines += _random_lines(rng, 20)
    rng.shuffle(lines)
    window = windows.parse_window(spec)
    decoder = BlockDecoder(make_decoder('auto'), 'decode.logs',
                           text_fast=text_fast)
    if text_fast:   # the syslog lines are read at once
        assert len(text_columns(lines)[0].event_us) >= 9
    fn = log_partials_fn(decoder, window, 'logs', DEFAULT_K, carry_raw=True)
    fn.start_bundle()
    outputs = list(fn.process(columnar.LineBlock(b'\n'.join(lines)),
                              Timestamp.of(0), GlobalWindow()))
    partials = [o for o in outputs if not hasattr(o, 'tag')]
    assert partials
    covered = 0
    for value in partials:
        (service, (stats, raw)), (w,) = value.value, value.windows
        payloads = raw.to_pylist()
        assert len(payloads) == stats.count
        covered += len(payloads)
        records, dead = decoder.reference(payloads)
        assert not dead
        assert all(r.service == service and
                   w.start <= r.event_time < w.end for r in records)
    records, _ = decoder.reference(lines)
    assert covered == sum(
        len(windows.window_starts(window, [r.event_time.micros])[0])
        for r in records)


def test_a_deeply_nested_line_goes_to_the_reference_decoder():
    """Arrow infers a struct as deep as a line's nesting, and filtering a
    table thousands of levels deep overflowed the stack (the process died);
    such a line goes to the reference decoder, most of its neighbours
    still take the vectorised reading."""
    nested = b'{"a":' * 3000 + b'1' + b'}' * 3000
    listed = b'{"timestamp":"2026-01-01T00:00:03Z","service":"x","a":' + \
        b'[' * 5000 + b']' * 5000 + b'}'
    lines = [GOOD % (i % 60, 1, 200, b'2.5') for i in range(100)]
    lines[10], lines[70] = nested, listed
    data = b'\n'.join(lines)
    starts, ends = columnar.line_bounds(data)
    candidates = columnar.json_candidates(data, starts, ends, 1 << 20)
    segments, refused = columnar.json_block(data, starts, ends, candidates,
                                            SCHEMA)
    assert 10 in refused.tolist() and 70 in refused.tolist()
    assert len(refused) < 70          # the others read by Arrow
    assert sum(len(s.lines) for s in segments) + len(refused) == 100
    decoder = BlockDecoder(make_decoder('auto'), 'decode.logs')
    columns, dead, count = decoder.decode(data)
    records, dead_ref = decoder.reference(lines)
    assert count == len(records) >= 98
    assert sorted(columns.event_us.tolist()) == sorted(
        r.event_time.micros for r in records)
    assert [d.raw for d in dead] == [d.raw for d in dead_ref]


ACCESS = ('{vhost}203.0.113.7 - - [{day}/{mon}/{year}:{hms} {zone}] '
          '"GET /a HTTP/1.1" {status} 512 "-" "curl/8"{rt}')
SYSLOG = '<{pri}>1 {time} host-1 {app} 42 - {sd}{msg}'


def _text_lines():
    """Access-log and RFC 5424 lines of the shapes read at once, and their
    near misses (dates that do not exist, leap seconds, offsets, PRI out of
    range, structured data, trailing bytes, non-ASCII text)."""
    lines = []
    for vhost in ('checkout:443 ', 'search ', 'a.b-c_d:8080 ', '- ', '',
                  ':443 '):
        for day, mon, year in (('01', 'Jan', '2026'), ('29', 'Feb', '2024'),
                               ('29', 'Feb', '2026'), ('31', 'Apr', '2026'),
                               ('31', 'Dec', '9999'), ('01', 'Jan', '1969'),
                               ('00', 'Mar', '2026'), ('15', 'jan', '2026')):
            for hms in ('00:00:00', '23:59:59', '23:59:60', '24:00:00'):
                for zone, status, rt in (('+0000', '200', ' 0.250'),
                                         ('-0700', '503', ''),
                                         ('+1400', '404', ' 0'),
                                         ('+2400', '200', ' 1.5'),
                                         ('+0000', '599', ' -'),
                                         ('+0000', '600', ' 0.1'),
                                         ('+0000', '200', ' 0.1 ')):
                    lines.append(ACCESS.format(
                        vhost=vhost, day=day, mon=mon, year=year, hms=hms,
                        zone=zone, status=status, rt=rt))
    for pri in ('131', '134', '0', '191', '192', '013'):
        for time in ('2026-01-01T00:00:00.010Z', '2024-02-29T12:00:00+05:30',
                     '2026-02-29T00:00:00Z', '2026-01-01T23:59:60Z',
                     '2026-01-01T00:60:00Z', '2026-01-01T24:00:00Z',
                     '2026-13-01T00:00:00Z', '2026-04-31T00:00:00-01:00',
                     '2026-01-01T00:00:00.1234567Z', '2026-01-01T00:00:00',
                     '1969-12-31T23:59:59Z', '-'):
            for app, sd, msg in (('checkout', '-', ' job finished'),
                                 ('-', '-', ''), ('a.b', '[x@1 a="b"]', ' m'),
                                 ('auth', '-', ' caf\u00e9'),
                                 ('auth', '-', ' tab\tin it')):
                lines.append(SYSLOG.format(pri=pri, time=time, app=app,
                                           sd=sd, msg=msg))
    encoded = [line.encode() for line in lines]
    return encoded + [line + b'\r' for line in encoded[::7]] + \
        [b' ' + line for line in encoded[::11]]


def _rows(columns):
    """(event us, service, error, latency or -1) per record, sorted."""
    return sorted(zip(columns.event_us.tolist(), columns.service.tolist(),
                      columns.error.tolist(),
                      [-1.0 if np.isnan(x) else x for x in columns.latency]))


def _reference_rows(records):
    return sorted((r.event_time.micros, r.service, is_error(r),
                   -1.0 if r.latency_ms is None else r.latency_ms)
                  for r in records)


def test_access_and_syslog_lines_read_at_once_equal_the_reference():
    """The auto format's reader of access-log and syslog lines: the block
    reads as the reference decoder reads its lines one by one (records and
    dead letters), and the strict shapes are read at once, their near
    misses left to the reference."""
    lines = _text_lines()
    random.Random(3).shuffle(lines)
    decoder = BlockDecoder(make_decoder('auto'), 'decode.logs',
                           text_fast=True)
    columns, dead, count = decoder.decode(b'\n'.join(lines))
    records, dead_ref = decoder.reference(lines)
    assert count == len(records) == len(columns.event_us)
    assert _rows(columns) == _reference_rows(records)
    assert sorted((d.raw, d.reason) for d in dead) == \
        sorted((d.raw, d.reason) for d in dead_ref)
    fast, rest = text_columns(lines)
    # Read at once: the valid lines of the two strict shapes, no others.
    assert 60 <= len(fast.event_us) < len(records) - 100
    assert len(fast.event_us) + len(rest) == len(lines)
    assert sorted(_rows(fast)) == sorted(
        _rows(decoder.decode_each([lines[i] for i in sorted(
            set(range(len(lines))) - set(rest.tolist()))])[0]))


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(strategies.access_log_lines(),
                          strategies.syslog_lines()), min_size=1,
                max_size=30))
def test_text_lines_read_at_once_never_disagree(drawn):
    lines = [line.encode('utf-8', 'surrogatepass') for line in drawn
             if '\n' not in line]
    if not lines:
        return
    decoder = BlockDecoder(make_decoder('auto', 'web', 2026), 'decode.logs',
                           text_fast=True)
    columns, dead, count = decoder.decode(b'\n'.join(lines))
    records, dead_ref = decoder.reference(lines)
    assert count == len(records)
    assert _rows(columns) == _reference_rows(records)
    assert sorted((d.raw, d.reason) for d in dead) == \
        sorted((d.raw, d.reason) for d in dead_ref)


def test_the_json_format_reads_no_access_line():
    """Without text_fast (the json format) an access line is a dead letter,
    as the json decoder says."""
    line = ACCESS.format(vhost='a:443 ', day='01', mon='Jan', year='2026',
                         hms='00:00:00', zone='+0000', status='200',
                         rt=' 0.1').encode()
    decoder = BlockDecoder(make_decoder('json'), 'decode.logs')
    columns, dead, count = decoder.decode(line + b'\n' + line)
    assert count == 0 and len(dead) == 2
