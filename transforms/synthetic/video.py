"""A synthetic CMCD stream: viewing sessions as players report them.

What it contains (all deterministic for a seed):

* ``sessions`` viewing sessions starting over ``span`` minutes of event time,
  each on one of ``contents`` contents and ``cdns`` CDNs, VOD or live, DASH
  or HLS;
* CMCD v2 event-mode reports (``e=ps`` play-state changes, ``e=t`` reports
  every 30 s while playing, ``e=e`` errors), mostly as POSTed bodies, some
  sessions as CMCD JSON lines, and segment requests in CDN access-log lines
  (CMCD v1 request mode, the CDN as the virtual host);
* log-normal start-up delays (``msd``, median 1.2 s), stalls (``sta=r``, then
  ``sta=p`` with ``bsd``), a bitrate ladder with switches, exits before video
  start (``exit`` fraction), fatal errors (``fail`` fraction, ``sta=f``);
* degradation episodes: the second content stalls heavily from minute 3 to 5,
  the second CDN starts slowly and stalls from minute 6 to 8;
* out-of-order arrival (up to ``disorder`` seconds), a ``late`` fraction of
  stragglers delayed 20 s to 6 min, and a ``malformed`` fraction of payloads
  CMCD refuses or that are not CMCD at all.
"""
import datetime
import math
import random
import urllib.parse

import orjson

from transforms.synthetic import SyntheticStream, Ticks, parse_start, \
    stream_ticks

PARAMS = {
    'sessions': (int, 400, 'number of viewing sessions'),
    'seed': (int, 42, 'random seed: the same seed gives the same stream'),
    'span': (float, 10.0, 'minutes of event time over which sessions start'),
    'contents': (int, 5, 'number of contents (1..8)'),
    'cdns': (int, 3, 'number of CDNs (1..4)'),
    'start': (str, '2026-01-01T00:00:00Z', 'event time of the first session'),
    'disorder': (float, 5.0, 'max out-of-order delay of on-time reports, s'),
    'late': (float, 0.01, 'fraction of stragglers delayed 20 s to 6 min'),
    'malformed': (float, 0.005, 'fraction of malformed payloads'),
    'exit': (float, 0.05, 'fraction of sessions left before video start'),
    'fail': (float, 0.02, 'fraction of sessions ending in a fatal error'),
    'json': (float, 0.1, 'fraction of sessions reporting CMCD JSON'),
    'requests': (float, 0.3, 'segment requests in access logs per 30 s '
                             'report (a probability)'),
    'tick': (float, 5.0, 'seconds of processing time per source step'),
}

CONTENTS = ('movie-1', 'movie-2', 'news-live', 'series-4', 'sport-live',
            'movie-6', 'doc-7', 'kids-8')
CDNS = ('cdn-a.example', 'cdn-b.example', 'cdn-c.example', 'cdn-d.example')
LADDER = (800, 1600, 3200, 4800, 7800)            # kbps
CONTENT_EPISODE = (180.0, 300.0)    # s after start: the 2nd content stalls
CDN_EPISODE = (360.0, 480.0)        # s after start: the 2nd CDN is slow
INTERVAL_MS = 30_000                # time-interval reports while playing


def _sf_string(text):
    return '"' + text.replace('\\', '\\\\').replace('"', '\\"') + '"'


def _body(keys: dict) -> str:
    """A CMCD dictionary, keys in alphabetical order as CMCD recommends."""
    parts = []
    for key in sorted(keys):
        value = keys[key]
        if value is True:
            parts.append(key)
        elif isinstance(value, str) and key in ('cid', 'sid', 'cdn'):
            parts.append(f'{key}={_sf_string(value)}')
        elif isinstance(value, tuple):     # an inner list, already written
            parts.append(f'{key}=({" ".join(value)})')
        else:
            parts.append(f'{key}={value}')
    return ','.join(parts)


def _clf_time(ms: int) -> str:
    dt = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.timezone.utc)
    return dt.strftime('%d/%b/%Y:%H:%M:%S +0000')


def _json(keys: dict) -> bytes:
    doc = {}
    for key, value in keys.items():
        if key == 'ec':
            doc[key] = [v.strip('"') for v in value]
        elif isinstance(value, tuple):
            # The first (video) member, as the integer of CMCD v1.
            doc[key] = int(value[0].split(';')[0])
        else:
            doc[key] = value
    return orjson.dumps(doc)


class _Session:
    def __init__(self, rng, sid, t0_ms, cid, cdn, st, sf, form):
        self.rng, self.sid, self.cid, self.cdn = rng, sid, cid, cdn
        self.st, self.sf, self.form = st, sf, form
        self.sn = 0
        self.out = []                       # (ts_ms, payload)
        self.t = t0_ms

    def report(self, ts, **keys):
        self.sn += 1
        keys.update(cid=self.cid, sid=self.sid, sn=self.sn, ts=ts, v=2,
                    st=self.st, sf=self.sf, cdn=self.cdn)
        if self.form == 'json':
            payload = _json(keys)
        else:
            payload = _body(keys).encode()
        self.out.append((ts, payload))

    def request(self, ts, br):
        cmcd = _body({'br': br, 'cid': self.cid, 'ot': 'v', 'sf': self.sf,
                      'sid': self.sid, 'st': self.st, 'd': 4000,
                      'bl': 100 * self.rng.randrange(10, 300)})
        query = urllib.parse.quote(cmcd, safe='')
        ip = f'198.51.100.{self.rng.randrange(1, 255)}'
        line = (f'{self.cdn}:443 {ip} - - [{_clf_time(ts)}] '
                f'"GET /{self.cid}/{br}k/seg-{self.sn}.m4v?CMCD={query} '
                f'HTTP/1.1" 200 {self.rng.randrange(100_000, 3_000_000)} "-" '
                f'"Mozilla/5.0 (X11; Linux)"')
        self.out.append((ts, line.encode()))


