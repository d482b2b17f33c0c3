"""The video QoE job: start-up time p50/p95 and rebuffering ratio per
dimension over time with incidents shaded, and the distribution of session
metrics.  Columns are those of the job's rows (``transforms.video.rollups.
Rollup``, ``transforms.video.sessions.Session``, ``transforms.detectors.
Alert``); a figure whose columns are missing is skipped with a note."""
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
import numpy as np

from pipelines.report import page
from pipelines.report.data import MissingColumns, final, need, times
from pipelines.report.sections import common

TITLE = 'video QoE: start-up time, rebuffering and sessions'
# Every report is counted once per dimension (all, content, cdn,
# stream_type): the panes figure follows the ``all`` rows only.
PANES = ('qoe_rollups', ('dimension', 'value'), 'plays',
         {'dimension': 'all'})
MAX_SERIES = 8
# Which alert metric shades which axis of the rollups figure.
P95, RATIO = 'video_start_time_p95_ms', 'rebuffering_ratio'
# (Session column, axis label, scale to the label's unit, counts: one bar
# per integer).
SESSION_METRICS = (
    ('video_start_time_ms', 'video start time (ms)', 1, False),
    ('rebuffering_ratio', 'rebuffering ratio', 1, False),
    ('avg_bitrate_kbps', 'average bitrate (kbps)', 1, False),
    ('playing_ms', 'playing time (s)', 1e-3, False),
    ('rebuffer_count', 'rebuffer events', 1, True),
    ('bitrate_switches', 'bitrate switches', 1, True),
)


def build(section, out):
    section.attempt('start-up time and rebuffering per dimension', rollups,
                    out)
    section.attempt('distribution of session metrics', sessions, out)
    section.attempt('alerts', alerts_table, out)


def dimension_keys(frame):
    """One label per row, as the job keys its alerts
    (``transforms.video.rollups.rollup_key``): ``all``, or
    ``dimension=value``."""
    dim, value = frame['dimension'].astype(str), frame['value'].astype(str)
    return dim.where(dim == 'all', dim + '=' + value)


def rollups(section, out):
    frame = out.table('qoe_rollups')
    if frame.empty:
        section.note('No qoe_rollups rows.')
        return
    p50 = 'video_start_time_p50_ms'
    need(frame, 'qoe_rollups', 'dimension', 'value', 'window_start',
         'window_end', 'pane_index', 'plays', p50, P95, RATIO)
    frame = frame.assign(_series=dimension_keys(frame))
    last = final(frame, ['_series']).sort_values('window_start')
    # ``all`` first, then the dimensions with the most plays.
    plays = last.groupby('_series')['plays'].sum()
    series = sorted(plays.index, key=lambda k: (k != 'all', -plays[k], k))
    series = series[:MAX_SERIES]
    alerts = out.table('alerts')
    end = times(last['window_end']).max()
    fig, axes = page.figure(3, 1, height_in=7.0, sharex=True)
    colors = {}
    for name in series:
        rows = last[last['_series'] == name]
        x = times(rows['window_start'])
        style = dict(lw=2.2, color='#222', zorder=3) if name == 'all' else \
            dict(lw=1.1, alpha=0.85)
        line, = axes[0][0].plot(x, rows[p50], '-', label=name, **style)
        colors[name] = line.get_color()
        style['color'] = line.get_color()
        axes[1][0].plot(x, rows[P95], '-', **style)
        axes[2][0].plot(x, rows[RATIO], '-', **style)
    shaded = 0
    for ax, metric, label in ((axes[0][0], None, 'start-up p50 (ms)'),
                              (axes[1][0], P95, 'start-up p95 (ms)'),
                              (axes[2][0], RATIO, 'rebuffering ratio')):
        if metric is not None:
            try:
                spans = common.alert_spans(alerts, metric, end)
            except MissingColumns as e:
                section.note(f'incidents: not shaded: {e}', kind='skipped')
                spans = []
            drawn = [s for s in spans if s[0] in colors]
            common.shade(ax, drawn, colors, label='incident')
            shaded += len(drawn)
            _thresholds(ax, alerts, metric)
        ax.set_ylabel(label)
    handles, _ = axes[0][0].get_legend_handles_labels()
    handles += [Patch(color='#999', alpha=0.3,
                      label='incident (in its dimension\'s colour)'),
                Line2D([], [], ls='--', lw=1, color='#b00',
                       label='alert threshold')]
    fig.legend(handles=handles, loc='outside upper center', ncols=5,
               fontsize=8, frameon=False)
    page.time_axis(axes[2][0])
    more = last['_series'].nunique() - len(series)
    section.figure(fig, f'Video start-up time p50/p95 and rebuffering ratio '
                        f'per dimension and window (final values; the '
                        f'{len(series)} with most plays'
                        f'{f", {more} more not drawn" if more > 0 else ""}); '
                        f'shaded: {shaded} incidents from alert to recovery '
                        f'of a drawn dimension, in its colour; dashed: the '
                        f'alert threshold')


def _thresholds(ax, alerts, metric):
    """The threshold a RAISED alert of ``metric`` crossed, as a line."""
    if alerts.empty or 'threshold' not in alerts.columns:
        return
    raised = alerts[(alerts['metric'] == metric)
                    & (alerts['state'] == 'RAISED')]
    if not raised.empty:
        ax.axhline(float(raised['threshold'].iloc[0]), ls='--', lw=1,
                   color='#b00', label='threshold')


def sessions(section, out):
    frame = out.table('sessions')
    if frame.empty:
        section.note('No sessions rows.')
        return
    need(frame, 'sessions', 'session_id')
    last = final(frame, ['session_id']) if 'window_start' in frame else frame
    last = last.drop_duplicates('session_id', keep='last')
    present = [m for m in SESSION_METRICS if m[0] in last.columns]
    missing = [m[0] for m in SESSION_METRICS if m[0] not in last.columns]
    if missing:
        section.note(f'distribution of session metrics: not drawn for '
                     f'{", ".join(missing)}: table sessions has no such '
                     f'column', kind='skipped')
    if not present:
        return
    ncols = 3
    nrows = -(-len(present) // ncols)
    fig, axes = page.figure(nrows, ncols, height_in=2.3 * nrows)
    for ax, (column, label, scale, counts) in zip(axes.flat, present):
        values = last[column].dropna().to_numpy(dtype=float) * scale
        values = values[np.isfinite(values)]
        bins = np.arange(values.max() + 2) - 0.5 if counts and len(values) \
            and values.max() < 100 else 30
        ax.hist(values, bins=bins, color='#3182bd')
        ax.set_xlabel(label)
        ax.set_ylabel('sessions')
        if len(values):
            ax.axvline(np.median(values), color='#b00', lw=1, ls='--')
    for ax in list(axes.flat)[len(present):]:
        ax.set_visible(False)
    failed = int(last['failed'].sum()) if 'failed' in last else None
    section.figure(fig, f'Distribution of session metrics over '
                        f'{len(last)} sessions (final rows; dashed: median)'
                        + (f'; {failed} failed' if failed is not None
                           else ''))


def alerts_table(section, out):
    alerts = out.table('alerts')
    if alerts.empty:
        section.note('No alerts.')
        return
    cols, rows = common.alert_rows(alerts)
    section.table(cols, rows, caption=f'alerts ({len(rows)})')
