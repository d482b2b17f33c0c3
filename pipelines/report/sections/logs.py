"""The logs job: error rate and p99 latency per service over time with alert
spans shaded, the top templates and new-template alerts when those tables
exist."""
from pipelines.report import page
from pipelines.report.data import final, need, times
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


def template_totals(templates):
    """Records per template text over the run: the final pane of every
    service, template_id and window, summed; with the number of services
    that text was mined in.  Most records first."""
    need(templates, 'templates', 'service', 'template_id', 'template',
         'window_start', 'pane_index', 'count')
    last = final(templates, ['service', 'template_id'])
    return last.groupby('template').agg(
        count=('count', 'sum'), services=('service', 'nunique')).sort_values(
        ['count', 'services'], ascending=False, kind='stable')


def top_templates(section, out):
    """The templates with most records, one bar per template text (a text
    mined in several services is one bar)."""
    templates = out.table('templates')
    by_text = template_totals(templates)
    top = by_text.head(TOP_TEMPLATES)[::-1]
    fig, axes = page.figure(height_in=max(0.3 * len(top) + 0.8, 1.6))
    ax = axes[0][0]
    ax.barh(range(len(top)), top['count'].to_numpy(), color='#3182bd')
    ax.set_yticks(range(len(top)), [
        (t if len(t) <= 70 else t[:70] + '…')
        + (f'  ({n} services)' if n > 1 else '')
        for t, n in zip(top.index, top['services'])])
    ax.set_xlabel('records (final panes, summed over windows)')
    ax.grid(axis='y', visible=False)
    section.figure(fig, f'Top {len(top)} of {len(by_text)} log templates '
                        f'by records (mined per service: '
                        f'{templates["template_id"].nunique()} service '
                        f'templates)')


def template_alerts(section, out):
    """The ``template_alerts`` rows (``TemplateAlert``): new templates,
    templates that generalised, and template rate jumps and drops."""
    found = out.table('template_alerts')
    if found.empty:
        section.note('No template alerts.')
        return
    need(found, 'template_alerts', 'time', 'kind', 'service', 'template')
    cols = [c for c in ('time', 'kind', 'service', 'template', 'count',
                        'expected', 'previous_id') if c in found.columns]
    rows = found.sort_values(['time', 'service', 'template'])
    kinds = found['kind'].value_counts()
    section.table(cols, [tuple(common.fmt(v) for v in row)
                         for row in rows[cols].itertuples(index=False)],
                  caption=f'template alerts ({len(found)}: ' + ', '.join(
                      f'{n} {k}' for k, n in kinds.items()) + ')')
