"""OHLCV bars and VWAP: a mergeable accumulator, exact under duplicates.

A bar's open and close are the first and last *eligible* trade by event time,
ties broken by ``trade_id`` (not by arrival); high and low are over eligible
trades; volume, notional (for VWAP) and the trade count are over all trades.
A trade repeated with the same ``trade_id`` (a re-send) counts once: the
accumulator keeps, per id, what the trade added, so that merging two
accumulators that both saw it takes its volume and notional out once.
Open/close/high/low are idempotent under repeats.  The id map is bounded by
the trades of one symbol in one window; between merges it is kept as columns
(an Arrow string array of ids, numpy arrays of each one's size and price:
about 30 bytes an id instead of some 250 in a dict), and packed once pickled
(about 6 bytes an id; see transforms.market.packed), since a batch run on the
local runner holds every window's accumulator at once, several times over.
"""
import math
import typing

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.utils.timestamp import Timestamp

from transforms.combiners import MergingCombineFn
from transforms.market import packed
from transforms.market.records import Trade, condition_codes


class Bar(typing.NamedTuple):
    """One row of the ``bars`` table."""
    symbol: str
    window_start: Timestamp
    window_end: Timestamp
    pane_timing: str
    pane_index: int
    open: typing.Optional[float]      # None if no eligible trade
    high: typing.Optional[float]
    low: typing.Optional[float]
    close: typing.Optional[float]
    volume: float
    vwap: typing.Optional[float]      # notional / volume over all trades
    trade_count: int                  # distinct trades
    duplicate_count: int              # repeats of a trade_id, not counted
    first_trade_time: typing.Optional[Timestamp]
    last_trade_time: typing.Optional[Timestamp]

    IDENTITY_FIELDS = ('symbol', 'window_start', 'window_end', 'pane_timing',
                       'pane_index')


beam.coders.registry.register_coder(Bar, beam.coders.RowCoder)

_NONE_KEY = ''   # trades without id sort before any id at the same instant


class BarAcc:
    """The mergeable bar accumulator."""
    __slots__ = ('count', 'duplicates', 'volume', 'notional', 'open',
                 'close', 'high', 'low', 'first_us', 'last_us', 'ids',
                 'id_keys', 'id_size', 'id_price', 'id_packed')

    def __init__(self):
        self.count = 0
        self.duplicates = 0
        self.volume = 0.0
        self.notional = 0.0
        self.open = None       # (event us, trade id or '', price)
        self.close = None
        self.high = -math.inf
        self.low = math.inf
        self.first_us = None   # over all trades
        self.last_us = None
        # What each trade id added (its size, and its price: it added
        # price * size to the notional), in one of three forms, one at a
        # time: a dict while trades are added one by one; columns between
        # merges; packed (transforms.market.packed) once pickled, until a
        # merge or an added trade needs the ids again.
        self.ids = {}          # trade id -> (size, price)
        self.id_keys = None    # pa string array, or None
        self.id_size = None    # float64
        self.id_price = None   # float64
        self.id_packed = None  # (keys, size, price) packed, or None

    def _extend(self, event_us, trade_key, price, size, eligible):
        self.count += 1
        self.volume += size
        self.notional += price * size
        if self.first_us is None or event_us < self.first_us:
            self.first_us = event_us
        if self.last_us is None or event_us > self.last_us:
            self.last_us = event_us
        if eligible:
            point = (event_us, trade_key, price)
            if self.open is None or point[:2] < self.open[:2]:
                self.open = point
            if self.close is None or point[:2] > self.close[:2]:
                self.close = point
            self.high = max(self.high, price)
            self.low = min(self.low, price)

    def set_ids(self, keys: pa.Array, size, price):
        """The ids (distinct) and each one's size and price, as columns."""
        self.ids = {}
        self.id_packed = None
        self.id_keys = keys
        self.id_size = np.asarray(size, np.float64)
        self.id_price = np.asarray(price, np.float64)

    def _unpack(self):
        """Packed -> columns."""
        if self.id_packed is not None:
            keys, size, price = self.id_packed
            self.set_ids(packed.unpack_strings(keys),
                         packed.unpack_floats(size),
                         packed.unpack_floats(price))

    def _expand(self):
        """Columns -> the dict (before adding trades one by one)."""
        self._unpack()
        if self.id_keys is not None:
            self.ids.update(zip(self.id_keys.to_pylist(), zip(
                self.id_size.tolist(), self.id_price.tolist())))
            self.id_keys = self.id_size = self.id_price = None

    def _compact(self):
        """The dict -> columns (before a merge or leaving the process)."""
        self._unpack()
        if self.ids:
            keys = pa.array(list(self.ids), pa.string())
            size = np.array([v[0] for v in self.ids.values()], np.float64)
            price = np.array([v[1] for v in self.ids.values()], np.float64)
            if self.id_keys is not None:
                keys = pa.concat_arrays([self.id_keys, keys])
                size = np.concatenate([self.id_size, size])
                price = np.concatenate([self.id_price, price])
            self.set_ids(keys, size, price)

    def _pack(self):
        """Columns -> packed (leaving the process, or resting in a
        shuffle).  Already packed: as it is."""
        if self.id_packed is not None:
            return
        self._compact()
        if self.id_keys is not None and len(self.id_keys):
            self.id_packed = (packed.pack_strings(self.id_keys),
                              packed.pack_floats(self.id_size),
                              packed.pack_floats(self.id_price))
            self.id_keys = self.id_size = self.id_price = None

    def _merge_ids(self, other: 'BarAcc'):
        """Takes out once what an id seen on both sides added."""
        self._compact()
        other._compact()
        if other.id_keys is None or not len(other.id_keys):
            return
        if self.id_keys is None or not len(self.id_keys):
            self.set_ids(other.id_keys, other.id_size, other.id_price)
            return
        both = pc.is_in(other.id_keys, value_set=self.id_keys).to_numpy(
            zero_copy_only=False)
        keys, size, price = other.id_keys, other.id_size, other.id_price
        if both.any():
            seen = int(both.sum())
            self.count -= seen
            self.duplicates += seen
            self.volume -= float(size[both].sum())
            self.notional -= float((price[both] * size[both]).sum())
            keep = ~both
            keys, size, price = keys.filter(pa.array(keep)), size[keep], \
                price[keep]
        self.set_ids(pa.concat_arrays([self.id_keys, keys]),
                     np.concatenate([self.id_size, size]),
                     np.concatenate([self.id_price, price]))

    def add(self, trade: Trade, ineligible: frozenset) -> 'BarAcc':
        if trade.trade_id is not None:
            self._expand()
            if trade.trade_id in self.ids:
                self.duplicates += 1             # a repeat: counted once
                return self
            self.ids[trade.trade_id] = (trade.size, trade.price)
        eligible = not (condition_codes(trade) & ineligible)
        self._extend(trade.event_time.micros, trade.trade_id or _NONE_KEY,
                     trade.price, trade.size, eligible)
        return self

    def merge(self, other: 'BarAcc') -> 'BarAcc':
        self._merge_ids(other)                   # seen on both sides: once
        self.count += other.count
        self.duplicates += other.duplicates
        self.volume += other.volume
        self.notional += other.notional
        for point in (other.open, other.close):
            if point is None:
                continue
            if self.open is None or point[:2] < self.open[:2]:
                self.open = point
            if self.close is None or point[:2] > self.close[:2]:
                self.close = point
        self.high = max(self.high, other.high)
        self.low = min(self.low, other.low)
        for us in (other.first_us, other.last_us):
            if us is None:
                continue
            if self.first_us is None or us < self.first_us:
                self.first_us = us
            if self.last_us is None or us > self.last_us:
                self.last_us = us
        return self

    def __reduce__(self):
        # The ids leave packed, and stay packed here too: the accumulator
        # is usually pickled on its way out (the end of a bundle), and one
        # that is merged again unpacks them then.
        self._pack()
        return (_bar_acc, tuple(getattr(self, f) for f in _STATE))


