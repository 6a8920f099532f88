"""The Dagster UI and the MLflow UI in a real browser (headless Debian Chromium through Playwright).

An MLflow UI over the home's tracking store starts first (as `make ui` does), then a curation run
and a short training run (stages I and II) are materialized into a persistent Dagster home with
metadata links pointing at that MLflow UI, then one `dagster dev` (webserver + daemon) serves that
home on 127.0.0.1 and one browser visits it: the asset graph shows every group and the curation
assets; lvd_f's page shows its latest metadata with the histogram image rendered; a checkpoint's
page plays its sample preview; its MLflow link opens the run's page with the loss curve; lvd_f
launched from the Launchpad with another `motion_remove` runs (the daemon dequeues it; the UI
first asks to confirm, as no curation study has run) and its new dataset version shows; a launch
that filters everything out shows keeps_clips failed.
Every request that leaves loopback is aborted.

The tests run in file order and share the one home: the last two add materializations.
"""

from __future__ import annotations

import functools
import json
import re
import time
import urllib.request

import pytest
from playwright.sync_api import expect

import ui_servers

KEEP_ALL = {"motion_remove": 0.0, "aesthetics_remove": 0.0, "caption_similarity_remove": 0.0, "text_remove": 0.0}
STAGES = ["stage1_image_checkpoint", "stage2_video_checkpoint"]  # stage II is the first that renders samples
CHECKPOINT = STAGES[-1]
TRAIN_STEPS = 3
GROUPS = ["curation", "training", "finetunes", "evaluation"]
RUN_TIMEOUT_MS = 180_000  # a launched run: the daemon's dequeue, the run worker and the step subprocess
HEX16 = re.compile(r"^[0-9a-f]{16}$")
expect.set_options(timeout=60_000)  # a 2-core machine busy with other tests renders slowly


@pytest.fixture(scope="module")
def ui(tmp_path_factory, bikes_path):
    ui_servers.require_browser()
    root = tmp_path_factory.mktemp("ui_browser")
    env = ui_servers.make_homes(root, [bikes_path])
    with ui_servers.MlflowUi(env, root / "mlflow_ui.log") as mlflow_ui:
        env["SVD_DAG_MLFLOW_UI_URL"] = mlflow_ui.url
        curation = ui_servers.materialize(env, "recuration", {"ops": {"lvd_f": {"config": KEEP_ALL}}}, root / "curation.log")
        assert curation["success"], (root / "curation.log").read_text()[-4000:]
        short = {"config": {"steps": TRAIN_STEPS, "checkpoint_every": TRAIN_STEPS, "vae_fit_steps": 20}}
        training = ui_servers.materialize(env, "assets:" + ",".join(STAGES), {"ops": {s: short for s in STAGES}},
                                          root / "training.log")
        assert training["success"], (root / "training.log").read_text()[-4000:]
        shots = root / "screenshots"
        shots.mkdir()
        with ui_servers.DagsterDev(env, root / "dagster_dev.log") as dev:
            yield {"dev": dev, "url": dev.url, "curation": curation, "shots": shots, "mlflow_ui": mlflow_ui.url}


@pytest.fixture(scope="module")
def browser(ui):
    with ui_servers.open_browser() as context:
        yield context


@pytest.fixture
def page(browser):
    page = browser.new_page()
    yield page
    page.close()


def explained(test):
    """A failing test's error gets a screenshot of the page and the tail of the dagster dev log."""
    @functools.wraps(test)
    def run(*args, **kwargs):
        with ui_servers.explain_failure(kwargs["page"], kwargs["ui"]["dev"], kwargs["ui"]["shots"], test.__name__):
            return test(*args, **kwargs)
    return run


@functools.cache
def asset_names(group: str) -> list[str]:
    from svd_dag.definitions import build_defs

    graph = build_defs().resolve_asset_graph()
    return sorted(k.to_user_string() for k in graph.get_all_asset_keys() if graph.get(k).group_name == group)


def metadata_value(page, key: str) -> str:
    """The value cell of `key` in the asset page's metadata table (the latest materialization)."""
    row = page.locator("tr").filter(has=page.get_by_text(key, exact=True))
    row.first.wait_for()
    assert row.count() == 1, f"{row.count()} metadata rows named {key}"
    return row.locator("td").last.inner_text().strip()


