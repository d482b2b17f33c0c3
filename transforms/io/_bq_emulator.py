"""A `test_client` for Beam's WriteToBigQuery that points at a BigQuery emulator.

Why a hybrid: apache_beam.io.gcp.bigquery_tools.BigQueryWrapper(client=X) uses X for BOTH
  * self.client        -> apitools calls: X.tables.Get / X.tables.Insert / X.jobs.Insert ...
  * self.gcp_bq_client -> google-cloud-bigquery call: X.insert_rows_json(...)  (streaming inserts)
So X must be an apitools BigqueryV2 (pointed at the emulator URL) that also has insert_rows_json
delegating to a google.cloud.bigquery.Client (pointed at the same emulator).

The object is pickled with the DoFn, so it pickles as (endpoint, project) and rebuilds lazily.
"""
from __future__ import annotations

import time

from apache_beam.io.gcp.internal.clients.bigquery import bigquery_v2_client


class EmulatorBigQueryClient(bigquery_v2_client.BigqueryV2):
    # FILE_LOADS with with_auto_sharding=True reads test_client.test_clock
    test_clock = staticmethod(time.time)

    def __init__(self, endpoint: str, project: str):
        self._endpoint = endpoint.rstrip("/")          # e.g. http://127.0.0.1:9050
        self._project = project
        super().__init__(
            url=f"{self._endpoint}/bigquery/v2/",
            get_credentials=False,                      # no ADC/metadata lookups; emulator ignores auth
            response_encoding="utf8",
        )
        self._gcp = None

    # google-cloud-bigquery half (used by BigQueryWrapper._insert_all_rows)
    @property
    def gcp_client(self):
        if self._gcp is None:
            from google.auth.credentials import AnonymousCredentials
            from google.cloud import bigquery
            self._gcp = bigquery.Client(
                project=self._project,
                credentials=AnonymousCredentials(),
                client_options={"api_endpoint": self._endpoint})
        return self._gcp

    def insert_rows_json(self, *args, **kwargs):
        return self.gcp_client.insert_rows_json(*args, **kwargs)

    def __reduce__(self):
        return (EmulatorBigQueryClient, (self._endpoint, self._project))
