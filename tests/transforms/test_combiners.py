import pickle

import numpy as np
import pytest

from transforms.combiners import (Moments, MomentsFn, Quantiles, QuantilesFn)


def _split_merge(values, parts, make, add):
    """Accumulate values in `parts` pieces, then merge, as runners do."""
    accs = []
    for chunk in np.array_split(values, parts):
        acc = make()
        for x in chunk:
            add(acc, x)
        accs.append(pickle.loads(pickle.dumps(acc)))   # cross a shuffle
    return accs


def test_moments_match_numpy_after_merges():
    rng = np.random.default_rng(1)
    values = rng.lognormal(3, 1, 5000)
    fn = MomentsFn()
    accs = _split_merge(values, 7, fn.create_accumulator, fn.add_input)
    out = fn.extract_output(fn.merge_accumulators(accs))
    assert out['count'] == len(values)
    assert out['mean'] == pytest.approx(values.mean(), rel=1e-12)
    assert out['stddev'] == pytest.approx(values.std(ddof=1), rel=1e-10)
    assert out['min'] == values.min() and out['max'] == values.max()


def test_moments_are_numerically_stable_with_a_large_offset():
    # Sum-of-squares variance loses everything here; Welford/Chan does not.
    values = 1e9 + np.array([4.0, 7.0, 13.0, 16.0] * 1000)
    acc = Moments.of_array(values[:1500]).merge(Moments.of_array(values[1500:]))
    assert acc.stddev == pytest.approx(np.std(values, ddof=1), rel=1e-9)


def test_moments_vectorised_equals_elementwise():
    values = np.random.default_rng(2).normal(size=1000)
    one = Moments()
    for x in values:
        one.add(x)
    vec = Moments.of_array(values)
    assert vec.count == one.count
    assert vec.mean == pytest.approx(one.mean, rel=1e-12)
    assert vec.m2 == pytest.approx(one.m2, rel=1e-10)


def test_empty_moments():
    out = Moments().result()
    assert out == {'count': 0, 'mean': None, 'min': None, 'max': None,
                   'stddev': None}
    assert Moments().add(3.0).stddev is None


def test_quantiles_within_the_stated_rank_error():
    rng = np.random.default_rng(3)
    values = rng.lognormal(3, 1, 50000)
    fn = QuantilesFn(ranks=(0.5, 0.95, 0.99))
    accs = _split_merge(values, 5, fn.create_accumulator, fn.add_input)
    got = fn.extract_output(fn.merge_accumulators(accs))
    eps = Quantiles.rank_error()
    assert 0.005 < eps < 0.03
    ordered = np.sort(values)
    for rank, value in zip((0.5, 0.95, 0.99), got):
        true_rank = np.searchsorted(ordered, value) / len(values)
        assert abs(true_rank - rank) <= eps, (rank, true_rank)


def test_quantiles_of_nothing_are_none():
    assert Quantiles().quantiles([0.5]) == [None]


def test_quantiles_vectorised_add_and_pickle():
    q = Quantiles().add_array(np.arange(1, 101, dtype=float))
    q2 = pickle.loads(pickle.dumps(q))
    assert q2.count == 100
    assert q2.quantiles([0.5])[0] == pytest.approx(50, abs=2)


def test_merging_nothing_gives_an_empty_accumulator():
    # Beam merges an empty list for an empty pane (seen with discarding
    # panes): that must not raise.
    from transforms.logs.stats import LogStatsFn
    for fn in (MomentsFn(), QuantilesFn(), LogStatsFn()):
        acc = fn.merge_accumulators([])
        assert fn.merge_accumulators([acc, fn.create_accumulator()]) is not None
    assert MomentsFn().extract_output(MomentsFn().merge_accumulators([])) == \
        Moments().result()
