import pytest
from apache_beam.transforms import trigger as beam_trigger
from apache_beam.transforms import window as beam_window

from transforms.windows import (SpecError, TriggerSpec, parse_duration,
                                parse_trigger, parse_window)


@pytest.mark.parametrize('text,seconds', [
    ('60s', 60), ('5m', 300), ('1h', 3600), ('250ms', 0.25), ('2d', 172800),
    ('30', 30), ('1.5m', 90)])
def test_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize('text', ['', 'abc', '-5s', '0s', '5x', '5 minutes'])
def test_bad_durations(text):
    with pytest.raises(SpecError):
        parse_duration(text)


def test_window_specs_give_beam_window_fns():
    fixed = parse_window('fixed:60s')
    assert fixed.window_fn() == beam_window.FixedWindows(60)
    sliding = parse_window('sliding:5m/1m')
    assert sliding.window_fn() == beam_window.SlidingWindows(300, 60)
    session = parse_window('session:30m')
    assert session.window_fn() == beam_window.Sessions(1800)
    assert str(sliding) == 'sliding:5m/1m'


@pytest.mark.parametrize('text', [
    'fixed', 'fixed:', 'tumbling:60s', 'sliding:5m', 'sliding:1m/5m',
    'session:0s', 'fixed:abc'])
def test_bad_window_specs_say_why(text):
    with pytest.raises(SpecError) as err:
        parse_window(text)
    assert text in str(err.value) or repr(text) in str(err.value)


def test_trigger_spec_full():
    spec = parse_trigger('early=10s,late=1,lateness=10m,accumulating')
    assert spec == TriggerSpec(10.0, 1, 600.0, True)
    assert spec.accumulation_mode() == \
        beam_trigger.AccumulationMode.ACCUMULATING
    trig = spec.trigger()
    assert isinstance(trig, beam_trigger.AfterWatermark)
    assert repr(trig.early) == 'Repeatedly(AfterProcessingTime(delay=10))'
    assert repr(trig.late) == 'Repeatedly(AfterCount(1))'


def test_trigger_defaults_and_implied_late():
    assert parse_trigger('default') == TriggerSpec()
    assert parse_trigger('') == TriggerSpec()
    spec = parse_trigger('lateness=5m,discarding')
    assert spec.late == 1 and spec.lateness == 300 and not spec.accumulating
    assert str(parse_trigger('discarding,early=1m')) == 'early=1m,discarding'


@pytest.mark.parametrize('text', [
    'early=', 'late=0,lateness=1m', 'late=x,lateness=1m', 'late=2',
    'accumulating,discarding', 'sometimes', 'early=10s;late=1'])
def test_bad_trigger_specs(text):
    with pytest.raises(SpecError):
        parse_trigger(text)


@pytest.mark.parametrize('spec', ['fixed:60s', 'sliding:5m/1m',
                                  'sliding:90s/40s'])
def test_late_from_is_where_the_first_window_of_a_record_closes(spec):
    # The oracle: Beam's own window function assigns the windows.
    from apache_beam.utils.timestamp import Timestamp
    from transforms.windows import LateFrom, parse_window
    window = parse_window(spec)
    late_from = LateFrom((window,), TriggerSpec(late=1, lateness=120.0))
    for seconds in (0.0, 59.999, 60.0, 1000.5, 1767225612.25):
        assigned = window.window_fn().assign(
            beam_window.WindowFn.AssignContext(Timestamp.of(seconds)))
        first = min(float(w.end) for w in assigned)
        assert late_from(seconds) == pytest.approx(first + 120.0)


def test_late_from_of_a_session_is_its_own_window_unless_it_can_finish():
    from transforms.windows import LateFrom, parse_window
    session, rollup = parse_window('session:30m'), parse_window('fixed:60s')
    late = TriggerSpec(late=1, lateness=120.0)
    assert LateFrom((session,), late)(1000.0) == 1000.0 + 1800 + 120
    # The earliest of the job's windows: the rollup's, [960, 1020) + 120 s.
    assert LateFrom((session, rollup), late)(1000.0) == 1140.0
    # A session whose trigger finishes at its ON_TIME pane (no late
    # firings, or no lateness) may take a record joining it no more as
    # soon as the watermark passes that record.
    for trigger in (TriggerSpec(lateness=120.0), TriggerSpec(late=1)):
        assert LateFrom((session,), trigger)(1000.0) == 1000.0
