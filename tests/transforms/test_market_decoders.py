"""Tests for transforms.market.decoders: JSON and CSV trade lines -> Trade."""
import datetime
import json
import math
import pickle
import random
import re

import apache_beam as beam
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.utils.timestamp import Timestamp

from transforms.decode import Decode, DecodeError, Filtered, decode_payload
from transforms.market import decoders
from transforms.market.decoders import (CSV_COLUMNS, HeaderLine,
                                        decode_csv_trade, decode_json_trade,
                                        decode_trade_line)
from transforms.market.records import Trade

UTC = datetime.timezone.utc
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=UTC)


def ts(*args, tz=UTC) -> Timestamp:
    return Timestamp.from_utc_datetime(
        datetime.datetime(*args, tzinfo=tz).astimezone(UTC))


def epoch_ms(dt: datetime.datetime) -> int:
    """Epoch milliseconds of an aware datetime, by timedelta arithmetic."""
    return (dt - EPOCH) // datetime.timedelta(milliseconds=1)


def refusal(decoder, text) -> str:
    with pytest.raises(DecodeError) as err:
        decoder(text)
    return str(err.value)


# ------------------------------------------------------------------ JSON lines

# A consolidated-feed style print, with keys the decoder does not read.
FEED = ('{"event_time":"2026-01-02T14:30:00.123Z","symbol":"AAPL",'
        '"price":187.42,"size":100,"trade_id":"52983525029461",'
        '"venue":"XNAS","conditions":["@","I"],"tape":"C","seq":1021}')
# Epoch milliseconds, integer trade id, lower-case symbol, single condition.
EPOCH_MS = ('{"event_time":1767364200123,"symbol":" msft ","price":410.5,'
            '"size":35,"trade_id":9001,"venue":"ARCX","conditions":"T"}')
# A zone offset, fractional size, no optional fields.
OFFSET = ('{"event_time":"2026-01-02T09:30:00.5-05:00","symbol":"BRK.B",'
          '"price":455.01,"size":0.5}')


def test_decode_json_feed_line():
    assert decode_json_trade(FEED) == Trade(
        event_time=ts(2026, 1, 2, 14, 30, 0, 123000), symbol='AAPL',
        price=187.42, size=100.0, trade_id='52983525029461', venue='XNAS',
        conditions='@,I')


def test_decode_json_epoch_ms_and_integer_trade_id():
    trade = decode_json_trade(EPOCH_MS + '\n')
    # 1767364200 s is 2026-01-02T14:30:00Z.
    assert trade.event_time == ts(2026, 1, 2, 14, 30, 0, 123000)
    assert (trade.symbol, trade.trade_id, trade.conditions) == \
        ('MSFT', '9001', 'T')
    assert isinstance(trade.size, float) and trade.size == 35.0


def test_decode_json_offset_and_absent_optional_fields():
    trade = decode_json_trade(OFFSET)
    assert trade.event_time == ts(2026, 1, 2, 14, 30, 0, 500000)
    assert (trade.symbol, trade.size) == ('BRK.B', 0.5)
    assert (trade.trade_id, trade.venue, trade.conditions) == (None, '', '')


def test_decode_json_nulls_are_absent_optional_fields():
    trade = decode_json_trade(
        '{"event_time":"2026-01-02T14:30:00Z","symbol":"X","price":1,'
        '"size":1,"trade_id":null,"venue":null,"conditions":null}')
    assert (trade.trade_id, trade.venue, trade.conditions) == (None, '', '')


@pytest.mark.parametrize('conditions, expected', [
    ([], ''),
    (['@'], '@'),
    ([' Z ', '', 'T', 'Z', '  '], 'Z,T'),        # stripped, no empties/repeats
    (['T', '@', 'T', 'I'], 'T,@,I'),             # order kept, not sorted
    ('@', '@'),
    ('@,T', '@,T'),
    ('T;@|T', 'T,@'),
    ('', ''),
    ('  ', ''),
])
def test_decode_json_conditions(conditions, expected):
    line = ('{"event_time":"2026-01-02T14:30:00Z","symbol":"X","price":1,'
            '"size":1,"conditions":%s}' % _json(conditions))
    assert decode_json_trade(line).conditions == expected


def _json(value) -> str:
    return json.dumps(value)


