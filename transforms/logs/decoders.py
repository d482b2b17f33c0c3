"""Log decoders: one line of text -> :class:`~transforms.logs.records.LogRecord`.

Each decoder is a plain function ``str -> LogRecord`` that raises
:class:`transforms.decode.DecodeError` for lines it refuses, as
:class:`transforms.decode.Decode` expects.  The generic parsing lives in
:mod:`transforms.formats`; this module only maps parsed fields to the record.

* :func:`decode_json_log` -- JSON lines from structured loggers;
* :func:`decode_combined_log` -- nginx/Apache access logs;
* :func:`decode_syslog_log` -- RFC 5424 and RFC 3164 syslog;
* :func:`decode_text_log` -- plain-text formats of :mod:`~transforms.logs.
  line_formats` (syslog files, log4j/logback/Python logging, Apache/nginx
  error logs, logcat, the sixteen Loghub systems);
* :func:`decode_log_line` -- picks one of the above per line;
* :class:`PatternDecoder` -- a user's regular expression (``--log_pattern``).

JSON lines include systemd's journal export (``journalctl -o json``) and the
Docker/Kubernetes JSON log driver's wrapper ``{"log": ..., "stream": ...,
"time": ...}``, whose ``log`` line is decoded further (as is the CRI form
``TIME stdout F message`` of containerd's files).

Use :func:`make_decoder` to get a picklable decoder for a ``--format`` option.
"""
import datetime
import functools
import math
import re

import orjson
from apache_beam.utils.timestamp import Timestamp

from transforms import formats
from transforms.decode import DecodeError
from transforms.logs import line_formats
from transforms.logs.records import LogRecord

FORMATS = ('auto', 'json', 'combined', 'syslog') + line_formats.FORMAT_NAMES
DEFAULT_TIMEZONE = 'UTC'

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
    # Single letters (Android logcat, glog): V D I W E F A(ssert).
    'V': 'TRACE', 'VERBOSE': 'TRACE', 'D': 'DEBUG', 'I': 'INFO', 'W': 'WARN',
    'E': 'ERROR', 'F': 'FATAL', 'A': 'FATAL',
    # java.util.logging; Blue Gene/L RAS severities.
    'SEVERE': 'ERROR', 'FINE': 'DEBUG', 'FINER': 'TRACE', 'FINEST': 'TRACE',
    'CONFIG': 'INFO', 'FAILURE': 'ERROR', 'DBG': 'DEBUG', 'EROR': 'ERROR',
    'WRN': 'WARN', 'INF': 'INFO', 'CRT': 'FATAL',
    # Apache httpd: trace1..trace8 are read as TRACE by the line format.
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


def _record_of_json(obj: dict) -> LogRecord:
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


# systemd's journal export: journalctl -o json.
JOURNAL_TIME_KEY = '__REALTIME_TIMESTAMP'
JOURNAL_SERVICE_KEYS = ('SYSLOG_IDENTIFIER', '_SYSTEMD_UNIT', '_COMM')


def _journal_text(obj, key) -> str:
    value = obj.get(key)
    if isinstance(value, list) and all(
            isinstance(b, int) and 0 <= b < 256 for b in value):
        # The journal writes a message that is not valid UTF-8 as its bytes.
        return bytes(value).decode('utf-8', 'replace')
    if value is None:
        return ''
    if not isinstance(value, str):
        raise _wrong_type(key, value)
    return value


def _journal_record(obj: dict) -> LogRecord:
    value = obj[JOURNAL_TIME_KEY]
    if not isinstance(value, str) or not value.isascii() or not value.isdigit():
        raise _wrong_type(JOURNAL_TIME_KEY, value)
    micros = int(value)
    if micros > formats._MAX_EPOCH_MICROS:  # pylint: disable=protected-access
        raise DecodeError(f'timestamp after 9999: {formats.short_repr(value)}')
    service = ''
    for key in JOURNAL_SERVICE_KEYS:
        service = _journal_text(obj, key).strip()
        if service:
            break
    priority = obj.get('PRIORITY')
    level = ''
    if priority is not None:
        if not (isinstance(priority, str) and priority in '01234567'
                and len(priority) == 1):
            raise _wrong_type('PRIORITY', priority)
        level = SYSLOG_LEVELS[int(priority)]
    return LogRecord(
        event_time=Timestamp(micros=micros), service=service or 'journal',
        level=level, status=None, latency_ms=None,
        host=_journal_text(obj, '_HOSTNAME'),
        message=_journal_text(obj, 'MESSAGE'), format='journal')


def _is_docker_wrapper(obj: dict) -> bool:
    """The Docker/Kubernetes json-file log driver: {"log", "stream", "time"}."""
    return isinstance(obj.get('log'), str) and 'stream' in obj and \
        'time' in obj and not any(k in obj for k in SERVICE_KEYS)


