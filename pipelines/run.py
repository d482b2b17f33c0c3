"""Running a job: build its pipeline, run it, and account for every record.

The summary of a local run adds up: every record read was decoded or
dead-lettered, and every decoded record reached an output pane or, arriving
after the allowed lateness, the dead letters (stage ``window.late``; on the
local runner) — counted, never silent.
"""
import contextlib
import datetime
import gc
import importlib
import json
import os
import re
import sys
import time

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import StandardOptions

from pipelines import local_runner
from pipelines import options as job_options
from pipelines import progress
from transforms import io

local_runner.install()


def counters(result, job) -> dict:
    """The job's counters by name (committed values where the runner has them)."""
    found = {}
    query = result.metrics().query(MetricsFilter().with_namespace(job))
    for metric in query['counters']:
        value = metric.committed if metric.committed is not None \
            else metric.attempted
        name = metric.key.metric.name
        found[name] = found.get(name, 0) + (value or 0)
    return found


def summarize(c: dict) -> dict:
    """Derived figures: the accounting identities and what was dropped late."""
    s = {
        'read': c.get('read', 0),
        'decoded': c.get('decoded', 0),
        'dead_lettered': c.get('dead_letters', 0),
        'filtered': sum(v for k, v in c.items() if k.startswith('filtered.')),
        'window_assignments': c.get('assigned', 0),
        'aggregated': c.get('aggregated', 0),
        'late_accepted': c.get('late_accepted', 0),
        'late_kept': c.get('late_kept', 0),
        # the dead letters late_kept's records make (one per late value)
        'late_dead_letters': c.get('late_dead_letters', 0),
        'dropped_late': c.get('assigned', 0) - c.get('aggregated', 0)
        - c.get('late_kept', 0),
        # assignments of records a restart read again, kept out of windows
        # whose final pane (or late dead letter) holds them already
        # (aggregate._CountCarried; not in window_assignments)
        'kept_out_on_restart': c.get('final_replayed', 0)
        + c.get('late_replayed', 0),
        'panes_early': c.get('panes.EARLY', 0),
        'panes_on_time': c.get('panes.ON_TIME', 0),
        'panes_late': c.get('panes.LATE', 0),
        'alerts_raised': c.get('alerts.raised', 0),
        'alerts_recovered': c.get('alerts.recovered', 0),
        'anomalies': {k.split('.', 1)[1]: v for k, v in sorted(c.items())
                      if k.startswith('anomalies.')},
        'filters': {k.split('.', 1)[1]: v for k, v in sorted(c.items())
                    if k.startswith('filtered.')},
        'files_written': c.get('files_written', 0),
        'rows_written': {k.split('.', 1)[1]: v for k, v in sorted(c.items())
                         if k.startswith('rows_written.')},
        'rows_rejected': {k.split('.', 1)[1]: v for k, v in sorted(c.items())
                          if k.startswith('rejected.')},
        'rows_published': {k.split('.', 1)[1]: v
                           for k, v in sorted(c.items())
                           if k.startswith('rows_published.')},
    }
    s['balanced'] = s['read'] == s['decoded'] + s['dead_lettered'] + \
        s['filtered']
    return s


def format_summary(job, s, seconds) -> str:
    ok = 'yes' if s['balanced'] else 'NO (records unaccounted for!)'
    rows = ', '.join(f'{t} {n}' for t, n in s['rows_written'].items())
    published = ', '.join(f'{t} {n}'
                          for t, n in s['rows_published'].items())
    refused = ', '.join(f'{t} {n}' for t, n in s['rows_rejected'].items())
    filters = ', '.join(f'{t} {n}' for t, n in s['filters'].items())
    anomalies = ', '.join(f'{t} {n}' for t, n in s['anomalies'].items())
    return '\n'.join(line for line in [
        f'== {job}: run summary ({seconds:.1f} s) ==',
        f'records read            {s["read"]:>10}',
        f'  decoded               {s["decoded"]:>10}',
        f'  dead-lettered         {s["dead_lettered"]:>10}',
        f'  filtered              {s["filtered"]:>10}'
        + (f'   ({filters})' if filters else ''),
        f'  adds up               {ok:>10}',
        f'window assignments      {s["window_assignments"]:>10}',
        f'  aggregated            {s["aggregated"]:>10}'
        f'   (of which late, in LATE panes: {s["late_accepted"]})',
        f'  late, kept            {s["late_kept"]:>10}'
        f'   (after the allowed lateness: dead letters, stage window.late)',
        f'  dropped late          {s["dropped_late"]:>10}'
        f'   (after the allowed lateness, by a runner that keeps none)'
        if s['dropped_late'] else None,
        f'  kept out on restart   {s["kept_out_on_restart"]:>10}'
        f'   (read again: already in a final pane or a late dead letter;'
        f' not counted above)'
        if s.get('kept_out_on_restart') else None,
        f'panes early/on time/late  {s["panes_early"]} / {s["panes_on_time"]}'
        f' / {s["panes_late"]}',
        f'alerts raised/recovered   {s["alerts_raised"]} / '
        f'{s["alerts_recovered"]}'
        if s['alerts_raised'] or s['alerts_recovered'] or not anomalies
        else None,
        f'anomalies                 {anomalies}' if anomalies else None,
        f'rows written              {rows or "none"}',
        f'rows published (--alerts) {published}' if published else None,
        f'rows refused by the sink  {refused}   (in the dead letters)'
        if refused else None,
        f'files written             {s["files_written"]}',
    ] if line is not None)


