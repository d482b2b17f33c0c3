"""Tests for transforms.formats: time, JSON, access log and syslog parsers.

Expected values are computed independently (``datetime``, ``calendar``, the
Loghub ground-truth CSV), never by the code under test.
"""
import calendar
import csv
import datetime
import pathlib
import random
import time

import pytest
from apache_beam.utils.timestamp import Timestamp

from transforms import formats
from transforms.decode import DecodeError

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
LOGHUB = REPO_ROOT.parent / 'shared' / 'loghub'
UTC = datetime.timezone.utc


def ts(*args, tz=UTC) -> Timestamp:
    """The Timestamp of a civil time, computed with datetime."""
    return Timestamp.from_utc_datetime(
        datetime.datetime(*args, tzinfo=tz).astimezone(UTC))


def loghub_lines(name: str):
    path = LOGHUB / name / f'{name}_2k.log'
    if not path.is_file():
        pytest.skip(f'Loghub sample {name} not found next to the repository '
                    f'(expected shared/loghub/{name}/{name}_2k.log)')
    return path.read_text(encoding='utf-8').splitlines()


def loghub_rows(name: str):
    path = LOGHUB / name / f'{name}_2k.log_structured.csv'
    if not path.is_file():
        pytest.skip(f'Loghub ground truth for {name} not found')
    with path.open(encoding='utf-8', newline='') as f:
        return list(csv.DictReader(f))


def returns_or_refuses(parse, text):
    """Calls parse; only a dict or DecodeError is acceptable."""
    try:
        result = parse(text)
    except DecodeError as e:
        assert str(e), 'a refusal must give a reason'
        assert '\n' not in str(e)
        return None
    assert isinstance(result, dict)
    return result


# --------------------------------------------------------------------- parse_time

@pytest.mark.parametrize('value, expected', [
    ('2026-01-05T10:00:00Z', ts(2026, 1, 5, 10, 0, 0)),
    ('2026-01-05T10:00:00z', ts(2026, 1, 5, 10, 0, 0)),
    ('2026-01-05T12:00:00+02:00', ts(2026, 1, 5, 10, 0, 0)),
    ('2026-01-05T07:30:00-02:30', ts(2026, 1, 5, 10, 0, 0)),
    ('2026-01-05T12:00:00+0200', ts(2026, 1, 5, 10, 0, 0)),
    ('2026-01-05 10:00:00Z', ts(2026, 1, 5, 10, 0, 0)),
    ('2026-01-05T10:00:00.5Z', ts(2026, 1, 5, 10, 0, 0, 500000)),
    ('2026-01-05T10:00:00.123456Z', ts(2026, 1, 5, 10, 0, 0, 123456)),
    # Nanoseconds are truncated, not rounded.
    ('2026-01-05T10:00:00.123456999Z', ts(2026, 1, 5, 10, 0, 0, 123456)),
    # RFC 5424 section 6.2.3.1 examples.
    ('1985-04-12T23:20:50.52Z', ts(1985, 4, 12, 23, 20, 50, 520000)),
    ('1985-04-12T19:20:50.52-04:00', ts(1985, 4, 12, 23, 20, 50, 520000)),
    ('2003-08-24T05:14:15.000003-07:00', ts(2003, 8, 24, 12, 14, 15, 3)),
    (1767607200, ts(2026, 1, 5, 10, 0, 0)),
    (1767607200.25, ts(2026, 1, 5, 10, 0, 0, 250000)),
    (1767607200123, ts(2026, 1, 5, 10, 0, 0, 123000)),
    (1767607200123.5, ts(2026, 1, 5, 10, 0, 0, 123500)),
    ('1767607200', ts(2026, 1, 5, 10, 0, 0)),
    ('1767607200.000001', ts(2026, 1, 5, 10, 0, 0, 1)),
    ('1767607200123', ts(2026, 1, 5, 10, 0, 0, 123000)),
    (0, ts(1970, 1, 1, 0, 0, 0)),
])
def test_parse_time_accepts(value, expected):
    assert formats.parse_time(value) == expected


def test_parse_time_seconds_vs_milliseconds_threshold():
    # 1e11 seconds is the year 5138: anything above it is milliseconds.
    assert formats.parse_time(100_000_000_000) == Timestamp(100_000_000_000)
    assert formats.parse_time(100_000_000_001) == Timestamp(100_000_000, 1000)


