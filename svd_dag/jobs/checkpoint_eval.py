"""Model-quality job: FVD on the held-out split, registry versions, then (only if the blocking
not-worse-than-champion check passes) the `champion` aliases."""

import dagster as dg

model_quality_job = dg.define_asset_job(
    "model_quality",
    selection=dg.AssetSelection.assets("fvd_eval", "registered_checkpoints", "champion_aliases"),
    description="fvd_eval -> registered_checkpoints (blocking check) -> champion_aliases",
)
