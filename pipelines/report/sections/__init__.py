"""The sections of the run report: one module per job behind this registry,
and :mod:`common` for what every job shows.

A job module defines ``TITLE``, ``PANES`` = (table, key columns, metric)
or (table, key columns, metric, {column: value} rows to keep) for the panes
figure, and ``build(section, out)`` drawing its own figures.
"""
import importlib

SECTIONS = {
    'logs': 'pipelines.report.sections.logs',
    'trades': 'pipelines.report.sections.trades',
    'video_qoe': 'pipelines.report.sections.video_qoe',
    'sensors': 'pipelines.report.sections.sensors',
}


def section_module(job):
    return importlib.import_module(SECTIONS[job])
