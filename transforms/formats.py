"""Generic parsers for log line formats: JSON lines, nginx/Apache access logs, syslog.

Every parser is a pure function ``str -> dict`` that returns the parsed fields or
raises :class:`transforms.decode.DecodeError` with a one-line reason.  Bad input
never raises anything else: hostile lines (truncated, binary junk, huge numbers,
deep nesting, control characters) end up as dead letters with a reason, not as
crashes.  What a domain makes of the fields lives in ``transforms/<domain>/``.

Times are :class:`~apache_beam.utils.timestamp.Timestamp` values with microsecond
precision (finer fractions are truncated).
"""
import csv
import datetime
import decimal
import math
import re

import orjson
from apache_beam.utils.timestamp import Timestamp

from transforms.decode import DecodeError, FilteredRecord

# Latest accepted instant, 9999-12-31T23:59:59.999999Z, in epoch seconds.
_MAX_EPOCH_SECONDS = 253402300799
_MAX_EPOCH_MICROS = (_MAX_EPOCH_SECONDS + 1) * 1_000_000 - 1
# Epoch numbers above this are milliseconds (1e11 s would be the year 5138).
_MS_THRESHOLD = 100_000_000_000
_EPOCH_ORDINAL = datetime.date(1970, 1, 1).toordinal()

# How much of an offending value a reason shows.
_SHOW_CHARS = 80

_MONTHS = {name: number for number, name in enumerate(
    ('Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun',
     'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'), start=1)}


def short_repr(value) -> str:
    """A short, one-line rendering of an offending value for a reason text."""
    text = repr(value)
    if len(text) > _SHOW_CHARS:
        text = text[:_SHOW_CHARS - 3] + '...'
    return text


def _one_line(text: str) -> str:
    return ' '.join(str(text).split())


def strip_eol(text: str) -> str:
    """``text`` without one trailing line terminator ("\\r\\n", "\\n" or "\\r")."""
    if text.endswith('\r\n'):
        return text[:-2]
    if text.endswith('\n') or text.endswith('\r'):
        return text[:-1]
    return text


def _require_str(text, what: str) -> str:
    if not isinstance(text, str):
        raise DecodeError(f'{what} input is not text: {type(text).__name__}')
    return text


# --------------------------------------------------------------------------- time

_ISO_RE = re.compile(
    r'(?P<year>\d{4})-(?P<month>\d{2})-(?P<day>\d{2})[Tt ]'
    r'(?P<hour>\d{2}):(?P<minute>\d{2})(?::(?P<second>\d{2})(?:[.,](?P<frac>\d+))?)?'
    r'(?:(?P<utc>[Zz])|(?P<sign>[+-])(?P<off_h>\d{2}):?(?P<off_m>\d{2}))?', re.ASCII)
_NUMBER_RE = re.compile(r'[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?', re.ASCII)
# Long enough for any sane time text; a longer one is refused unread.
_MAX_TIME_CHARS = 64


def _micros_from_parts(year, month, day, hour, minute, second, micros,
                       offset_seconds) -> int:
    """Epoch microseconds of a civil time at a UTC offset; DecodeError if invalid."""
    leap = 0
    if second == 60:          # a leap second: 23:59:60 is read as the next instant
        second, leap = 59, 1
    try:
        date = datetime.date(year, month, day)
        datetime.time(hour, minute, second)
    except ValueError as e:
        raise DecodeError(f'invalid date or time: {_one_line(e)}') from None
    seconds = ((date.toordinal() - _EPOCH_ORDINAL) * 86400
               + hour * 3600 + minute * 60 + second + leap - offset_seconds)
    return seconds * 1_000_000 + micros


def _timestamp(total_micros: int, value) -> Timestamp:
    if total_micros < 0:
        raise DecodeError(f'timestamp before 1970: {short_repr(value)}')
    if total_micros > _MAX_EPOCH_MICROS:
        raise DecodeError(f'timestamp after 9999: {short_repr(value)}')
    return Timestamp(micros=total_micros)


