"""The jobs: one module per job, each wiring library transforms together."""
import pathlib

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

# name -> module; `python -m pipelines` lists them.
JOBS = {
    'logs': 'pipelines.logs',
    'trades': 'pipelines.trades',
    'video_qoe': 'pipelines.video_qoe',
    'sensors': 'pipelines.sensors',
}
