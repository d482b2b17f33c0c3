"""The typed log record every log decoder produces."""
import typing

import apache_beam as beam
from apache_beam.utils.timestamp import Timestamp

# Levels are normalised to these names ('' when the format has none).
LEVELS = ('TRACE', 'DEBUG', 'INFO', 'WARN', 'ERROR', 'FATAL')
ERROR_LEVELS = frozenset(('ERROR', 'FATAL'))


class LogRecord(typing.NamedTuple):
    """One decoded log line.  ``event_time`` comes from the payload, never the clock."""
    event_time: Timestamp
    service: str                       # service / app name; never empty
    level: str                         # one of LEVELS, or '' if the format has none
    status: typing.Optional[int]       # HTTP status, if the line has one
    latency_ms: typing.Optional[float]  # request latency in milliseconds, if any
    host: str                          # host name or '' (client IPs are not hosts)
    message: str                       # free text (masked before anything is written)
    format: str                        # 'json', 'combined', 'syslog5424', 'syslog3164',
                                       # 'journal', a line_formats name, 'pattern',
                                       # 'docker/...' or 'cri/...' (wrapped lines)


beam.coders.registry.register_coder(LogRecord, beam.coders.RowCoder)


def is_error(record: LogRecord) -> bool:
    """An error is an HTTP status >= 500 or a level of ERROR or FATAL."""
    return ((record.status is not None and record.status >= 500)
            or record.level in ERROR_LEVELS)
