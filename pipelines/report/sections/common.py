"""What every job's report shows: the accounting of the run, the dead-letter
reasons with a few masked samples, and how panes were emitted."""
import re

import numpy as np

from pipelines.report import page
from pipelines.report.data import TIMINGS, final, need, times
from transforms import privacy

SAMPLES_PER_REASON = 3
SAMPLE_CHARS = 160
TOP_REASONS = 12
_MASKER = privacy.Masker(mode='mask')


def accounting(section, out):
    run = out.summary
    if run is None:
        section.note('No run summary (_summary.json) beside the tables: a '
                     'local run writes one; rows per table are counted from '
                     'the tables.')
        rows = [(name, len(out.table(name))) for name in out.table_names()]
        section.table(('table', 'rows'), rows, caption='rows per table')
        return
    s = run['summary']
    opts = run.get('options', {})
    section.note(
        f'source {opts.get("source")} · window {opts.get("window")} · '
        f'trigger {opts.get("trigger")} · {run.get("seconds", 0):.1f} s, '
        f'finished {run.get("finished", "?")}')
    reasons = _reasons(out)
    bars = [('records read', s['read'], '#3182bd'),
            ('decoded', s['decoded'], '#31a354')]
    if reasons:
        bars += [(f'dead-lettered: {r[:40]}', n, '#e6550d')
                 for r, n, _ in reasons[:6]]
        rest = s['dead_lettered'] + s.get('late_dead_letters', 0) - sum(
            n for _, n, _ in reasons[:6])
        if rest > 0:
            bars.append(('dead-lettered: other reasons', rest, '#e6550d'))
    else:
        bars.append(('dead-lettered', s['dead_lettered'], '#e6550d'))
    bars += [(f'filtered: {k}', v, '#756bb1')
             for k, v in s.get('filters', {}).items()]
    bars += [('window assignments', s['window_assignments'], '#3182bd'),
             ('aggregated', s['aggregated'], '#31a354'),
             ('  of which late (LATE panes)', s['late_accepted'], '#fd8d3c'),
             ('late, kept (dead letters)', s.get('late_kept', 0), '#e6550d'),
             ('dropped late', s['dropped_late'], '#b00')]
    bars += [(f'rows written: {t}', n, '#636363')
             for t, n in s.get('rows_written', {}).items()]
    fig, axes = page.figure(height_in=0.28 * len(bars) + 0.8)
    ax = axes[0][0]
    y = np.arange(len(bars))[::-1]
    ax.barh(y, [b[1] for b in bars], color=[b[2] for b in bars])
    ax.set_yticks(y, [b[0] for b in bars])
    for yi, (_, value, _) in zip(y, bars):
        ax.annotate(f' {value:,}', (value, yi), va='center', fontsize=8)
    ax.set_xlabel('records / rows')
    ax.grid(axis='y', visible=False)
    ax.margins(x=0.12)
    adds = 'yes' if s.get('balanced') else 'NO'
    section.figure(fig, f'Accounting of the run: read = decoded + '
                        f'dead-lettered + filtered ({adds})')
    rows = [('records read', s['read']), ('decoded', s['decoded']),
            ('dead-lettered', s['dead_lettered']),
            ('filtered', s['filtered']),
            ('adds up', adds),
            ('window assignments', s['window_assignments']),
            ('aggregated (of which late)',
             f'{s["aggregated"]} ({s["late_accepted"]})'),
            ('late, kept (after the allowed lateness: dead letters, stage '
             'window.late)', s.get('late_kept', 0)),
            ('dropped late (after the allowed lateness)', s['dropped_late']),
            ('panes early / on time / late',
             f'{s["panes_early"]} / {s["panes_on_time"]} / {s["panes_late"]}')]
    rows += [(f'rows written: {t}', n)
             for t, n in s.get('rows_written', {}).items()]
    rows += [(f'rows refused by the sink: {t}', n)
             for t, n in s.get('rows_rejected', {}).items()]
    rows += [(f'filtered: {t}', n) for t, n in s.get('filters', {}).items()]
    rows += [(f'anomalies: {t}', n) for t, n in s.get('anomalies', {}).items()]
    if s.get('alerts_raised') or s.get('alerts_recovered'):
        rows.append(('alerts raised / recovered',
                     f'{s["alerts_raised"]} / {s["alerts_recovered"]}'))
    rows.append(('files written', s.get('files_written', 0)))
    section.table(('', 'count'), rows, caption='run summary')


