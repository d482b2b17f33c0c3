"""Tests for transforms.synthetic.trades: the synthetic trade stream."""
import collections
import datetime
import math
import re
import statistics

import orjson
import pytest
from apache_beam.utils.timestamp import Timestamp

from transforms import io
from transforms.decode import DecodeError
from transforms.io import UriError, check_uri
from transforms.io.synthetic import describe_params, params_of
from transforms.market.decoders import decode_trade_line
from transforms.synthetic import trades

UTC = datetime.timezone.utc
# The default start, 2026-01-01T14:30:00Z, computed here independently.
T0 = (datetime.datetime(2026, 1, 1, 14, 30, tzinfo=UTC)
      - datetime.datetime(1970, 1, 1, tzinfo=UTC)).total_seconds()
DEFAULT_SYMBOLS = ['AAPL', 'MSFT', 'GOOG', 'AMZN']
RFC3339_MS = re.compile(
    rb'\{"event_time":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"')


def params(**overrides):
    """The trades domain's parameters: its documented defaults, overridden."""
    values = {name: default for name, (_, default, _) in trades.PARAMS.items()}
    unknown = set(overrides) - set(values)
    assert not unknown, unknown
    values.update(overrides)
    return values


class Rec(collections.namedtuple('Rec', 'tick t payload watermark trade')):
    """One record as it arrives: its tick, event time, payload, the watermark
    before it arrived and the decoded Trade (None if refused)."""


def decode(payload: bytes):
    try:
        return decode_trade_line(payload.decode('utf-8'))
    except (DecodeError, UnicodeDecodeError):
        return None


def records_of(stream):
    out = []
    watermark = -math.inf
    for i, (records, tick_watermark) in enumerate(stream.ticks):
        for t, payload in records:
            out.append(Rec(i, t, payload, watermark, decode(payload)))
        watermark = tick_watermark
    return out


def originals(recs):
    """Records without the re-sent copies (the first arrival of a payload)."""
    seen = set()
    out = []
    for rec in recs:
        if rec.payload not in seen:
            seen.add(rec.payload)
            out.append(rec)
    return out


def by_symbol(recs):
    """Valid original trades per symbol, in trade-number order."""
    out = collections.defaultdict(list)
    for rec in originals(recs):
        if rec.trade is not None:
            out[rec.trade.symbol].append(rec.trade)
    for symbol, items in out.items():
        items.sort(key=lambda trade: int(trade.trade_id.rsplit('-', 1)[1]))
    return out


@pytest.fixture(scope='module')
def default_recs():
    return records_of(trades.generate(params()))


@pytest.fixture(scope='module')
def dirty_recs():
    return records_of(trades.generate(params(
        seed=3, late=0.05, malformed=0.05, duplicates=0.05, fat_finger=0.01)))


# -------------------------------------------------------------- determinism

def test_the_same_params_give_the_same_stream():
    a = trades.generate(params(events=3000, seed=5))
    b = trades.generate(params(events=3000, seed=5))
    assert a.ticks == b.ticks
    assert a.tick_seconds == b.tick_seconds == 1.0


def test_a_different_seed_gives_a_different_stream():
    a = trades.generate(params(events=3000, seed=5))
    b = trades.generate(params(events=3000, seed=6))
    assert list(a.payloads()) != list(b.payloads())


@pytest.mark.parametrize('events', [1, 2, 7, 2500])
def test_events_counts_every_record(events):
    stream = trades.generate(params(events=events, seed=2, duplicates=0.5,
                                    malformed=0.2))
    assert len(stream) == len(list(stream.payloads())) == events


# ------------------------------------------------------------ the payloads

def test_every_good_payload_is_the_documented_json(default_recs):
    good = [r for r in default_recs if r.trade is not None]
    assert len(good) > 0.98 * len(default_recs)
    for rec in good[:2000]:
        doc = orjson.loads(rec.payload)
        assert list(doc) == ['event_time', 'symbol', 'price', 'size',
                             'trade_id', 'venue', 'conditions']
        assert RFC3339_MS.match(rec.payload), rec.payload
        assert doc['price'] == round(doc['price'], 4)
        assert doc['trade_id'].startswith(doc['symbol'] + '-')


