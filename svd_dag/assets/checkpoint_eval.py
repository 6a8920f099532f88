"""Checkpoint evaluation and the model registry: `fvd_eval` (FVD on the held-out split, per
checkpoint family), `registered_checkpoints` (each family's current checkpoint as an MLflow
registered-model version, with a blocking not-worse-than-champion check) and
`champion_aliases` (moves the `champion` alias; it only runs when that check passed).
"""

import datetime as dt
import hashlib
import json
import os
import tempfile
from typing import Literal, Optional

import dagster as dg
import numpy as np
import pyarrow as pa
from pydantic import Field

from svd_dag.assets.common import link_metadata, md_table, retry_transient_errors, source_version
from svd_dag.assets.checkpoint_runs import current_checkpoint
from svd_dag.curation.datasets import current_dataset
from svd_dag.resources import CatalogResource, MlflowResource, ModelStoreResource, StorageResource

GROUP = "evaluation"
FAMILIES = ["stage2_video_checkpoint", "stage3_hq_checkpoint", "i2v_checkpoint", "interpolation_checkpoint"]
REGISTERED_PREFIX = "svd-dag."
LOWER_IS_BETTER = {"fvd": True, "elo_visual_quality": False, "elo_prompt_following": False}


class FvdEvalConfig(dg.Config):
    families: list[str] = Field(default=FAMILIES, description="checkpoint assets to evaluate (their current checkpoint)")
    max_clips: int = Field(default=64, description="held-out clips used (N; the FD is biased by N: it is logged)")
    steps: int = Field(default=25, description="Euler steps per generated video")
    resize: int = Field(default=224, description="I3D input size (StyleGAN-V: 224); logged with every value")
    seed: int = 0


def _local_checkpoint(storage: StorageResource, uri: str, tmp: str) -> str:
    """A local folder holding the checkpoint: itself, or a copy of a remote (s3://) one."""
    from svd_dag.storage import local_folder

    return local_folder(uri, os.path.join(tmp, uri.rstrip("/").rsplit("/", 1)[1]), storage.options())


@dg.asset(group_name=GROUP, deps=["lvd_f_eval", "stage2_video_checkpoint", "stage3_hq_checkpoint", "i2v_checkpoint",
                                  "interpolation_checkpoint"],
          code_version=source_version("evaluation/checkpoint_fvd.py", "evaluation/fvd.py", "evaluation/i3d.py"),
          pool="gpu", kinds={"pytorch", "mlflow"})
