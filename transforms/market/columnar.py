"""The trades job's columnar fast path: blocks of lines -> partial bars per
(symbol, window) and price summaries per (symbol, anomaly window).

A JSON line is accepted by the vectorised reader only in the canonical shape
(``event_time`` RFC 3339 text with zone; ``symbol`` already upper case;
``price`` and ``size`` finite numbers > 0; ``trade_id`` and ``venue`` text
without surrounding blanks, or absent; ``conditions`` a list of distinct plain
codes, or absent); every other line goes to the reference decoder.  Repeats
of a trade_id within a block are dropped here; across blocks the bar
accumulators' id maps drop them when partials merge (transforms.market.bars).
Price summaries (transforms.market.anomalies.PriceSummary) count every
record, as the element path's do, and report a flagged trade once.
"""
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms import columnar, deadletter, windows
from transforms.decode import DEFAULT_MAX_BYTES, Filtered, decode_payload
from transforms.market.anomalies import PriceSummary
from transforms.market.bars import BarAcc
from transforms.market.records import condition_codes

PRICES = 'prices'     # the output tag of the price summaries
SCHEMA = pa.schema([
    ('event_time', pa.string()), ('symbol', pa.string()),
    ('price', pa.float64()), ('size', pa.float64()),
    ('trade_id', pa.string()), ('venue', pa.string()),
    ('conditions', pa.list_(pa.string())),
])
RFC3339 = columnar.RFC3339
SYMBOL = r'^[A-Z0-9._-]{1,32}$'
CODE = r'^[^,;|\s]+$'


class Columns:
    """Decoded trades as columns (what bars and price samples need)."""
    __slots__ = ('event_us', 'symbol', 'price', 'size', 'trade_id',
                 'eligible')

    def __init__(self, event_us, symbol, price, size, trade_id, eligible):
        self.event_us = event_us      # int64 us
        self.symbol = symbol          # pa string array
        self.price = price            # float64
        self.size = size              # float64
        self.trade_id = trade_id      # pa string array, null where none
        self.eligible = eligible      # bool

    @classmethod
    def of_trades(cls, trades, ineligible):
        return cls(
            np.array([t.event_time.micros for t in trades], np.int64),
            pa.array([t.symbol for t in trades], pa.string()),
            np.array([t.price for t in trades], np.float64),
            np.array([t.size for t in trades], np.float64),
            pa.array([t.trade_id for t in trades], pa.string()),
            np.array([not (condition_codes(t) & ineligible) for t in trades],
                     bool))

    def take(self, keep: np.ndarray) -> 'Columns':
        """The rows ``keep`` (a bool mask) marks, in order."""
        rows = pa.array(np.flatnonzero(keep))
        return Columns(self.event_us[keep], self.symbol.take(rows),
                       self.price[keep], self.size[keep],
                       self.trade_id.take(rows), self.eligible[keep])

    @classmethod
    def concat(cls, parts):
        parts = [p for p in parts if len(p.event_us)]
        if len(parts) == 1:
            return parts[0]
        if not parts:
            return cls.of_trades([], frozenset())
        return cls(np.concatenate([p.event_us for p in parts]),
                   pa.concat_arrays([p.symbol for p in parts]),
                   np.concatenate([p.price for p in parts]),
                   np.concatenate([p.size for p in parts]),
                   pa.concat_arrays([p.trade_id for p in parts]),
                   np.concatenate([p.eligible for p in parts]))


def _mask(array) -> np.ndarray:
    return pc.fill_null(array, False).to_numpy(zero_copy_only=False)


def _clean_text(column):
    """Null, or text equal to itself stripped and not empty."""
    return pc.or_(pc.is_null(column), pc.and_(
        pc.equal(column, pc.utf8_trim_whitespace(column)),
        pc.greater(pc.utf8_length(column), 0)))


