"""`raw_videos` re-inventory at corpus scale: the listing joined in the catalog (now) against a
request per file and Python rows per file (before), same root, same previous inventory, same run.

    .venv/bin/python benchmarks/inventory.py --files 10000,100000,1000000
    .venv/bin/python benchmarks/inventory.py --files 1000,10000 --s3    # moto's S3 server on 127.0.0.1
    .venv/bin/python benchmarks/inventory.py --files 100000,1000000 --paths now,dagster --listing

The scenario is the scheduled re-curation: a root of N files that a previous inventory already
holds, plus 1% new files that landed since. The N files are tiny and their previous inventory
rows are SYNTHETIC (sha256 of the name, labelled so in `reason`): nothing is hashed for them by
either path, as in production where their (size, stamp) did not change. The new files are
small non-videos, so both paths read, hash and quarantine them. Each path runs in a child
process of its own, with a catalog of its own seeded alike (so that its peak RSS, summed over the
process and its children every 50 ms, is its own):

- before: what the asset did before this change: the previous inventory as one Python dict,
  `fs.info` per listed file (a HEAD per object on S3), every row as a Python dict, the whole
  inventory from `pa.Table.from_pylist`;
- now: `take_inventory`, the asset's body (listing, one join, the fold in SQL);
- dagster: the `raw_videos` asset materialized in process, as the UI would.

Both must end with the same raw_videos rows (a digest of every row, checked here).

`--listing` adds the listing alone, each in a child process of its own: fsspec's `find(detail=True)`
turned into the table (what `Store.list_files_detailed` did before), against the streamed listing
(`Store.iter_listing` batches, then one sort). Both must give the same table (its fingerprint).
`--paths` picks which inventory paths run (the old one needs ~5 KB per file).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")

NOT_A_VIDEO = b"landed this week, not a video"
ROW_DIGEST = "SELECT uri, size_bytes, modified, sha256, status FROM raw_videos"


def _settings(home: str, raw: str):
    from svd_dag.settings import load_settings

    return load_settings({"SVD_DAG_HOME": home, "SVD_DAG_RAW_URI": raw})


def _names(n: int, tag: str) -> list[str]:
    return [f"{tag}/{i // 1000:05d}/{tag}{i:08d}.mp4" for i in range(n)]


def write_files(store, names: list[str], data: bytes) -> None:
    if store.is_local:
        for name in names:
            path = os.path.join(store.root, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)
        return
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda name: store.fs.pipe_file(store.uri(name), data), names))


def build(raw: str, n: int) -> dict:
    """N files that an earlier inventory read, and 1% more that landed since."""
    from svd_dag.storage import Store

    store = Store(raw)
    t = time.perf_counter()
    write_files(store, _names(n, "old"), b"an old video")
    write_seconds = time.perf_counter() - t
    write_files(store, _names(max(1, n // 100), "new"), NOT_A_VIDEO)
    return {"write_s": write_seconds}


def seed_previous(home: str, raw: str) -> None:
    """The earlier inventory: synthetic rows for the old files, from their listing."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from svd_dag.catalog import Catalog
    from svd_dag.curation.inventory import INVENTORY_SCHEMA
    from svd_dag.storage import Store

    listing = Store(raw).list_files_detailed()
    listing = listing.filter(pc.match_substring(listing.column("uri"), "/old/"))
    uris, n = listing.column("uri").to_pylist(), listing.num_rows
    synthetic = pa.table({
        "uri": uris, "size_bytes": listing.column("size_bytes"), "modified": listing.column("modified"),
        "sha256": [hashlib.sha256(u.encode()).hexdigest() for u in uris], "status": ["ok"] * n,
        "reason": ["synthetic inventory row (benchmark)"] * n, "container": ["mp4"] * n, "codec": ["h264"] * n,
        "fps": [24.0] * n, "frame_count": [240] * n, "width": [1280] * n, "height": [720] * n,
        "duration_s": [10.0] * n}, schema=INVENTORY_SCHEMA)
    Catalog.from_settings(_settings(home, raw)).replace_table("raw_videos", synthetic)


