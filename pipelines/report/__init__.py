"""``python -m pipelines report OUTPUT_DIR [--out FILE.html]``: one
self-contained HTML page (figures as inline PNG, no script, nothing fetched)
for every job whose tables it finds under OUTPUT_DIR: the job's own figures,
then the accounting of its run, its dead letters and how panes were emitted.

OUTPUT_DIR is one job's sink folder (``output/logs``) or a folder of them
(``output``).  A job is recognised by the ``_summary.json`` a local run
writes beside its tables, or else by the folder's name.
"""
import datetime
import pathlib
import sys

from pipelines import options as job_options
from pipelines.report import page
from pipelines.report.data import SUMMARY_FILE, JobOutput
from pipelines.report.sections import SECTIONS, common, section_module

PROG = 'python -m pipelines report'
DEFAULT_NAME = 'report.html'


def find_jobs(root):
    """[JobOutput] under root: root itself and its sub-folders."""
    root = pathlib.Path(root)
    found = []
    for folder in [root] + sorted(p for p in root.iterdir() if p.is_dir()):
        out = JobOutput(_job_of(folder), folder)
        if out.job in SECTIONS and (out.summary is not None
                                    or out.table_names()):
            found.append(out)
    return found


def _job_of(folder):
    summary = folder / SUMMARY_FILE
    if summary.is_file():
        out = JobOutput(None, folder)
        try:
            return out.summary.get('job')
        except ValueError:
            return None
    return folder.name


def job_sections(out):
    """The sections of one job, in page order."""
    module = section_module(out.job)
    anchor = out.job if out.path.name == out.job else \
        f'{out.job}-{out.path.name}'
    own = page.Section(f'{module.TITLE}  ({out.path.name}/)', anchor)
    module.build(own, out)
    accounting = page.Section('Accounting', f'{anchor}-accounting', level=3)
    accounting.attempt('accounting', common.accounting, out)
    dead = page.Section('Dead letters', f'{anchor}-dead-letters', level=3)
    dead.attempt('dead letters', common.dead_letters, out)
    panes = page.Section('Panes', f'{anchor}-panes', level=3)
    table, keys, metric, *where = module.PANES
    if out.has(table):
        panes.attempt('panes', common.panes, out, table, keys, metric,
                      *where)
    else:
        panes.note(f'No {table} table: no panes to show.')
    return [own, accounting, dead, panes]


def render(jobs, title='Realtime Pipelines: run report'):
    """[JobOutput] -> (HTML text, [(job, [Section])])."""
    built = [(out.job, job_sections(out)) for out in jobs]
    now = datetime.datetime.now(datetime.timezone.utc).strftime(
        '%Y-%m-%d %H:%M UTC')
    subtitle = (f'{", ".join(job for job, _ in built)} · generated {now}')
    return page.document(title, subtitle, built), built


def parser():
    p = job_options._Parser(   # pylint: disable=protected-access
        prog=PROG, description=__doc__.split('\n\n', 1)[0].split(': ', 1)[1])
    p.add_argument('output_dir', metavar='OUTPUT_DIR',
                   help='a job\'s output folder (e.g. output/logs) or a '
                        'folder of them (e.g. output)')
    p.add_argument('--out', metavar='FILE.html', default=None,
                   help=f'where the page goes (default: '
                        f'OUTPUT_DIR/{DEFAULT_NAME})')
    return p


def main(argv=None, stdout=None):
    stdout = stdout or sys.stdout
    args = parser().parse_args(argv)
    root = pathlib.Path(args.output_dir)
    if not root.is_dir():
        sys.stderr.write(f'{PROG}: error: OUTPUT_DIR {root}: no such '
                         f'folder\n')
        return 2
    jobs = find_jobs(root)
    if not jobs:
        sys.stderr.write(
            f'{PROG}: error: OUTPUT_DIR {root}: no job output found (a job\'s '
            f'Parquet tables, TABLE/ folders, or folders named after jobs: '
            f'{", ".join(SECTIONS)})\n')
        return 2
    target = pathlib.Path(args.out) if args.out else root / DEFAULT_NAME
    text, _ = render(jobs)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding='utf-8')
    except OSError as e:
        sys.stderr.write(f'{PROG}: error: --out {target}: {e.strerror}\n')
        return 2
    stdout.write(f'report: {target}\n')
    return 0
