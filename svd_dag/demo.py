"""The main command: curate the sample videos, train the three stages and the fine-tunes (tiny), and report.

    make demo        (or: .venv/bin/python -m svd_dag.demo)

Runs the `recuration`, `training` and `finetunes` jobs in this process against the Dagster instance under
$SVD_DAG_HOME/dagster, so the run and its materializations show up in the UI afterwards.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import sys

from svd_dag.environment import apply_offline_defaults, ensure_dagster_home
from svd_dag.settings import bundled_samples_dir, load_settings


def main() -> int:
    apply_offline_defaults()
    settings = load_settings()
    os.environ["DAGSTER_HOME"] = ensure_dagster_home(settings.dagster_home)

    import dagster as dg

    from svd_dag.catalog import Catalog
    from svd_dag.definitions import build_defs

    from svd_dag.demo_progress import log_path_for, output_to_log, run_with_progress

    demo_corpus = not settings.raw_uri
    if demo_corpus:  # the bundled footage + synthetic camera shots from real photos (svd_dag/demo_corpus.py)
        from svd_dag.demo_corpus import make_demo_corpus

        settings = dataclasses.replace(settings, raw_uri=make_demo_corpus(os.path.join(settings.home, "demo_raw"),
                                                                          str(bundled_samples_dir())))
    defs = build_defs(settings)
    raw = settings.raw_uri
    log_path = log_path_for(settings.home)
    # The bundled samples cut into ~8 clips: the paper's percentile filters would keep one. The demo
    # keeps every clip in lvd_f, holds 20% out for evaluation, and shows what filtering does in the
    # curation study (motion at 12.5 / 25 / 50% removed) instead. Real runs use the asset defaults.
    lvd_f = DEMO_LVD_F if demo_corpus else {}
    with dg.DagsterInstance.get() as instance, output_to_log(log_path) as terminal:
        def run(job_name: str, **kwargs):
            job = defs.resolve_job_def(job_name)
            return run_with_progress(instance, job, terminal, lambda: job.execute_in_process(
                instance=instance, raise_on_error=False, **kwargs))

        terminal.write(f"[svd-dag] curating raw videos from {raw} (full logs: {log_path})\n")
        if lvd_f:
            terminal.write(f"[svd-dag] demo lvd_f settings (few clips): {lvd_f}\n")
        result = run("recuration", run_config={"ops": {"lvd_f": {"config": lvd_f}}} if lvd_f else None)
        if result.success:
            terminal.write("[svd-dag] training the three SVD stages in the tiny profile (accelerate subprocesses)\n")
            result = run("training")
        if result.success:
            terminal.write("[svd-dag] fine-tuning I2V, interpolation, multi-view and camera LoRAs (tiny), with "
                           "sample videos\n")
            result = run("finetunes")
        if result.success:
            result = _evaluate(run, terminal)
    cat = Catalog.from_settings(settings)
    _report(cat, settings, raw)
    print(f"\nfull logs (Dagster events, library output, training subprocesses): {log_path}")
    if not result.success:
        print(f"[svd-dag] the run FAILED: the step errors are in {log_path} (or open the UI)", file=sys.stderr)
        return 1
    return 0


DEMO_LVD_F = {"motion_remove": 0.0, "aesthetics_remove": 0.0, "caption_similarity_remove": 0.0, "text_remove": 0.0,
              "eval_fraction": 0.2}
STUDY_LEVELS = ("12.5", "25", "50")


def _evaluate(run, terminal):
    """FVD on the held-out clips, registry + champion aliases, then the motion row of the study."""
    import dagster as dg

    terminal.write("[svd-dag] evaluating: FVD on held-out clips, proxy-judge Elo, MLflow registry and champion "
                   "aliases\n")
    result = run("model_quality", run_config={"ops": {"fvd_eval": {"config": {"steps": 4, "resize": 112}}}})
    if not result.success:
        return result
    terminal.write("[svd-dag] curation study: motion threshold at 12.5 / 25 / 50% removed (one small model each)\n")
    for level in STUDY_LEVELS:
        result = run("filter_ablation_cell", partition_key=dg.MultiPartitionKey({"criterion": "motion", "level": level}))
        if not result.success:
            return result
    return run("curation_study_report")


def _leaderboard(cat, settings) -> None:
    tables = cat.tables()
    if "fvd_results" in tables:
        print("\n=== leaderboard (tiny profile; FVD features=random: a random-init I3D, comparable only within this run; "
              "Elo from the automatic judge: a proxy, not human votes) ===")
        print(f"  {'checkpoint':<26} {'FVD':>9} {'N':>3}  {'proxy Elo [95% interval]':<26} MLflow")
        for r in cat.rows("SELECT * FROM fvd_results QUALIFY row_number() OVER (PARTITION BY asset ORDER BY evaluated_at DESC) = 1 "
                          "ORDER BY fvd"):
            elo = "-" if r["proxy_elo"] is None else f"{r['proxy_elo']:.0f} [{r['proxy_elo_low']:.0f}, {r['proxy_elo_high']:.0f}]"
            print(f"  {r['asset']:<26} {r['fvd']:>9.2f} {r['n_real']:>3}  {elo:<26} run {r['mlflow_run_id']}, "
                  f"model {r['mlflow_model_id']}")
    if "elo_ratings" in tables:
        for r in cat.rows("SELECT * FROM elo_ratings ORDER BY pool, axis, rater_kind, elo DESC"):
            print(f"  votes [{r['pool']}/{r['axis']}/{r['rater_kind']}] {r['model']:<30} Elo {r['elo']:.0f} "
                  f"[{r['elo_low']:.0f}, {r['elo_high']:.0f}]")
    if "ablation_results" in tables:
        print("curation study (Elo from the automatic judge unless human votes exist):")
        for r in cat.rows("SELECT * FROM ablation_results ORDER BY criterion, remove_fraction"):
            print(f"  {r['criterion']:<18} remove {r['level']:>4}%  Elo {r['elo']:.0f} [{r['elo_low']:.0f}, "
                  f"{r['elo_high']:.0f}]  ({r['rater_kind']})")
        for r in cat.rows("SELECT * FROM ablation_recommendations"):
            print(f"  recommended: {r['criterion']} {r['level']}% removed ({r['rater_kind']} votes"
                  f"{'' if r['separated'] else '; intervals overlap: not a clear winner'}); "
                  "adopt with lvd_f config use_ablation_recommendations: true")
    from svd_dag.redact import redact

    shown = redact(settings.mlflow_tracking_uri)
    print(f"MLflow: {shown}  (.venv/bin/mlflow ui --backend-store-uri {shown}); "
          "registered models svd-dag.<family> with a 'champion' alias")


def _report(cat, settings, raw: str) -> None:
    tables = cat.tables()
    print("\n=== svd-dag curation ===")
    if "raw_videos" in tables:
        for r in cat.rows("SELECT status, count(*) AS n FROM raw_videos GROUP BY status ORDER BY status"):
            print(f"raw videos {r['status']:<12} {r['n']}")
    if "clips" in tables:
        print("clips per video:")
        for r in cat.rows(
            "SELECT video_uri, count(*) AS n, round(sum(duration_s), 1) AS secs FROM clips GROUP BY video_uri ORDER BY video_uri"
        ):
            print(f"  {os.path.basename(r['video_uri']):<40} {r['n']:>3} clips  {r['secs']:>6} s")
    if "dataset_versions" in tables:
        import json

        from svd_dag.curation.datasets import current_dataset

        for asset in ("lvd_f", "hq_finetune_set"):
            try:
                latest = [current_dataset(cat, asset)]
            except RuntimeError:
                continue
            report = json.loads(latest[0]["report"])
            print(f"{asset} {latest[0]['dataset_version']}: kept {latest[0]['kept']} of {latest[0]['total']} clips "
                  f"(scores: weights={report['weights']})")
            for name, n in report["removed_by_criterion"].items():
                frac = report["thresholds"]["remove_fractions"][name]
                cut = report["cutoffs"][name]
                cut_s = "-" if cut is None else f"{cut:.4g}"
                print(f"  removed by {name:<19} {n:>3}  (bottom {frac:.1%}, cutoff {cut_s}, unscored {report['unscored'][name]})")
            print(f"  manifest: {latest[0]['manifest_uri']}")
    if "shard_indexes" in tables:
        for r in cat.rows("SELECT s.*, (SELECT sum(shard_size) FROM clip_shards c JOIN lvd_f USING (clip_id) "
                          "WHERE c.encode_key = s.encode_key) AS bytes FROM shard_indexes s "
                          "WHERE dataset_asset = 'lvd_f' ORDER BY created_at DESC LIMIT 1"):
            print(f"clip_shards (encode key {r['encode_key']}): {r['sharded']} of {r['clips']} lvd_f clips as H.264 in "
                  f"tar shards, {float(r['bytes'] or 0) / 2**20:.1f} MB; index {r['index_uri']}")
    if "quarantine" in tables:
        q = cat.quarantined()
        print(f"quarantined inputs: {len(q)}")
        for r in q[:10]:
            print(f"  [{r['stage']}] {r['reason']}")
    if "checkpoints" in tables:
        print("checkpoints (tiny profile: VAE fitted on these clips, random-init text/image encoders, real training;"
              " text prompts are the clips' CoCa captions, random-weight gibberish unless CoCa weights are in the store):")
        for r in cat.rows("SELECT asset, coalesce(variant, '') AS variant, checkpoint_uri, steps, dataset_version, "
                          "mlflow_run_id FROM checkpoints QUALIFY row_number() OVER "
                          "(PARTITION BY asset, coalesce(variant, '') ORDER BY created_at DESC) = 1 ORDER BY created_at"):
            name = f"{r['asset']}:{r['variant']}" if r["variant"] else r["asset"]
            print(f"  {name:<34} {r['steps']:>4} steps  data {r['dataset_version']}  {r['checkpoint_uri']}")
            print(f"  {'':<34} MLflow run {r['mlflow_run_id']}")
            _print_samples(r["checkpoint_uri"], indent=" " * 37)
        _leaderboard(cat, settings)
        _lineage(cat, settings)
    print(f"data:    {settings.storage_uri}")
    print(f"catalog: {cat.path}")
    print(f"  ask it: SVD_DAG_HOME={shlex.quote(settings.home)} .venv/bin/svd-dag sql 'SELECT * FROM lvd_f LIMIT 5'")
    print("open the Dagster and MLflow UIs on the same home (loopback; Ctrl-C stops both):")
    print(f"  SVD_DAG_HOME={shlex.quote(settings.home)} make ui   # Dagster http://127.0.0.1:3000, "
          "MLflow http://127.0.0.1:5000")


def _lineage(cat, settings) -> None:
    """The audit in one command: the raw bytes behind the I2V model."""
    from svd_dag.lineage.up import LineageError, lineage_up

    try:
        report = lineage_up(cat, "i2v_checkpoint")
    except LineageError:
        return
    top = report["checkpoint"]
    print(f"\n=== lineage of i2v_checkpoint@{top['data_version']} "
          f"({' <- '.join(link['asset'] for link in report['chain'])}) ===")
    shas = {v["sha256"]: v["uri"] for videos in report["raw_videos"].values() for v in videos or []}
    for sha, uri in sorted(shas.items(), key=lambda kv: kv[1]):
        print(f"  raw video {sha}  {uri}")
    print(f"  {'complete' if not report['missing'] else 'MISSING: ' + '; '.join(report['missing'])}")
    home = shlex.quote(settings.home)
    print(f"  the whole report: SVD_DAG_HOME={home} .venv/bin/svd-dag lineage up i2v_checkpoint  (down <sha256>, verify)")


def _print_samples(checkpoint_uri: str, indent: str) -> None:
    import json

    index = os.path.join(checkpoint_uri, "samples", "samples.json")
    if "://" in checkpoint_uri or not os.path.exists(index):
        return
    with open(index) as f:
        samples = json.load(f)["samples"]
    for s in samples:
        given = s["conditioning"]
        if given.startswith("prompt"):  # captions from the curation's CoCa: random weights unless the store has them
            given = f"caption {given[7:47]!s}..." if len(given) > 50 else given
        print(f"{indent}sample video ({given}): {os.path.join(checkpoint_uri, s['mp4'])}")


if __name__ == "__main__":
    sys.exit(main())
