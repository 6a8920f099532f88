"""Curation group, the filtered datasets: annotations -> `lvd_f` + `lvd_f_eval`.

Thin wiring over `svd_dag.curation.filtering` (percentile cuts in SQL) and
`svd_dag.curation.datasets` (immutable, content-addressed versions). Every per-clip step is
SQL in the catalog; Python only sees counts, cutoffs and histogram bins.
"""

from typing import Literal, Optional

import dagster as dg
from pydantic import Field

from svd_dag.assets.common import md_table, png_markdown, retry_transient_errors, source_version, uri_metadata
from svd_dag.resources import CatalogResource, StorageResource

GROUP = "curation"

ANNOTATIONS_SQL = """
CREATE OR REPLACE TABLE annotations AS
WITH v AS (SELECT annotator, model_version FROM annotator_versions)
SELECT c.clip_id, c.video_sha256, c.video_uri, c.start_frame, c.end_frame, c.start_s, c.end_s, c.duration_s,
       c.fps, c.width, c.height, c.boundary_passes,
       m.motion_score, m.mean_dx, m.mean_dy, m.divergence,
       o.text_area,
       a.aesthetic_score, a.weights AS aesthetic_weights,
       s.caption_similarity, s.weights AS caption_similarity_weights,
       cap.caption, cap.weights AS caption_weights
FROM clips c
LEFT JOIN motion_scores m ON m.clip_id = c.clip_id AND m.model_version = (SELECT model_version FROM v WHERE annotator = 'farneback')
LEFT JOIN ocr_scores o ON o.clip_id = c.clip_id AND o.model_version = (SELECT model_version FROM v WHERE annotator = 'craft')
LEFT JOIN aesthetic_scores a ON a.clip_id = c.clip_id AND a.model_version = (SELECT model_version FROM v WHERE annotator = 'laion_aesthetic')
LEFT JOIN caption_similarity s ON s.clip_id = c.clip_id AND s.model_version = (SELECT model_version FROM v WHERE annotator = 'clip_text_image')
LEFT JOIN captions cap ON cap.clip_id = c.clip_id AND cap.model_version = (SELECT model_version FROM v WHERE annotator = 'captioners')
"""
METRIC_OF = {"motion": "motion_score", "text": "text_area", "aesthetics": "aesthetic_score",
             "caption_similarity": "caption_similarity"}


@dg.asset(
    group_name=GROUP,
    deps=["motion_scores", "ocr_scores", "aesthetic_scores", "caption_similarity", "captions"],
    code_version=source_version("curation/stats.py", "curation/datasets.py", extra=ANNOTATIONS_SQL),
    kinds={"duckdb"},
)
@retry_transient_errors
def annotations(context: dg.AssetExecutionContext, storage: StorageResource, catalog: CatalogResource) -> dg.MaterializeResult:
    """The joined per-clip view the filters run on: every clip with its current motion, text,
    aesthetic, caption-similarity scores and caption. Reports the paper's Table 1 (clips,
    hours, mean clip length) and a histogram per metric, all computed in SQL.
    """
    from svd_dag.curation.datasets import annotator_snapshot, json_digest, relation_digest
    from svd_dag.curation.stats import HISTOGRAM_METRICS, histograms, histograms_png, table1

    cat = catalog.catalog()

    def join(con):
        con.execute(ANNOTATIONS_SQL)
        return (annotator_snapshot(con), table1(con), histograms(con, "annotations", list(HISTOGRAM_METRICS)),
                relation_digest(con, "SELECT * FROM annotations"))

    versions, stats, hists, (digest, n) = cat.write(join)
    random_parts = [v["annotator"] for v in versions if v["weights"] == "random"]
    label = f"weights=random ({', '.join(random_parts)})" if random_parts else "weights=pretrained"
    png = histograms_png(hists, title_suffix=f"{n} clips; {label}")
    version = json_digest([versions, digest])
    png_uri = storage.store().write_once(f"annotations/histograms-{version}.png", png)
    return dg.MaterializeResult(
        data_version=dg.DataVersion(version),
        metadata={
            "dagster/row_count": n,
            "table1_clips": stats["clips"],
            "table1_hours": round(stats["hours"], 4),
            "table1_mean_clip_s": round(stats["mean_clip_s"], 3),
            "unscored": dg.MetadataValue.json({m: h.missing for m, h in hists.items()}),
            "weights": label,
            "annotator_versions": md_table([{k: str(v) for k, v in r.items()} for r in versions]),
            "histograms": png_markdown(png, "histograms"),
            "histograms_uri": uri_metadata(png_uri),
            "catalog_table": f"{cat.path}::annotations",
        },
    )


