"""Tests for transforms.logs.decoders: parsed lines -> LogRecord."""
import datetime
import json
import pathlib
import pickle

import apache_beam as beam
import pytest
from apache_beam.internal import pickler
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.utils.timestamp import Timestamp

from transforms.decode import Decode, DecodeError
from transforms.logs import decoders, line_formats
from transforms.logs.records import LEVELS, LogRecord

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
LOGHUB = REPO_ROOT.parent / 'shared' / 'loghub'
UTC = datetime.timezone.utc


def ts(*args, tz=UTC) -> Timestamp:
    return Timestamp.from_utc_datetime(
        datetime.datetime(*args, tzinfo=tz).astimezone(UTC))


def loghub_lines(name: str):
    path = LOGHUB / name / f'{name}_2k.log'
    if not path.is_file():
        pytest.skip(f'Loghub sample {name} not found next to the repository '
                    f'(expected shared/loghub/{name}/{name}_2k.log)')
    return path.read_text(encoding='utf-8').splitlines()


# ---------------------------------------------------------------------- JSON logs

# Lines as typical structured loggers write them.
ZAP = ('{"level":"info","ts":1767607200.5,"caller":"server/http.go:88",'
       '"msg":"request served","service":"api","status":200,"latency_ms":12.5,'
       '"host":"api-7f9c"}')
LOGRUS = ('{"level":"warning","msg":"disk almost full",'
          '"time":"2026-01-05T11:00:00+01:00","service":"storage","hostname":"db-2"}')
ECS = ('{"@timestamp":"2026-01-05T10:00:00.250Z","log.level":"ERROR",'
       '"message":"upstream timed out","service":{"name":"checkout"},'
       '"host":{"name":"web-3"},"http":{"response":{"status_code":504}},'
       '"ecs.version":"1.6.0"}')
PINO = ('{"level":50,"time":1767607200123,"pid":4242,"hostname":"node-1",'
        '"service":"gateway","msg":"request failed","duration_ms":"250"}')
STRUCTLOG = ('{"event":"user logged in","level":"info","timestamp":'
             '"2026-01-05T10:00:00.123456Z","app":"auth","request_time":0.042}')
GCP = ('{"severity":"CRITICAL","message":"out of memory","timestamp":'
       '"2026-01-05T10:00:00Z","application":"batch","http_status":"503"}')
BUNYAN = ('{"name":"myapp","hostname":"banana.local","pid":40161,"level":30,'
          '"msg":"hi","time":"2013-01-04T18:46:23.851Z","v":0}')


def test_decode_json_zap():
    assert decoders.decode_json_log(ZAP) == LogRecord(
        event_time=ts(2026, 1, 5, 10, 0, 0, 500000), service='api', level='INFO',
        status=200, latency_ms=12.5, host='api-7f9c', message='request served',
        format='json')


def test_decode_json_logrus():
    record = decoders.decode_json_log(LOGRUS + '\n')
    assert record.event_time == ts(2026, 1, 5, 10, 0, 0)
    assert (record.service, record.level, record.host) == ('storage', 'WARN', 'db-2')
    assert record.status is None and record.latency_ms is None
    assert record.message == 'disk almost full'


def test_decode_json_ecs_nested_fields():
    record = decoders.decode_json_log(ECS)
    assert record.event_time == ts(2026, 1, 5, 10, 0, 0, 250000)
    assert (record.service, record.level, record.status) == ('checkout', 'ERROR', 504)
    assert record.host == 'web-3'
    assert record.message == 'upstream timed out'


def test_decode_json_pino_numeric_level_and_ms_time():
    record = decoders.decode_json_log(PINO)
    assert record.event_time == ts(2026, 1, 5, 10, 0, 0, 123000)
    assert (record.service, record.level, record.host) == ('gateway', 'ERROR', 'node-1')
    assert record.latency_ms == 250.0


def test_decode_json_structlog_seconds_latency():
    record = decoders.decode_json_log(STRUCTLOG)
    assert record.service == 'auth' and record.level == 'INFO'
    assert record.latency_ms == pytest.approx(42.0)
    assert record.message == 'user logged in'


def test_decode_json_gcp_severity_and_string_status():
    record = decoders.decode_json_log(GCP)
    assert (record.service, record.level, record.status) == ('batch', 'FATAL', 503)


