"""The main command: curate the sample videos, train the three stages (tiny), and report.

    make demo        (or: .venv/bin/python -m svd_dag.demo)

Runs the `recuration` then the `training` job in this process against the Dagster instance under
$SVD_DAG_HOME/dagster, so the run and its materializations show up in the UI afterwards.
"""

from __future__ import annotations

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

    defs = build_defs(settings)
    raw = settings.raw_uri or str(bundled_samples_dir())
    print(f"[svd-dag] curating raw videos from {raw}")
    with dg.DagsterInstance.get() as instance:
        result = defs.resolve_job_def("recuration").execute_in_process(instance=instance, raise_on_error=False)
        if result.success:
            print("[svd-dag] training the three SVD stages in the tiny profile (accelerate subprocesses)")
            result = defs.resolve_job_def("training").execute_in_process(instance=instance, raise_on_error=False)
    cat = Catalog(settings.catalog_path)
    _report(cat, settings, raw)
    if not result.success:
        print("[svd-dag] the run FAILED; see the step errors above (or open the UI)", file=sys.stderr)
        return 1
    return 0


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
            print(f"  {os.path.basename(r['video_uri']):<28} {r['n']:>3} clips  {r['secs']:>6} s")
    if "dataset_versions" in tables:
        import json

        for asset in ("lvd_f", "hq_finetune_set"):
            latest = cat.rows("SELECT * FROM dataset_versions WHERE asset = ? ORDER BY created_at DESC LIMIT 1", [asset])
            if not latest:
                continue
            report = json.loads(latest[0]["report"])
            print(f"{asset} {latest[0]['dataset_version']}: kept {report['kept']} of {report['total']} clips "
                  f"(scores: weights={report['weights']})")
            for name, n in report["removed_by_criterion"].items():
                frac = report["thresholds"]["remove_fractions"][name]
                cut = report["cutoffs"][name]
                cut_s = "-" if cut is None else f"{cut:.4g}"
                print(f"  removed by {name:<19} {n:>3}  (bottom {frac:.1%}, cutoff {cut_s}, unscored {report['unscored'][name]})")
            print(f"  manifest: {latest[0]['manifest_uri']}")
    if "quarantine" in tables:
        q = cat.quarantined()
        print(f"quarantined inputs: {len(q)}")
        for r in q[:10]:
            print(f"  [{r['stage']}] {r['reason']}")
    if "checkpoints" in tables:
        print("checkpoints (tiny profile: random-init VAE and text encoder, real training):")
        for r in cat.rows("SELECT asset, checkpoint_uri, steps, dataset_version, mlflow_run_id FROM checkpoints "
                          "QUALIFY row_number() OVER (PARTITION BY asset ORDER BY created_at DESC) = 1 ORDER BY asset"):
            print(f"  {r['asset']:<24} {r['steps']:>4} steps  data {r['dataset_version']}  {r['checkpoint_uri']}")
            print(f"  {'':<24} MLflow run {r['mlflow_run_id']}")
        print(f"MLflow:  {settings.mlflow_tracking_uri}  (.venv/bin/mlflow ui --backend-store-uri {settings.mlflow_tracking_uri})")
    print(f"data:    {settings.storage_uri}")
    print(f"catalog: {settings.catalog_path}  (duckdb {shlex.quote(settings.catalog_path)} 'SELECT * FROM lvd_f')")
    print("open the Dagster UI on the same instance:")
    print(f"  DAGSTER_HOME={shlex.quote(settings.dagster_home)} SVD_DAG_HOME={shlex.quote(settings.home)} "
          f".venv/bin/dagster dev -w workspace.yaml   # then http://127.0.0.1:3000")


if __name__ == "__main__":
    sys.exit(main())
