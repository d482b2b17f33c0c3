"""NAB scoring as NAB's sweeper and runner compute it."""
import math

import pandas as pd
import pytest

from bench import nab


def series(n=1000):
    stamps = pd.date_range('2014-01-01', periods=n, freq='5min')
    return [str(s) for s in stamps]


def test_scaled_sigmoid_matches_nab_documented_points():
    assert nab.scaled_sigmoid(-1.0) == pytest.approx(0.98661, abs=1e-5)
    assert nab.scaled_sigmoid(-0.5) == pytest.approx(0.84828, abs=1e-5)
    assert nab.scaled_sigmoid(0.0) == 0.0
    assert nab.scaled_sigmoid(1.0) == pytest.approx(-0.98661, abs=1e-5)
    assert nab.scaled_sigmoid(3.0) == -1.0


def test_probationary_period_is_15_percent_capped_at_750_rows():
    assert nab.probation_rows(1000) == 150
    assert nab.probation_rows(22695) == 750


def test_null_perfect_and_single_detections():
    stamps = series()
    windows = [(stamps[400], stamps[499]), (stamps[800], stamps[849])]
    none = [False] * 1000
    assert nab.score_series(stamps, none, windows).raw == -2.0
    first = list(none)
    first[400] = first[800] = True
    perfect = nab.score_series(stamps, first, windows)
    assert perfect.raw == pytest.approx(2.0) and perfect.tp == 2
    assert nab.normalised(perfect.raw, 2) == pytest.approx(100.0)
    # Halfway into the first window, nothing in the second.
    half = list(none)
    half[450] = True
    position = -(499 - 450 + 1) / 100
    want = nab.scaled_sigmoid(position) / nab.scaled_sigmoid(-1.0) - 1.0
    assert nab.score_series(stamps, half, windows).raw == pytest.approx(want)


def test_false_positives_cost_by_distance_from_the_preceding_window():
    stamps = series()
    windows = [(stamps[400], stamps[499])]
    before = [False] * 1000
    before[300] = True                       # no preceding window: -fpWeight
    assert nab.score_series(stamps, before, windows).raw == \
        pytest.approx(-1.0 - 0.11)
    after = [False] * 1000
    after[510] = True                        # just after the window: cheaper
    cost = 0.11 * nab.scaled_sigmoid(abs(499 - 510) / 99)
    assert nab.score_series(stamps, after, windows).raw == \
        pytest.approx(-1.0 + cost)
    assert -0.11 < cost < 0


def test_detections_in_the_probationary_period_are_ignored():
    stamps = series()
    windows = [(stamps[400], stamps[499])]
    early = [False] * 1000
    early[10] = True
    s = nab.score_series(stamps, early, windows)
    assert (s.raw, s.fp, s.detections) == (-1.0, 0, 0)


def test_normalisation_reproduces_published_artime_score():
    # NAB's published raw standard-profile scores of ARTime on the seven
    # realKnownCause series (results/ARTime/ARTime_standard_scores.csv),
    # 19 windows: NAB's normalisation gives the 63.9 quoted for them.
    raw = [1.6577326504395065, -0.257470331859453, 1.3905835377463662,
           2.5563301921824606, 3.775210013719179, -1.280892312855327,
           -2.567650916046798]
    assert round(nab.normalised(sum(raw), 19), 1) == 63.9
    assert math.isclose(nab.normalised(-19, 19), 0.0)
