"""Sources and sinks, chosen by URI.

A URI's scheme names a module of this package: ``synthetic://`` is
:mod:`transforms.io.synthetic`, ``file://`` is :mod:`transforms.io.file`,
``parquet://`` is :mod:`transforms.io.parquet`, and so on.  A module that can
read defines ``open_source(uri, context)``; one that can write defines
``open_sink(uri, context)``; either may define ``DESCRIPTION`` (one line for
``--help``) and ``validate(uri)`` (raises :class:`UriError` with the reason),
and ``preflight(uri)`` / ``preflight_sink(uri)`` (checked before a local run:
the source answers, the sink can be written), and ``RESUMES = True`` where a
local run of a killed job resumes the read (``kafka://``, ``pubsub://``:
see :func:`resumes`).
Adding a scheme (Pub/Sub, Kafka, BigQuery ...) is adding one module: nothing
else changes.

``open_source`` returns a :class:`Source`: a ``PTransform`` from the pipeline
to ``PCollection[bytes]`` (raw payloads; event time comes from the payload).
``open_sink`` returns a :class:`Sink`, whose ``write(table, record_type)`` is a
``PTransform`` from ``PCollection[record_type]`` to ``PCollection[str]`` (what it
wrote: file paths, table names ...).
"""
import importlib
import importlib.util
import pkgutil
import typing
import urllib.parse

import apache_beam as beam


class UriError(ValueError):
    """A source or sink URI that cannot be used; the message says why."""


class Uri(typing.NamedTuple):
    scheme: str
    location: str          # everything between '://' and '?'
    params: dict           # query parameters, last value wins
    text: str              # the URI as given

    def param(self, name, default=None, kind=str):
        if name not in self.params:
            return default
        value = self.params[name]
        try:
            return kind(value)
        except (TypeError, ValueError):
            raise UriError(
                f'{self.text}: parameter {name}={value!r} is not a valid '
                f'{getattr(kind, "__name__", kind)}') from None

    def check_params(self, allowed):
        unknown = sorted(set(self.params) - set(allowed))
        if unknown:
            raise UriError(
                f'{self.text}: unknown parameter(s) {", ".join(unknown)}; '
                f'accepted: {", ".join(sorted(allowed)) or "none"}')


class Context(typing.NamedTuple):
    """What a source or sink may need to know about the job that opens it."""
    job: str
    streaming: bool = False
    kafka_io: str = 'native'          # or 'xlang' (Beam's Java KafkaIO)
    finalizes_bundles: bool = False   # the runner calls bundle finalizers
    runner: str = ''                  # the runner's name, e.g. DataflowRunner
    # When a record's windows have all emitted their final panes, as a
    # function of its event time (seconds) -> event time: what a source that
    # commits only final records needs (see transforms/io/kafka.py); None
    # where the job does not say.
    final_at: typing.Any = None
    # The runner hands on, rather than drops, what arrives after the allowed
    # lateness (the local runner in streaming mode, pipelines/local_runner.py).
    keeps_late: bool = False
    # payload -> event time in seconds or None (transforms.decode
    # .PayloadEventTime): where a source's watermark comes from when its own
    # record timestamps may not be event times (Kafka).
    event_time: typing.Optional[typing.Callable] = None
    # Which run wrote a message (its start, UTC, e.g.
    # 20260101T000000.000000Z: later runs sort later): message sinks put it
    # in a ``run`` header/attribute, so that a consumer can drop the panes
    # of a window a killed run published once a restart publishes that
    # window again (docs/reliability.md, "Other sinks").  '' : none.
    run_id: str = ''
    # Event time (seconds) -> the earliest event time after which a record
    # may be late for one of the job's groupings (transforms.windows
    # .LateFrom), where each of the job's late dead letters names its
    # output (transforms.deadletter.BindOrigins): a local read then
    # registers such a record's origin (the message) even though some of
    # its windows take it still; None: only once all its windows are final.
    late_from: typing.Optional[typing.Callable] = None
    # Tables some of whose rows were made by a grouping whose allowed
    # lateness is not the job's: table -> (field, {value: lateness in
    # seconds}), a job's ROW_LATENESS (see pipelines/trades.py).  File sinks
    # never put rows of different values of the field in one file (the
    # value is in the file's name), so that a restart's roll-back can judge
    # each file by the lateness of the grouping that made it.
    row_lateness: typing.Optional[dict] = None


