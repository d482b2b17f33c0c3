"""A synthetic trade stream: one JSON object per trade, as a market data feed
would deliver it.

What it contains (all deterministic for a seed):

* trades of ``symbols`` arriving as a Poisson process of ``rate`` trades per
  second of event time (all symbols together, each symbol an equal share);
* prices following a geometric random walk per symbol (start prices between
  100 and 300, per-trade log-return sigma 1e-4), sizes 1..1000 with round
  lots of 100 favoured, venues XNAS/XNYS/ARCX, and a few condition codes
  ('@' and 'T' about 1% each, 'Z' out of sequence 0.5%);
* *bursts*: in a minute of event time, with chance ``bursts``, one symbol
  trades at 5 times its rate (see :func:`burst_symbol`);
* a *gap*: the last symbol stops trading for ``gap_s`` seconds from minute 3;
* *fat fingers*: a ``fat_finger`` fraction of prints at 10x or 0.1x the price
  (the walk itself goes on from the true price) -- the anomalies to detect;
* *duplicates*: a ``duplicates`` fraction of trades re-sent with the same
  payload (same ``trade_id``) up to 10 s after the original;
* out-of-order arrival (up to ``disorder`` seconds), a ``late`` fraction of
  stragglers delayed 20 s to 6 min, and a ``malformed`` fraction of broken
  records (truncated JSON, bad UTF-8, price 0, negative size, missing symbol,
  price as a string, empty line).

``events`` counts every record of the stream: malformed ones and duplicates
included.  Trade ids are ``SYMBOL-N`` with N counting that symbol's trades from
1 (malformed records use up a number too).
"""
import datetime
import math
import random

import orjson

from transforms.decode import DecodeError
from transforms.market.decoders import normalise_symbol
from transforms.synthetic import SyntheticStream, Ticks, parse_start, \
    stream_ticks


class Number:
    """A parameter type for PARAMS: a float within [low, high].

    ``__name__`` is what a bad URI parameter is reported as not being, e.g.
    "parameter late='2' is not a valid fraction in [0, 1]".
    """

    def __init__(self, low: float, high: float, what: str = 'number'):
        self.low = low
        self.high = high
        self.__name__ = f'{what} in [{low:g}, {high:g}]'

    def __call__(self, text) -> float:
        value = float(text)
        if not self.low <= value <= self.high:      # False for NaN as well
            raise ValueError(f'{text!r} is not a {self.__name__}')
        return value


class SymbolList:
    """A parameter type for PARAMS: 'aapl, msft' -> 'AAPL,MSFT'.

    ValueError for an empty list, a repeated symbol, or a symbol the trade
    decoders would refuse.
    """
    __name__ = 'comma-separated list of symbols'

    def __call__(self, text) -> str:
        if not isinstance(text, str):
            raise ValueError(f'symbols must be text, got {text!r}')
        names = [name.strip() for name in text.split(',')]
        if not any(names):
            raise ValueError('symbols must name at least one symbol')
        try:
            symbols = [normalise_symbol(name) for name in names]
        except DecodeError as e:
            raise ValueError(f'symbols={text!r}: {e}') from None
        if len(set(symbols)) != len(symbols):
            raise ValueError(f'symbols={text!r} names a symbol twice')
        return ','.join(symbols)


FRACTION = Number(0.0, 1.0, 'fraction')
# Below 0.01 trades/s the generator would spend its time in empty minutes.
RATE = Number(0.01, 1e6)
GAP_S = Number(0.0, 86400.0, 'duration (s)')
SYMBOLS = SymbolList()