def test_parse_time_matches_datetime_on_random_values():
    rng = random.Random(7)
    for _ in range(500):
        dt = datetime.datetime(
            rng.randint(1970, 9998), rng.randint(1, 12), rng.randint(1, 28),
            rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 59),
            rng.randint(0, 999999),
            tzinfo=datetime.timezone(datetime.timedelta(
                minutes=rng.randint(-14 * 60, 14 * 60))))
        text = dt.isoformat()
        assert formats.parse_time(text) == Timestamp.from_utc_datetime(
            dt.astimezone(UTC)), text


@pytest.mark.parametrize('value, reason', [
    ('2026-01-05T10:00:00', 'timestamp without time zone'),
    ('2026-01-05T10:00:00.123', 'timestamp without time zone'),
    ('2026-01-05 10:00', 'timestamp without time zone'),
    (True, 'wrongly typed'),
    (False, 'wrongly typed'),
    (float('nan'), 'not finite'),
    (float('inf'), 'not finite'),
    (-1, 'negative'),
    (-0.5, 'negative'),
    ('-1767607200', 'negative'),
    ('NaN', 'unrecognised'),
    ('Infinity', 'unrecognised'),
    ('', 'empty'),
    ('   ', 'empty'),
    (None, 'wrongly typed'),
    ([2026], 'wrongly typed'),
    ({'t': 1}, 'wrongly typed'),
    ('yesterday', 'unrecognised'),
    ('2026-13-05T10:00:00Z', 'invalid date'),
    ('2026-02-30T10:00:00Z', 'invalid date'),
    ('2026-01-05T25:00:00Z', 'invalid date'),
    ('2026-01-05T10:00:00+24:00', 'offset'),
    ('0000-01-01T00:00:00Z', 'invalid date'),
    ('1969-12-31T23:59:59Z', 'before 1970'),
    (10 ** 30, 'after 9999'),
    (1e300, 'after 9999'),
    ('1e999999999', 'after 9999'),
    ('9' * 5000, 'unrecognised'),
    ('2026-01-05T10:00:00Z\x00', 'unrecognised'),
    ('\u0662\u0660\u0662\u0666-01-05T10:00:00Z', 'unrecognised'),   # Arabic-Indic
    ('\u0661\u0667\u0666\u0667', 'unrecognised'),
])
def test_parse_time_refuses(value, reason):
    with pytest.raises(DecodeError, match=reason):
        formats.parse_time(value)


def test_parse_time_leap_second_is_the_next_instant():
    assert formats.parse_time('2016-12-31T23:59:60Z') == ts(2017, 1, 1, 0, 0, 0)


def test_parse_time_keeps_beam_range():
    assert formats.parse_time('9999-12-31T23:59:59.999999Z') == ts(
        9999, 12, 31, 23, 59, 59, 999999)
    with pytest.raises(DecodeError):
        formats.parse_time('9999-12-31T23:59:59-01:00')


# -------------------------------------------------------------- parse_json_object

def test_parse_json_object():
    assert formats.parse_json_object('{"a": 1, "b": [true, null]}\r\n') == {
        'a': 1, 'b': [True, None]}


@pytest.mark.parametrize('text, reason', [
    ('', 'empty line'),
    ('  \n', 'empty line'),
    ('[1, 2]', 'not an object: list'),
    ('"text"', 'not an object: str'),
    ('42', 'not an object: int'),
    ('null', 'not an object: NoneType'),
    ('{"a": 1', 'invalid JSON'),
    ('{"a": 1} {"b": 2}', 'invalid JSON'),
    ("{'a': 1}", 'invalid JSON'),
    ('{"a": NaN}', 'invalid JSON'),
    ('{"a": 1e999}', 'invalid JSON'),
    ('{"a": "x\x00y"}', 'invalid JSON'),
    ('\x00', 'invalid JSON'),
    ('{"a": "\ud800"}', 'invalid JSON'),
    ('[' * 10_000 + ']' * 10_000, 'invalid JSON'),
    ('{"a":' * 10_000 + '1' + '}' * 10_000, 'invalid JSON'),
])
def test_parse_json_object_refuses(text, reason):
    with pytest.raises(DecodeError, match=reason) as info:
        formats.parse_json_object(text)
    assert '\n' not in str(info.value)