def _epoch_number(number, value) -> Timestamp:
    """Epoch seconds, or milliseconds above 1e11, as an exact int/float/Decimal."""
    if isinstance(number, float) and not math.isfinite(number):
        raise DecodeError(f'timestamp not finite: {short_repr(value)}')
    if isinstance(number, decimal.Decimal) and not number.is_finite():
        raise DecodeError(f'timestamp not finite: {short_repr(value)}')
    if number < 0:
        raise DecodeError(f'negative timestamp: {short_repr(value)}')
    if number > _MS_THRESHOLD:
        if number > (_MAX_EPOCH_SECONDS + 1) * 1000:
            raise DecodeError(f'timestamp after 9999: {short_repr(value)}')
        scale = 1000
    else:
        scale = 1_000_000
    if isinstance(number, int):
        return _timestamp(number * scale, value)
    # Truncate to microseconds; Decimal keeps numeric strings exact.
    if isinstance(number, float):
        number = decimal.Decimal(repr(number))
    return _timestamp(int(number * scale), value)


def _parse_iso(text: str, value) -> Timestamp:
    m = _ISO_RE.fullmatch(text)
    if m is None:
        raise DecodeError(f'unrecognised timestamp: {short_repr(value)}')
    if not m['utc'] and not m['sign']:
        raise DecodeError(f'timestamp without time zone: {short_repr(value)}')
    offset = 0
    if m['sign']:
        off_h, off_m = int(m['off_h']), int(m['off_m'])
        if off_h > 23 or off_m > 59:
            raise DecodeError(f'invalid time zone offset: {short_repr(value)}')
        offset = (off_h * 3600 + off_m * 60) * (1 if m['sign'] == '+' else -1)
    frac = m['frac'] or ''
    micros = int((frac + '000000')[:6])
    total = _micros_from_parts(
        int(m['year']), int(m['month']), int(m['day']), int(m['hour']),
        int(m['minute']), int(m['second'] or 0), micros, offset)
    return _timestamp(total, value)


def parse_time(value) -> Timestamp:
    """An event time from a payload value, as a ``Timestamp``.

    Accepts RFC 3339 / ISO 8601 text with a zone (``Z`` or ``+02:00``/``+0200``;
    fractions of a second are truncated to microseconds), epoch seconds as a
    number or numeric text, and epoch milliseconds (any number above 1e11).
    Refuses times without a zone, bools, NaN, infinities, negative numbers,
    times before 1970 or after 9999, and any other type.
    """
    if isinstance(value, Timestamp):
        return value
    if isinstance(value, bool):
        raise DecodeError(f'wrongly typed timestamp: {short_repr(value)}')
    if isinstance(value, (int, float)):
        return _epoch_number(value, value)
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise DecodeError(f'timestamp without time zone: {short_repr(value)}')
        delta = value - datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
        return _timestamp((delta.days * 86400 + delta.seconds) * 1_000_000
                          + delta.microseconds, value)
    if not isinstance(value, str):
        raise DecodeError(f'wrongly typed timestamp: {short_repr(value)}')
    text = value.strip()
    if not text:
        raise DecodeError('empty timestamp')
    if len(text) > _MAX_TIME_CHARS:
        raise DecodeError(f'unrecognised timestamp: {short_repr(value)}')
    if _NUMBER_RE.fullmatch(text):
        try:
            number = decimal.Decimal(text)
        except decimal.DecimalException:
            raise DecodeError(f'unrecognised timestamp: {short_repr(value)}') from None
        return _epoch_number(number, value)
    return _parse_iso(text, value)


# ------------------------------------------------- record fields (trades, sensors)
# The rules the record-stream jobs share: ``event_time`` is RFC 3339 text with
# a zone or epoch *milliseconds* (a number, or numeric text, of at least
# EPOCH_MS_THRESHOLD; smaller numbers would be seconds or early 1973 and are
# refused as ambiguous); a CSV line is one row of fields.