def test_decode_json_strips_a_byte_order_mark():
    assert decode_json_trade('\ufeff' + FEED) == decode_json_trade(FEED)


# A valid object; each hostile case below replaces or removes one key.
BASE = {'event_time': '2026-01-02T14:30:00Z', 'symbol': 'AAPL',
        'price': 187.5, 'size': 100, 'trade_id': 'A-1', 'venue': 'XNAS',
        'conditions': ['@']}
_ABSENT = object()


def _line(**changes) -> str:
    doc = dict(BASE)
    for key, value in changes.items():
        if value is _ABSENT:
            del doc[key]
        else:
            doc[key] = value
    return _json(doc)


@pytest.mark.parametrize('field', ['event_time', 'symbol', 'price', 'size'])
@pytest.mark.parametrize('value', [_ABSENT, None])
def test_json_missing_required_field(field, value):
    assert refusal(decode_json_trade, _line(**{field: value})) == \
        f'missing {field}'


@pytest.mark.parametrize('field, value, shown', [
    ('event_time', True, 'True'),
    ('event_time', ['2026-01-02T14:30:00Z'], "['2026-01-02T14:30:00Z']"),
    ('event_time', {'ms': 1}, "{'ms': 1}"),
    ('symbol', 42, '42'),
    ('symbol', ['AAPL'], "['AAPL']"),
    ('price', '187.5', "'187.5'"),
    ('price', True, 'True'),
    ('price', False, 'False'),
    ('price', [1], '[1]'),
    ('size', '100', "'100'"),
    ('size', True, 'True'),
    ('trade_id', 1.5, '1.5'),
    ('trade_id', True, 'True'),
    ('trade_id', ['x'], "['x']"),
    ('venue', 7, '7'),
    ('venue', {'mic': 'XNAS'}, "{'mic': 'XNAS'}"),
    ('conditions', 12, '12'),
    ('conditions', {'c': '@'}, "{'c': '@'}"),
    ('conditions', ['@', 12], '12'),
    ('conditions', ['@', None], 'None'),
])
def test_json_wrongly_typed_field(field, value, shown):
    assert refusal(decode_json_trade, _line(**{field: value})) == \
        f'wrongly typed field {field}: {shown}'


@pytest.mark.parametrize('changes, reason', [
    ({'price': 0}, 'field price not positive: 0'),
    ({'price': 0.0}, 'field price not positive: 0.0'),
    ({'price': -187.5}, 'field price not positive: -187.5'),
    ({'size': 0}, 'field size not positive: 0'),
    ({'size': -100}, 'field size not positive: -100'),
    ({'symbol': ''}, 'missing symbol'),
    ({'symbol': '   '}, 'missing symbol'),
    ({'symbol': 'A' * 33}, f"invalid symbol: '{'A' * 33}'"),
    ({'symbol': 'BRK B'}, "invalid symbol: 'BRK B'"),
    ({'symbol': 'AAPL!'}, "invalid symbol: 'AAPL!'"),
    # 'ß'.upper() is 'SS': non-ASCII is refused before upper-casing.
    ({'symbol': 'ß'}, "invalid symbol: 'ß'"),
    ({'conditions': ['@,T']}, "invalid condition code: '@,T'"),
    ({'conditions': ['a|b']}, "invalid condition code: 'a|b'"),
    ({'event_time': 1767364200},
     'event_time: epoch seconds are ambiguous, give milliseconds'),
    ({'event_time': 1767364200.5},
     'event_time: epoch seconds are ambiguous, give milliseconds'),
    ({'event_time': '1767364200'},
     'event_time: epoch seconds are ambiguous, give milliseconds'),
    ({'event_time': 0},
     'event_time: epoch seconds are ambiguous, give milliseconds'),
    ({'event_time': -1767364200123},
     'event_time: negative timestamp: -1767364200123'),
    ({'event_time': 253402300800000},
     'event_time: timestamp after 9999: 253402300800000'),
    ({'event_time': 1e300}, 'event_time: timestamp after 9999: 1e+300'),
    ({'event_time': '2026-01-02T14:30:00'},
     "event_time: timestamp without time zone: '2026-01-02T14:30:00'"),
    ({'event_time': '1969-12-31T23:59:59Z'},
     "event_time: timestamp before 1970: '1969-12-31T23:59:59Z'"),
    ({'event_time': '2026-02-30T00:00:00Z'},
     'event_time: invalid date or time: day is out of range for month'),
    ({'event_time': 'yesterday'},
     "event_time: unrecognised timestamp: 'yesterday'"),
    ({'event_time': ''}, 'missing event_time'),
])
def test_json_refused_values(changes, reason):
    assert refusal(decode_json_trade, _line(**changes)) == reason


