"""OpenLineage run events for asset materializations (the `openlineage-python` client).

Plain Python, no Dagster: a `MaterializationRecord` is one materialization as plain values
(the Dagster side builds them from the event log, `svd_dag/jobs/lineage.py`), and
`build_run_event` turns it into one COMPLETE `RunEvent`:

- job `<namespace>/<asset>`; run id = uuid5(dagster run id, asset), so exporting the same
  materialization again gives the same id (consumers such as Marquez upsert by run id);
- one input dataset per upstream asset, with the upstream data version (a content hash in
  this project) in the standard `version` facet: these are the edges;
- the asset as the output dataset, with its data version, `outputStatistics` (row count)
  and our `svd_dag` facet (the materialization's metadata as plain JSON);
- run facets: the standard `parent` (the Dagster run) and our `svd_dag` (Dagster run id,
  job, storage id, code version).

`OpenLineageEmitter` sends them through an `OpenLineageClient`: JSON lines appended to a
file, and to an HTTP endpoint (Marquez) when a URL is given. See docs/openlineage.md.
"""

from __future__ import annotations

import json
import math
import os
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import attr
from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
from openlineage.client.facet_v2 import (DatasetFacet, RunFacet, dataset_version_dataset, job_type_job,
                                         output_statistics_output_dataset, parent_run)
from openlineage.client.serde import Serde

PRODUCER = "https://github.com/svd-dag/svd-dag"
DOCS = "https://github.com/svd-dag/svd-dag/blob/main/docs/openlineage.md"
DEFAULT_NAMESPACE = "svd-dag"
# Fixed forever: run ids are uuid5 under it, and changing it would give every past
# materialization a new OpenLineage run id on re-export.
RUN_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, f"{PRODUCER}/openlineage/run")
# A metadata value larger than this (as JSON) is left out of the facet and named in
# `omitted`: histograms and sample previews are inline base64 images, which a lineage
# backend should not have to store with every event.
MAX_VALUE_BYTES = 16_384


@dataclass(frozen=True)
class MaterializationRecord:
    """One asset materialization, as plain values."""

    asset: str  # asset key as a user string, e.g. "lvd_f"
    dagster_run_id: str
    timestamp: float  # seconds since the epoch
    data_version: str | None  # Dagster's `dagster/data_version` tag: a content hash here
    input_versions: dict[str, str | None] = field(default_factory=dict)  # upstream asset -> its data version
    metadata: dict[str, Any] = field(default_factory=dict)  # plain values
    job_name: str | None = None
    storage_id: int | None = None
    code_version: str | None = None
    partition: str | None = None


@attr.define
class SvdDagDatasetFacet(DatasetFacet):
    """Our facts about a materialized asset: its metadata as plain JSON values."""

    asset: str
    dataVersion: str | None = attr.field(default=None)  # noqa: N815
    partition: str | None = attr.field(default=None)
    metadata: dict[str, Any] = attr.field(factory=dict)
    omitted: list[str] = attr.field(factory=list)  # metadata keys left out for size (MAX_VALUE_BYTES)

    @staticmethod
    def _get_schema() -> str:
        return f"{DOCS}#svd_dag-dataset-facet"


@attr.define
class SvdDagRunFacet(RunFacet):
    """The Dagster run (and event-log entry) an OpenLineage run stands for."""

    dagsterRunId: str  # noqa: N815
    dagsterJob: str | None = attr.field(default=None)  # noqa: N815
    storageId: int | None = attr.field(default=None)  # noqa: N815
    codeVersion: str | None = attr.field(default=None)  # noqa: N815

    @staticmethod
    def _get_schema() -> str:
        return f"{DOCS}#svd_dag-run-facet"


def run_id_for(dagster_run_id: str, asset: str) -> str:
    """The OpenLineage run id of `asset`'s materialization in a Dagster run (stable)."""
    return str(uuid.uuid5(RUN_ID_NAMESPACE, f"{dagster_run_id}/{asset}"))


def plain(value: Any) -> Any:
    """A JSON value for a metadata value: MetadataValue-like objects give their `.value`,
    anything else that JSON cannot hold its `str`, non-finite floats their name."""
    if hasattr(value, "value") and not isinstance(value, (str, bytes, int, float, bool, dict, list, tuple)):
        value = value.value
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return str(value)


