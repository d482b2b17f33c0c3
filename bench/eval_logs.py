"""Template mining measured on Loghub: grouping accuracy per data set.

``python -m bench.eval_logs [--loghub_dir DIR] [--out DIR]`` (``make
eval-logs``) mines the ``Content`` column of every ``<Name>/<Name>_2k.log_
structured.csv`` under DIR (default ``../shared/loghub``) with one miner per
data set, in line order, with one configuration for all, and prints each data
set's grouping accuracy (GA) and, last, ``average GA: 0.NNN``.  Each data
set's predicted template per line is written to ``OUT/<Name>.csv`` (columns
``LineId,EventId``; default ``output/eval-logs``).

GA is logpai/logparser's ``evaluator.get_accuracy``: a line counts as parsed
correctly when the set of lines its predicted template groups is exactly the
set of lines of its ground-truth event.  Lines whose ground truth EventId is
empty are left out, as logpai's evaluator does.
"""
import argparse
import collections
import csv
import os
import pathlib
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from transforms.logs import templates  # noqa: E402  pylint: disable=wrong-import-position

REPO = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_LOGHUB = REPO.parent / 'shared' / 'loghub'
DEFAULT_OUT = pathlib.Path('output') / 'eval-logs'


def grouping_accuracy(truth, predicted) -> float:
    """logpai's GA over two equal-length sequences of event ids."""
    if len(truth) != len(predicted):
        raise ValueError('truth and predicted differ in length')
    if not truth:
        return 0.0
    truth_sizes = collections.Counter(truth)
    members = collections.defaultdict(list)
    for t, p in zip(truth, predicted):
        members[p].append(t)
    correct = 0
    for group in members.values():
        events = set(group)
        if len(events) == 1 and truth_sizes[group[0]] == len(group):
            correct += len(group)
    return correct / len(truth)


def read_structured(path):
    """[(LineId, Content, EventId)] of a Loghub structured CSV."""
    with open(path, newline='', encoding='utf-8') as f:
        reader = csv.DictReader(f)
        missing = {'LineId', 'Content', 'EventId'} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f'{path}: no column {", ".join(sorted(missing))}')
        return [(row['LineId'], row['Content'] or '', row['EventId'] or '')
                for row in reader]


def mine(contents, service=''):
    """Final template id per message (templates as they stand at the end)."""
    miner = templates.TemplateMiner(service)
    clusters = []
    for content in contents:
        miner.add(content)
        clusters.append(miner.last_cluster)
    return [templates.template_id(service, templates.template_text(c.tokens))
            for c in clusters]


def mine_drain3(contents):
    """Cluster id per message with drain3's default configuration (for
    comparison; drain3 is not a dependency of the project, see
    transforms/logs/templates.py)."""
    from drain3 import TemplateMiner  # pylint: disable=import-outside-toplevel
    from drain3.template_miner_config import TemplateMinerConfig  # pylint: disable=import-outside-toplevel
    config = TemplateMinerConfig()
    config.profiling_enabled = False
    miner = TemplateMiner(config=config)
    return [str(miner.add_log_message(c)['cluster_id']) for c in contents]


MINERS = {'templates': mine, 'drain3': mine_drain3}


def evaluate(structured_csv, out_csv=None, miner='templates'):
    rows = read_structured(structured_csv)
    predicted = MINERS[miner]([content for _, content, _ in rows])
    if out_csv is not None:
        out_csv.parent.mkdir(parents=True, exist_ok=True)
        with open(out_csv, 'w', newline='', encoding='utf-8') as f:
            writer = csv.writer(f)
            writer.writerow(['LineId', 'EventId'])
            writer.writerows((line_id, event) for (line_id, _, _), event
                             in zip(rows, predicted))
    kept = [(truth, p) for (_, _, truth), p in zip(rows, predicted) if truth]
    return grouping_accuracy([t for t, _ in kept], [p for _, p in kept])


def datasets(loghub_dir):
    """(name, structured csv) of every Loghub data set under the directory."""
    found = []
    for child in sorted(pathlib.Path(loghub_dir).iterdir()):
        csv_path = child / f'{child.name}_2k.log_structured.csv'
        if child.is_dir() and csv_path.is_file():
            found.append((child.name, csv_path))
    return found


def main(argv=None):
    parser = argparse.ArgumentParser(prog='eval-logs', description=__doc__.split('\n\n')[0])
    parser.add_argument('--loghub_dir', default=str(DEFAULT_LOGHUB),
                        help='directory of Loghub data sets <Name>/<Name>_2k.'
                             'log_structured.csv (default: ../shared/loghub)')
    parser.add_argument('--out', default=str(DEFAULT_OUT),
                        help='directory of the predicted <Name>.csv files '
                             '(default: %(default)s)')
    parser.add_argument('--miner', default='templates', choices=sorted(MINERS),
                        help='"templates": the job\'s miner (transforms/logs/'
                             'templates.py); "drain3": drain3 with its default '
                             'configuration, if installed, for comparison '
                             '(default: %(default)s)')
    args = parser.parse_args(argv)
    if args.miner == 'drain3':
        try:
            import drain3  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
        except ImportError:
            print('eval-logs: --miner drain3: drain3 is not installed (its '
                  'pins conflict with Apache Beam\'s; install drain3==0.9.11 '
                  'with --no-deps to compare)', file=sys.stderr)
            return 2
    if not pathlib.Path(args.loghub_dir).is_dir():
        print(f'eval-logs: --loghub_dir {args.loghub_dir}: not a directory',
              file=sys.stderr)
        return 2
    found = datasets(args.loghub_dir)
    if not found:
        print(f'eval-logs: --loghub_dir {args.loghub_dir}: no <Name>/<Name>_2k.'
              f'log_structured.csv in it', file=sys.stderr)
        return 2
    scores = []
    for name, path in found:
        try:
            ga = evaluate(path, pathlib.Path(args.out) / f'{name}.csv',
                          args.miner)
        except (OSError, ValueError, csv.Error) as e:
            print(f'eval-logs: {path}: {e}', file=sys.stderr)
            return 2
        scores.append(ga)
        print(f'{name:<12} GA {ga:.4f}')
    print(f'average GA: {sum(scores) / len(scores):.3f}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