@pytest.mark.parametrize('text, reason', [
    ('', 'empty line'),
    ('  \n', 'empty line'),
    ('[1, 2]', 'JSON value is not an object: list'),
    ('"AAPL"', 'JSON value is not an object: str'),
])
def test_json_refused_lines(text, reason):
    assert refusal(decode_json_trade, text) == reason


@pytest.mark.parametrize('text', [
    FEED[:len(FEED) // 2],                                   # truncated
    '{"event_time":NaN,"symbol":"X","price":1,"size":1}',
    '{"event_time":"2026-01-02T14:30:00Z","symbol":"X","price":1e400,'
    '"size":1}',
    '{"a":1,}',
])
def test_json_invalid_json_is_refused(text):
    assert refusal(decode_json_trade, text).startswith('invalid JSON: ')


def test_json_huge_but_finite_numbers_are_accepted():
    trade = decode_json_trade(_line(price=1.5e308, size=18446744073709551615))
    assert trade.price == 1.5e308
    assert trade.size == float(18446744073709551615)


# ------------------------------------------------------------------- CSV lines

def test_decode_csv_full_line_with_quoted_conditions():
    line = '2026-01-02T14:30:00.123Z,AAPL,187.42,100,52983525029461,XNAS,"@,I"'
    assert decode_csv_trade(line + '\r\n') == Trade(
        event_time=ts(2026, 1, 2, 14, 30, 0, 123000), symbol='AAPL',
        price=187.42, size=100.0, trade_id='52983525029461', venue='XNAS',
        conditions='@,I')


@pytest.mark.parametrize('line, fields', [
    # Trailing optional columns left out.
    ('1767364200123,msft,410.5,35',
     ('MSFT', 410.5, 35.0, None, '', '')),
    ('1767364200123,msft,410.5,35,T-9',
     ('MSFT', 410.5, 35.0, 'T-9', '', '')),
    # Empty optional fields.
    ('1767364200123,MSFT,410.5,35,,,', ('MSFT', 410.5, 35.0, None, '', '')),
    # Unquoted codes separated by ';' or '|', repeats and blanks dropped.
    ('1767364200123,MSFT,410.5,35,,XNYS,T;@| T;;',
     ('MSFT', 410.5, 35.0, None, 'XNYS', 'T,@')),
    # Spaces after commas, quoted fields, a quote escaped by doubling.
    ('1767364200123, "brk.b", 4.5e2, "1e2", "id ""7""", ARCX, "Z"',
     ('BRK.B', 450.0, 100.0, 'id "7"', 'ARCX', 'Z')),
    # Explicit plus sign and leading dot are decimal text too.
    ('1767364200123,X,+.5,10', ('X', 0.5, 10.0, None, '', '')),
])
def test_decode_csv_lines(line, fields):
    trade = decode_csv_trade(line)
    assert trade.event_time == ts(2026, 1, 2, 14, 30, 0, 123000)
    assert tuple(trade)[1:] == fields


@pytest.mark.parametrize('line', [
    'event_time,symbol,price,size,trade_id,venue,conditions',
    'EVENT_TIME,SYMBOL,PRICE,SIZE',
    '"event_time","symbol"',
    ' Event_Time ,anything at all',
    '\ufeffevent_time,symbol,price,size',
    'event_time',
])
def test_csv_header_line_raises_header_line(line):
    with pytest.raises(HeaderLine) as err:
        decode_csv_trade(line)
    assert str(err.value) == 'csv header line' == decoders.HEADER_REASON
    assert isinstance(err.value, DecodeError)
    with pytest.raises(HeaderLine):
        decode_trade_line(line)


def test_the_documented_header_is_a_header_line():
    assert CSV_COLUMNS == ('event_time', 'symbol', 'price', 'size', 'trade_id',
                           'venue', 'conditions')
    with pytest.raises(HeaderLine):
        decode_trade_line(','.join(CSV_COLUMNS) + '\n')


def test_header_line_is_a_named_filter_not_a_dead_letter():
    result = decode_payload(b'event_time,symbol,price,size\n',
                            decode_trade_line, 'decode.trades')
    assert result == Filtered('csv_header')


@pytest.mark.parametrize('line, reason', [
    ('', 'empty line'),
    (' \r\n', 'empty line'),
    (',,,', 'missing event_time'),
    ('2026-01-02T14:30:00Z', 'missing symbol'),
    ('2026-01-02T14:30:00Z,AAPL', 'missing price'),
    ('2026-01-02T14:30:00Z,AAPL,187.5', 'missing size'),
    ('2026-01-02T14:30:00Z,AAPL,,100', 'missing price'),
    ('2026-01-02T14:30:00Z," ",187.5,100', 'missing symbol'),
    ('2026-01-02T14:30:00Z,AAPL,187.5,100,id,XNAS,@,extra',
     'too many CSV fields: 8 > 7'),
    ('2026-01-02T14:30:00Z,AAPL,abc,100', "wrongly typed field price: 'abc'"),
    ('2026-01-02T14:30:00Z,AAPL,nan,100', "wrongly typed field price: 'nan'"),
    ('2026-01-02T14:30:00Z,AAPL,inf,100', "wrongly typed field price: 'inf'"),
    ('2026-01-02T14:30:00Z,AAPL,1_000,100',
     "wrongly typed field price: '1_000'"),
    ('2026-01-02T14:30:00Z,AAPL,$187.5,100',
     "wrongly typed field price: '$187.5'"),
    ('2026-01-02T14:30:00Z,AAPL,1e999,100',
     "field price not finite: '1e999'"),
    ('2026-01-02T14:30:00Z,AAPL,0,100', "field price not positive: '0'"),
    ('2026-01-02T14:30:00Z,AAPL,187.5,-100',
     "field size not positive: '-100'"),
    ('2026-01-02T14:30:00Z,AAPL,187.5,0.0', "field size not positive: '0.0'"),
    ('2026-01-02T14:30:00Z,AAPL/USD,187.5,1',
     "invalid symbol: 'AAPL/USD'"),
    ('1767364200,AAPL,187.5,100',
     'event_time: epoch seconds are ambiguous, give milliseconds'),
    ('1767364200.123,AAPL,187.5,100',
     'event_time: epoch seconds are ambiguous, give milliseconds'),
    ('-1767364200123,AAPL,187.5,100',
     "event_time: negative timestamp: '-1767364200123'"),
    ('1e999999999,AAPL,187.5,100',
     "event_time: timestamp after 9999: '1e999999999'"),
    ('2026-01-02 14:30:00,AAPL,187.5,100',
     "event_time: timestamp without time zone: '2026-01-02 14:30:00'"),
    ('2026-01-02T14:30:00Z,AAPL,"187.5,100', 'invalid CSV: unexpected end of data'),
    ('2026-01-02T14:30:00Z,"AAPL"x,187.5,100',
     'invalid CSV: \',\' expected after \'"\''),
    ('2026-01-02T14:30:00Z,"AAPL" ,187.5,100',
     'invalid CSV: \',\' expected after \'"\''),
    ('2026-01-02T14:30:00Z,AAPL\n,187.5,100', 'invalid CSV: new-line '
     'character seen in unquoted field - do you need to open the file in '
     'universal-newline mode?'),
])
def test_csv_refused_lines(line, reason):
    assert refusal(decode_csv_trade, line) == reason


def test_csv_custom_column_order():
    columns = ('symbol', 'price', 'size', 'event_time', 'venue')
    trade = decode_csv_trade('aapl,187.5,100,1767364200123,XNYS', columns)
    assert trade == Trade(
        event_time=ts(2026, 1, 2, 14, 30, 0, 123000), symbol='AAPL',
        price=187.5, size=100.0, trade_id=None, venue='XNYS', conditions='')
    # The header of that order starts with its first column.
    with pytest.raises(HeaderLine):
        decode_csv_trade('Symbol,price,size,event_time,venue', columns)


@pytest.mark.parametrize('columns, message', [
    (('event_time', 'symbol', 'price'), 'lack required size'),
    (('event_time', 'symbol', 'price', 'size', 'size'), 'repeated'),
    (('event_time', 'symbol', 'price', 'size', 'exchange'),
     "unknown CSV column(s) 'exchange'"),
    ('event_time,symbol,price,size', 'sequence of names'),
])
def test_bad_csv_columns_are_refused_when_the_decoder_is_made(columns, message):
    with pytest.raises(ValueError) as err:
        decoders.make_decoder('csv', columns=columns)
    assert message in str(err.value)
    assert not isinstance(err.value, DecodeError)


# ------------------------------------------------------------ the same instant

@pytest.mark.parametrize('dt', [
    datetime.datetime(2026, 1, 2, 14, 30, 0, 123000, tzinfo=UTC),
    datetime.datetime(2026, 3, 8, 1, 59, 59, 999000,
                      tzinfo=datetime.timezone(datetime.timedelta(hours=-5))),
    datetime.datetime(2000, 2, 29, 23, 59, 59, 1000,
                      tzinfo=datetime.timezone(datetime.timedelta(hours=5,
                                                                  minutes=30))),
    # The smallest accepted epoch milliseconds: 1e11 ms.
    datetime.datetime(1973, 3, 3, 9, 46, 40, tzinfo=UTC),
    datetime.datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC),
])
def test_epoch_ms_and_rfc3339_give_the_same_instant(dt):
    ms = epoch_ms(dt)
    expected = Timestamp(micros=ms * 1000)
    # Independently: the instant from the datetime itself.
    assert expected == Timestamp.from_utc_datetime(dt.astimezone(UTC))
    rfc = dt.isoformat(timespec='milliseconds')
    zulu = dt.astimezone(UTC).isoformat(timespec='milliseconds').replace(
        '+00:00', 'Z')
    lines = [
        '{"event_time":%d,"symbol":"X","price":1,"size":1}' % ms,
        '{"event_time":%r,"symbol":"X","price":1,"size":1}' % float(ms),
        '{"event_time":"%d","symbol":"X","price":1,"size":1}' % ms,
        '{"event_time":"%s","symbol":"X","price":1,"size":1}' % rfc,
        '{"event_time":"%s","symbol":"X","price":1,"size":1}' % zulu,
        f'{ms},X,1,1',
        f'{rfc},X,1,1',
        f'{zulu},X,1,1',
    ]
    for line in lines:
        assert decode_trade_line(line).event_time == expected, line