def reason_pattern(reason) -> str:
    """A dead-letter reason with its particulars (numbers, quoted values)
    replaced, so that one cause is one row."""
    text = re.sub(r"'[^']*'|\"[^\"]*\"", '…', str(reason))
    return re.sub(r'\d+(\.\d+)?', 'N', text)


def _reasons(out):
    """[(stage: reason pattern, count, [masked samples])], most first."""
    dead = out.table('dead_letter')
    if dead.empty:
        return []
    need(dead, 'dead_letter', 'stage', 'reason')
    keys = dead['stage'].astype(str) + ': ' + dead['reason'].map(reason_pattern)
    found = []
    for key, group in dead.groupby(keys, sort=False):
        samples = [sample(raw) for raw in group['raw'].head(
            SAMPLES_PER_REASON)] if 'raw' in group.columns else []
        found.append((key, len(group), samples))
    return sorted(found, key=lambda r: (-r[1], r[0]))


def sample(raw) -> str:
    """A dead letter's payload as text, masked again (the page may travel
    further than the table) and cut short."""
    if isinstance(raw, (bytes, bytearray)):
        raw = bytes(raw).decode('utf-8', errors='replace')
    text = _MASKER.mask(str(raw))
    return text if len(text) <= SAMPLE_CHARS else text[:SAMPLE_CHARS] + '…'


def dead_letters(section, out):
    reasons = _reasons(out)
    if not reasons:
        section.note('No dead letters.')
        return
    top = reasons[:TOP_REASONS]
    fig, axes = page.figure(height_in=max(0.3 * len(top) + 0.8, 1.6))
    ax = axes[0][0]
    y = np.arange(len(top))[::-1]
    ax.barh(y, [n for _, n, _ in top], color='#e6550d')
    ax.set_yticks(y, [r if len(r) <= 70 else r[:70] + '…' for r, _, _ in top])
    ax.set_xlabel('dead letters')
    ax.grid(axis='y', visible=False)
    section.figure(fig, f'Dead letters by stage and reason '
                        f'({sum(n for _, n, _ in reasons)} in all)')
    section.table(
        ('stage: reason', 'count', 'samples (masked)'),
        [(r, n, '\n'.join(s)) for r, n, s in reasons],
        caption='dead-letter reasons', classes='samples')


