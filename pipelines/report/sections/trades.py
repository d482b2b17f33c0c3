"""The trades job: candlesticks with volume and VWAP per symbol, price
anomalies and trading gaps marked."""
import numpy as np

from pipelines.report import page
from pipelines.report.data import final, need, times
from pipelines.report.sections import common

TITLE = 'trades: bars, VWAP and anomalies per symbol'
PANES = ('bars', ('symbol',), 'volume')
MAX_SYMBOLS = 12
UP, DOWN = '#31a354', '#de2d26'


def build(section, out):
    bars = out.table('bars')
    if bars.empty:
        section.note('No bars rows.')
        return
    section.attempt('candlesticks per symbol', candlesticks, out)
    section.attempt('anomalies', anomalies_table, out)


def candlesticks(section, out):
    bars = out.table('bars')
    need(bars, 'bars', 'symbol', 'window_start', 'window_end', 'pane_index',
         'open', 'high', 'low', 'close', 'volume', 'vwap')
    last = final(bars, ['symbol']).sort_values('window_start')
    anomalies = out.table('anomalies')
    if not anomalies.empty:
        need(anomalies, 'anomalies', 'symbol', 'kind', 'event_time', 'price',
             'window_start', 'window_end')
    symbols = sorted(last['symbol'].unique())
    if len(symbols) > MAX_SYMBOLS:
        section.note(f'{len(symbols)} symbols; the {MAX_SYMBOLS} with the '
                     f'most volume are drawn.')
        symbols = sorted(last.groupby('symbol')['volume'].sum().nlargest(
            MAX_SYMBOLS).index)
    for symbol in symbols:
        rows = last[last['symbol'] == symbol]
        mine = anomalies[anomalies['symbol'] == symbol] \
            if not anomalies.empty else anomalies
        _candles(section, symbol, rows, mine)


def _candles(section, symbol, rows, anomalies):
    start, end = times(rows['window_start']), times(rows['window_end'])
    width = float(np.min(end - start)) * 0.7
    centre = start + (end - start) / 2
    fig, axes = page.figure(2, 1, height_in=3.6, sharex=True,
                            gridspec_kw={'height_ratios': (3, 1)})
    ax, vol = axes[0][0], axes[1][0]
    priced = rows['open'].notna().to_numpy()
    o, h, l, c = (rows[k].to_numpy(dtype=float)
                  for k in ('open', 'high', 'low', 'close'))
    color = np.where(c >= o, UP, DOWN)
    ax.vlines(centre[priced], l[priced], h[priced], color=color[priced],
              lw=1)
    ax.bar(centre[priced], np.maximum(np.abs(c - o), 1e-9)[priced],
           bottom=np.minimum(o, c)[priced], width=width,
           color=color[priced], label='open/close (high-low)')
    # The VWAP line breaks where windows are missing (a gap has no bar).
    vwap = rows['vwap'].to_numpy(dtype=float)
    breaks = np.flatnonzero(start[1:] > end[:-1] + 1e-9) + 1
    ax.plot(np.insert(centre, breaks, np.nan), np.insert(vwap, breaks, np.nan),
            '-', color='#3182bd', lw=1.2, label='VWAP')
    # The price axis spans the bodies and the VWAP: an anomalous print far
    # away would flatten every candle, so its wick is cut at the edge and
    # its mark drawn there.
    body = np.concatenate([o[priced], c[priced],
                           rows['vwap'].to_numpy(dtype=float)])
    body = body[np.isfinite(body)]
    low_y, high_y = (body.min(), body.max()) if len(body) else (0.0, 1.0)
    pad = max((high_y - low_y) * 0.25, abs(high_y) * 0.002, 1e-6)
    low_y, high_y = low_y - pad, high_y + pad
    ax.set_ylim(low_y, high_y)
    flagged = gaps = 0
    if not anomalies.empty:
        price = anomalies[anomalies['kind'] == 'price']
        if not price.empty:
            y = np.clip(price['price'].to_numpy(dtype=float), low_y, high_y)
            ax.plot(times(price['event_time']), y, 'x', color='#b00', ms=7,
                    mew=2, clip_on=False, label='price anomaly')
            flagged = len(price)
        gap = anomalies[anomalies['kind'] == 'gap']
        for i, (a, b) in enumerate(zip(times(gap['window_start']),
                                       times(gap['window_end']))):
            ax.axvspan(a, b, color='#999', alpha=0.25, lw=0,
                       label='trading gap' if i == 0 else None)
            vol.axvspan(a, b, color='#999', alpha=0.25, lw=0)
        gaps = len(gap)
    ax.set_ylabel('price')
    ax.set_title(symbol)
    page.legend(ax, loc='upper left', ncols=4)
    vol.bar(centre, rows['volume'].to_numpy(dtype=float), width=width,
            color='#9ecae1')
    vol.set_ylabel('volume')
    page.time_axis(vol)
    section.figure(fig, f'{symbol}: bars per window (final values), VWAP, '
                        f'{flagged} price anomalies (x; beyond the axis: at '
                        f'its edge), {gaps} gaps (grey)')


def anomalies_table(section, out):
    anomalies = out.table('anomalies')
    if anomalies.empty:
        section.note('No anomalies.')
        return
    cols = [c for c in ('symbol', 'kind', 'event_time', 'price', 'reference',
                        'deviation', 'window_start', 'window_end')
            if c in anomalies.columns]
    rows = anomalies.sort_values(cols[:3])
    section.table(cols, [tuple(common.fmt(v) for v in row)
                         for row in rows[cols].itertuples(index=False)],
                  caption=f'anomalies ({len(rows)})')
