"""``python -m pipelines JOB [--options]``; ``python -m pipelines`` lists the jobs."""
import importlib
import logging
import sys

from pipelines import JOBS

# Beam's local runner logs each failed attempt of a step with its traceback.
QUIET_LOGGERS = ('apache_beam.runners.direct.executor',
                 'apache_beam.runners.common')


def _first_line(module_name):
    doc = importlib.import_module(module_name).__doc__ or ''
    return doc.strip().splitlines()[0] if doc.strip() else ''


def usage():
    lines = ['usage: python -m pipelines JOB [--options]   '
             '(python -m pipelines JOB --help for its options)',
             '       python -m pipelines report OUTPUT_DIR [--out FILE.html]'
             '   (an HTML report of a run\'s output)', '', 'jobs:']
    for name, module in JOBS.items():
        lines.append(f'  {name:<10} {_first_line(module)}')
    return '\n'.join(lines) + '\n'


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ('-h', '--help', 'list'):
        sys.stdout.write(usage())
        return 0
    job, rest = argv[0], argv[1:]
    if job == 'report':
        from pipelines import report   # pylint: disable=import-outside-toplevel
        return report.main(rest)
    if job not in JOBS:
        sys.stderr.write(f'python -m pipelines: error: unknown job {job!r}; '
                         f'jobs: {", ".join(JOBS)}\n')
        return 2
    logging.basicConfig(level=logging.WARNING, format='%(levelname)s %(message)s')
    # A failed step is reported once, by run.run: one line for a source or
    # sink fault, the traceback for anything else; not also by every retry.
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL)
    from pipelines import run   # pylint: disable=import-outside-toplevel
    run.run(importlib.import_module(JOBS[job]), rest)
    return 0


if __name__ == '__main__':
    sys.exit(main())
