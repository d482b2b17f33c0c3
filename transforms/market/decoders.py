"""Trade decoders: one line of text -> :class:`~transforms.market.records.Trade`.

Each decoder is a plain function ``str -> Trade`` that raises
:class:`transforms.decode.DecodeError` with a one-line reason for lines it
refuses, as :class:`transforms.decode.Decode` expects.

* :func:`decode_json_trade` -- one JSON object per line;
* :func:`decode_csv_trade` -- one CSV line, columns as in :data:`CSV_COLUMNS`;
* :func:`decode_trade_line` -- JSON if the line starts with '{', else CSV.

Use :func:`make_decoder` to get a picklable decoder for a ``--format`` option.

The rules shared by both formats:

* ``event_time`` is RFC 3339 text with a zone (see
  :func:`transforms.formats.parse_time`) or epoch *milliseconds*: a number (or,
  in text, numeric text) of at least 1e11.  Smaller numbers would be epoch
  seconds or milliseconds of early 1973 and are refused as ambiguous.
* ``symbol`` is stripped and upper-cased; it must then be 1..32 ASCII
  characters of ``[A-Z0-9._-]``.
* ``price`` and ``size`` are finite numbers > 0.  In JSON they must be JSON
  numbers (numeric strings and booleans are refused); in CSV, decimal text.
* ``trade_id`` is optional; text is stripped and an empty one is None.
* ``venue`` is optional ('' when absent), stripped.
* ``conditions`` is optional: codes are stripped, empty ones dropped, repeated
  ones dropped (the first occurrence keeps its place) and the rest joined by
  ','.  A text holding several codes separates them by ',', ';' or '|'; a code
  given as a JSON list element must not contain any of those separators.
"""
import functools
import math
import re

from transforms import formats
from transforms.decode import DecodeError
from transforms.market.records import Trade

FORMATS = ('auto', 'json', 'csv')

CSV_COLUMNS = ('event_time', 'symbol', 'price', 'size', 'trade_id', 'venue',
               'conditions')
REQUIRED = ('event_time', 'symbol', 'price', 'size')

# The reason a header line is refused with (see HeaderLine).
HEADER_REASON = formats.HEADER_REASON

MAX_SYMBOL_CHARS = 32
_SYMBOL_RE = re.compile(r'[A-Z0-9._-]{1,%d}' % MAX_SYMBOL_CHARS, re.ASCII)
# Separators between condition codes held in one text.
CONDITION_SEPARATORS = ',;|'
_CONDITION_SPLIT_RE = re.compile(r'[,;|]')

# The time and CSV field rules live in transforms.formats, shared with the
# sensors job; these names stay for the callers of this module.
MS_THRESHOLD = formats.EPOCH_MS_THRESHOLD
HeaderLine = formats.HeaderLine
_MAX_NUMBER_CHARS = 64


# -------------------------------------------------------------------- helpers

def normalise_symbol(value) -> str:
    """A symbol, stripped and upper-cased; DecodeError unless it is then 1..32
    ASCII characters of ``[A-Z0-9._-]``."""
    if not isinstance(value, str):
        raise formats.wrong_type('symbol', value)
    text = value.strip()
    if not text:
        raise DecodeError('missing symbol')
    # isascii first: str.upper() turns some non-ASCII letters into ASCII ones.
    symbol = text.upper()
    if not text.isascii() or _SYMBOL_RE.fullmatch(symbol) is None:
        raise DecodeError(f'invalid symbol: {formats.short_repr(value)}')
    return symbol


def _positive(field: str, number: float, value) -> float:
    if not math.isfinite(number):
        raise DecodeError(
            f'field {field} not finite: {formats.short_repr(value)}')
    if number <= 0:
        raise DecodeError(
            f'field {field} not positive: {formats.short_repr(value)}')
    return number


def _json_positive(field: str, value) -> float:
    if not formats.is_number(value):
        raise formats.wrong_type(field, value)
    try:
        number = float(value)
    except OverflowError:
        raise DecodeError(
            f'field {field} not finite: {formats.short_repr(value)}') from None
    return _positive(field, number, value)


def _text_positive(field: str, value: str) -> float:
    text = value.strip()
    if not text:
        raise DecodeError(f'missing {field}')
    if len(text) > _MAX_NUMBER_CHARS or not formats.DECIMAL_TEXT_RE.fullmatch(text):
        raise formats.wrong_type(field, value)
    return _positive(field, float(text), value)


def _trade_id_text(value: str):
    text = value.strip()
    return text or None


def _join_codes(codes) -> str:
    """Stripped codes, empty and repeated ones dropped, joined by ','."""
    seen = {}
    for code in codes:
        code = code.strip()
        if code and code not in seen:
            seen[code] = None
    return ','.join(seen)


def _conditions_text(text: str) -> str:
    return _join_codes(_CONDITION_SPLIT_RE.split(text))


# ----------------------------------------------------------------------- JSON

def _json_required(obj: dict, field: str):
    value = obj.get(field)
    if value is None:
        raise DecodeError(f'missing {field}')
    return value


