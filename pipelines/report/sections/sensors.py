"""The sensors job: each sensor's calibrated series (window mean with its
min-max band), the least-squares trend of each window, and anomaly
incidents.  Column names follow the job's tables; a figure whose columns are
missing is skipped with a note."""
import numpy as np

from pipelines.report import page
from pipelines.report.data import MissingColumns, final, need, times
from pipelines.report.sections import common

TITLE = 'sensors: calibrated series, trends and anomaly incidents'
PANES = ('stats', ('sensor_id', 'metric'), 'count')
MAX_SERIES = 12
SEVERITY_COLORS = {'critical': '#b00', 'high': '#e6550d', 'warning':
                   '#fdae6b', 'low': '#fdd0a2'}


def build(section, out):
    section.attempt('series per sensor', series, out)
    section.attempt('anomaly incidents', anomalies_table, out)


def _label(frame):
    if 'metric' in frame.columns:
        return frame['sensor_id'].astype(str) + ' ' + \
            frame['metric'].astype(str)
    return frame['sensor_id'].astype(str)


def series(section, out):
    stats = out.table('stats')
    if stats.empty:
        section.note('No stats rows.')
        return
    need(stats, 'stats', 'sensor_id', 'window_start', 'window_end', 'mean',
         'min', 'max')
    stats = stats.assign(_series=_label(stats))
    last = final(stats, ['_series']).sort_values('window_start')
    anomalies = out.table('anomalies')
    if not anomalies.empty:
        try:
            need(anomalies, 'anomalies', 'sensor_id', 'start', 'end')
            anomalies = anomalies.assign(_series=_label(anomalies))
        except MissingColumns as e:
            section.note(f'anomaly incidents on the series: not drawn: {e}',
                         kind='skipped')
            anomalies = anomalies.iloc[0:0]
    names = sorted(last['_series'].unique())
    if len(names) > MAX_SERIES:
        section.note(f'{len(names)} series; the first {MAX_SERIES} are '
                     f'drawn.')
        names = names[:MAX_SERIES]
    has_trend = 'slope' in last.columns and 'intercept' in last.columns
    if not has_trend:
        section.note('trend: not drawn: table stats has no column slope '
                     'and intercept', kind='skipped')
    ncols = 2 if len(names) > 1 else 1
    nrows = -(-len(names) // ncols)
    fig, axes = page.figure(nrows, ncols, height_in=2.4 * nrows,
                            sharex=True)
    incidents = 0
    for ax, name in zip(axes.flat, names):
        rows = last[last['_series'] == name]
        start, end = times(rows['window_start']), times(rows['window_end'])
        mid = start + (end - start) / 2
        ax.fill_between(mid, rows['min'].to_numpy(dtype=float),
                        rows['max'].to_numpy(dtype=float), color='#9ecae1',
                        alpha=0.5, lw=0, label='min-max')
        ax.plot(mid, rows['mean'].to_numpy(dtype=float), '-', color='#3182bd',
                lw=1.3, label='window mean')
        if has_trend:
            # slope is per second of event time, intercept at window_start.
            seconds = (end - start) * 86400.0
            a = rows['intercept'].to_numpy(dtype=float)
            b = a + rows['slope'].to_numpy(dtype=float) * seconds
            ax.plot(np.stack([start, end]), np.stack([a, b]), '-',
                    color='#31a354', lw=1.6)
            ax.plot([], [], '-', color='#31a354', label='trend per window')
        if not anomalies.empty:
            mine = anomalies[anomalies['_series'] == name]
            severity = mine['severity'].astype(str).str.lower() \
                if 'severity' in mine else None
            for i, (a, b) in enumerate(zip(times(mine['start']),
                                           times(mine['end']))):
                color = SEVERITY_COLORS.get(
                    severity.iloc[i], '#e6550d') if severity is not None \
                    else '#e6550d'
                ax.axvspan(a, max(b, a + 1 / 86400), color=color, alpha=0.3,
                           lw=0, label='incident' if i == 0 else None)
            incidents += len(mine)
        ax.set_title(name)
        page.legend(ax, loc='upper left', ncols=4)
        page.time_axis(ax, label=None)
    for ax in list(axes.flat)[len(names):]:
        ax.set_visible(False)
    section.figure(fig, f'Calibrated series per sensor: window mean, '
                        f'min-max band, least-squares trend per window, '
                        f'{incidents} anomaly incidents shaded')


def anomalies_table(section, out):
    anomalies = out.table('anomalies')
    if anomalies.empty:
        section.note('No anomaly incidents.')
        return
    cols = [c for c in ('sensor_id', 'metric', 'kind', 'start', 'end',
                        'peak_value', 'severity', 'reading_count')
            if c in anomalies.columns]
    rows = anomalies.sort_values([c for c in ('start', 'sensor_id')
                                  if c in cols] or cols[:1])
    section.table(cols, [tuple(common.fmt(v) for v in row)
                         for row in rows[cols].itertuples(index=False)],
                  caption=f'anomaly incidents ({len(rows)})')
