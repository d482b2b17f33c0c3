"""``make bench``: every benchmark, a Markdown table in bench/RESULTS.md, the
line ``min ratio to pyarrow: N.NN`` (the worst job's fast-path ratio; the
logs + templates row shows what mining costs on the element path and is left
out of it) and, last, the
line ``min ratio to peers (live Kafka): N.NN`` (this project's events per
CPU-second on a live Kafka stream over the better peer's, Bytewax or Quix
Streams; see bench/live_bench.py).

    python bench/run.py [--events N] [--memory-events M] [--live-events L]
                        [--stream-events S]
    python bench/run.py --only live      # the live Kafka rows alone
    python bench/run.py --only latency   # the paced end-to-end latency
    python bench/run.py --only memory-trades     # one memory row only

Inputs are written a chunk at a time from streaming generators, so the
bench's own process stays small; its peak (VmHWM) is reported with every
child's.
"""
import argparse
import datetime
import math
import os
import platform
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import common  # noqa: E402  pylint: disable=wrong-import-position
from bench import logs_bench  # noqa: E402  pylint: disable=wrong-import-position
from bench import core_bench  # noqa: E402  pylint: disable=wrong-import-position
from bench import trades_bench  # noqa: E402  pylint: disable=wrong-import-position
from bench import video_bench  # noqa: E402  pylint: disable=wrong-import-position
from bench import sensors_bench  # noqa: E402  pylint: disable=wrong-import-position
from bench import live_bench  # noqa: E402  pylint: disable=wrong-import-position
from bench import stream_bench  # noqa: E402  pylint: disable=wrong-import-position
from bench import resumed_bench  # noqa: E402  pylint: disable=wrong-import-position

RESULTS = common.BENCH / 'RESULTS.md'
# The video_qoe row's sides are each the median of this many alternated runs
# (its ratio moved by +-0.08 between single runs on the shared machine).
VIDEO_REPEATS = 3
# --only names of the live Kafka parts: the core aggregation against the
# peers (with the whole logs job beside it), and the paced end-to-end latency
LIVE = ('live', 'latency')


def _rate(run):
    return run['result']['events'] / run['cpu_s']


