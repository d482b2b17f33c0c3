"""Production readiness, checked offline: Flex Template files generated from
the options, every template parameter accepted by the job's real parser, the
Dataflow job description (dry run, nothing submitted), a portable pipeline
a Flink cluster can run, and stable, unique transform names (so that a
running streaming job can be updated in place)."""
import json
import os
import re

import apache_beam as beam
import pytest
from apache_beam.portability import common_urns

from pipelines import JOBS, REPO_ROOT, options, run, templates
from transforms import io
import importlib

SNAPSHOTS = REPO_ROOT / 'tests' / 'pipelines' / 'snapshots'
# Example values for options whose default is empty.
EXAMPLES = {'dead_letter': 'parquet://dead',
            'alerts': 'kafka://localhost:9092/alerts', 'mask_key': 'secret',
            'syslog_year': '2026',
            'log_pattern': r'(?P<timestamp>\S+) (?P<message>.*)',
            'time_format': '%Y-%m-%d', 'trend_low': '-5.5',
            'trend_high': '80.5', 'calibration': 'gs://demo/calibration.csv'}
DATAFLOW = ['--runner', 'DataflowRunner', '--project', 'demo-project',
            '--region', 'europe-west1', '--temp_location', 'gs://demo/tmp',
            '--job_name', 'dry-run', '--dry_run=True', '--no_auth',
            '--sdk_location=container']
# What a portable runner (Flink, Dataflow runner v2) executes itself, or
# hands to the Python SDK harness.
PORTABLE = {
    common_urns.primitives.PAR_DO.urn,
    common_urns.primitives.GROUP_BY_KEY.urn,
    common_urns.primitives.IMPULSE.urn,
    common_urns.primitives.FLATTEN.urn,
    common_urns.primitives.ASSIGN_WINDOWS.urn,
    common_urns.composites.COMBINE_PER_KEY.urn,
    common_urns.composites.RESHUFFLE.urn,
    common_urns.combine_components.COMBINE_PER_KEY_PRECOMBINE.urn,
    common_urns.combine_components.COMBINE_PER_KEY_MERGE_ACCUMULATORS.urn,
    common_urns.combine_components.COMBINE_PER_KEY_EXTRACT_OUTPUTS.urn,
}


@pytest.fixture
def replay_file(tmp_path):
    path = tmp_path / 'in.log'
    path.write_bytes(b'{"timestamp":"2026-01-01T00:00:00Z","service":"a"}\n')
    return path


# The steps each job's Dataflow description must hold.
STEPS = {
    'logs': ('Read', 'DecodePartials', 'ServiceStats', 'Alerts',
             'WriteServiceStats', 'WriteAlerts', 'WriteDeadLetters',
             'MaskDeadLetters'),
    'trades': ('Read', 'DecodePartials', 'Bars', 'PriceAnomalies', 'Gaps',
               'Anomalies', 'WriteBars', 'WriteAnomalies', 'WriteDeadLetters'),
    'video_qoe': ('Read', 'DecodeFragments', 'GroupShard',
                  'SessionsAndRollups', 'GroupHour', 'Rollups', 'Alerts',
                  'WriteSessions', 'WriteRollups', 'WriteAlerts',
                  'WriteDeadLetters'),
    'sensors': ('Read', 'DecodePartials', 'CalibrationTable', 'Stats',
                'Incidents', 'WriteStats', 'WriteAnomalies',
                'WriteDeadLetters'),
}


def graph(job, argv):
    """The job's pipeline, built by its real parser and build(), not run."""
    module = importlib.import_module(JOBS[job])
    args, beam_options = options.parse(module.OPTIONS, argv)
    streaming = beam_options.view_as(
        beam.options.pipeline_options.StandardOptions).streaming
    pipeline = beam.Pipeline(options=beam_options)
    module.build(pipeline, args, io.Context(
        job, bool(streaming), runner=options.runner_name(beam_options)))
    return pipeline


def leaf_urns(proto):
    return {t.unique_name: t.spec.urn
            for t in proto.components.transforms.values()
            if not t.subtransforms}


@pytest.mark.parametrize('job', JOBS)
def test_template_files_are_generated_from_the_options(job):
    assert templates.stale() == [], (
        'run  python -m pipelines.templates --write')
    meta = json.loads((REPO_ROOT / f'templates/{job}/metadata.json')
                      .read_text())
    names = [p['name'] for p in meta['parameters']]
    assert len(names) == len(set(names))
    assert {'source', 'sink', 'dead_letter', 'window', 'trigger'} <= set(names)
    for param in meta['parameters']:
        assert param['label'] and param['helpText'], param


@pytest.mark.parametrize('job', JOBS)
def test_every_template_parameter_parses_through_the_job_parser(job):
    module = importlib.import_module(JOBS[job])
    parser = options.job_parser(module.OPTIONS)
    defaults = {a.dest: a.default for a in parser._actions}
    meta = templates.metadata(job)
    for param in meta['parameters']:
        name = param['name']
        value = EXAMPLES.get(name, defaults[name])
        value = str(value)
        for regex in param.get('regexes', []):
            assert re.match(regex, value), (name, value, regex)
        args, _ = options.parse(module.OPTIONS, [f'--{name}={value}'])
        assert str(getattr(args, name)) == value, name
    # A value its regex refuses, the parser refuses too.
    for name, bad in (('window', 'fixed:1x'), ('trigger', 'early=-1'),
                      ('source', 'no-scheme')):
        param = next(p for p in meta['parameters'] if p['name'] == name)
        if any(re.match(r, bad) for r in param.get('regexes', [])):
            continue           # the regex is looser; the parser still says no
        with pytest.raises(SystemExit):
            options.parse(module.OPTIONS, [f'--{name}={bad}'])