def parse_uri(text: str) -> Uri:
    text = str(text).strip()
    scheme, sep, rest = text.partition('://')
    if not sep or not scheme or not scheme.replace('_', '').isalnum():
        raise UriError(
            f'{text!r} is not a URI: expected SCHEME://..., e.g. '
            f'file://logs/*.log or parquet://output')
    location, _, query = rest.partition('?')
    try:
        params = dict(urllib.parse.parse_qsl(
            query, keep_blank_values=True, strict_parsing=bool(query)))
    except ValueError:
        raise UriError(f'{text}: malformed query string {query!r}') from None
    return Uri(scheme.lower(), location, params, text)


def _module(scheme: str):
    name = f'{__name__}.{scheme}'
    if scheme.startswith('_') or importlib.util.find_spec(name) is None:
        raise UriError(
            f'unknown scheme {scheme}://; known: '
            f'{", ".join(s + "://" for s in schemes())}')
    return importlib.import_module(name)


def schemes(kind: typing.Optional[str] = None) -> list:
    """The schemes this package knows; kind 'source' or 'sink' filters."""
    found = []
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith('_'):
            continue
        if kind is None:
            found.append(info.name)
            continue
        module = importlib.import_module(f'{__name__}.{info.name}')
        if hasattr(module, f'open_{kind}'):
            found.append(info.name)
    return sorted(found)


def describe(kind: str) -> str:
    """One line per scheme of this kind, for --help."""
    lines = []
    for scheme in schemes(kind):
        module = importlib.import_module(f'{__name__}.{scheme}')
        lines.append(f'{scheme}://  {getattr(module, "DESCRIPTION", "")}')
    return '\n'.join(lines)


def check_uri(text: str, kind: str) -> Uri:
    """Parse and validate a URI for use as a source or sink; raise UriError."""
    uri = parse_uri(text)
    module = _module(uri.scheme)
    if not hasattr(module, f'open_{kind}'):
        raise UriError(
            f'{uri.scheme}:// cannot be used as a {kind}; {kind}s: '
            f'{", ".join(s + "://" for s in schemes(kind))}')
    validate = getattr(module, 'validate', None)
    if validate is not None:
        validate(uri, kind)
    return uri


def unbounded(text: str) -> bool:
    """Whether reading this source URI never ends on its own (the job then
    runs in streaming mode, whether or not ``--streaming`` was given)."""
    uri = parse_uri(text)
    check = getattr(_module(uri.scheme), 'unbounded', None)
    return bool(check is not None and check(uri))


def resumes(text: str) -> bool:
    """Whether a local run of a killed job resumes reading this source URI
    where the killed run's commits (acknowledgements) left it, rather than
    reading it anew: where a record read again may find some of its windows
    final, and its late dead letters must say which (the scheme module's
    ``RESUMES``)."""
    uri = parse_uri(text)
    return bool(getattr(_module(uri.scheme), 'RESUMES', False))


def preflight(text: str, kind: str = 'source') -> None:
    """Check, where the scheme can, that a source answers (e.g. that its
    brokers are reachable and its topic exists) or that a sink can be written
    (its directory made, its brokers or endpoint reached); raise UriError with
    the reason.  Run before a local job starts, so that a wrong address is one
    line, not a failed pipeline.  A scheme module's ``preflight(uri)`` checks
    it as a source, its ``preflight_sink(uri)`` as a sink."""
    uri = parse_uri(text)
    name = 'preflight' if kind == 'source' else 'preflight_sink'
    check = getattr(_module(uri.scheme), name, None)
    if check is not None:
        check(uri)


