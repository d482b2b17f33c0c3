"""The decoders fuzzed: one entry each.

An entry names the decoder, the decoder itself (``str -> record``, raising
``DecodeError``), the record type it makes, the stage of its dead letters,
the lines to feed it (a strategy of :mod:`fuzz.strategies`; a new format
can start with ``strategies.from_samples([...])``) and, if it has one, the
columnar reader to hold to it (``decoder -> block decoder`` with
``decode(data)`` and ``decode_each(lines)``).  Adding a decoder is adding a
line here.
"""
import functools
import typing

from fuzz import strategies
from transforms.logs import columnar as logs_columnar
from transforms.logs import decoders as logs
from transforms.logs.records import LogRecord
from transforms.market import columnar as market_columnar
from transforms.market import decoders as market
from transforms.market.records import Trade
from transforms.sensors import columnar as sensors_columnar
from transforms.sensors import decoders as sensors
from transforms.sensors.records import Reading
from transforms.video import cmcd_columnar
from transforms.video import decoders as video
from transforms.video.records import VideoReport


class Target(typing.NamedTuple):
    name: str
    decoder: typing.Callable
    record_type: type
    stage: str
    lines: typing.Any                       # hypothesis strategy of bytes
    columnar: typing.Optional[typing.Callable] = None


def _trades_block(decoder):
    return market_columnar.BlockDecoder(decoder, 'decode.trades', ('T', 'Z'))


def _sensors_block(decoder):
    return sensors_columnar.BlockDecoder(decoder, 'decode.sensors')
def _video_block(decoder):
    return cmcd_columnar.BlockDecoder(decoder, 'decode.video')


def _logs_block(decoder):
    return logs_columnar.BlockDecoder(decoder, 'decode.logs')


def _logs_auto_block(decoder):
    """The auto format's reader: access-log and syslog lines read at once."""
    return logs_columnar.BlockDecoder(decoder, 'decode.logs', text_fast=True)


TARGETS = [
    Target('logs.auto', logs.make_decoder('auto', 'web', 2026), LogRecord,
           'decode.logs', strategies.log_lines(), _logs_auto_block),
    Target('logs.json', logs.make_decoder('json'), LogRecord, 'decode.logs',
           strategies.mutated(strategies.json_log_lines()), _logs_block),
    Target('logs.combined', logs.make_decoder('combined', 'web'), LogRecord,
           'decode.logs', strategies.mutated(strategies.access_log_lines())),
    Target('logs.syslog', logs.make_decoder('syslog', 'web', 2026), LogRecord,
           'decode.logs', strategies.mutated(strategies.syslog_lines())),
    Target('trades.auto', market.make_decoder('auto'), Trade, 'decode.trades',
           strategies.trade_lines(), _trades_block),
    Target('trades.json', market.make_decoder('json'), Trade, 'decode.trades',
           strategies.trade_lines(), _trades_block),
    Target('trades.csv', market.make_decoder('csv'), Trade, 'decode.trades',
           strategies.mutated(strategies.csv_trade_lines())),
    Target('trades.csv_columns', functools.partial(
        market.decode_csv_trade, columns=('symbol', 'price', 'size',
                                          'event_time')), Trade,
           'decode.trades', strategies.from_samples([
               'ACME,101.5,10,2026-01-01T00:00:01Z',
               'brk.b, 3e2 ,1,1767225600000'])),
    Target('sensors.auto', sensors.make_decoder('auto'), Reading,
           'decode.sensors', strategies.reading_lines(), _sensors_block),
    Target('sensors.json', sensors.make_decoder('json'), Reading,
           'decode.sensors', strategies.json_reading_lines(), _sensors_block),
    Target('sensors.csv', sensors.make_decoder('csv'), Reading,
           'decode.sensors', strategies.mutated(
               strategies.csv_reading_lines())),
    Target('video.auto', video.make_decoder('auto'), VideoReport,
           'decode.video', strategies.cmcd_lines(), _video_block),
    Target('video.json', video.make_decoder('json'), VideoReport,
           'decode.video', strategies.cmcd_lines(), _video_block),
    Target('video.report', video.make_decoder('report'), VideoReport,
           'decode.video', strategies.cmcd_lines()),
    Target('video.access_log', video.make_decoder('access_log'), VideoReport,
           'decode.video', strategies.cmcd_lines()),
]

BY_NAME = {target.name: target for target in TARGETS}