class LvdFConfig(dg.Config):
    motion_remove: float = Field(default=0.25, description="fraction of clips removed for lowest motion")
    aesthetics_remove: float = Field(default=0.25, description="fraction removed for lowest aesthetic score")
    caption_similarity_remove: float = Field(default=0.5, description="fraction removed for lowest caption-frame similarity")
    text_remove: float = Field(default=0.25, description="fraction removed for most text")
    text_max_area: Optional[float] = Field(default=None, description="also drop clips with more text than this (the paper: 0.07)")
    eval_fraction: float = Field(default=0.1, description="share of the kept clips held out (by a stable hash) as "
                                                         "the evaluation split that training never sees")
    eval_split_by: Literal["clip", "video"] = Field(default="clip", description="clip: hash each clip_id | video: hash the video's sha256, "
                                                           "so a held-out video has no clip in training (use it once "
                                                           "there are enough videos for ~eval_fraction of them)")
    eval_seed: str = Field(default="eval", description="salt of the split's hash: another value draws another "
                                                       "held-out set of the same size, stably")
    use_ablation_recommendations: bool = Field(
        default=False, description="replace the fractions above by the levels filter_ablation_report recommends "
                                   "(criteria it has no recommendation for keep the configured fraction)")

    def fractions(self) -> dict[str, float]:
        return {"motion": self.motion_remove, "aesthetics": self.aesthetics_remove,
                "caption_similarity": self.caption_similarity_remove, "text": self.text_remove}


LVD_F_CODE = source_version("curation/filtering.py", "curation/datasets.py")
# filter_ablation_report: read only with use_ablation_recommendations, declared always so that
# a new study result shows lvd_f (and the checkpoints after it) as stale.
LVD_F_DEPS = ["annotations", "filter_ablation_report"]


