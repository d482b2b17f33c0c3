"""Log decoders: one line of text -> :class:`~transforms.logs.records.LogRecord`.

Each decoder is a plain function ``str -> LogRecord`` that raises
:class:`transforms.decode.DecodeError` for lines it refuses, as
:class:`transforms.decode.Decode` expects.  The generic parsing lives in
:mod:`transforms.formats`; this module only maps parsed fields to the record.

* :func:`decode_json_log` -- JSON lines from structured loggers;
* :func:`decode_combined_log` -- nginx/Apache access logs;
* :func:`decode_syslog_log` -- RFC 5424 and RFC 3164 syslog;
* :func:`decode_log_line` -- picks one of the above from the first character.

Use :func:`make_decoder` to get a picklable decoder for a ``--format`` option.
"""
import functools
import math

import orjson

from transforms import formats
from transforms.decode import DecodeError
from transforms.logs.records import LogRecord

FORMATS = ('auto', 'json', 'combined', 'syslog')

# JSON keys, in order of preference.  A dotted key is looked up flat first
# ({"log.level": ...}) and then nested ({"log": {"level": ...}}).
TIME_KEYS = ('timestamp', '@timestamp', 'time', 'ts', 'event_time')
SERVICE_KEYS = ('service', 'service.name', 'app', 'application')
LEVEL_KEYS = ('level', 'severity', 'log.level', 'lvl')
STATUS_KEYS = ('status', 'status_code', 'http.status_code', 'http_status',
               'http.response.status_code')
LATENCY_MS_KEYS = ('latency_ms', 'duration_ms', 'response_time_ms', 'elapsed_ms')
LATENCY_S_KEYS = ('latency_s', 'duration_s', 'request_time')
HOST_KEYS = ('host', 'hostname', 'host.name')
MESSAGE_KEYS = ('message', 'msg', 'log')
# structlog writes its message as "event"; taken last, and only when it is text.
EVENT_MESSAGE_KEY = 'event'

# Level names and their synonyms -> one of records.LEVELS.
_LEVEL_NAMES = {
    'TRACE': 'TRACE',
    'DEBUG': 'DEBUG',
    'INFO': 'INFO', 'INFORMATION': 'INFO', 'INFORMATIONAL': 'INFO',
    'NOTICE': 'INFO',
    'WARN': 'WARN', 'WARNING': 'WARN',
    'ERROR': 'ERROR', 'ERR': 'ERROR',
    'FATAL': 'FATAL', 'CRITICAL': 'FATAL', 'CRIT': 'FATAL', 'EMERG': 'FATAL',
    'EMERGENCY': 'FATAL', 'ALERT': 'FATAL', 'PANIC': 'FATAL',
}
# Numeric levels as written by pino and bunyan (the only numeric levels taken).
_NUMERIC_LEVELS = {10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR',
                   60: 'FATAL'}
# Syslog severity (0..7) -> level.
SYSLOG_LEVELS = ('FATAL', 'FATAL', 'FATAL', 'ERROR', 'WARN', 'INFO', 'INFO', 'DEBUG')

_MISSING = object()


def _lookup(obj: dict, key: str):
    """``obj[key]``, or for a dotted key the nested value; _MISSING if absent/null."""
    value = obj.get(key, _MISSING)
    if value is _MISSING and '.' in key:
        value = obj
        for part in key.split('.'):
            if not isinstance(value, dict):
                return _MISSING
            value = value.get(part, _MISSING)
            if value is _MISSING:
                return _MISSING
    return _MISSING if value is None else value


def _first(obj: dict, keys, skip_dicts: bool = False):
    """(key, value) of the first present, non-null key; (None, _MISSING) if none.

    With ``skip_dicts`` an object value is passed over, so that
    ``{"service": {"name": ...}}`` falls through to ``service.name``.
    """
    for key in keys:
        value = _lookup(obj, key)
        if value is _MISSING or (skip_dicts and isinstance(value, dict)):
            continue
        return key, value
    return None, _MISSING


