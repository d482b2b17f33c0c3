"""Plain-text log formats, journal export, container wrappers and
--log_pattern: one known line per format, fields checked by hand."""
import datetime
import json
import pickle

import pytest
from apache_beam.internal import pickler
from apache_beam.utils.timestamp import Timestamp

from transforms.decode import DecodeError
from transforms.logs import decoders, line_formats

UTC = datetime.timezone.utc


def ts(*args, tz=UTC) -> Timestamp:
    return Timestamp.from_utc_datetime(
        datetime.datetime(*args, tzinfo=tz).astimezone(UTC))


# format -> (line, event time, level, service, host, message); year 2017 for
# formats without one.
SAMPLES = {
    'bgl': ('- 1117838570 2005.06.03 R02-M1-N0-C:J12-U11 '
            '2005-06-03-15.42.50.675872 R02-M1-N0-C:J12-U11 RAS KERNEL INFO '
            'instruction cache parity error corrected',
            ts(2005, 6, 3, 22, 42, 50, 675872), 'INFO', 'KERNEL',
            'R02-M1-N0-C:J12-U11', 'instruction cache parity error corrected'),
    'thunderbird': ('- 1131566461 2005.11.09 dn228 Nov 9 12:01:01 dn228/dn228 '
                    'crond(pam_unix)[2915]: session closed for user root',
                    ts(2005, 11, 9, 20, 1, 1), '', 'crond(pam_unix)', 'dn228',
                    'session closed for user root'),
    'hpc': ('134681 node-246 unix.hw state_change.unavailable 1077804742 1 '
            'Component State Change: Component is in the unavailable state',
            ts(2004, 2, 26, 14, 12, 22), '', 'unix.hw', 'node-246',
            'Component State Change: Component is in the unavailable state'),
    'openstack': ('nova-api.log.1.2017-05-16_13:53:08 2017-05-16 00:00:00.008 '
                  '25746 INFO nova.osapi_compute.wsgi.server [req-38101a0b - - '
                  '-] 10.11.10.1 "GET /v2/servers HTTP/1.1" status: 200',
                  ts(2017, 5, 16, 0, 0, 0, 8000), 'INFO',
                  'nova.osapi_compute.wsgi.server', '',
                  '[req-38101a0b - - -] 10.11.10.1 "GET /v2/servers HTTP/1.1" '
                  'status: 200'),
    'logcat': ('03-17 16:13:38.811  1702  2395 W WindowManager: freezing',
               ts(2017, 3, 17, 16, 13, 38, 811000), 'WARN', 'WindowManager',
               '', 'freezing'),
    'hdfs': ('081109 203615 148 INFO dfs.DataNode$PacketResponder: '
             'PacketResponder 1 terminating', ts(2008, 11, 9, 20, 36, 15),
             'INFO', 'dfs.DataNode$PacketResponder', '',
             'PacketResponder 1 terminating'),
    'spark': ('17/06/09 20:10:40 ERROR executor.Executor: Exception in task',
              ts(2017, 6, 9, 20, 10, 40), 'ERROR', 'executor.Executor', '',
              'Exception in task'),
    'zookeeper': ('2015-07-29 17:41:44,747 - WARN  [QuorumPeer[myid=1]/0:0:0:0:'
                  '0:0:0:0:2181:FastLeaderElection@774] - Notification time out',
                  ts(2015, 7, 29, 17, 41, 44, 747000), 'WARN',
                  'FastLeaderElection', '', 'Notification time out'),
    'log4j': ('2015-10-18 18:01:47,978 INFO [IPC Server handler 0 on 62270] '
              'org.apache.hadoop.ipc.Server: Starting',
              ts(2015, 10, 18, 18, 1, 47, 978000), 'INFO',
              'org.apache.hadoop.ipc.Server', '', 'Starting'),
    'logback': ('2024-01-02 03:04:05.678 [main] DEBUG com.example.App - Started',
                ts(2024, 1, 2, 3, 4, 5, 678000), 'DEBUG', 'com.example.App',
                '', 'Started'),
    'spring': ('2024-01-02T03:04:05.678+01:00  WARN 12345 --- [main] '
               'c.e.App                      : Slow start',
               ts(2024, 1, 2, 2, 4, 5, 678000), 'WARN', 'c.e.App', '',
               'Slow start'),
    'python': ('2024-01-02 03:04:05,678 - shop.db - CRITICAL - pool exhausted',
               ts(2024, 1, 2, 3, 4, 5, 678000), 'FATAL', 'shop.db', '',
               'pool exhausted'),
    'windows': ('2016-09-28 04:30:30, Error                 CBS    Failed to '
                'get next element', ts(2016, 9, 28, 4, 30, 30), 'ERROR', 'CBS',
                '', 'Failed to get next element'),
    'level_logger': ('2024-01-02 03:04:05,678 SEVERE shop.worker: job failed',
                     ts(2024, 1, 2, 3, 4, 5, 678000), 'ERROR', 'shop.worker',
                     '', 'job failed'),
    'apache_error': ('[Wed Oct 11 14:32:52.123456 2000] [core:error] [pid 35708:'
                     'tid 4328636416] [client 72.15.99.187] File does not exist',
                     ts(2000, 10, 11, 14, 32, 52, 123456), 'ERROR', 'web', '',
                     '[client 72.15.99.187] File does not exist'),
    'nginx_error': ('2024/01/02 03:04:05 [crit] 1234#5678: *9 open() failed',
                    ts(2024, 1, 2, 3, 4, 5), 'FATAL', 'web', '',
                    '*9 open() failed'),
    'proxifier': ('[10.30 16:49:06] chrome.exe *64 - example.org:443 close',
                  ts(2017, 10, 30, 16, 49, 6), '', 'chrome.exe *64', '',
                  'example.org:443 close'),
    'healthapp': ('20171223-22:15:29:606|Step_LSC|30002312|onStandStepChanged 3579',
                  ts(2017, 12, 23, 22, 15, 29, 606000), '', 'Step_LSC', '',
                  'onStandStepChanged 3579'),
    'rsyslog_iso': ('2020-03-17T10:11:12.123456+01:00 web1 nginx[812]: reload',
                    ts(2020, 3, 17, 9, 11, 12, 123456), '', 'nginx', 'web1',
                    'reload'),
    'syslog_file': ('Jul  1 09:01:05 calvisitor-10-105-160-95 com.apple.xpc.'
                    'launchd[1] (com.apple.xpc.launchd.domain.pid.35584): '
                    'Service exited',
                    ts(2017, 7, 1, 9, 1, 5), '', 'com.apple.xpc.launchd',
                    'calvisitor-10-105-160-95', 'Service exited'),
}