@dg.multi_asset(
    group_name=GROUP,
    specs=[
        dg.AssetSpec("lvd_f", deps=LVD_F_DEPS, code_version=LVD_F_CODE, kinds={"duckdb", "parquet"},
                     description="LVD-F: the clips that survive SVD's percentile filters, minus the evaluation split"),
        dg.AssetSpec("lvd_f_eval", deps=LVD_F_DEPS, code_version=LVD_F_CODE, kinds={"duckdb", "parquet"},
                     description="the held-out evaluation split of the same lvd_f version (training never sees it)"),
    ],
    check_specs=[dg.AssetCheckSpec("keeps_clips", asset="lvd_f", blocking=True,
                                   description="fails (and blocks downstream training) when the filters keep no clip")],
)
@retry_transient_errors
def lvd_f(context: dg.AssetExecutionContext, config: LvdFConfig, storage: StorageResource, catalog: CatalogResource):
    """LVD-F, the filtered dataset, and its evaluation split, written in one catalog transaction.

    Clips that survive SVD's percentile filters (defaults: the paper's motion 25%,
    aesthetics 25%, caption similarity 50%, text 25%) are split by a stable hash into train
    (`lvd_f`) and held-out evaluation (`lvd_f_eval`) manifests. The dataset version hashes
    everything training reads (every manifest column of both splits, the thresholds and the
    annotator versions), and a version folder is written once. Every per-clip decision is
    recorded with its cutoff (`filter_decisions`). Changing a threshold re-runs only this
    SQL, never a model.
    """
    from svd_dag.curation.datasets import (MANIFEST_COLUMNS, DatasetPart, annotator_snapshot, publish_dataset,
                                           record_decisions, version_snapshot, weights_label)
    from svd_dag.curation.filtering import eval_cut, eval_held_sql, percentile_filter
    from svd_dag.curation.stats import histograms, histograms_png

    if config.eval_split_by not in ("clip", "video"):
        raise ValueError(f"eval_split_by must be clip or video, got {config.eval_split_by!r}")
    cat, store = catalog.catalog(), storage.store()
    fractions, adopted = config.fractions(), {}
    if config.use_ablation_recommendations:
        if "ablation_recommendations" not in cat.tables():
            raise ValueError("use_ablation_recommendations is set but filter_ablation_report has not run")
        adopted = {r["criterion"]: r for r in cat.rows("SELECT * FROM ablation_recommendations")}
        fractions.update({c: r["remove_fraction"] for c, r in adopted.items()})
    # The record names the recommendations adopted: the report version, the raters, and when.
    thresholds = {"remove_fractions": fractions, "text_max_area": config.text_max_area,
                  "from_ablation": {c: f"{r['level']}% ({r['rater_kind']} votes, recommended {r['computed_at']}"
                                       + (f", filter_ablation_report@{r['report_version']})" if r.get("report_version")
                                          else ")")
                                    for c, r in adopted.items()},
                  "eval_fraction": config.eval_fraction, "eval_split_by": config.eval_split_by,
                  "eval_seed": config.eval_seed}
    key = "a.clip_id" if config.eval_split_by == "clip" else "a.video_sha256"
    split = [config.eval_seed, eval_cut(config.eval_fraction)]

    def publish(con):
        """Filter, split and publish in one transaction: train and eval always come from one version."""
        result = percentile_filter(con, fractions, absolute_max_text_area=config.text_max_area)
        con.execute(f"""CREATE OR REPLACE TEMP TABLE lvd_f_split AS
                        SELECT {", ".join("a." + c.strip() for c in MANIFEST_COLUMNS.split(","))},
                               {eval_held_sql(key)} AS held
                        FROM annotations a JOIN filter_outcome o USING (clip_id) WHERE o.kept""", split)
        annotators = annotator_snapshot(con)
        report = {"thresholds": thresholds, "cutoffs": result.cutoffs, "removed_by_criterion": result.removed,
                  "unscored": result.unscored, "total": result.total, "weights": weights_label(annotators),
                  "annotators": annotators}
        published = publish_dataset(
            con, store,
            [DatasetPart("lvd_f", f"SELECT {MANIFEST_COLUMNS} FROM lvd_f_split WHERE NOT held ORDER BY clip_id"),
             DatasetPart("lvd_f_eval", f"SELECT {MANIFEST_COLUMNS} FROM lvd_f_split WHERE held ORDER BY clip_id",
                         file="eval_manifest.parquet", suffix="-eval")],
            version_inputs={"thresholds": thresholds, "annotators": annotators}, report=report, folder="lvd_f",
            total=result.total)
        record_decisions(con, published.version)
        return result, annotators, published, histograms(con, "annotations", list(METRIC_OF.values()))

    result, annotators, published, hists = cat.write(publish)
    weights = weights_label(annotators)
    snapshot = version_snapshot(cat, "lvd_f", published.version)
    version, kept, held = published.version, published.rows["lvd_f"], published.rows["lvd_f_eval"]
    if published.reused:
        context.log.info(f"lvd_f {version} was published before with this exact content: reused, nothing rewritten")
    png = histograms_png(hists, title_suffix=f"lvd_f {version}: cutoffs dashed; weights={weights}",
                         cutoffs={METRIC_OF[k]: v for k, v in result.cutoffs.items()})
    yield dg.MaterializeResult(
        asset_key="lvd_f",
        data_version=dg.DataVersion(version),
        metadata={
            "dagster/row_count": kept,
            "dataset_version": version,
            "clips_in": result.total,
            "kept": kept,
            "eval_clips": held,
            "removed_by_criterion": dg.MetadataValue.json(result.removed),
            "unscored_by_criterion": dg.MetadataValue.json(result.unscored),
            "cutoffs": dg.MetadataValue.json(result.cutoffs),
            "thresholds": dg.MetadataValue.json(thresholds),
            "annotator_versions": md_table([{k: str(v) for k, v in r.items()} for r in annotators]),
            "weights": weights,
            "manifest_uri": uri_metadata(published.manifest_uris["lvd_f"]),
            "report_uri": uri_metadata(published.report_uri),
            "reused_existing_version": published.reused,
            "catalog_snapshot": dg.MetadataValue.int(snapshot) if snapshot is not None else "unknown",
            "histograms": png_markdown(png, "metrics with cutoffs"),
            "catalog_table": f"{cat.path}::lvd_f",
        },
        check_results=[dg.AssetCheckResult(
            check_name="keeps_clips", passed=kept > 0, metadata={"kept": kept, "clips_in": result.total},
            description=None if kept else "no clip survived the filters: loosen the thresholds or add data",
        )],
    )
    yield dg.MaterializeResult(
        asset_key="lvd_f_eval",
        data_version=dg.DataVersion(f"{version}-eval"),
        metadata={"dagster/row_count": held, "dataset_version": f"{version}-eval", "parent_dataset_version": version,
                  "manifest_uri": uri_metadata(published.manifest_uris["lvd_f_eval"]),
                  "eval_fraction": config.eval_fraction, "eval_split_by": config.eval_split_by,
                  "catalog_table": f"{cat.path}::lvd_f_eval"},
    )


dataset_assets = [annotations, lvd_f]
