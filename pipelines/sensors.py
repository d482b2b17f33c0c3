"""Calibrated sensor statistics, trends and anomaly incidents.

Reads sensor readings (JSON lines or CSV with a header: event_time,
sensor_id, metric, value, unit, quality), calibrates each with the linear
model ``y = a x + b`` of its sensor and metric in force at its event time (a
side input read from --calibration, re-read every --calibration_refresh in a
stream from a live source), and computes per sensor, metric and event-time
window the count, mean, min, max, stddev, p50, p95 and the least-squares
trend (slope per second, value at the window start).  A stateful detector per
sensor reports one record per incident: spikes against a robust EWMA of
level, weekly profile and variance, stuck values, silence (by event-time
timer) and trend breaches of --trend_low/--trend_high.

Output tables: stats, anomalies, dead_letter.
"""
import argparse
import operator
import typing

import apache_beam as beam

from pipelines.options import (JobOptions, duration, non_negative_int,
                               positive_float)
from transforms import columnar, deadletter, io, privacy, windows
from transforms.combiners import DEFAULT_K
from transforms.aggregate import AggregatePerKey, per_window_late_from
from transforms.deadletter import DeadLetter
from transforms.decode import Decode, PayloadEventTime, records_and_keyed
from transforms.sensors import calibration, decoders
from transforms.sensors.columnar import (READINGS, BlockDecoder,
                                        SensorPartials, SensorPartialsFn)
from transforms.sensors.columnar import event_times as reading_event_times
from transforms.sensors.detectors import DetectIncidents, DetectorConfig
from transforms.sensors.records import Incident, SensorStats
from transforms.sensors.stats import (SensorStatsFn, stats_count,
                                      to_sensor_stats)

JOB = 'sensors'
DEFAULTS = DetectorConfig()