EPOCH_MS_THRESHOLD = _MS_THRESHOLD
# First millisecond after 9999-12-31T23:59:59.999Z.
_MS_LIMIT = (_MAX_EPOCH_SECONDS + 1) * 1000
# Decimal text a CSV number (or numeric event_time text) must match.
DECIMAL_TEXT_RE = _NUMBER_RE
BOM = '\ufeff'
HEADER_REASON = 'csv header line'


class HeaderLine(FilteredRecord):
    """A CSV header line.  Not a broken record: counted under
    ``filtered.csv_header`` instead of going to the dead letters."""
    name = 'csv_header'

    def __init__(self, reason: str = HEADER_REASON):
        super().__init__(reason)


def wrong_type(field: str, value) -> DecodeError:
    """The error for a field of the wrong JSON type (or unreadable text)."""
    return DecodeError(f'wrongly typed field {field}: {short_repr(value)}')


def is_number(value) -> bool:
    """A JSON number: int or float, not bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def epoch_ms_time(number, value) -> Timestamp:
    """Epoch milliseconds (int, float or Decimal) -> Timestamp, truncated to
    microseconds.  Numbers below EPOCH_MS_THRESHOLD are refused as ambiguous;
    ``value`` is what a reason shows."""
    if isinstance(number, float) and not math.isfinite(number):
        raise DecodeError(
            f'event_time: timestamp not finite: {short_repr(value)}')
    if isinstance(number, decimal.Decimal) and not number.is_finite():
        raise DecodeError(
            f'event_time: timestamp not finite: {short_repr(value)}')
    if number < 0:
        raise DecodeError(
            f'event_time: negative timestamp: {short_repr(value)}')
    if number < EPOCH_MS_THRESHOLD:
        raise DecodeError(
            'event_time: epoch seconds are ambiguous, give milliseconds')
    if number >= _MS_LIMIT:
        raise DecodeError(
            f'event_time: timestamp after 9999: {short_repr(value)}')
    if isinstance(number, int):
        return Timestamp(micros=number * 1000)
    if isinstance(number, float):
        number = decimal.Decimal(repr(number))
    return Timestamp(micros=int(number * 1000))


def time_from_text(value: str) -> Timestamp:
    """RFC 3339 text with a zone, or numeric text read as epoch milliseconds."""
    text = value.strip()
    if not text:
        raise DecodeError('missing event_time')
    if len(text) > _MAX_TIME_CHARS:
        raise DecodeError(
            f'event_time: unrecognised timestamp: {short_repr(value)}')
    if DECIMAL_TEXT_RE.fullmatch(text):
        try:
            number = decimal.Decimal(text)
        except decimal.DecimalException:
            raise DecodeError(f'event_time: unrecognised timestamp: '
                              f'{short_repr(value)}') from None
        return epoch_ms_time(number, value)
    try:
        return parse_time(text)
    except DecodeError as e:
        raise DecodeError(f'event_time: {e}') from None


def json_event_time(obj: dict, field: str = 'event_time') -> Timestamp:
    """``obj[field]`` of a parsed JSON object: RFC 3339 text or epoch ms."""
    value = obj.get(field)
    if value is None:
        raise DecodeError(f'missing {field}')
    if isinstance(value, str):
        return time_from_text(value)
    if is_number(value):
        return epoch_ms_time(value, value)
    raise wrong_type(field, value)


def csv_fields(text) -> list:
    """The fields of one CSV line (RFC 4180 quoting, strict, spaces after a
    comma skipped); DecodeError for anything that is not exactly one row."""
    if not isinstance(text, str):
        raise DecodeError(f'CSV input is not text: {type(text).__name__}')
    line = strip_eol(text)
    if line.startswith(BOM):
        line = line[1:]
    if not line.strip():
        raise DecodeError('empty line')
    try:
        rows = list(csv.reader([line], strict=True, skipinitialspace=True))
    except csv.Error as e:
        raise DecodeError(f'invalid CSV: {" ".join(str(e).split())}') from None
    if len(rows) != 1:
        raise DecodeError(f'invalid CSV: {len(rows)} rows in one line')
    return rows[0]


# --------------------------------------------------------------------------- JSON

def parse_json_object(text) -> dict:
    """One JSON object per line -> dict (orjson).  Anything but an object is refused."""
    text = strip_eol(_require_str(text, 'JSON'))
    if not text.strip():
        raise DecodeError('empty line')
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as e:
        raise DecodeError(f'invalid JSON: {_one_line(e)}') from None
    except (ValueError, TypeError, RecursionError) as e:  # defensive
        raise DecodeError(f'invalid JSON: {_one_line(e)}') from None
    if not isinstance(value, dict):
        raise DecodeError(f'JSON value is not an object: {type(value).__name__}')
    return value


# ------------------------------------------------------------------ access logs

# A double-quoted field as Apache and nginx write it: \" and \\ are escapes.
_QUOTED = r'"(?P<{name}>[^"\\]*(?:\\.[^"\\]*)*)"'
_DECIMAL = r'\d{1,15}(?:\.\d{1,9})?'
_COMBINED_RE = re.compile(
    r'[ \t]*'
    r'(?:(?P<vhost>\S+) )?'
    r'(?P<client>\S+) (?P<ident>\S+) (?P<user>\S+) '
    r'\[(?P<day>\d{2})/(?P<mon>[A-Z][a-z]{2})/(?P<year>\d{4})'
    r':(?P<hour>\d{2}):(?P<minute>\d{2}):(?P<second>\d{2}) (?P<zone>[+-]\d{4})\] '
    + _QUOTED.format(name='request') +
    r' (?P<status>\d{3}) (?P<bytes>\d{1,20}|-)'
    r'(?: ' + _QUOTED.format(name='referer') + ' ' + _QUOTED.format(name='agent') +
    r'(?: ' + _QUOTED.format(name='forwarded') + ')?' +
    r'(?: (?P<rt>' + _DECIMAL + r'|-)'
    r'(?: (?P<urt>(?:' + _DECIMAL + r'|-)(?: ?[,:] (?:' + _DECIMAL + r'|-))*))?)?)?'
    r'[ \t]*', re.ASCII)
_REQUEST_RE = re.compile(
    r'(?P<method>[A-Z][A-Z0-9_-]{0,31}) (?P<path>\S+)'
    r'(?: (?P<protocol>[A-Z]{2,10}/\d{1,2}(?:\.\d{1,2})?))?', re.ASCII)
_UNESCAPE_RE = re.compile(r'\\(["\\])')


def _unescape(text: str) -> str:
    """Undo the log writer's ``\\"`` and ``\\\\`` escapes; others (``\\xHH``) stay."""
    return _UNESCAPE_RE.sub(r'\1', text) if '\\' in text else text