_STATE = ('count', 'duplicates', 'volume', 'notional', 'open', 'close',
          'high', 'low', 'first_us', 'last_us', 'id_packed')


def _bar_acc(*state) -> BarAcc:
    acc = BarAcc()
    for field, value in zip(_STATE, state):
        setattr(acc, field, value)
    return acc


class BarsFn(MergingCombineFn):
    """Trades (or partial BarAccs) -> BarAcc per symbol and window.

    ``ineligible``: condition codes of trades that update volume but not
    open/high/low/close.  ``pack_merged``: an accumulator packs its ids as
    soon as a partial is merged into it (the next merge unpacks them).  For
    a batch replay, whose combine holds the accumulator of every window of
    its bundle until the bundle ends, though a window's partials come from
    a block or two; a stream's table holds few windows at a time."""
    ACCUMULATOR = BarAcc

    def __init__(self, ineligible=(), pack_merged=False):
        self._ineligible = frozenset(ineligible)
        self._pack_merged = pack_merged

    def create_accumulator(self):
        return BarAcc()

    def add_input(self, acc, value):
        acc = super().add_input(acc, value)
        if self._pack_merged and isinstance(value, BarAcc):
            acc._pack()       # pylint: disable=protected-access
        return acc

    def add_record(self, acc, trade):
        return acc.add(trade, self._ineligible)


def bar_count(x) -> int:
    """Trade records a bar accumulator (repeats included) or an input trade
    covers."""
    return x.count + x.duplicates if isinstance(x, BarAcc) else 1


def _ts(us):
    return None if us is None else Timestamp(micros=us)


def to_bar(symbol, acc: BarAcc, pane: dict) -> Bar:
    eligible = acc.open is not None
    return Bar(
        symbol=symbol,
        open=acc.open[2] if eligible else None,
        high=acc.high if eligible else None,
        low=acc.low if eligible else None,
        close=acc.close[2] if eligible else None,
        volume=acc.volume,
        vwap=acc.notional / acc.volume if acc.volume > 0 else None,
        trade_count=acc.count,
        duplicate_count=acc.duplicates,
        first_trade_time=_ts(acc.first_us),
        last_trade_time=_ts(acc.last_us),
        **pane)