def test_payload_time_is_the_stream_event_time(default_recs):
    for rec in default_recs:
        if rec.trade is not None:
            assert rec.trade.event_time == Timestamp(micros=round(rec.t * 1e6))
    times = [r.t for r in default_recs]
    assert T0 <= min(times) < T0 + 1
    # Whole milliseconds.
    assert all(abs(t * 1000 - round(t * 1000)) < 1e-3 for t in times)


def test_symbols_sizes_venues_and_conditions(default_recs):
    good = [r.trade for r in originals(default_recs) if r.trade is not None]
    symbols = collections.Counter(t.symbol for t in good)
    assert sorted(symbols) == sorted(DEFAULT_SYMBOLS)
    sizes = [t.size for t in good]
    assert all(s == int(s) and 1 <= s <= 1000 for s in sizes)
    round_lots = sum(1 for s in sizes if s % 100 == 0) / len(sizes)
    assert 0.3 < round_lots < 0.5
    assert {t.venue for t in good} == {'XNAS', 'XNYS', 'ARCX'}
    conditions = collections.Counter(t.conditions for t in good)
    assert set(conditions) == {'', '@', 'T', 'Z'}
    n = len(good)
    assert 0.002 < conditions['Z'] / n < 0.008
    assert 0.006 < conditions['@'] / n < 0.014
    assert 0.006 < conditions['T'] / n < 0.014


def test_trade_ids_are_unique_per_original_trade(dirty_recs):
    payloads_by_id = collections.defaultdict(set)
    for rec in dirty_recs:
        if rec.trade is not None:
            payloads_by_id[rec.trade.trade_id].add(rec.payload)
    assert all(len(p) == 1 for p in payloads_by_id.values())
    # Numbers count each symbol's trades from 1; malformed records use some.
    numbers = collections.defaultdict(list)
    for trade_id in payloads_by_id:
        symbol, number = trade_id.rsplit('-', 1)
        numbers[symbol].append(int(number))
    malformed = sum(1 for r in dirty_recs if r.trade is None)
    missing = sum(max(ns) - len(ns) for ns in numbers.values())
    assert min(min(ns) for ns in numbers.values()) == 1
    assert 0 < missing <= malformed


# --------------------------------------------------------------- duplicates

def test_duplicates_are_identical_and_arrive_within_ten_seconds(dirty_recs):
    arrivals = collections.defaultdict(list)
    for rec in dirty_recs:
        if rec.trade is not None:
            arrivals[rec.trade.trade_id].append(rec)
    copies = {k: v for k, v in arrivals.items() if len(v) > 1}
    assert all(len(v) == 2 for v in copies.values())
    for first, second in copies.values():
        assert first.payload == second.payload and first.t == second.t
        # Up to 10 s later, i.e. at most 10 ticks of 1 s after the first's tick.
        assert 0 <= second.tick - first.tick <= 10
    # About 5% of the good trades are re-sent.
    assert 0.04 < len(copies) / len(arrivals) < 0.06


def test_default_stream_has_a_few_duplicates(default_recs):
    counts = collections.Counter(r.payload for r in default_recs
                                 if r.trade is not None)
    resent = sum(1 for c in counts.values() if c == 2)
    assert 0.006 < resent / len(counts) < 0.014
    assert max(counts.values()) == 2


# ------------------------------------------------------- late and malformed

def test_late_fraction_is_near_the_param(dirty_recs):
    first = originals(dirty_recs)
    late = [r for r in first if r.t < r.watermark]
    assert 0.04 < len(late) / len(first) < 0.06


def test_stragglers_stay_within_six_minutes():
    stream = trades.generate(params(events=3000, seed=4, late=1.0,
                                    duplicates=0.0))
    for i, (records, _) in enumerate(stream.ticks):
        arrival_end = T0 + (i + 1) * stream.tick_seconds
        for t, _ in records:
            assert 20.0 <= arrival_end - t <= 361.0


def test_malformed_fraction_is_near_the_param(dirty_recs):
    refused = [r for r in dirty_recs if r.trade is None]
    assert 0.04 < len(refused) / len(dirty_recs) < 0.06


def test_every_kind_of_malformed_record_occurs(dirty_recs):
    reasons = set()
    for rec in dirty_recs:
        if rec.trade is not None:
            continue
        try:
            decode_trade_line(rec.payload.decode('utf-8'))
        except UnicodeDecodeError:
            reasons.add('not UTF-8')
        except DecodeError as e:
            reasons.add(str(e).split(':')[0])
    assert reasons == {
        'not UTF-8', 'invalid JSON', 'field price not positive',
        'field size not positive', 'missing symbol',
        'wrongly typed field price', 'empty line'}


