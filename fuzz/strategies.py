"""Structure-aware generators of hostile input lines (hypothesis strategies).

Each format's lines are built from its grammar, with every field drawn from
plausible values, edge values (year 9999, before 1970, Feb 30, 1e400, NaN,
huge integers, empty text, padded text, odd JSON types) and noise; then
:func:`mutated` may cut, pad or corrupt the bytes (NUL, invalid UTF-8, CR,
BOM, truncation).  A line never holds b'\\n' (a line reader never gives one).

:func:`from_samples` fuzzes a format by its examples alone (tokens replaced
by odd values, JSON values by odd JSON): enough to register a decoder with
one line before it has a generator of its own.
"""
import datetime
import functools
import json
import re
from urllib.parse import quote

from hypothesis import strategies as st

# -- shared pieces --------------------------------------------------------

ODD_NUMBERS = ('NaN', 'Infinity', '-Infinity', '1e400', '-1e400', '1e-400',
               '123456789012345678901234567890', '-0', '0.0', '1E2', '00012',
               '.5', '5.', '0x10', '+1', '-1', '0', '1e308', '4.9e-324',
               '9007199254740993', '-9223372036854775809')
ODD_TEXT = ('', ' ', '\t', '-', 'null', 'None', 'NaN', '\u0000', '\ufeff',
            '\u202e', '\u00e9', '\U0001F600', '\\', '"', "'", ',', ';', '|',
            '=', '{}', '[]', 'a' * 300, ' padded ')
NOISE_BYTES = (b'\x00', b'\xff', b'\xfe', b'\xc3', b'\xed\xa0\x80', b'\r',
               b'\x1b[31m', b'\xef\xbb\xbf', b'\t', b'"', b'\\', b'{', b'}',
               b'<', b'>', b'[', b']')
MONTHS = ('Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct',
          'Nov', 'Dec')

_DATETIMES = st.datetimes(min_value=datetime.datetime(1, 1, 1),
                          max_value=datetime.datetime(9999, 12, 31, 23, 59, 59))
_RECENT = st.datetimes(min_value=datetime.datetime(2025, 12, 31),
                       max_value=datetime.datetime(2026, 1, 2))
# Mostly near the present, sometimes anywhere in 1..9999.
_TIMES = st.one_of(
    _RECENT,
    st.sampled_from([datetime.datetime(9999, 12, 31, 23, 59, 59),
                     datetime.datetime(1970, 1, 1),
                     datetime.datetime(1969, 12, 31, 23, 59, 59),
                     datetime.datetime(1, 1, 1)]),
    _DATETIMES)


# True now and then (hypothesis draws the first element most readily).
_RARELY = st.sampled_from([False] * 9 + [True])


def _no_newline(data: bytes) -> bytes:
    return data.replace(b'\n', b' ')


@functools.lru_cache(maxsize=None)
def odd_text():
    return st.one_of(st.sampled_from(ODD_TEXT), st.text(max_size=12))


@st.composite
def rfc3339(draw):
    t = draw(_TIMES)
    digits = draw(st.sampled_from([0, 0, 3, 6, 9, 1, 12]))
    fraction = ''
    if digits:
        fraction = '.' + ''.join(draw(st.lists(
            st.sampled_from('0123456789'), min_size=digits,
            max_size=digits)))
    zone = draw(st.sampled_from(['Z', 'Z', 'z', '+00:00', '+05:30', '-08:00',
                                 '', '+0000', ' UTC', '+24:00']))
    sep = draw(st.sampled_from(['T', 'T', 't', ' ', '_']))
    text = f'{t:%Y-%m-%d}{sep}{t:%H:%M:%S}{fraction}{zone}'
    if draw(_RARELY):                   # a day that does not exist
        text = text.replace(f'{t:%m-%d}', draw(st.sampled_from(
            ['02-30', '02-29', '13-01', '00-10', '04-31'])), 1)
    return text


@st.composite
def clean_rfc3339(draw):
    """RFC 3339 as the decoders take it (a zone, 'T'), near the present."""
    t = draw(_RECENT)
    fraction = draw(st.sampled_from(['', '.5', '.123', '.123456']))
    zone = draw(st.sampled_from(['Z', '+00:00', '+05:30', '-08:00']))
    return f'{t:%Y-%m-%dT%H:%M:%S}{fraction}{zone}'


def epoch_numbers():
    return st.one_of(
        st.integers(1_735_000_000, 1_800_000_000),               # seconds
        st.integers(1_735_000_000_000, 1_800_000_000_000),       # millis
        st.integers(-10**20, 10**20),
        st.floats(allow_nan=False, allow_infinity=False))