def test_every_format_has_a_sample():
    assert set(SAMPLES) == set(line_formats.FORMAT_NAMES)


@pytest.mark.parametrize('name', sorted(SAMPLES))
def test_auto_reads_each_format(name):
    line, time, level, service, host, message = SAMPLES[name]
    record = decoders.make_decoder('auto', default_year=2017)(line)
    assert (record.format, record.event_time, record.level, record.service,
            record.host, record.message) == (name, time, level, service, host,
                                             message)
    # The named format alone reads it the same way.
    assert decoders.make_decoder(name, default_year=2017)(line) == record


@pytest.mark.parametrize('name', sorted(SAMPLES))
def test_format_decoders_are_picklable(name):
    decoder = decoders.make_decoder(name, default_year=2017,
                                    timezone='Europe/Paris')
    line = SAMPLES[name][0]
    for restored in (pickle.loads(pickle.dumps(decoder)),
                     pickler.loads(pickler.dumps(decoder))):
        assert restored(line) == decoder(line)


def test_a_named_format_refuses_other_lines():
    with pytest.raises(DecodeError, match='not a hdfs log line'):
        decoders.make_decoder('hdfs')(SAMPLES['spark'][0])


def test_timezone_places_times_written_without_zone():
    paris = decoders.make_decoder('auto', default_year=2017,
                                  timezone='Europe/Paris')
    # Summer time: UTC+2; a written zone is kept.
    assert paris(SAMPLES['logcat'][0]).event_time == ts(
        2017, 3, 17, 15, 13, 38, 811000)
    assert paris(SAMPLES['rsyslog_iso'][0]).event_time == SAMPLES[
        'rsyslog_iso'][1]
    assert paris('<34>Jul 11 22:14:15 m su: x').event_time == ts(
        2017, 7, 11, 20, 14, 15)
    # Epoch times are UTC whatever the zone.
    assert paris(SAMPLES['bgl'][0]).event_time == SAMPLES['bgl'][1]
    with pytest.raises(ValueError, match='unknown time zone'):
        decoders.make_decoder('auto', timezone='Mars/Olympus')


def test_syslog_format_reads_files_without_pri():
    syslog = decoders.make_decoder('syslog', default_year=2005)
    record = syslog('Jun 14 15:16:01 combo sshd(pam_unix)[19939]: check pass')
    assert (record.service, record.host, record.level, record.event_time) == (
        'sshd(pam_unix)', 'combo', '', ts(2005, 6, 14, 15, 16, 1))
    assert syslog('<11>Jun 14 15:16:01 combo su: x').level == 'ERROR'
    with pytest.raises(DecodeError):
        syslog(SAMPLES['hdfs'][0])


