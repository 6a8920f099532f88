"""Lineage reports as text for people: the `svd-dag lineage` output and each checkpoint's DATASHEET.md.

Hashes are printed in full (an auditor compares them with `sha256sum`); long lists are cut
at `limit` lines with a count of the rest (the `--json` output always has every row).
"""

from __future__ import annotations

import json
from typing import Any


def _kv(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str) if isinstance(value, (dict, list)) else str(value)


def _cut(lines: list[str], limit: int, what: str) -> list[str]:
    return lines if len(lines) <= limit else lines[:limit] + [f"    ... {len(lines) - limit} more {what} (--json lists all)"]


def _link_lines(link: dict[str, Any]) -> list[str]:
    code = link.get("code") or {}
    libs = code.get("libraries") or {}
    counts = link.get("clip_counts") or {}
    lines = [f"- **{link['asset']}{'[' + link['variant'] + ']' if link['variant'] else ''}@{link['data_version']}**",
             f"  - weights: {link['checkpoint_uri']}",
             f"  - trained on: {link['dataset_asset']} {link['dataset_version']} ({link.get('data_source') or '?'})",
             f"  - parent: {link['parent'] or 'none (first stage)'}",
             f"  - profile {link.get('profile')}, task {link.get('task')}, {link.get('steps')} steps, "
             f"created {link.get('created_at')}; weights: {link.get('weights') or 'not recorded'}"]
    if counts:
        lines.append(f"  - clips: {counts.get('clips_used')} used, {counts.get('clips_skipped')} skipped, "
                     f"{counts.get('clips_not_drawn')} not drawn ({link.get('clips_used_uri')})")
    if code:
        dirty = " (uncommitted changes)" if code.get("git_dirty") else ""
        lines.append(f"  - code: svd-dag {code.get('package_version')}, git {code.get('git_commit')}{dirty}, "
                     f"lock sha256 {code.get('lock_sha256')}, torch {libs.get('torch')}, diffusers "
                     f"{libs.get('diffusers')}, accelerate {libs.get('accelerate')}")
    else:
        lines.append("  - code: NOT RECORDED")
    lines.append(f"  - runs: MLflow run {link.get('mlflow_run_id')}, model {link.get('mlflow_model_id')}, "
                 f"Dagster run {link.get('dagster_run_id')}")
    for kind, results in (link.get("evals") or {}).items():
        for r in results:
            shown = {k: v for k, v in r.items() if k in ("fvd", "n_real", "features", "psnr", "ssim", "axis", "elo",
                                                         "rater_kind", "eval_dataset_version")}
            lines.append(f"  - eval {kind}: {_kv(shown)}")
    for r in link.get("registry") or []:
        lines.append(f"  - registry: {r['registered_model']} v{r['version']} aliases {r['aliases'] or '-'}")
    return lines


def _dataset_lines(version: str, ds: dict[str, Any] | None) -> list[str]:
    if ds is None:
        return [f"- {version}: NO RECORD"]
    lines = [f"- **{ds['asset']} {version}**: {ds['kept']} of {ds['total']} clips kept; manifest {ds['manifest_uri']}"
             + (f" (sha256 {ds['manifest_sha256']})" if ds.get("manifest_sha256") else "")]
    if ds.get("parent_dataset_version"):
        lines.append(f"  - filtered within {ds['parent_dataset_version']}")
    for key in ("thresholds", "cutoffs", "removed_by_criterion", "unscored"):
        if ds.get(key):
            lines.append(f"  - {key.replace('_', ' ')}: {_kv(ds[key])}")
    for a in ds.get("annotators") or []:
        flag = " **RANDOM WEIGHTS**" if a.get("random_weights") else ""
        files = json.loads(a["weights_sha256"]) if a.get("weights_sha256") else {}
        shas = "; ".join(f"{name} sha256 {sha}" for name, sha in files.items())
        lines.append(f"  - annotator {a.get('annotator')}: model {a.get('model_version')}, weights "
                     f"{a.get('weights')}{flag}{' (' + shas + ')' if shas else ''}, code {a.get('code_version') or '?'}, "
                     f"on {a.get('placement') or '?'}")
    return lines


def up_text(report: dict[str, Any], limit: int = 20) -> str:
    top = report["checkpoint"]
    lines = [f"# Lineage of {top['asset']}@{top['data_version']}", "", "## Checkpoints (this one, then its parents)"]
    for link in report["chain"]:
        lines += _link_lines(link)
    lines += ["", "## Dataset versions"]
    for version, ds in report["datasets"].items():
        lines += _dataset_lines(version, ds)
    lines += ["", "## Raw videos (sha256, uri, size, clips used)"]
    for name, videos in report["raw_videos"].items():
        if videos is None:
            lines.append(f"- {name}: no clip record")
            continue
        lines.append(f"- {name}: {len(videos)} videos")
        lines += _cut([f"    {v['sha256']}  {v['uri']}  {v['size_bytes']} B  {v['clips_used']} clips used"
                       + ("" if v["inventory"] == "present" else f"  [{v['inventory']}]") for v in videos],
                      limit, "videos")
    lines += ["", "## Completeness"]
    lines += [f"- MISSING: {m}" for m in report["missing"]] or ["- every link resolves to a stored record"]
    return "\n".join(lines) + "\n"


