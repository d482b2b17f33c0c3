"""OHLCV bars, VWAP and anomaly flags over trade streams.

Reads trades (JSON lines or CSV with a header row: event_time, symbol, price,
size, trade_id, venue, conditions) and computes per symbol and event-time
window a bar: open and close (first and last eligible trade by event time,
ties by trade_id), high, low, volume, VWAP and the trade count.  A trade
repeated with the same trade_id counts once; trades whose conditions are not
eligible for the last price update volume only.  A late trade within the
allowed lateness corrects its bar in a LATE pane (the highest pane_index is
the final bar); a later one is dropped and counted.  Anomalies: prices more
than k robust standard deviations from their window's VWAP, and symbols that
stop trading for longer than --max_gap while the market goes on.

Output tables: bars, anomalies, dead_letter.
"""
import operator

import apache_beam as beam
from apache_beam.transforms import window as beam_window

from pipelines.options import (JobOptions, duration, non_negative_int,
                               positive_float, window_spec)
from transforms import columnar, deadletter, io, privacy, windows
from transforms.aggregate import AggregatePerKey, per_window_late_from
from transforms.deadletter import DeadLetter
from transforms.decode import Decode, PayloadEventTime, records_and_keyed
from transforms.market import decoders
from transforms.market.anomalies import (Anomaly, FlagPrices, GapDetector,
                                         PriceAnomalies)
from transforms.market.columnar import PRICES, BlockDecoder, TradePartials
from transforms.market.columnar import event_times as trade_event_times
from transforms.market.bars import Bar, BarsFn, bar_count, to_bar

JOB = 'trades'


class TradesOptions(JobOptions):
    JOB = JOB
    DEFAULT_SOURCE = 'synthetic://trades?events=20000&seed=42'
    DEFAULT_SINK = 'parquet://output/trades'
    DEFAULT_WINDOW = 'fixed:60s'
    DEFAULT_TRIGGER = 'early=10s,late=1,lateness=2m,accumulating'
    ALERT_TABLE = 'anomalies'

    @classmethod
    def _add_argparse_args(cls, parser):
        super()._add_argparse_args(parser)
        group = parser.add_argument_group('trades')
        group.add_argument(
            '--trade_format', default='auto', choices=decoders.FORMATS,
            help='line format; auto: { JSON, else CSV (default: %(default)s)')
        group.add_argument(
            '--ineligible_conditions', default='T,Z',
            help='comma-separated condition codes of trades that update '
                 'volume and VWAP but not open/high/low/close '
                 '(default: %(default)s)')
        group.add_argument(
            '--execution', default='columnar', choices=('columnar', 'element'),
            help='"columnar" decodes blocks of lines with Arrow and '
                 'pre-aggregates bars and price samples per symbol and window '
                 'before the shuffle (same results); "element" handles one '
                 'trade at a time (the reference). Session windows, '
                 'late=N>1 and sliding windows on a local stream from '
                 'kafka:// or pubsub:// (a restart resumes it: each trade '
                 'carries its origin to the bars) always run "element" '
                 '(default: %(default)s)')
        group.add_argument(
            '--anomaly_window', default='fixed:5m', type=window_spec,
            help='window of trades a price is judged against: fixed or '
                 'sliding (default: %(default)s)')
        group.add_argument(
            '--anomaly_k', default=10.0, type=positive_float,
            help='flag a trade whose price is more than k robust standard '
                 'deviations (1.4826 x MAD) from its window\'s VWAP '
                 '(default: %(default)s)')
        group.add_argument(
            '--anomaly_min_trades', default=20, type=non_negative_int,
            help='windows with fewer trades are not judged '
                 '(default: %(default)s)')
        group.add_argument(
            '--max_gap', default='2m', type=duration,
            help='report a symbol that stops trading for longer than this '
                 'while others trade (default: %(default)s)')


OPTIONS = TradesOptions

TABLES = {
    'bars': Bar,
    'anomalies': Anomaly,
    'dead_letter': DeadLetter,
}

# Rows made by a grouping whose allowed lateness is not the job's
# (--trigger's lateness=): table -> (field, {value: lateness in seconds}).
# Price anomalies are judged once per symbol and anomaly window by a
# grouping that keeps no late trade (PriceAnomalies, FlagPrices); gaps come
# from bars, which have the job's lateness.  A restart rolls a row back
# only where its window was not final at the commit's horizon for the
# grouping that made it (docs/reliability.md), and file sinks keep the
# kinds in separate files.
ROW_LATENESS = {'anomalies': ('kind', {'price': 0.0})}
# The same per window option: a trade's anomaly window is final once its end
# is passed (the commit rule and a restart's skip judge each of a trade's
# windows by its own grouping's lateness, as the roll-back judges its rows).
WINDOW_LATENESS = {'anomaly_window': 0.0}