IO_OPTIONS = ('source', 'sink', 'dead_letter', 'alerts')
# Beam names the step an exception came from: "... [while running 'STEP']".
_STEP = re.compile(r"\[while running '([^']*)'\]")
# How much of a cause a one-line error keeps.
MAX_CAUSE_CHARS = 300
# Exit status of a run stopped by a fault of a source or sink (usage errors,
# found before the run, exit with 2).
FAULT_STATUS = 1


def _sink_options(args):
    """(option, URI) of each sink the job writes to, each URI once."""
    seen = set()
    for option in ('sink', 'dead_letter', 'alerts'):
        text = getattr(args, option, None)
        if text and text not in seen:
            seen.add(text)
            yield option, text


def io_failure(exception, steps, args=None):
    """One line naming the option and URI of the source or sink whose step
    raised ``exception`` while the pipeline ran, and the cause; None when
    the failure is not in a source or sink step (a bug: let it show)."""
    text = str(exception)
    names = _STEP.findall(text)
    blamed = None
    for name in names:
        matches = [label for label in steps
                   if name == label or name.startswith(label + '/')]
        if matches:
            blamed = steps[max(matches, key=len)]
            break
    if blamed is None:
        return None
    cause = ' '.join(_STEP.sub('', text).split())
    if len(cause) > MAX_CAUSE_CHARS:
        cause = cause[:MAX_CAUSE_CHARS - 3] + '...'
    options = [o for o in IO_OPTIONS
               if args is not None and getattr(args, o, None) == blamed]
    where = f'--{options[0]} {blamed}' if options else blamed
    return f'{where}: {cause or type(exception).__name__}'


def _fail_on_io(prog, exception, steps, args):
    line = io_failure(exception, steps, args)
    if line is not None:
        job_options.fail(prog, line, status=FAULT_STATUS)


def _final_at(args, job_module=None):
    """When a record's windows are final, from the job's window options and
    trigger (None for a job without them), each window by the allowed
    lateness of its grouping: the trigger's, unless the job's
    WINDOW_LATENESS (window option -> seconds) gives another."""
    from transforms import windows  # pylint: disable=import-outside-toplevel
    names = [name for name in ('window', 'anomaly_window')
             if getattr(args, name, None)]
    if not names or not getattr(args, 'trigger', None):
        return None
    own = getattr(job_module, 'WINDOW_LATENESS', None) or {}
    return windows.FinalAt(
        tuple(windows.parse_window(getattr(args, name)) for name in names),
        windows.parse_trigger(args.trigger).lateness,
        tuple(own.get(name) for name in names))


def _local_files(sink) -> bool:
    return sink.scheme in ('parquet', 'jsonl') and '://' not in sink.location


