"""OpenLineage export: a sensor that sends every new asset materialization as a RunEvent.

The cursor is the event-log storage id of the last materialization sent. It moves only
past events whose emit returned, so a crash or an unreachable backend never skips one:
the next tick sends the rest (an event may then be sent twice, with the same run id).
The events themselves are built in `svd_dag/lineage/openlineage.py`.
"""

from __future__ import annotations

import dagster as dg

from svd_dag.resources.lineage import OpenLineageResource

BATCH = 500  # materializations per tick

# The tags Dagster writes on every materialization (dagster/_core/definitions/data_version.py):
# the asset's own data version and, per upstream asset (every dep, not only loaded inputs),
# the data version it read. "logical_version" is the name older Dagster releases used.
DATA_VERSION_TAGS = ("dagster/data_version", "dagster/logical_version")
INPUT_VERSION_PREFIXES = ("dagster/input_data_version/", "dagster/input_logical_version/")
CODE_VERSION_TAG = "dagster/code_version"
NEVER_MATERIALIZED = "INITIAL"  # Dagster's data version of an upstream that has no event yet


class ExportError(RuntimeError):
    """An emit failed; `cursor` is the storage id of the last event that did go out."""

    def __init__(self, cursor: int, storage_id: int, error: Exception):
        causes = [error]
        while causes[-1].__cause__ is not None and len(causes) < 5:  # the client wraps the transport's error
            causes.append(causes[-1].__cause__)
        super().__init__(f"OpenLineage export failed at event-log storage id {storage_id}: "
                         + ": ".join(str(c) for c in causes))
        self.cursor = cursor


def record_of(event_record):
    """A plain `MaterializationRecord` from a Dagster `EventLogRecord` of a materialization."""
    from svd_dag.lineage.openlineage import MaterializationRecord

    entry = event_record.event_log_entry
    mat = event_record.asset_materialization
    tags = dict(mat.tags or {})
    inputs: dict[str, str | None] = {}
    for tag, version in tags.items():
        for prefix in INPUT_VERSION_PREFIXES:
            if tag.startswith(prefix):
                inputs.setdefault(tag[len(prefix):], None if version == NEVER_MATERIALIZED else version)
    return MaterializationRecord(
        asset=mat.asset_key.to_user_string(),
        dagster_run_id=entry.run_id,
        timestamp=entry.timestamp,
        data_version=next((tags[t] for t in DATA_VERSION_TAGS if t in tags), None),
        input_versions=inputs,
        metadata={k: getattr(v, "value", v) for k, v in (mat.metadata or {}).items()},
        job_name=entry.job_name,
        storage_id=event_record.storage_id,
        code_version=tags.get(CODE_VERSION_TAG),
        partition=mat.partition,
    )


def new_materializations(instance: dg.DagsterInstance, cursor: int, limit: int) -> list:
    """The first `limit` materialization records after storage id `cursor`, oldest first.

    `fetch_materializations` takes one asset key (the all-events query is deprecated): each
    key materialized since the cursor gives its first `limit` after it; merged and cut to
    `limit`, nothing below the last one returned can be missing."""
    records = []
    for asset in instance.get_asset_records():
        last = asset.asset_entry.last_materialization_storage_id
        if last is None or last <= cursor:
            continue
        result = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=asset.asset_entry.asset_key, after_storage_id=cursor), limit=limit,
            ascending=True)
        records.extend(result.records)
    return sorted(records, key=lambda r: r.storage_id)[:limit]


def export_new_materializations(instance: dg.DagsterInstance, emitter, cursor: int = 0, limit: int = BATCH) -> int:
    """Emit every materialization after `cursor` (at most `limit`), oldest first; returns
    the new cursor. Raises `ExportError` (carrying the cursor reached) when an emit fails."""
    for event_record in new_materializations(instance, cursor, limit):
        try:
            emitter.emit(record_of(event_record))
        except Exception as error:
            raise ExportError(cursor, event_record.storage_id, error) from error
        cursor = event_record.storage_id
    return cursor


@dg.sensor(
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Sends every new asset materialization as an OpenLineage RunEvent: JSON lines under the home, "
                "and to SVD_DAG_OPENLINEAGE_URL (e.g. Marquez) when set. Requests no runs.",
)
def openlineage_export_sensor(context: dg.SensorEvaluationContext, openlineage: OpenLineageResource):
    cursor = int(context.cursor or 0)
    emitter = openlineage.emitter()
    try:
        new_cursor = export_new_materializations(context.instance, emitter, cursor, BATCH)
    except ExportError as error:
        # A raised sensor error would drop the cursor update, and the events already sent
        # would go out again on every tick until the backend is back: keep the progress.
        context.update_cursor(str(error.cursor))
        context.log.error(str(error))
        return dg.SkipReason(f"sent {emitter.emitted}, then: {error}")
    finally:
        emitter.close()
    context.update_cursor(str(new_cursor))
    return dg.SkipReason(f"sent {emitter.emitted} OpenLineage events (cursor {new_cursor})")