def json_string(texts=None):
    return (texts if texts is not None else odd_text()).map(
        lambda s: json.dumps(s, ensure_ascii=False))


@functools.lru_cache(maxsize=None)
def json_scalar():
    return st.one_of(
        st.just('null'), st.sampled_from(['true', 'false']),
        st.integers().map(str),
        st.floats(allow_nan=False, allow_infinity=False).map(repr),
        st.sampled_from(ODD_NUMBERS), json_string())


@functools.lru_cache(maxsize=None)
def json_any(max_leaves=6):
    """Any JSON value as text (odd numbers included), possibly nested."""
    return st.recursive(
        json_scalar(),
        lambda kids: st.one_of(
            st.lists(kids, max_size=3).map(lambda xs: '[' + ','.join(xs) + ']'),
            st.lists(st.tuples(json_string(st.text(max_size=6)), kids),
                     max_size=3).map(lambda kv: '{' + ','.join(
                         f'{k}:{v}' for k, v in kv) + '}')),
        max_leaves=max_leaves)


def deep_nesting():
    return st.integers(50, 5000).map(
        lambda depth: '{"a":' * depth + '1' + '}' * depth)


def json_object(fields):
    """JSON objects of some of ``fields`` (name -> strategy of value text),
    in any order, with possibly repeated keys, unknown keys and odd spacing."""
    names = st.lists(st.sampled_from(sorted(fields)),
                     max_size=len(fields) + 2)
    values = {n: st.one_of(v, v, v, json_any()) for n, v in fields.items()}
    unknown = st.lists(st.tuples(json_string(st.text(max_size=8)),
                                 json_any()), max_size=2)
    spaces = st.sampled_from(['', '', ' ', '\t', '  '])

    @st.composite
    def build(draw):
        pairs = [(json.dumps(n), draw(values[n])) for n in draw(names)]
        pairs += draw(unknown)
        space = draw(spaces)
        return '{' + space + (',' + space).join(
            f'{k}:{space}{v}' for k, v in pairs) + space + '}'
    return build()


@st.composite
def mutated(draw, lines):
    """A line of ``lines`` as bytes, now and then cut, padded or corrupted."""
    data = draw(lines)
    if isinstance(data, str):
        data = data.encode('utf-8', errors='surrogatepass')
    kind = draw(st.sampled_from([0] * 10 + [1, 2, 3, 4, 5, 6]))
    if kind == 6 and data:                       # truncated
        data = data[:draw(st.integers(0, len(data) - 1))]
    elif kind == 1:                              # a foreign byte inserted
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.sampled_from(NOISE_BYTES)) + data[at:]
    elif kind == 2:                              # trailing CR or garbage
        data += draw(st.sampled_from([b'\r', b' ', b' trailing', b'\x00']))
    elif kind == 3:                              # leading BOM or spaces
        data = draw(st.sampled_from([b'\xef\xbb\xbf', b'   ', b'\t'])) + data
    elif kind == 4 and data:                     # a byte flipped
        at = draw(st.integers(0, len(data) - 1))
        data = data[:at] + bytes([data[at] ^ (1 << draw(st.integers(0, 7)))]) \
            + data[at + 1:]
    elif kind == 5:                              # oversized (limit: 4 KiB)
        data += b' ' * draw(st.sampled_from([4096, 5000]))
    return _no_newline(data)


# -- logs -----------------------------------------------------------------

def _level_values():
    return st.one_of(json_string(st.sampled_from(
        ['info', 'INFO', 'warn', 'Warning', 'error', 'ERR', 'fatal', 'crit',
         'debug', 'trace', 'notice', 'panic', 'x', ''])),
        st.sampled_from(['10', '20', '30', '40', '50', '60', '35', '50.0']))


def _time_values():
    return st.one_of(json_string(rfc3339()), json_string(rfc3339()),
                     epoch_numbers().map(lambda n: json.dumps(n)),
                     json_string(epoch_numbers().map(str)),
                     st.sampled_from(ODD_NUMBERS))


def _service_values():
    return st.one_of(json_string(st.sampled_from(
        ['auth', 'search', ' auth ', 'checkout', 'Auth', 'a' * 200, '',
         'pay\u00e9'])), json_string(),
        json_string(st.sampled_from(['auth'])).map(lambda s: '{"name":' + s
                                                   + '}'))