def build(pipeline, args, context):
    """Wire the trades job: read -> decode -> window -> bars / anomalies ->
    write.  Returns the output PCollections by table name."""
    window = windows.parse_window(args.window)
    trigger = windows.parse_trigger(args.trigger).for_mode(context.streaming)
    anomaly_window = windows.parse_window(args.anomaly_window)
    if anomaly_window.kind == 'session':
        raise ValueError('argument --anomaly_window: fixed or sliding only')
    ineligible = [c.strip() for c in args.ineligible_conditions.split(',')
                  if c.strip()]
    decoder = decoders.make_decoder(args.trade_format)
    json_fast = args.trade_format in ('auto', 'json')
    # From a source a restart resumes, where late trades are kept: a trade
    # is in a bar window and in a longer price-anomaly window, so its bar
    # may be final (kept by a restart's roll-back) while the anomaly window
    # still takes it, and a restart reads it again.  The read is told when
    # it may first be late (context.late_from: its bar's close): it
    # registers a trade that may be late for its bar as its late letter's
    # origin, and a restart registers a trade read again with the horizon
    # it resumes, so that it is kept out of bars final then
    # (docs/reliability.md).  With fixed bar windows the columnar partials
    # do that (each line's origin taken where the partials are built,
    # keep_out); with sliding bar windows a trade is in several bars and
    # may be late for some only: its late letters name their window and
    # symbol, and each trade travels one by one with its origin to the
    # bars grouping, which keeps it out.
    late_from = per_window_late_from(context, args.source, window, trigger,
                                     also=(anomaly_window,))
    resumed = late_from is not None
    per_window = resumed and window.kind == 'sliding'
    # The source's watermark follows the event times this decoder reads
    # (a block's JSON lines read at once, as the fast path reads them).
    source = io.open_source(args.source, context._replace(
        event_time=PayloadEventTime(
            decoder, args.max_record_bytes,
            trade_event_times(args.max_record_bytes) if json_fast
            else None),
        late_from=late_from))
    sink = io.open_sink(args.sink, context)
    dead_sink = io.open_sink(args.dead_letter or args.sink, context)

    bounded = False
    carried = False
    if args.execution == 'columnar' and not per_window and \
            columnar.keeps_semantics(trigger, window, anomaly_window):
        # Blocks of lines -> partial bars per (symbol, window) and price
        # samples per (symbol, anomaly window); in a batch run the window
        # travels in the key (one pane per window).
        bounded = not context.streaming
        # Where late trades are kept, each partial bar travels with the
        # lines of its trades, which a late one's dead letters then hold.
        carried = context.keeps_late
        blocks = source.blocks() if bounded else source.stream_blocks()
        decoded = (pipeline
                   | 'Read' >> (blocks or source)
                   | 'DecodePartials' >> beam.ParDo(columnar.PartialsFn(
                       BlockDecoder(decoder, 'decode.trades', ineligible,
                                    args.source, args.max_record_bytes,
                                    json_fast=json_fast),
                       TradePartials(window, anomaly_window), JOB,
                       window_in_key=bounded, carry_raw=carried,
                       keep_out=(trigger.lateness or 0.0) if resumed
                       else None))
                   .with_outputs(deadletter.DEAD, PRICES, main=deadletter.OK))
        keyed = decoded.ok if bounded else \
            decoded.ok | 'Window' >> windows.ApplyKeptWindows(trigger)
        samples = decoded[PRICES] if bounded else \
            decoded[PRICES] | 'AnomalyWindow' >> beam.WindowInto(
                windows.KeepWindows())
        price = samples | 'PriceAnomalies' >> FlagPrices(
            args.anomaly_k, args.anomaly_min_trades, JOB,
            window_in_key=bounded)
    else:
        # Where late trades are kept, each travels with the payload it was
        # read from, which its late dead letter then holds.
        carried = context.keeps_late
        decoded = (pipeline
                   | 'Read' >> source
                   | 'Decode' >> Decode(
                       decoder, stage='decode.trades', job=JOB,
                       source=args.source, max_bytes=args.max_record_bytes,
                       with_raw=carried))
        ok = decoded.ok
        if resumed:
            ok = ok | 'Origins' >> beam.ParDo(deadletter.BindOrigins())
        trades, keyed = records_and_keyed(
            ok, operator.attrgetter('symbol'), carried, 'KeyBySymbol',
            'Trades')
        keyed = keyed | 'Window' >> windows.ApplyWindow(window, trigger)
        price = trades | 'PriceAnomalies' >> PriceAnomalies(
            anomaly_window, args.anomaly_k, args.anomaly_min_trades, JOB)
    aggregate = AggregatePerKey(
        BarsFn(ineligible, pack_merged=bounded), to_bar, bar_count,
        trigger.accumulates_panes,
        JOB, window_in_key=bounded,
        keep_late=trigger.lateness if context.keeps_late else None,
        carries_raw=carried, source=args.source,
        late_output='bars' if per_window else None,
        late_per_window=per_window)
    bars = keyed | 'Bars' >> aggregate.with_output_types(Bar)
    dead = decoded.dead if aggregate.late is None else (
        (decoded.dead, aggregate.late) | 'DeadAndLate' >> beam.Flatten())
    gaps = bars | 'Gaps' >> GapDetector(
        windows.parse_duration(args.max_gap), JOB)
    # One table: both kinds in the global window (each row names its window).
    anomalies = ((price | 'PriceGlobal' >> beam.WindowInto(
        beam_window.GlobalWindows()), gaps) | 'Anomalies' >> beam.Flatten())

    bars | 'WriteBars' >> sink.write('bars', TABLES['bars'])
    anomalies | 'WriteAnomalies' >> sink.write('anomalies', TABLES['anomalies'])
    if args.alerts:
        anomalies | 'PublishAnomalies' >> io.open_sink(
            args.alerts, context, counter='rows_published').write(
                'anomalies', TABLES['anomalies'])
    # A refused line may hold anything, personal data included: its raw
    # payload is masked (IP and e-mail addresses, bearer tokens) as the logs
    # job masks its own.
    dead = dead | 'MaskDeadLetters' >> privacy.MaskFields(
        privacy.Masker(mode='mask'), ('raw',))
    dead | 'WriteDeadLetters' >> dead_sink.write(
        'dead_letter', TABLES['dead_letter'])
    return {'bars': bars, 'anomalies': anomalies, 'dead_letter': dead}