# Help texts must not contain '; ' (the job's --help splits on it).
PARAMS = {
    'events': (int, 20000,
               'number of records (malformed ones and duplicates included)'),
    'seed': (int, 42, 'random seed: the same seed gives the same stream'),
    'symbols': (SYMBOLS, 'AAPL,MSFT,GOOG,AMZN',
                'comma-separated symbols (the last one has the gap)'),
    'rate': (RATE, 50.0,
             'trades per second of event time, all symbols together'),
    'start': (str, '2026-01-01T14:30:00Z', 'event time of the stream start'),
    'disorder': (float, 5.0, 'max out-of-order delay of on-time records, s'),
    'late': (FRACTION, 0.01, 'fraction of stragglers delayed 20 s to 6 min'),
    'malformed': (FRACTION, 0.005, 'fraction of malformed records'),
    'duplicates': (FRACTION, 0.01,
                   'fraction of trades re-sent with the same payload and '
                   'trade_id up to 10 s later'),
    'fat_finger': (FRACTION, 0.001,
                   'fraction of prints at 10x or 0.1x the price (anomalies)'),
    'bursts': (FRACTION, 0.2,
               'chance per minute that one symbol trades at 5x its rate'),
    'gap_s': (GAP_S, 180.0,
              'the last symbol stops trading for this long from minute 3 '
              '(0: no gap)'),
    'tick': (float, 1.0, 'seconds of processing time per source step'),
}

VENUES = ('XNAS', 'XNYS', 'ARCX')
START_PRICES = (100.0, 300.0)      # each symbol's first price, uniform in this
SIGMA = 1e-4                       # per-trade log-return standard deviation
FAT_FINGER_FACTORS = (10.0, 0.1)
BURST_S = 60.0                     # bursts last one whole minute of event time
BURST_FACTOR = 5.0
GAP_START_S = 180.0                # seconds after start
DUPLICATE_DELAY_S = 10.0
LATE_DELAY_S = (20.0, 360.0)
# (code, cumulative probability): 'Z' 0.5%, '@' 1%, 'T' 1%, none otherwise.
CONDITIONS = ((('Z',), 0.005), (('@',), 0.015), (('T',), 0.025))
MALFORMED_KINDS = ('truncated', 'utf8', 'price_zero', 'negative_size',
                   'no_symbol', 'price_text', 'empty')


def check_params(params: dict) -> dict:
    """All parameters (defaults for absent ones), checked and normalised;
    ValueError for values ``generate`` cannot use."""
    unknown = sorted(set(params) - set(PARAMS))
    if unknown:
        raise ValueError(f'unknown parameter(s) {", ".join(unknown)}')
    values = {name: default for name, (_, default, _) in PARAMS.items()}
    values.update(params)
    for name, (kind, _, _) in PARAMS.items():
        if kind not in (int, str):
            values[name] = kind(values[name])
    for name in ('tick', 'disorder'):
        if not (math.isfinite(values[name]) and values[name] >= 0):
            raise ValueError(f'{name} must be a finite number >= 0')
    if values['tick'] <= 0:
        raise ValueError('tick must be greater than zero')
    if values['events'] < 1:
        raise ValueError('events must be at least 1')
    parse_start(values['start'])
    return values


def burst_symbol(seed: int, minute: int, symbols, chance: float):
    """The symbol bursting in ``minute`` (counted from the start), or None.

    Drawn from its own generator per minute, so the schedule does not depend
    on the rest of the stream.
    """
    rng = random.Random(f'trades-burst-{seed}-{minute}')
    if rng.random() < chance:
        return rng.choice(list(symbols))
    return None


def _rfc3339_ms(epoch_ms: int) -> str:
    seconds, ms = divmod(epoch_ms, 1000)
    dt = datetime.datetime.fromtimestamp(seconds, tz=datetime.timezone.utc)
    return f'{dt:%Y-%m-%dT%H:%M:%S}.{ms:03d}Z'


