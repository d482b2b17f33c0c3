"""The trades job's price summary (transforms.market.anomalies.PriceSummary):
bounded, mergeable in any order into the same summary, and the anomalies it
finds against a numpy oracle of the rule on the same trades."""
import pickle
import random

import numpy as np
import pyarrow as pa
import pytest

from transforms.market import anomalies
from transforms.market.anomalies import (EXACT_PRICES, EXTREMES,
                                         PriceSummary, summary_outliers)

K, MIN = 10.0, 20


def oracle(event, ids, price, size, k=K, min_trades=MIN, dedup=False):
    """The rule with numpy over every trade (``dedup``: repeats of a trade id
    dropped first, the rule before price summaries)."""
    rows = np.arange(len(price))
    if dedup:
        seen, keep = set(), []
        for i in rows:
            if ids[i] is None or ids[i] not in seen:
                keep.append(i)
                seen.add(ids[i])
        rows = np.array(keep)
    p, s = price[rows], size[rows]
    if len(rows) < min_trades:
        return []
    median = np.median(p)
    spread = 1.4826 * np.median(np.abs(p - median))
    if spread <= 0:
        return []
    inside = np.abs(p - median) <= k * spread
    vwap = (p[inside] * s[inside]).sum() / s[inside].sum()
    dev = np.abs(p - vwap) / spread
    return sorted({(int(event[i]), ids[i], float(price[i]), float(vwap),
                    float(d)) for i, d in zip(rows, dev) if d > k},
                  key=lambda x: (x[0], x[1] or ''))


def window(n, seed, fat=0.002, repeats=0.0, decimals=4, start=100.0):
    rng = np.random.default_rng(seed)
    price = np.round(start * np.exp(np.cumsum(rng.normal(0, 1e-4, n))),
                     decimals)
    fat_rows = rng.random(n) < fat
    price[fat_rows] *= rng.choice([10.0, 0.1], fat_rows.sum())
    price = np.round(price, decimals)
    event = 1_767_225_600_000_000 + np.sort(rng.integers(0, 300_000_000, n))
    size = rng.integers(1, 1000, n).astype(float)
    ids = [f'T-{i}' for i in range(n)]
    again = np.flatnonzero(rng.random(n) < repeats)
    event = np.concatenate([event, event[again]])
    price = np.concatenate([price, price[again]])
    size = np.concatenate([size, size[again]])
    ids = ids + [ids[i] for i in again]
    return event, ids, price, size


def summary(event, ids, price, size, rows=None):
    rows = np.arange(len(price)) if rows is None else rows
    return PriceSummary.of_columns(event[rows], pa.array(
        [ids[i] for i in rows], pa.string()), price[rows], size[rows])


def shards(event, ids, price, size, parts, seed):
    """The same trades in ``parts`` random shards, merged in random order."""
    order = np.random.default_rng(seed).permutation(len(price))
    pieces = [summary(event, ids, price, size, rows)
              for rows in np.array_split(order, parts)]
    random.Random(seed).shuffle(pieces)
    acc = PriceSummary()
    for piece in pieces:
        acc.merge(pickle.loads(pickle.dumps(piece)))
    return acc


def same_flags(got, want, rel=1e-9):
    assert [g[:3] for g in got] == [w[:3] for w in want]
    for g, w in zip(got, want):
        assert g[3] == pytest.approx(w[3], rel=rel)
        assert g[4] == pytest.approx(w[4], rel=rel)


@pytest.mark.parametrize('seed', [1, 2, 3])
def test_exact_prices_give_the_numpy_rule_in_any_merge_order(seed):
    data = window(3000, seed, repeats=0.02)
    want = oracle(*data)
    assert want                                   # fat fingers are found
    whole = summary(*data)
    assert whole.level == -1                      # prices kept exactly
    same_flags(summary_outliers(whole, K, MIN), want)
    for parts in (2, 7, 40):
        merged = shards(*data, parts, seed + parts)
        assert np.array_equal(merged.keys, whole.keys)
        assert np.array_equal(merged.counts, whole.counts)
        assert merged.high == whole.high and merged.low == whole.low
        same_flags(summary_outliers(merged, K, MIN), want)


def test_without_repeats_the_anomalies_are_unchanged():
    """The rule before summaries dropped repeated trade ids; on trades
    without repeats both give the same anomalies."""
    data = window(2500, 11)
    same_flags(summary_outliers(summary(*data), K, MIN),
               oracle(*data, dedup=True))


