"""The page: sections of figures (matplotlib, inline PNG), tables and notes,
assembled into one self-contained HTML file (no script, font or image
fetched from anywhere)."""
import base64
import html
import io

import matplotlib
import matplotlib.dates as mdates
from matplotlib.figure import Figure

from pipelines.report.data import MissingColumns

DPI = 72
WIDTH_IN = 10.0
matplotlib.rcParams.update({
    'font.size': 9, 'axes.titlesize': 10, 'axes.grid': True,
    'grid.alpha': 0.3, 'legend.fontsize': 8, 'legend.frameon': False,
    'axes.spines.top': False, 'axes.spines.right': False,
    'date.autoformatter.minute': '%H:%M', 'date.autoformatter.second':
    '%H:%M:%S'})

TIMING_COLORS = {'EARLY': '#9ecae1', 'ON_TIME': '#3182bd', 'LATE': '#e6550d'}


def figure(nrows=1, ncols=1, height_in=3.0, width_in=WIDTH_IN, **kwargs):
    """A new figure and its axes (no pyplot: no global state, no display)."""
    fig = Figure(figsize=(width_in, height_in), dpi=DPI, layout='constrained')
    axes = fig.subplots(nrows, ncols, squeeze=False, **kwargs)
    return fig, axes


def time_axis(ax, label='window start (UTC)'):
    ax.xaxis_date()
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(
        ax.xaxis.get_major_locator()))
    if label:
        ax.set_xlabel(label)


def legend(ax, **kwargs):
    """A legend where the axis has labelled artists (no empty box)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kwargs)


def png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format='png', dpi=DPI, pil_kwargs={'optimize': True})
    return buf.getvalue()


def esc(value) -> str:
    return html.escape(str(value), quote=True)


class Section:
    """One part of the page: a heading, then figures, tables and notes in
    the order they were added."""

    def __init__(self, title, anchor, level=2):
        self.title = title
        self.anchor = anchor
        self.level = level
        self.parts = []
        self.figures = 0
        self.skipped = []

    def figure(self, fig, caption):
        data = base64.b64encode(png(fig)).decode('ascii')
        width = int(fig.get_figwidth() * DPI)
        self.parts.append(
            f'<figure><img class="plot" width="{width}" alt="{esc(caption)}" '
            f'src="data:image/png;base64,{data}">'
            f'<figcaption>{esc(caption)}</figcaption></figure>')
        self.figures += 1

    def table(self, headers, rows, caption=None, classes=''):
        head = ''.join(f'<th>{esc(h)}</th>' for h in headers)
        body = ''.join(
            '<tr>' + ''.join(f'<td>{esc(c)}</td>' for c in row) + '</tr>'
            for row in rows)
        cap = f'<caption>{esc(caption)}</caption>' if caption else ''
        self.parts.append(f'<table class="{classes}">{cap}<thead><tr>{head}'
                          f'</tr></thead><tbody>{body}</tbody></table>')

    def note(self, text, kind='note'):
        self.parts.append(f'<p class="{kind}">{esc(text)}</p>')

    def attempt(self, name, draw, *args):
        """Draws ``draw(self, *args)``; a table without the columns it needs
        skips that figure with a note instead of failing the report."""
        try:
            draw(self, *args)
        except MissingColumns as e:
            self.skipped.append(name)
            self.note(f'{name}: not drawn: {e}', kind='skipped')

    def html(self) -> str:
        h = f'h{self.level}'
        return (f'<section id="{esc(self.anchor)}"><{h}>{esc(self.title)}</{h}>'
                + ''.join(self.parts) + '</section>')


STYLE = '''
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;
color:#222;background:#fafafa}
header{background:#243447;color:#fff;padding:14px 24px}
header h1{margin:0;font-size:20px}header p{margin:4px 0 0;opacity:.8}
nav{padding:6px 24px;background:#e8edf2}nav a{margin-right:16px}
main{padding:8px 24px 40px;max-width:1100px}
section{margin:18px 0}h2{border-bottom:2px solid #243447;padding-bottom:2px}
figure{margin:10px 0}figcaption{color:#555;font-size:12px}
img.plot{max-width:100%;height:auto;background:#fff;border:1px solid #ddd}
table{border-collapse:collapse;margin:8px 0;font-size:13px;background:#fff}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;
vertical-align:top}th{background:#eef2f6}caption{text-align:left;
font-weight:600;padding:4px 0}td.num,th.num{text-align:right}
table.samples td{font-family:ui-monospace,monospace;font-size:12px;
white-space:pre-wrap;word-break:break-all;max-width:640px}
p.skipped{color:#8a4b00;background:#fff4e0;padding:4px 8px}
p.note{color:#555}.bad{color:#b00;font-weight:600}
'''


def document(title, subtitle, jobs) -> str:
    """``jobs``: [(job name, [Section, ...])] -> the HTML page."""
    nav = ''.join(f'<a href="#{esc(job)}">{esc(job)}</a>' for job, _ in jobs)
    body = ''.join(
        f'<article id="{esc(job)}">' + ''.join(s.html() for s in sections)
        + '</article>' for job, sections in jobs)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width">'
            f'<title>{esc(title)}</title><style>{STYLE}</style></head><body>'
            f'<header><h1>{esc(title)}</h1><p>{esc(subtitle)}</p></header>'
            f'<nav>{nav}</nav><main>{body}</main></body></html>\n')