def _accepted_rows(table: pa.Table) -> np.ndarray:
    n = table.num_rows
    if not {'event_time', 'symbol', 'price', 'size'} <= set(
            table.column_names):
        return np.zeros(n, bool)
    ok = _mask(pc.match_substring_regex(table['event_time'], RFC3339))
    ok &= _mask(pc.match_substring_regex(table['symbol'], SYMBOL))
    for name in ('price', 'size'):
        ok &= _mask(pc.and_(pc.is_finite(table[name]),
                            pc.greater(table[name], 0.0)))
    for name in ('trade_id', 'venue'):
        if name in table.column_names:
            ok &= _mask(_clean_text(table[name]))
    if 'conditions' in table.column_names:
        lists = table['conditions'].combine_chunks()
        codes = pc.list_flatten(lists)
        if len(codes):
            parents = pc.list_parent_indices(lists).to_numpy()
            bad = ~_mask(pc.match_substring_regex(codes, CODE))
            ok[np.unique(parents[bad])] = False
            # A code repeated within a row: the reference drops the repeat;
            # such rows go to it.
            counts = pa.table({'row': parents, 'code': codes}).group_by(
                ['row', 'code'], use_threads=False).aggregate(
                    [('row', 'count')])
            again = counts['row_count'].to_numpy() > 1
            ok[counts['row'].to_numpy()[again]] = False
    return ok


def _eligible(table: pa.Table, ineligible) -> np.ndarray:
    eligible = np.ones(table.num_rows, bool)
    if 'conditions' in table.column_names and ineligible:
        lists = table['conditions'].combine_chunks()
        codes = pc.list_flatten(lists)
        if len(codes):
            hit = _mask(pc.is_in(codes, pa.array(sorted(ineligible))))
            parents = pc.list_parent_indices(lists).to_numpy()
            eligible[np.unique(parents[hit])] = False
    return eligible


class BlockDecoder:
    """Blocks of trade lines -> Columns, dead letters and named filters."""

    def __init__(self, decoder, stage, ineligible, source='',
                 max_bytes=DEFAULT_MAX_BYTES, json_fast=True):
        self.decoder = decoder
        self.stage = stage
        self.ineligible = frozenset(ineligible)
        self.source = source
        self.max_bytes = max_bytes
        self.json_fast = json_fast

    def decode_each(self, payloads, kept: list = None):
        """``kept``: a list to which the index of every payload that became
        a trade is appended."""
        trades, refused = [], []
        for i, raw in enumerate(payloads):
            result = decode_payload(raw, self.decoder, self.stage,
                                    self.source, self.max_bytes)
            if isinstance(result, (Filtered, deadletter.DeadLetter)):
                refused.append(result)
            else:
                trades.append(result)
                if kept is not None:
                    kept.append(i)
        return Columns.of_trades(trades, self.ineligible), refused, \
            len(trades)

    def decode(self, data, bounds=None, lines: list = None):
        """``lines``: see ``columnar.decode_json_lines``."""
        starts, ends = bounds if bounds is not None else \
            columnar.line_bounds(data)
        if not self.json_fast:
            return columnar.decode_one_by_one(self.decode_each, data,
                                              (starts, ends), lines)
        return columnar.decode_json_lines(
            data, (starts, ends), schema=SCHEMA, time_field='event_time',
            max_bytes=self.max_bytes, accept=_accepted_rows,
            columns_of=self._columns_of, decode_each=self.decode_each,
            concat=Columns.concat, lines=lines)

    def _columns_of(self, table, event_us):
        ids = table['trade_id'].combine_chunks() \
            if 'trade_id' in table.column_names \
            else pa.nulls(table.num_rows, pa.string())
        return Columns(event_us, table['symbol'].combine_chunks(),
                       table['price'].to_numpy(), table['size'].to_numpy(),
                       ids, _eligible(table, self.ineligible))


def event_times(max_bytes=DEFAULT_MAX_BYTES) -> columnar.JsonEventTimes:
    """The event times of a block's lines that this fast path reads (see
    ``decode.PayloadEventTime``): the canonical JSON lines."""
    return columnar.JsonEventTimes(SCHEMA, 'event_time', _accepted_rows,
                                   max_bytes)