def test_decode_json_bunyan_without_service_is_refused():
    with pytest.raises(DecodeError, match='missing service'):
        decoders.decode_json_log(BUNYAN)


@pytest.mark.parametrize('key', decoders.TIME_KEYS)
def test_decode_json_time_keys(key):
    record = decoders.decode_json_log(
        f'{{"{key}": "2026-01-05T10:00:00Z", "service": "s"}}')
    assert record.event_time == ts(2026, 1, 5, 10, 0, 0)


def test_decode_json_time_key_order():
    record = decoders.decode_json_log(
        '{"event_time": 0, "ts": 1, "timestamp": "2026-01-05T10:00:00Z", '
        '"service": "s"}')
    assert record.event_time == ts(2026, 1, 5, 10, 0, 0)


@pytest.mark.parametrize('payload, service', [
    ('"service": "a"', 'a'),
    ('"service.name": "b"', 'b'),
    ('"service": {"name": "c"}', 'c'),
    ('"app": "d"', 'd'),
    ('"application": "e"', 'e'),
    ('"service": "  f  "', 'f'),
    ('"service": "", "app": "g"', 'g'),
    ('"service": {"version": "1"}, "app": "h"', 'h'),
    ('"app": "x", "service": "i"', 'i'),
])
def test_decode_json_service_keys(payload, service):
    record = decoders.decode_json_log(f'{{"ts": 1767607200, {payload}}}')
    assert record.service == service


@pytest.mark.parametrize('level, expected', [
    ('trace', 'TRACE'), ('DEBUG', 'DEBUG'), ('Info', 'INFO'), ('information', 'INFO'),
    ('notice', 'INFO'), ('warn', 'WARN'), ('WARNING', 'WARN'), ('err', 'ERROR'),
    ('error', 'ERROR'), ('critical', 'FATAL'), ('CRIT', 'FATAL'), ('emerg', 'FATAL'),
    ('alert', 'FATAL'), ('panic', 'FATAL'), ('fatal', 'FATAL'), (' warn ', 'WARN'),
    ('verbose', 'TRACE'), ('E', 'ERROR'), ('w', 'WARN'), ('severe', 'ERROR'),
    ('DEFAULT', ''), ('', ''), (10, 'TRACE'), (40, 'WARN'),
    (60, 'FATAL'),
])
def test_decode_json_levels(level, expected):
    record = decoders.decode_json_log(json.dumps(
        {'ts': 1767607200, 'service': 's', 'level': level}))
    assert record.level == expected
    assert record.level in LEVELS + ('',)


@pytest.mark.parametrize('key', decoders.LEVEL_KEYS)
def test_decode_json_level_keys(key):
    record = decoders.decode_json_log(
        f'{{"ts": 1767607200, "service": "s", "{key}": "warning"}}')
    assert record.level == 'WARN'


@pytest.mark.parametrize('key', decoders.STATUS_KEYS)
def test_decode_json_status_keys(key):
    record = decoders.decode_json_log(
        f'{{"ts": 1767607200, "service": "s", "{key}": 404}}')
    assert record.status == 404


@pytest.mark.parametrize('payload, expected', [
    ('"latency_ms": 5', 5.0),
    ('"duration_ms": 5.5', 5.5),
    ('"response_time_ms": "7"', 7.0),
    ('"elapsed_ms": 0', 0.0),
    ('"latency_s": 0.25', 250.0),
    ('"duration_s": "1.5"', 1500.0),
    ('"request_time": 0.001', 1.0),
    ('"latency_s": 9, "latency_ms": 3', 3.0),
])
def test_decode_json_latency(payload, expected):
    record = decoders.decode_json_log(
        f'{{"ts": 1767607200, "service": "s", {payload}}}')
    assert record.latency_ms == pytest.approx(expected)


@pytest.mark.parametrize('payload, expected', [
    ('"message": "plain"', 'plain'),
    ('"msg": "short"', 'short'),
    ('"log": "docker"', 'docker'),
    ('"message": {"a": [1, 2]}', '{"a":[1,2]}'),
    ('"message": 42', '42'),
    ('"other": 1', ''),
])
def test_decode_json_message(payload, expected):
    record = decoders.decode_json_log(
        f'{{"ts": 1767607200, "service": "s", {payload}}}')
    assert record.message == expected


