"""Run a whole job's ``build()`` over a TestStream of payloads, as the local
runner runs a stream: event times, watermarks and clock stated by the test.

The job reads the stream in place of its source (the only thing swapped);
everything after the read -- decoding, windows, the ``KeepLate`` grouping,
dead letters, sinks -- is the job's own wiring."""
import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.testing.test_stream import TestStream
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from pipelines import options as job_options
from pipelines import run
from transforms import io


class Played(beam.PTransform):
    """``PBegin -> PCollection[bytes]``: the TestStream, each payload counted
    ``read`` as a source counts it."""

    def __init__(self, stream: TestStream, job: str):
        super().__init__()
        self._stream = stream
        self._job = job

    def expand(self, pbegin):
        read = Metrics.counter(self._job, 'read')
        return (pbegin
                | 'Play' >> self._stream
                | 'CountRead' >> beam.Map(io.counted, read))

    def blocks(self):
        return None

    def stream_blocks(self):
        return None    # one payload per element, as a Kafka record is


def add(stream: TestStream, *timed):
    """Adds (event time seconds, payload bytes) pairs in one bundle."""
    return stream.add_elements([TimestampedValue(payload, Timestamp.of(t))
                                for t, payload in timed])


def run_job(job_module, stream, monkeypatch, tmp_path, argv, check):
    """Builds ``job_module`` in streaming mode on the local runner with
    ``stream`` as its source; ``check(outputs)`` adds its ``assert_that``s
    to the outputs by table.  Returns the run summary."""
    args, beam_options = job_options.parse(job_module.OPTIONS, [
        '--streaming', '--sink', f'parquet://{tmp_path / "out"}', *argv])
    job = job_module.OPTIONS.JOB
    context = io.Context(job=job, streaming=True, keeps_late=True)
    monkeypatch.setattr(io, 'open_source',
                        lambda text, context: Played(stream, job))
    pipeline = beam.Pipeline(options=beam_options)
    check(job_module.build(pipeline, args, context))
    result = pipeline.run()
    result.wait_until_finish()
    return run.summarize(run.counters(result, job))