def _bars(columns: Columns, window: windows.WindowSpec):
    rows, starts = windows.window_starts(window, columns.event_us)
    if rows.size == 0:
        return []
    size = int(round(window.size * 1e6))
    take = pa.array(rows)
    ids = columns.trade_id.take(take)
    table = pa.table({
        'symbol': columns.symbol.take(take), 'start': starts,
        'event': columns.event_us[rows], 'key': pc.fill_null(ids, ''),
        'has_id': ids.is_valid(), 'price': columns.price[rows],
        'size': columns.size[rows], 'eligible': columns.eligible[rows],
        'row': np.arange(rows.size),
    })
    # Repeats of an id within the block: the first row counts, the rest are
    # counted as duplicates of their bar.
    has_id = table['has_id'].to_numpy(zero_copy_only=False)
    keep = ~has_id
    if has_id.any():
        first = table.filter(table['has_id']).group_by(
            ['symbol', 'start', 'key'], use_threads=False).aggregate(
                [('row', 'min')])['row_min'].to_numpy()
        keep[first] = True
    repeated = {}
    if not keep.all():
        again = table.filter(pa.array(~keep)).group_by(
            ['symbol', 'start'], use_threads=False).aggregate(
                [('row', 'count')]).to_pydict()
        repeated = dict(zip(zip(again['symbol'], again['start']),
                            again['row_count']))
    table = table.filter(pa.array(keep))
    table = table.take(pc.sort_indices(table, sort_keys=[
        ('symbol', 'ascending'), ('start', 'ascending'),
        ('event', 'ascending'), ('key', 'ascending')]))
    symbol = table['symbol'].to_pylist()
    start = table['start'].to_numpy()
    event = table['event'].to_numpy()
    keys = table['key'].combine_chunks()
    key = keys.to_pylist()
    has_id = table['has_id'].to_numpy(zero_copy_only=False)
    price = table['price'].to_numpy()
    qty = table['size'].to_numpy()
    notional = price * qty
    eligible = table['eligible'].to_numpy(zero_copy_only=False)
    codes = pc.dictionary_encode(table['symbol']).combine_chunks() \
        .indices.to_numpy()
    change = np.flatnonzero((np.diff(codes) != 0) | (np.diff(start) != 0))
    bounds = np.concatenate(([0], change + 1, [len(start)]))
    out = []
    for g in range(len(bounds) - 1):
        lo, hi = int(bounds[g]), int(bounds[g + 1])
        acc = BarAcc()
        acc.count = hi - lo
        acc.duplicates = repeated.get((symbol[lo], int(start[lo])), 0)
        acc.volume = float(qty[lo:hi].sum())
        acc.notional = float(notional[lo:hi].sum())
        acc.first_us = int(event[lo])
        acc.last_us = int(event[hi - 1])
        good = np.flatnonzero(eligible[lo:hi]) + lo
        if good.size:
            a, b = int(good[0]), int(good[-1])
            acc.open = (int(event[a]), key[a], float(price[a]))
            acc.close = (int(event[b]), key[b], float(price[b]))
            acc.high = float(price[good].max())
            acc.low = float(price[good].min())
        with_id = np.flatnonzero(has_id[lo:hi]) + lo
        acc.set_ids(keys.take(pa.array(with_id)), qty[with_id],
                    price[with_id])
        out.append((symbol[lo], int(start[lo]), int(start[lo]) + size,
                    acc.last_us, acc))
    return out


def _samples(columns: Columns, window: windows.WindowSpec):
    rows, starts = windows.window_starts(window, columns.event_us)
    if rows.size == 0:
        return []
    size = int(round(window.size * 1e6))
    take = pa.array(rows)
    symbols = columns.symbol.take(take)
    ids = columns.trade_id.take(take)
    encoded = pc.dictionary_encode(symbols)
    names = encoded.dictionary.to_pylist()
    order, bounds, firsts = columnar.group_rows(encoded.indices.to_numpy(),
                                                starts)
    event = columns.event_us[rows]
    price, qty = columns.price[rows], columns.size[rows]
    out = []
    for g in range(len(firsts)):
        members = order[bounds[g]:bounds[g + 1]]
        sample = PriceSummary.of_columns(
            event[members], ids.take(pa.array(members)), price[members],
            qty[members])
        first = int(firsts[g])
        out.append((PRICES, names[encoded.indices[first].as_py()],
                    int(starts[first]),
                    int(starts[first]) + size, int(event[members].max()),
                    sample))
    return out


class TradePartials:
    """Columns -> partial bars (main output) and price summaries
    (``prices``)."""

    def __init__(self, window: windows.WindowSpec,
                 anomaly_window: windows.WindowSpec):
        self.window = window
        self.anomaly_window = anomaly_window

    def __call__(self, columns: Columns, main: Columns = None):
        """``main``: the rows the bars take, where not all of them (a
        restart keeps a trade read again out of its final bar, and still
        in its anomaly window: ``columnar.PartialsFn(keep_out=...)``)."""
        return _bars(columns if main is None else main, self.window) + \
            _samples(columns, self.anomaly_window)

    @staticmethod
    def row_keys(columns: Columns):
        """(code of each row's symbol, the symbol of each code): the keys
        of the bars (the main output)."""
        return columnar.string_codes(columns.symbol)
