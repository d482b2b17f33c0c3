"""The typed records of the trades job."""
import typing

import apache_beam as beam
from apache_beam.utils.timestamp import Timestamp


class Trade(typing.NamedTuple):
    """One trade.  ``event_time`` comes from the payload, never the clock."""
    event_time: Timestamp
    symbol: str                        # upper case, never empty
    price: float                       # > 0, finite
    size: float                        # > 0, finite
    trade_id: typing.Optional[str]     # duplicates (same id, same symbol) count once
    venue: str                         # '' when absent
    conditions: str                    # condition codes joined by ',' ('' when none)


beam.coders.registry.register_coder(Trade, beam.coders.RowCoder)


def condition_codes(trade: Trade) -> frozenset:
    return frozenset(c for c in trade.conditions.split(',') if c)
