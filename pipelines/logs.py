"""Per-service error rates and latency quantiles over log streams, with alerts.

Reads application and server logs (JSON lines, nginx/Apache combined, RFC 5424
and RFC 3164 syslog; auto-detected per line), masks personal data, and computes
per service and event-time window: record count, error count and error rate
(status >= 500 or level ERROR/FATAL) and latency mean/min/max/stddev and
p50/p95/p99 (KLL sketch, rank error ~1.33%).  An alert is raised once when a
service's error rate or p99 crosses its threshold and a recovery is recorded
once when it falls back below the recovery level.

Output tables: service_stats, alerts, dead_letter.
"""
import os

import apache_beam as beam

from pipelines.options import (JobOptions, fraction, non_negative_int,
                               positive_float)
from transforms import columnar, deadletter, io, privacy, windows
from transforms.combiners import DEFAULT_K
from transforms.aggregate import AggregatePerKey
from transforms.deadletter import DeadLetter
from transforms.decode import Decode, PayloadEventTime
from transforms.detectors import Alert, Rule, ThresholdAlerts
from transforms.logs import decoders
from transforms.logs.columnar import BlockDecoder, log_partials_fn
from transforms.logs.stats import (LogStatsFn, ServiceStats, stats_count,
                                   to_service_stats)

JOB = 'logs'
MASK_KEY_ENV = 'REALTIME_PIPELINES_MASK_KEY'


class LogsOptions(JobOptions):
    JOB = JOB
    DEFAULT_SOURCE = 'synthetic://logs?events=30000&seed=42'
    DEFAULT_SINK = 'parquet://output/logs'
    DEFAULT_WINDOW = 'fixed:60s'
    DEFAULT_TRIGGER = 'early=10s,late=1,lateness=2m,accumulating'

    @classmethod
    def _add_argparse_args(cls, parser):
        super()._add_argparse_args(parser)
        group = parser.add_argument_group('logs')
        group.add_argument(
            '--log_format', default='auto', choices=decoders.FORMATS,
            help='line format; auto detects per line: { JSON, < syslog, else '
                 'combined (default: %(default)s)')
        group.add_argument(
            '--default_service', default='web',
            help='service name for access-log lines without a virtual host '
                 '(default: %(default)s)')
        group.add_argument(
            '--syslog_year', default=None, type=non_negative_int,
            help='year of RFC 3164 syslog timestamps, which carry none '
                 '(default: the current UTC year)')
        group.add_argument(
            '--mask', default='mask', choices=('mask', 'hash'),
            help='personal data in messages and dead letters (IP and e-mail '
                 'addresses, bearer tokens): "mask" replaces them with '
                 '<ip>/<email>/<token>; "hash" replaces IPs and e-mails with '
                 'a keyed hash (needs --mask_key) (default: %(default)s)')
        group.add_argument(
            '--mask_key', default=None,
            help=f'secret key of the keyed hash for --mask=hash (default: the '
                 f'environment variable {MASK_KEY_ENV})')
        group.add_argument(
            '--execution', default='columnar', choices=('columnar', 'element'),
            help='"columnar" decodes blocks of lines with Arrow and '
                 'pre-aggregates per service and window before the shuffle '
                 '(same results, several times faster); "element" handles one '
                 'record at a time (the reference). Session windows and '
                 'late=N>1 always run "element" (default: %(default)s)')
        group.add_argument(
            '--error_rate_threshold', default=0.05, type=fraction,
            help='alert when a window\'s error rate exceeds this fraction '
                 '(default: %(default)s)')
        group.add_argument(
            '--p99_threshold_ms', default=1000.0, type=positive_float,
            help='alert when a window\'s latency p99 exceeds this many ms '
                 '(default: %(default)s)')
        group.add_argument(
            '--alert_hysteresis', default=0.2, type=fraction,
            help='an alert recovers when the metric falls below '
                 'threshold x (1 - this) (default: %(default)s)')
        group.add_argument(
            '--alert_min_count', default=20, type=non_negative_int,
            help='windows with fewer records are not evaluated for alerts '
                 '(default: %(default)s)')


OPTIONS = LogsOptions

