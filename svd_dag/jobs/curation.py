"""Re-curation: a job over the curation group, a weekly schedule and a new-video sensor.

Both the schedule and the sensor start switched off (turn them on in the UI). Re-curation
is incremental by construction: unchanged videos are not decoded again and unchanged
annotators do not re-score, so a weekly run costs what is new.
"""


import dagster as dg

from svd_dag.resources import StorageResource
from svd_dag.storage import listing_fingerprint

recuration_job = dg.define_asset_job(
    "recuration",
    selection=dg.AssetSelection.groups("curation"),
    description="Inventory raw video, cut, annotate and filter into a new lvd_f version, then transcode its new "
                "clips into clip_shards (incremental).",
)

weekly_recuration = dg.ScheduleDefinition(
    name="weekly_recuration",
    job=recuration_job,
    cron_schedule="0 3 * * 1",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Mondays 03:00: re-curate whatever landed during the week.",
)


@dg.sensor(
    job=recuration_job,
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Requests a re-curation run when files under the raw root are added, removed or changed.",
)
def new_raw_video_sensor(context: dg.SensorEvaluationContext, raw_storage: StorageResource):
    store = raw_storage.store()
    listing = store.list_files_detailed()  # one LIST, no request per file
    fingerprint = listing_fingerprint(listing)
    if context.cursor == fingerprint:
        return dg.SkipReason(f"no change under {store.root} ({listing.num_rows:,} files)")
    context.update_cursor(fingerprint)
    return dg.RunRequest(run_key=fingerprint, tags={"svd_dag/raw_files": str(listing.num_rows)})