def _wrapped(time, line: str, inner, default_service: str, fmt: str):
    """A line a container runtime wrapped: decoded by ``inner`` when it can
    be, else kept as the message at the runtime's time."""
    line = formats.strip_eol(line)
    if inner is not None and line.strip():
        try:
            record = inner(line)
        except DecodeError:
            pass
        else:
            return record._replace(format=f'{fmt}/{record.format}')
    return LogRecord(event_time=time, service=default_service,
                     level='', status=None,
                     latency_ms=None, host='', message=line,
                     format=fmt)


def decode_json_log(text: str, inner=None,
                    default_service: str = 'web') -> LogRecord:
    """A JSON log line -> LogRecord (format 'json').

    Time, service, level, HTTP status, latency, host and message are taken from
    the first present key of TIME_KEYS, SERVICE_KEYS, ... (see above).  A
    missing time or service, a time without zone, a status outside 100..599, a
    negative or non-finite latency, or a wrongly typed field is refused.

    A journal export record (``__REALTIME_TIMESTAMP``) is read as such (format
    'journal': service SYSLOG_IDENTIFIER, _SYSTEMD_UNIT or _COMM, level from
    PRIORITY).  A Docker/Kubernetes wrapper's ``log`` line is decoded with
    ``inner`` (format 'docker/<inner format>'); when it cannot be, it is the
    message of a record at the wrapper's time in ``default_service``
    (format 'docker').
    """
    obj = formats.parse_json_object(text)
    if JOURNAL_TIME_KEY in obj:
        return _journal_record(obj)
    if _is_docker_wrapper(obj):
        try:
            time = formats.parse_time(obj['time'])
        except DecodeError as e:
            raise DecodeError(f'field time: {e}') from None
        return _wrapped(time, obj['log'], inner,
                        default_service, 'docker')
    return _record_of_json(obj)


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


def _in_zone(time: Timestamp, timezone: str) -> Timestamp:
    """A time read as UTC, re-read as the same wall-clock time in a zone."""
    if timezone == DEFAULT_TIMEZONE:
        return time
    wall = datetime.datetime(1970, 1, 1) + datetime.timedelta(
        microseconds=time.micros)
    return formats.parse_time(wall.replace(
        tzinfo=line_formats.zone(timezone)))


def decode_syslog_log(text: str, default_year=None,
                      require_pri: bool = True,
                      timezone: str = DEFAULT_TIMEZONE) -> LogRecord:
    """A syslog line -> LogRecord (format 'syslog5424' or 'syslog3164').

    The service is the app name ('syslog' when absent); the level comes from the
    severity (0-2 FATAL, 3 ERROR, 4 WARN, 5-6 INFO, 7 DEBUG).  RFC 3164 lines
    carry no year and no zone: ``default_year`` is used, or the current UTC
    year when None, and the time is read in ``timezone``.
    With ``require_pri=False``, lines without ``<PRI>`` are read as RFC 3164
    with PRI 13 (level INFO); see :func:`transforms.formats.parse_syslog`.
    """
    fields = formats.parse_syslog(text, default_year=default_year,
                                  require_pri=require_pri)
    time = fields['time']
    if fields['rfc'] == '3164':
        time = _in_zone(time, timezone)
    return LogRecord(
        event_time=time,
        service=fields['app'] or 'syslog',
        level=SYSLOG_LEVELS[fields['severity']],
        status=None,
        latency_ms=None,
        host=fields['host'] or '',
        message=fields['message'],
        format='syslog' + fields['rfc'])


SYSLOG_FILE_FORMATS = ('rsyslog_iso', 'syslog_file')


def decode_syslog_any(text: str, default_year=None,
                      timezone: str = DEFAULT_TIMEZONE) -> LogRecord:
    """Syslog as sent (``<PRI>`` first: :func:`decode_syslog_log`) or as
    written to files without ``<PRI>`` (RFC 3164 time or rsyslog's ISO time,
    then ``HOST TAG[PID]: MSG``; level '', since the file keeps no severity)."""
    if isinstance(text, str) and text.lstrip()[:1] == '<':
        return decode_syslog_log(text, default_year=default_year,
                                 timezone=timezone)
    line = formats.strip_eol(text) if isinstance(text, str) else text
    for name in SYSLOG_FILE_FORMATS:
        if isinstance(line, str):
            m = line_formats.BY_NAME[name].regex.fullmatch(line)
            if m is not None:
                return _text_record(name, m, 'syslog', default_year, timezone)
    return decode_syslog_log(text, default_year=default_year,
                             timezone=timezone)