def test_clean_stream_is_all_good_on_time_and_unique():
    recs = records_of(trades.generate(params(
        events=5000, seed=8, late=0.0, malformed=0.0, duplicates=0.0)))
    assert all(r.trade is not None for r in recs)
    assert not [r for r in recs if r.t < r.watermark]
    assert len({r.payload for r in recs}) == len(recs)


def test_watermark_advances_every_tick():
    stream = trades.generate(params(events=3000, seed=9))
    marks = [w for _, w in stream.ticks]
    assert all(b > a for a, b in zip(marks, marks[1:]))
    assert marks[0] == T0 + 1.0 - 5.0


# ------------------------------------------------------------------- prices

def _anomalies(items):
    """(index, ratio to the median of up to 5 neighbours each side) of every
    print more than 3x away from its neighbours."""
    prices = [t.price for t in items]
    out = []
    for i, price in enumerate(prices):
        around = prices[max(0, i - 5):i] + prices[i + 1:i + 6]
        ratio = price / statistics.median(around)
        if abs(math.log(ratio)) > math.log(3):
            out.append((i, ratio))
    return out


def test_prices_walk_with_small_steps_except_fat_fingers(dirty_recs):
    per_symbol = by_symbol(dirty_recs)
    total = sum(len(items) for items in per_symbol.values())
    anomalies = 0
    steps = []
    for items in per_symbol.values():
        assert all(t.price > 0 for t in items)
        assert 90 < items[0].price < 330
        bad = _anomalies(items)
        anomalies += len(bad)
        for _, ratio in bad:
            assert min(abs(ratio / 10 - 1), abs(ratio / 0.1 - 1)) < 0.01
        bad_at = {i for i, _ in bad}
        numbers = [int(t.trade_id.rsplit('-', 1)[1]) for t in items]
        for i in range(1, len(items)):
            if i in bad_at or i - 1 in bad_at:
                continue
            step = math.log(items[i].price / items[i - 1].price)
            assert abs(step) < 2e-3, (items[i - 1], items[i])
            if numbers[i] == numbers[i - 1] + 1:
                steps.append(step)
    assert 0.007 < anomalies / total < 0.013
    # The per-trade log-return sigma is 1e-4.
    assert 0.8e-4 < statistics.pstdev(steps) < 1.2e-4


def test_default_stream_has_a_few_fat_fingers(default_recs):
    per_symbol = by_symbol(default_recs)
    anomalies = sum(len(_anomalies(items)) for items in per_symbol.values())
    # 0.1% of about 19,800 trades: about 20.
    assert 5 <= anomalies <= 40, anomalies


# ------------------------------------------------------------- gap, bursts

def _counts_in(recs, symbol, lo, hi):
    return sum(1 for r in originals(recs) if r.trade is not None
               and r.trade.symbol == symbol and T0 + lo <= r.t < T0 + hi)


@pytest.mark.parametrize('gap_s', [180.0, 30.0])
def test_the_last_symbol_stops_trading_during_the_gap(gap_s):
    recs = records_of(trades.generate(params(
        events=20000 if gap_s > 60 else 12000, seed=11, bursts=0.0,
        gap_s=gap_s)))
    assert _counts_in(recs, 'AMZN', 180, 180 + gap_s) == 0
    # Before and after it trades at 50/4 = 12.5 per second.
    assert _counts_in(recs, 'AMZN', 170, 180) > 60
    assert _counts_in(recs, 'AMZN', 180 + gap_s, 190 + gap_s) > 60
    # The others go on at their usual rate.
    for symbol in DEFAULT_SYMBOLS[:-1]:
        expected = 12.5 * gap_s
        got = _counts_in(recs, symbol, 180, 180 + gap_s)
        assert abs(got - expected) < 5 * math.sqrt(expected), (symbol, got)


def test_no_gap_when_gap_s_is_zero():
    recs = records_of(trades.generate(params(
        events=12000, seed=11, bursts=0.0, gap_s=0.0)))
    assert _counts_in(recs, 'AMZN', 180, 200) > 150


def test_a_single_symbol_pauses_through_its_gap():
    recs = records_of(trades.generate(params(
        events=3000, rate=10.0, symbols='x', gap_s=60.0, bursts=0.0)))
    times = sorted(r.t - T0 for r in recs if r.trade is not None)
    assert not [t for t in times if 180 <= t < 240]
    assert times[-1] > 240
    assert {r.trade.symbol for r in recs if r.trade is not None} == {'X'}