def test_parse_json_object_refuses_non_text():
    with pytest.raises(DecodeError):
        formats.parse_json_object(b'{"a": 1}')


def test_parse_json_object_huge_integer_does_not_crash():
    value = formats.parse_json_object('{"n": 123456789012345678901234567890}')
    assert value['n'] == pytest.approx(1.2345678901234568e29)


# ------------------------------------------------------------------ parse_combined

APACHE_COMMON = ('127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] '
                 '"GET /apache_pb.gif HTTP/1.0" 200 2326')
APACHE_COMBINED = (
    '127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" '
    '200 2326 "http://www.example.com/start.html" "Mozilla/4.08 [en] (Win98; I ;Nav)"')
NGINX_COMBINED = [
    '93.180.71.3 - - [17/May/2015:08:05:32 +0000] "GET /downloads/product_1 HTTP/1.1" '
    '304 0 "-" "Debian APT-HTTP/1.3 (0.8.16~exp12ubuntu10.21)"',
    '217.168.17.5 - - [17/May/2015:08:05:34 +0000] "GET /downloads/product_1 HTTP/1.1" '
    '200 490 "-" "Debian APT-HTTP/1.3 (0.8.10.3)"',
    '80.91.33.133 - - [17/May/2015:08:05:24 +0000] "GET /downloads/product_1 HTTP/1.1" '
    '404 336 "-" "Debian APT-HTTP/1.3 (0.8.16~exp12ubuntu10.17)"',
]
NGINX_TIMED = ('203.0.113.7 - - [05/Jan/2026:10:00:00 +0000] '
               '"POST /api/v1/orders HTTP/2.0" 201 512 '
               '"https://shop.example.com/cart" "curl/8.0" 0.123')
NGINX_TIMED_UPSTREAM = (
    '203.0.113.7 - alice [05/Jan/2026:11:00:00 +0100] "GET /api/items?id=1 HTTP/1.1" '
    '502 157 "-" "Mozilla/5.0 (X11; Linux x86_64)" 30.001 30.000, 0.001')
NGINX_MAIN_XFF = (
    '172.17.0.1 - - [05/Jan/2026:10:00:00 +0000] "GET / HTTP/1.1" 200 615 "-" '
    '"Mozilla/5.0" "198.51.100.23, 10.0.0.2"')
VHOST_COMBINED = (
    'www.example.com:443 198.51.100.9 - - [05/Jan/2026:10:00:00 +0000] '
    '"GET /index.html HTTP/1.1" 200 5120 "-" "Mozilla/5.0 (Windows NT 10.0)"')
TLS_PROBE = ('45.79.1.2 - - [05/Jan/2026:10:00:01 +0000] '
             '"\\x16\\x03\\x01\\x00\\xFC\\x01\\x00\\x00\\xF8\\x03\\x03" '
             '400 157 "-" "-"')
EMPTY_REQUEST = '45.79.1.2 - - [05/Jan/2026:10:00:02 +0000] "-" 408 0 "-" "-"'
ESCAPED_QUOTES = (
    '10.1.2.3 - - [05/Jan/2026:10:00:00 +0000] "GET /search?q=\\"x\\" HTTP/1.1" 200 10 '
    '"https://example.com/?q=\\"quoted\\"" "Agent \\"with\\" quotes \\\\ backslash"')
VALID_ACCESS_LINES = [APACHE_COMMON, APACHE_COMBINED, *NGINX_COMBINED, NGINX_TIMED,
                      NGINX_TIMED_UPSTREAM, NGINX_MAIN_XFF, VHOST_COMBINED, TLS_PROBE,
                      EMPTY_REQUEST, ESCAPED_QUOTES]


def access_time(text: str) -> Timestamp:
    dt = datetime.datetime.strptime(text, '%d/%b/%Y:%H:%M:%S %z')
    return Timestamp.from_utc_datetime(dt.astimezone(UTC))


