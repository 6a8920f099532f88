"""OpenLineage resource: where the export sends its events."""

from typing import Optional

import dagster as dg


class OpenLineageResource(dg.ConfigurableResource):
    """`file`: JSON lines, one event each, appended (default `$SVD_DAG_HOME/openlineage/events.jsonl`;
    none: no file); `url`: an OpenLineage HTTP endpoint such as Marquez (`http://marquez:5000`,
    events POSTed to `<url>/<endpoint>`); `api_key` from `dg.EnvVar("SVD_DAG_OPENLINEAGE_API_KEY")`,
    sent as a bearer token; `namespace`: of the jobs and datasets."""

    namespace: str = "svd-dag"
    file: Optional[str] = None
    url: Optional[str] = None
    api_key: Optional[str] = None
    endpoint: str = "api/v1/lineage"
    timeout_s: float = 5.0

    def emitter(self):
        from svd_dag.lineage.openlineage import OpenLineageEmitter

        return OpenLineageEmitter(self.namespace, file=self.file, url=self.url, api_key=self.api_key,
                                  endpoint=self.endpoint, timeout_s=self.timeout_s)