def _recover(args, job, final_at, out):
    """A local job reading a Kafka group from its committed offsets, or a
    Pub/Sub subscription: remove from its file and BigQuery sinks what a
    killed run wrote after the group's last commit, or the subscription's
    last acknowledgement (it is written again), see
    transforms/io/_kafka_commits.py, transforms/io/_pubsub_acks.py and
    transforms/io/bigquery.py.  Message sinks keep what they published (see
    docs/reliability.md)."""
    from pipelines import JOBS  # pylint: disable=import-outside-toplevel
    from transforms import deadletter  # pylint: disable=import-outside-toplevel
    from transforms.io import _windowed_files, bigquery, kafka, pubsub  # pylint: disable=import-outside-toplevel
    source = io.parse_uri(args.source)
    sink = io.parse_uri(args.sink)
    if source.scheme == 'kafka':
        found = kafka.recover(source, job)
    elif source.scheme == 'pubsub':
        if not pubsub.resumable(source):
            out.write(f'{args.source}: read through a subscription made for '
                      f'this run: a restart cannot resume it (give '
                      f'subscription=NAME to resume)\n')
            return
        if _local_files(sink):
            found = pubsub.recover(source, sink.location)
        elif sink.scheme == 'bigquery':
            found = pubsub.recover(source, None, state=lambda subscription:
                                   bigquery.AckState(sink, subscription))
        else:
            return       # no state kept with the sink: at least once
    else:
        return
    if found is None:
        return
    horizon, committed_at = found
    removed = rows = 0
    module = importlib.import_module(JOBS[job]) if job in JOBS else None
    tables = list(module.TABLES) if module is not None else []
    # Rows made by a grouping of another allowed lateness than the job's
    # (price anomalies: none) are rolled back by that grouping's lateness.
    row_lateness = getattr(module, 'ROW_LATENESS', None)
    dead_letters = args.dead_letter or args.sink
    for uri in {args.sink, dead_letters}:
        target = io.parse_uri(uri)
        if _local_files(target):
            removed += _windowed_files.roll_back(
                target.location, horizon, committed_at, final_at.lateness,
                row_lateness=row_lateness)
        elif target.scheme == 'bigquery':
            names = set(tables if uri == args.sink else []) | (
                {bigquery.DEAD_LETTER_TABLE} if uri == dead_letters
                else set())
            rows += bigquery.roll_back(target, sorted(names), horizon,
                                       committed_at, final_at.lateness,
                                       row_lateness)
    if removed or rows:
        what = ' and '.join(part for part in (
            f'{removed} file(s)' if removed else '',
            f'{rows} BigQuery row(s)' if rows else '') if part)
        out.write(f'{args.source}: resuming the last commit; removed '
                  f'{what} written after it (written again)\n')
    # The dead letters still there after the roll-back name the messages
    # (records) they came from: those are not dead-lettered again.
    tags = set()
    target = io.parse_uri(dead_letters)
    if _local_files(target):
        tags |= deadletter.origins_written(target.location, args.source)
    elif target.scheme == 'bigquery':
        tags |= bigquery.origins_written(target, args.source)
    if source.scheme == 'kafka':
        kafka.dead_lettered(source, job, tags)
    else:
        pubsub.dead_lettered(source, tags)


def start(job_module, argv, out=sys.stdout):
    """Parse argv for the job, build it and start it; returns
    ``(PipelineResult, job options, local)`` without waiting.  A local
    streaming job runs until it ends or ``result.cancel()`` (demos and tests
    that stop a stream themselves use this)."""
    options_cls = job_module.OPTIONS
    args, beam_options = job_options.parse(
        options_cls, argv, description=job_module.__doc__)
    prog = f'python -m pipelines {options_cls.JOB}'
    standard = beam_options.view_as(StandardOptions)
    if io.unbounded(args.source):
        # An unbounded source runs in streaming mode, --streaming or not (a
        # Flex Template launcher passes no --streaming).
        standard.streaming = True
    streaming = bool(standard.streaming)
    local = job_options.is_local(beam_options)
    if streaming and not local and \
            io.parse_uri(args.source).scheme == 'synthetic':
        job_options.fail(prog, (
            'argument --source: a synthetic:// stream is played by a '
            'TestStream, which only the local runner runs; give a Pub/Sub '
            'or Kafka source, or run in batch mode (no --streaming)'))
    uris = [args.source, args.sink, args.dead_letter, args.alerts]
    if args.kafka_io == 'xlang' and local and any(
            u and io.parse_uri(u).scheme == 'kafka' for u in uris):
        job_options.fail(prog, (
            'argument --kafka_io: xlang runs Beam\'s Java KafkaIO, which needs '
            'a runner with a Java expansion service (Dataflow, Flink); use '
            '--kafka_io=native on the local runner'))
    final_at = _final_at(args, job_module)
    if local:
        from transforms.io import _kafka_commits  # pylint: disable=import-outside-toplevel
        _kafka_commits.forget()   # what an earlier run in this process kept
        try:
            io.preflight(args.source)
        except io.UriError as e:
            job_options.fail(prog, f'argument --source: {e}')
        if final_at is not None:
            try:
                _recover(args, options_cls.JOB, final_at, out)
            except io.UriError as e:
                # Named by the URI it is about: the source, or a sink
                # rolled back.
                option = next((o for o, text in _sink_options(args)
                               if str(e).startswith(f'{text}:')), 'source')
                job_options.fail(prog, f'argument --{option}: {e}')
    context = io.Context(
        job=options_cls.JOB, streaming=streaming, kafka_io=args.kafka_io,
        finalizes_bundles=job_options.finalizes_bundles(beam_options),
        runner=job_options.runner_name(beam_options),
        final_at=final_at if local else None,
        keeps_late=streaming and local,
        row_lateness=getattr(job_module, 'ROW_LATENESS', None),
        run_id=datetime.datetime.now(datetime.timezone.utc).strftime(
            '%Y%m%dT%H%M%S.%fZ'))
    pipeline = beam.Pipeline(options=beam_options)
    try:
        job_module.build(pipeline, args, context)
    except ValueError as e:
        # A problem found while wiring (e.g. a source with no files): one line.
        job_options.fail(prog, str(e))
    if local:
        # After the wiring, which may still refuse the options: a sink that
        # cannot be written is one line before the run, not a failed step.
        for option, text in _sink_options(args):
            try:
                io.preflight(text, 'sink')
            except io.UriError as e:
                job_options.fail(prog, f'argument --{option}: {e}')
    steps = io.io_steps(pipeline)
    try:
        result = pipeline.run()
    except Exception as e:  # pylint: disable=broad-except
        _fail_on_io(prog, e, steps, args)
        raise
    result.io_steps = steps
    if not local:
        # A service runner (Dataflow, Flink) runs the job on: a launcher, a
        # Flex Template among them, must return once the job is submitted.
        job = getattr(result, 'job_id', None)
        out.write(f'{prog}: submitted{f" job {job()}" if callable(job) else ""}'
                  f', state {result.state}\n')
    return result, args, local


