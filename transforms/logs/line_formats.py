"""Plain-text log line formats, as systems write them to files.

Each :class:`LineFormat` is one regular expression with named groups; the
groups say where the event time, level, service, host and message are:

* time: ``Y`` (4-digit year) or ``y`` (2-digit, 20yy), ``M`` (month number) or
  ``mon`` (English month abbreviation), ``D``, ``h``, ``m``, ``s``, ``frac``
  (decimal fraction of the second), ``ms`` (milliseconds as an integer),
  ``tz`` (``Z`` or ``+hh:mm``/``+hhmm``), or ``epoch`` (seconds since 1970,
  UTC; ``frac`` may add the fraction).  Without ``Y``/``y`` the year is the
  decoder's default year (``--syslog_year``); without ``tz`` the time is read
  in the decoder's time zone (``--timezone``).
* ``level`` (normalised by :func:`transforms.logs.decoders.normalise_level`),
  ``service`` (absent: the decoder's default service), ``host``, ``message``.

The formats are those of the sixteen Loghub systems (as logpai's logparser
benchmark publishes their headers) and the common on-disk forms of syslog,
Apache/nginx error logs, log4j/logback/Python logging and Spring Boot, and
Android logcat.  :data:`FORMATS` lists them in the order ``--log_format auto``
tries them: more specific shapes first.
"""
import datetime
import functools
import re
import typing
import zoneinfo

from apache_beam.utils.timestamp import Timestamp

from transforms import formats
from transforms.decode import DecodeError

_MONTHS = {name: number for number, name in enumerate(
    'Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec'.split(), 1)}

# Building blocks.
_HMS = r'(?P<h>\d{2}):(?P<m>\d{2}):(?P<s>\d{2})'
_FRAC = r'(?:[.,](?P<frac>\d{1,9}))?'
_YMD = r'(?P<Y>\d{4})-(?P<M>\d{2})-(?P<D>\d{2})'
_TZ = r'(?P<tz>Z|[+-]\d{2}:?\d{2})?'
_LEVEL = r'(?P<level>[A-Za-z]+)'
_SYSLOG_TIME = r'(?P<mon>[A-Z][a-z]{2}) {1,2}(?P<D>\d{1,2}) ' + _HMS
# A syslog TAG: program name, optional [pid] (Linux "sshd(pam_unix)[19939]",
# macOS "kernel[0]", "com.apple.xpc.launchd[1] (com.apple...)").
_TAG = (r'(?P<service>[^\s:\[]+(?: [^\s:\[]+)*?)(?:\[(?P<pid>\d+)\])?'
        r'(?: \([^)]*\))?: ?')


class LineFormat(typing.NamedTuple):
    name: str
    regex: 're.Pattern'
    description: str


def _format(name, pattern, description):
    return LineFormat(name, re.compile(pattern, re.DOTALL), description)