@retry_transient_errors
def fvd_eval(context: dg.AssetExecutionContext, config: FvdEvalConfig, storage: StorageResource,
             catalog: CatalogResource, model_store: ModelStoreResource, mlflow: MlflowResource) -> dg.MaterializeResult:
    """FVD of each checkpoint family's current checkpoint against the held-out clips of `lvd_f`
    (its evaluation split, which no training saw), each generated with that clip's conditioning
    (caption, first frame, or first and last frame). I3D from the model store
    (`i3d/i3d_torchscript.pt`, StyleGAN-V's); without it a random-init I3D and every value says
    `features=random`. Protocol, N and features are logged with each value, to the catalog
    (`fvd_results`) and to MLflow, linked to the checkpoint's logged model and the eval dataset.
    """
    from svd_dag.evaluation.checkpoint_fvd import I3D_STORE_PATH, checkpoint_fvd
    from svd_dag.evaluation.fvd import FvdProtocol, I3dFeatureExtractor
    from svd_dag.sampling.generate import load_video_model
    from svd_dag.training.data import ClipDataset

    cat = catalog.catalog()
    eval_set = current_dataset(cat, "lvd_f_eval")
    eval_rows = cat.rows("SELECT * FROM lvd_f_eval ORDER BY clip_id LIMIT ?", [config.max_clips])
    i3d_path = model_store.model_store().find(I3D_STORE_PATH)
    extractor = I3dFeatureExtractor(i3d_path, FvdProtocol(resize=(config.resize, config.resize)), seed=config.seed)
    tracker = mlflow.tracker()
    run_id = tracker.start_run("fvd_eval", params={"max_clips": config.max_clips, "steps": config.steps,
                                                   "resize": config.resize, "features": extractor.features,
                                                   "eval_dataset_version": eval_set["dataset_version"]},
                               tags={"dagster.run_id": context.run.run_id, "dagster.asset": "fvd_eval"})
    with tracker.failing_run(run_id):
        tracker.log_dataset(run_id, eval_set["manifest_uri"], eval_set["dataset_version"], "lvd_f_eval", context="evaluation")
        results, skipped = [], {}
        generated, real_clips, shape_of = {}, {}, {}
        with tempfile.TemporaryDirectory() as tmp:
            for family in config.families:
                try:
                    ckpt = current_checkpoint(cat, family)
                except RuntimeError as e:
                    skipped[family] = str(e)
                    continue
                model = load_video_model(_local_checkpoint(storage, ckpt["checkpoint_uri"], tmp))
                train_cfg = model.meta["config"]
                refs = ClipDataset(eval_rows, train_cfg["num_frames"], train_cfg["target_fps"], train_cfg["height"],
                                   train_cfg["width"])
                references = [(r[0], r[1], r[3]) for r in (refs.reference(i) for i in range(len(refs))) if r is not None]
                try:
                    value, videos = checkpoint_fvd(model, references, extractor, steps=config.steps,
                                                   resize=(config.resize, config.resize), seed=config.seed)
                except ValueError as e:  # too few held-out clips of this length: say so, evaluate the rest
                    skipped[family] = str(e)
                    continue
                tracker.client().log_metric(run_id, "fvd", value["fvd"], model_id=ckpt["mlflow_model_id"],
                                            dataset_name="lvd_f_eval", dataset_digest=eval_set["dataset_version"])
                tracker.client().log_metric(run_id, f"fvd_{family}", value["fvd"])
                name = f"{family}@{ckpt['data_version']}"
                generated[name] = {ref[0]: video for ref, video in zip(references, videos)}
                real_clips.setdefault(references[0][1].shape, {}).update({ref[0]: ref[1] for ref in references})
                shape_of[name] = references[0][1].shape
                results.append({"asset": family, "variant": ckpt["variant"] or "", "data_version": ckpt["data_version"],
                                "checkpoint_uri": ckpt["checkpoint_uri"], "mlflow_model_id": ckpt["mlflow_model_id"],
                                "eval_dataset_version": eval_set["dataset_version"], "mlflow_run_id": run_id,
                                "fvd": value["fvd"], "n_real": value["n_real"], "n_fake": value["n_fake"],
                                "features": value["features"], "protocol": json.dumps(value, default=str),
                                "evaluated_at": dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)})
        proxy = _proxy_elo(generated, real_clips, shape_of)
        for r in results:
            r.update(proxy.get(f"{r['asset']}@{r['data_version']}", {"proxy_elo": None, "proxy_elo_low": None,
                                                                       "proxy_elo_high": None}))
        tracker.log_json(run_id, {"results": results, "skipped": skipped}, "fvd.json")
        tracker.finish(run_id, {}, ok=bool(results))
    if not results:
        raise ValueError(f"no checkpoint could be evaluated: {skipped}")
    cat.upsert("fvd_results", pa.Table.from_pylist(results), key=["asset", "variant", "data_version", "eval_dataset_version"])
    version = hashlib.sha256(json.dumps([(r["asset"], r["data_version"], r["fvd"]) for r in results]).encode()).hexdigest()[:16]
    return dg.MaterializeResult(
        data_version=dg.DataVersion(version),
        metadata={"fvd": md_table([{"checkpoint": r["asset"], "fvd": round(r["fvd"], 2), "N": r["n_real"],
                                    "features": r["features"],
                                    "proxy Elo (judge)": "-" if r["proxy_elo"] is None else
                                    f"{r['proxy_elo']:.0f} [{r['proxy_elo_low']:.0f}, {r['proxy_elo_high']:.0f}]"}
                                   for r in results]),
                  "protocol": dg.MetadataValue.json(json.loads(results[0]["protocol"])),
                  "skipped": dg.MetadataValue.json(skipped), "features": extractor.features,
                  "mlflow_run": link_metadata(tracker.run_link(run_id))},
    )


