"""Per-service error rates and latency quantiles over log streams, with alerts.

Reads application and server logs (JSON lines, journal export, container
wrappers, access logs, syslog with or without <PRI>, log4j/logback/Python/Spring
lines, Apache/nginx error logs, logcat, the Loghub systems; auto-detected per
line, or --log_pattern), masks personal data, and computes
per service and event-time window: record count, error count and error rate
(status >= 500 or level ERROR/FATAL) and latency mean/min/max/stddev and
p50/p95/p99 (KLL sketch, rank error ~1.33%).  An alert is raised once when a
service's error rate or p99 crosses its threshold and a recovery is recorded
once when it falls back below the recovery level.

With --templates on it also mines log templates per service (docs/logs.md).

Output tables: service_stats, alerts, templates, template_alerts, dead_letter.
"""
import operator
import os
import typing

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipelines.options import (JobOptions, checked, fraction,
                               non_negative_int, positive_float)
from transforms import columnar, deadletter, io, privacy, windows
from transforms.combiners import DEFAULT_K
from transforms.aggregate import AggregatePerKey, per_window_late_from
from transforms.deadletter import DeadLetter
from transforms.decode import Decode, PayloadEventTime, records_and_keyed
from transforms.detectors import Alert, Rule, ThresholdAlerts
from transforms.logs import decoders, line_formats, template_mining
from transforms.logs.columnar import BlockDecoder, log_partials_fn
from transforms.logs.columnar import event_times as log_event_times
from transforms.logs.records import LogRecord
from transforms.logs.stats import (LogStatsFn, ServiceStats, stats_count,
                                   to_service_stats)

JOB = 'logs'
MASK_KEY_ENV = 'REALTIME_PIPELINES_MASK_KEY'