def _play(rng, s: _Session, t0, offset, params, contents, cdns):
    content_bad = s.cid == contents[min(1, len(contents) - 1)] and \
        CONTENT_EPISODE[0] <= offset < CONTENT_EPISODE[1]
    cdn_bad = s.cdn == cdns[min(1, len(cdns) - 1)] and \
        CDN_EPISODE[0] <= offset < CDN_EPISODE[1]
    s.report(t0, e='ps', sta='s', bl=('0',))
    u = rng.random()
    if u < params['exit']:
        s.report(t0 + int(rng.uniform(1_500, 8_000)), e='ps', sta='e')
        return
    msd = int(rng.lognormvariate(math.log(1200), 0.6) * (4 if cdn_bad else 1))
    level = rng.randrange(1, 4)
    t = t0 + msd
    br = LADDER[level]
    if u < params['exit'] + params['fail']:
        s.report(t, e='e', ec=('"MEDIA_ERR_DECODE"',))
        s.report(t + 50, e='ps', sta='f', ec=('"MEDIA_ERR_DECODE"',))
        return
    s.report(t, e='ps', sta='p', msd=msd, br=(f'{br};v', '128;a'))
    end = t + int(min(rng.lognormvariate(math.log(180_000), 0.7), 600_000))
    stall_rate = 1 / 40_000 if (content_bad or cdn_bad) else 1 / 400_000
    next_report = t + INTERVAL_MS
    while t < end:
        wait = int(rng.expovariate(stall_rate))
        stall_at = t + wait
        while next_report < min(stall_at, end):
            if rng.random() < 0.2:
                level = max(0, min(len(LADDER) - 1,
                                   level + rng.choice((-1, 1))))
                br = LADDER[level]
            if rng.random() < params['requests']:
                s.request(next_report - rng.randrange(0, 4000), br)
            s.report(next_report, e='t', sta='p', br=(f'{br};v', '128;a'),
                     bl=(f'{100 * rng.randrange(20, 300)};v',))
            next_report += INTERVAL_MS
        if stall_at >= end:
            break
        stall = int(rng.lognormvariate(math.log(1500), 0.8) *
                    (3 if (content_bad or cdn_bad) else 1))
        level = max(0, level - 1)
        br = LADDER[level]
        s.report(stall_at, e='ps', sta='r', bs=True, br=(f'{br};v', '128;a'))
        s.report(stall_at + stall, e='ps', sta='p', bsd=(str(stall),),
                 br=(f'{br};v', '128;a'))
        t = stall_at + stall
        next_report = max(next_report, t + 1)
    s.report(end, e='ps', sta='e')


def _malformed(rng, ts, sid):
    return rng.choice((
        f'e=ps,sid={sid},sta=p,ts={ts},v=2'.encode(),           # unquoted sid
        f'bs=true,e=ps,sid="{sid}",sta=r,ts={ts},v=2'.encode(),  # TRUE sent
        f'e=ps,sid="{sid}",sta=z,ts={ts},v=2'.encode(),          # no such sta
        f'e=ps,sid="{sid}",sta=p,v=2'.encode(),                  # no ts
        f'br=-300,e=t,sid="{sid}",ts={ts},v=2'.encode(),         # negative
        f'e=ps,sid="{sid}",sta=p,ts={ts},ts={ts},v=2'.encode(),  # duplicate
        f'e=ps,sid="{sid}'.encode(),                             # truncated
        b'\xff\xfe' + f'e=ps,sid="{sid}"'.encode(),              # not UTF-8
        b'',
        b'{"sid": "x", "ts": "soon"',
    ))


# A report of a session is never earlier than this before the session's
# start (segment requests are logged up to 4 s before their report).
EARLIEST_MS = 10_000


def generate(params: dict) -> SyntheticStream:
    """The stream for ``params``, generated lazily (one session at a time)
    each time its ticks are iterated."""
    start = int(round(parse_start(params['start']) * 1000)) / 1000
    return SyntheticStream(
        Ticks(lambda: stream_ticks(_records(params), params['tick'],
                                   params['disorder'], start)),
        params['tick'])


def _records(params: dict):
    """(event time, arrival, payload, later) a session at a time, sessions
    in order of start: ``later`` bounds the arrival of every record still to
    come (this session's and later sessions' reports)."""
    rng = random.Random(params['seed'])
    start_ms = int(round(parse_start(params['start']) * 1000))
    contents = CONTENTS[:max(1, min(params['contents'], len(CONTENTS)))]
    cdns = CDNS[:max(1, min(params['cdns'], len(CDNS)))]
    span_ms = params['span'] * 60_000
    for i in range(params['sessions']):
        offset_ms = int(span_ms * i / max(1, params['sessions']))
        t0 = start_ms + offset_ms + rng.randrange(0, 1000)
        later = (start_ms + offset_ms - EARLIEST_MS) / 1000
        cid = rng.choice(contents)
        live = cid.endswith('-live')
        form = 'json' if rng.random() < params['json'] else 'report'
        s = _Session(rng, f'{params["seed"]:x}-{i:05d}-{rng.getrandbits(32):08x}',
                     t0, cid, rng.choice(cdns), 'l' if live else 'v',
                     rng.choice(('d', 'h')), form)
        _play(rng, s, t0, offset_ms / 1000, params, contents, cdns)
        for ts, payload in s.out:
            if rng.random() < params['malformed']:
                payload = _malformed(rng, ts, s.sid)
            if rng.random() < params['late']:
                delay = rng.uniform(20.0, 360.0)
            else:
                delay = rng.uniform(0.0, params['disorder'])
            yield ts / 1000, ts / 1000 + delay, payload, later
