"""Re-curation: a job over the curation group, a weekly schedule and a new-video sensor.

Both the schedule and the sensor start switched off (turn them on in the UI). Re-curation
is incremental by construction: unchanged videos are not decoded again and unchanged
annotators do not re-score, so a weekly run costs what is new.
"""


import hashlib
import json

import dagster as dg

from svd_dag.resources import StorageResource

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
    listing = []
    for uri in store.list_files():
        info = store.fs.info(uri)
        listing.append([uri, int(info.get("size") or 0), str(info.get("ETag") or info.get("mtime") or "")])
    fingerprint = hashlib.sha256(json.dumps(listing).encode()).hexdigest()[:16]
    if context.cursor == fingerprint:
        return dg.SkipReason(f"no change under {store.root} ({len(listing)} files)")
    context.update_cursor(fingerprint)
    return dg.RunRequest(run_key=fingerprint, tags={"svd_dag/raw_files": str(len(listing))})