def latest_lvd_f(dev) -> dict:
    """lvd_f's latest materialization as the server has it (run id and dataset_version)."""
    data = dev.graphql("""{ assetOrError(assetKey: {path: ["lvd_f"]}) { ... on Asset {
        assetMaterializations(limit: 1) { runId metadataEntries { label ... on TextMetadataEntry { text } } } } } }""")
    [mat] = data["assetOrError"]["assetMaterializations"]
    meta = {e["label"]: e.get("text") for e in mat["metadataEntries"]}
    return {"run_id": mat["runId"], "dataset_version": meta.get("dataset_version")}


def run_status(dev, run_id: str) -> dict:
    data = dev.graphql("""query($id: ID!) { runOrError(runId: $id) { ... on Run { status runConfigYaml } } }""",
                       {"id": run_id})
    return data["runOrError"]


def launch_lvd_f(page, url: str, config_yaml: str) -> tuple[str, str]:
    """lvd_f's Materialize menu -> Open launchpad, the config typed into the editor, Materialize.
    Waits for the run page to show the run ended; returns (run id, status shown)."""
    page.goto(f"{url}/assets/lvd_f")
    page.get_by_text("dataset_version", exact=True).first.wait_for()
    # the arrow beside "Materialize" opens the menu with "Open launchpad"
    page.locator("button:right-of(:text-is('Materialize'))").first.click()
    page.get_by_role("menuitem", name="Open launchpad").click()
    # lvd_f is a multi-asset that cannot be subset: the UI says lvd_f_eval comes with it
    confirm = page.get_by_role("dialog").filter(has_text="Additional assets will be materialized")
    confirm.get_by_text("lvd_f_eval").wait_for()
    confirm.get_by_role("button", name="Confirm").click()
    # no study has run in this home: the UI asks before materializing below an unmaterialized
    # upstream (lvd_f reads filter_ablation_report only with use_ablation_recommendations)
    upstream = page.get_by_role("dialog").filter(has_text="have not been materialized yet")
    upstream.get_by_text("filter_ablation_report", exact=True).wait_for()
    upstream.get_by_role("button", name="Confirm").click()
    launchpad = page.get_by_role("dialog").filter(has_text="Launchpad")
    editor = launchpad.locator(".CodeMirror")
    launchpad.get_by_text("motion_remove: 0.25").wait_for()  # the scaffolded defaults are in the editor
    editor.click()
    page.keyboard.press("Control+A")
    page.keyboard.insert_text(config_yaml)  # like a paste: no auto-indent
    typed = page.evaluate("() => document.querySelector('.CodeMirror').CodeMirror.getValue()")
    assert typed == config_yaml, f"the launchpad's editor holds {typed!r}"
    launchpad.get_by_text("No errors", exact=True).wait_for()
    launchpad.get_by_role("button", name="Materialize").click()  # (its accessible name has the icon's too)
    page.wait_for_url(re.compile(r".*/runs/[0-9a-f-]{36}$"))
    run_id = page.url.rsplit("/", 1)[1]
    ended = page.get_by_text(re.compile(r"^(Success|Failure|Canceled)$"))
    ended.first.wait_for(timeout=RUN_TIMEOUT_MS)
    return run_id, ended.first.inner_text().strip()