def panes(section, out, table, keys, metric, where=None):
    """Rows per window by pane timing, and the metric summed over keys: as
    of the last pane before any LATE pane, and final (LATE corrections).
    ``where`` {column: value} keeps only those rows (a table that counts
    every record once per dimension is followed in one dimension)."""
    frame = out.table(table)
    if frame.empty:
        section.note(f'No rows in {table}: no panes to show.')
        return
    need(frame, table, keys[0], metric, 'window_start', 'pane_timing',
         'pane_index', *(where or {}))
    scope = ''
    for column, value in (where or {}).items():
        frame = frame[frame[column] == value]
        scope += f' where {column} = {value}'
    if frame.empty:
        section.note(f'No rows in {table}{scope}: no panes to show.')
        return
    keys = [k for k in keys if k in frame.columns]
    windows = np.sort(frame['window_start'].unique())
    counts = frame.groupby(['window_start', 'pane_timing']).size().unstack(
        fill_value=0).reindex(windows, fill_value=0)
    x = times(counts.index)
    width = _bar_width(x)
    fig, axes = page.figure(2, 1, height_in=4.6, sharex=True)
    ax = axes[0][0]
    bottom = np.zeros(len(counts))
    for timing in TIMINGS:
        if timing in counts.columns:
            values = counts[timing].to_numpy()
            ax.bar(x, values, width=width, bottom=bottom, align='edge',
                   color=page.TIMING_COLORS[timing], label=timing)
            bottom = bottom + values
    ax.set_ylabel(f'{table} rows')
    page.legend(ax, loc='upper left', ncols=3)
    ax.set_title(f'Panes emitted per window ({table}{scope})')
    ax = axes[1][0]
    last = final(frame, keys)
    before = final(frame[frame['pane_timing'] != 'LATE'], keys)
    totals = last.groupby('window_start')[metric].sum().reindex(windows)
    prior = before.groupby('window_start')[metric].sum().reindex(windows)
    centre = x + width / 2
    ax.plot(centre, totals.to_numpy(), '-o', color='#3182bd', ms=3,
            label='final (highest pane)')
    ax.plot(centre, prior.to_numpy(), 'o', mfc='none', color='#636363', ms=5,
            label='before LATE panes')
    moved = (totals - prior).fillna(0).to_numpy() != 0
    if moved.any():
        ax.vlines(centre[moved], prior.to_numpy()[moved],
                  totals.to_numpy()[moved], color=page.TIMING_COLORS['LATE'],
                  lw=2.5, label='late correction')
    ax.set_ylabel(f'{metric} ({scope.strip()})' if scope
                  else f'{metric} (sum over {keys[0]})')
    page.time_axis(ax)
    page.legend(ax, loc='upper left', ncols=3)
    late = int((frame['pane_timing'] == 'LATE').sum())
    section.figure(fig, f'How panes were emitted: EARLY / ON_TIME / LATE rows '
                        f'of {table}{scope} per window; {late} LATE rows, '
                        f'{int(moved.sum())} windows corrected late')


def _bar_width(x):
    """Bar width in matplotlib date units (days): the spacing of windows."""
    steps = np.diff(np.unique(x))
    return float(steps.min()) * 0.8 if len(steps) else 60 / 86400 * 0.8


def alert_spans(alerts, metric=None, end=None):
    """[(key, start, end)] in date numbers: from each RAISED alert to the
    window that RECOVERED it (or ``end`` while it stays raised).  Alerts are
    ``Alert`` rows: key, metric, state, window_start, window_end."""
    if alerts is None or alerts.empty:
        return []
    need(alerts, 'alerts', 'key', 'metric', 'state', 'window_start')
    rows = alerts if metric is None else alerts[alerts['metric'] == metric]
    spans = []
    for (key, _), group in rows.sort_values('window_start').groupby(
            ['key', 'metric'], sort=True):
        opened = None
        for state, when in zip(group['state'], times(group['window_start'])):
            if state == 'RAISED' and opened is None:
                opened = when
            elif state == 'RECOVERED' and opened is not None:
                spans.append((key, opened, when))
                opened = None
        if opened is not None:
            spans.append((key, opened, end if end is not None
                          else opened + 60 / 86400))
    return spans


def shade(ax, spans, colors=None, label='alert raised'):
    """Shades spans on an axis, each in its key's colour."""
    for i, (key, start, stop) in enumerate(spans):
        color = (colors or {}).get(key, '#e6550d')
        ax.axvspan(start, stop, color=color, alpha=0.15, lw=0,
                   label=label if i == 0 else None)


def alert_rows(alerts):
    if alerts is None or alerts.empty:
        return []
    cols = [c for c in ('key', 'metric', 'state', 'value', 'threshold',
                        'window_start') if c in alerts.columns]
    ordered = alerts.sort_values([c for c in ('window_start', 'key')
                                  if c in alerts.columns])
    return cols, [tuple(fmt(v) for v in row)
                  for row in ordered[cols].itertuples(index=False)]


def fmt(value):
    if isinstance(value, float) and not np.isfinite(value):
        return ''
    if isinstance(value, float):
        return f'{value:.4g}'
    if hasattr(value, 'strftime'):
        return value.strftime('%Y-%m-%d %H:%M:%S')
    return value