def inventory_before(store, cat) -> None:
    """The asset's body before the listing join (kept here as the baseline)."""
    from svd_dag.catalog import quarantine_on, release_on, replace_table_on
    from svd_dag.curation.datasets import now
    from svd_dag.curation.inventory import inventory_row, to_table
    from svd_dag.lineage.history import record_inventory_on
    from svd_dag.storage import modified_stamp

    previous = {r["uri"]: r for r in cat.rows("SELECT * FROM raw_videos")}

    def one(uri: str) -> dict:
        info = store.fs.info(uri)
        prev = previous.get(uri)
        if prev and prev["size_bytes"] == int(info["size"]) and prev["modified"] == modified_stamp(info):
            return dict(prev)
        return inventory_row(store, uri)

    with ThreadPoolExecutor(8) as pool:
        rows = list(pool.map(one, store.list_files()))
    inventory = to_table(rows)
    bad = [r for r in rows if r["status"] != "ok"]

    def commit(con):
        replace_table_on(con, "raw_videos", inventory)
        con.register("before_now", inventory)
        record_inventory_on(con, "before_now", now())
        quarantine_on(con, [{**r, "stage": "raw_videos"} for r in bad])
        release_on(con, "raw_videos", [r["uri"] for r in rows if r["status"] == "ok"])

    cat.write(commit)


def listing_by_find(store):
    """`Store.list_files_detailed` before the streamed listing (kept here as the baseline)."""
    import pyarrow as pa

    from svd_dag.storage import LISTING_SCHEMA, modified_stamp

    found = store.fs.find(store.root, detail=True)
    names = sorted(found)
    return pa.table({"uri": [store.full_uri(n) for n in names],
                     "size_bytes": [int(found[n].get("size") or 0) for n in names],
                     "modified": [modified_stamp(found[n]) for n in names]}, schema=LISTING_SCHEMA)


def run_listing_child(raw: str, how: str) -> dict:
    from scale import PeakRss

    from svd_dag.storage import Store, listing_fingerprint

    store = Store(raw)
    with PeakRss() as idle:
        time.sleep(0.2)
    with PeakRss() as rss:
        t = time.perf_counter()
        listing = listing_by_find(store) if how == "list-find" else store.list_files_detailed()
        seconds = time.perf_counter() - t
    return {"how": how, "seconds": seconds, "peak_rss_mb": rss.mb, "idle_rss_mb": idle.mb,
            "table_mb": listing.nbytes / 2**20, "rows": listing.num_rows, "digest": listing_fingerprint(listing)}


def run_child(home: str, raw: str, how: str) -> dict:
    from scale import PeakRss, timed_materialize

    from svd_dag.catalog import Catalog
    from svd_dag.curation.datasets import relation_digest
    from svd_dag.storage import Store

    settings = _settings(home, raw)
    cat = Catalog.from_settings(settings)
    with PeakRss() as rss:
        t = time.perf_counter()
        if how == "before":
            inventory_before(Store(raw), cat)
        elif how == "now":
            from svd_dag.curation.inventory import take_inventory

            take_inventory(Store(raw), cat)
        else:
            from svd_dag.definitions import build_defs

            timed_materialize(build_defs(settings), ["raw_videos"])
        seconds = time.perf_counter() - t
    t = time.perf_counter()
    Store(raw).list_files_detailed()
    listing_s = time.perf_counter() - t
    digest, rows = cat.write(lambda con: relation_digest(con, ROW_DIGEST))
    quarantined = int(cat.scalar("SELECT count(*) FROM quarantine WHERE stage = 'raw_videos'"))
    return {"how": how, "seconds": seconds, "peak_rss_mb": rss.mb, "listing_s": listing_s, "digest": digest,
            "rows": rows, "quarantined": quarantined}