def optional_float(text):
    """A finite number (negative allowed)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r} is not a number') from None
    if value != value or value in (float('inf'), float('-inf')):
        raise argparse.ArgumentTypeError(f'{text!r} must be finite')
    return value


optional_float.regex = r'^-?[0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?$'


def duration_or_off(text):
    """A duration, or 0 (off)."""
    if text.strip() in ('0', 'off'):
        return '0'
    return duration(text)


duration_or_off.regex = r'^(0|off|' + duration.regex[1:-1] + r')$'


class SensorsOptions(JobOptions):
    JOB = JOB
    DEFAULT_SOURCE = 'synthetic://sensors?sensors=20&seed=42'
    DEFAULT_SINK = 'parquet://output/sensors'
    DEFAULT_WINDOW = 'fixed:5m'
    DEFAULT_TRIGGER = 'early=10s,late=1,lateness=2m,accumulating'
    ALERT_TABLE = 'anomalies'

    @classmethod
    def _add_argparse_args(cls, parser):
        super()._add_argparse_args(parser)
        group = parser.add_argument_group('sensors')
        group.add_argument(
            '--reading_format', default='auto', choices=decoders.FORMATS,
            help='line format; auto: { JSON, else CSV (default: %(default)s)')
        group.add_argument(
            '--calibration', default=None,
            help='calibration table y = a*x + b: CSV with a header or JSON '
                 'lines with sensor_id, metric, a, b, valid_from, by path or '
                 'URI (file://, gs://); readings without a row pass '
                 'uncalibrated, flagged and counted (default: none, every '
                 'reading uncalibrated)')
        group.add_argument(
            '--calibration_refresh', default='5m', type=duration,
            help='in a stream from a live source (kafka://, pubsub://), '
                 're-read the calibration table this often without a '
                 'restart; batch runs and replays read it once '
                 '(default: %(default)s)')
        group.add_argument(
            '--execution', default='columnar', choices=('columnar', 'element'),
            help='"columnar" decodes and calibrates blocks of lines with Arrow '
                 'and numpy and pre-aggregates statistics per sensor and '
                 'window before the shuffle (same results); "element" handles '
                 'one reading at a time (the reference). Session windows, '
                 'late=N>1, a calibration refreshed from a live source and '
                 'a local stream with sliding windows from kafka:// or '
                 'pubsub:// always run "element" (default: %(default)s)')
        group.add_argument(
            '--anomalies', default='on', choices=('on', 'off'),
            help='"off" computes the stats table only (no per-reading '
                 'detector; the anomalies table stays empty) '
                 '(default: %(default)s)')
        group.add_argument(
            '--spike_k', default=DEFAULTS.k_open, type=positive_float,
            help='open a spike incident when a reading is more than k robust '
                 'standard deviations from its expected value (EWMA level + '
                 'weekly profile) (default: %(default)s)')
        group.add_argument(
            '--spike_close_k', default=DEFAULTS.k_close, type=positive_float,
            help='a reading within this many standard deviations is quiet '
                 '(default: %(default)s)')
        group.add_argument(
            '--spike_quiet_readings', default=DEFAULTS.quiet,
            type=non_negative_int,
            help='close a spike incident after this many quiet readings in '
                 'a row (default: %(default)s)')
        group.add_argument(
            '--warmup_readings', default=DEFAULTS.warmup,
            type=non_negative_int,
            help='readings of a sensor learnt from before any is judged '
                 '(default: %(default)s)')
        group.add_argument(
            '--stuck_readings', default=30, type=non_negative_int,
            help='report a stuck sensor after this many equal readings in a '
                 'row; 0 turns it off (default: %(default)s)')
        group.add_argument(
            '--max_silence', default='10m', type=duration_or_off,
            help='report a sensor silent for longer than this (by event-time '
                 'timer in a stream, waiting the allowed lateness); 0 turns '
                 'it off (default: %(default)s)')
        group.add_argument(
            '--trend_low', default=None, type=optional_float,
            help='report a trend breach when the level, projected '
                 '--trend_horizon ahead, falls below this calibrated value '
                 '(default: none)')
        group.add_argument(
            '--trend_high', default=None, type=optional_float,
            help='... or rises above this one (default: none)')
        group.add_argument(
            '--trend_horizon', default='1h', type=duration,
            help='how far ahead the trend is projected (default: %(default)s)')


OPTIONS = SensorsOptions

TABLES = {
    'stats': SensorStats,
    'anomalies': Incident,
    'dead_letter': DeadLetter,
}


def detector_config(args) -> DetectorConfig:
    if args.spike_close_k > args.spike_k:
        raise ValueError('argument --spike_close_k: must not exceed --spike_k')
    return DEFAULTS._replace(
        k_open=args.spike_k, k_close=args.spike_close_k,
        quiet=args.spike_quiet_readings, warmup=args.warmup_readings,
        stuck_readings=args.stuck_readings,
        max_silence_s=0.0 if args.max_silence == '0'
        else windows.parse_duration(args.max_silence),
        trend_low=args.trend_low, trend_high=args.trend_high,
        horizon_s=windows.parse_duration(args.trend_horizon))


def build(pipeline, args, context):
    """Wire the sensors job: read -> decode -> calibrate -> window -> stats /
    incidents -> write.  Returns the output PCollections by table name."""
    window = windows.parse_window(args.window)
    trigger = windows.parse_trigger(args.trigger).for_mode(context.streaming)
    config = detector_config(args)
    try:
        calibration.load_table(args.calibration)   # fail before running
    except calibration.CalibrationError as e:
        raise ValueError(f'argument --calibration: {e}') from None
    refresh = windows.parse_duration(args.calibration_refresh)
    if refresh <= 0:
        raise ValueError('argument --calibration_refresh: must be > 0')
    live = context.streaming and io.unbounded(args.source) and \
        args.calibration is not None
    json_fast = args.reading_format in ('auto', 'json')
    # Sliding windows from a source a restart resumes, where late readings
    # are kept: a reading is in several windows and may be late for some
    # of them only, so its late dead letters name their window and key,
    # the read registers a reading that may be late for any of its
    # windows, and each reading travels one by one with its origin
    # (docs/reliability.md).
    late_from = per_window_late_from(context, args.source, window, trigger)
    per_window = late_from is not None
    # The source's watermark follows the event times the decoder reads
    # (a block's JSON lines read at once, as the fast path reads them).
    source = io.open_source(args.source, context._replace(
        event_time=PayloadEventTime(
            decoders.make_decoder(args.reading_format),
            args.max_record_bytes,
            reading_event_times(args.max_record_bytes) if json_fast
            else None),
        late_from=late_from))
    sink = io.open_sink(args.sink, context)
    dead_sink = io.open_sink(args.dead_letter or args.sink, context)

    tables = pipeline | 'CalibrationTable' >> calibration.CalibrationTables(
        args.calibration, refresh if live else None, JOB)
    carried = False
    if args.execution == 'columnar' and not live and not per_window and \
            columnar.keeps_semantics(trigger, window):
        # Blocks of lines -> calibrated columns -> partial statistics per
        # (sensor, metric, window) and one block of readings per sensor for
        # the detector.  In a batch run the window travels in the key; in a
        # stream the source's blocks (a tick's or a poll's records) or, from
        # a source without, each bundle's payloads are decoded together.
        bounded = not context.streaming
        # Where late readings are kept, each partial travels with the lines
        # of its readings, which a late one's dead letters then hold.
        carried = context.keeps_late
        blocks = source.blocks() if bounded else source.stream_blocks()
        decoded = (pipeline
                   | 'Read' >> (blocks or source)
                   | 'DecodePartials' >> beam.ParDo(
                       SensorPartialsFn(
                           BlockDecoder(decoders.make_decoder(
                               args.reading_format), 'decode.sensors',
                               args.source, args.max_record_bytes,
                               json_fast=json_fast),
                           SensorPartials(window, DEFAULT_K,
                                          readings=args.anomalies == 'on'),
                           JOB,
                           window_in_key=bounded, carry_raw=carried),
                       beam.pvalue.AsSingleton(tables, default_value=None))
                   .with_outputs(deadletter.DEAD, READINGS,
                                 main=deadletter.OK))
        keyed = decoded.ok if bounded else \
            decoded.ok | 'Window' >> windows.ApplyKeptWindows(trigger)
        blocks_of = decoded[READINGS]
        if bounded:
            blocks_of = blocks_of | 'SensorKey' >> beam.Map(
                lambda kv: (kv[0][0], kv[1]))
        anomalies = blocks_of if args.anomalies == 'off' else \
            blocks_of | 'Incidents' >> DetectIncidents(
                config, trigger.lateness, context.streaming, JOB, keyed=True)
    else:
        bounded = False
        # Where late readings are kept, each travels with the payload it
        # was read from, which its late dead letter then holds.
        carried = context.keeps_late
        decoded = (pipeline
                   | 'Read' >> source
                   | 'Decode' >> Decode(
                       decoders.make_decoder(args.reading_format),
                       stage='decode.sensors', job=JOB, source=args.source,
                       max_bytes=args.max_record_bytes, with_raw=carried))
        ok = decoded.ok
        if per_window:
            ok = ok | 'Origins' >> beam.ParDo(deadletter.BindOrigins())
        calibrated = ok | 'Calibrate' >> calibration.Calibrate(
            tables, refresh if live else None, JOB, paired=carried)
        # (the detector sees readings; with it off nothing reads them)
        readings, keyed = records_and_keyed(
            calibrated, operator.attrgetter('sensor_id', 'metric'), carried,
            'KeyBySensor', None if args.anomalies == 'off' else 'Readings')
        keyed = keyed | 'Window' >> windows.ApplyWindow(window, trigger)
        anomalies = readings if args.anomalies == 'off' else \
            readings | 'Incidents' >> DetectIncidents(
                config, trigger.lateness, context.streaming, JOB)
    aggregate = AggregatePerKey(
        SensorStatsFn(), to_sensor_stats, stats_count,
        trigger.accumulates_panes, JOB, key_type=typing.Tuple[str, str],
        window_in_key=bounded,
        keep_late=trigger.lateness if context.keeps_late else None,
        carries_raw=carried, source=args.source,
        late_output='stats' if per_window else None,
        late_per_window=per_window)
    stats = keyed | 'Stats' >> aggregate.with_output_types(SensorStats)
    # Readings after the allowed lateness (local runner, streaming): dead
    # letters, stage window.late, with the decoding's own.
    dead = decoded.dead if aggregate.late is None else (
        (decoded.dead, aggregate.late) | 'DeadAndLate' >> beam.Flatten())

    if args.anomalies == 'off':
        anomalies = anomalies | 'NoAnomalies' >> beam.FlatMap(
            lambda _: ()).with_output_types(Incident)
    stats | 'WriteStats' >> sink.write('stats', TABLES['stats'])
    anomalies | 'WriteAnomalies' >> sink.write('anomalies',
                                               TABLES['anomalies'])
    if args.alerts:
        anomalies | 'PublishAnomalies' >> io.open_sink(
            args.alerts, context, counter='rows_published').write(
                'anomalies', TABLES['anomalies'])
    # Personal data in a refused payload is masked (IP and e-mail addresses,
    # bearer tokens), as the other jobs mask theirs.
    dead = dead | 'MaskDeadLetters' >> privacy.MaskFields(
        privacy.Masker(mode='mask'), ('raw', 'reason'))
    dead | 'WriteDeadLetters' >> dead_sink.write(
        'dead_letter', TABLES['dead_letter'])
    return {'stats': stats, 'anomalies': anomalies, 'dead_letter': dead}