def test_fractional_epoch_ms_keep_microseconds():
    dt = datetime.datetime(2026, 1, 2, 14, 30, 0, 123456, tzinfo=UTC)
    micros = (dt - EPOCH) // datetime.timedelta(microseconds=1)
    text = f'{micros // 1000}.{micros % 1000:03d}'
    assert decode_csv_trade(f'{text},X,1,1').event_time == \
        Timestamp(micros=micros)
    assert decode_json_trade(
        '{"event_time":%s,"symbol":"X","price":1,"size":1}' % text
    ).event_time == Timestamp(micros=micros)


def test_just_below_1e11_is_ambiguous():
    assert refusal(decode_csv_trade, '99999999999,X,1,1') == \
        'event_time: epoch seconds are ambiguous, give milliseconds'


# ------------------------------------------------------------- hostile input

VALID_LINES = [
    FEED, EPOCH_MS, OFFSET,
    '2026-01-02T14:30:00.123Z,AAPL,187.42,100,52983525029461,XNAS,"@,I"',
    '1767364200123, "brk.b", 4.5e2, "1e2", "id ""7""", ARCX, "Z"',
]
SYMBOL_RE = re.compile(r'[A-Z0-9._-]{1,32}')


def _decode_or_refuse(decoder, text):
    """The Trade, or None if refused with a DecodeError; anything else fails."""
    try:
        trade = decoder(text)
    except DecodeError as e:
        reason = str(e)
        assert reason and '\n' not in reason, repr(reason)
        return None
    assert isinstance(trade, Trade)
    assert SYMBOL_RE.fullmatch(trade.symbol)
    assert math.isfinite(trade.price) and trade.price > 0
    assert math.isfinite(trade.size) and trade.size > 0
    assert isinstance(trade.event_time, Timestamp)
    return trade