def _status_values():
    return st.one_of(st.sampled_from(['200', '503', '404']),
                     st.integers(0, 1000).map(str),
                     st.sampled_from(['200.0', '200.5', '"503"', '503', '99',
                                      '600', '-1']),
                     st.sampled_from(ODD_NUMBERS))


def _latency_values():
    return st.one_of(st.floats(-1e6, 1e7, allow_nan=False).map(repr),
                     st.integers(-5, 10**6).map(str),
                     json_string(st.sampled_from(['7', '7.5', 'fast'])),
                     st.sampled_from(ODD_NUMBERS))


def _log_fields():
    text = json_string()
    return {
        'timestamp': _time_values(), '@timestamp': _time_values(),
        'time': _time_values(), 'ts': _time_values(),
        'event_time': _time_values(),
        'service': _service_values(), 'app': _service_values(),
        'application': _service_values(), 'service.name': _service_values(),
        'level': _level_values(), 'severity': _level_values(),
        'lvl': _level_values(), 'log.level': _level_values(),
        'status': _status_values(), 'status_code': _status_values(),
        'http_status': _status_values(),
        'http': st.just('{"status_code":') .flatmap(
            lambda p: _status_values().map(lambda v: p + v + '}')),
        'latency_ms': _latency_values(), 'duration_ms': _latency_values(),
        'latency_s': _latency_values(), 'request_time': _latency_values(),
        'host': text, 'hostname': text, 'message': text, 'msg': text,
        'log': st.one_of(text, _level_values().map(
            lambda v: '{"level":' + v + '}')),
        'event': text,
    }


def _clean_log():
    """Lines the decoders accept, in the shape the columnar reader takes (so
    that its reading is tested, not only its refusals)."""
    return st.builds(
        lambda t, s, lv, st_, lat: '{' + ','.join(
            p for p in (f'"timestamp":{t}', f'"service":{s}', lv, st_, lat)
            if p) + '}',
        json_string(clean_rfc3339()),
        json_string(st.sampled_from(['auth', 'search', 'checkout', 'pay'])),
        st.one_of(st.just(''), st.sampled_from(
            ['info', 'ERROR', 'warn', 'fatal', '30', '50']).map(
                lambda v: f'"level":"{v}"' if not v.isdigit()
                else f'"level":{v}')),
        st.one_of(st.just(''), st.integers(100, 599).map(
            lambda v: f'"status":{v}')),
        st.one_of(st.just(''), st.floats(0, 1e5).map(
            lambda v: f'"latency_ms":{v!r}'), st.integers(0, 10**6).map(
                lambda v: f'"latency_ms":{v}')))


def _canonical_log():
    """The shape the columnar reader takes, with edge values."""
    return st.builds(
        lambda t, s, lv, st_, lat: '{' + ','.join(
            p for p in (f'"timestamp":{t}', f'"service":{s}', lv, st_, lat)
            if p) + '}',
        json_string(rfc3339()), _service_values(),
        st.one_of(st.just(''), _level_values().map(lambda v: f'"level":{v}')),
        st.one_of(st.just(''), _status_values().map(lambda v: f'"status":{v}')),
        st.one_of(st.just(''), _latency_values().map(
            lambda v: f'"latency_ms":{v}')))


def json_log_lines():
    return st.one_of(_clean_log(), _canonical_log(), _clean_log(),
                     _canonical_log(), json_object(_log_fields()),
                     deep_nesting(), json_any())


def _ipv4():
    return st.tuples(*[st.integers(0, 300)] * 4).map(
        lambda t: '.'.join(map(str, t)))


def _field(draw, clean, valid, odd):
    """A field: a valid value in a clean line, else valid or odd."""
    return draw(valid) if clean else draw(st.one_of(valid, odd))


_CLEAN = st.sampled_from([True, False])


