"""Fixes for Beam's local (bundle-based) DirectRunner, installed before a run.

Counters: each executor thread keeps one state sampler for its whole life, and
the sampler caches the scoped state of a step together with the metrics
container it was first given.  From the second bundle of a step on, counter
updates go to that first, already committed container and are lost: a
streaming run reports only its first bundle's counts.  Giving every bundle a
fresh sampler makes each bundle's counters land in its own container, which
the runner then commits.  The fix is idempotent and touches nothing else.
"""
from apache_beam.runners.direct import executor
from apache_beam.runners.worker import statesampler
from apache_beam.utils import counters

_INSTALLED = '_realtime_pipelines_fresh_sampler'


def install():
    call = executor.TransformExecutor.call
    if getattr(call, _INSTALLED, False):
        return

    def call_with_fresh_sampler(self, state_sampler):
        fresh = statesampler.StateSampler('', counters.CounterFactory())
        statesampler.set_current_tracker(fresh)
        try:
            return call(self, fresh)
        finally:
            statesampler.set_current_tracker(state_sampler)

    setattr(call_with_fresh_sampler, _INSTALLED, True)
    executor.TransformExecutor.call = call_with_fresh_sampler