def open_source(text: str, context: Context) -> 'Source':
    uri = check_uri(text, 'source')
    source = _module(uri.scheme).open_source(uri, context)
    source.blocks = _Marked(source.blocks, uri.text)
    source.stream_blocks = _Marked(source.stream_blocks, uri.text)
    return source


class _Marked:
    """A sink's ``write`` (or a source's ``blocks``, ``stream_blocks``), whose
    PTransforms carry the URI as ``io_uri``, so that a failure while running
    names the URI (see :func:`io_steps`)."""

    def __init__(self, write, text):
        self._write = write
        self._text = text

    def __call__(self, *args):
        transform = self._write(*args)
        if transform is not None:
            transform.io_uri = self._text
        return transform


def open_sink(text: str, context: Context,
              counter: str = 'rows_written') -> 'Sink':
    """The sink for a URI; it counts the rows it writes per table in the
    counter ``COUNTER.TABLE`` (a second sink of one table counts apart)."""
    uri = check_uri(text, 'sink')
    sink = _module(uri.scheme).open_sink(uri, context)
    sink.counter = counter
    sink.write = _Marked(sink.write, uri.text)
    return sink


def io_steps(pipeline) -> dict:
    """``{step label: URI}`` of the sources and sinks applied in a pipeline
    (what a failure "while running 'STEP/...'" is to be blamed on)."""
    from apache_beam.pipeline import PipelineVisitor  # pylint: disable=import-outside-toplevel
    found = {}

    class _Visitor(PipelineVisitor):
        def enter_composite_transform(self, node):
            self.visit_transform(node)

        def visit_transform(self, node):
            text = getattr(node.transform, 'io_uri', None)
            if text and node.full_label:
                found.setdefault(node.full_label, text)

    pipeline.visit(_Visitor())
    return found


def counted(element, counter):
    """``beam.Map(counted, counter)``: the element, counted on its way."""
    counter.inc()
    return element


class Source(beam.PTransform):
    """Base of every source: ``PBegin -> PCollection[bytes]``."""

    def __init__(self, uri: Uri, context: Context):
        super().__init__()
        self.uri = uri
        self.context = context

    @property
    def io_uri(self) -> str:
        return self.uri.text

    def blocks(self):
        """A PTransform ``PBegin -> PCollection[LineBlock]`` reading many lines
        per element (the columnar fast path), or None if this source only
        reads one payload per element."""
        return None

    def stream_blocks(self):
        """Like :meth:`blocks`, for an unbounded read in a streaming job:
        LineBlocks and single payloads mixed (a poll's or a tick's records in
        one block), or None if this source reads one payload per element."""
        return None


class Sink:
    """Base of every sink; ``write(table, record_type)`` gives the PTransform."""

    counter = 'rows_written'

    def __init__(self, uri: Uri, context: Context):
        self.uri = uri
        self.context = context

    def rows_counter(self, table: str) -> str:
        """The counter name for the rows this sink writes of a table."""
        return f'{self.counter}.{table}'

    def write(self, table: str, record_type) -> beam.PTransform:
        raise TypeError(f'{type(self).__name__} does not implement write()')

    def write_tables(self, table: str, record_type) -> beam.PTransform:
        """Like :meth:`write`, for a PCollection whose elements are Arrow
        tables of ``record_type`` rows (:func:`transforms.schemas.
        arrow_schema`), as a columnar path makes them.  By default each
        table's rows are written as :meth:`write` writes rows; a sink that
        can write a table without a Python object per row overrides it."""
        return _RowsOfTables(record_type) | self.write(table, record_type)


class _RowsOfTables(beam.PTransform):
    def __init__(self, record_type):
        super().__init__()
        self._record_type = record_type

    def expand(self, tables):
        from transforms import schemas  # pylint: disable=import-outside-toplevel
        return tables | 'RowsOfTables' >> beam.FlatMap(
            schemas.from_arrow, self._record_type).with_output_types(
                self._record_type)
