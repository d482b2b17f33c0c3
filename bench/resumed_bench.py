"""The trades job as it is built for a source a restart resumes (``kafka://``,
``pubsub://``): columnar against element, each as a ratio to plain pyarrow
in the same run.

From such a source, where late trades are kept (a streaming run on the
local runner), the job tells its read when a trade may first be late
(``io.Context.late_from``) and keeps a trade a restart reads again out of
its bars final at the horizon it resumes.  With fixed bars the columnar
partials do that (``columnar.PartialsFn(keep_out=...)``, each payload's
origin taken where the partials are built); the element path binds each
trade to its origin and the bars grouping keeps it out.  This builds the
job exactly so (``--streaming --source kafka://...``, the job's default
windows and trigger) but has the source read a file of trades (the replay
file of ``trades_bench``) in blocks, as a Kafka poll's records travel in
one block: no broker, no commit to resume, no origin registered (the
common case; a restart's records read again are a few polls), so the
figure is the cost of the path itself.  Events per CPU-second of each
process (imports not counted); the pyarrow reference computes the bars of
the same file (``trades_bench.pyarrow_run``).

    python bench/resumed_bench.py [--events N] [--element-events M]

A third row builds the columnar job for ``file://`` (no restart resumes
it: no keep-out) on the same read, for the cost of the keep-out itself.
"""
import argparse
import os
import shutil
import sys

import apache_beam as beam

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import common, trades_bench  # noqa: E402  pylint: disable=wrong-import-position
# Imported before anything is measured.
from pipelines import run, trades  # noqa: E402  pylint: disable=wrong-import-position
from transforms import columnar, io  # noqa: E402  pylint: disable=wrong-import-position
from transforms.io import file as file_io  # noqa: E402  pylint: disable=wrong-import-position

# A source URI a restart resumes (io.resumes): the job is built for it; the
# read itself is the file's.
RESUMED = 'kafka://localhost:9092/trades?group=bench'


class _FileStream(file_io.FileSource):
    """A file read in blocks where the job asks for a stream's blocks, else
    line by line out of the same blocks (as a Kafka read hands on one
    record at a time where the job takes no blocks): either way the read
    holds the watermark until it has handed on the whole file."""

    def stream_blocks(self):
        return self.blocks()

    def expand(self, pbegin):
        return (pbegin
                | 'Blocks' >> self.blocks()
                | 'Lines' >> beam.FlatMap(lambda block: block.lines()))


def beam_run(path, out, execution='columnar', source=RESUMED):
    """``source``: RESUMED, or ``file`` (the job built for a file, which
    no restart resumes: no late_from, no keep-out; the same read)."""
    built = {}
    opened = io.open_source
    partials = columnar.PartialsFn.__init__
    file_uri = f'file://{path}'
    source = file_uri if source == 'file' else source

    def open_source(text, context):
        if text != source:
            return opened(text, context)
        built['late_from'] = context.late_from is not None
        return _FileStream(io.parse_uri(file_uri), context)

    def partials_init(self, *args, **kwargs):
        built['keep_out'] = kwargs.get('keep_out')
        partials(self, *args, **kwargs)

    io.open_source = open_source
    io.preflight = lambda text, kind='source': None
    run._recover = lambda *args: None      # no commit to resume
    columnar.PartialsFn.__init__ = partials_init
    summary = run.run(trades, [
        '--streaming', '--source', source, '--sink', f'parquet://{out}',
        '--execution', execution, '--no-summary', '--no-progress'])
    # built as for kafka://: late_from given, and (columnar) the partials
    # keep a trade read again out of its final bars; for a file neither
    resumed = source == RESUMED
    assert built['late_from'] == resumed, built
    assert (built.get('keep_out') is not None) == (
        resumed and execution == 'columnar'), built
    assert summary['balanced'] and not summary['dropped_late'], summary
    # a file replay: no trade late, none kept out (no origin registered)
    assert not summary['late_kept'] and \
        not summary['kept_out_on_restart'], summary
    return {'events': summary['read'], 'decoded': summary['decoded'],
            'keep_out': built.get('keep_out')}


RUNS = {'beam': beam_run, 'pyarrow': trades_bench.pyarrow_run}
# (bench/run.py's row "trades, kafka://" compares final panes as the trades
# row does)
check = trades_bench.check


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--events', type=int, default=1_000_000,
                        help='trades of the columnar run (default: '
                             '%(default)s)')
    parser.add_argument('--element-events', type=int, default=100_000,
                        help='trades of the element run (default: '
                             '%(default)s)')
    args = parser.parse_args()
    lines = ['| trades, path | events | Beam ev/s/core | '
             'pyarrow ev/s/core | ratio | agreement |',
             '|---|---|---|---|---|---|']
    for execution, events, source in (
            ('columnar', args.events, RESUMED),
            ('element', args.element_events, RESUMED),
            ('columnar', args.events, 'file')):
        path = trades_bench.make_input(events)
        name = f'{execution}-{source.split(":")[0]}'
        out = common.OUT / f'resumed-trades-{name}'
        reference = common.OUT / f'resumed-trades-{name}.parquet'
        shutil.rmtree(out, ignore_errors=True)
        beam = common.in_subprocess('resumed_bench', 'beam', path, out,
                                    execution, source)
        ref = common.in_subprocess('resumed_bench', 'pyarrow', path,
                                   reference)
        agreement = trades_bench.check(path, out, reference)
        shutil.rmtree(out, ignore_errors=True)
        beam_rate = beam['result']['events'] / beam['cpu_s']
        ref_rate = ref['result']['events'] / ref['cpu_s']
        built = 'kafka://' if source == RESUMED else 'file://'
        lines.append(f'| {execution}, built for {built} | {events:,} | '
                     f'{beam_rate:,.0f} | '
                     f'{ref_rate:,.0f} | {beam_rate / ref_rate:.3f} | '
                     f'{agreement["groups"]} groups agree |')
    print('\n'.join(lines))


if __name__ == '__main__':
    if len(sys.argv) > 2 and sys.argv[1] == '--child':
        common.child_main(RUNS)
    else:
        main()
