"""The run summary's accounting (pipelines/run.py summarize and
format_summary) on counters as a run reports them."""
import re

from pipelines.run import format_summary, summarize


def _lines(text):
    return dict(re.findall(r'^\s*([a-z][a-z ,/()-]*?)\s{2,}(\S+)', text,
                           re.MULTILINE))


def test_assignments_a_restart_kept_out_are_shown_and_not_dropped():
    """A restart keeps a record it reads again out of the windows final
    at the horizon it resumes (counted final_replayed) and out of the
    outputs whose late dead letters the sink holds (late_replayed): those
    assignments never reach the grouping's count, so they are neither
    aggregated nor dropped late; the summary names them on a line of
    their own."""
    counted = {'read': 12, 'decoded': 11, 'dead_letters': 1,
               'assigned': 9, 'aggregated': 8, 'late_kept': 1,
               'final_replayed': 3, 'late_replayed': 2}
    s = summarize(counted)
    assert s['balanced']
    assert s['dropped_late'] == 0
    assert s['kept_out_on_restart'] == 5
    shown = _lines(format_summary('logs', s, 1.0))
    assert shown['kept out on restart'] == '5'
    assert shown['window assignments'] == '9'
    assert 'dropped late' not in shown


def test_a_run_that_resumed_nothing_has_no_restart_line():
    s = summarize({'read': 3, 'decoded': 3, 'assigned': 3,
                   'aggregated': 3})
    assert s['kept_out_on_restart'] == 0
    assert 'kept out on restart' not in format_summary('logs', s, 1.0)
