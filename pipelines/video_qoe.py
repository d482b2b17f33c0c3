"""Live-video quality of experience from CMCD (CTA-5004 and CTA-5004-B).

Reads Common Media Client Data: CMCD v2 event-mode reports as players POST
them, CDN or origin access-log lines whose request URL carries a ``CMCD=``
query argument (v1 or v2 request mode), or CMCD JSON lines (auto-detected per
line).  Payloads CMCD does not allow are dead letters with the standard's
reason.  Per viewing session (``sid``, a session window): start-up time,
stalls, rebuffering ratio, errors, failures, exits before video start,
bitrate switches and average bitrate.  Per fixed window and dimension (all,
content, CDN, stream type): active sessions, plays, start-up p50/p95,
rebuffering ratio, errors, failures and exits, with alerts when a
dimension's rebuffering ratio or start-up p95 crosses its threshold.

Output tables: sessions, qoe_rollups, alerts, dead_letter.
"""
import operator
import typing

import apache_beam as beam

from pipelines.options import (JobOptions, fraction, non_negative_int,
                               positive_float, window_spec)
from transforms import deadletter, io, privacy, windows
from transforms.aggregate import AggregatePerKey
from transforms.deadletter import DeadLetter
from transforms.decode import Decode, PayloadEventTime, records_and_keyed
from transforms.detectors import Alert, Rule, ThresholdAlerts
from transforms.video import decoders
from transforms.video.cmcd_columnar import EventTimes
from transforms.video.columnar import (BlockFragmentsFn, RollupRowsFn,
                                       SessionsAndRollupsFn)
from transforms.video.rollups import (Rollup, RollupFn, SessionTimeline,
                                      by_dimension, rollup_count, rollup_key,
                                      to_rollup)
from transforms.video.sessions import (Session, SessionFn, session_count,
                                       to_session)

JOB = 'video_qoe'


class VideoQoeOptions(JobOptions):
    JOB = JOB
    DEFAULT_SOURCE = 'synthetic://video?sessions=400&seed=42'
    DEFAULT_SINK = 'parquet://output/video_qoe'
    DEFAULT_WINDOW = 'session:30m'
    DEFAULT_TRIGGER = 'early=30s,late=1,lateness=2m,accumulating'

    @classmethod
    def _add_argparse_args(cls, parser):
        super()._add_argparse_args(parser)
        group = parser.add_argument_group('video_qoe')
        group.add_argument(
            '--cmcd_format', default='auto', choices=decoders.FORMATS,
            help='line format: "report" (CMCD v2 event-mode report bodies), '
                 '"access_log" (combined access-log lines with a CMCD= query '
                 'argument), "json" (CMCD JSON objects); auto detects per '
                 'line: { JSON, a [time] "request" access log, else a report '
                 '(default: %(default)s)')
        group.add_argument(
            '--rollup_window', default='fixed:60s', type=window_spec,
            help='windows of the qoe_rollups table: fixed or sliding '
                 '(default: %(default)s)')
        group.add_argument(
            '--execution', default='columnar', choices=('columnar', 'element'),
            help='"columnar" reads blocks of lines and sends session '
                 'fragments, not reports, through the shuffle (same results); '
                 '"element" handles one report at a time (the reference). A '
                 'stream always runs "element" (default: %(default)s)')
        group.add_argument(
            '--rebuffering_ratio_threshold', default=0.05, type=fraction,
            help='alert when a dimension\'s rebuffering ratio in a rollup '
                 'window exceeds this fraction (default: %(default)s)')
        group.add_argument(
            '--startup_p95_threshold_ms', default=6000.0, type=positive_float,
            help='alert when a dimension\'s video start time p95 in a rollup '
                 'window exceeds this many ms (default: %(default)s)')
        group.add_argument(
            '--alert_hysteresis', default=0.2, type=fraction,
            help='an alert recovers when the metric falls below '
                 'threshold x (1 - this) (default: %(default)s)')
        group.add_argument(
            '--alert_min_sessions', default=10, type=non_negative_int,
            help='rollup windows with fewer active sessions are not '
                 'evaluated for alerts (default: %(default)s)')


OPTIONS = VideoQoeOptions


