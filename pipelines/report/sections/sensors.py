"""The sensors job: each sensor's calibrated series (window mean with its
min-max band), the least-squares trend of each window, and anomaly
incidents.  Columns are those of the job's rows
(``transforms.sensors.records.SensorStats`` and ``Incident``); a figure whose
columns are missing is skipped with a note."""
from matplotlib import dates as mdates
from matplotlib.collections import LineCollection
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
import numpy as np

from pipelines.report import page
from pipelines.report.data import MissingColumns, final, need, times
from pipelines.report.sections import common

TITLE = 'sensors: calibrated series, trends and anomaly incidents'
PANES = ('stats', ('sensor_id', 'metric'), 'count')
MAX_SERIES = 12
# Incident.kind; severity is a number whose unit depends on the kind (peak
# |z|, readings, seconds), so incidents are coloured by kind.
KIND_COLORS = {'spike': '#d62728', 'stuck': '#bcbd22', 'silence': '#7f7f7f',
               'trend': '#ff7f0e'}


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
    ncols = min(3, len(names))
    nrows = -(-len(names) // ncols)
    fig, axes = page.figure(nrows, ncols, height_in=2.0 * nrows + 0.4,
                            sharex=True)
    incidents, kinds_drawn = 0, set()
    for ax, name in zip(axes.flat, names):
        rows = last[last['_series'] == name]
        start, end = times(rows['window_start']), times(rows['window_end'])
        mid = start + (end - start) / 2
        low, high = (rows[k].to_numpy(dtype=float) for k in ('min', 'max'))
        ax.fill_between(mid, low, high, color='#9ecae1', alpha=0.5, lw=0)
        ax.plot(mid, rows['mean'].to_numpy(dtype=float), 'o', color='#3182bd',
                ms=2)
        if has_trend:
            _trend(ax, start, end, rows['intercept'].to_numpy(dtype=float),
                   rows['slope'].to_numpy(dtype=float), low, high)
        if not anomalies.empty:
            mine = anomalies[anomalies['_series'] == name]
            kinds = mine['kind'].astype(str).tolist() if 'kind' in mine \
                else ['incident'] * len(mine)
            for kind, a, b in zip(kinds, times(mine['start']),
                                  times(mine['end'])):
                ax.axvspan(a, max(b, a + 1 / 86400), alpha=0.3, lw=0,
                           color=KIND_COLORS.get(kind, '#e6550d'))
                kinds_drawn.add(kind)
            incidents += len(mine)
        ax.set_title(name, fontsize=9)
        ax.xaxis.set_major_locator(mdates.AutoDateLocator(minticks=3, maxticks=6))
        page.time_axis(ax, label=None)
    for ax in list(axes.flat)[len(names):]:
        ax.set_visible(False)
    handles = [Patch(color='#9ecae1', alpha=0.5, label='min-max'),
               Line2D([], [], ls='', marker='o', ms=3, color='#3182bd',
                      label='window mean')]
    if has_trend:
        handles.append(Line2D([], [], color='#31a354',
                              label='trend per window'))
    handles += [Patch(color=KIND_COLORS.get(k, '#e6550d'), alpha=0.3,
                      label=f'incident: {k}') for k in sorted(kinds_drawn)]
    fig.legend(handles=handles, loc='outside upper center',
               ncols=len(handles), fontsize=8, frameon=False)
    uncalibrated = ''
    if {'uncalibrated_count', 'count'} <= set(last.columns):
        raw, total = int(last['uncalibrated_count'].sum()), \
            int(last['count'].sum())
        if raw:
            uncalibrated = (f'; {raw:,} of {total:,} readings had no '
                            f'calibration row and are drawn as read')
    section.figure(fig, f'Series per sensor and metric: window mean, '
                        f'min-max band, least-squares trend per window '
                        f'(drawn where it stays inside the band), '
                        f'{incidents} anomaly incidents shaded by kind'
                        f'{uncalibrated}')


def _trend(ax, start, end, intercept, slope, low, high):
    """Each window's trend (``slope`` per second of event time, the value
    ``intercept`` at window_start), drawn only where it stays between the
    window's min and max: a window with few readings (the last, often)
    would otherwise extrapolate far beyond them."""
    seconds = (end - start) * 86400.0
    segments = []
    for t0, span, a, b, lo, hi in zip(start, seconds, intercept, slope, low,
                                      high):
        if not np.isfinite([a, b, lo, hi]).all():
            continue
        if b == 0:
            first, last = (0.0, span) if lo <= a <= hi else (1.0, 0.0)
        else:
            t1, t2 = sorted(((lo - a) / b, (hi - a) / b))
            first, last = max(0.0, t1), min(span, t2)
        if last > first:
            segments.append([(t0 + first / 86400.0, a + b * first),
                             (t0 + last / 86400.0, a + b * last)])
    ax.add_collection(LineCollection(segments, colors='#31a354', lw=1.4))


def anomalies_table(section, out):
    anomalies = out.table('anomalies')
    if anomalies.empty:
        section.note('No anomaly incidents.')
        return
    cols = [c for c in ('sensor_id', 'metric', 'kind', 'start', 'end',
                        'peak_value', 'severity', 'reading_count', 'state')
            if c in anomalies.columns]
    rows = anomalies.sort_values([c for c in ('start', 'sensor_id')
                                  if c in cols] or cols[:1])
    section.table(cols, [tuple(common.fmt(v) for v in row)
                         for row in rows[cols].itertuples(index=False)],
                  caption=f'anomaly incidents ({len(rows)})')