@explained
def test_asset_graph_shows_every_group_and_the_curation_assets(page, ui):
    page.goto(f"{ui['url']}/asset-groups")
    graph = page.locator("svg")
    for group in GROUPS:
        graph.get_by_text(group, exact=True).first.wait_for(timeout=120_000)
    # each group's node carries its asset count
    for group in GROUPS:
        node = page.locator(f"xpath=//*[local-name()='foreignObject'][.//text()[normalize-space()='{group}']]")
        assert node.count() >= 1, f"no graph node for group {group}"
        n, text = len(asset_names(group)), node.first.text_content()  # e.g. "curation12 assets (fetching statuses)"
        assert re.search(rf"(?<!\d){n}(?!\d)", text.replace(group, "", 1)), f"group {group}'s node does not show its {n} assets: {text!r}"
    page.wait_for_timeout(1500)  # the community dialog would open 1 s after load: pre-dismissed (localStorage)
    assert not page.get_by_text("Join the Dagster community").is_visible()

    curation = asset_names("curation")
    assert {"raw_videos", "clips", "motion_scores", "ocr_scores", "clip_embeddings", "aesthetic_scores", "captions",
            "caption_similarity", "annotations", "lvd_f", "lvd_f_eval", "clip_shards"} <= set(curation)
    page.goto(f"{ui['url']}/locations/svd_dag/asset-groups/curation/lineage")
    graph = page.locator("svg")
    for name in curation:
        graph.get_by_text(name, exact=True).first.wait_for(timeout=120_000)
    # the list view: each curation asset materialized by the run made before the UI started
    page.goto(f"{ui['url']}/locations/svd_dag/asset-groups/curation/list")
    for name in curation:
        link = page.locator(f"a[href='/assets/{name}']").first
        link.wait_for()
        # the row: the outermost element around the link that holds no other asset's link
        row = link.locator(f"xpath=ancestor::div[not(.//a[starts-with(@href, '/assets/') and @href!='/assets/{name}'])][last()]")
        expect(row).to_contain_text("Materialized")  # after "Loading..."


@explained
def test_lvd_f_page_shows_metadata_and_histogram(page, ui):
    page.goto(f"{ui['url']}/assets/lvd_f")
    version = metadata_value(page, "dataset_version")
    assert HEX16.match(version), version
    assert version == ui["curation"]["dataset_versions"]["lvd_f"], "the page shows another version than the run made"
    assert metadata_value(page, "kept") == metadata_value(page, "clips_in") != "0"  # KEEP_ALL
    assert version in metadata_value(page, "manifest_uri")
    row = page.locator("tr").filter(has=page.get_by_text("histograms", exact=True))
    row.get_by_text("Show Markdown").click()
    dialog = page.get_by_role("dialog").filter(has_text="histograms")
    img = dialog.locator("img")
    img.wait_for()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=img.element_handle())
    width, height, src, alt = img.evaluate("i => [i.naturalWidth, i.naturalHeight, i.src.slice(0, 22), i.alt]")
    assert width > 200 and height > 50, (width, height)
    assert src == "data:image/png;base64,", src
    assert alt == "metrics with cutoffs"
    box = img.bounding_box()
    assert box and box["width"] > 200 and box["height"] > 50, f"the histogram is not drawn on the page: {box}"
    dialog.get_by_role("button", name="Close").click()


def open_markdown(page, key: str):
    """The dialog that a markdown metadata value's "Show Markdown" button opens."""
    row = page.locator("tr").filter(has=page.get_by_text(key, exact=True))
    row.get_by_text("Show Markdown").click()
    return page.get_by_role("dialog").filter(has_text=key)


@explained
def test_checkpoint_page_plays_its_sample_preview(page, ui):
    page.goto(f"{ui['url']}/assets/{CHECKPOINT}")
    videos = json.loads(metadata_value(page, "sample_videos"))
    assert videos and all(v.endswith(".mp4") for v in videos), videos
    dialog = open_markdown(page, "sample_preview")
    img = dialog.locator("img").first
    img.wait_for()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=img.element_handle())
    assert img.evaluate("i => i.src.slice(0, 22)") == "data:image/gif;base64,"
    assert "Euler steps" in dialog.inner_text()  # the caption under the preview
    # It plays: the GIF's frames (140 ms each here) show one after another, so snapshots of the
    # element taken 90 ms apart are not all the same picture.
    shots = set()
    for _ in range(12):
        shots.add(img.screenshot(animations="allow"))
        page.wait_for_timeout(90)
    assert len(shots) >= 3, f"the sample preview shows {len(shots)} distinct frame(s) over 1 s: it does not play"
    dialog.get_by_role("button", name="Close").click()


@explained
def test_mlflow_link_opens_the_run_page_with_its_loss_curve(page, ui):
    page.goto(f"{ui['url']}/assets/{CHECKPOINT}")
    row = page.locator("tr").filter(has=page.get_by_text("mlflow_run", exact=True))
    link = row.locator("a").first
    href = link.get_attribute("href")
    match = re.fullmatch(re.escape(ui["mlflow_ui"]) + r"/#/experiments/(\d+)/runs/([0-9a-f]{32})", href or "")
    assert match, f"mlflow_run is not a link to the MLflow UI at {ui['mlflow_ui']}: {href!r}"
    run_id = match.group(2)
    with page.context.expect_page() as opened:
        link.click()  # the UI opens URL metadata in a new tab
    run_page = opened.value
    try:
        with ui_servers.explain_failure(run_page, ui["dev"], ui["shots"], "mlflow_run_page"):
            _check_run_page(run_page, ui, run_id)
    finally:
        run_page.close()