def plain_metadata(metadata: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(kept, omitted keys): every value as plain JSON, those over MAX_VALUE_BYTES left out."""
    kept, omitted = {}, []
    for key in sorted(metadata):
        value = plain(metadata[key])
        if len(json.dumps(value)) > MAX_VALUE_BYTES:
            omitted.append(key)
        else:
            kept[key] = value
    return kept, omitted


def _time(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, tz=timezone.utc).isoformat()


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _version_facets(version: str | None) -> dict[str, DatasetFacet]:
    if version is None:
        return {}
    return {"version": dataset_version_dataset.DatasetVersionDatasetFacet(datasetVersion=version, producer=PRODUCER)}


def build_run_event(record: MaterializationRecord, namespace: str = DEFAULT_NAMESPACE) -> RunEvent:
    """The COMPLETE RunEvent of one materialization (deterministic in the record)."""
    metadata, omitted = plain_metadata(record.metadata)
    output_facets = {}
    rows = metadata.get("dagster/row_count")
    if isinstance(rows, int) and not isinstance(rows, bool):
        output_facets["outputStatistics"] = output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(
            rowCount=rows, producer=PRODUCER)
    output = OutputDataset(
        namespace, record.asset,
        facets={**_version_facets(record.data_version),
                "svd_dag": SvdDagDatasetFacet(asset=record.asset, dataVersion=record.data_version,
                                              partition=record.partition, metadata=metadata, omitted=omitted,
                                              producer=PRODUCER)},
        outputFacets=output_facets,
    )
    inputs = [InputDataset(namespace, upstream, facets=_version_facets(version))
              for upstream, version in sorted(record.input_versions.items())]
    run_facets: dict[str, RunFacet] = {
        "svd_dag": SvdDagRunFacet(dagsterRunId=record.dagster_run_id, dagsterJob=record.job_name,
                                  storageId=record.storage_id, codeVersion=record.code_version, producer=PRODUCER),
    }
    if record.job_name and _is_uuid(record.dagster_run_id):
        run_facets["parent"] = parent_run.ParentRunFacet(
            run=parent_run.Run(runId=record.dagster_run_id),
            job=parent_run.Job(namespace=namespace, name=record.job_name), producer=PRODUCER)
    job_facets = {"jobType": job_type_job.JobTypeJobFacet(processingType="BATCH", integration="DAGSTER",
                                                          jobType="ASSET", producer=PRODUCER)}
    return RunEvent(
        eventType=RunState.COMPLETE,
        eventTime=_time(record.timestamp),
        run=Run(runId=run_id_for(record.dagster_run_id, record.asset), facets=run_facets),
        job=Job(namespace=namespace, name=record.asset, facets=job_facets),
        inputs=inputs,
        outputs=[output],
        producer=PRODUCER,
    )


def to_json(event: RunEvent) -> str:
    """One event as the client serialises it (one line)."""
    return Serde.to_json(event)


def read_events(path: str) -> list[dict[str, Any]]:
    """The events of a JSON-lines file, in order."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def transport_config(file: str | None = None, url: str | None = None, api_key: str | None = None,
                     endpoint: str = "api/v1/lineage", timeout_s: float = 5.0) -> dict[str, Any]:
    """The client's transport config: JSON lines appended to `file`, and HTTP to `url` when given.

    With both, the HTTP endpoint goes first and the first failure stops the event (it is
    re-sent later, as a whole), so a backend that is down does not leave the file with the
    same event again on every retry."""
    transports: list[dict[str, Any]] = []
    if url:
        http: dict[str, Any] = {"type": "http", "url": url, "endpoint": endpoint, "timeout": timeout_s}
        if api_key:
            http["auth"] = {"type": "api_key", "apiKey": api_key}
        transports.append(http)
    if file:
        # append: one file, one event per line (opened, written and closed per event)
        transports.append({"type": "file", "log_file_path": file, "append": True})
    if not transports:
        raise ValueError("OpenLineage export needs a file or a URL")
    if len(transports) == 1:
        return transports[0]
    return {"type": "composite", "transports": transports, "continue_on_failure": False}


def build_transport(**options):
    """A client Transport from `transport_config(**options)` (the file's folder is made)."""
    from openlineage.client.transport import get_default_factory

    if options.get("file"):
        os.makedirs(os.path.dirname(os.path.abspath(options["file"])), exist_ok=True)
    return get_default_factory().create(transport_config(**options))


class OpenLineageEmitter:
    """Builds and emits one RunEvent per record; `emitted` counts what went out."""

    def __init__(self, namespace: str = DEFAULT_NAMESPACE, transport=None, **transport_options):
        from openlineage.client import OpenLineageClient

        self.namespace = namespace
        self.client = OpenLineageClient(transport=transport or build_transport(**transport_options))
        self.emitted = 0

    def emit(self, record: MaterializationRecord) -> RunEvent:
        event = build_run_event(record, self.namespace)
        self.client.emit(event)  # raises when a transport fails: the caller keeps its cursor
        self.emitted += 1
        return event

    def close(self) -> None:
        self.client.close()