def _optional_quoted(text):
    """An optional quoted field: None when absent or "-", else unescaped."""
    if text is None or text == '-':
        return None
    return _unescape(text)


def _access_log_time(m, line) -> Timestamp:
    month = _MONTHS.get(m['mon'])
    if month is None:
        raise DecodeError(f'invalid month in access log time: {short_repr(m["mon"])}')
    zone = m['zone']
    off_h, off_m = int(zone[1:3]), int(zone[3:5])
    if off_h > 23 or off_m > 59:
        raise DecodeError(f'invalid time zone offset: {short_repr(zone)}')
    offset = (off_h * 3600 + off_m * 60) * (1 if zone[0] == '+' else -1)
    total = _micros_from_parts(
        int(m['year']), month, int(m['day']), int(m['hour']), int(m['minute']),
        int(m['second']), 0, offset)
    return _timestamp(total, line[m.start('day') - 1:m.end('zone') + 1])


def check_status(status: int) -> int:
    """An HTTP status must be 100..599; DecodeError otherwise."""
    if not 100 <= status <= 599:
        raise DecodeError(f'HTTP status out of range: {status}')
    return status


def parse_combined(text) -> dict:
    """An nginx/Apache access log line -> dict.

    Accepts the "combined" format
    ``%h %l %u [%d/%b/%Y:%H:%M:%S %z] "%r" %>s %b "%{Referer}i" "%{User-agent}i"``,
    the "common" format (without referer and user agent), nginx's optional
    trailing ``$request_time`` (seconds) and ``$upstream_response_time``, and
    Apache's "vhost_combined" with a leading ``vhost:port``.  The quoted
    ``$http_x_forwarded_for`` that nginx's stock "main" format adds after the
    user agent is accepted too.

    Keys: client, ident, user, time (Timestamp), method, path, protocol,
    request (the request line), status (int), bytes (int or None for "-"),
    referer and user_agent (None when absent or "-"), request_time_s (float or
    None), vhost ("name:port" as logged, or None),
    forwarded_for (the X-Forwarded-For text, None when absent or "-").
    A request line that is not ``METHOD PATH [PROTOCOL]`` (e.g. "-" or TLS
    bytes sent to a plain-HTTP port) is kept as ``request`` with method, path
    and protocol None.
    """
    line = strip_eol(_require_str(text, 'access log'))
    if not line.strip():
        raise DecodeError('empty line')
    m = _COMBINED_RE.fullmatch(line)
    if m is None:
        raise DecodeError('not an access log line (common/combined)')
    request = _unescape(m['request'])
    rm = _REQUEST_RE.fullmatch(request)
    rt = m['rt']
    return {
        'client': m['client'],
        'ident': m['ident'],
        'user': m['user'],
        'time': _access_log_time(m, line),
        'method': rm['method'] if rm else None,
        'path': rm['path'] if rm else None,
        'protocol': rm['protocol'] if rm else None,
        'request': request,
        'status': check_status(int(m['status'])),
        'bytes': None if m['bytes'] == '-' else int(m['bytes']),
        'referer': _optional_quoted(m['referer']),
        'user_agent': _optional_quoted(m['agent']),
        'request_time_s': None if rt in (None, '-') else float(rt),
        'vhost': m['vhost'],
        'forwarded_for': _optional_quoted(m['forwarded']),
    }


