"""The video QoE job: start-up time p50/p95 and rebuffering ratio per
dimension over time with incidents shaded, and the distribution of session
metrics.  Column names follow the job's tables; a figure whose columns are
missing is skipped with a note."""
import numpy as np

from pipelines.report import page
from pipelines.report.data import MissingColumns, final, need, pick, times
from pipelines.report.sections import common

TITLE = 'video QoE: start-up time, rebuffering and sessions'
PANES = ('qoe_rollups', ('dimension', 'dimension_value', 'value'), 'plays')
MAX_SERIES = 8
SESSION_METRICS = (
    ('video_start_time_ms', 'video start time (ms)'),
    ('rebuffering_ratio', 'rebuffering ratio'),
    ('avg_bitrate_kbps', 'average bitrate (kbps)'),
    ('playing_ms', 'playing time (ms)'),
    ('rebuffer_count', 'rebuffer events'),
    ('bitrate_switches', 'bitrate switches'),
)


def build(section, out):
    section.attempt('start-up time and rebuffering per dimension', rollups,
                    out)
    section.attempt('distribution of session metrics', sessions, out)
    section.attempt('alerts', alerts_table, out)


def dimension_keys(frame, table='qoe_rollups'):
    """One label per row: ``dimension=value`` where the table has both."""
    dim = pick(frame, table, 'dimension', 'dimension_name', 'dim')
    value = next((c for c in ('dimension_value', 'value', 'key')
                  if c in frame.columns), None)
    if value is None:
        return frame[dim].astype(str)
    return frame[dim].astype(str) + '=' + frame[value].astype(str)


def rollups(section, out):
    frame = out.table('qoe_rollups')
    if frame.empty:
        section.note('No qoe_rollups rows.')
        return
    p50 = pick(frame, 'qoe_rollups', 'video_start_time_p50_ms',
               'vst_p50_ms', 'startup_p50_ms', 'video_start_time_ms_p50')
    p95 = pick(frame, 'qoe_rollups', 'video_start_time_p95_ms',
               'vst_p95_ms', 'startup_p95_ms', 'video_start_time_ms_p95')
    ratio = pick(frame, 'qoe_rollups', 'rebuffering_ratio',
                 'rebuffer_ratio')
    need(frame, 'qoe_rollups', 'window_start')
    frame = frame.assign(_series=dimension_keys(frame))
    last = final(frame, ['_series']).sort_values('window_start')
    weight = pick(last, 'qoe_rollups', 'plays', 'active_sessions',
                  'count') if len(last) else None
    series = list(last.groupby('_series')[weight].sum().nlargest(
        MAX_SERIES).index)
    alerts = out.table('alerts')
    end = times(last['window_end']).max() if 'window_end' in last else None
    fig, axes = page.figure(3, 1, height_in=7.0, sharex=True)
    colors = {}
    for name in series:
        rows = last[last['_series'] == name]
        x = times(rows['window_start'])
        line, = axes[0][0].plot(x, rows[p50], '-o', ms=3, lw=1.3,
                                label=name)
        colors[name] = line.get_color()
        axes[1][0].plot(x, rows[p95], '-', lw=1.3, color=line.get_color())
        axes[2][0].plot(x, rows[ratio], '-', lw=1.3, color=line.get_color())
    try:
        spans = common.alert_spans(alerts, None, end)
    except MissingColumns as e:
        section.note(f'incidents: not shaded: {e}', kind='skipped')
        spans = []
    for ax, label in zip(axes[:, 0], ('start-up p50 (ms)',
                                      'start-up p95 (ms)',
                                      'rebuffering ratio')):
        common.shade(ax, [s for s in spans if s[0] in colors] or spans,
                     colors, label='incident')
        ax.set_ylabel(label)
    page.legend(axes[0][0], loc='upper left', ncols=4)
    page.time_axis(axes[2][0])
    more = last['_series'].nunique() - len(series)
    section.figure(fig, f'Video start-up time p50/p95 and rebuffering ratio '
                        f'per dimension and window (final values; the '
                        f'{len(series)} with most plays'
                        f'{f", {more} more not drawn" if more > 0 else ""}); '
                        f'shaded: incidents from alert to recovery')


def sessions(section, out):
    frame = out.table('sessions')
    if frame.empty:
        section.note('No sessions rows.')
        return
    need(frame, 'sessions', 'session_id')
    last = final(frame, ['session_id']) if 'window_start' in frame else frame
    last = last.drop_duplicates('session_id', keep='last')
    present = [(c, label) for c, label in SESSION_METRICS
               if c in last.columns]
    missing = [c for c, _ in SESSION_METRICS if c not in last.columns]
    if missing:
        section.note(f'distribution of session metrics: not drawn for '
                     f'{", ".join(missing)}: table sessions has no such '
                     f'column', kind='skipped')
    if not present:
        return
    ncols = 3
    nrows = -(-len(present) // ncols)
    fig, axes = page.figure(nrows, ncols, height_in=2.3 * nrows)
    for ax, (column, label) in zip(axes.flat, present):
        values = last[column].dropna().to_numpy(dtype=float)
        values = values[np.isfinite(values)]
        ax.hist(values, bins=30, color='#3182bd')
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