log_pattern = checked('log pattern', decoders.check_pattern, r'^.+$')
time_format = checked('time format', decoders.check_time_format, r'^.*%.+$')
timezone = checked('time zone', line_formats.check_timezone,
                   r'^[A-Za-z0-9_+/-]+$')


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
            help='line format; auto detects it per line: JSON (journal export '
                 'and Docker/Kubernetes wrappers included), syslog with or '
                 'without <PRI>, access logs, then the plain-text formats '
                 '(log4j, logback, Python logging, Spring Boot, Apache/nginx '
                 'error logs, Android logcat, the Loghub systems); a format '
                 'name reads only that format (default: %(default)s)')
        group.add_argument(
            '--log_pattern', default=None, type=log_pattern,
            help='a regular expression with named groups timestamp (required), '
                 'level, service, host, message, matching a whole line; when '
                 'given it replaces --log_format (default: none)')
        group.add_argument(
            '--time_format', default=None, type=time_format,
            help='strptime format of the --log_pattern timestamp group, e.g. '
                 '"%%d/%%b/%%Y:%%H:%%M:%%S" (default: ISO 8601 or epoch '
                 'seconds/milliseconds)')
        group.add_argument(
            '--default_service', default='web',
            help='service name for lines whose format names none (access-log '
                 'lines without a virtual host, Apache/nginx error logs, '
                 'container lines) (default: %(default)s)')
        group.add_argument(
            '--syslog_year', default=None, type=non_negative_int,
            help='year of times written without one (RFC 3164 syslog, '
                 'logcat, Proxifier...) (default: the current UTC year)')
        group.add_argument(
            '--timezone', default=decoders.DEFAULT_TIMEZONE, type=timezone,
            help='IANA time zone of times written without zone or offset '
                 '(syslog files, log4j, logcat...); epoch times and times with '
                 'an offset are not affected (default: %(default)s)')
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
                 'record at a time (the reference). Session windows, '
                 'late=N>1, --templates on and a local stream with sliding '
                 'windows from kafka:// or pubsub:// always run "element" '
                 '(default: %(default)s)')
        group.add_argument(
            '--templates', default='off', choices=('off', 'on'),
            help='"on" mines log templates per service (Drain parse tree, '
                 'ids from the template text) and writes the templates and '
                 'template_alerts tables; it runs the "element" execution '
                 '(default: %(default)s)')
        group.add_argument(
            '--template_min_count', default=template_mining.DEFAULT_MIN_COUNT,
            type=non_negative_int,
            help='a new template is announced (template_alerts kind '
                 'new_template) once it has this many records '
                 '(default: %(default)s)')
        group.add_argument(
            '--template_rate_factor',
            default=template_mining.DEFAULT_RATE_FACTOR, type=positive_float,
            help='alert (rate_jump/rate_drop) when a template\'s count in a '
                 'window is above this factor times its EWMA, or below the '
                 'EWMA divided by it (default: %(default)s)')
        group.add_argument(
            '--template_ewma_alpha', default=template_mining.DEFAULT_EWMA_ALPHA,
            type=fraction,
            help='weight of the newest window in a template\'s EWMA count '
                 '(default: %(default)s)')
        group.add_argument(
            '--template_warmup_windows',
            default=template_mining.DEFAULT_WARMUP_WINDOWS,
            type=non_negative_int,
            help='windows of history a template needs before its rate is '
                 'judged (default: %(default)s)')
        group.add_argument(
            '--template_rate_min_count',
            default=template_mining.DEFAULT_RATE_MIN_COUNT,
            type=non_negative_int,
            help='a rate jump needs at least this many records in the window, '
                 'a drop an EWMA of at least this many (default: %(default)s)')
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
    'templates': template_mining.TemplateStats,
    'template_alerts': template_mining.TemplateAlert,
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
    decoder = decoders.make_decoder(
        args.log_format, args.default_service, args.syslog_year,
        args.timezone, args.log_pattern, args.time_format)
    json_fast = args.log_pattern is None and args.log_format in ('auto',
                                                                 'json')
    # Sliding windows from a source a restart resumes, where late records
    # are kept: late dead letters name their window and key, the read
    # registers a record that may be late for any of its windows, a
    # restart keeps a record read again out of the windows whose late
    # letters the sink holds and of those final at the horizon it resumes,
    # and each record travels one by one with its origin
    # (docs/reliability.md).
    late_from = per_window_late_from(context, args.source, window, trigger)
    per_window = late_from is not None
    # The source's watermark follows the event times this decoder reads
    # (a block's JSON lines read at once, as the fast path reads them).
    source = io.open_source(args.source, context._replace(
        event_time=PayloadEventTime(
            decoder, args.max_record_bytes,
            log_event_times(args.max_record_bytes) if json_fast else None),
        late_from=late_from))
    sink = io.open_sink(args.sink, context)
    dead_sink = io.open_sink(args.dead_letter or args.sink, context)
    rules = [
        Rule('error_rate', args.error_rate_threshold, args.alert_hysteresis,
             args.alert_min_count),
        Rule('latency_p99_ms', args.p99_threshold_ms, args.alert_hysteresis,
             args.alert_min_count),
    ]

    mine = args.templates == 'on'
    carried = False
    if args.execution == 'columnar' and not mine and not per_window and \
            columnar.keeps_semantics(trigger, window):
        # Blocks of lines -> partial LogStats per (service, window).  In a
        # stream each partial travels in its window and the trigger is set
        # without reassigning windows; in a batch run (one pane per window)
        # the window travels in the key instead.
        bounded = not context.streaming
        # Where late records are kept, each partial travels with the lines
        # of its records, which a late one's dead letters then hold.
        carried = context.keeps_late
        blocks = source.blocks() if bounded else source.stream_blocks()
        decoded = (pipeline
                   | 'Read' >> (blocks or source)
                   | 'DecodePartials' >> beam.ParDo(log_partials_fn(
                       BlockDecoder(decoder, 'decode.logs', args.source,
                                    args.max_record_bytes,
                                    json_fast=json_fast,
                                    text_fast=json_fast and
                                    args.log_format == 'auto'),
                       window, JOB, DEFAULT_K, window_in_key=bounded,
                       carry_raw=carried))
                   .with_outputs(deadletter.DEAD, main=deadletter.OK))
        keyed = decoded.ok if bounded else \
            decoded.ok | 'Window' >> windows.ApplyKeptWindows(trigger)
    else:
        bounded = False
        # Where late records are kept, each record travels with the payload
        # it was read from, which its late dead letter then holds.
        carried = context.keeps_late
        decoded = (pipeline
                   | 'Read' >> source
                   | 'Decode' >> Decode(
                       decoder, stage='decode.logs', job=JOB,
                       source=args.source, max_bytes=args.max_record_bytes,
                       with_raw=carried))
        ok = decoded.ok
        if per_window:
            ok = ok | 'Origins' >> beam.ParDo(deadletter.BindOrigins())
        masked = ok | 'MaskRecords' >> privacy.MaskFields(
            masker, ('message',), paired=carried)
        records, keyed = records_and_keyed(
            masked, operator.attrgetter('service'), carried, 'KeyByService',
            'Records' if mine else None)
        keyed = keyed | 'Window' >> windows.ApplyWindow(window, trigger)
    outputs = {}
    template_late = None
    if mine:
        template_outputs, template_late = mine_templates(
            records, window, trigger, args,
            keep_late=trigger.lateness if context.keeps_late else None)
        outputs.update(template_outputs)
    aggregate = AggregatePerKey(
        LogStatsFn(), to_service_stats, stats_count, trigger.accumulates_panes,
        JOB, window_in_key=bounded,
        keep_late=trigger.lateness if context.keeps_late else None,
        carries_raw=carried, source=args.source,
        late_output='service_stats' if per_window else None,
        late_per_window=per_window)
    stats = keyed | 'ServiceStats' >> aggregate.with_output_types(ServiceStats)
    if template_late is not None:
        # A template hit after the allowed lateness is a late record's
        # second copy (the record itself is a late dead letter of the
        # service statistics, above): counted, not written twice.
        _ = template_late | 'CountLateTemplateHits' >> beam.Map(
            _counted_late_hit, Metrics.counter(JOB, 'late_template_hits'))
    late = [p for p in (aggregate.late,) if p is not None]
    dead = decoded.dead if not late else (
        (decoded.dead, *late) | 'DeadAndLate' >> beam.Flatten())
    dead = dead | 'MaskDeadLetters' >> privacy.MaskFields(masker, ('raw',))
    alerts = stats | 'Alerts' >> ThresholdAlerts(
        lambda row: row.service, rules, JOB).with_output_types(Alert)

    stats | 'WriteServiceStats' >> sink.write(
        'service_stats', TABLES['service_stats'])
    alerts | 'WriteAlerts' >> sink.write('alerts', TABLES['alerts'])
    if args.alerts:
        alerts | 'PublishAlerts' >> io.open_sink(
            args.alerts, context, counter='rows_published').write(
                'alerts', TABLES['alerts'])
    for table, rows in outputs.items():
        rows | f'Write{_camel(table)}' >> sink.write(table, TABLES[table])
    if args.alerts and mine:
        outputs['template_alerts'] | 'PublishTemplateAlerts' >> io.open_sink(
            args.alerts, context, counter='rows_published').write(
                'template_alerts', TABLES['template_alerts'])
    dead | 'WriteDeadLetters' >> dead_sink.write(
        'dead_letter', TABLES['dead_letter'])
    return {'service_stats': stats, 'alerts': alerts, **outputs,
            'dead_letter': dead}