@pytest.mark.parametrize('job', JOBS)
def test_dataflow_dry_run_describes_the_job_steps(replay_file, job):
    pipeline = graph(job, ['--source', f'file://{replay_file}',
                           '--sink', 'parquet://gs://demo/out'] + DATAFLOW)
    result = pipeline.run()           # dry run: the description, no request
    proto = result.job.proto_pipeline
    root = proto.components.transforms[proto.root_transform_ids[0]]
    steps = [proto.components.transforms[t].unique_name
             for t in root.subtransforms]
    assert set(STEPS[job]) <= set(steps), steps
    assert result.job.proto.name == 'dry-run'
    # Every Python transform runs in the container the job names.
    environments = proto.components.environments
    assert environments and all(
        e.urn == common_urns.environments.DOCKER.urn
        for e in environments.values())


@pytest.mark.parametrize('job', JOBS)
def test_a_streaming_dataflow_job_reads_pubsub_and_writes_bigquery(job):
    """Pub/Sub in (deduplicated by Dataflow's id_label, not by our own
    keyed deduplication), BigQuery streaming inserts and Kafka alerts out."""
    pipeline = graph(job, [
        '--source', 'pubsub://projects/demo-project/subscriptions/events-in'
                    '?id_attribute=event_id&timestamp_attribute=event_time',
        '--sink', 'bigquery://demo-project:analytics.rtp_',
        '--alerts', 'kafka://broker:9092/alerts', '--streaming'] + DATAFLOW)
    result = pipeline.run()
    proto = result.job.proto_pipeline
    names = [t.unique_name for t in proto.components.transforms.values()]
    assert any(n.endswith('ReadFromPubSub') for n in names), names
    assert not any('Deduplicate' in n for n in names)
    assert any('WriteToBigQuery' in n or n.endswith('/Write') for n in names)
    assert any(n.startswith('Publish') for n in names)
    reads = []

    class FindReads(beam.pipeline.PipelineVisitor):
        def enter_composite_transform(self, node):
            if isinstance(node.transform, beam.io.ReadFromPubSub):
                reads.append(node.transform._source)  # pylint: disable=protected-access

    pipeline.visit(FindReads())
    assert [(r.id_label, r.timestamp_attribute) for r in reads] == [
        ('event_id', 'event_time')]


@pytest.mark.parametrize('job, argv', [
    ('logs', ['--execution', 'columnar']),
    ('logs', ['--execution', 'element']),
    ('logs', ['--templates', 'on']),
    ('trades', []),
    ('video_qoe', ['--execution', 'columnar']),
    ('video_qoe', ['--execution', 'element']),
    ('sensors', ['--execution', 'columnar']),
    ('sensors', ['--execution', 'element']),
])
def test_the_portable_form_has_only_portable_transforms(replay_file, job,
                                                        argv):
    pipeline = graph(job, ['--source', f'file://{replay_file}'] + argv)
    urns = leaf_urns(pipeline.to_runner_api())
    foreign = {name: urn for name, urn in urns.items() if urn not in PORTABLE}
    assert not foreign


def test_a_streaming_dataflow_job_mines_templates():
    """--templates on: the stateful miner translates for Dataflow, and the
    template tables are written and template alerts published."""
    pipeline = graph('logs', [
        '--source', 'pubsub://projects/demo-project/subscriptions/events-in',
        '--sink', 'bigquery://demo-project:analytics.rtp_',
        '--alerts', 'kafka://broker:9092/alerts', '--streaming',
        '--templates', 'on'] + DATAFLOW)
    result = pipeline.run()
    proto = result.job.proto_pipeline
    root = proto.components.transforms[proto.root_transform_ids[0]]
    steps = {proto.components.transforms[t].unique_name
             for t in root.subtransforms}
    assert {'MineTemplates', 'TemplateStats', 'TemplateRateAlerts',
            'WriteTemplates', 'WriteTemplateAlerts',
            'PublishTemplateAlerts'} <= steps, steps


def test_a_synthetic_stream_is_not_portable_and_is_refused_remotely(capsys):
    pipeline = graph('logs', ['--streaming'])
    urns = set(leaf_urns(pipeline.to_runner_api()).values())
    assert common_urns.primitives.TEST_STREAM.urn in urns
    with pytest.raises(SystemExit) as err:
        run.run(importlib.import_module('pipelines.logs'),
                ['--streaming', '--runner', 'FlinkRunner'])
    assert err.value.code == 2
    assert 'only the local runner' in capsys.readouterr().err


UNSTABLE = re.compile(r'0x[0-9a-f]+|<lambda|object at|line \d+|\.py:\d+')


@pytest.mark.parametrize('job', JOBS)
@pytest.mark.parametrize('mode', ['batch', 'streaming'])
def test_transform_names_are_unique_and_stable(replay_file, job, mode):
    argv = ['--source', f'file://{replay_file}'] if mode == 'batch' \
        else ['--streaming']
    proto = graph(job, argv).to_runner_api()
    names = [t.unique_name for t in proto.components.transforms.values()]
    assert len(names) == len(set(names))
    unstable = [n for n in names if UNSTABLE.search(n)]
    assert not unstable
    snapshot = SNAPSHOTS / f'{job}-{mode}.txt'
    text = '\n'.join(sorted(names)) + '\n'
    if os.environ.get('UPDATE_SNAPSHOTS'):
        snapshot.write_text(text, encoding='utf-8')
    assert snapshot.read_text(encoding='utf-8') == text, (
        'transform names changed: a running streaming job could not be '
        'updated in place.  If intended, run with UPDATE_SNAPSHOTS=1 and '
        'give --transform_name_mapping when updating (docs/production.md)')
