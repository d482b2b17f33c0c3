"""Session metrics: against pandas on the same reports, fragment by fragment,
and in a stream (TestStream): a session split by a gap, a late report that
merges two sessions, early and late panes."""
import random

import apache_beam as beam
import numpy as np
import pandas as pd
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from pipelines.run import counters, summarize
from transforms import windows
from transforms.aggregate import AggregatePerKey
from transforms.decode import decode_payload
from transforms.io import parse_uri, synthetic
from transforms.video import decoders
from transforms.video.records import VideoReport
from transforms.video.sessions import (SessionFn, SessionPoints, metrics,
                                       point_of, session_count, to_session)

T0 = 1767225600_000      # 2026-01-01T00:00:00Z in ms
JOB = 'videotest'


def reports_of(uri):
    decoder = decoders.make_decoder()
    out = []
    for payload in synthetic.generate(parse_uri(uri)).payloads():
        r = decode_payload(payload, decoder, 'decode.video')
        if isinstance(r, VideoReport):
            out.append(r)
    return out


def pandas_sessions(reports) -> pd.DataFrame:
    """The definitions of docs/video_qoe.md, computed with pandas."""
    df = pd.DataFrame([r._asdict() for r in reports])
    df['sn_key'] = df['sn'].fillna(-1)
    df = df.sort_values(['session_id', 'ts_ms', 'sn_key'], kind='stable')
    out = {}
    for sid, g in df.groupby('session_id', sort=True):
        st = g[g['state'].notna()].copy()
        st['duration'] = st['ts_ms'].shift(-1) - st['ts_ms']
        st['prev'] = st['state'].shift(1)
        br = g['video_bitrate_kbps'].ffill()
        st['br_in_force'] = br.loc[st.index]
        playing = st[st['state'] == 'p']
        rebuffer_ms = st.loc[st['state'] == 'r', 'duration'].sum()
        playing_ms = playing['duration'].sum()
        weighted = playing.dropna(subset=['duration', 'br_in_force'])
        brs = g['video_bitrate_kbps'].dropna()
        total = rebuffer_ms + playing_ms
        msd = g['msd'].dropna()
        out[sid] = {
            'video_start_time_ms': int(msd.iloc[0]) if len(msd) else None,
            'rebuffer_count': int(((st['state'] == 'r') &
                                   (st['prev'] != 'r')).sum()),
            'rebuffer_ms': int(rebuffer_ms),
            'playing_ms': int(playing_ms),
            'rebuffering_ratio': rebuffer_ms / total if total else None,
            'error_count': int(g['has_error'].sum()),
            'failed': bool((g['state'] == 'f').any()),
            'exit_before_video_start': bool(
                not (g['state'] == 'p').any() and
                not (g['state'] == 'f').any()),
            'bitrate_switches': int((brs.diff().fillna(0) != 0).sum()),
            'avg_bitrate_kbps': (
                (weighted['duration'] * weighted['br_in_force']).sum() /
                weighted['duration'].sum()) if weighted['duration'].sum()
            else None,
            'report_count': len(g),
        }
    return pd.DataFrame.from_dict(out, orient='index')


def assert_same(ours: dict, oracle: pd.Series, sid):
    for field, want in oracle.items():
        got = ours[field]
        if want is None or (isinstance(want, float) and np.isnan(want)):
            assert got is None, (sid, field, got)
        elif isinstance(want, float):
            assert got == pytest.approx(want, rel=1e-9), (sid, field)
        else:
            assert got == want, (sid, field, got, want)


@pytest.fixture(scope='module')
def synthetic_reports():
    return reports_of('synthetic://video?sessions=120&seed=7&late=0.05'
                      '&exit=0.1&fail=0.05')