@st.composite
def access_log_lines(draw):
    clean = draw(_CLEAN)          # a clean line: every field plausible
    t = draw(_TIMES)
    zone = _field(draw, clean, st.sampled_from(['+0000', '-0700', '+1400']),
                  st.sampled_from(['Z', '+99', '+00:00']))
    month = _field(draw, clean, st.sampled_from(MONTHS),
                   st.sampled_from(['Foo', 'jan', 'JAN']))
    vhost = _field(draw, clean, st.sampled_from(['', 'auth:443 ', 'search ']),
                   st.sampled_from([':443 ', 'a b ', '\t']))
    ip = _field(draw, clean, st.one_of(_ipv4(), st.sampled_from(
        ['::1', '2001:db8::1'])), st.sampled_from(['-', 'bob@example.com',
                                                    '']))
    request = _field(draw, clean, st.sampled_from(
        ['GET / HTTP/1.1', 'POST /a?b=c HTTP/2.0', '-',
         'GET /\\"quoted\\" HTTP/1.1', 'GET /?token=Bearer%20x HTTP/1.1']),
        st.one_of(st.sampled_from(['', 'GET', 'get / HTTP/1.1']),
                  st.text(max_size=20).map(lambda s: s.replace('"', '\\"'))))
    status = _field(draw, clean, st.sampled_from(['200', '503', '404', '301']),
                    st.one_of(st.integers(0, 999).map(str),
                              st.sampled_from(['-', '5o3', '2000'])))
    size = _field(draw, clean, st.sampled_from(['0', '12', '-']),
                  st.sampled_from(['99999999999999999999999', 'x', '-1']))
    latency = _field(draw, clean, st.sampled_from(['', ' 0.250', ' 0', ' -']),
                     st.sampled_from([' -1', ' 1e400', ' .5', ' nan',
                                      ' 12345678901234567.1']))
    day = _field(draw, clean, st.just(f'{t.day:02d}'),
                 st.sampled_from(['31', '00', '1', '30']))
    return (f'{vhost}{ip} - - [{day}/{month}/{t.year:04d}:{t:%H:%M:%S} '
            f'{zone}] "{request}" {status} {size} "-" "curl/8"{latency}')


@st.composite
def syslog_lines(draw):
    clean = draw(_CLEAN)
    pri = _field(draw, clean, st.integers(0, 191).map(str),
                 st.sampled_from(['', '192', '999', '-1', '01', 'x']))
    msg = draw(st.one_of(st.sampled_from(
        ['failed for bob@example.com from 10.0.0.1', 'Bearer abc.def', '']),
        st.text(max_size=30)))
    if draw(st.booleans()):                       # RFC 5424
        ts = _field(draw, clean, rfc3339(), st.just('-'))
        host = _field(draw, clean, st.sampled_from(['host', '-']),
                      st.sampled_from(['h' * 300, '']))
        app = _field(draw, clean, st.sampled_from(['auth', '-', 'a.b']),
                     st.just(''))
        sd = _field(draw, clean, st.sampled_from(['-', '[x@1 a="b"]']),
                    st.sampled_from(['[bad', '[a b="\\]"]', '[]']))
        version = _field(draw, clean, st.just('1'), st.sampled_from(['2', '']))
        return f'<{pri}>{version} {ts} {host} {app} 1 - {sd} {msg}'
    t = draw(_TIMES)
    month = _field(draw, clean, st.sampled_from(MONTHS), st.just('Foo'))
    day = _field(draw, clean, st.just(f'{t.day:2d}'),
                 st.sampled_from(['31', '30', '00', '1']))
    tag = _field(draw, clean, st.sampled_from(['auth', 'auth[123]']),
                 st.sampled_from(['auth:', '', 'a' * 100]))
    return f'<{pri}>{month} {day} {t:%H:%M:%S} host {tag}: {msg}'


def log_lines():
    return mutated(st.one_of(json_log_lines(), json_log_lines(),
                             access_log_lines(), syslog_lines(), odd_text()))


# -- trades ---------------------------------------------------------------

def _price_values():
    return st.one_of(st.floats(0.01, 1e5).map(lambda f: f'{f:.2f}'),
                     st.floats(allow_nan=False, allow_infinity=False).map(repr),
                     st.integers(-5, 10**6).map(str),
                     st.sampled_from(ODD_NUMBERS),
                     json_string(st.sampled_from(['101.5', 'x', ''])))


def _trade_fields():
    text = json_string()
    return {
        'event_time': _time_values(), 'symbol': json_string(st.one_of(
            st.sampled_from(['ACME', 'acme', ' ACME ', 'BRK.B', 'X' * 33, '',
                             'A-1_2', '\u00c9']), st.text(max_size=6))),
        'price': _price_values(), 'size': _price_values(),
        'trade_id': st.one_of(text, st.integers().map(str), st.just('null')),
        'venue': st.one_of(text, st.just('7')),
        'conditions': st.one_of(text, json_any(), st.sampled_from(
            ['"T"', '"T,Z"', '"@;|T"', '["T","Z"]', '["T,Z"]', '[1]'])),
    }


