"""Evaluation job: ingest preference votes and re-rate, plus a sensor on the votes root.

The job selects the two assets by name rather than the whole `evaluation` group, so that a
new vote file never triggers heavier evaluation assets added to that group later. The
sensor starts switched off, like the others (turn it on in the UI).
"""

import hashlib
import json

import dagster as dg

from svd_dag.evaluation.votes import list_vote_files
from svd_dag.resources import StorageResource

evaluation_job = dg.define_asset_job(
    "evaluation",
    selection=dg.AssetSelection.assets("preference_votes", "elo_ratings"),
    description="Ingest new preference vote files, then recompute Elo / Bradley-Terry ratings (logged to MLflow).",
)


@dg.sensor(
    job=evaluation_job,
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Requests an evaluation run when vote files under the votes root are added, removed or resized.",
)
def new_vote_files_sensor(context: dg.SensorEvaluationContext, votes_storage: StorageResource):
    store = votes_storage.store()
    try:
        listing = [[uri, store.size(uri)] for uri in list_vote_files(store)]
    except FileNotFoundError as e:
        return dg.SkipReason(str(e))
    fingerprint = hashlib.sha256(json.dumps(listing).encode()).hexdigest()[:16]
    if context.cursor == fingerprint:
        return dg.SkipReason(f"no change under {store.root} ({len(listing)} vote files)")
    context.update_cursor(fingerprint)
    return dg.RunRequest(run_key=fingerprint, tags={"svd_dag/vote_files": str(len(listing))})