class AlertFiles(Alert):
    """The ``alerts`` rows, filed by the hour their window starts in (one
    file per hour and pane, as sessions and rollups are): a dimension whose
    rebuffering ratio flaps around its threshold raises and recovers in
    hundreds of 60 s windows, and a file per window costs a file each."""
    __slots__ = ()
    FILE_PERIOD_SECONDS = 3600

TABLES = {
    'sessions': Session,
    'qoe_rollups': Rollup,
    'alerts': Alert,
    'dead_letter': DeadLetter,
}


def build(pipeline, args, context):
    """Wire the video_qoe job: read -> decode -> sessions (session windows) and
    per-session walk -> rollups (fixed windows) -> alerts -> write.  Returns
    the output PCollections by table name."""
    window = windows.parse_window(args.window)
    if window.kind != 'session':
        raise ValueError('argument --window: video sessions need session:GAP '
                         f'windows, got {args.window}')
    rollup_window = windows.parse_window(args.rollup_window)
    if rollup_window.kind == 'session':
        raise ValueError('argument --rollup_window: fixed or sliding only')
    trigger = windows.parse_trigger(args.trigger).for_mode(context.streaming)
    decoder = decoders.make_decoder(args.cmcd_format)
    json_fast = args.cmcd_format in ('auto', 'json')
    # The source's watermark follows the event times the decoder reads
    # (a block's canonical lines read at once, as the fast path reads them).
    # A local read registers the message of a report that may be late for
    # its session or its rollups (context.late_from): its late dead letters
    # name it with their output.
    source = io.open_source(args.source, context._replace(
        event_time=PayloadEventTime(
            decoder, args.max_record_bytes,
            EventTimes(args.max_record_bytes) if json_fast else None),
        late_from=windows.LateFrom((window, rollup_window), trigger)
        if context.keeps_late else None))
    sink = io.open_sink(args.sink, context)
    dead_sink = io.open_sink(args.dead_letter or args.sink, context)
    rules = [
        Rule('rebuffering_ratio', args.rebuffering_ratio_threshold,
             args.alert_hysteresis, args.alert_min_sessions,
             'active_sessions'),
        Rule('video_start_time_p95_ms', args.startup_p95_threshold_ms,
             args.alert_hysteresis, args.alert_min_sessions,
             'active_sessions'),
    ]

    dead = None
    blocks = source.blocks() if (args.execution == 'columnar'
                                 and not context.streaming) else None
    if blocks is not None:
        # A bounded replay: blocks of lines -> columnar fragments per shard
        # of session ids -> sessions (rows) and rollup partials (with their
        # window in the key).
        decoded = (pipeline
                   | 'Read' >> blocks
                   | 'DecodeFragments' >> beam.ParDo(BlockFragmentsFn(
                       decoder, 'decode.video', JOB, args.source,
                       args.max_record_bytes,
                       json_fast=json_fast))
                   .with_output_types(typing.Tuple[int, bytes])
                   .with_outputs(
                           deadletter.DEAD, main=deadletter.OK))
        split = (decoded.ok
                 | 'GroupShard' >> beam.GroupByKey()
                 | 'SessionsAndRollups' >> beam.ParDo(SessionsAndRollupsFn(
                     window.size, rollup_window, JOB))
                 .with_outputs(SessionsAndRollupsFn.ROLLUPS, main='sessions'))
        # (Arrow tables of sessions rows, written without a row object per
        # session.)
        sessions = split.sessions
        # Rollup partials travel per hour of windows and leave as Arrow
        # tables of rows (and what the alerts judge of each row).
        rolled = (split[SessionsAndRollupsFn.ROLLUPS]
                  | 'GroupHour' >> beam.GroupByKey()
                  | 'Rollups' >> beam.ParDo(RollupRowsFn(JOB)).with_outputs(
                      RollupRowsFn.ALERTS, main='rows'))
        rollups = rolled.rows
        alert_inputs = rolled[RollupRowsFn.ALERTS]
    else:
        # In a stream on the local runner, reports (sessions) and
        # contributions (rollups) after the allowed lateness become dead
        # letters, stage window.late, instead of being dropped; a late
        # report's letter holds the payload it was read from, which travels
        # with it to the sessions' grouping.  A report may be late for its
        # session and for its rollups: the message it came from, where the
        # read registered it (one that may be late), travels with it to
        # both groupings, and each late dead letter names it with its
        # output ('#message=ID&window=session|rollup&key=K'), so that a
        # restart keeps the report out of just the groupings whose late
        # dead letters the sink holds (transforms/deadletter.py).
        keep_late = trigger.lateness if context.keeps_late else None
        carried = keep_late is not None
        decoded = (pipeline
                   | 'Read' >> source
                   | 'Decode' >> Decode(
                       decoder, stage='decode.video', job=JOB,
                       source=args.source, max_bytes=args.max_record_bytes,
                       with_raw=carried))
        if carried:
            bound = decoded.ok | 'Origins' >> beam.ParDo(
                deadletter.BindOrigins())
            reports = bound | 'Reports' >> beam.Map(
                lambda p: (p[0], deadletter.origin_of(p[1])))
            by_session = bound | 'KeyBySession' >> beam.Map(
                lambda p: (p[0].session_id, p))
        else:
            reports, by_session = records_and_keyed(
                decoded.ok, operator.attrgetter('session_id'), False,
                'KeyBySession')
        session_aggregate = AggregatePerKey(
            SessionFn(), to_session, session_count,
            trigger.accumulates_panes, JOB, merging=True,
            keep_late=keep_late, carries_raw=carried, source=args.source,
            late_output='session')
        sessions = (by_session
                    | 'SessionWindow' >> windows.ApplyWindow(window, trigger)
                    | 'Sessions' >> session_aggregate
                    .with_output_types(Session))
        rollup_aggregate = AggregatePerKey(
            RollupFn(), to_rollup, rollup_count,
            trigger.accumulates_panes, JOB, keep_late=keep_late,
            carries_raw=carried, source=args.source, late_output='rollup',
            # sliding rollup windows: a contribution is in several, and may
            # be late for some of them only: its letters name their window
            late_per_window=rollup_window.kind == 'sliding')
        rollups = (reports
                   | 'Timeline' >> SessionTimeline(window.size, JOB,
                                                  context.streaming,
                                                  carries_origin=carried)
                   | 'ByDimension' >> beam.FlatMap(by_dimension)
                   | 'RollupWindow' >> windows.ApplyWindow(rollup_window,
                                                           trigger)
                   | 'Rollups' >> rollup_aggregate
                   .with_output_types(Rollup))
        late = [a.late for a in (session_aggregate, rollup_aggregate)
                if a.late is not None]
        if late:
            dead = ((decoded.dead, *late)
                    | 'DeadAndLate' >> beam.Flatten())
    if blocks is None:
        alert_inputs = rollups
    alerts = alert_inputs | 'Alerts' >> ThresholdAlerts(
        rollup_key, rules, JOB,
        bounded=blocks is not None,
        batched=blocks is not None).with_output_types(Alert)

    if blocks is not None:
        sessions | 'WriteSessions' >> sink.write_tables(
            'sessions', TABLES['sessions'])
    else:
        sessions | 'WriteSessions' >> sink.write('sessions',
                                                 TABLES['sessions'])
    if blocks is not None:
        rollups | 'WriteRollups' >> sink.write_tables(
            'qoe_rollups', TABLES['qoe_rollups'])
    else:
        rollups | 'WriteRollups' >> sink.write('qoe_rollups',
                                               TABLES['qoe_rollups'])
    alerts | 'WriteAlerts' >> sink.write('alerts', AlertFiles)
    if args.alerts:
        alerts | 'PublishAlerts' >> io.open_sink(
            args.alerts, context, counter='rows_published').write(
                'alerts', TABLES['alerts'])
    if dead is None:
        dead = decoded.dead
    # Personal data in a refused payload (or quoted in its reason: CMCD
    # reasons show the value) is masked, as the logs and trades jobs mask
    # theirs (IP and e-mail addresses, bearer tokens).
    dead = dead | 'MaskDeadLetters' >> privacy.MaskFields(
        privacy.Masker(mode='mask'), ('raw', 'reason'))
    dead | 'WriteDeadLetters' >> dead_sink.write(
        'dead_letter', TABLES['dead_letter'])
    return {'sessions': sessions, 'qoe_rollups': rollups, 'alerts': alerts,
            'dead_letter': dead}