FORMATS = (
    _format('bgl', r'(?P<label>\S+) (?P<epoch>\d{9,10}) \d{4}\.\d{2}\.\d{2} '
            r'(?P<host>\S+) \d{4}-\d{2}-\d{2}-\d{2}\.\d{2}\.\d{2}\.'
            r'(?P<frac>\d{1,9}) \S+ \S+ (?P<service>\S+) ' + _LEVEL +
            r'(?: (?P<message>.*))?',
            'Blue Gene/L RAS log (Loghub BGL)'),
    _format('thunderbird', r'(?P<label>\S+) (?P<epoch>\d{9,10}) '
            r'\d{4}\.\d{2}\.\d{2} (?P<host>\S+) [A-Z][a-z]{2} {1,2}\d{1,2} '
            r'\d{2}:\d{2}:\d{2} \S+ ' + _TAG + r'(?P<message>.*)',
            'Thunderbird supercomputer syslog (Loghub Thunderbird)'),
    _format('hpc', r'\d+ (?P<host>\S+) (?P<service>\S+) (?P<state>\S+) '
            r'(?P<epoch>\d{9,10}) -?\d+ (?P<message>.*)',
            'HPC cluster event log (Loghub HPC)'),
    _format('openstack', r'(?:\S+\.log\S* )?' + _YMD + ' ' + _HMS + _FRAC +
            r' (?P<pid>\d+) ' + _LEVEL + r' (?P<service>\S+) '
            r'(?P<message>\[.*)',
            'OpenStack oslo.log, optionally after its file name '
            '(Loghub OpenStack)'),
    _format('logcat', r'(?:(?P<Y>\d{4})-)?(?P<M>\d{2})-(?P<D>\d{2}) ' + _HMS +
            _FRAC + r' +(?P<pid>\d+) +(?P<tid>\d+) (?P<level>[VDIWEFA]) '
            r'(?P<service>.*?) *: ?(?P<message>.*)',
            'Android logcat, threadtime format (Loghub Android)'),
    _format('hdfs', r'(?P<y>\d{2})(?P<M>\d{2})(?P<D>\d{2}) (?P<h>\d{2})'
            r'(?P<m>\d{2})(?P<s>\d{2}) (?P<pid>\d+) ' + _LEVEL +
            r' (?P<service>[^\s:]+): ?(?P<message>.*)',
            'Hadoop HDFS log4j layout yyMMdd HHmmss (Loghub HDFS)'),
    _format('spark', r'(?P<y>\d{2})/(?P<M>\d{2})/(?P<D>\d{2}) ' + _HMS +
            ' ' + _LEVEL + r' (?P<service>[^\s:]+): ?(?P<message>.*)',
            'Spark log4j layout yy/MM/dd (Loghub Spark)'),
    _format('zookeeper', _YMD + ' ' + _HMS + _FRAC + ' - ' + _LEVEL +
            r' +\[(?:.*:)?(?P<service>[^:@\]]+)@\d+\] - (?P<message>.*)',
            'ZooKeeper log4j layout (Loghub Zookeeper)'),
    _format('log4j', _YMD + '[ T]' + _HMS + _FRAC + _TZ + ' +' + _LEVEL +
            r' +\[(?P<thread>[^\]]*)\] (?P<service>[^\s:]+):? (?P<message>.*)',
            'log4j "%d %p [%t] %c: %m" (Loghub Hadoop)'),
    _format('logback', _YMD + '[ T]' + _HMS + _FRAC + _TZ +
            r' +\[(?P<thread>[^\]]*)\] +' + _LEVEL +
            r' +(?P<service>\S+) +- (?P<message>.*)',
            'logback/log4j2 default "%d [%thread] %level %logger - %msg"'),
    _format('spring', _YMD + '[ T]' + _HMS + _FRAC + _TZ + ' +' + _LEVEL +
            r' +\d+ --- (?:\[[^\]]*\] )?\[(?P<thread>[^\]]*)\] '
            r'(?P<service>\S+) +: (?P<message>.*)',
            'Spring Boot console/file layout'),
    _format('python', _YMD + ' ' + _HMS + _FRAC + ' - (?P<service>\\S+) - ' +
            _LEVEL + ' - (?P<message>.*)',
            'Python logging "%(asctime)s - %(name)s - %(levelname)s - '
            '%(message)s"'),
    _format('windows', _YMD + ' ' + _HMS + ', ' + _LEVEL +
            r' +(?P<service>\S+) +(?P<message>.*)',
            'Windows CBS/CSI log (Loghub Windows)'),
    _format('level_logger', _YMD + '[ T]' + _HMS + _FRAC + _TZ + ' +' +
            _LEVEL + r' +(?P<service>[^\s:\[\]]+): (?P<message>.*)',
            'log4j/Python "%d %p %c: %m"'),
    _format('apache_error', r'\[[A-Z][a-z]{2} (?P<mon>[A-Z][a-z]{2}) '
            r'(?P<D>\d{2}) ' + _HMS + _FRAC + r' (?P<Y>\d{4})\] '
            r'\[(?:[^:\]\s]+:)?(?P<level>[a-z]+)\d?\]'
            r'(?: \[pid \d+(?::tid \d+)?\])? ?'
            r'(?P<message>.*)',
            'Apache httpd error log, 2.2 and 2.4 (Loghub Apache)'),
    _format('nginx_error', r'(?P<Y>\d{4})/(?P<M>\d{2})/(?P<D>\d{2}) ' + _HMS +
            r' \[(?P<level>[a-z]+)\] \d+#\d+: (?P<message>.*)',
            'nginx error log'),
    _format('proxifier', r'\[(?P<M>\d{2})\.(?P<D>\d{2}) ' + _HMS +
            r'\] (?P<service>.+?) - (?P<message>.*)',
            'Proxifier log (Loghub Proxifier)'),
    _format('healthapp', r'(?P<Y>\d{4})(?P<M>\d{2})(?P<D>\d{2})-'
            r'(?P<h>\d{1,2}):(?P<m>\d{1,2}):(?P<s>\d{1,2}):(?P<ms>\d{1,3})'
            r'\|(?P<service>[^|]+)\|(?P<pid>\d+)\|(?P<message>.*)',
            'HealthApp log (Loghub HealthApp)'),
    _format('rsyslog_iso', _YMD + 'T' + _HMS + _FRAC + _TZ +
            r' (?P<host>\S+) ' + _TAG + r'(?P<message>.*)',
            'rsyslog RSYSLOG_FileFormat (ISO time, no <PRI>)'),
    _format('syslog_file', _SYSLOG_TIME + r' (?P<host>\S+) +' + _TAG +
            r'(?P<message>.*)',
            'syslog as written to /var/log files: RFC 3164 without <PRI> '
            '(Loghub Linux, OpenSSH, Mac)'),
)
FORMAT_NAMES = tuple(f.name for f in FORMATS)
BY_NAME = {f.name: f for f in FORMATS}