def test_parse_combined_apache_common():
    fields = formats.parse_combined(APACHE_COMMON + '\n')
    assert fields == {
        'client': '127.0.0.1', 'ident': '-', 'user': 'frank',
        'time': access_time('10/Oct/2000:13:55:36 -0700'),
        'method': 'GET', 'path': '/apache_pb.gif', 'protocol': 'HTTP/1.0',
        'request': 'GET /apache_pb.gif HTTP/1.0', 'status': 200, 'bytes': 2326,
        'referer': None, 'user_agent': None, 'request_time_s': None, 'vhost': None,
        'forwarded_for': None,
    }
    assert fields['time'] == Timestamp(calendar.timegm((2000, 10, 10, 20, 55, 36)))


def test_parse_combined_apache_combined():
    fields = formats.parse_combined(APACHE_COMBINED + '\r\n')
    assert fields['referer'] == 'http://www.example.com/start.html'
    assert fields['user_agent'] == 'Mozilla/4.08 [en] (Win98; I ;Nav)'
    assert fields['status'] == 200 and fields['bytes'] == 2326


@pytest.mark.parametrize('line', NGINX_COMBINED)
def test_parse_combined_nginx(line):
    fields = formats.parse_combined(line)
    client, rest = line.split(' ', 1)
    assert fields['client'] == client
    assert fields['time'] == access_time(line[line.index('[') + 1:line.index(']')])
    status, size = line.split('" ', 2)[1].split(' ')[:2]
    assert fields['status'] == int(status) and fields['bytes'] == int(size)
    assert fields['method'] == 'GET' and fields['path'] == '/downloads/product_1'
    assert fields['referer'] is None
    assert fields['user_agent'].startswith('Debian APT-HTTP/1.3')
    assert fields['request_time_s'] is None and fields['vhost'] is None


def test_parse_combined_request_time():
    fields = formats.parse_combined(NGINX_TIMED)
    assert fields['request_time_s'] == pytest.approx(0.123)
    assert (fields['method'], fields['path'], fields['protocol']) == (
        'POST', '/api/v1/orders', 'HTTP/2.0')
    assert fields['user_agent'] == 'curl/8.0'


def test_parse_combined_request_and_upstream_time():
    fields = formats.parse_combined(NGINX_TIMED_UPSTREAM)
    assert fields['request_time_s'] == pytest.approx(30.001)
    assert fields['user'] == 'alice'
    assert fields['time'] == ts(2026, 1, 5, 10, 0, 0)
    assert fields['status'] == 502


def test_parse_combined_dash_request_time():
    fields = formats.parse_combined(NGINX_COMBINED[0] + ' - -')
    assert fields['request_time_s'] is None


def test_parse_combined_forwarded_for():
    fields = formats.parse_combined(NGINX_MAIN_XFF)
    assert fields['forwarded_for'] == '198.51.100.23, 10.0.0.2'
    assert fields['user_agent'] == 'Mozilla/5.0'


def test_parse_combined_vhost():
    fields = formats.parse_combined(VHOST_COMBINED)
    assert fields['vhost'] == 'www.example.com:443'
    assert fields['client'] == '198.51.100.9'
    assert fields['bytes'] == 5120


def test_parse_combined_tls_probe_keeps_request():
    fields = formats.parse_combined(TLS_PROBE)
    assert fields['request'] == TLS_PROBE.split('"')[1]
    assert fields['method'] is None and fields['path'] is None
    assert fields['protocol'] is None
    assert fields['status'] == 400
    assert fields['referer'] is None and fields['user_agent'] is None


def test_parse_combined_dash_request():
    fields = formats.parse_combined(EMPTY_REQUEST)
    assert fields['request'] == '-'
    assert fields['method'] is None and fields['status'] == 408 and fields['bytes'] == 0


def test_parse_combined_escaped_quotes():
    fields = formats.parse_combined(ESCAPED_QUOTES)
    assert fields['path'] == '/search?q="x"'
    assert fields['referer'] == 'https://example.com/?q="quoted"'
    assert fields['user_agent'] == 'Agent "with" quotes \\ backslash'


def test_parse_combined_ipv6_client_and_dash_bytes():
    line = ('2001:db8::1 - - [05/Jan/2026:10:00:00 +0000] "HEAD / HTTP/1.1" 304 - '
            '"-" "check/1.0"')
    fields = formats.parse_combined(line)
    assert fields['client'] == '2001:db8::1'
    assert fields['bytes'] is None
    assert fields['method'] == 'HEAD'