def _median_run(runs):
    """The run of median rate among ``runs`` (an odd number)."""
    return sorted(runs, key=_rate)[len(runs) // 2]


def bench_job(name, module, make_input, events, element_events,
              beam_path='columnar', repeats=1):
    """One row: Beam and the reference on the same input, each in its own
    process; with ``repeats`` > 1, run alternately (Beam, reference, Beam,
    ...) and each side's run of median rate taken, so that a burst of load
    on the shared machine moves neither side alone."""
    path = make_input(events)
    out = common.OUT / f'{name}-beam'
    ref_out = common.OUT / f'{name}-reference.parquet'
    beams, refs = [], []
    for _ in range(repeats):
        shutil.rmtree(out, ignore_errors=True)
        beams.append(common.in_subprocess(module.__name__.split('.')[-1],
                                          'beam', path, out))
        refs.append(common.in_subprocess(module.__name__.split('.')[-1],
                                         'pyarrow', path, ref_out))
    beam, ref = _median_run(beams), _median_run(refs)
    agreement = module.check(path, out, ref_out)
    row = {
        'job': name, 'path': beam_path, 'events': beam['result']['events'],
        'beam_rate': _rate(beam), 'ref_rate': _rate(ref),
        'ratio': _rate(beam) / _rate(ref),
        'beam_peak_mib': beam['peak_mib'], 'ref_peak_mib': ref['peak_mib'],
        'beam_wall_s': beam['wall_s'], 'agreement': agreement,
    }
    if repeats > 1:
        row['runs'] = {'beam': [_rate(r) for r in beams],
                       'ref': [_rate(r) for r in refs]}
    if element_events:
        small = make_input(element_events)
        out = common.OUT / f'{name}-element'
        shutil.rmtree(out, ignore_errors=True)
        element = common.in_subprocess(module.__name__.split('.')[-1], 'beam',
                                       small, out, 'element')
        small_ref = common.in_subprocess(module.__name__.split('.')[-1],
                                         'pyarrow', small,
                                         common.OUT / f'{name}-ref-small.parquet')
        row['element_ratio'] = _rate(element) / _rate(small_ref)
        row['element_rate'] = _rate(element)
    return row


def bench_templates(events):
    """The logs job with and without template mining (both element path,
    which mining needs) on the same varied messages, each against pyarrow."""
    path = common.logs_input(events, varied=True)
    ref_out = common.OUT / 'logs-templates-reference.parquet'
    ref = common.in_subprocess('logs_bench', 'pyarrow', path, ref_out)
    runs = {}
    for name, templates in (('beam', False), ('beam_templates', True)):
        out = common.OUT / f'logs-{name}'
        shutil.rmtree(out, ignore_errors=True)
        runs[name] = common.in_subprocess(
            'logs_bench', name, path, out, *(() if templates else ('element',)))
        agreement = logs_bench.check(path, out, ref_out)
        if templates:
            agreement.update(logs_bench.check_templates(path, out))
    beam = runs['beam_templates']
    return {
        'job': 'logs + templates',
        'path': 'element, --templates on (element column: off)',
        'events': beam['result']['events'], 'beam_rate': _rate(beam),
        'ref_rate': _rate(ref), 'ratio': _rate(beam) / _rate(ref),
        'beam_peak_mib': beam['peak_mib'], 'ref_peak_mib': ref['peak_mib'],
        'beam_wall_s': beam['wall_s'], 'agreement': agreement,
        'element_ratio': _rate(runs['beam']) / _rate(ref),
        'element_rate': _rate(runs['beam']),
        # what mining costs, on the element path it needs: not a fast path
        # measured against pyarrow, so not in the min ratio line
        'in_min': False,
    }


# The peak-memory replays: every job's columnar path on M records.
MEMORY = ('logs', 'core', 'trades', 'sensors', 'video_qoe')


def memory_run(name, module, make_input, events):
    path = make_input(events)
    out = common.OUT / f'{name}-memory'
    shutil.rmtree(out, ignore_errors=True)
    run = common.in_subprocess(module.__name__.split('.')[-1], 'beam',
                               path, out)
    shutil.rmtree(out, ignore_errors=True)
    return {'events': run['result']['events'], 'peak_mib': run['peak_mib'],
            'rate': _rate(run), 'wall_s': run['wall_s']}


STREAM_JOBS = ('logs', 'trades', 'sensors')


def bench_stream(job, events):
    """``make run``'s stream (the job's streaming synthetic default, with
    ``events`` records) in its own process; its summary checked."""
    out = common.OUT / f'stream-{job}'
    shutil.rmtree(out, ignore_errors=True)
    run = common.in_subprocess('stream_bench', 'beam', job, events, out)
    shutil.rmtree(out, ignore_errors=True)
    return {'job': job, 'source': stream_bench.source_of(job, events),
            'events': run['result']['events'], 'cpu_s': run['cpu_s'],
            'rate': _rate(run), 'wall_s': run['wall_s'],
            'peak_mib': run['peak_mib'],
            'summary': stream_bench.check(run['result'])}


def stream_table(rows):
    lines = ['', '`make run`\'s stream: each job on its streaming synthetic '
             'default with more events (`python -m pipelines JOB --streaming '
             '--source URI`, a TestStream on the local runner, columnar path '
             'on one block per tick); CPU seconds of the process, stream '
             'generation included, imports not.', '',
             '| job | source | events | CPU s | ev/s/core | wall s | peak MiB '
             '| summary |', '|---|---|---|---|---|---|---|---|']
    for r in rows:
        lines.append(f'| {r["job"]} | `{r["source"]}` | {r["events"]:,} | '
                     f'{r["cpu_s"]:.1f} | {r["rate"]:,.0f} | '
                     f'{r["wall_s"]:.1f} | {r["peak_mib"]:.0f} | '
                     f'{r["summary"]} |')
    return lines


def _agreement(a):
    text = f'{a["groups"]} groups agree'
    if 'templates' in a:
        text += f'; {a["templates"]} templates hold every record'
    if 'worst_rank_error' in a:
        text += (f'; quantile rank error <= {float(a["worst_rank_error"]):.4f}'
                 f' (bound {float(a["rank_error_bound"]):.4f})')
    return text


def table(rows, memory, element_events, live=None, stream=None,
          own_peak=None):
    head = [
        '# Benchmark results',
        '',
        f'Made by `make bench` on {datetime.date.today()} '
        f'({platform.machine()}, {os.cpu_count()} cores, Python '
        f'{platform.python_version()}).  Events per second per core = events '
        f'/ CPU seconds of the process that computed them.  Beam runs the '
        f'replay path (file -> decode -> window -> aggregate -> Parquet) on '
        f'the in-process portable runner (FnApiRunner) with one worker; the '
        f'reference computes the same figures with plain pyarrow.',
    ]
    lines = head + [
        '',
        '| job | Beam path | events | Beam ev/s/core | pyarrow ev/s/core | ratio | '
        f'element path ratio ({element_events:,} events) | Beam peak MiB | '
        'pyarrow peak MiB | agreement |',
        '|---|---|---|---|---|---|---|---|---|---|',
    ] if rows else head
    for r in rows:
        element = f'{r["element_ratio"]:.3f}' if 'element_ratio' in r else '-'
        lines.append(
            f'| {r["job"]} | {r["path"]} | {r["events"]:,} | '
            f'{r["beam_rate"]:,.0f} | '
            f'{r["ref_rate"]:,.0f} | {r["ratio"]:.2f} | {element} | '
            f'{r["beam_peak_mib"]:.0f} | {r["ref_peak_mib"]:.0f} | '
            f'{_agreement(r["agreement"])} |')
    if any(r['job'] == 'trades-kafka' for r in rows):
        lines += ['', 'trades-kafka: the trades job built as for '
                  '`kafka://` or `pubsub://` (`--streaming`: a restart '
                  'resumes it, so its partials apply the keep-out rule) on '
                  'the local runner, reading the trades replay file in '
                  'blocks (bench/resumed_bench.py); its element column is '
                  'the path it took before (record by record).']
    for r in rows:
        if 'runs' in r:
            lines += ['', f'{r["job"]}: each side the run of median rate '
                      f'of {len(r["runs"]["beam"])} alternated runs (Beam '
                      + ' / '.join(f'{v:,.0f}' for v in r['runs']['beam'])
                      + '; pyarrow '
                      + ' / '.join(f'{v:,.0f}' for v in r['runs']['ref'])
                      + ' ev/s/core).']
    if memory:
        lines += ['', 'Memory: each job\'s columnar replay of one file into '
                  'Parquet (the same shape as above), peak resident memory '
                  '(VmHWM) of its process.', '',
                  '| memory run | events | peak MiB | ev/s/core | wall s |',
                  '|---|---|---|---|---|']
        for name, m in memory.items():
            lines.append(f'| {name} | {m["events"]:,} | {m["peak_mib"]:.0f} |'
                         f' {m["rate"]:,.0f} | {m["wall_s"]:.1f} |')
    if stream:
        lines += stream_table(stream)
    if own_peak is not None:
        children = [r['beam_peak_mib'] for r in rows] + \
            [r['ref_peak_mib'] for r in rows] + \
            [m['peak_mib'] for m in (memory or {}).values()]
        lines += ['', f'Peak of bench/run.py\'s own process (inputs written '
                  f'a chunk at a time): {own_peak:.0f} MiB; of any measured '
                  f'child: {max(children, default=0):.0f} MiB.']
    worst = min((r['ratio'] for r in rows if r.get('in_min', True)),
                default=math.nan)
    live_lines, live_worst = live_bench.table(live) if live else ([], None)
    if live_lines:
        lines += ['', 'Live Kafka: the core aggregation read from one '
                  '4-partition topic on the local Kafka-protocol broker by '
                  'each system in its own process and consumer group; events '
                  'per CPU-second of that process until every window but '
                  'the last has its final result, checked against numpy.',
                  ''] + live_lines
    if rows:
        lines += ['', f'min ratio to pyarrow: {worst:.2f}']
    if live_worst is not None:
        lines.append(f'min ratio to peers (live Kafka): {live_worst:.2f}')
    return '\n'.join(lines + ['']), worst


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument('--events', type=int, default=1_000_000,
                        help='records per throughput benchmark (default 1e6)')
    parser.add_argument('--element-events', type=int, default=100_000,
                        help='records for the element-at-a-time comparison '
                             '(0 skips it; default 1e5)')
    parser.add_argument('--template-events', type=int, default=100_000,
                        help='records of the logs job with and without '
                             'template mining (0 skips it; default 1e5)')
    parser.add_argument('--video-events', type=int, default=None,
                        help='reports of the video_qoe benchmark '
                             '(default: --events)')
    parser.add_argument('--memory-events', type=int, default=10_000_000,
                        help='records of the peak-memory replay (0 skips it; '
                             'default 1e7)')
    parser.add_argument('--only', action='append', default=None,
                        metavar='NAME',
                        help='run only this benchmark (repeatable): a job '
                             '(core, logs, trades, sensors, video_qoe), '
                             'its memory replay (memory-core, memory-trades, '
                             '...; --memory-events records), stream (make '
                             'run\'s stream per job), live (the live '
                             'Kafka rows against the peers) or latency (the '
                             'paced end-to-end latency of the logs job on '
                             'Kafka); the table is printed, bench/RESULTS.md '
                             'is not rewritten (default: all)')
    parser.add_argument('--live-events', type=int, default=300_000,
                        help='records of the live Kafka comparison with the '
                             'peers (0 skips it; default 3e5)')
    parser.add_argument('--stream-events', type=int, default=100_000,
                        help='records of make run\'s stream, per job '
                             f'({", ".join(STREAM_JOBS)}; --only stream '
                             'runs only these; 0 skips it; default 1e5)')
    args = parser.parse_args(argv)
    # (name, module, input maker, has a separate element path to compare)
    benches = [
        ('core', core_bench, core_bench.make_input, True),
        ('logs', logs_bench, common.logs_input, True),
        ('trades', trades_bench, trades_bench.make_input, True),
        # the trades job as built for kafka:// or pubsub:// (a restart
        # resumes it: the keep-out rule in its partials), streaming on the
        # local runner, reading the same replay file (bench/resumed_bench.py)
        ('trades-kafka', resumed_bench, trades_bench.make_input, True),
        ('sensors', sensors_bench, sensors_bench.make_input, True),
    ]
    known = [b[0] for b in benches] + ['video_qoe', 'stream', *LIVE] + \
        [f'memory-{name}' for name in MEMORY]
    if args.only:
        unknown = set(args.only) - set(known)
        if unknown:
            parser.error(f'--only: unknown benchmark(s) {sorted(unknown)}; '
                         f'known: {", ".join(known)}')
        benches = [b for b in benches if b[0] in args.only]
    rows = []
    for name, module, make_input, element in benches:
        print(f'running {name} ...', flush=True)
        rows.append(bench_job(name, module, make_input, args.events,
                              args.element_events if element else 0,
                              'columnar' if element else 'element'))
    if args.template_events and (not args.only or 'logs' in args.only):
        print('running logs + templates ...', flush=True)
        rows.append(bench_templates(args.template_events))
    # (The element path of video_qoe is slow: a fifth of the events.)
    if not args.only or 'video_qoe' in args.only:
        print('running video_qoe ...', flush=True)
        video_events = args.video_events or args.events
        rows.append(bench_job('video_qoe', video_bench,
                              video_bench.make_input, video_events,
                              min(args.element_events, video_events) // 5,
                              'block', repeats=VIDEO_REPEATS))
    memory = {}
    makers = {
        'logs': (logs_bench, common.logs_input),
        'core': (core_bench, core_bench.make_input),
        'trades': (trades_bench, trades_bench.make_input),
        'sensors': (sensors_bench, sensors_bench.make_input),
        'video_qoe': (video_bench, video_bench.make_input),
    }
    for name in MEMORY if args.memory_events else ():
        if args.only and f'memory-{name}' not in args.only:
            continue
        print(f'running {name} memory replay of {args.memory_events:,} ...',
              flush=True)
        memory[name] = memory_run(name, *makers[name], args.memory_events)
    stream = []
    if args.stream_events and (not args.only or 'stream' in args.only):
        for job in STREAM_JOBS:
            print(f'running make run\'s stream, {job}, '
                  f'{args.stream_events:,} records ...', flush=True)
            stream.append(bench_stream(job, args.stream_events))
    live = None
    parts = set(LIVE) if not args.only else set(args.only) & set(LIVE)
    if args.live_events and parts:
        print(f'running live Kafka ({", ".join(sorted(parts))}), '
              f'{args.live_events:,} records ...', flush=True)
        live = live_bench.run_all(args.live_events, parts=parts)
    text, worst = table(rows, memory, args.element_events, live, stream,
                        own_peak=common.peak_mib())
    if not args.only:
        RESULTS.write_text(text, encoding='utf-8')
    print(text)
    return 0 if not rows or worst > 0 else 1


if __name__ == '__main__':
    sys.exit(main())