def test_bursts_trade_five_times_faster_for_a_minute():
    recs = records_of(trades.generate(params(
        events=7000, rate=10.0, bursts=1.0, gap_s=0.0, seed=21)))
    per_minute = collections.defaultdict(collections.Counter)
    for rec in originals(recs):
        if rec.trade is not None:
            per_minute[int((rec.t - T0) // 60)][rec.trade.symbol] += 1
    last = max(per_minute)
    for minute in range(last):             # whole minutes only
        counts = per_minute[minute]
        (top, top_count), *others = counts.most_common()
        assert len(others) == 3
        ratio = top_count / statistics.mean(c for _, c in others)
        assert 3.5 < ratio < 7.0, (minute, counts)
        assert top == trades.burst_symbol(21, minute, DEFAULT_SYMBOLS, 1.0)


def test_without_bursts_the_symbols_trade_alike():
    recs = records_of(trades.generate(params(
        events=6000, rate=10.0, bursts=0.0, gap_s=0.0, seed=21)))
    counts = collections.Counter(r.trade.symbol for r in originals(recs)
                                 if r.trade is not None)
    mean = statistics.mean(counts.values())
    assert all(abs(c - mean) < 5 * math.sqrt(mean) for c in counts.values())


# --------------------------------------------------------- URI and params

def test_the_synthetic_uri_validates_and_generates():
    uri = check_uri('synthetic://trades?events=300&seed=3&symbols=ibm,%20ge'
                    '&gap_s=0&fat_finger=0.5', 'source')
    values = params_of(uri)
    assert values['symbols'] == 'IBM,GE'
    assert values['events'] == 300 and values['fat_finger'] == 0.5
    stream = trades.generate(values)
    assert len(stream) == 300
    symbols = {t.symbol for t in (decode(p) for p in stream.payloads()) if t}
    assert symbols == {'IBM', 'GE'}


def test_the_default_uri_validates():
    values = params_of(check_uri('synthetic://trades', 'source'))
    assert values == params()


@pytest.mark.parametrize('query, shown', [
    ('symbols=', "parameter symbols='' is not a valid comma-separated list"),
    ('symbols=,,', "parameter symbols=',,' is not a valid"),
    ('symbols=AAPL,aapl', "parameter symbols='AAPL,aapl' is not a valid"),
    ('symbols=BRK%20B', "parameter symbols='BRK B' is not a valid"),
    ('duplicates=1.5', "duplicates='1.5' is not a valid fraction in [0, 1]"),
    ('fat_finger=-0.1', "fat_finger='-0.1' is not a valid fraction"),
    ('bursts=nan', "bursts='nan' is not a valid fraction"),
    ('late=2', "late='2' is not a valid fraction"),
    ('gap_s=-1', "gap_s='-1' is not a valid duration (s) in [0, 86400]"),
    ('gap_s=1e9', "gap_s='1e9' is not a valid duration"),
    ('rate=0', "rate='0' is not a valid number in [0.01"),
    ('rate=inf', "rate='inf' is not a valid number"),
    ('tick=0', 'tick must be greater than zero'),
    ('events=0', 'events must be at least 1'),
    ('start=2026-01-01T14:30:00', 'has no time zone'),
    ('start=1969-12-31T00:00:00Z', 'is before 1970'),
    ('symbol=AAPL', 'unknown parameter(s) symbol'),
])
def test_bad_synthetic_uris_are_refused(query, shown):
    with pytest.raises(UriError) as err:
        check_uri(f'synthetic://trades?{query}', 'source')
    assert shown in str(err.value)


def test_check_params_refuses_what_generate_cannot_use():
    with pytest.raises(ValueError, match='at least one symbol'):
        trades.generate(params(symbols=' , '))
    with pytest.raises(ValueError, match='unknown parameter'):
        trades.check_params({'symbol': 'X'})
    assert trades.check_params({'symbols': 'ibm'})['symbols'] == 'IBM'


def test_help_lists_every_parameter():
    items = describe_params('trades').split('; ')
    assert [item.split(' ', 1)[0] for item in items] == list(trades.PARAMS)


def test_trades_is_a_known_source_domain():
    assert 'synthetic' in io.schemes('source')
    assert trades.parse_start('2026-01-01T14:30:00Z') == T0