def _wrong_type(key: str, value) -> DecodeError:
    return DecodeError(f'wrongly typed field {key}: {formats.short_repr(value)}')


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def normalise_level(value, key: str = 'level') -> str:
    """A level name or synonym -> one of LEVELS; unknown names -> ''.

    Numbers are taken only as pino/bunyan levels (10, 20, ... 60); any other
    non-string raises DecodeError.
    """
    if isinstance(value, str):
        return _LEVEL_NAMES.get(value.strip().upper(), '')
    if _is_number(value) and value in _NUMERIC_LEVELS:
        return _NUMERIC_LEVELS[value]
    raise _wrong_type(key, value)


def _json_time(obj: dict):
    key, value = _first(obj, TIME_KEYS)
    if value is _MISSING:
        raise DecodeError('missing event time')
    try:
        return formats.parse_time(value)
    except DecodeError as e:
        raise DecodeError(f'field {key}: {e}') from None


def _json_service(obj: dict) -> str:
    for key in SERVICE_KEYS:
        value = _lookup(obj, key)
        if value is _MISSING or isinstance(value, dict):
            continue
        if not isinstance(value, str):
            raise _wrong_type(key, value)
        if value.strip():
            return value.strip()
    raise DecodeError('missing service')


def _json_status(obj: dict):
    key, value = _first(obj, STATUS_KEYS)
    if value is _MISSING:
        return None
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        status = int(value.strip())
    elif isinstance(value, int) and not isinstance(value, bool):
        status = value
    elif isinstance(value, float) and math.isfinite(value) and value.is_integer():
        status = int(value)
    else:
        raise _wrong_type(key, value)
    return formats.check_status(status)


def _number(key: str, value) -> float:
    """A JSON number or numeric text as a float; DecodeError otherwise."""
    if _is_number(value):
        try:
            return float(value)
        except OverflowError:
            raise DecodeError(
                f'field {key} not finite: {formats.short_repr(value)}') from None
    if isinstance(value, str) and '_' not in value:
        try:
            return float(value)
        except ValueError:
            pass
    raise _wrong_type(key, value)


def _json_latency(obj: dict):
    key, value = _first(obj, LATENCY_MS_KEYS)
    scale = 1.0
    if value is _MISSING:
        key, value = _first(obj, LATENCY_S_KEYS)
        scale = 1000.0
    if value is _MISSING:
        return None
    latency = _number(key, value) * scale
    if not math.isfinite(latency):
        raise DecodeError(f'field {key} not finite: {formats.short_repr(value)}')
    if latency < 0:
        raise DecodeError(
            f'negative latency in field {key}: {formats.short_repr(value)}')
    return latency


def _json_host(obj: dict) -> str:
    key, value = _first(obj, HOST_KEYS, skip_dicts=True)
    if value is _MISSING:
        return ''
    if not isinstance(value, str):
        raise _wrong_type(key, value)
    return value


def _json_message(obj: dict) -> str:
    _, value = _first(obj, MESSAGE_KEYS)
    if value is _MISSING:
        event = obj.get(EVENT_MESSAGE_KEY)
        return event if isinstance(event, str) else ''
    if isinstance(value, str):
        return value
    try:
        return orjson.dumps(value).decode('utf-8')
    except (TypeError, ValueError):
        return repr(value)


def decode_json_log(text: str) -> LogRecord:
    """A JSON log line -> LogRecord (format 'json').

    Time, service, level, HTTP status, latency, host and message are taken from
    the first present key of TIME_KEYS, SERVICE_KEYS, ... (see above).  A
    missing time or service, a time without zone, a status outside 100..599, a
    negative or non-finite latency, or a wrongly typed field is refused.
    """
    obj = formats.parse_json_object(text)
    level_key, level = _first(obj, LEVEL_KEYS)
    return LogRecord(
        event_time=_json_time(obj),
        service=_json_service(obj),
        level='' if level is _MISSING else normalise_level(level, level_key),
        status=_json_status(obj),
        latency_ms=_json_latency(obj),
        host=_json_host(obj),
        message=_json_message(obj),
        format='json')