@pytest.mark.parametrize('payload, reason', [
    ('"service": "s"', 'missing event time'),
    ('"ts": null, "service": "s"', 'missing event time'),
    ('"ts": 1767607200', 'missing service'),
    ('"ts": 1767607200, "service": "   "', 'missing service'),
    ('"ts": 1767607200, "service": 42', 'wrongly typed field service'),
    ('"ts": "2026-01-05T10:00:00", "service": "s"', 'timestamp without time zone'),
    ('"ts": true, "service": "s"', 'wrongly typed timestamp'),
    ('"ts": -5, "service": "s"', 'negative'),
    ('"ts": 123456789012345678901234567890, "service": "s"', 'after 9999'),
    ('"ts": 1767607200, "service": "s", "status": "abc"', 'wrongly typed field status'),
    ('"ts": 1767607200, "service": "s", "status": true', 'wrongly typed field status'),
    ('"ts": 1767607200, "service": "s", "status": 200.5', 'wrongly typed field status'),
    ('"ts": 1767607200, "service": "s", "status": 99', 'out of range'),
    ('"ts": 1767607200, "service": "s", "status": 600', 'out of range'),
    ('"ts": 1767607200, "service": "s", "status": 123456789012345678901234567890',
     'out of range'),
    ('"ts": 1767607200, "service": "s", "latency_ms": -1', 'negative latency'),
    ('"ts": 1767607200, "service": "s", "latency_ms": "NaN"', 'not finite'),
    ('"ts": 1767607200, "service": "s", "latency_ms": "inf"', 'not finite'),
    ('"ts": 1767607200, "service": "s", "latency_s": 1e306', 'not finite'),
    ('"ts": 1767607200, "service": "s", "latency_ms": "fast"', 'wrongly typed field'),
    ('"ts": 1767607200, "service": "s", "latency_ms": "1_000"', 'wrongly typed field'),
    ('"ts": 1767607200, "service": "s", "latency_ms": [1]', 'wrongly typed field'),
    ('"ts": 1767607200, "service": "s", "level": ["error"]',
     'wrongly typed field level'),
    ('"ts": 1767607200, "service": "s", "level": {"name": "x"}', 'wrongly typed field'),
    ('"ts": 1767607200, "service": "s", "level": 3', 'wrongly typed field level'),
    ('"ts": 1767607200, "service": "s", "level": true', 'wrongly typed field level'),
    ('"ts": 1767607200, "service": "s", "host": 7', 'wrongly typed field host'),
])
def test_decode_json_refuses(payload, reason):
    with pytest.raises(DecodeError, match=reason):
        decoders.decode_json_log(f'{{{payload}}}')


def test_decode_json_refuses_deep_nesting_and_non_objects():
    for text in ('[' * 10_000 + ']' * 10_000, '{"a":' * 10_000 + '1' + '}' * 10_000,
                 '[]', '"x"', ''):
        with pytest.raises(DecodeError):
            decoders.decode_json_log(text)


def test_decode_json_every_prefix_returns_or_refuses():
    for line in (ZAP, ECS, PINO):
        for end in range(len(line)):
            try:
                decoders.decode_json_log(line[:end])
            except DecodeError:
                pass
            else:
                pytest.fail(f'a truncated JSON line was accepted: {line[:end]!r}')


# -------------------------------------------------------------------- access logs

VHOST = ('shop.example.com:443 198.51.100.9 - - [05/Jan/2026:10:00:00 +0000] '
         '"GET /index.html HTTP/1.1" 200 5120 "-" "Mozilla/5.0"')
NGINX = ('203.0.113.7 - - [05/Jan/2026:11:00:00 +0100] "POST /api/v1/orders HTTP/2.0" '
         '503 512 "-" "curl/8.0" 0.250 0.249')


def test_decode_combined_with_request_time():
    assert decoders.decode_combined_log(NGINX) == LogRecord(
        event_time=ts(2026, 1, 5, 10, 0, 0), service='web', level='', status=503,
        latency_ms=pytest.approx(250.0), host='',
        message='POST /api/v1/orders HTTP/2.0 -> 503', format='combined')