def _trade_times(rng, symbols, rate, seed, chance, gap):
    """Endless (offset seconds, symbol index) of a Poisson process whose
    per-symbol intensities are constant between minute and gap boundaries."""
    base = rate / len(symbols)
    last = len(symbols) - 1
    t = 0.0
    while True:
        minute = int(t // BURST_S)
        end = (minute + 1) * BURST_S
        for bound in gap:
            if t < bound < end:
                end = bound
        bursting = burst_symbol(seed, minute, symbols, chance)
        cumulative = []
        total = 0.0
        for i, symbol in enumerate(symbols):
            if i == last and gap[0] <= t < gap[1]:
                weight = 0.0
            elif symbol == bursting:
                weight = base * BURST_FACTOR
            else:
                weight = base
            total += weight
            cumulative.append(total)
        # Memoryless: a draw past the boundary is redrawn from there.
        while total > 0:
            step = rng.expovariate(total)
            if t + step >= end:
                break
            t += step
            u = rng.random() * total
            yield t, next(i for i, c in enumerate(cumulative) if u < c)
        t = end


def _size(rng) -> int:
    u = rng.random()
    if u < 0.4:
        return 100 * rng.choice((1, 1, 1, 1, 2, 2, 3, 5, 10))
    if u < 0.85:
        return rng.randint(1, 99)
    return rng.randint(101, 999)


def _conditions(rng) -> list:
    u = rng.random()
    for codes, below in CONDITIONS:
        if u < below:
            return list(codes)
    return []


def _malformed(rng, doc: dict) -> bytes:
    kind = rng.choice(MALFORMED_KINDS)
    good = orjson.dumps(doc)
    if kind == 'truncated':
        return good[:rng.randrange(1, len(good) - 1)]
    if kind == 'utf8':
        return b'\xff\xfe' + good[2:]
    if kind == 'empty':
        return b''
    broken = dict(doc)
    if kind == 'price_zero':
        broken['price'] = 0
    elif kind == 'negative_size':
        broken['size'] = -doc['size']
    elif kind == 'no_symbol':
        del broken['symbol']
    else:                                   # price_text
        broken['price'] = str(doc['price'])
    return orjson.dumps(broken)


def generate(params: dict) -> SyntheticStream:
    """The stream for ``params`` (see PARAMS; absent ones take defaults),
    generated lazily each time its ticks are iterated."""
    params = check_params(params)
    return SyntheticStream(
        Ticks(lambda: stream_ticks(_records(params), params['tick'],
                                   params['disorder'],
                                   parse_start(params['start']))),
        params['tick'])


def _records(params: dict):
    """(event time, arrival, payload, later) in event-time order: ``later``
    (the event time) bounds the arrival of every record still to come."""
    rng = random.Random(params['seed'])
    start = parse_start(params['start'])
    start_ms = round(start * 1000)
    symbols = params['symbols'].split(',')
    gap = (GAP_START_S, GAP_START_S + params['gap_s']) if params['gap_s'] > 0 \
        else (math.inf, math.inf)
    prices = [rng.uniform(*START_PRICES) for _ in symbols]
    numbers = [0] * len(symbols)
    disorder = params['disorder']
    count = 0
    times = _trade_times(rng, symbols, params['rate'], params['seed'],
                         params['bursts'], gap)
    while count < params['events']:
        offset, i = next(times)
        symbol = symbols[i]
        numbers[i] += 1
        prices[i] *= math.exp(rng.gauss(0.0, SIGMA))
        price = prices[i]
        if rng.random() < params['fat_finger']:
            price *= rng.choice(FAT_FINGER_FACTORS)
        epoch_ms = start_ms + int(offset * 1000)
        doc = {
            'event_time': _rfc3339_ms(epoch_ms),
            'symbol': symbol,
            'price': round(price, 4),
            'size': _size(rng),
            'trade_id': f'{symbol}-{numbers[i]}',
            'venue': rng.choice(VENUES),
            'conditions': _conditions(rng),
        }
        malformed = rng.random() < params['malformed']
        payload = _malformed(rng, doc) if malformed else orjson.dumps(doc)
        event_time = epoch_ms / 1000
        if rng.random() < params['late']:
            arrival = event_time + rng.uniform(*LATE_DELAY_S)
        else:
            arrival = event_time + rng.uniform(0.0, disorder)
        count += 1
        yield event_time, arrival, payload, event_time
        if (not malformed and count < params['events']
                and rng.random() < params['duplicates']):
            count += 1
            yield (event_time, arrival + rng.uniform(0.0, DUPLICATE_DELAY_S),
                   payload, event_time)