@pytest.mark.parametrize('line, reason', [
    ('', 'empty line'),
    ('   ', 'empty line'),
    ('\x00\x00\x00', 'not an access log line'),
    ('hello world', 'not an access log line'),
    (APACHE_COMMON.replace('200', 'abc'), 'not an access log line'),
    (APACHE_COMMON.replace('Oct', 'Foo'), 'invalid month'),
    (APACHE_COMMON.replace('10/Oct', '32/Oct'), 'invalid date'),
    (APACHE_COMMON.replace('-0700', '+9900'), 'offset'),
    (APACHE_COMMON.replace('-0700', '0700'), 'not an access log line'),
    (APACHE_COMMON.replace(' 200 ', ' 999 '), 'status out of range'),
    (APACHE_COMMON.replace(' 200 ', ' 000 '), 'status out of range'),
    (APACHE_COMMON.replace('2326', '9' * 40), 'not an access log line'),
    (APACHE_COMBINED + ' abc', 'not an access log line'),
    (APACHE_COMMON.replace(' 200 ', ' \u0662\u0660\u0660 '), 'not an access log line'),
    (NGINX_TIMED.replace('0.123', 'nan'), 'not an access log line'),
    (APACHE_COMBINED.replace('"Mozilla', 'Mozilla'), 'not an access log line'),
    ('127.0.0.1 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.0\\" 200 1',
     'not an access log line'),
])
def test_parse_combined_refuses(line, reason):
    with pytest.raises(DecodeError, match=reason):
        formats.parse_combined(line)


@pytest.mark.parametrize('line', VALID_ACCESS_LINES)
def test_parse_combined_every_prefix_returns_or_refuses(line):
    assert returns_or_refuses(formats.parse_combined, line) is not None
    for end in range(len(line)):
        returns_or_refuses(formats.parse_combined, line[:end])


def test_parse_combined_refuses_apache_error_log():
    lines = loghub_lines('Apache')
    assert len(lines) == 2000
    for line in lines:
        with pytest.raises(DecodeError):
            formats.parse_combined(line)


# -------------------------------------------------------------------- parse_syslog

BOM = '\ufeff'
RFC5424_EXAMPLES = [
    # RFC 5424 section 6.5, examples 1-4 (BOM as the RFC shows it).
    "<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - "
    + BOM + "'su root' failed for lonvick on /dev/pts/8",
    "<165>1 2003-08-24T05:14:15.000003-07:00 192.0.2.1 myproc 8710 - - "
    "%% It's time to make the do-nuts.",
    '<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 '
    '[exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"] '
    + BOM + 'An application event log entry...',
    '<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 '
    '[exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"]'
    '[examplePriority@32473 class="high"]',
]
RFC3164_EXAMPLES = [
    # RFC 3164 section 5.4.
    "<34>Oct 11 22:14:15 mymachine su: 'su root' failed for lonvick on /dev/pts/8",
    '<13>Feb  5 17:32:18 10.0.0.99 Use the BFG!',
    '<0>Oct 22 10:52:12 scapegoat 1990 Oct 22 10:52:01 TZ-6 '
    "scapegoat.dmz.example.org 10.1.2.3 sched[0]: That's All Folks!",
    '<86>Jan  5 10:00:00 web-1 sshd[4242]: Accepted publickey for deploy from '
    '198.51.100.4 port 50122 ssh2',
]


def test_parse_syslog_rfc5424_example_1():
    fields = formats.parse_syslog(RFC5424_EXAMPLES[0])
    assert fields == {
        'facility': 4, 'severity': 2,
        'time': ts(2003, 10, 11, 22, 14, 15, 3000),
        'host': 'mymachine.example.com', 'app': 'su', 'procid': None,
        'msgid': 'ID47', 'structured_data': None,
        'message': "'su root' failed for lonvick on /dev/pts/8", 'rfc': '5424',
    }


def test_parse_syslog_rfc5424_example_2():
    fields = formats.parse_syslog(RFC5424_EXAMPLES[1])
    assert (fields['facility'], fields['severity']) == (20, 5)
    assert fields['time'] == ts(2003, 8, 24, 12, 14, 15, 3)
    assert (fields['host'], fields['app'], fields['procid']) == (
        '192.0.2.1', 'myproc', '8710')
    assert fields['msgid'] is None and fields['structured_data'] is None
    assert fields['message'] == "%% It's time to make the do-nuts."


