"""Packed id columns come back bit for bit, and a bar accumulator that
crossed a shuffle packed still takes a re-sent trade out once."""
import pickle

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from apache_beam.utils.timestamp import Timestamp

from transforms.market import packed
from transforms.market.bars import BarAcc, BarsFn
from transforms.market.records import Trade

T0 = 1767278400


def _bits(values):
    return np.asarray(values, np.float64).view(np.int64).tolist()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=60))
def test_any_floats_come_back_bit_for_bit(values):
    values = np.array(values, np.float64)
    assert _bits(packed.unpack_floats(packed.pack_floats(values))) == \
        _bits(values)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 10 ** 7), max_size=60),
       st.integers(0, packed.MAX_SCALE))
def test_decimals_come_back_bit_for_bit_and_travel_as_integers(ints, scale):
    values = np.array(ints, np.float64) / 10.0 ** scale
    out = packed.pack_floats(values)
    assert _bits(packed.unpack_floats(out)) == _bits(values)
    if len(values):
        assert out[1] is not None and out[1] <= scale


def test_what_is_no_decimal_stays_a_float():
    for values in ([0.1 + 0.2], [-0.0, 1.0], [np.nan], [np.inf, 2.0],
                   [1e300], [2.0 ** 53 + 2]):
        out = packed.pack_floats(values)
        assert out[1] is None, values
        assert _bits(packed.unpack_floats(out)) == _bits(values)


def test_prices_and_sizes_pack_small():
    rng = np.random.default_rng(1)
    price = np.round(200 * np.exp(np.cumsum(rng.normal(0, 1e-4, 3000))), 4)
    size = rng.integers(1, 1000, 3000).astype(np.float64)
    for values, most in ((price, 3.5), (size, 2.5)):
        out = packed.pack_floats(values)
        assert len(out[3]) / len(values) < most
        assert _bits(packed.unpack_floats(out)) == _bits(values)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=300), max_size=40), st.data())
def test_strings_come_back_equal_slices_too(texts, data):
    array = pa.array(texts, pa.string())
    lo = data.draw(st.integers(0, len(texts)))
    hi = data.draw(st.integers(lo, len(texts)))
    for part in (array, array.slice(lo, hi - lo)):
        assert packed.unpack_strings(packed.pack_strings(part)).equals(part)


def test_strings_with_nulls_are_refused():
    with pytest.raises(ValueError):
        packed.pack_strings(pa.array(['a', None]))


def _trade(offset, trade_id, price=100.25, size=300.0):
    return Trade(Timestamp.of(T0 + offset), 'ACME', price, size, trade_id,
                 'XNAS', '')


def test_a_packed_accumulator_still_takes_a_resend_out_once():
    fn = BarsFn(('T',))
    first = fn.add_input(fn.create_accumulator(), _trade(1, 'a'))
    first = fn.add_input(first, _trade(2, 'b', 100.5, 7.0))
    second = fn.add_input(fn.create_accumulator(), _trade(2, 'b', 100.5, 7.0))
    second = fn.add_input(second, _trade(3, 'c', 0.1 + 0.2, 1.5))
    # Both cross a shuffle: the ids travel, and rest, packed.
    first, second = (pickle.loads(pickle.dumps(a)) for a in (first, second))
    assert first.id_packed is not None and first.id_keys is None
    merged = fn.merge_accumulators([first, second])
    assert (merged.count, merged.duplicates) == (3, 1)
    assert merged.volume == 300.0 + 7.0 + 1.5
    assert merged.notional == 100.25 * 300.0 + 100.5 * 7.0 + \
        (0.1 + 0.2) * 1.5
    # Packed again and unpacked by a trade added one by one: 'c' is known.
    again = pickle.loads(pickle.dumps(merged))
    again = fn.add_input(again, _trade(3, 'c', 0.1 + 0.2, 1.5))
    assert (again.count, again.duplicates) == (3, 2)
    assert sorted(again.ids) == ['a', 'b', 'c']
    assert again.ids['c'] == (1.5, 0.1 + 0.2)


def test_an_accumulator_without_ids_packs_to_nothing():
    acc = BarsFn().add_input(BarAcc(), _trade(1, None))
    back = pickle.loads(pickle.dumps(acc))
    assert back.id_packed is None and back.count == 1


def test_a_batch_combine_keeps_its_accumulators_packed_between_partials():
    """pack_merged (a batch replay): each partial merged leaves the
    accumulator packed; the next one still finds the re-sends."""
    partial = BarsFn().add_input
    blocks = [[_trade(1, 'a'), _trade(2, 'b')],
              [_trade(2, 'b'), _trade(3, 'c')],
              [_trade(3, 'c'), _trade(1, 'a'), _trade(4, None)]]
    parts = []
    for block in blocks:
        acc = BarAcc()
        for t in block:
            acc = partial(acc, t)
        parts.append(acc)
    fn = BarsFn(pack_merged=True)
    acc = fn.create_accumulator()
    for part in parts:
        acc = fn.add_input(acc, part)
        assert acc.id_packed is not None and acc.id_keys is None
        assert not acc.ids
    assert (acc.count, acc.duplicates) == (4, 3)
    assert acc.volume == 4 * 300.0