def test_journal_export():
    line = json.dumps({
        '__REALTIME_TIMESTAMP': '1700000000123456', 'PRIORITY': '3',
        'SYSLOG_IDENTIFIER': 'sshd', '_SYSTEMD_UNIT': 'ssh.service',
        '_HOSTNAME': 'web1', 'MESSAGE': 'Failed password'})
    record = decoders.make_decoder('auto')(line)
    assert (record.format, record.event_time, record.level, record.service,
            record.host, record.message) == (
        'journal', Timestamp(micros=1700000000123456), 'ERROR', 'sshd', 'web1',
        'Failed password')
    binary = json.dumps({'__REALTIME_TIMESTAMP': '1700000000000000',
                         '_SYSTEMD_UNIT': 'x.service',
                         'MESSAGE': list('hé'.encode('utf-8'))})
    record = decoders.make_decoder('json')(binary)
    assert (record.service, record.message, record.level) == (
        'x.service', 'hé', '')
    with pytest.raises(DecodeError, match='PRIORITY'):
        decoders.decode_json_log(json.dumps({
            '__REALTIME_TIMESTAMP': '1', 'PRIORITY': 9}))


def test_container_wrappers_decode_the_inner_line():
    auto = decoders.make_decoder('auto', default_service='pod', default_year=2017)
    inner = SAMPLES['spark'][0]
    docker = json.dumps({'log': inner + '\n', 'stream': 'stderr',
                         'time': '2019-01-01T00:00:00.5Z'})
    record = auto(docker)
    assert (record.format, record.service, record.level, record.event_time) == (
        'docker/spark', 'executor.Executor', 'ERROR', SAMPLES['spark'][1])
    plain = auto(json.dumps({'log': 'Listening on :8080\n', 'stream': 'stdout',
                             'time': '2019-01-01T00:00:00.5Z'}))
    assert (plain.format, plain.service, plain.message, plain.event_time) == (
        'docker', 'pod', 'Listening on :8080', ts(2019, 1, 1, 0, 0, 0, 500000))
    cri = auto('2019-01-01T00:00:01.25Z stdout F ' + SAMPLES['python'][0])
    assert (cri.format, cri.service) == ('cri/python', 'shop.db')
    cri_plain = auto('2019-01-01T00:00:01.25Z stdout P partial line')
    assert (cri_plain.format, cri_plain.message, cri_plain.event_time) == (
        'cri', 'partial line', ts(2019, 1, 1, 0, 0, 1, 250000))


@pytest.mark.parametrize('line, reason', [
    ('2024-01-02T03:04:05.678+91:00  WARN 1 --- [main] c.e.App : x',
     'invalid time zone offset'),
    ('2024-13-02 03:04:05,678 - shop - INFO - x', 'invalid date or time'),
    ('03-17 25:13:38.811  1702  2395 W W: x', 'invalid date or time'),
    ('Feb 30 10:00:00 host app: x', 'invalid date or time'),
    ('{"__REALTIME_TIMESTAMP": "999999999999999999999"}', 'after 9999'),
    ('{"log": "x", "stream": "stdout", "time": "bad"}', 'field time'),
])
def test_impossible_times_are_dead_letters(line, reason):
    with pytest.raises(DecodeError, match=reason):
        decoders.make_decoder('auto', default_year=2017)(line)


def test_unknown_lines_are_refused_with_a_reason():
    with pytest.raises(DecodeError, match='not a known log line format'):
        decoders.make_decoder('auto')('hello world')


PATTERN = (r'(?P<timestamp>\d{2}/\d{2} \d{2}:\d{2}:\d{2}) '
           r'(?P<service>\w+)\.(?P<level>\w+) (?P<message>.*)')


def test_log_pattern_with_time_format():
    decoder = decoders.make_decoder(
        'auto', default_year=2021, timezone='America/New_York',
        pattern=PATTERN, time_format='%m/%d %H:%M:%S')
    record = decoder('03/04 05:06:07 billing.warn card declined')
    assert (record.format, record.event_time, record.service, record.level,
            record.message) == ('pattern', ts(2021, 3, 4, 10, 6, 7), 'billing',
                                'WARN', 'card declined')
    assert pickler.loads(pickler.dumps(decoder))(
        '03/04 05:06:07 billing.warn x').service == 'billing'
    with pytest.raises(DecodeError, match='does not match --log_pattern'):
        decoder('garbage')
    with pytest.raises(DecodeError, match='does not match --time_format'):
        decoder('13/44 05:06:07 billing.warn x')


def test_log_pattern_iso_and_defaults():
    decoder = decoders.make_decoder(
        'auto', default_service='app',
        pattern=r'(?P<timestamp>\S+) (?P<message>.*)')
    record = decoder('2021-03-04T05:06:07.5 hello')   # no zone: UTC
    assert (record.event_time, record.service, record.level, record.host) == (
        ts(2021, 3, 4, 5, 6, 7, 500000), 'app', '', '')
    assert decoder('1700000000 epoch').event_time == Timestamp(1700000000)


@pytest.mark.parametrize('pattern, reason', [
    ('(?P<timestamp>', 'not a regular expression'),
    (r'(?P<message>.*)', 'no (?P<timestamp>'),
    (r'(?P<timestamp>\S+) (?P<msg>.*)', "unknown named group 'msg'"),
])
def test_bad_log_pattern_is_a_value_error(pattern, reason):
    with pytest.raises(ValueError) as info:
        decoders.make_decoder('auto', pattern=pattern)
    assert reason in str(info.value)
