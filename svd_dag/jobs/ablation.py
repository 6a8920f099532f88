"""The curation study's jobs: one cell of the threshold grid at a time (a partition, or a
backfill of many from the UI), and the report that ranks the cells."""

import dagster as dg

filter_ablation_job = dg.define_asset_job(
    "filter_ablation_cell",
    selection=dg.AssetSelection.assets("filter_ablation"),
    # Partitioned like the asset it selects (criterion x level): one run per cell.
    description="one criterion x level cell: subset from the annotations, small model, probe samples",
)

ablation_report_job = dg.define_asset_job(
    "curation_study_report",
    selection=dg.AssetSelection.assets("filter_ablation_report"),
    description="rank the materialized cells by Elo (human votes, else the proxy judge) and recommend thresholds",
)
