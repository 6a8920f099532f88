"""The curation study (SPEC 2.6) as assets: `filter_ablation` (one partition per criterion x
level: subset -> small model -> probe samples) and `filter_ablation_report` (votes -> Elo per
cell -> a recommended threshold per criterion, which `lvd_f` can adopt).

Subsets come from the existing annotations (no annotator re-runs); every cell trains the
`ablation` preset of the one training entry point, inflated from the base image model (not
from stage I, which trains on lvd_f: the study decides lvd_f), and renders the same probe
prompts (captions of fixed clips) with the same seeds.
"""

import datetime as dt
import hashlib
import io
import json

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from svd_dag.assets.common import link_metadata, md_table, retry_transient_errors, source_version
from svd_dag.curation.datasets import MANIFEST_COLUMNS
from svd_dag.assets.lineage_checks import lineage_check_results, lineage_check_specs
from svd_dag.assets.checkpoint_runs import TRAINING_CODE, StageConfig, checkpoint_metadata, train_checkpoint
from svd_dag.evaluation.ablation import CRITERIA, LEVELS
from svd_dag.evaluation.votes import canonical_model_id
from svd_dag.resources import (CatalogResource, MlflowResource, ModelStoreResource, StorageResource,
                               TrainingLauncherResource)

GROUP = "evaluation"
ABLATION_PARTITIONS = dg.MultiPartitionsDefinition({
    "criterion": dg.StaticPartitionsDefinition(list(CRITERIA)),
    "level": dg.StaticPartitionsDefinition(list(LEVELS)),
})
PROBE_CLIPS = 3


class AblationConfig(StageConfig):
    probe_clips: int = Field(default=PROBE_CLIPS, description="fixed probe clips whose captions every cell renders")


def _probe_manifest(cat, store, count: int) -> tuple[str, list[str]]:
    """The fixed probe set: the first `count` annotated clips (by clip_id) with a caption; its
    manifest URI and clip ids (which no cell trains on: the judge compares samples with these
    real clips, and a cell that had seen them would be rewarded for memorising)."""
    probe = cat.query(f"SELECT {MANIFEST_COLUMNS} FROM annotations WHERE caption IS NOT NULL AND caption <> '' "
                      "ORDER BY clip_id LIMIT ?", [count])
    if probe.num_rows == 0:
        raise ValueError("no annotated clip has a caption: the ablation has no probe prompts")
    ids = probe.column("clip_id").to_pylist()
    digest = hashlib.sha256(json.dumps(ids).encode()).hexdigest()[:12]
    buf = io.BytesIO()
    pq.write_table(probe, buf)
    return store.write_once(f"filter_ablation/probe/{digest}/manifest.parquet", buf.getvalue()), ids


# Not downstream of stage I: stage I trains on lvd_f, which adopts this study's result (lvd_f
# depends on filter_ablation_report), so the cells start from the base image model instead.
@dg.asset(group_name=GROUP, deps=["annotations"], partitions_def=ABLATION_PARTITIONS,
          code_version=TRAINING_CODE, pool="gpu", kinds={"pytorch", "mlflow"},
          # Only lineage_complete: the study trains on the whole annotated pool by design (held-out
          # clips included); its models are compared on probe prompts, never registered or FVD-scored.
          check_specs=lineage_check_specs("filter_ablation", ("lineage_complete",)))