def _clean_trade():
    """Trades the decoders accept, in the columnar reader's shape."""
    prices = st.one_of(st.floats(0.01, 1e5).map(lambda f: f'{f:.2f}'),
                       st.integers(1, 10**6).map(str),
                       st.floats(1e-6, 1e9).map(repr))
    return st.builds(
        lambda t, s, p, z, i, c: '{' + ','.join(
            x for x in (f'"event_time":{t}', f'"symbol":"{s}"',
                        f'"price":{p}', f'"size":{z}', i, c) if x) + '}',
        st.one_of(json_string(clean_rfc3339()), st.integers(
            1_767_000_000_000, 1_768_000_000_000).map(str)),
        st.sampled_from(['ACME', 'acme', 'BRK.B', 'X-1', ' ZZ ']),
        prices, prices,
        st.one_of(st.just(''), st.integers(0, 99).map(
            lambda i: f'"trade_id":"t{i}"')),
        st.sampled_from(['', '"conditions":"T"', '"conditions":["Z","@"]',
                         '"venue":"XNYS"']))


def _canonical_trade():
    return st.builds(
        lambda t, s, p, z, i: '{' + ','.join(
            x for x in (f'"event_time":{t}', f'"symbol":{s}', f'"price":{p}',
                        f'"size":{z}', i) if x) + '}',
        json_string(rfc3339()), _trade_fields()['symbol'], _price_values(),
        _price_values(), st.one_of(st.just(''), json_string().map(
            lambda v: f'"trade_id":{v}')))


def _csv_field(values):
    return values.map(lambda v: v if ',' not in v and '"' not in v
                      else '"' + v.replace('"', '""') + '"')


@st.composite
def csv_trade_lines(draw):
    if draw(_RARELY):
        return draw(st.sampled_from([
            'event_time,symbol,price,size,trade_id,venue,conditions',
            'EVENT_TIME, Symbol ,price,size', '\ufeffevent_time,symbol']))
    fields = [
        draw(st.one_of(rfc3339(), epoch_numbers().map(str), odd_text())),
        draw(st.one_of(st.sampled_from(['ACME', 'acme', ' X ', '', 'A' * 40]),
                       st.text(max_size=5))),
        draw(st.one_of(st.floats(0.01, 1e5).map(lambda f: f'{f:.4f}'),
                       st.sampled_from(ODD_NUMBERS), odd_text())),
        draw(st.one_of(st.integers(1, 1000).map(str),
                       st.sampled_from(ODD_NUMBERS))),
        draw(st.one_of(st.just(''), st.text(max_size=6))),
        draw(st.sampled_from(['', 'XNYS', ' v '])),
        draw(st.sampled_from(['', 'T', 'T;Z', '@|T', 'a,b'])),
    ]
    cut = draw(st.sampled_from([7, 7, 7, 4, 5, 6, 2, 3, 8, 9]))
    fields = (fields + ['extra', 'more'])[:cut]
    return ','.join(draw(_csv_field(st.just(f))) for f in fields)


def trade_lines():
    return mutated(st.one_of(_clean_trade(), _canonical_trade(),
                             _clean_trade(), _canonical_trade(),
                             json_object(_trade_fields()), csv_trade_lines(),
                             csv_trade_lines(), deep_nesting(), odd_text()))


# -- sensors --------------------------------------------------------------

# Sensor and metric names: plain, padded, empty, too long, control
# characters, non-ASCII (the columnar reader takes printable ASCII only).
_SENSOR_NAMES = ('S001', 's-01', ' S001 ', 'S 1', 'line3/pump.7', 'x' * 128,
                 'x' * 129, '', ' ', 'S\u0001', 'S\u007f', 'capteur\u00e9',
                 '\u202eS', '\t S9')
_METRICS = ('temperature', 'pressure', 'humidity', ' temperature', 'Temp C',
            '', 'm' * 129, 'a\u0000b', 'd\u00e9bit')


def _reading_value_values():
    return st.one_of(st.floats(-1e4, 1e4).map(lambda f: f'{f:.3f}'),
                     st.floats(allow_nan=False, allow_infinity=False).map(repr),
                     st.integers(-10**6, 10**6).map(str),
                     st.integers().map(str),
                     st.sampled_from(ODD_NUMBERS + ('true', 'null')),
                     json_string(st.sampled_from(['21.5', 'x', '', ' 1 '])))


def _reading_fields():
    return {
        'event_time': _time_values(),
        'sensor_id': json_string(st.one_of(st.sampled_from(_SENSOR_NAMES),
                                           st.text(max_size=6))),
        'metric': json_string(st.one_of(st.sampled_from(_METRICS),
                                        st.text(max_size=6))),
        'value': _reading_value_values(),
        'unit': st.one_of(json_string(st.sampled_from(['C', 'kPa', '', ' %'])),
                          st.just('null'), st.just('7')),
        'quality': st.one_of(json_string(st.sampled_from(
            ['good', 'bad', 'uncertain', ''])), st.just('null'), json_any()),
    }