def test_parse_syslog_rfc5424_structured_data():
    fields = formats.parse_syslog(RFC5424_EXAMPLES[2])
    assert fields['structured_data'] == (
        '[exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"]')
    assert fields['message'] == 'An application event log entry...'
    fields = formats.parse_syslog(RFC5424_EXAMPLES[3])
    assert fields['structured_data'].count('][') == 1
    assert fields['structured_data'].endswith('[examplePriority@32473 class="high"]')
    assert fields['message'] == ''


def test_parse_syslog_rfc5424_escaped_structured_data():
    sd = r'[meta@1 path="C:\\dir\\" note="a \"quote\" and \] bracket"]'
    line = f'<14>1 2026-01-05T10:00:00Z host app 12 - {sd} message [not sd]'
    fields = formats.parse_syslog(line)
    assert fields['structured_data'] == sd
    assert fields['message'] == 'message [not sd]'


def test_parse_syslog_rfc3164_examples():
    fields = formats.parse_syslog(RFC3164_EXAMPLES[0], default_year=2003)
    assert fields == {
        'facility': 4, 'severity': 2, 'time': ts(2003, 10, 11, 22, 14, 15),
        'host': 'mymachine', 'app': 'su', 'procid': None, 'msgid': None,
        'structured_data': None,
        'message': "'su root' failed for lonvick on /dev/pts/8", 'rfc': '3164',
    }
    fields = formats.parse_syslog(RFC3164_EXAMPLES[1], default_year=2026)
    assert fields['time'] == ts(2026, 2, 5, 17, 32, 18)
    assert (fields['facility'], fields['severity']) == (1, 5)
    assert fields['host'] == '10.0.0.99' and fields['app'] is None
    assert fields['message'] == 'Use the BFG!'
    fields = formats.parse_syslog(RFC3164_EXAMPLES[2], default_year=1990)
    assert (fields['facility'], fields['severity']) == (0, 0)
    assert fields['host'] == 'scapegoat'
    assert fields['message'].startswith('1990 Oct 22 10:52:01 TZ-6')
    fields = formats.parse_syslog(RFC3164_EXAMPLES[3], default_year=2026)
    assert (fields['app'], fields['procid']) == ('sshd', '4242')
    assert (fields['facility'], fields['severity']) == (10, 6)
    assert fields['time'] == ts(2026, 1, 5, 10, 0, 0)


def test_parse_syslog_rfc3164_default_year_is_current_utc_year():
    before = datetime.datetime.now(UTC).year
    fields = formats.parse_syslog('<13>Jun 15 12:00:00 host app: x')
    after = datetime.datetime.now(UTC).year
    years = {before, after}
    assert fields['time'] in {ts(year, 6, 15, 12, 0, 0) for year in years}


def test_parse_syslog_rfc3164_feb_29_needs_leap_year():
    assert formats.parse_syslog('<13>Feb 29 00:00:00 h a: x', default_year=2024)[
        'time'] == ts(2024, 2, 29, 0, 0, 0)
    with pytest.raises(DecodeError, match='invalid date'):
        formats.parse_syslog('<13>Feb 29 00:00:00 h a: x', default_year=2025)