def test_decode_combined_vhost_is_service_and_host():
    record = decoders.decode_combined_log(VHOST, service='ignored')
    assert (record.service, record.host) == ('shop.example.com', 'shop.example.com')
    assert record.message == 'GET /index.html HTTP/1.1 -> 200'
    assert record.latency_ms is None


def test_decode_combined_ipv6_vhost():
    record = decoders.decode_combined_log(
        VHOST.replace('shop.example.com:443', '[::1]:80'))
    assert record.service == '[::1]'


def test_decode_combined_common_format_uses_service_argument():
    record = decoders.decode_combined_log(
        '127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" '
        '200 2326', service='intranet')
    assert record.service == 'intranet' and record.host == ''
    assert record.event_time == ts(2000, 10, 10, 20, 55, 36)


def test_decode_combined_junk_request():
    record = decoders.decode_combined_log(
        '45.79.1.2 - - [05/Jan/2026:10:00:01 +0000] "\\x16\\x03\\x01\\x00" '
        '400 157 "-" "-"')
    assert record.message == '\\x16\\x03\\x01\\x00 -> 400'
    assert record.status == 400


def test_decode_combined_does_not_keep_client_address():
    record = decoders.decode_combined_log(NGINX)
    assert '203.0.113.7' not in ''.join(str(field) for field in record)


def test_decode_combined_refuses_apache_error_log():
    for line in loghub_lines('Apache'):
        with pytest.raises(DecodeError):
            decoders.decode_combined_log(line)


# ------------------------------------------------------------------------- syslog

@pytest.mark.parametrize('severity, level', [
    (0, 'FATAL'), (1, 'FATAL'), (2, 'FATAL'), (3, 'ERROR'), (4, 'WARN'),
    (5, 'INFO'), (6, 'INFO'), (7, 'DEBUG'),
])
def test_decode_syslog_levels(severity, level):
    pri = 8 * 3 + severity    # facility daemon
    record = decoders.decode_syslog_log(
        f'<{pri}>1 2026-01-05T10:00:00Z host app 1 - - text')
    assert record.level == level


def test_decode_syslog_5424():
    record = decoders.decode_syslog_log(
        "<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - "
        "\ufeff'su root' failed for lonvick on /dev/pts/8")
    assert record == LogRecord(
        event_time=ts(2003, 10, 11, 22, 14, 15, 3000), service='su', level='FATAL',
        status=None, latency_ms=None, host='mymachine.example.com',
        message="'su root' failed for lonvick on /dev/pts/8", format='syslog5424')


def test_decode_syslog_3164():
    record = decoders.decode_syslog_log(
        "<34>Oct 11 22:14:15 mymachine su: 'su root' failed for lonvick on /dev/pts/8",
        default_year=2003)
    assert record == LogRecord(
        event_time=ts(2003, 10, 11, 22, 14, 15), service='su', level='FATAL',
        status=None, latency_ms=None, host='mymachine',
        message="'su root' failed for lonvick on /dev/pts/8", format='syslog3164')


def test_decode_syslog_without_app_or_host():
    record = decoders.decode_syslog_log('<13>1 2026-01-05T10:00:00Z - - - - - hello')
    assert (record.service, record.host, record.message) == ('syslog', '', 'hello')
    record = decoders.decode_syslog_log('<13>Feb  5 17:32:18 10.0.0.99 Use the BFG!',
                                        default_year=2026)
    assert record.service == 'syslog' and record.level == 'INFO'


def test_decode_syslog_linux_lines():
    lines = loghub_lines('Linux')
    for line in lines:
        with pytest.raises(DecodeError, match='missing <PRI>'):
            decoders.decode_syslog_log(line)
    records = [decoders.decode_syslog_log(line, default_year=2005, require_pri=False)
               for line in lines]
    assert all(r.format == 'syslog3164' and r.level == 'INFO' and r.host == 'combo'
               for r in records)
    assert sum(r.service == 'kernel' for r in records) == sum(
        ' kernel: ' in line for line in lines)


@pytest.mark.parametrize('line', [
    '<999>Oct 11 22:14:15 h a: m', '<x>Oct 11 22:14:15 h a: m', '<13>', '<13>1 -',
])
def test_decode_syslog_refuses(line):
    with pytest.raises(DecodeError):
        decoders.decode_syslog_log(line, default_year=2026)


# ------------------------------------------------------------ auto and factories