def _clean_reading():
    """Readings the decoders accept, mostly in the columnar reader's shape."""
    return st.builds(
        lambda t, s, m, v, u, q: '{' + ','.join(
            x for x in (f'"event_time":{t}', f'"sensor_id":"{s}"',
                        f'"metric":"{m}"', f'"value":{v}', u, q) if x) + '}',
        st.one_of(json_string(clean_rfc3339()), st.integers(
            1_767_000_000_000, 1_768_000_000_000).map(str)),
        st.sampled_from(['S001', 'S002', 's-9', ' S003 ', 'pump 7']),
        st.sampled_from(['temperature', 'pressure', ' humidity']),
        st.one_of(st.floats(-1e4, 1e4).map(lambda f: f'{f:.3f}'),
                  st.integers(-1000, 1000).map(str),
                  st.floats(allow_nan=False, allow_infinity=False).map(repr)),
        st.sampled_from(['', '"unit":"C"', '"unit":null', '"unit":""']),
        st.sampled_from(['', '"quality":"good"', '"quality":null']))


def _canonical_reading():
    fields = _reading_fields()
    return st.builds(
        lambda t, s, m, v: '{' + ','.join(
            (f'"event_time":{t}', f'"sensor_id":{s}', f'"metric":{m}',
             f'"value":{v}')) + '}',
        json_string(rfc3339()), fields['sensor_id'], fields['metric'],
        _reading_value_values())


@st.composite
def csv_reading_lines(draw):
    """CSV readings: header lines, short and long rows, quoted fields."""
    if draw(_RARELY):
        return draw(st.sampled_from([
            'event_time,sensor_id,metric,value,unit,quality',
            ' Event_Time ,sensor_id', '\ufeffevent_time,sensor_id,metric']))
    fields = [
        draw(st.one_of(rfc3339(), epoch_numbers().map(str), odd_text())),
        draw(st.one_of(st.sampled_from(_SENSOR_NAMES), st.text(max_size=5))),
        draw(st.one_of(st.sampled_from(_METRICS), st.text(max_size=5))),
        draw(st.one_of(st.floats(-1e4, 1e4).map(lambda f: f'{f:.4f}'),
                       st.sampled_from(ODD_NUMBERS), odd_text())),
        draw(st.sampled_from(['', 'C', ' kPa ', '%'])),
        draw(st.sampled_from(['', 'good', 'bad', ' ? '])),
    ]
    cut = draw(st.sampled_from([6, 6, 6, 4, 5, 3, 2, 7, 8]))
    fields = (fields + ['extra', 'more'])[:cut]
    return ','.join(draw(_csv_field(st.just(f))) for f in fields)


def json_reading_lines():
    return mutated(st.one_of(_clean_reading(), _canonical_reading(),
                             _clean_reading(), _canonical_reading(),
                             json_object(_reading_fields()), deep_nesting(),
                             odd_text()))


def reading_lines():
    """Both formats, as the 'auto' decoder sees them."""
    return mutated(st.one_of(_clean_reading(), _canonical_reading(),
                             json_object(_reading_fields()),
                             csv_reading_lines(), csv_reading_lines(),
                             deep_nesting(), odd_text()))


# -- any format, from examples --------------------------------------------

_TOKEN = re.compile(r'[^\s,;=:&"\[\]{}<>|/]+')


@st.composite
def _from_sample(draw, samples):
    line = draw(st.sampled_from(samples))
    for _ in range(draw(st.integers(0, 3))):
        tokens = list(_TOKEN.finditer(line))
        if not tokens:
            break
        match = tokens[draw(st.integers(0, len(tokens) - 1))]
        replacement = draw(st.one_of(st.sampled_from(ODD_NUMBERS), odd_text(),
                                     rfc3339(), st.integers().map(str)))
        line = line[:match.start()] + replacement + line[match.end():]
    return line


def from_samples(samples):
    """Lines of a format known by a few valid examples: their tokens (text
    between separators) replaced by odd values, then mutated."""
    samples = list(samples)
    return mutated(st.one_of(st.sampled_from(samples), _from_sample(samples),
                             json_any(), odd_text()))


# -- CMCD (video_qoe) -----------------------------------------------------