def _json_trade_id(value):
    if value is None:
        return None
    if isinstance(value, str):
        return _trade_id_text(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise formats.wrong_type('trade_id', value)


def _json_venue(value) -> str:
    if value is None:
        return ''
    if not isinstance(value, str):
        raise formats.wrong_type('venue', value)
    return value.strip()


def _json_conditions(value) -> str:
    if value is None:
        return ''
    if isinstance(value, str):
        return _conditions_text(value)
    if not isinstance(value, list):
        raise formats.wrong_type('conditions', value)
    for code in value:
        if not isinstance(code, str):
            raise formats.wrong_type('conditions', code)
        if _CONDITION_SPLIT_RE.search(code):
            raise DecodeError(
                f'invalid condition code: {formats.short_repr(code)}')
    return _join_codes(value)


def decode_json_trade(text: str) -> Trade:
    """A JSON object line -> Trade.

    Keys: ``event_time``, ``symbol``, ``price``, ``size`` (required; null counts
    as missing) and ``trade_id``, ``venue``, ``conditions`` (optional); other
    keys are ignored.  See the module docstring for the rules of each field.
    """
    if isinstance(text, str) and text.startswith(formats.BOM):
        text = text[1:]
    obj = formats.parse_json_object(text)
    event_time = formats.json_event_time(obj)
    symbol = normalise_symbol(_json_required(obj, 'symbol'))
    price = _json_positive('price', _json_required(obj, 'price'))
    size = _json_positive('size', _json_required(obj, 'size'))
    return Trade(
        event_time=event_time,
        symbol=symbol,
        price=price,
        size=size,
        trade_id=_json_trade_id(obj.get('trade_id')),
        venue=_json_venue(obj.get('venue')),
        conditions=_json_conditions(obj.get('conditions')))


# ------------------------------------------------------------------------ CSV

@functools.lru_cache(maxsize=32)
def _column_positions(columns: tuple) -> dict:
    """Column name -> position; ValueError for a column list that cannot work."""
    unknown = [c for c in columns if c not in CSV_COLUMNS]
    if unknown:
        raise ValueError(f'unknown CSV column(s) {", ".join(map(repr, unknown))}; '
                         f'accepted: {", ".join(CSV_COLUMNS)}')
    if len(set(columns)) != len(columns):
        raise ValueError(f'repeated CSV column in {columns!r}')
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise ValueError(f'CSV columns lack required {", ".join(missing)}')
    return {name: i for i, name in enumerate(columns)}


def check_columns(columns) -> tuple:
    """``columns`` as a tuple, after checking it names known columns, each
    once, and all of REQUIRED; ValueError otherwise."""
    if isinstance(columns, str) or not all(isinstance(c, str) for c in columns):
        raise ValueError(f'CSV columns must be a sequence of names, '
                         f'got {columns!r}')
    columns = tuple(columns)
    _column_positions(columns)
    return columns


def decode_csv_trade(text: str, columns=CSV_COLUMNS) -> Trade:
    """One CSV line -> Trade.

    Fields come in the order of ``columns`` (default :data:`CSV_COLUMNS`);
    trailing optional columns may be left out, and empty optional fields are
    absent.  Quoted fields are allowed (``"@,T"`` holds two condition codes;
    unquoted, codes are separated by ';' or '|').  A line whose first field is
    the name of the first column (case-insensitively), i.e. a header, raises
    :class:`HeaderLine`.
    """
    positions = _column_positions(tuple(columns))
    fields = formats.csv_fields(text)
    first = fields[0].strip() if fields else ''
    if first.lower() == columns[0]:
        raise HeaderLine()
    if len(fields) > len(positions):
        raise DecodeError(
            f'too many CSV fields: {len(fields)} > {len(positions)}')

    def field(name):
        i = positions.get(name)
        return fields[i] if i is not None and i < len(fields) else ''

    for name in REQUIRED:
        if not field(name).strip():
            raise DecodeError(f'missing {name}')
    return Trade(
        event_time=formats.time_from_text(field('event_time')),
        symbol=normalise_symbol(field('symbol')),
        price=_text_positive('price', field('price')),
        size=_text_positive('size', field('size')),
        trade_id=_trade_id_text(field('trade_id')),
        venue=field('venue').strip(),
        conditions=_conditions_text(field('conditions')))


# ----------------------------------------------------------------------- auto

def decode_trade_line(text: str, columns=CSV_COLUMNS) -> Trade:
    """Any supported trade line -> Trade: JSON when its first non-space
    character is '{', else CSV (with ``columns``)."""
    if not isinstance(text, str):
        raise DecodeError(f'trade line is not text: {type(text).__name__}')
    stripped = text.lstrip()
    if stripped.startswith(formats.BOM):
        stripped = stripped[1:].lstrip()
    if not stripped:
        raise DecodeError('empty line')
    if stripped[0] == '{':
        return decode_json_trade(stripped)
    return decode_csv_trade(text, columns)


def make_decoder(fmt: str, columns=CSV_COLUMNS):
    """A picklable decoder ``str -> Trade`` for one of FORMATS.

    ``columns`` is the CSV column order (formats 'auto' and 'csv'); it is
    checked here, so that a wrong one fails when the job is built.
    """
    columns = check_columns(columns)
    if fmt == 'auto':
        if columns == CSV_COLUMNS:
            return decode_trade_line
        return functools.partial(decode_trade_line, columns=columns)
    if fmt == 'json':
        return decode_json_trade
    if fmt == 'csv':
        if columns == CSV_COLUMNS:
            return decode_csv_trade
        return functools.partial(decode_csv_trade, columns=columns)
    raise ValueError(
        f'unknown trade format {fmt!r}; accepted: {", ".join(FORMATS)}')