def test_every_session_metric_equals_pandas(synthetic_reports):
    by_sid = {}
    for r in synthetic_reports:
        by_sid.setdefault(r.session_id, []).append(r)
    oracle = pandas_sessions(synthetic_reports)
    assert len(oracle) == len(by_sid) > 100
    # The stream exercises every metric.
    assert oracle['rebuffer_count'].sum() > 20
    assert oracle['failed'].sum() > 0
    assert oracle['exit_before_video_start'].sum() > 0
    assert oracle['bitrate_switches'].sum() > 20
    assert oracle['error_count'].sum() > 0
    for sid, reports in by_sid.items():
        points = SessionPoints.of(point_of(r) for r in reports).points
        ours = dict(metrics(points), report_count=len(points))
        assert_same(ours, oracle.loc[sid], sid)


def test_fragments_merge_into_the_whole_session(synthetic_reports):
    """The CombineFn checked shard by shard: any split of a session's
    reports into fragments, merged in any order, gives the same row."""
    rng = random.Random(3)
    fn = SessionFn()
    by_sid = {}
    for r in synthetic_reports:
        by_sid.setdefault(r.session_id, []).append(r)
    for sid, reports in list(by_sid.items())[:40]:
        whole = fn.extract_output(fn.add_inputs(fn.create_accumulator(),
                                                reports))
        shuffled = reports[:]
        rng.shuffle(shuffled)
        cuts = sorted(rng.sample(range(len(shuffled) + 1), 3))
        shards = [shuffled[a:b] for a, b in
                  zip([0] + cuts, cuts + [len(shuffled)])]
        accs = [fn.add_inputs(fn.create_accumulator(), s) for s in shards]
        rng.shuffle(accs)
        merged = fn.extract_output(fn.merge_accumulators(accs))
        assert merged.points == whole.points
        # A fragment is an input too (the columnar path sends fragments).
        again = fn.create_accumulator()
        for acc in [fn.add_inputs(fn.create_accumulator(), s)
                    for s in shards]:
            again = fn.add_input(again, acc)
        assert again.points == whole.points


def test_the_specification_example_8_2_5():
    """Rebuffering from 1764269150889 until playing at 1764269152389: one
    stall of 1,500 ms; time after the last report is not counted."""
    r = report(0, 'r', ts=1764269150889)
    p = report(0, 'p', ts=1764269152389)
    m = metrics(SessionPoints.of([point_of(r), point_of(p)]).points)
    assert (m['rebuffer_count'], m['rebuffer_ms'], m['playing_ms']) == \
        (1, 1500, 0)
    assert m['rebuffering_ratio'] == 1.0
    assert m['exit_before_video_start'] is False


# ------------------------------------------------------------ TestStream

def report(offset_s, state=None, sid='s1', br=None, msd=None, sn=None,
           error=False, ts=None):
    ts = T0 + int(offset_s * 1000) if ts is None else ts
    return VideoReport(Timestamp(micros=ts * 1000), ts, sid, 'movie', 'cdn',
                       'v', 'd', 'ps' if state else 't', state, sn, msd, br,
                       error, None, 'report')


def add(stream, *reports):
    return stream.add_elements(
        [TimestampedValue(r, r.event_time) for r in reports])