SUMMARY_FILE = '_summary.json'


def summary_path(args):
    """Where a local run writes its summary: ``DIR/_summary.json`` beside the
    tables of a ``parquet://DIR`` or ``jsonl://DIR`` sink on a local disk
    (the run report draws it); None for other sinks."""
    uri = io.parse_uri(args.sink)
    if uri.scheme not in ('parquet', 'jsonl') or '://' in uri.location:
        return None
    return os.path.join(uri.location, SUMMARY_FILE)


def write_summary(path, job, args, counted, summary, seconds):
    """The run's accounting as JSON (written whole, then renamed into place)."""
    record = {
        'job': job,
        'finished': datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec='seconds'),
        'seconds': round(seconds, 3),
        'options': {k: getattr(args, k, None) for k in (
            'source', 'sink', 'dead_letter', 'window', 'trigger')},
        'summary': summary,
        'counters': dict(sorted(counted.items())),
    }
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    temp = f'{path}.tmp-{os.getpid()}'
    with open(temp, 'w', encoding='utf-8') as f:
        json.dump(record, f, indent=1, default=str)
    os.replace(temp, path)


def show_progress(result, job, args, stream=None):
    """Starts the live progress of a local run (None with --no-progress)."""
    if not getattr(args, 'progress', False):
        return None
    return progress.Progress(job, lambda: progress.snapshot(
        counters(result, job), local_runner.low_watermark(result)),
        stream=stream).start()


def run(job_module, argv, out=sys.stdout):
    """Parse argv for the job, build and run it; returns the summary dict
    (local runners) or None."""
    started = time.time()
    with _collector_spared():
        result, args, local = start(job_module, argv, out)
        if not local:
            return None
        return finish(job_module, result, args, started, out)


@contextlib.contextmanager
def _collector_spared():
    """While a run lasts, what existed before it (the imported modules:
    some 200,000 objects) is left out of the cyclic garbage collector's
    full collections (``gc.freeze``), and put back after it.  A full
    collection during a run scanned them all for nothing: a tenth of a
    CPU-second, a twentieth of make run's stream.  Objects stay freed by
    their reference counts meanwhile; cycles among them are collected after
    the run.  An outer freeze (a caller's) is left as it is."""
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def finish(job_module, result, args, started=None, out=sys.stdout):
    """Wait for a local job :func:`start` started, showing its progress;
    returns its summary.  A source or sink failing meanwhile exits with one
    line (status 1)."""
    started = time.time() if started is None else started
    job = job_module.OPTIONS.JOB
    shown = show_progress(result, job, args)
    try:
        result.wait_until_finish()
    except Exception as e:  # pylint: disable=broad-except
        _fail_on_io(f'python -m pipelines {job}', e,
                    getattr(result, 'io_steps', {}), args)
        raise
    finally:
        if shown is not None:
            shown.stop()
    counted = counters(result, job)
    summary = summarize(counted)
    seconds = time.time() - started
    path = summary_path(args)
    if path is not None:
        write_summary(path, job, args, counted, summary, seconds)
    if args.summary:
        out.write(format_summary(job, summary, seconds) + '\n')
    return summary