@pytest.mark.parametrize('line, reason', [
    ('', 'empty line'),
    (' \t', 'empty line'),
    ('<999>1 2026-01-05T10:00:00Z h a - - - m', 'out of range'),
    ('<192>Oct 11 22:14:15 h a: m', 'out of range'),
    ('<abc>Oct 11 22:14:15 h a: m', 'invalid syslog PRI'),
    ('<-1>Oct 11 22:14:15 h a: m', 'invalid syslog PRI'),
    ('<>Oct 11 22:14:15 h a: m', 'invalid syslog PRI'),
    ('<1234>Oct 11 22:14:15 h a: m', 'invalid syslog PRI'),
    ('<13', 'no closing'),
    ('<\x00>Oct 11 22:14:15 h a: m', 'invalid syslog PRI'),
    ('<\u0661\u0663>Oct 11 22:14:15 h a: m', 'invalid syslog PRI'),
    ('Oct 11 22:14:15 mymachine su: x', 'missing <PRI>'),
    ('<34>2 2003-10-11T22:14:15.003Z h a - - - m', 'unsupported syslog version'),
    ('<34>1 - mymachine su - ID47 - m', 'missing event time'),
    ('<34>1 2003-10-11T22:14:15.003 mymachine su - ID47 - m', 'without time zone'),
    ('<34>1 1065910455 mymachine su - ID47 - m', 'unrecognised timestamp'),
    ('<34>1 2003-10-11T22:14:15Z mymachine su - ID47 [bad sd', 'malformed RFC 5424'),
    ('<34>1 2003-10-11T22:14:15Z mymachine su - ID47', 'malformed RFC 5424'),
    ('<0>1990 Oct 22 10:52:01 TZ-6 scapegoat.dmz.example.org 10.1.2.3 '
     "sched[0]: That's All Folks!", 'malformed RFC 5424'),
    ('<34>Foo 11 22:14:15 mymachine su: x', 'invalid month'),
    ('<34>Oct 11 22:14 mymachine su: x', 'malformed syslog header'),
    ('<34>Oct 11 22:14:15', 'malformed syslog header'),
    ('<34>Oct 32 22:14:15 h a: x', 'invalid date'),
    ('<34>Oct 11 24:14:15 h a: x', 'invalid date'),
])
def test_parse_syslog_refuses(line, reason):
    with pytest.raises(DecodeError, match=reason):
        formats.parse_syslog(line, default_year=2026)


@pytest.mark.parametrize('line', RFC5424_EXAMPLES + RFC3164_EXAMPLES)
def test_parse_syslog_every_prefix_returns_or_refuses(line):
    assert returns_or_refuses(
        lambda text: formats.parse_syslog(text, default_year=2003), line) is not None
    for end in range(len(line)):
        returns_or_refuses(
            lambda text: formats.parse_syslog(text, default_year=2003), line[:end])


def test_parse_syslog_keeps_nul_and_control_characters_in_message():
    fields = formats.parse_syslog('<14>Oct 11 22:14:15 h app: a\x00b\x1bc',
                                  default_year=2026)
    assert fields['message'] == 'a\x00b\x1bc'


def test_parse_syslog_refuses_linux_lines_without_pri():
    for line in loghub_lines('Linux'):
        with pytest.raises(DecodeError, match='missing <PRI>'):
            formats.parse_syslog(line)


def test_parse_syslog_without_pri_matches_loghub_ground_truth():
    """Loghub's structured CSV is an independent parse of the same lines."""
    lines = loghub_lines('Linux')
    rows = loghub_rows('Linux')
    assert len(lines) == len(rows) == 2000
    compared = 0
    for line, row in zip(lines, rows):
        fields = formats.parse_syslog(line, default_year=2005, require_pri=False)
        assert (fields['facility'], fields['severity']) == (1, 5)
        assert fields['rfc'] == '3164'
        assert fields['host'] == row['Level']          # Loghub's name for the host
        month = datetime.datetime.strptime(row['Month'], '%b').month
        hour, minute, second = map(int, row['Time'].split(':'))
        assert fields['time'] == ts(2005, month, int(row['Date']), hour, minute, second)
        if ' ' in row['Component']:
            # "syslogd 1.4.1:" and "-- root[2421]:" are not RFC 3164 tags (a tag
            # has no spaces): the whole text stays the message, with no app.
            assert fields['app'] is None
            assert fields['message'].strip().endswith(row['Content'])
            continue
        assert fields['app'] == row['Component']
        assert fields['procid'] == (row['PID'] or None)
        assert fields['message'].strip() == row['Content']
        compared += 1
    assert compared >= 1990


def test_parse_syslog_refuses_apache_error_log():
    for line in loghub_lines('Apache'):
        with pytest.raises(DecodeError):
            formats.parse_syslog(line, require_pri=False)


# ----------------------------------------------------------------- hostile input

