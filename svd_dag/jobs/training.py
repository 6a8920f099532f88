"""Training job: the hq subset and the three stage checkpoints, in order."""

import dagster as dg

training_job = dg.define_asset_job(
    "training",
    selection=dg.AssetSelection.groups("training"),
    description="hq_finetune_set, then stage I -> II -> III checkpoints (profile in each asset's config).",
)

finetunes_job = dg.define_asset_job(
    "finetunes",
    selection=dg.AssetSelection.groups("finetunes") | dg.AssetSelection.assets("multiview_eval"),
    description="camera labels and orbit renders, then I2V -> interpolation, multi-view (+ its PSNR/SSIM on held-out "
                "objects) and camera LoRAs, each ending with rendered sample videos.",
)