def _strip_port(vhost: str) -> str:
    """'www.example.com:80' -> 'www.example.com'; '[::1]:443' -> '[::1]'."""
    name, sep, port = vhost.rpartition(':')
    if sep and port.isascii() and port.isdigit() and name and (
            name.startswith('[') or ':' not in name):
        return name
    return vhost


def decode_combined_log(text: str, service: str = 'web') -> LogRecord:
    """An nginx/Apache access log line -> LogRecord (format 'combined').

    The service is the virtual host (without port) when the line has one, else
    ``service``; the level is ''; the latency is nginx's ``$request_time`` in ms
    when logged; the message is the request line and status,
    e.g. ``GET /index.html HTTP/1.1 -> 200``.  The client address is not kept.
    """
    fields = formats.parse_combined(text)
    vhost = fields['vhost']
    host = _strip_port(vhost) if vhost else ''
    if host == '-':
        host = ''
    request_time = fields['request_time_s']
    return LogRecord(
        event_time=fields['time'],
        service=host or service,
        level='',
        status=fields['status'],
        latency_ms=None if request_time is None else request_time * 1000.0,
        host=host,
        message=f"{fields['request']} -> {fields['status']}",
        format='combined')


def decode_syslog_log(text: str, default_year=None,
                      require_pri: bool = True) -> LogRecord:
    """A syslog line -> LogRecord (format 'syslog5424' or 'syslog3164').

    The service is the app name ('syslog' when absent); the level comes from the
    severity (0-2 FATAL, 3 ERROR, 4 WARN, 5-6 INFO, 7 DEBUG).  RFC 3164 lines
    carry no year: ``default_year`` is used, or the current UTC year when None.
    With ``require_pri=False``, lines without ``<PRI>`` are read as RFC 3164
    with PRI 13 (level INFO); see :func:`transforms.formats.parse_syslog`.
    """
    fields = formats.parse_syslog(text, default_year=default_year,
                                  require_pri=require_pri)
    return LogRecord(
        event_time=fields['time'],
        service=fields['app'] or 'syslog',
        level=SYSLOG_LEVELS[fields['severity']],
        status=None,
        latency_ms=None,
        host=fields['host'] or '',
        message=fields['message'],
        format='syslog' + fields['rfc'])


def decode_log_line(text: str, default_service: str = 'web',
                    default_year=None) -> LogRecord:
    """Any supported log line -> LogRecord, picking the format from its first
    non-space character: '{' JSON, '<' syslog, anything else an access log."""
    if not isinstance(text, str):
        raise DecodeError(f'log line is not text: {type(text).__name__}')
    stripped = text.lstrip()
    if not stripped:
        raise DecodeError('empty line')
    first = stripped[0]
    if first == '{':
        return decode_json_log(text)
    if first == '<':
        return decode_syslog_log(text, default_year=default_year)
    return decode_combined_log(text, service=default_service)


def make_decoder(fmt: str, default_service: str = 'web', default_year=None):
    """A picklable decoder ``str -> LogRecord`` for one of FORMATS.

    ``default_service`` names access-log lines without a virtual host;
    ``default_year`` dates RFC 3164 syslog lines (None: the current UTC year,
    read when each line is decoded).
    """
    if not isinstance(default_service, str) or not default_service.strip():
        raise ValueError('default_service must be a non-empty string')
    if default_year is not None and (
            isinstance(default_year, bool) or not isinstance(default_year, int)
            or not 1970 <= default_year <= 9999):
        raise ValueError(
            f'default_year must be None or a year 1970..9999, got {default_year!r}')
    if fmt == 'auto':
        return functools.partial(decode_log_line, default_service=default_service,
                                 default_year=default_year)
    if fmt == 'json':
        return functools.partial(decode_json_log)
    if fmt == 'combined':
        return functools.partial(decode_combined_log, service=default_service)
    if fmt == 'syslog':
        return functools.partial(decode_syslog_log, default_year=default_year)
    raise ValueError(
        f'unknown log format {fmt!r}; accepted: {", ".join(FORMATS)}')