# Output tables and their record types (schemas derive from these).
TABLES = {
    'service_stats': ServiceStats,
    'alerts': Alert,
    'dead_letter': DeadLetter,
}


def masker_from(args) -> privacy.Masker:
    if args.mask == 'hash':
        key = args.mask_key or os.environ.get(MASK_KEY_ENV, '')
        if not key:
            raise ValueError(f'--mask=hash needs --mask_key or the environment '
                             f'variable {MASK_KEY_ENV}')
        return privacy.Masker(mode='hash', key=key.encode())
    return privacy.Masker(mode='mask')


def build(pipeline, args, context):
    """Wire the logs job: read -> decode -> mask -> window -> aggregate/detect
    -> write.  Returns the output PCollections by table name."""
    window = windows.parse_window(args.window)
    trigger = windows.parse_trigger(args.trigger).for_mode(context.streaming)
    masker = masker_from(args)
    decoder = decoders.make_decoder(args.log_format, args.default_service,
                                    args.syslog_year)
    # The source's watermark follows the event times this decoder reads.
    source = io.open_source(args.source, context._replace(
        event_time=PayloadEventTime(decoder, args.max_record_bytes)))
    sink = io.open_sink(args.sink, context)
    dead_sink = io.open_sink(args.dead_letter or args.sink, context)
    rules = [
        Rule('error_rate', args.error_rate_threshold, args.alert_hysteresis,
             args.alert_min_count),
        Rule('latency_p99_ms', args.p99_threshold_ms, args.alert_hysteresis,
             args.alert_min_count),
    ]

    if args.execution == 'columnar' and \
            columnar.keeps_semantics(trigger, window):
        # Blocks of lines -> partial LogStats per (service, window).  In a
        # stream each partial travels in its window and the trigger is set
        # without reassigning windows; in a batch run (one pane per window)
        # the window travels in the key instead.
        bounded = not context.streaming
        blocks = source.blocks() if bounded else source.stream_blocks()
        decoded = (pipeline
                   | 'Read' >> (blocks or source)
                   | 'DecodePartials' >> beam.ParDo(log_partials_fn(
                       BlockDecoder(decoder, 'decode.logs', args.source,
                                    args.max_record_bytes,
                                    json_fast=args.log_format in ('auto',
                                                                  'json')),
                       window, JOB, DEFAULT_K, window_in_key=bounded))
                   .with_outputs(deadletter.DEAD, main=deadletter.OK))
        keyed = decoded.ok if bounded else \
            decoded.ok | 'Window' >> windows.ApplyKeptWindows(trigger)
    else:
        bounded = False
        decoded = (pipeline
                   | 'Read' >> source
                   | 'Decode' >> Decode(
                       decoder, stage='decode.logs', job=JOB,
                       source=args.source, max_bytes=args.max_record_bytes))
        records = decoded.ok | 'MaskRecords' >> privacy.MaskFields(
            masker, ('message',))
        keyed = (records
                 | 'KeyByService' >> beam.Map(lambda r: (r.service, r))
                 | 'Window' >> windows.ApplyWindow(window, trigger))
    dead = decoded.dead | 'MaskDeadLetters' >> privacy.MaskFields(
        masker, ('raw',))
    stats = keyed | 'ServiceStats' >> AggregatePerKey(
        LogStatsFn(), to_service_stats, stats_count, trigger.accumulates_panes,
        JOB, window_in_key=bounded).with_output_types(ServiceStats)
    alerts = stats | 'Alerts' >> ThresholdAlerts(
        lambda row: row.service, rules, JOB).with_output_types(Alert)

    stats | 'WriteServiceStats' >> sink.write(
        'service_stats', TABLES['service_stats'])
    alerts | 'WriteAlerts' >> sink.write('alerts', TABLES['alerts'])
    if args.alerts:
        alerts | 'PublishAlerts' >> io.open_sink(
            args.alerts, context, counter='rows_published').write(
                'alerts', TABLES['alerts'])
    dead | 'WriteDeadLetters' >> dead_sink.write(
        'dead_letter', TABLES['dead_letter'])
    return {'service_stats': stats, 'alerts': alerts, 'dead_letter': dead}