def test_decode_log_line_detects_format():
    assert decoders.decode_log_line('  ' + ZAP).format == 'json'
    assert decoders.decode_log_line(
        '<34>Oct 11 22:14:15 mymachine su: x', default_year=2003).format == 'syslog3164'
    assert decoders.decode_log_line(
        '<34>1 2003-10-11T22:14:15Z h su - - - x').format == 'syslog5424'
    record = decoders.decode_log_line(NGINX, default_service='shop')
    assert (record.format, record.service) == ('combined', 'shop')


@pytest.mark.parametrize('text', ['', '   ', '\n', '\x00', 'garbage', '{', '<', '[1]'])
def test_decode_log_line_refuses(text):
    with pytest.raises(DecodeError):
        decoders.decode_log_line(text)


def test_decode_log_line_reads_loghub_samples():
    # Every line of each sample: tests/transforms/test_loghub_decoding.py.
    for name, fmt in (('Apache', 'apache_error'), ('Linux', 'syslog_file')):
        for line in loghub_lines(name)[:50]:
            assert decoders.decode_log_line(line, default_year=2005).format == fmt


def test_make_decoder_formats():
    assert decoders.FORMATS[:4] == ('auto', 'json', 'combined', 'syslog')
    assert set(decoders.FORMATS[4:]) == set(line_formats.FORMAT_NAMES)
    auto = decoders.make_decoder('auto', default_service='shop', default_year=2003)
    assert auto(NGINX).service == 'shop'
    assert auto('<34>Oct 11 22:14:15 m su: x').event_time == ts(
        2003, 10, 11, 22, 14, 15)
    assert decoders.make_decoder('json')(ZAP).service == 'api'
    assert decoders.make_decoder('combined', default_service='x')(NGINX).service == 'x'
    with pytest.raises(DecodeError):
        decoders.make_decoder('combined')(ZAP)
    syslog = decoders.make_decoder('syslog', default_year=2003)
    assert syslog('<34>Oct 11 22:14:15 m su: x').event_time == ts(
        2003, 10, 11, 22, 14, 15)
    with pytest.raises(DecodeError):
        syslog(ZAP)


@pytest.mark.parametrize('kwargs', [
    {'fmt': 'xml'}, {'fmt': 'JSON'}, {'fmt': 'auto', 'default_year': '2026'},
    {'fmt': 'auto', 'default_year': 1900}, {'fmt': 'auto', 'default_service': ''},
])
def test_make_decoder_refuses_bad_options(kwargs):
    with pytest.raises(ValueError) as info:
        decoders.make_decoder(**kwargs)
    if kwargs['fmt'] not in decoders.FORMATS:
        assert all(name in str(info.value) for name in decoders.FORMATS)


@pytest.mark.parametrize('fmt', ('auto', 'json', 'combined', 'syslog'))
def test_make_decoder_is_picklable(fmt):
    decoder = decoders.make_decoder(fmt, default_service='shop', default_year=2003)
    line = {'auto': NGINX, 'json': ZAP, 'combined': NGINX,
            'syslog': '<34>Oct 11 22:14:15 m su: x'}[fmt]
    for restored in (pickle.loads(pickle.dumps(decoder)),
                     pickler.loads(pickler.dumps(decoder))):
        assert restored(line) == decoder(line)


def test_decoder_in_a_pipeline():
    lines = [ZAP, NGINX.encode('utf-8'), b'\xff\xfe not utf-8', 'garbage',
             '<34>Oct 11 22:14:15 mymachine su: x', '{"ts": 1, "service": 2}']
    with test_pipeline.TestPipeline() as p:
        decoded = (p | beam.Create(lines)
                   | Decode(decoders.make_decoder('auto', default_year=2003),
                            stage='decode.logs', job='logs'))
        assert_that(decoded.ok | 'Formats' >> beam.Map(lambda r: (r.format, r.service)),
                    equal_to([('json', 'api'), ('combined', 'web'),
                              ('syslog3164', 'su')]), label='ok')
        reasons = decoded.dead | 'Reasons' >> beam.Map(
            lambda d: d.reason.split(':')[0])
        assert_that(reasons,
                    equal_to(['not UTF-8', decoders.UNKNOWN_LINE,
                              'wrongly typed field service']), label='dead')
