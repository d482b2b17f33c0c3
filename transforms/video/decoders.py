"""Video report decoders: one line -> :class:`~transforms.video.records.VideoReport`.

* ``report``: a CMCD v2 event-mode report as POSTed, one per line
  (``bl=(0),cid="c",e=ps,sid="s",sta=r,ts=1764269150889,v=2``); event time
  from ``ts`` (ms), which a report must carry.
* ``access_log``: a CDN or origin access-log line (combined format, as the
  logs job reads them) whose request URL carries a ``CMCD=`` query argument
  (v1 or v2 request mode); event time from the log line, the CDN from the
  ``cdn`` key or else the virtual host, the HTTP status kept.
* ``json``: CMCD's JSON form, one object per line, with ``ts`` (ms) or an
  ``event_time`` (RFC 3339 or epoch ms) beside the CMCD keys, or the keys
  under ``"cmcd"``.
* ``auto``: ``{`` JSON; a line with ``] "`` after a ``[`` an access log; else
  a report.

A payload CMCD does not allow is refused with the standard's reason (see
:mod:`transforms.video.cmcd`).  A valid payload without a session id cannot
be sessionised: it is counted as ``filtered.no_session_id``.
"""
import functools

from apache_beam.utils.timestamp import Timestamp

from transforms import formats
from transforms.decode import DecodeError, FilteredRecord
from transforms.video import cmcd
from transforms.video.records import VideoReport

FORMATS = ('auto', 'report', 'access_log', 'json')


class NoSessionId(FilteredRecord):
    name = 'no_session_id'


def _report(data, ts_ms, fmt, cdn=None, status=None) -> VideoReport:
    sid = data.get('sid')
    if not sid:
        raise NoSessionId('CMCD payload without sid')
    return VideoReport(
        event_time=Timestamp(micros=ts_ms * 1000), ts_ms=ts_ms,
        session_id=sid, content_id=data.get('cid'),
        cdn=data.get('cdn') or cdn, stream_type=data.get('st'),
        streaming_format=data.get('sf'), event=data.get('e'),
        state=data.get('sta'), sn=data.get('sn'), msd=data.get('msd'),
        video_bitrate_kbps=cmcd.video_value(data.get('br')),
        has_error='ec' in data, status=status, format=fmt)


def decode_report(text: str) -> VideoReport:
    data = cmcd.decode_dictionary(formats.strip_eol(text).strip()).data
    if 'ts' not in data:
        raise DecodeError('CMCD report without ts (event mode requires it)')
    return _report(data, data['ts'], 'report')


def decode_access_log(text: str) -> VideoReport:
    fields = formats.parse_combined(text)
    if not fields['path']:
        raise DecodeError('access log line without a request path')
    data = cmcd.decode_query(fields['path']).data
    vhost = fields['vhost']
    host = vhost.rsplit(':', 1)[0] if vhost else None
    ts_ms = fields['time'].micros // 1000
    return _report(data, ts_ms, 'request', cdn=host, status=fields['status'])


def decode_json(text: str) -> VideoReport:
    obj = formats.parse_json_object(text)
    event_time = obj.pop('event_time', None)
    if isinstance(obj.get('cmcd'), dict):
        ts_field = obj.get('ts')
        obj = obj['cmcd']
        if ts_field is not None and 'ts' not in obj:
            obj['ts'] = ts_field
    data = cmcd.decode_json_object(obj).data
    if 'ts' in data:
        ts_ms = data['ts']
    elif event_time is not None:
        ts_ms = formats.parse_time(event_time).micros // 1000
    else:
        raise DecodeError('CMCD JSON without ts or event_time')
    return _report(data, ts_ms, 'json')


def decode_line(text: str) -> VideoReport:
    line = formats.strip_eol(text).lstrip()
    if line.startswith('{'):
        return decode_json(line)
    bracket = line.find(' [')
    if bracket >= 0 and '] "' in line[bracket:]:
        return decode_access_log(line)
    if line.startswith('CMCD=') or (
            ' ' not in line and ('?CMCD=' in line or '&CMCD=' in line)):
        return decode_request(line)
    return decode_report(line)


def decode_request(text: str) -> VideoReport:
    """A request's CMCD query argument on its own (``CMCD=...``, or a URL
    carrying one), as players' request logs hold them: a report when it
    carries ``ts`` (CMCD v2 request mode), else refused for want of an
    event time (not for its form)."""
    data = cmcd.decode_query(formats.strip_eol(text).strip()).data
    if 'ts' not in data:
        raise DecodeError(
            'CMCD query argument without ts: a request alone has no event '
            'time; give access-log lines (combined format) that carry it, '
            'or reports or JSON with ts')
    return _report(data, data['ts'], 'request')


_DECODERS = {'auto': decode_line, 'report': decode_report,
             'access_log': decode_access_log, 'json': decode_json}


def make_decoder(fmt: str = 'auto'):
    if fmt not in _DECODERS:
        raise ValueError(f'unknown CMCD format {fmt!r}; one of '
                         f'{", ".join(FORMATS)}')
    return functools.partial(_checked, _DECODERS[fmt])


def _checked(decoder, text):
    if not isinstance(text, str):
        raise DecodeError(f'expected text, got {type(text).__name__}')
    return decoder(text)
