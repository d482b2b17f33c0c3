"""The jobs: one module per job, each wiring library transforms together."""

# name -> module; `python -m pipelines` lists them.
JOBS = {
    'logs': 'pipelines.logs',
}