def _text_record(fmt_name: str, m, default_service: str, default_year,
                 timezone: str) -> LogRecord:
    groups = m.groupdict()
    level = groups.get('level')
    service = (groups.get('service') or '').strip()
    return LogRecord(
        event_time=line_formats.event_time(groups, default_year, timezone),
        service=service or default_service,
        level=normalise_level(level) if level else '',
        status=None, latency_ms=None,
        host=groups.get('host') or '',
        message=groups.get('message') or '',
        format=fmt_name)


def decode_text_log(text: str, default_service: str = 'web',
                    default_year=None, timezone: str = DEFAULT_TIMEZONE,
                    only: str = None) -> LogRecord:
    """A plain-text log line -> LogRecord, in the first format of
    :data:`transforms.logs.line_formats.FORMATS` (or only ``only``) that reads
    the whole line; the record's format is that format's name.  Lines whose
    format names no service get ``default_service``; formats without a year
    take ``default_year`` (None: the current UTC year), without a zone
    ``timezone``."""
    line = formats.strip_eol(text)
    if only is None:
        fmt, m = line_formats.match(line)
    else:
        fmt = line_formats.BY_NAME[only]
        m = fmt.regex.fullmatch(line)
    if m is None:
        raise DecodeError(f'not a {only} log line' if only else
                          'not a known log line format')
    return _text_record(fmt.name, m, default_service, default_year, timezone)


UNKNOWN_LINE = ('not a known log line format (JSON, syslog, access or error '
                'log, log4j/logback/Python logging, logcat, Loghub formats; '
                'see --log_pattern)')
# containerd/CRI-O log files (Kubernetes nodes): TIME STREAM P|F MESSAGE.
_CRI_RE = re.compile(
    r'(?P<time>\d{4}-\d{2}-\d{2}T\S+) (?P<stream>stdout|stderr) [PF] '
    r'(?P<message>.*)', re.DOTALL)


def decode_log_line(text: str, default_service: str = 'web',
                    default_year=None,
                    timezone: str = DEFAULT_TIMEZONE) -> LogRecord:
    """Any supported log line -> LogRecord, the format found per line: '{'
    JSON (journal export and container wrappers included), '<' syslog, then
    an access log, a CRI container line, and the plain-text formats of
    :mod:`~transforms.logs.line_formats` in their order."""
    if not isinstance(text, str):
        raise DecodeError(f'log line is not text: {type(text).__name__}')
    stripped = text.lstrip()
    if not stripped:
        raise DecodeError('empty line')
    first = stripped[0]
    inner = functools.partial(decode_log_line, default_service=default_service,
                              default_year=default_year, timezone=timezone)
    if first == '{':
        return decode_json_log(text, inner=inner,
                               default_service=default_service)
    if first == '<':
        return decode_syslog_log(text, default_year=default_year,
                                 timezone=timezone)
    try:
        return decode_combined_log(text, service=default_service)
    except DecodeError as access_error:
        line = formats.strip_eol(text)
        cri = _CRI_RE.fullmatch(line)
        if cri is not None:
            try:
                time = formats.parse_time(cri['time'])
            except DecodeError:
                pass
            else:
                return _wrapped(time, cri['message'], inner,
                                default_service, 'cri')
        fmt, m = line_formats.match(line)
        if m is None:
            raise DecodeError(UNKNOWN_LINE) from access_error
        return _text_record(fmt.name, m, default_service, default_year,
                            timezone)


PATTERN_GROUPS = ('timestamp', 'level', 'service', 'host', 'message')


def check_pattern(pattern: str) -> 're.Pattern':
    """``pattern`` compiled, if it is a regular expression with a
    ``timestamp`` group and no named group other than PATTERN_GROUPS;
    ValueError otherwise."""
    try:
        regex = re.compile(pattern, re.DOTALL)
    except re.error as e:
        raise ValueError(f'not a regular expression: {e}') from None
    unknown = sorted(set(regex.groupindex) - set(PATTERN_GROUPS))
    if unknown:
        raise ValueError(f'unknown named group {unknown[0]!r}; the groups are '
                         f'{", ".join(PATTERN_GROUPS)}')
    if 'timestamp' not in regex.groupindex:
        raise ValueError('no (?P<timestamp>...) group: every record needs '
                         'its event time')
    return regex


def check_time_format(time_format: str) -> str:
    """``time_format`` if strptime accepts it; ValueError otherwise."""
    if '%' not in time_format:
        raise ValueError(f'{time_format!r} has no strptime directive (%Y, %d...)')
    try:
        datetime.datetime.now().strftime(time_format)
    except ValueError as e:
        raise ValueError(f'{time_format!r}: {e}') from None
    return time_format