@pytest.mark.parametrize('line', VALID_LINES)
def test_every_prefix_is_decoded_or_refused(line):
    decoder = decode_json_trade if line.startswith('{') else decode_csv_trade
    assert _decode_or_refuse(decoder, line) is not None
    for end in range(len(line)):
        for fn in (decoder, decode_trade_line):
            _decode_or_refuse(fn, line[:end])


def test_random_mutations_are_decoded_or_refused():
    rng = random.Random(1234)
    outcomes = []
    alphabet = ('{}[]",:;|.-+eE0123456789 \t\n\r\x00\\\ufeffZT'
                'nulltruefalseNaN\u00df\u0131\U0001F600')
    for _ in range(3000):
        chars = list(rng.choice(VALID_LINES))
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(chars))
            op = rng.random()
            if op < 0.4:
                chars[i] = rng.choice(alphabet)
            elif op < 0.7:
                del chars[i]
            else:
                chars.insert(i, rng.choice(alphabet))
        text = ''.join(chars)
        for fn in (decode_trade_line, decode_json_trade, decode_csv_trade):
            outcomes.append(_decode_or_refuse(fn, text) is not None)
    # Both outcomes occur: the mutations neither all break nor all miss.
    assert 0.05 < sum(outcomes) / len(outcomes) < 0.95


