"""The two blocking lineage checks every checkpoint asset carries: `lineage_complete` and
`no_eval_leak` (svd_dag.lineage.checks computes them; `registered_checkpoints` asks them again)."""

from __future__ import annotations

import dagster as dg

LINEAGE_CHECKS = ("lineage_complete", "no_eval_leak")


def lineage_check_specs(asset: str, checks: tuple[str, ...] = LINEAGE_CHECKS) -> list[dg.AssetCheckSpec]:
    """The two blocking lineage checks every checkpoint asset carries (they gate the registry)."""
    described = {"lineage_complete": "every link of `svd-dag lineage up` resolves to a stored record",
                 "no_eval_leak": "no clip (with eval_split_by=video: no video) of the evaluation split is among the "
                                 "clips this checkpoint or any ancestor trained on"}
    return [dg.AssetCheckSpec(name, asset=asset, blocking=True, description=described[name]) for name in checks]


def lineage_check_results(trained: list, checks: tuple[str, ...] = LINEAGE_CHECKS) -> list[dg.AssetCheckResult]:
    """One result per check for an asset that trained one checkpoint or several (camera LoRAs):
    `trained` are assets.training.TrainedCheckpoint, each with its lineage verdict."""
    missing = [m for t in trained for m in t.verdict.report["missing"]]
    leaks = [leak for t in trained for leak in t.verdict.leaks["leaks"]]
    leak_count = sum(t.verdict.leaks["leak_count"] for t in trained)
    results = [
        dg.AssetCheckResult(check_name="lineage_complete", passed=not missing,
                            metadata={"missing": dg.MetadataValue.json(missing[:50])},
                            description="; ".join(missing[:3]) or None),
        dg.AssetCheckResult(check_name="no_eval_leak", passed=leak_count == 0,
                            metadata={"leaks": leak_count, "examples": dg.MetadataValue.json(leaks[:20]),
                                      "eval_versions": dg.MetadataValue.json(
                                          sorted({v for t in trained for v in t.verdict.leaks["eval_versions"]}))},
                            description=f"{leak_count} held-out clips among the training clips" if leak_count else None),
    ]
    return [r for r in results if r.check_name in checks]
