"""Realtime Pipelines: Apache Beam streaming jobs over one shared transform library.

``--setup_file ./setup.py`` ships the ``pipelines`` and ``transforms`` packages to
Dataflow and Flink workers; the pinned runtime dependencies come from
requirements.txt so that workers run what the tests ran.
"""
import os

import setuptools

HERE = os.path.dirname(os.path.abspath(__file__))


def _requirements():
  with open(os.path.join(HERE, 'requirements.txt'), encoding='utf-8') as f:
    return [
        line.strip() for line in f
        if line.strip() and not line.lstrip().startswith(('#', '-'))
    ]


setuptools.setup(
    name='realtime-pipelines',
    version='0.1.0',
    description='Apache Beam streaming jobs: logs, trades, video QoE, sensors.',
    packages=setuptools.find_packages(include=['pipelines', 'pipelines.*',
                                               'transforms', 'transforms.*']),
    python_requires='>=3.10',
    install_requires=_requirements(),
)