# ------------------------------------------------------------------------ syslog

_PRI_RE = re.compile(r'<(?P<pri>[^>]{0,8})>')
_SYSLOG5424_RE = re.compile(
    r'(?P<version>[1-9]\d{0,2}) (?P<time>\S+) (?P<host>\S+) (?P<app>\S+)'
    r' (?P<procid>\S+) (?P<msgid>\S+) '
    r'(?P<sd>-|(?:\[[^\s\]"=]+(?: [^\s\]"=]+="[^"\\]*(?:\\.[^"\\]*)*")*\])+)'
    r'(?: (?P<msg>.*))?', re.DOTALL | re.ASCII)
_5424_VERSION_START = frozenset('123456789')
_SYSLOG3164_RE = re.compile(
    r'(?P<mon>[A-Z][a-z]{2}) {1,2}(?P<day>\d{1,2}) '
    r'(?P<hour>\d{2}):(?P<minute>\d{2}):(?P<second>\d{2})'
    r' (?P<host>\S+)(?: (?P<rest>.*))?', re.DOTALL | re.ASCII)
# TAG[pid]: at the start of an RFC 3164 MSG part.
_TAG_RE = re.compile(
    r'(?P<tag>[^\s:\[\]]{1,48})(?:\[(?P<pid>[^\s\]]{1,128})\])?:(?: |$)', re.ASCII)
_BOM = '\ufeff'
# RFC 3164 section 4.3.3: a relay gives a message without PRI the PRI <13>
# (facility user, severity notice).
_NO_PRI_FACILITY, _NO_PRI_SEVERITY = 1, 5


def _nil(value: str):
    return None if value == '-' else value


def _parse_pri(line: str, require_pri: bool):
    """(facility, severity, rest of the line) from a leading ``<PRI>``."""
    m = _PRI_RE.match(line)
    if m is None:
        if line.startswith('<'):
            raise DecodeError('invalid syslog PRI: no closing ">"')
        if not require_pri:
            return _NO_PRI_FACILITY, _NO_PRI_SEVERITY, line
        raise DecodeError('not a syslog line: missing <PRI>')
    pri = m['pri']
    if not pri.isascii() or not pri.isdigit() or len(pri) > 3:
        raise DecodeError(f'invalid syslog PRI: {short_repr(pri)}')
    value = int(pri)
    if value > 191:
        raise DecodeError(f'syslog PRI out of range 0..191: {value}')
    return value >> 3, value & 7, line[m.end():]