_CMCD_KEYS = ('br', 'bl', 'bs', 'bsd', 'cdn', 'cid', 'd', 'dl', 'e', 'ec',
              'msd', 'mtp', 'nor', 'nrr', 'ot', 'pr', 'rtp', 'sf', 'sid', 'sn',
              'st', 'sta', 'su', 'ts', 'v')
_CMCD_ODD_KEYS = ('com.example-x', 'com.example-', 'x-y', 'BR', 'sid ', '',
                  '*', 'a_b', 'é')
_TOKENS = ('ps', 'e', 't', 'p', 'r', 's', 'f', 'v', 'l', 'd', 'h', 'av', 'zz',
           'P', 'true', 'false', 'a*b', '1x')
_SAFE_TEXT = ('s-1', 'news-live', 'cdn-a.example', '', 'a' * 64, 'a' * 65,
              'MEDIA_ERR_DECODE', 'x/y~z', 'a:b', 'a,b')
_CMCD_TS = ('1767225600000', '1767225600123', '0', '253402300799999',
            '253402300800000', '999999999999999', '1000000000000000')


def _cmcd_ints():
    return st.one_of(st.integers(0, 10**6).map(str),
                     st.sampled_from(('0', '100', '4200', '-1', '00', '1.5',
                                      '1e3', '99999999999999999999')),
                     st.sampled_from(_CMCD_TS))


def _sf_value():
    """A Structured Field value as CMCD sends it, or broken."""
    string = st.one_of(st.sampled_from(_SAFE_TEXT), odd_text())
    quoted = string.map(lambda s: '"' + s.replace('\\', '\\\\')
                        .replace('"', '\\"') + '"')
    broken_quote = string.map(lambda s: '"' + s)
    item = st.one_of(_cmcd_ints(), st.sampled_from(_TOKENS), quoted)
    params = st.lists(st.sampled_from([';v', ';a', ';v=1', ';x="y"', ';',
                                       ';V', ';v;a']), max_size=2).map(''.join)
    inner = st.lists(st.tuples(item, params).map(''.join), max_size=3).map(
        lambda xs: '(' + ' '.join(xs) + ')')
    return st.one_of(_cmcd_ints(), st.sampled_from(_TOKENS), quoted, quoted,
                     broken_quote, inner, st.sampled_from(
                         ['?0', '?1', ':aGk=:', '(1 2', '()', '(4200;v 256;a)',
                          '(0)', '1.25', '-0', '""', '"\\x"']))


@st.composite
def cmcd_dictionaries(draw):
    """CMCD Structured Field dictionaries (a report body, or a query value):
    known keys with odd types, bare keys (true), inner lists with
    parameters, custom and invalid keys, repeated keys, broken quoting."""
    keys = draw(st.lists(st.one_of(st.sampled_from(_CMCD_KEYS),
                                   st.sampled_from(_CMCD_KEYS),
                                   st.sampled_from(_CMCD_ODD_KEYS)),
                         max_size=8))
    if draw(st.sampled_from([True, True, False])):
        keys += ['sid', 'ts']
    members = []
    for key in keys:
        if draw(_RARELY):
            members.append(key)                       # a bare key: true
        elif key == 'ts':
            members.append(f'ts={draw(st.sampled_from(_CMCD_TS))}')
        else:
            members.append(f'{key}={draw(_sf_value())}')
    sep = draw(st.sampled_from([',', ',', ', ', ',,', ';']))
    return sep.join(members)


def _cmcd_json_fields():
    string = json_string(st.one_of(st.sampled_from(_SAFE_TEXT), odd_text()))
    ints = st.one_of(_cmcd_ints(), st.sampled_from(['null', 'true', '"1"']))
    tokens = json_string(st.sampled_from(_TOKENS))
    return {
        'sid': string, 'cid': string, 'cdn': string, 'ts': ints, 'sn': ints,
        'msd': ints, 'v': ints, 'br': st.one_of(ints, st.sampled_from(
            ['[4200]', '[4200,256]', '[-1]', '[]', '{"v":1}'])),
        'bl': ints, 'bs': st.sampled_from(['true', 'false', '1', '"true"']),
        'e': tokens, 'sta': tokens, 'st': tokens, 'sf': tokens,
        'ec': st.one_of(string, st.sampled_from(
            ['[]', '["E1"]', '["E1","E2"]', '[1]', '[["E"]]', 'null'])),
        'com.example-x': json_any(), 'event_time': st.one_of(
            json_string(rfc3339()), st.integers(0, 10**13).map(str)),
        'cmcd': st.sampled_from(['{"sid":"s","ts":1767225600000}', '{}',
                                 '[]']),
        'nor': string, 'ot': tokens, 'pr': ints,
    }


