"""Shared test helpers."""
import pathlib

import pytest

from pipelines import local_runner

# Counters of the local runner must count every bundle (see local_runner).
local_runner.install()

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO.parent / 'shared'


@pytest.fixture
def shared_dir():
    if not SHARED.is_dir():
        pytest.skip('the shared benchmark data (../shared) is not present')
    return SHARED