@pytest.mark.parametrize('value', [None, b'{"a":1}', 12, ['x']])
def test_non_text_input_is_refused(value):
    for fn in (decode_trade_line, decode_json_trade, decode_csv_trade):
        with pytest.raises(DecodeError):
            fn(value)


# ------------------------------------------------------------ auto and factory

def test_auto_picks_json_or_csv_by_the_first_character():
    assert decode_trade_line('  \t' + FEED) == decode_json_trade(FEED)
    csv_line = '2026-01-02T14:30:00.123Z,AAPL,187.42,100,52983525029461,XNAS,"@,I"'
    assert decode_trade_line(csv_line) == decode_json_trade(FEED)
    # Not JSON: read as CSV and refused there.
    assert refusal(decode_trade_line, '[1,2]') == 'missing price'
    assert refusal(decode_trade_line, '[1,2,3,4]') == \
        "event_time: unrecognised timestamp: '[1'"
    assert refusal(decode_trade_line, '  ') == 'empty line'


@pytest.mark.parametrize('fmt', decoders.FORMATS)
def test_make_decoder_gives_picklable_decoders(fmt):
    decoder = decoders.make_decoder(fmt)
    clone = pickle.loads(pickle.dumps(decoder))
    if fmt != 'csv':
        assert clone(FEED) == decode_json_trade(FEED)
    if fmt != 'json':
        line = '1767364200123,msft,410.5,35'
        assert clone(line) == decode_csv_trade(line)


def test_make_decoder_with_columns_is_picklable():
    decoder = decoders.make_decoder('auto', columns=['symbol', 'event_time',
                                                     'price', 'size'])
    clone = pickle.loads(pickle.dumps(decoder))
    assert clone('MSFT,1767364200123,410.5,35').symbol == 'MSFT'
    assert clone(FEED).symbol == 'AAPL'


@pytest.mark.parametrize('fmt', ['xml', '', 'JSON', None])
def test_make_decoder_refuses_unknown_formats(fmt):
    with pytest.raises(ValueError) as err:
        decoders.make_decoder(fmt)
    assert str(err.value) == \
        f'unknown trade format {fmt!r}; accepted: auto, json, csv'


def test_decoder_in_a_pipeline():
    lines = [FEED.encode('utf-8'), b'1767364200123,msft,410.5,35\n',
             b'event_time,symbol,price,size\n', b'\xff\xfe not utf-8',
             _line(price='187.5').encode('utf-8')]
    with test_pipeline.TestPipeline() as p:
        decoded = (p | beam.Create(lines)
                   | Decode(decoders.make_decoder('auto'),
                            stage='decode.trades', job='trades'))
        assert_that(
            decoded.ok | 'Stamped' >> beam.Map(
                lambda t, stamp=beam.DoFn.TimestampParam: (
                    t.symbol, t.event_time == stamp)),
            equal_to([('AAPL', True), ('MSFT', True)]), label='ok')
        assert_that(decoded.dead | 'Reasons' >> beam.Map(lambda d: d.reason),
                    equal_to(['not UTF-8: invalid byte at offset 0',
                              "wrongly typed field price: '187.5'"]),
                    label='dead')