def _canonical_cmcd_json():
    """Lines in (or a step away from) the shape the columnar reader takes."""
    member = st.sampled_from([
        '"e":"ps"', '"e":"t"', '"sta":"p"', '"sta":"r"', '"sta":"f"',
        '"msd":1751', '"br":4800', '"bl":0', '"bl":150', '"bs":true',
        '"bsd":3319', '"ec":["MEDIA_ERR_DECODE"]', '"ec":"E"', '"ec":[]',
        '"cid":"news-live"', '"cid":""', '"sn":2', '"v":2', '"st":"l"',
        '"sf":"d"', '"cdn":"cdn-a.example"', '"sta":"x"', '"br":-1',
        '"sn":"2"', '"cid":"' + 'c' * 65 + '"', '"mtp":0', '"pr":1.5'])
    sid = st.sampled_from(['"sid":"s-1"', '"sid":"s-2"', '"sid":""',
                           '"sid":"' + 's' * 64 + '"', '"sid":"a b"'])
    ts = st.sampled_from([f'"ts":{t}' for t in _CMCD_TS] + ['"ts":"1"'])
    return st.builds(
        lambda ms, s, t, order: '{' + ','.join(
            (ms + [s, t]) if order else ([s, t] + ms)) + '}',
        st.lists(member, max_size=6), sid, ts, st.booleans())


def _clean_cmcd(json_form):
    """Valid CMCD reports (distinct keys in any order): JSON or a dictionary."""
    values = {
        'e': ('ps', 't', 'e'), 'sta': ('s', 'p', 'r', 'f', 'e'),
        'msd': ('0', '1751'), 'br': ('800', '4800'), 'bl': ('0', '3200'),
        'cid': ('news-live', ''), 'sn': ('1', '2'), 'v': ('2',),
        'st': ('v', 'l'), 'sf': ('d', 'h'), 'cdn': ('cdn-a.example',),
        'bsd': ('3319',), 'ec': ('E1',), 'bs': ('true',)}
    tokens = ('e', 'sta', 'st', 'sf')

    def member(key, value):
        numeric = value.isdigit() and key not in ('cid', 'cdn')
        if json_form:
            if key == 'ec':
                return f'"ec":["{value}"]'
            return f'"{key}":' + (value if numeric or value == 'true'
                                  else f'"{value}"')
        if value == 'true':
            return key
        if key == 'ec':
            return f'ec=("{value}")'
        return f'{key}=' + (value if numeric or key in tokens
                            else f'"{value}"')

    @st.composite
    def build(draw):
        keys = draw(st.lists(st.sampled_from(sorted(values)), unique=True,
                             max_size=8)) + ['sid', 'ts']
        keys = draw(st.permutations(keys))
        out = []
        for key in keys:
            if key == 'sid':
                value = draw(st.sampled_from(['s-1', 's-2', 'x.y_z~']))
            elif key == 'ts':
                value = str(draw(st.integers(1767225600000, 1767232800000)))
            else:
                value = draw(st.sampled_from(values[key]))
            out.append(member(key, value))
        body = ','.join(out)
        return '{' + body + '}' if json_form else body
    return build()


def _cmcd_access_log():
    return st.builds(
        lambda query: ('cdn-a.example 10.0.0.1 - - [01/Jan/2026:00:00:00 '
                       f'+0000] "GET /v/seg1.m4s?{query} HTTP/1.1" 200 512 '
                       '"-" "player"'),
        st.one_of(_clean_cmcd(False).map(lambda d: 'CMCD=' + quote(d)),
                  _clean_cmcd(False).map(lambda d: 'a=1&CMCD=' + quote(d)),
                  cmcd_dictionaries().map(lambda d: 'CMCD=' + quote(d)),
            cmcd_dictionaries().map(lambda d: 'CMCD=' + d),
            st.sampled_from(['a=1', 'CMCD=%zz', 'x=1CMCD=sid%3D%22s%22',
                             'CMCD=sid%3D%22s%22&CMCD=v%3D2'])))


def cmcd_lines():
    """CMCD in every form the video_qoe job reads: report bodies, JSON
    (odd types, nesting, near-canonical), access-log requests."""
    return mutated(st.one_of(
        _clean_cmcd(True), _clean_cmcd(True), _clean_cmcd(False),
        cmcd_dictionaries(), _canonical_cmcd_json(), _canonical_cmcd_json(),
        json_object(_cmcd_json_fields()), _cmcd_access_log(), deep_nesting(),
        odd_text()))