def _proxy_elo(generated: dict, real_clips: dict, shape_of: dict) -> dict:
    """Elo (SVD's procedure) from the automatic judge's votes between checkpoints whose videos
    have the same shape, on the same held-out clips: a proxy, labelled so wherever shown."""
    from svd_dag.evaluation.ablation import judge_votes
    from svd_dag.evaluation.elo import elo_ratings

    out = {}
    for shape, refs in real_clips.items():
        pool = {name: videos for name, videos in generated.items() if shape_of[name] == shape}
        if len(pool) < 2:
            continue
        votes = judge_votes(pool, refs, pool="checkpoints")
        for name, e in elo_ratings([(v["model_a"], v["model_b"], v["winner"]) for v in votes]).items():
            out[name] = {"proxy_elo": e.mean, "proxy_elo_low": e.ci_low, "proxy_elo_high": e.ci_high}
    return out


class MultiviewEvalConfig(dg.Config):
    steps: int = Field(default=25, description="Euler steps per generated orbit")
    seed: int = 0


@dg.asset(group_name=GROUP, deps=["multiview_checkpoint", "orbit_renders"],
          code_version=source_version("evaluation/multiview_metrics.py", "sampling/generate.py"), pool="gpu",
          kinds={"pytorch", "mlflow"})
@retry_transient_errors
def multiview_eval(context: dg.AssetExecutionContext, config: MultiviewEvalConfig, storage: StorageResource,
                   catalog: CatalogResource, model_store: ModelStoreResource, mlflow: MlflowResource
                   ) -> dg.MaterializeResult:
    """Novel-view quality of the current `multiview_checkpoint` on the held-out objects of
    `orbit_renders`: from each object's first view and camera elevation the model renders the
    orbit; PSNR and SSIM against the true views (the given first view excluded), and LPIPS
    and CLIP-S as SVD-MV reports them when their pretrained weights are in the model store
    (`lpips/alexnet.pth` + `lpips/alex.pth`, `clip/<arch>`; otherwise "not computed", never
    random). Catalog `multiview_results`; MLflow metrics linked to the checkpoint's logged model.
    """
    from svd_dag.evaluation.multiview_metrics import multiview_scores
    from svd_dag.evaluation.perceptual import clip_similarity, load_clip_for_scoring, load_lpips
    from svd_dag.sampling.generate import generate, load_video_model
    from svd_dag.storage import Store
    from svd_dag.training.clip_reader import resize_center_crop
    from svd_dag.training.data import orbit_view_indices
    from svd_dag.training.orbits import read_orbit_folder

    cat = catalog.catalog()
    ckpt = current_checkpoint(cat, "multiview_checkpoint")
    dataset = current_dataset(cat, "orbit_renders")
    held = cat.rows("SELECT * FROM orbit_renders WHERE split = 'eval' ORDER BY object_id")
    if not held:
        raise ValueError("orbit_renders holds no object out for evaluation: raise its eval_fraction")
    orbit_store = Store(dataset["manifest_uri"], storage.options())
    store = model_store.model_store()
    lpips, clip = load_lpips(store), load_clip_for_scoring(store)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model = load_video_model(_local_checkpoint(storage, ckpt["checkpoint_uri"], tmp))
        train_cfg = model.meta["config"]
        f, h, w = train_cfg["num_frames"], train_cfg["height"], train_cfg["width"]
        for obj in held:
            orbit = read_orbit_folder(orbit_store, obj["object_uri"])
            truth = np.stack([resize_center_crop(orbit.frames[j], h, w)
                              for j in orbit_view_indices(len(orbit.frames), f)])
            views = generate(model, [truth[0]], num_frames=f, height=h, width=w, steps=config.steps,
                             seed=config.seed, elevation_deg=orbit.elevation_deg)
            rows.append({"object_id": obj["object_id"], "elevation_deg": orbit.elevation_deg, "source": orbit.source,
                         **multiview_scores(views[1:], truth[1:]),
                         "lpips": lpips.distance(views[1:], truth[1:]) if lpips and min(h, w) >= 31 else None,
                         "clip_s": clip_similarity(views[1:], truth[1:], clip) if clip else None})
    psnr = float(np.mean([r["psnr"] for r in rows]))
    ssim = float(np.mean([r["ssim"] for r in rows]))
    extra = {key: (float(np.mean([r[key] for r in rows])) if rows[0][key] is not None else None)
             for key in ("lpips", "clip_s")}
    tracker = mlflow.tracker()
    run_id = tracker.start_run("multiview_eval", params={"steps": config.steps, "objects": len(rows)},
                               tags={"dagster.run_id": context.run.run_id, "dagster.asset": "multiview_eval"})
    with tracker.failing_run(run_id):
        for key, value in (("mv_psnr", psnr), ("mv_ssim", ssim), ("mv_lpips", extra["lpips"]), ("mv_clip_s", extra["clip_s"])):
            if value is None:
                continue
            tracker.client().log_metric(run_id, key, value, model_id=ckpt["mlflow_model_id"],
                                        dataset_name="orbit_renders", dataset_digest=dataset["dataset_version"])
        tracker.log_json(run_id, rows, "multiview.json")
        tracker.finish(run_id, {})
    cat.upsert("multiview_results", pa.Table.from_pylist([{
        **r, "data_version": ckpt["data_version"], "mlflow_run_id": run_id,
        "evaluated_at": dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)} for r in rows]),
        key=["object_id", "data_version"])
    return dg.MaterializeResult(
        metadata={"psnr": psnr, "ssim": ssim,
                  **{k: v if v is not None else "not computed (no pretrained weights in the model store)"
                     for k, v in extra.items()},
                  "objects": md_table([{k: (round(v, 3) if isinstance(v, float) else v)
                                                                    for k, v in r.items()} for r in rows]),
                  "views_scored_per_object": f - 1, "mlflow_run": link_metadata(tracker.run_link(run_id)),
                  "note": "synthetic-procedural objects" if {r["source"] for r in rows} == {"synthetic-procedural"}
                  else "user orbit renders"})