def down_text(report: dict[str, Any], limit: int = 20) -> str:
    lines = [f"# Everything fed by {report['query']}", ""]
    for sha, history in report["videos"].items():
        lines.append(f"- raw video {sha}")
        for h in history:
            state = ("deleted " + h["deleted_at"]) if h.get("deleted_at") else \
                (f"replaced {h['replaced_at']} by {h['replaced_by']}") if h.get("replaced_at") else "present"
            lines.append(f"    {h['uri']}  first seen {h['first_seen']}, last seen {h['last_seen']}, {state}")
    lines += ["", f"## Clips cut from it: {len(report['clips'])}"]
    lines += _cut([f"    {c['clip_id']}  frames {c['start_frame']}-{c['end_frame']}" for c in report["clips"]],
                  limit, "clips")
    lines += ["", "## Per dataset version"]
    for version, ds in report["datasets"].items():
        lines.append(f"- {ds['asset']} {version}")
        rows = []
        for c in ds["clips"]:
            why = "; ".join(f"{k['criterion']} {k['decision']} (value {k['value']}, cutoff {k['cutoff']})"
                            for k in c["criteria"])
            rows.append(f"    {c['clip_id']}: {c['outcome']}" + (f" - {why}" if why else ""))
        lines += _cut(rows, limit, "clips")
    lines += ["", "## Checkpoints it fed"]
    for f in report["checkpoints"]:
        extra = f", {f['clips_used']} clips used" if f.get("clips_used") else ""
        lines.append(f"- {f['asset']}{'[' + f['variant'] + ']' if f['variant'] else ''}@{f['data_version']}: "
                     f"{f['how']}{extra}; {f['checkpoint_uri']}")
        for kind, results in (f.get("evals") or {}).items():
            lines.append(f"    eval {kind}: {len(results)} result(s)")
        for r in f.get("registry") or []:
            lines.append(f"    registry: {r['registered_model']} v{r['version']} aliases {r['aliases'] or '-'}")
    if not report["checkpoints"]:
        lines.append("- none")
    return "\n".join(lines) + "\n"


def verify_text(report: dict[str, Any]) -> str:
    checked = ", ".join(f"{n} {k}" for k, n in sorted(report["checked"].items())) or "nothing"
    lines = [f"# verify {report['query']}: {'OK' if report['ok'] else 'MISMATCHES FOUND'}", f"checked: {checked}"]
    for u in report.get("unverifiable", []):
        lines.append(f"- (not verifiable) {u['kind']} {u['uri']}: {u['why']}")
    for p in report["problems"]:
        lines.append(f"- {p['kind']} {p['uri']}: {p['problem']}"
                     + (f" (recorded {p['expected']}, found {p['found']})" if p.get("found") else
                        f" (recorded {p['expected']})" if p.get("expected") else ""))
    return "\n".join(lines) + "\n"


def datasheet(report: dict[str, Any], leaks: dict[str, Any]) -> str:
    """DATASHEET.md: what a checkpoint is, what made it and what it was checked against."""
    top = report["checkpoint"]
    body = up_text(report, limit=50).split("\n", 1)[1]
    leak = ("no clip (or held-out video) of the evaluation splits " + ", ".join(leaks["eval_versions"])
            + " is among the clips it or its ancestors trained on") if leaks["passed"] else \
        f"{leaks['leak_count']} evaluation clips are among its training clips: {_kv(leaks['leaks'][:5])}"
    data = report["datasets"].get(top["dataset_version"]) or {}
    random_annotators = sorted({a["annotator"] for ds in report["datasets"].values() if ds
                                for a in ds.get("annotators") or [] if a.get("random_weights")})
    counts = top.get("clip_counts") or {}
    summary = [
        f"- what: `{top['asset']}`{' [' + top['variant'] + ']' if top['variant'] else ''}, task {top.get('task')}, "
        f"profile {top.get('profile')}, {top.get('steps')} steps; load it from {top['checkpoint_uri']}",
        f"- weights: {top.get('weights') or 'not recorded'}",
        f"- trained on: {data.get('asset', top['dataset_asset'])} {top['dataset_version']} "
        f"({data.get('kept', '?')} clips in the version; {counts.get('clips_used', '?')} used, "
        f"{counts.get('clips_skipped', '?')} skipped, {counts.get('clips_not_drawn', '?')} not drawn), "
        f"through {len(report['chain']) - 1} parent checkpoint(s)",
        "- curation scores from random-init annotators (their filter decisions are not meaningful): "
        + (", ".join(random_annotators) if random_annotators else "none"),
        f"- lineage: {'complete' if not report['missing'] else 'INCOMPLETE: ' + '; '.join(report['missing'][:5])}",
    ]
    return (f"# Datasheet: {top['asset']}@{top['data_version']}\n\n"
            f"Generated at training time by svd-dag; `svd-dag lineage up {top['asset']}@{top['data_version']}` "
            "gives the live view (evaluations and registry aliases that came later).\n\n"
            "## Summary\n" + "\n".join(summary) + "\n\n"
            f"## Evaluation leak check\n- {'PASSED' if leaks['passed'] else 'FAILED'}: {leak}\n" + body)
