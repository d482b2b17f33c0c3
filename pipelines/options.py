"""Options every job shares, and the strict command-line parsing of a job.

Each job has a ``PipelineOptions`` subclass (of :class:`JobOptions`) whose
``_add_argparse_args`` documents every option with its default; ``--help``, the
README tables and the Flex Template metadata are generated from it.

Parsing is strict: an unknown option, a malformed URI or a malformed window or
trigger spec stops the command at once with a one-line error naming the
option, before any pipeline is built.  What is not a job option is handed to
Beam (``--runner``, ``--streaming``, ``--project`` ...) after checking that
Beam knows it.
"""
import argparse
import difflib
import sys

from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.options.pipeline_options import StandardOptions
from apache_beam.options.pipeline_options import _BeamArgumentParser

from transforms import io, windows
from transforms.decode import DEFAULT_MAX_BYTES

# The local runner is named explicitly: Beam's plain "DirectRunner" would first
# try to download another runner and fall back.  This one runs streaming
# pipelines (TestStream, processing-time triggers, state and timers).
DEFAULT_RUNNER = 'BundleBasedDirectRunner'
LOCAL_RUNNERS = ('BundleBasedDirectRunner', 'DirectRunner', 'FnApiRunner',
                 'SwitchingDirectRunner', 'PrismRunner')


# Each option type carries the regex a Flex Template checks its parameter
# against (templates/<job>/metadata.json is generated from these).
_DURATION = r'[0-9]+(\.[0-9]+)?(ms|s|m|h|d)?'
URI_REGEX = r'^[a-z][a-z0-9_]*://.*$'
WINDOW_REGEX = (rf'^((fixed|session):{_DURATION}|sliding:{_DURATION}/'
                rf'{_DURATION})$')
TRIGGER_REGEX = r'^[a-z0-9=.,]*$'
NUMBER_REGEX = r'^[0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?$'
INTEGER_REGEX = r'^[0-9]+$'


def _checked(kind, parse, regex):
    def check(text):
        try:
            parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        return text
    check.__name__ = kind
    check.regex = regex
    return check


def checked(kind, parse, regex):
    """An argparse type that checks its text with ``parse`` (ValueError ->
    a one-line usage error) and keeps the text; ``regex`` is its template
    parameter regex."""
    return _checked(kind, parse, regex)


source_uri = _checked('source URI', lambda t: io.check_uri(t, 'source'),
                      URI_REGEX)
sink_uri = _checked('sink URI', lambda t: io.check_uri(t, 'sink'), URI_REGEX)
window_spec = _checked('window spec', windows.parse_window, WINDOW_REGEX)
trigger_spec = _checked('trigger spec', windows.parse_trigger, TRIGGER_REGEX)
duration = _checked('duration', windows.parse_duration, rf'^{_DURATION}$')


def positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r} is not a number') from None
    if not value > 0 or value == float('inf'):
        raise argparse.ArgumentTypeError(f'{text!r} must be a finite number > 0')
    return value


def fraction(text):
    value = positive_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f'{text!r} must be in (0, 1]')
    return value


positive_float.regex = NUMBER_REGEX
fraction.regex = NUMBER_REGEX


def non_negative_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f'{text!r} is not a whole number') from None
    if value < 0:
        raise argparse.ArgumentTypeError(f'{text!r} must be >= 0')
    return value


non_negative_int.regex = INTEGER_REGEX


class JobOptions(PipelineOptions):
    """Options every job has.  Subclasses set the class attributes below."""
    JOB = 'job'
    DEFAULT_SOURCE = 'synthetic://job'
    DEFAULT_SINK = 'parquet://output/job'
    DEFAULT_WINDOW = 'fixed:60s'
    DEFAULT_TRIGGER = 'default'
    ALERT_TABLE = 'alerts'

    @classmethod
    def _add_argparse_args(cls, parser):
        if cls is JobOptions:
            # Beam registers every direct PipelineOptions subclass in one
            # global parser; the shared options belong to each job's own
            # parser (with the job's defaults), not to that one.
            return
        group = parser.add_argument_group('source, sinks, windowing')
        group.add_argument(
            '--source', default=cls.DEFAULT_SOURCE, type=source_uri,
            help='where records come from, by URI: '
                 + '; '.join(io.describe('source').splitlines())
                 + ' (default: %(default)s)')
        group.add_argument(
            '--sink', default=cls.DEFAULT_SINK, type=sink_uri,
            help='where output tables go, by URI: '
                 + '; '.join(io.describe('sink').splitlines())
                 + ' (default: %(default)s)')
        group.add_argument(
            '--dead_letter', default=None, type=sink_uri,
            help='where refused records go (table dead_letter), with their raw '
                 'payload, stage and reason (default: the --sink)')
        group.add_argument(
            '--alerts', default=None, type=sink_uri,
            help=f'where the {cls.ALERT_TABLE} table goes as well as to the '
                 f'--sink, e.g. pubsub://projects/P/topics/T or '
                 f'kafka://HOST:PORT/TOPIC (default: only the --sink)')
        group.add_argument(
            '--kafka_io', default='native', choices=('native', 'xlang'),
            help='Kafka I/O for kafka:// URIs: "native" (Python, on '
                 'confluent-kafka; every runner, the local one included) or '
                 '"xlang" (Beam\'s Java KafkaIO; needs a runner with a Java '
                 'expansion service) (default: %(default)s)')
        group.add_argument(
            '--window', default=cls.DEFAULT_WINDOW, type=window_spec,
            help='event-time windows: fixed:SIZE, sliding:SIZE/PERIOD or '
                 'session:GAP; units ms, s, m, h, d (default: %(default)s)')
        group.add_argument(
            '--trigger', default=cls.DEFAULT_TRIGGER, type=trigger_spec,
            help='when panes fire: comma-separated early=DURATION (EARLY panes '
                 'every DURATION of processing time), late=N (a LATE pane per '
                 'N late records), lateness=DURATION (allowed lateness; later '
                 'records are dropped and counted), accumulating|discarding; '
                 '"default" = one ON_TIME pane (default: %(default)s)')
        group.add_argument(
            '--max_record_bytes', default=DEFAULT_MAX_BYTES,
            type=non_negative_int,
            help='larger records are dead-lettered as oversized '
                 '(default: %(default)s)')
        group.add_argument(
            '--summary', default=True, action=argparse.BooleanOptionalAction,
            help='print the run summary at the end of a local run '
                 '(default: on)')
        group.add_argument(
            '--progress', default=True, action=argparse.BooleanOptionalAction,
            help='show the progress of a local run on standard error: records '
                 'read and per second, watermark, panes and rows written, dead '
                 'letters; one updating line on a terminal, else a line every '
                 'few seconds; --no-progress shows nothing (default: on)')


