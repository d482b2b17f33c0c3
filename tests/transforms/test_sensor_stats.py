"""Sensor statistics against pandas, the trend against numpy.polyfit, and the
accumulator merged shard by shard."""
import random

import numpy as np
import pandas as pd
import pytest
from apache_beam.transforms.window import IntervalWindow
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import PaneInfo, PaneInfoTiming

from transforms import windows
from transforms.sensors.records import CalibratedReading
from transforms.sensors.stats import SensorAcc, SensorStatsFn, Trend, \
    to_sensor_stats

T0 = 1_767_225_600          # 2026-01-01: epoch-sized times


def readings(n, seed=3, start=T0):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        t = start + i * 7.3 + rng.uniform(0, 3)
        value = 20 + 0.01 * (t - start) + rng.gauss(0, 0.5)
        calibrated = rng.random() > 0.2
        out.append(CalibratedReading(
            Timestamp(micros=int(t * 1e6)), 's1', 'temperature', value,
            value, 'C', '', calibrated, 'sha1:abc' if calibrated else ''))
    return out


def combine_in_shards(rs, shards, seed=0):
    fn = SensorStatsFn()
    rng = random.Random(seed)
    rs = list(rs)
    rng.shuffle(rs)
    accs = []
    for k in range(shards):
        acc = fn.create_accumulator()
        for r in rs[k::shards]:
            acc = fn.add_input(acc, r)
        accs.append(acc)
    return fn.merge_accumulators(accs)


ONLY = PaneInfo(True, True, PaneInfoTiming.ON_TIME, 0, 0)


@pytest.mark.parametrize('shards', [1, 3, 8])
def test_statistics_equal_pandas_on_the_same_readings(shards):
    rs = readings(500)
    window = IntervalWindow(Timestamp.of(T0), Timestamp.of(T0 + 5000))
    row = to_sensor_stats(('s1', 'temperature'), combine_in_shards(rs, shards),
                          windows.pane_fields(window, ONLY))
    v = pd.Series([r.value for r in rs])
    assert row.count == len(v)
    assert row.mean == pytest.approx(v.mean(), rel=1e-12)
    assert row.min == v.min() and row.max == v.max()
    assert row.stddev == pytest.approx(v.std(), rel=1e-9)      # ddof=1
    # KLL: rank error ~1.33% at k=200 (exact below its capacity).
    for q, got in ((0.5, row.p50), (0.95, row.p95)):
        rank = (v < got).mean()
        assert abs(rank - q) < 0.0133 * 2
    assert row.uncalibrated_count == sum(not r.calibrated for r in rs)
    assert row.calibration_version == 'sha1:abc'


@pytest.mark.parametrize('shards', [1, 4])
def test_trend_equals_numpy_polyfit_for_epoch_sized_times(shards):
    rs = readings(300)
    window_start = T0
    acc = combine_in_shards(rs, shards)
    t = np.array([r.event_time.micros / 1e6 for r in rs])
    y = np.array([r.value for r in rs])
    slope, intercept = np.polyfit(t - window_start, y, 1)
    got_slope, got_intercept = acc.trend.line(window_start * 10**6)
    assert got_slope == pytest.approx(slope, rel=1e-9)
    assert got_intercept == pytest.approx(intercept, rel=1e-9)


def test_uncentred_sums_would_fail_where_the_centred_trend_does_not():
    # Points a millisecond apart at epoch time: the textbook formula
    # (n Σty - Σt Σy) / (n Σt² - (Σt)²) loses every digit here.
    t_us = T0 * 10**6 + np.arange(50) * 1000
    t = t_us / 1e6
    y = 3.0 * (t_us - T0 * 10**6) / 1e6 + 1.0
    trend = Trend()
    for ti, yi in zip(t_us, y):
        trend.add(int(ti), float(yi))
    assert trend.line(T0 * 10**6)[0] == pytest.approx(3.0, rel=1e-9)
    assert trend.line(T0 * 10**6)[1] == pytest.approx(1.0, rel=1e-9)
    n = len(t)
    naive = (n * (t * y).sum() - t.sum() * y.sum()) / \
        (n * (t * t).sum() - t.sum() ** 2)
    assert abs(naive - 3.0) > 0.1


def test_arrays_and_elements_give_the_same_accumulator():
    rs = readings(200)
    by_element = combine_in_shards(rs, 1)
    by_array = SensorAcc.of_arrays(
        [r.event_time.micros for r in rs], [r.value for r in rs],
        [r.calibrated for r in rs],
        {r.calibration_version for r in rs if r.calibrated})
    assert by_array.count == by_element.count
    assert by_array.uncalibrated == by_element.uncalibrated
    assert by_array.versions == by_element.versions
    assert by_array.trend.line(T0 * 10**6)[0] == pytest.approx(
        by_element.trend.line(T0 * 10**6)[0], rel=1e-9)
    assert by_array.moments.mean == pytest.approx(by_element.moments.mean)


def test_one_point_has_no_trend_and_no_stddev():
    rs = readings(1)
    window = IntervalWindow(Timestamp.of(T0), Timestamp.of(T0 + 60))
    row = to_sensor_stats(('s1', 'temperature'), combine_in_shards(rs, 1),
                          windows.pane_fields(window, ONLY))
    assert row.count == 1 and row.stddev is None
    assert row.slope is None and row.intercept is None


def test_an_accumulator_survives_the_shuffle_coder_unchanged():
    # Accumulators cross the shuffle through Beam's default coder (pickle).
    from apache_beam import coders  # pylint: disable=import-outside-toplevel
    coder = coders.registry.get_coder(object)
    window = IntervalWindow(Timestamp(T0), Timestamp(T0 + 3600))
    pane = windows.pane_fields(window, ONLY)
    for acc in (combine_in_shards(readings(300), 3), SensorAcc()):
        back = coder.decode(coder.encode(acc))
        assert isinstance(back, SensorAcc) and back is not acc
        assert back.moments.__getstate__() == acc.moments.__getstate__()
        assert back.trend.__getstate__() == acc.trend.__getstate__()
        assert back.sketch.__getstate__() == acc.sketch.__getstate__()
        assert (back.versions, back.uncalibrated) == \
            (acc.versions, acc.uncalibrated)
        assert to_sensor_stats(('s1', 'temperature'), back, pane) == \
            to_sensor_stats(('s1', 'temperature'), acc, pane)