def _parse_5424(rest: str) -> dict:
    m = _SYSLOG5424_RE.fullmatch(rest)
    if m is None:
        raise DecodeError('malformed RFC 5424 syslog header')
    if m['version'] != '1':
        raise DecodeError(f'unsupported syslog version: {m["version"]}')
    if m['time'] == '-':
        raise DecodeError('missing event time (syslog timestamp is "-")')
    if len(m['time']) > _MAX_TIME_CHARS:
        raise DecodeError(f'unrecognised timestamp: {short_repr(m["time"])}')
    time = _parse_iso(m['time'], m['time'])
    message = m['msg'] or ''
    if message.startswith(_BOM):
        message = message[1:]
    return {
        'time': time,
        'host': _nil(m['host']),
        'app': _nil(m['app']),
        'procid': _nil(m['procid']),
        'msgid': _nil(m['msgid']),
        'structured_data': _nil(m['sd']),
        'message': message,
        'rfc': '5424',
    }


def _parse_3164(rest: str, default_year) -> dict:
    m = _SYSLOG3164_RE.fullmatch(rest)
    if m is None:
        raise DecodeError('malformed syslog header (neither RFC 5424 nor RFC 3164)')
    month = _MONTHS.get(m['mon'])
    if month is None:
        raise DecodeError(f'invalid month in syslog time: {short_repr(m["mon"])}')
    if default_year is None:
        year = datetime.datetime.now(datetime.timezone.utc).year
    elif isinstance(default_year, int) and not isinstance(default_year, bool):
        year = default_year
    else:
        raise DecodeError(f'wrongly typed default year: {short_repr(default_year)}')
    total = _micros_from_parts(
        year, month, int(m['day']), int(m['hour']), int(m['minute']),
        int(m['second']), 0, 0)
    time = _timestamp(total, rest[:m.end('second')])
    app = procid = None
    message = m['rest'] or ''
    tm = _TAG_RE.match(message)
    if tm is not None:
        app, procid = tm['tag'], tm['pid']
        message = message[tm.end():]
    return {
        'time': time,
        'host': m['host'],
        'app': app,
        'procid': procid,
        'msgid': None,
        'structured_data': None,
        'message': message,
        'rfc': '3164',
    }


def parse_syslog(text, default_year=None, require_pri: bool = True) -> dict:
    """A syslog line (RFC 5424 or RFC 3164, with ``<PRI>``) -> dict.

    RFC 5424: ``<PRI>1 TIMESTAMP HOST APP PROCID MSGID [SD...] MSG`` with "-" as
    NILVALUE (-> None) and an optional BOM before MSG (dropped).
    RFC 3164: ``<PRI>Mmm dd hh:mm:ss HOST TAG[pid]: MSG``.  It has no year and no
    zone: the time is read as UTC in ``default_year`` (the current UTC year at
    the moment of parsing when None).  A MSG without a ``TAG:`` keeps app None.

    Keys: facility, severity (ints from PRI, which must be 0..191), time
    (Timestamp), host, app, procid, msgid, structured_data (raw text or None),
    message, rfc ("5424" or "3164").

    With ``require_pri=False`` a line without ``<PRI>`` (as syslog daemons write
    to /var/log files: ``Mmm dd hh:mm:ss HOST TAG[pid]: MSG``) is read as RFC 3164
    with PRI 13 (facility user, severity notice), as an RFC 3164 relay would.
    """
    line = strip_eol(_require_str(text, 'syslog')).lstrip(' \t')
    if not line.strip():
        raise DecodeError('empty line')
    facility, severity, rest = _parse_pri(line, require_pri)
    if rest[:1] in _5424_VERSION_START:
        fields = _parse_5424(rest)
    else:
        fields = _parse_3164(rest, default_year)
    fields['facility'] = facility
    fields['severity'] = severity
    return fields