def _camel(table: str) -> str:
    return ''.join(part.title() for part in table.split('_'))


def _counted_late_hit(dead_letter, counter):
    counter.inc()
    return None


def mine_templates(records, window, trigger, args, keep_late=None):
    """Masked records -> (the templates table and template alerts by table,
    the template hits after the allowed lateness, or None where nothing is
    kept late; the job counts them, ``late_template_hits``)."""
    job = f'{JOB}.templates'   # its own counters: the job's account is unchanged
    mined = (records
             | 'KeyForTemplates' >> beam.Map(lambda r: (r.service, r))
             .with_output_types(typing.Tuple[str, LogRecord])
             | 'MineTemplates' >> template_mining.MineTemplates(
                 args.template_min_count, job))
    stats = AggregatePerKey(
        template_mining.TemplateStatsFn(),
        template_mining.template_stats_row,
        template_mining.template_count, trigger.accumulates_panes, job,
        keep_late=keep_late)
    rows = (mined.hits
            | 'KeyByTemplate' >> beam.Map(lambda h: (h.template_id, h))
            .with_output_types(typing.Tuple[str, template_mining.TemplateHit])
            | 'WindowTemplates' >> windows.ApplyWindow(window, trigger)
            | 'TemplateStats' >> stats.with_output_types(
                template_mining.TemplateStats))
    rate_alerts = rows | 'TemplateRateAlerts' >> \
        template_mining.TemplateRateAlerts(
            args.template_rate_factor, args.template_ewma_alpha,
            args.template_warmup_windows, args.template_rate_min_count, job)
    alerts = ((mined.alerts, rate_alerts)
              | 'TemplateAlerts' >> beam.Flatten().with_output_types(
                  template_mining.TemplateAlert))
    return {'templates': rows, 'template_alerts': alerts}, stats.late
