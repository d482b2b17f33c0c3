"""Feed generated lines to every registered decoder, in batches (one
hypothesis example is a batch of lines, also read as one block by a columnar
reader); report the counts.  ``python -m fuzz --inputs N``."""
import argparse
import sys
import time

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from fuzz import harness
from fuzz.targets import BY_NAME, TARGETS

BATCH = 16          # lines drawn per example at most


def fuzz_target(target, examples: int, seed=None, derandomize=False):
    """Run ``examples`` hypothesis examples of up to BATCH lines on a target;
    returns the Counts.  A Finding propagates (shrunk by hypothesis)."""
    counts = harness.Counts()

    @settings(max_examples=examples, deadline=None, database=None,
              derandomize=derandomize, print_blob=True,
              phases=(Phase.generate, Phase.shrink),
              suppress_health_check=list(HealthCheck))
    @given(st.lists(target.lines, min_size=1, max_size=BATCH))
    def check(lines):
        counts['examples'] += 1
        harness.check_lines(target, lines, counts)

    if seed is not None:
        check = __import__('hypothesis').seed(seed)(check)
    check()
    return counts


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m fuzz', description=__doc__)
    parser.add_argument('--inputs', type=int, default=1_000_000,
                        help='generated inputs in all, shared evenly by the '
                             'targets (default: %(default)s)')
    parser.add_argument('--target', action='append', choices=sorted(BY_NAME),
                        help='fuzz only this decoder (repeatable; default: '
                             'all)')
    parser.add_argument('--seed', type=int, default=None,
                        help='hypothesis seed (default: random)')
    args = parser.parse_args(argv)
    targets = [BY_NAME[n] for n in args.target] if args.target else TARGETS
    per_target = args.inputs // len(targets)
    total = harness.Counts()
    print(f'{"decoder":<20}{"drawn":>9}{"inputs":>10}{"records":>10}{"dead":>10}'
          f'{"filtered":>10}{"blocks":>9}{"col.rows":>10}{"s":>7}')
    started = time.process_time()
    for target in targets:
        counts = harness.Counts()
        t0 = time.process_time()
        while counts['inputs'] < per_target:
            # Each round asks for about the examples the inputs still
            # missing need, judged by the inputs per example so far.
            missing = per_target - counts['inputs']
            per_example = counts['inputs'] / counts['examples'] \
                if counts['examples'] else BATCH * 4
            counts += fuzz_target(target, max(10, int(missing / per_example)
                                              + 1), seed=args.seed)
        total += counts
        print(f'{target.name:<20}{counts["drawn"]:>9}{counts["inputs"]:>10}{counts["records"]:>10}'
              f'{counts["dead_letters"]:>10}{counts["filtered"]:>10}'
              f'{counts["blocks"]:>9}{counts["columnar_rows"]:>10}'
              f'{time.process_time() - t0:>7.0f}', flush=True)
    print(f'{"total":<20}{total["drawn"]:>9}{total["inputs"]:>10}{total["records"]:>10}'
          f'{total["dead_letters"]:>10}{total["filtered"]:>10}'
          f'{total["blocks"]:>9}{total["columnar_rows"]:>10}'
          f'{time.process_time() - started:>7.0f}')
    print(f'no finding in {total["inputs"]} generated inputs '
          f'({total["drawn"]} drawn by hypothesis, the rest their truncated '
          f'variants; {len(targets)} decoders; every input a record, a dead letter or '
          f'a named filter; columnar readers agree on {total["blocks"]} '
          f'blocks)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