class RegistryConfig(dg.Config):
    metric: Literal["fvd", "elo_visual_quality", "elo_prompt_following"] = Field(default="fvd", description="fvd (lower is better) | elo_visual_quality | elo_prompt_following")
    tolerance: float = Field(default=0.0, description="how much worse than the champion a candidate may be")


def _metric_of(cat, metric: str, row: dict) -> Optional[float]:
    if metric == "fvd":
        found = cat.rows("SELECT fvd FROM fvd_results WHERE asset = ? AND data_version = ? ORDER BY evaluated_at DESC "
                         "LIMIT 1", [row["asset"], row["data_version"]]) if "fvd_results" in cat.tables() else []
        return found[0]["fvd"] if found else None
    axis = metric.removeprefix("elo_")
    if "elo_ratings" not in cat.tables():
        return None
    found = cat.rows("SELECT elo FROM elo_ratings WHERE axis = ? AND rater_kind = 'human' AND model IN (?, ?) "
                     "ORDER BY computed_at DESC LIMIT 1",
                     [axis, row["data_version"], f"{row['asset']}@{row['data_version']}"])
    return found[0]["elo"] if found else None


@dg.asset(group_name=GROUP, deps=[fvd_eval, "elo_ratings"], code_version=source_version("tracking.py", "lineage/checks.py"),
          kinds={"mlflow"},
          check_specs=[dg.AssetCheckSpec("not_worse_than_champion", asset="registered_checkpoints", blocking=True,
                                         description="each candidate is not worse than its family's champion on the "
                                                     "configured metric; blocks the alias move otherwise")])