def _check_run_page(run_page, ui, run_id: str) -> None:
    """The MLflow run page: the run named as the asset's, its loss chart drawn over the steps."""
    run_page.wait_for_load_state()
    # the MLflow UI's first page load on a busy 2-core machine takes a while (its bundle, the store)
    run_page.get_by_text(run_id).first.wait_for(timeout=180_000)
    run_page.get_by_text(f"{CHECKPOINT}-", exact=False).first.wait_for()
    run_page.get_by_role("tab", name="Model metrics").click()
    card = run_page.locator("[data-testid='experiment-view-compare-runs-card']").filter(
        has=run_page.get_by_text("loss", exact=True))
    expect(card).to_have_count(1)
    expect(card.get_by_text("Step", exact=True)).to_be_visible()  # a curve over steps, not a single bar
    points = card.locator(".js-plotly-plot path.point")
    expect(points).to_have_count(TRAIN_STEPS)  # one point per training step logged
    with urllib.request.urlopen(f"{ui['mlflow_ui']}/api/2.0/mlflow/metrics/get-history?run_id={run_id}"
                                "&metric_key=loss", timeout=30) as r:
        history = json.load(r)["metrics"]
    assert sorted(m["step"] for m in history) == list(range(1, TRAIN_STEPS + 1)), history


@explained
def test_launchpad_run_of_lvd_f_makes_a_new_dataset_version(page, ui):
    dev, url = ui["dev"], ui["url"]
    page.goto(f"{url}/assets/lvd_f")
    before = metadata_value(page, "dataset_version")
    config_yaml = ("ops:\n  lvd_f:\n    config:\n      motion_remove: 0.4\n      aesthetics_remove: 0.0\n"
                   "      caption_similarity_remove: 0.0\n      text_remove: 0.0\n")
    started = time.monotonic()
    run_id, shown = launch_lvd_f(page, url, config_yaml)
    run = run_status(dev, run_id)
    assert shown == "Success", f"the run page shows {shown}; server: {run['status']}"
    assert run["status"] == "SUCCESS"
    assert "motion_remove: 0.4" in run["runConfigYaml"], run["runConfigYaml"]
    print(f"launchpad run {run_id} ended in {time.monotonic() - started:.1f} s")

    latest = latest_lvd_f(dev)
    assert latest["run_id"] == run_id
    page.goto(f"{url}/assets/lvd_f")
    after = metadata_value(page, "dataset_version")
    assert HEX16.match(after) and after != before, (before, after)
    assert after == latest["dataset_version"]
    thresholds = json.loads(metadata_value(page, "thresholds"))
    assert thresholds["remove_fractions"]["motion"] == 0.4, thresholds
    assert int(metadata_value(page, "kept")) < int(metadata_value(page, "clips_in"))


@explained
def test_failed_asset_check_is_visible(page, ui):
    """A launch that removes (almost) everything: the run materializes lvd_f with no clip, then fails
    on its blocking keeps_clips check, and the Checks tab shows that evaluation."""
    run_id, shown = launch_lvd_f(page, ui["url"], "ops:\n  lvd_f:\n    config:\n" + "".join(
        f"      {k}: 0.99\n" for k in KEEP_ALL))
    assert shown == "Failure", shown
    assert run_status(ui["dev"], run_id)["status"] == "FAILURE"
    page.goto(f"{ui['url']}/assets/lvd_f?view=checks")
    page.get_by_text("no clip survived the filters: loosen the thresholds or add data").wait_for()
    result = page.get_by_text("Evaluation result", exact=True).locator("xpath=..")
    assert "Failed" in result.inner_text() and "Execution failed" not in result.inner_text(), result.inner_text()
    kept = page.locator("tr").filter(has=page.get_by_text("kept", exact=True))
    assert kept.locator("td").last.inner_text().strip() == "0"