def test_repeats_count_in_the_statistics_and_are_reported_once():
    """What changed: a re-sent trade counts again in count, median, MAD and
    VWAP (a summary cannot drop repeats without every id); a flagged trade
    re-sent is still one anomaly."""
    event, ids, price, size = window(500, 5, fat=0.0)
    price[100] = price[100] * 10                  # one fat finger, re-sent 3x
    again = np.array([100, 100, 100] + list(range(200, 260)))  # and others
    data = (np.concatenate([event, event[again]]), ids + [ids[i] for i in again],
            np.concatenate([price, price[again]]),
            np.concatenate([size, size[again]]))
    got = summary_outliers(summary(*data), K, MIN)
    assert [g[1] for g in got] == ['T-100']
    same_flags(got, oracle(*data))                # repeats in the VWAP
    assert oracle(*data, dedup=True)[0][3] != pytest.approx(got[0][3],
                                                             rel=1e-12)


def test_many_distinct_prices_are_binned_within_a_bin_width():
    data = window(60_000, 4, decimals=6)
    event, ids, price, size = data
    whole = summary(*data)
    assert whole.level >= 0 and len(whole.keys) <= anomalies.MAX_BINS
    merged = shards(*data, 9, 4)
    assert merged.level == whole.level
    assert np.array_equal(merged.keys, whole.keys)
    assert np.array_equal(merged.counts, whole.counts)
    # The same outliers as numpy's exact rule; the reference and deviation
    # within what a bin's width can move them.
    want = oracle(*data)
    got = summary_outliers(merged, K, MIN)
    assert [g[:3] for g in got] == [w[:3] for w in want] and want
    width = anomalies.BIN_WIDTH * 2 ** whole.level
    median = np.median(price)
    spread = 1.4826 * np.median(np.abs(price - median))
    values, counts = whole.histogram()
    assert anomalies._weighted_median(values, counts) == pytest.approx(
        median, rel=width)
    for g, w in zip(got, want):
        assert g[3] == pytest.approx(w[3], rel=1e-6)
        assert g[4] == pytest.approx(w[4], rel=2 * width * median / spread)


def test_a_summary_is_bounded_whatever_the_trades():
    small = len(pickle.dumps(summary(*window(20_000, 6, decimals=6))))
    big = len(pickle.dumps(summary(*window(400_000, 6, decimals=6))))
    assert big < 200_000 and big < 3 * small


def test_a_window_with_too_many_outliers_at_one_end_is_not_judged():
    event, ids, price, size = window(3 * EXTREMES + 100, 8, fat=0.0)
    price[:EXTREMES + 10] *= 10                   # too many at the top
    price[EXTREMES + 10:] = np.round(price[EXTREMES + 10:], 4)

    class Counter:
        n = 0

        def inc(self):
            self.n += 1
    counter = Counter()
    got = summary_outliers(summary(event, ids, price, size), K, MIN, counter)
    assert counter.n == 1 and got == []
    # One fewer beyond the limit: judged, every one of them flagged.
    price[EXTREMES - 1:EXTREMES + 10] /= 10
    got = summary_outliers(summary(event, ids, price, size), K, MIN, counter)
    assert counter.n == 1 and [g[1] for g in got] == [
        f'T-{i}' for i in range(EXTREMES - 1)]
    same_flags(got, oracle(event, ids, price, size))


def test_element_trades_fold_into_the_same_summary():
    from apache_beam.utils.timestamp import Timestamp
    from transforms.market.records import Trade
    event, ids, price, size = window(2600, 9, repeats=0.01)
    trades = [Trade(Timestamp(micros=int(e)), 'AAPL', float(p), float(s), i,
                    '', '') for e, i, p, s in zip(event, ids, price, size)]
    fn = anomalies.PriceSummaryFn()
    acc = fn.create_accumulator()
    for t in trades:
        acc = fn.add_input(acc, t)
    acc = fn.merge_accumulators([pickle.loads(pickle.dumps(acc))])
    whole = summary(event, ids, price, size)
    assert np.array_equal(acc.histogram()[0], whole.histogram()[0])
    same_flags(summary_outliers(acc, K, MIN), oracle(event, ids, price, size))
    assert EXACT_PRICES >= 2600