@retry_transient_errors
def filter_ablation(context: dg.AssetExecutionContext, config: AblationConfig, storage: StorageResource,
                    catalog: CatalogResource, model_store: ModelStoreResource, mlflow: MlflowResource,
                    launcher: TrainingLauncherResource) -> dg.MaterializeResult:
    """One cell of the threshold study: remove `level` of the annotated clips by `criterion`
    alone (percentiles over the existing annotations), train the small `ablation` model on
    the rest (same architecture, steps and seed in every cell) and render the fixed probe
    prompts. Run or backfill any cell alone from the UI; `filter_ablation_report` ranks them.
    Each cell inflates the base image model, what stage I starts from (SD 2.1 in the full
    profile, as in the paper's study), so no cell descends from the lvd_f the study decides.
    """
    from svd_dag.curation.datasets import DatasetPart, publish_dataset
    from svd_dag.curation.filtering import percentile_filter
    from svd_dag.evaluation.ablation import cell_fractions, cell_name

    keys = context.partition_key.keys_by_dimension
    criterion, level = keys["criterion"], keys["level"]
    cell = cell_name(criterion, level)
    cat, store = catalog.catalog(), storage.store()
    fractions = cell_fractions(criterion, level)
    probe_uri, probe_ids = _probe_manifest(cat, store, config.probe_clips)

    def publish(con):
        result = percentile_filter(con, fractions, source="annotations")
        con.execute("CREATE OR REPLACE TEMP TABLE ablation_probe AS SELECT unnest(?::VARCHAR[]) AS clip_id", [probe_ids])
        return result, publish_dataset(
            con, store, [DatasetPart(f"filter_ablation:{cell}", f"SELECT {MANIFEST_COLUMNS} FROM annotations "
                                                                "JOIN filter_outcome USING (clip_id) WHERE kept AND clip_id "
                                                                "NOT IN (SELECT clip_id FROM ablation_probe) ORDER BY clip_id")],
            version_inputs={"ablation_cell": cell, "remove_fractions": fractions, "probe": probe_ids},
            report={"remove_fractions": fractions, "cutoffs": result.cutoffs, "removed": result.removed,
                    "total": result.total, "probe_clips_held_out": probe_ids},
            folder=f"filter_ablation/{criterion}/{level}", total=result.total, make_current=False)

    result, published = cat.write(publish)
    version, manifest_uri = published.version, published.manifest_uris[f"filter_ablation:{cell}"]
    dataset = {"dataset_version": version, "manifest_uri": manifest_uri, "asset": f"filter_ablation:{cell}"}
    trained = train_checkpoint(context, "ablation", config, dataset, None,
                               storage, catalog, model_store, mlflow, launcher, variant=cell,
                               extra={"sample_manifest_uri": probe_uri, "sample_count": config.probe_clips})
    return dg.MaterializeResult(
        data_version=trained.result.data_version,
        metadata={**checkpoint_metadata(trained, config.profile, store), "cell": cell,
                  "remove_fractions": dg.MetadataValue.json(fractions), "clips_kept": result.kept,
                  "clips_total": result.total, "cutoff": result.cutoffs.get(criterion),
                  "probe_clips_held_out": len(probe_ids)},
        check_results=lineage_check_results([trained], ("lineage_complete",)),
    )


class AblationReportConfig(dg.Config):
    rounds: int = Field(default=1000, description="Elo runs over shuffled vote orders (SVD: 1000)")
    tie_margin: float = Field(default=0.002, description="automatic judge: distance difference counted as a tie")
    exclude_raters: list[str] = Field(default_factory=list, description="rater ids whose votes are left out (e.g. "
                                      "raters the rating page's admin page shows failing its gold pairs)")


def _ablation_cells(cat) -> dict[str, dict]:
    if "checkpoints" not in cat.tables():
        return {}
    rows = cat.rows("SELECT * FROM checkpoints WHERE asset = 'filter_ablation' QUALIFY row_number() OVER "
                    "(PARTITION BY variant ORDER BY created_at DESC) = 1")
    return {r["variant"]: r for r in rows}


def _load_samples(store, checkpoint_uri: str) -> tuple[dict, dict]:
    from svd_dag.sampling.video_io import decode_mp4

    index_uri = f"{checkpoint_uri}/samples/samples.json"
    index = json.loads(store.read_bytes(index_uri))
    generated = {f"{s['name']}#seed{s['seed']}": decode_mp4(store.read_bytes(f"{checkpoint_uri}/{s['mp4']}"))
                 for s in index["samples"]}
    references = {}
    for s in index["samples"]:
        ref = f"{checkpoint_uri}/samples/{s['name']}-reference.mp4"
        references[f"{s['name']}#seed{s['seed']}"] = decode_mp4(store.read_bytes(ref))
    return generated, references


@dg.asset(group_name=GROUP, deps=[filter_ablation, "preference_votes"], code_version=source_version("evaluation/ablation.py", "evaluation/elo.py"),
          kinds={"duckdb", "mlflow"})
