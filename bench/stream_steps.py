"""Where ``make run``'s stream spends its CPU: seconds per step of the local runner.

Runs a job on its streaming synthetic default with ``events=N`` (as
``bench/stream_bench.py`` does; extra URI parameters such as ``&tick=60``
may be appended) and prints the CPU seconds of the whole run, the CPU
seconds of the runner's executor threads, and for each step its thread CPU
time, its bundles and the CPU per bundle, largest first, with the run's
pane counts.  A diagnostic, not a benchmark: its figures are not ratios.

    python bench/stream_steps.py JOB EVENTS [URI_SUFFIX] [--top N]
"""
import argparse
import collections
import contextlib
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=wrong-import-position
from apache_beam.runners.direct import executor  # noqa: E402

from bench import stream_bench  # noqa: E402
from pipelines import local_runner, run  # noqa: E402


@contextlib.contextmanager
def timed_steps():
    """Step label -> [thread CPU seconds, bundles], filled while the block
    lasts (the runner's executor restored after it)."""
    local_runner._install_fresh_sampler()  # pylint: disable=protected-access
    steps = collections.defaultdict(lambda: [0.0, 0])
    call = executor.TransformExecutor.call

    def timed_call(self, state_sampler):
        start = time.thread_time()
        try:
            return call(self, state_sampler)
        finally:
            applied = getattr(self, '_applied_ptransform', None)
            step = steps[applied.full_label if applied else '?']
            step[0] += time.thread_time() - start
            step[1] += 1

    # (kept marked as installed, so the local runner does not wrap it again)
    setattr(timed_call, local_runner._INSTALLED, True)  # pylint: disable=protected-access
    executor.TransformExecutor.call = timed_call
    try:
        yield steps
    finally:
        executor.TransformExecutor.call = call


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('job', choices=sorted(stream_bench.JOBS))
    parser.add_argument('events', type=int)
    parser.add_argument('suffix', nargs='?', default='',
                        help='appended to the source URI, e.g. "&tick=60" '
                             '(default: none)')
    parser.add_argument('--top', type=int, default=25,
                        help='steps listed (default: %(default)s)')
    args = parser.parse_args(argv)
    source = stream_bench.source_of(args.job, args.events) + args.suffix
    out = tempfile.mkdtemp(prefix='stream-steps-')
    try:
        with timed_steps() as steps:
            start = time.process_time()
            summary = run.run(stream_bench.JOBS[args.job], [
                '--streaming', '--source', source, '--sink',
                f'parquet://{out}', '--no-summary', '--no-progress'])
            cpu = time.process_time() - start
    finally:
        shutil.rmtree(out, ignore_errors=True)
    in_steps = sum(s[0] for s in steps.values())
    bundles = sum(s[1] for s in steps.values())
    print(f'{source}: {cpu:.2f} CPU s ({args.events / cpu:,.0f} events per '
          f'CPU-second), {in_steps:.2f} of them in the runner\'s steps '
          f'({bundles:,} bundles); panes '
          f'{summary["panes_early"]}/{summary["panes_on_time"]}/'
          f'{summary["panes_late"]}')
    print('| step | CPU s | bundles | ms per bundle |')
    print('|---|---|---|---|')
    for label, (seconds, bundles) in sorted(
            steps.items(), key=lambda kv: -kv[1][0])[:args.top]:
        print(f'| {label} | {seconds:.2f} | {bundles:,} | '
              f'{1000 * seconds / max(bundles, 1):.2f} |')
    return summary, dict(steps), cpu


if __name__ == '__main__':
    main()