def _raw_root(args, tmp: str, n: int):
    if not args.s3:
        return os.path.join(tmp, "raw"), None
    from scale import start_s3

    from svd_dag.storage import Store

    server = start_s3()

    bucket = f"raw-{n}"
    Store(f"s3://{bucket}").fs.mkdir(bucket)
    return f"s3://{bucket}/incoming", server


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", default="10000,100000")
    ap.add_argument("--s3", action="store_true", help="the root on moto's S3 server on 127.0.0.1")
    ap.add_argument("--child", nargs=3, metavar=("HOME", "RAW", "HOW"), help=argparse.SUPPRESS)
    ap.add_argument("--paths", default="before,now,dagster", help="inventory paths to run (comma-separated)")
    ap.add_argument("--listing", action="store_true", help="also the listing alone: fsspec find vs streamed")
    args = ap.parse_args()
    if args.child:
        home, raw, how = args.child
        print(json.dumps(run_listing_child(raw, how) if how.startswith("list-") else run_child(home, raw, how)))
        return
    paths = [p for p in args.paths.split(",") if p]
    rows, listings = [], []
    for n in [int(float(x)) for x in args.files.split(",")]:
        with tempfile.TemporaryDirectory(prefix="inventory-") as tmp:
            raw, server = _raw_root(args, tmp, n)
            try:
                built = build(raw, n)
                if args.listing:
                    listed = {how: child(tmp, raw, how, n) for how in ("list-find", "list-stream")}
                    if len({(r["digest"], r["rows"]) for r in listed.values()}) != 1:
                        sys.exit(f"files={n}: the two listings differ: {listed}")
                    listings.append({"files": n, **listed})
                    print(json.dumps(listings[-1]), flush=True)
                runs = {}
                for how in paths:
                    seed_previous(os.path.join(tmp, f"home-{how}"), raw)
                    runs[how] = child(tmp, raw, how, n)
            finally:
                if server is not None:
                    server.stop()
            if len({(r["digest"], r["quarantined"]) for r in runs.values()}) > 1:
                sys.exit(f"files={n}: the inventories differ: {runs}")
            rows.append({"files": n, "new": max(1, n // 100), **built, "runs": runs})
            print(json.dumps(rows[-1]), flush=True)
    where = "moto S3 on 127.0.0.1" if args.s3 else "local disk"
    print(f"\nroot: {where}; 1% new files; previous inventory rows synthetic")
    print_inventory_table(rows, paths)
    if listings:
        print_listing_table(listings)


def child(tmp: str, raw: str, how: str, n: int) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", os.path.join(tmp, f"home-{how}"), raw, how],
                          capture_output=True, text=True, env=os.environ)
    if done.returncode != 0:
        sys.exit(f"files={n} {how}: failed\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def print_inventory_table(rows: list[dict], paths: list[str]) -> None:
    cells = [(f"{p} s", lambda r, p=p: f"{r['runs'][p]['seconds']:.2f}") for p in paths]
    if "before" in paths and "now" in paths:
        cells.append(("speed-up", lambda r: f"{r['runs']['before']['seconds'] / r['runs']['now']['seconds']:.1f}x"))
    cells += [(f"{p} peak RSS MB", lambda r, p=p: f"{r['runs'][p]['peak_rss_mb']:.0f}") for p in paths if p != "dagster"]
    if "now" in paths:
        cells += [("listing alone s", lambda r: f"{r['runs']['now']['listing_s']:.2f}"),
                  ("now us/file", lambda r: f"{r['runs']['now']['seconds'] / r['files'] * 1e6:.1f}")]
    print("| files | " + " | ".join(c[0] for c in cells) + " | same rows |")
    print("|---:|" + "---:|" * len(cells) + ":---:|")
    for r in rows:
        print(f"| {r['files']:,} | " + " | ".join(c[1](r) for c in cells) + " | yes |")


def print_listing_table(listings: list[dict]) -> None:
    print("\nthe listing alone (same table from both, fingerprint checked)")
    print("| files | find s | streamed s | find peak RSS MB | streamed peak RSS MB | above idle, find KB/file | "
          "above idle, streamed KB/file | table MB |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in listings:
        f, s = r["list-find"], r["list-stream"]
        per = lambda x: (x["peak_rss_mb"] - x["idle_rss_mb"]) * 1024 / r["files"]  # noqa: E731
        print(f"| {r['files']:,} | {f['seconds']:.2f} | {s['seconds']:.2f} | {f['peak_rss_mb']:.0f} | "
              f"{s['peak_rss_mb']:.0f} | {per(f):.2f} | {per(s):.2f} | {s['table_mb']:.0f} |")


if __name__ == "__main__":
    main()