BEAM_EPILOG = """\
Beam options are accepted too, for example:
  --runner RUNNER      BundleBasedDirectRunner (default, local, streaming-capable),
                       FnApiRunner (local, batch), DataflowRunner, FlinkRunner
  --streaming          run in streaming mode (unbounded sources, early/late panes)
  --project, --region, --temp_location, --staging_location   (Dataflow)
  --flink_master, --environment_type                         (Flink)
"""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, naming the option."""

    def error(self, message):
        self.exit(2, f'{self.prog}: error: {message}\n')


def _beam_parser():
    parser = _BeamArgumentParser(allow_abbrev=False, add_help=False)
    seen = set()
    for cls in PipelineOptions.__subclasses__():
        if issubclass(cls, JobOptions) or str(cls) in seen:
            continue
        seen.add(str(cls))
        cls._add_argparse_args(parser)  # pylint: disable=protected-access
    return parser


def _synthetic_epilog(options_cls):
    from transforms.io import synthetic   # pylint: disable=import-outside-toplevel
    uri = io.parse_uri(options_cls.DEFAULT_SOURCE)
    if uri.scheme != 'synthetic':
        return ''
    domain = uri.location.strip('/')
    lines = [f'Parameters of synthetic://{domain}?NAME=VALUE&... (default):']
    for item in synthetic.describe_params(domain).split('; '):
        lines.append(f'  {item}')
    return '\n'.join(lines) + '\n\n'


def job_parser(options_cls, description=''):
    parser = _Parser(
        prog=f'python -m pipelines {options_cls.JOB}',
        description=description,
        epilog=_synthetic_epilog(options_cls) + BEAM_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False)
    options_cls._add_argparse_args(parser)  # pylint: disable=protected-access
    return parser


def parse(options_cls, argv, description=''):
    """argv -> (job options namespace, Beam PipelineOptions); exits on error."""
    parser = job_parser(options_cls, description)
    args, rest = parser.parse_known_args(argv)
    beam_parser = _beam_parser()
    _, unknown = beam_parser.parse_known_args(rest)
    if unknown:
        option = next((u for u in unknown if u.startswith('-')), unknown[0])
        known = [o for a in parser._actions + beam_parser._actions
                 for o in a.option_strings]
        close = difflib.get_close_matches(option.split('=', 1)[0], known, n=1)
        hint = f' (did you mean {close[0]}?)' if close else ''
        parser.error(f'unknown option {option}{hint}; see --help')
    beam_options = PipelineOptions(rest)
    standard = beam_options.view_as(StandardOptions)
    if not standard.runner:
        standard.runner = DEFAULT_RUNNER
    return args, beam_options


def is_local(beam_options) -> bool:
    runner = beam_options.view_as(StandardOptions).runner or DEFAULT_RUNNER
    return str(runner).rsplit('.', 1)[-1] in LOCAL_RUNNERS


def runner_name(beam_options) -> str:
    runner = beam_options.view_as(StandardOptions).runner or DEFAULT_RUNNER
    return str(runner).rsplit('.', 1)[-1]


def finalizes_bundles(beam_options) -> bool:
    """Whether the runner calls bundle finalizers (the portable ones do; the
    bundle-based local runner does not)."""
    runner = beam_options.view_as(StandardOptions).runner or DEFAULT_RUNNER
    return str(runner).rsplit('.', 1)[-1] not in (
        'BundleBasedDirectRunner', 'DirectRunner', 'SwitchingDirectRunner')


def fail(prog, message, status=2):
    """One line on stderr and exit: ``status`` 2 for a usage error, found
    before anything runs; 1 for a fault met while the job ran."""
    sys.stderr.write(f'{prog}: error: {message}\n')
    sys.exit(status)