def run_sessions(stream, check, trigger='default', gap='session:30m'):
    spec_w, spec_t = windows.parse_window(gap), windows.parse_trigger(trigger)
    p = TestPipeline(options=PipelineOptions(
        runner='BundleBasedDirectRunner', streaming=True))
    rows = (p | stream
            | beam.Map(lambda r: (r.session_id, r))
            | windows.ApplyWindow(spec_w, spec_t)
            | AggregatePerKey(SessionFn(), to_session, session_count,
                              spec_t.accumulates_panes, JOB, merging=True))
    panes = rows | beam.Map(lambda s: (
        s.session_id, (s.window_start.micros // 1000 - T0) // 1000,
        (s.window_end.micros // 1000 - T0) // 1000, s.pane_timing,
        s.report_count, s.playing_ms, s.rebuffer_ms, s.rebuffer_count))
    assert_that(panes, lambda got: check(sorted(got, key=lambda x: (
        x[0], x[1], ['EARLY', 'ON_TIME', 'LATE'].index(x[3]), x[4]))),
        label='CheckSessions')
    result = p.run()
    result.wait_until_finish()
    return summarize(counters(result, JOB))


def equals(expected):
    def check(got):
        assert got == expected, got
    return check


def test_a_gap_splits_a_viewing_into_two_sessions():
    stream = TestStream().advance_watermark_to(Timestamp.of(T0 / 1000))
    add(stream, report(0, 's'), report(2, 'p'), report(32, 'r'),
        report(34, 'p'), report(60, 'e'))
    # 31 minutes without a report: a second session of the same sid.
    add(stream, report(60 + 31 * 60, 'p'), report(60 + 31 * 60 + 90, 'e'))
    stream.advance_watermark_to_infinity()
    start2 = 60 + 31 * 60
    summary = run_sessions(stream, equals([
        ('s1', 0, 60 + 1800, 'ON_TIME', 5, 30000 + 26000, 2000, 1),
        ('s1', start2, start2 + 90 + 1800, 'ON_TIME', 2, 90000, 0, 0),
    ]))
    assert summary['window_assignments'] == summary['aggregated'] == 7


def test_a_late_report_merges_two_sessions_in_a_late_pane():
    stream = TestStream().advance_watermark_to(Timestamp.of(T0 / 1000))
    add(stream, report(0, 'p'), report(600, 'p'))        # session A
    add(stream, report(3000, 'p'), report(3060, 'e'))     # B: 40 min later
    stream.advance_watermark_to(Timestamp.of(T0 / 1000 + 3060 + 1801))
    # Both have closed; a late report at 25 min bridges the gap.
    add(stream, report(1500, 'r'))
    stream.advance_watermark_to_infinity()
    summary = run_sessions(stream, equals([
        ('s1', 0, 600 + 1800, 'ON_TIME', 2, 600000, 0, 0),
        ('s1', 0, 3060 + 1800, 'LATE', 5, 600000 + 900000 + 60000,
         1500000, 1),
        ('s1', 3000, 3060 + 1800, 'ON_TIME', 2, 60000, 0, 0),
    ]), trigger='late=1,lateness=2h')
    # Accounted once each: the merged pane adds only the late report.
    assert summary['window_assignments'] == 5
    assert summary['aggregated'] == 5
    assert summary['late_accepted'] == 1


def test_early_on_time_and_late_panes_of_a_session():
    stream = TestStream().advance_watermark_to(Timestamp.of(T0 / 1000))
    add(stream, report(0, 's'), report(1, 'p', msd=1000))
    stream.advance_processing_time(20)                     # an EARLY pane
    add(stream, report(30, 'r'), report(33, 'p'))
    stream.advance_processing_time(20)                     # another
    stream.advance_watermark_to(Timestamp.of(T0 / 1000 + 33 + 1801))
    add(stream, report(20, 'p'))                            # late, in time
    stream.advance_processing_time(20)
    stream.advance_watermark_to(Timestamp.of(T0 / 1000 + 9000))
    add(stream, report(25, 'p'))                            # beyond lateness
    stream.advance_processing_time(20)
    stream.advance_watermark_to_infinity()
    summary = run_sessions(stream, equals([
        ('s1', 0, 1 + 1800, 'EARLY', 2, 0, 0, 0),
        ('s1', 0, 33 + 1800, 'EARLY', 4, 29000, 3000, 1),
        ('s1', 0, 33 + 1800, 'ON_TIME', 4, 29000, 3000, 1),
        # The late report splits the first playing interval at 20 s.
        ('s1', 0, 33 + 1800, 'LATE', 5, 29000, 3000, 1),
    ]), trigger='early=10s,late=1,lateness=10m,accumulating')
    assert summary['dropped_late'] == 1
    assert summary['late_accepted'] == 1
    assert summary['panes_early'] == 2
