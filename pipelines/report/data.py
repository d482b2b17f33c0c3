"""A job's output as the report reads it: its tables (Parquet under
``DIR/TABLE/``), its run summary (``DIR/_summary.json``), and the helpers that
pick final values and tell a missing column from a bug."""
import json
import pathlib

import matplotlib.dates as mdates
import numpy as np
import pandas as pd
import pyarrow.dataset as ds

SUMMARY_FILE = '_summary.json'
PANE_FIELDS = ('window_start', 'window_end', 'pane_timing', 'pane_index')
TIMINGS = ('EARLY', 'ON_TIME', 'LATE')


class MissingColumns(Exception):
    """A table lacks columns a figure needs: the figure is skipped with a
    note on the page, the rest of the report goes on."""


class JobOutput:
    """The folder of one job's output."""

    def __init__(self, job, path):
        self.job = job
        self.path = pathlib.Path(path)
        self._tables = {}

    @property
    def summary(self):
        """The run summary written by a local run, or None."""
        path = self.path / SUMMARY_FILE
        if not path.is_file():
            return None
        return json.loads(path.read_text(encoding='utf-8'))

    def table_names(self):
        return sorted(p.name for p in self.path.iterdir()
                      if p.is_dir() and _parquet_files(p))

    def has(self, name):
        return (self.path / name).is_dir() and bool(
            _parquet_files(self.path / name))

    def table(self, name):
        """The table as a DataFrame (empty if absent); UTC timestamps."""
        if name not in self._tables:
            files = _parquet_files(self.path / name)
            if not files:
                self._tables[name] = pd.DataFrame()
            else:
                self._tables[name] = ds.dataset(
                    [str(f) for f in files], format='parquet').to_table(
                    ).to_pandas()
        return self._tables[name]


def _parquet_files(folder):
    if not folder.is_dir():
        return []
    # Files being written are named *.parquet.tmp-...; only finished ones.
    return sorted(folder.rglob('*.parquet'))


def need(frame, table, *columns):
    """Raises MissingColumns naming what the figure needs and what is there."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise MissingColumns(
            f'table {table} has no column {", ".join(missing)} '
            f'(it has: {", ".join(map(str, frame.columns)) or "nothing"})')


def final(frame, keys):
    """The final value of every key and window: the row of the highest
    pane_index (a LATE pane corrects an earlier one)."""
    if frame.empty or 'pane_index' not in frame.columns:
        return frame
    order = frame.sort_values(list(keys) + ['window_start', 'pane_index'])
    return order.drop_duplicates(list(keys) + ['window_start'], keep='last')


def times(values):
    """UTC timestamps -> matplotlib date numbers (days; axes call
    ``page.time_axis``)."""
    stamps = pd.to_datetime(pd.Series(np.asarray(values)), utc=True)
    return mdates.date2num(
        stamps.dt.tz_localize(None).to_numpy(dtype='datetime64[ns]'))