@functools.lru_cache(maxsize=64)
def zone(name: str):
    """The tzinfo of 'UTC' or an IANA zone name."""
    if name in ('UTC', 'Z'):
        return datetime.timezone.utc
    return zoneinfo.ZoneInfo(name)


def check_timezone(name: str) -> str:
    """``name`` if it is 'UTC' or an IANA zone; ValueError otherwise."""
    try:
        zone(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError) as e:
        raise ValueError(f'unknown time zone {name!r} (give an IANA name such '
                         f'as Europe/Paris, or UTC)') from e
    return name


def _offset(tz: str) -> datetime.timezone:
    if tz == 'Z':
        return datetime.timezone.utc
    sign = -1 if tz[0] == '-' else 1
    digits = tz[1:].replace(':', '')
    hours, minutes = int(digits[:2]), int(digits[2:])
    if hours > 23 or minutes > 59:
        raise DecodeError(f'invalid time zone offset: {formats.short_repr(tz)}')
    return datetime.timezone(sign * datetime.timedelta(
        hours=hours, minutes=minutes))


def _micros_of_fraction(frac) -> int:
    return int((frac + '000000')[:6]) if frac else 0


def event_time(groups: dict, default_year, timezone: str):
    """The event time of a match's groups (see the module docstring)."""
    frac = groups.get('frac')
    if groups.get('epoch'):
        seconds = formats.parse_time(int(groups['epoch']))
        return Timestamp(micros=seconds.micros + _micros_of_fraction(frac))
    if groups.get('Y'):
        year = int(groups['Y'])
    elif groups.get('y'):
        year = 2000 + int(groups['y'])
    elif default_year is not None:
        year = default_year
    else:
        year = datetime.datetime.now(datetime.timezone.utc).year
    if groups.get('mon'):
        month = _MONTHS.get(groups['mon'])
        if month is None:
            raise DecodeError(f'invalid month: {formats.short_repr(groups["mon"])}')
    else:
        month = int(groups['M'])
    micros = _micros_of_fraction(frac)
    if groups.get('ms'):
        micros = int(groups['ms']) * 1000
    tz = groups.get('tz')
    tzinfo = _offset(tz) if tz else zone(timezone)
    try:
        moment = datetime.datetime(year, month, int(groups['D']),
                                   int(groups['h']), int(groups['m']),
                                   int(groups["s"]), micros, tzinfo=tzinfo)
    except ValueError as e:
        raise DecodeError(f'invalid date or time: {e}') from None
    return formats.parse_time(moment)


def match(line: str):
    """(LineFormat, match) of the first format matching the whole line, or
    (None, None)."""
    for fmt in FORMATS:
        m = fmt.regex.fullmatch(line)
        if m is not None:
            return fmt, m
    return None, None
