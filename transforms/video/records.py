"""The typed records of the video QoE job."""
import typing

import apache_beam as beam
from apache_beam.utils.timestamp import Timestamp


class VideoReport(typing.NamedTuple):
    """One CMCD report or request, reduced to what QoE needs.  ``event_time``
    comes from the payload (``ts``, or the access-log time), never the clock."""
    event_time: Timestamp
    ts_ms: int                               # event time, epoch milliseconds
    session_id: str                          # sid; never empty
    content_id: typing.Optional[str]         # cid
    cdn: typing.Optional[str]                # cdn key, else the virtual host
    stream_type: typing.Optional[str]        # st: v (VOD), l (live)
    streaming_format: typing.Optional[str]   # sf: d, h, s, o
    event: typing.Optional[str]              # e (event mode), None in requests
    state: typing.Optional[str]              # sta: player state
    sn: typing.Optional[int]                 # sequence number
    msd: typing.Optional[int]                # media start delay, ms
    video_bitrate_kbps: typing.Optional[int]  # video br
    has_error: bool                          # the report carries ec
    status: typing.Optional[int]             # HTTP status (access logs)
    format: str                              # 'report', 'request', 'json'


beam.coders.registry.register_coder(VideoReport, beam.coders.RowCoder)