class PatternDecoder:
    """Lines read with a user's regular expression (``--log_pattern``).

    Named groups: ``timestamp`` (required), ``level``, ``service``, ``host``,
    ``message``.  The timestamp is read with ``time_format`` (strptime) when
    given, else as ISO 8601 or epoch seconds/milliseconds; a time without zone
    is read in ``timezone``, one without year in ``default_year``.  A line the
    pattern does not match in full is refused.  Records have format 'pattern'.
    """

    def __init__(self, pattern: str, time_format=None,
                 default_service: str = 'web', default_year=None,
                 timezone: str = DEFAULT_TIMEZONE):
        check_pattern(pattern)
        if time_format is not None:
            check_time_format(time_format)
        line_formats.check_timezone(timezone)
        self.pattern = pattern
        self.time_format = time_format
        self.default_service = default_service
        self.default_year = default_year
        self.timezone = timezone
        self._regex = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state['_regex'] = None
        return state

    def _time(self, value: str) -> Timestamp:
        zone = line_formats.zone(self.timezone)
        if self.time_format is None:
            try:
                return formats.parse_time(value)
            except DecodeError as e:
                if 'without time zone' not in str(e):
                    raise
            try:
                moment = datetime.datetime.fromisoformat(value.strip())
            except ValueError:
                raise DecodeError(
                    f'unrecognised timestamp: {formats.short_repr(value)}'
                ) from None
            return formats.parse_time(moment.replace(tzinfo=zone))
        try:
            moment = datetime.datetime.strptime(value, self.time_format)
        except ValueError:
            raise DecodeError(f'timestamp {formats.short_repr(value)} does not '
                              f'match --time_format {self.time_format}') from None
        if '%Y' not in self.time_format and '%y' not in self.time_format:
            year = self.default_year or datetime.datetime.now(
                datetime.timezone.utc).year
            try:
                moment = moment.replace(year=year)
            except ValueError as e:
                raise DecodeError(f'invalid date: {e}') from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=zone)
        return formats.parse_time(moment)

    def __call__(self, text) -> LogRecord:
        if not isinstance(text, str):
            raise DecodeError(f'log line is not text: {type(text).__name__}')
        if self._regex is None:
            self._regex = re.compile(self.pattern, re.DOTALL)
        m = self._regex.fullmatch(formats.strip_eol(text))
        if m is None:
            raise DecodeError('line does not match --log_pattern')
        groups = m.groupdict()
        if not groups.get('timestamp'):
            raise DecodeError('missing event time (empty timestamp group)')
        level = groups.get('level')
        service = (groups.get('service') or '').strip()
        return LogRecord(
            event_time=self._time(groups['timestamp']),
            service=service or self.default_service,
            level=normalise_level(level) if level else '',
            status=None, latency_ms=None, host=groups.get('host') or '',
            message=groups.get('message') or '', format='pattern')


def make_decoder(fmt: str, default_service: str = 'web', default_year=None,
                 timezone: str = DEFAULT_TIMEZONE, pattern=None,
                 time_format=None):
    """A picklable decoder ``str -> LogRecord`` for one of FORMATS, or for
    ``pattern`` (a ``--log_pattern``, which then replaces ``fmt``).

    ``default_service`` names lines whose format names no service (access-log
    lines without a virtual host, error logs); ``default_year`` dates lines
    without a year (None: the current UTC year, read when each line is
    decoded); ``timezone`` (an IANA name) places times written without zone.
    """
    if not isinstance(default_service, str) or not default_service.strip():
        raise ValueError('default_service must be a non-empty string')
    if default_year is not None and (
            isinstance(default_year, bool) or not isinstance(default_year, int)
            or not 1970 <= default_year <= 9999):
        raise ValueError(
            f'default_year must be None or a year 1970..9999, got {default_year!r}')
    line_formats.check_timezone(timezone)
    if pattern is not None:
        return PatternDecoder(pattern, time_format, default_service,
                              default_year, timezone)
    if fmt == 'auto':
        return functools.partial(decode_log_line, default_service=default_service,
                                 default_year=default_year, timezone=timezone)
    if fmt == 'json':
        return functools.partial(decode_json_log,
                                 default_service=default_service)
    if fmt == 'combined':
        return functools.partial(decode_combined_log, service=default_service)
    if fmt == 'syslog':
        return functools.partial(decode_syslog_any, default_year=default_year,
                                 timezone=timezone)
    if fmt in line_formats.BY_NAME:
        return functools.partial(decode_text_log, default_service=default_service,
                                 default_year=default_year, timezone=timezone,
                                 only=fmt)
    raise ValueError(
        f'unknown log format {fmt!r}; accepted: {", ".join(FORMATS)}')