HOSTILE = [
    '', ' ', '\n', '\r\n', '\x00', '\x00' * 1000, '"', '"' * 1001, '\\' * 1001,
    '[' * 10_000, '{' * 10_000, '<' * 10_000, '<1>' * 1000,
    '\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03',
    '\ufffd\ufffd', '\u202e', 'A' * 100_000, '- ' * 50_000, ': ' * 50_000,
    '1.1.1.1 ' * 10_000, ' [' * 10_000,
    '{"timestamp": ' + '9' * 5000 + '}',
]


@pytest.mark.parametrize('parse', [
    formats.parse_combined, formats.parse_json_object,
    lambda t: formats.parse_syslog(t, default_year=2026),
    lambda t: formats.parse_syslog(t, default_year=2026, require_pri=False),
], ids=['combined', 'json', 'syslog', 'syslog-nopri'])
def test_parsers_never_raise_anything_but_decode_error(parse):
    for text in HOSTILE:
        returns_or_refuses(parse, text)
    rng = random.Random(2026)
    alphabet = 'ab01 :/"\\[]<>{}-.+Z\x00\n\t\u00e9'
    for line in VALID_ACCESS_LINES + RFC5424_EXAMPLES + RFC3164_EXAMPLES:
        for _ in range(40):
            chars = list(line)
            for _ in range(rng.randint(1, 4)):
                chars[rng.randrange(len(chars))] = rng.choice(alphabet)
            returns_or_refuses(parse, ''.join(chars))


@pytest.mark.parametrize('parse', [
    formats.parse_combined,
    lambda t: formats.parse_syslog(t, default_year=2026),
], ids=['combined', 'syslog'])
def test_parsers_are_linear_on_pathological_lines(parse):
    lines = [
        'a' * 1_000_000,
        'a ' * 500_000,
        '1 - - [' + '"\\' * 300_000,
        '1.2.3.4 - - [05/Jan/2026:10:00:00 +0000] "' + '\\"' * 300_000,
        '<13>1 2026-01-05T10:00:00Z h a p m ' + '[x a="' * 100_000,
        '<13>Oct 11 22:14:15 ' + 'x' * 1_000_000,
    ]
    for line in lines:
        start = time.perf_counter()
        returns_or_refuses(parse, line)
        assert time.perf_counter() - start < 5.0


# ------------------------------------------- record fields (trades, sensors)

@pytest.mark.parametrize('value, expected', [
    ('2026-03-01T12:00:00.250Z', ts(2026, 3, 1, 12, 0, 0, 250000)),
    ('1772366400250', ts(2026, 3, 1, 12, 0, 0, 250000)),
    (' 1772366400250.5 ', ts(2026, 3, 1, 12, 0, 0, 250500)),
])
def test_time_from_text(value, expected):
    assert formats.time_from_text(value) == expected


@pytest.mark.parametrize('value, reason', [
    ('', 'missing event_time'),
    ('1772366400', 'epoch seconds are ambiguous'),
    ('-1772366400250', 'negative timestamp'),
    ('9' * 20, 'after 9999'),
    ('yesterday', 'event_time: '),
])
def test_time_from_text_refuses(value, reason):
    with pytest.raises(DecodeError, match=reason):
        formats.time_from_text(value)


def test_json_event_time_numbers_and_types():
    assert formats.json_event_time({'event_time': 1772366400250}) == \
        ts(2026, 3, 1, 12, 0, 0, 250000)
    assert formats.json_event_time({'t': 1772366400250.5}, 't') == \
        ts(2026, 3, 1, 12, 0, 0, 250500)
    with pytest.raises(DecodeError, match='missing event_time'):
        formats.json_event_time({})
    with pytest.raises(DecodeError, match='wrongly typed field event_time'):
        formats.json_event_time({'event_time': True})
    with pytest.raises(DecodeError, match='not finite'):
        formats.json_event_time({'event_time': float('inf')})


def test_csv_fields():
    line = '\ufeffa, "b,c",d\r\n'
    assert formats.csv_fields(line) == next(csv.reader(
        [line[1:-2]], skipinitialspace=True))
    for bad, reason in (('', 'empty line'), ('a,"b', 'invalid CSV'),
                        (b'a,b', 'not text')):
        with pytest.raises(DecodeError, match=reason):
            formats.csv_fields(bad)


def test_header_line_is_a_named_filter():
    err = formats.HeaderLine()
    assert isinstance(err, DecodeError) and err.name == 'csv_header'