@retry_transient_errors
def registered_checkpoints(context: dg.AssetExecutionContext, config: RegistryConfig, catalog: CatalogResource,
                           mlflow: MlflowResource) -> dg.MaterializeResult:
    """Each family's current checkpoint as a version of the MLflow registered model
    `svd-dag.<family>` (source = the checkpoint URI, linked to its logged model and training
    run), with the configured metric as a tag. The blocking check compares every candidate to
    its family's `champion`; `champion_aliases` moves the aliases only when it passes.
    A checkpoint is registered only when its lineage is complete and no evaluation clip leaked
    into its training or its ancestors' (the checkpoint assets' blocking checks, asked again
    here against the record as it is now); one that fails is listed with the reason.
    """
    from svd_dag.lineage.datasheet import judge

    if config.metric not in LOWER_IS_BETTER:
        raise ValueError(f"metric must be one of {sorted(LOWER_IS_BETTER)}, got {config.metric!r}")
    cat, tracker = catalog.catalog(), mlflow.tracker()
    client = tracker.client()
    from mlflow.exceptions import MlflowException

    rows = []
    for family in FAMILIES:
        try:
            ckpt = current_checkpoint(cat, family)
        except RuntimeError:
            continue
        name = REGISTERED_PREFIX + family
        refused = judge(cat, family, ckpt["data_version"], ckpt["variant"]).why_not()
        if refused:
            context.log.warning(f"{family}@{ckpt['data_version']} is not registered: {refused}")
            rows.append({"family": family, "registered_model": name, "version": "", "metric": config.metric,
                         "value": None, "champion_version": None, "passes": False, "why": f"not registered: {refused}"})
            continue
        try:
            client.get_registered_model(name)
        except MlflowException:
            client.create_registered_model(name, description=f"svd-dag {family} checkpoints (weights in storage)")
        existing = [v for v in client.search_model_versions(f"name = '{name}'")
                    if v.tags.get("svd_dag.data_version") == ckpt["data_version"]]
        value = _metric_of(cat, config.metric, ckpt)
        tags = {"svd_dag.data_version": ckpt["data_version"], "svd_dag.checkpoint_uri": ckpt["checkpoint_uri"],
                "svd_dag.dataset_version": ckpt["dataset_version"], f"svd_dag.{config.metric}": str(value)}
        version = existing[0] if existing else client.create_model_version(
            name, source=ckpt["checkpoint_uri"], run_id=ckpt["mlflow_run_id"], tags=tags, model_id=ckpt["mlflow_model_id"])
        try:
            champion = client.get_model_version_by_alias(name, "champion")
        except MlflowException:
            champion = None
        best = None if champion is None else _metric_of(cat, config.metric, {"asset": family,
                                                                            "data_version": champion.tags.get("svd_dag.data_version")})
        if champion is None or champion.version == version.version:
            ok, why = True, "no champion yet" if champion is None else "already the champion"
        elif value is None:
            ok, why = False, f"the candidate has no {config.metric}"
        elif best is None:
            ok, why = True, f"the champion has no {config.metric}"
        elif LOWER_IS_BETTER[config.metric]:
            ok, why = value <= best + config.tolerance, f"{value:.4g} vs champion {best:.4g} (lower is better)"
        else:
            ok, why = value >= best - config.tolerance, f"{value:.4g} vs champion {best:.4g} (higher is better)"
        rows.append({"family": family, "registered_model": name, "version": version.version, "metric": config.metric,
                     "value": value, "champion_version": champion.version if champion else None, "passes": ok,
                     "why": why})
    cat.replace_table("registry_candidates", pa.Table.from_pylist(rows) if rows else pa.table({"family": pa.array([], pa.string())}))
    worse = [r["family"] for r in rows if not r["passes"] and r["version"]]
    refused = [r["family"] for r in rows if not r["version"]]
    return dg.MaterializeResult(
        metadata={"candidates": md_table([{k: r[k] for k in ("family", "version", "value", "champion_version", "why")}
                                          for r in rows]), "metric": config.metric,
                  "mlflow_models": md_table([{"registered model": r["registered_model"],
                                              "link": tracker.model_link(r["registered_model"])} for r in rows])},
        check_results=[dg.AssetCheckResult(check_name="not_worse_than_champion", passed=not worse,
                                           metadata={"worse": ", ".join(worse) or "-",
                                                     "not_registered": ", ".join(refused) or "-"})],
    )


@dg.asset(group_name=GROUP, deps=[registered_checkpoints], code_version=source_version("tracking.py"), kinds={"mlflow"})
@retry_transient_errors
def champion_aliases(context: dg.AssetExecutionContext, catalog: CatalogResource, mlflow: MlflowResource) -> dg.MaterializeResult:
    """Points each family's `champion` alias at the candidate `registered_checkpoints` just
    registered. Downstream of a blocking check: it never runs when a candidate is worse."""
    cat, tracker = catalog.catalog(), mlflow.tracker()
    moved = []
    for r in cat.rows("SELECT * FROM registry_candidates WHERE passes"):
        tracker.client().set_registered_model_alias(r["registered_model"], "champion", r["version"])
        moved.append({"registered_model": r["registered_model"], "champion": r["version"],
                      "link": tracker.model_link(r["registered_model"])})
    return dg.MaterializeResult(metadata={"champions": md_table(moved)})


checkpoint_eval_assets = [fvd_eval, multiview_eval, registered_checkpoints, champion_aliases]