@retry_transient_errors
def filter_ablation_report(context: dg.AssetExecutionContext, config: AblationReportConfig, storage: StorageResource,
                           catalog: CatalogResource, mlflow: MlflowResource) -> dg.MaterializeResult:
    """The result of the curation study: for each criterion, the materialized cells ranked by
    Elo (SVD's: K=1, 1000 shuffled orders, 95% interval) and Bradley-Terry from votes on their
    probe samples, and the recommended level. Human votes (`preference_votes`, pool
    `ablation:<criterion>`, models named `filter_ablation:<criterion>|<level>@<data_version>`
    as `rating_tasks` names them) win; they count for the cell version the rater saw, so votes
    on a cell since retrained are left out (`human_votes_on_older_cells`). Where there are none
    the automatic proxy judge votes, and the recommendation says `judge`.
    Set `lvd_f`'s `use_ablation_recommendations` to filter with the recommended levels.
    """
    from svd_dag.evaluation.ablation import JUDGE_ID, judge_votes, recommend
    from svd_dag.evaluation.elo import bradley_terry, elo_ratings

    cat, store = catalog.catalog(), storage.store()
    cells = _ablation_cells(cat)
    human = (cat.rows("SELECT * FROM preference_votes WHERE pool LIKE 'ablation:%' AND rater_kind = 'human' "
                      "AND rater_id NOT IN (SELECT unnest(?::VARCHAR[]))", [config.exclude_raters])
             if "preference_votes" in cat.tables() else [])
    results, recommendations, judged, evidence, older_cells = [], [], [], {}, {}
    for criterion in CRITERIA:
        mine = {v: r for v, r in cells.items() if v.startswith(f"{criterion}|")}
        if len(mine) < 2:
            continue
        # A cell is rated under its canonical id: a human vote counts for the cell the rater saw
        # (the version its name resolved to when the vote was cast), never for a retrained one.
        name = {v: canonical_model_id("filter_ablation", v, r["data_version"]) for v, r in mine.items()}
        pooled = [r for r in human if r["pool"] == f"ablation:{criterion}"]
        votes = [{**r, "model_a": r["model_a_id"], "model_b": r["model_b_id"]} for r in pooled
                 if {r["model_a_id"], r["model_b_id"]} <= set(name.values())]
        older_cells[criterion] = len(pooled) - len(votes)
        kind = "human" if votes else "judge"
        if not votes:
            samples, references = {}, {}
            for v, row in mine.items():
                samples[name[v]], refs = _load_samples(store, row["checkpoint_uri"])
                references.update(refs)
            votes = judge_votes(samples, references, pool=f"ablation:{criterion}", tie_margin=config.tie_margin)
            judged += votes
        triples = [(v["model_a"], v["model_b"], v["winner"]) for v in votes]
        elo = elo_ratings(triples, rounds=config.rounds)
        bt = bradley_terry(triples)
        ratings = {}
        for v in mine:
            e, b = elo.get(name[v]), bt.get(name[v])
            if e is None:
                continue
            level = v.split("|", 1)[1]
            ratings[level] = (e.mean, e.ci_low, e.ci_high)
            results.append({"criterion": criterion, "level": level, "remove_fraction": LEVELS[level], "model": name[v],
                            "elo": e.mean, "elo_low": e.ci_low, "elo_high": e.ci_high, "bt": b.rating,
                            "bt_low": b.ci_low, "bt_high": b.ci_high, "rank": b.rank, "n_votes": e.n_votes,
                            "rater_kind": kind, "checkpoint_uri": mine[v]["checkpoint_uri"]})
        if len(ratings) >= 2:
            recommendations.append(recommend(criterion, ratings, kind).__dict__)
        evidence[criterion] = len(votes)
    if not results:
        raise ValueError("the curation study needs at least two materialized cells of one criterion "
                         "(materialize filter_ablation partitions first)")
    version = hashlib.sha256(json.dumps(results, sort_keys=True, default=str).encode()).hexdigest()[:16]
    computed_at = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    recommendations = [{**r, "computed_at": computed_at, "report_version": version} for r in recommendations]
    if judged:
        cat.replace_table("ablation_judge_votes", pa.Table.from_pylist(judged))
    cat.replace_table("ablation_results", pa.Table.from_pylist(results))
    if recommendations:
        cat.replace_table("ablation_recommendations", pa.Table.from_pylist(recommendations))
    tracker = mlflow.tracker()
    run_id = tracker.start_run("filter_ablation_report", params={"rounds": config.rounds, "judge": JUDGE_ID},
                               tags={"dagster.run_id": context.run.run_id, "dagster.asset": "filter_ablation_report"})
    with tracker.failing_run(run_id):
        for r in results:
            tracker.client().log_metric(run_id, f"elo_{r['criterion']}_{r['level'].replace('.', '_')}", r["elo"])
        tracker.log_json(run_id, {"results": results, "recommendations": recommendations}, "ablation.json")
        tracker.finish(run_id, {})
    return dg.MaterializeResult(
        data_version=dg.DataVersion(version),
        metadata={"cells": md_table([{k: (round(v, 1) if isinstance(v, float) else v) for k, v in r.items()
                                      if k in ("criterion", "level", "elo", "elo_low", "elo_high", "rank", "n_votes",
                                               "rater_kind")} for r in results]),
                  "recommendations": md_table([{k: r[k] for k in ("criterion", "level", "remove_fraction", "rater_kind",
                                                                  "separated")} for r in recommendations]),
                  "votes_per_criterion": dg.MetadataValue.json(evidence),
                  "raters_excluded": ", ".join(config.exclude_raters) or "-",
                  "human_votes_on_older_cells": dg.MetadataValue.json(
                      {c: n for c, n in older_cells.items() if n}),
                  "judge": f"{JUDGE_ID} (proxy: closeness to the probe's real clip, not human preference)"
                           if judged else "human votes only",
                  "mlflow_run": link_metadata(tracker.run_link(run_id))},
    )


ablation_assets = [filter_ablation, filter_ablation_report]
