"""The logs job: error rate and p99 latency per service over time with alert
spans shaded, the top templates and new-template alerts when those tables
exist."""
from pipelines.report import page
from pipelines.report.data import final, need, pick, times
from pipelines.report.sections import common

TITLE = 'logs: error rates, latency and alerts per service'
# The table and metric the panes figure follows.
PANES = ('service_stats', ('service',), 'count')
TOP_TEMPLATES = 12


def build(section, out):
    section.attempt('error rate and p99 per service', service_series, out)
    section.attempt('alerts', alerts_table, out)
    if out.has('templates'):
        section.attempt('top templates', top_templates, out)
        section.attempt('template alerts', template_alerts, out)


def service_series(section, out):
    stats = out.table('service_stats')
    if stats.empty:
        section.note('No service_stats rows.')
        return
    need(stats, 'service_stats', 'service', 'window_start', 'pane_index',
         'error_rate', 'latency_p99_ms')
    last = final(stats, ['service']).sort_values('window_start')
    alerts = out.table('alerts')
    fig, axes = page.figure(2, 1, height_in=5.2, sharex=True)
    colors = {}
    end = times(last['window_end']).max() if 'window_end' in last else None
    for service, rows in last.groupby('service'):
        x = times(rows['window_start'])
        line, = axes[0][0].plot(x, rows['error_rate'], '-o', ms=3, lw=1.4,
                                label=service)
        colors[service] = line.get_color()
        axes[1][0].plot(x, rows['latency_p99_ms'], '-o', ms=3, lw=1.4,
                        color=line.get_color())
    for ax, metric, label in ((axes[0][0], 'error_rate', 'error rate'),
                              (axes[1][0], 'latency_p99_ms',
                               'latency p99 (ms)')):
        common.shade(ax, common.alert_spans(alerts, metric, end), colors)
        if not alerts.empty and 'threshold' in alerts.columns:
            raised = alerts[(alerts['metric'] == metric)
                            & (alerts['state'] == 'RAISED')]
            if not raised.empty:
                ax.axhline(raised['threshold'].iloc[0], ls='--', lw=1,
                           color='#b00', label='threshold')
        ax.set_ylabel(label)
    axes[1][0].set_yscale('log')
    page.legend(axes[0][0], loc='upper left', ncols=6)
    page.legend(axes[1][0], loc='upper left')
    page.time_axis(axes[1][0])
    section.figure(fig, 'Error rate and latency p99 per service and window '
                        '(final values); shaded: from an alert to its '
                        'recovery, in the service\'s colour')


def alerts_table(section, out):
    alerts = out.table('alerts')
    if alerts.empty:
        section.note('No alerts were raised.')
        return
    cols, rows = common.alert_rows(alerts)
    section.table(cols, rows, caption=f'alerts ({len(rows)})')


def top_templates(section, out):
    templates = out.table('templates')
    text = pick(templates, 'templates', 'template', 'text', 'template_text')
    need(templates, 'templates', 'count')
    keys = [c for c in ('template_id', text, 'service')
            if c in templates.columns]
    last = final(templates, keys) if 'window_start' in templates else \
        templates
    top = last.groupby(text)['count'].sum().nlargest(TOP_TEMPLATES)[::-1]
    fig, axes = page.figure(height_in=0.3 * len(top) + 0.8)
    ax = axes[0][0]
    ax.barh(range(len(top)), top.to_numpy(), color='#3182bd')
    ax.set_yticks(range(len(top)),
                  [t if len(t) <= 80 else t[:80] + '…' for t in top.index])
    ax.set_xlabel('records')
    ax.grid(axis='y', visible=False)
    section.figure(fig, f'Top {len(top)} log templates by records')


def template_alerts(section, out):
    alerts = out.table('alerts')
    found = alerts[alerts['metric'].astype(str).str.contains('template')] \
        if 'metric' in alerts.columns else alerts.iloc[0:0]
    for name in ('template_alerts', 'template_changes'):
        if out.has(name):
            found = out.table(name)
            break
    if found.empty:
        section.note('No template alerts.')
        return
    cols = list(found.columns)[:8]
    section.table(cols, [tuple(common.fmt(v) for v in row)
                         for row in found[cols].itertuples(index=False)],
                  caption=f'template alerts ({len(found)})')
