"""3D assets: loading, headless rendering, limits, and the pipeline on the views."""

from __future__ import annotations

import json
import shutil
import tarfile

import numpy as np
import pytest

pytest.importorskip("trimesh", reason="3D assets need trimesh: pip install 'factcap[3d]'")
pytest.importorskip("pyrender", reason="3D assets need pyrender: pip install 'factcap[3d]'")
# Every test here renders (or may render) with headless OpenGL: without it they skip and say
# why (../conftest.py's probe). Rendering, a browser and whole jobs: not the fast tier.
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("headless_gl")]

import assets3d  # noqa: E402
from factcap.assets.pool import RenderPool, render_asset  # noqa: E402
from factcap.assets.spec import DEFAULT_VIEWS, AssetLimits, ViewSettings  # noqa: E402
from factcap.config import load_config  # noqa: E402
from factcap.errors import ConfigError, ImageError  # noqa: E402
from factcap.examples import example_paths  # noqa: E402

SMALL = ViewSettings(size=96)


def _render(path, settings=SMALL, limits=None):
    return render_asset(str(path), None, settings, limits)


def test_a_red_cube_is_red_centred_and_fills_every_view(tmp_path):
    asset = _render(assets3d.red_cube(tmp_path))
    assert len(asset.images) == len(DEFAULT_VIEWS) == 8
    for image in asset.images:
        mask = assets3d.foreground(image)
        assert mask.any(), "a blank view"
        ys, xs = np.nonzero(mask)
        height, width = mask.shape
        fill = max(np.ptp(ys) + 1, np.ptp(xs) + 1) / width
        assert 0.3 <= fill <= 0.9, fill
        centre = ((xs.min() + xs.max()) / 2 / width, (ys.min() + ys.max()) / 2 / height)
        assert all(abs(c - 0.5) < 0.1 for c in centre), centre
        assert assets3d.near(image, assets3d.RED) > 0.2 * mask.sum()
    assert asset.facts == {
        "format": "glb",
        "faces": 12,
        "vertices": 8,
        "points": 0,
        "geometries": 1,
        "bounds": [[-0.5, -0.5, -0.5], [0.5, 0.5, 0.5]],
        "skipped": [],
    }


def test_views_of_an_asset_differ_from_each_other(tmp_path):
    asset = _render(assets3d.six_colour_box(tmp_path))
    arrays = [np.asarray(im).astype(int) for im in asset.images]
    for i in range(8):
        for j in range(i + 1, 8):
            assert np.abs(arrays[i] - arrays[j]).mean() > 2, f"views {i} and {j} look the same"


def test_a_textured_quad_shows_its_texture(tmp_path):
    asset = _render(assets3d.textured_quad(tmp_path))
    front = asset.images[0]  # azimuth 0 looks at the quad's face
    assert assets3d.near(front, assets3d.GREEN) > 100 and assets3d.near(front, assets3d.BLUE) > 100


def test_an_obj_finds_its_mtl_and_texture_beside_it(tmp_path):
    asset = _render(assets3d.obj_with_mtl(tmp_path))
    assert asset.facts["format"] == "obj" and asset.facts["faces"] == 12
    seen = sum(
        assets3d.near(im, assets3d.GREEN) + assets3d.near(im, assets3d.BLUE) for im in asset.images
    )
    assert seen > 500, "the texture named by the MTL is not on the box"


def test_a_point_cloud_renders(tmp_path):
    asset = _render(assets3d.point_cloud(tmp_path))
    assert asset.facts["points"] == 2000 and asset.facts["faces"] == 0
    assert all(assets3d.near(im, assets3d.BLUE, tolerance=90) > 50 for im in asset.images)


def test_line_geometry_is_skipped_and_said(tmp_path):
    asset = _render(assets3d.mesh_and_line(tmp_path))
    [skipped] = asset.facts["skipped"]
    assert "axis_line" in skipped and "lines are not rendered" in skipped
    assert all(assets3d.near(im, assets3d.GREEN) > 50 for im in asset.images)


@pytest.mark.parametrize(
    ("make", "kind", "words"),
    [
        (assets3d.empty_scene, "EmptyAsset", "nothing to render"),
        (assets3d.truncated, "CorruptAsset", "cannot be read"),
    ],
)
def test_broken_assets_are_typed_errors(tmp_path, make, kind, words):
    with pytest.raises(ImageError, match=words) as info:
        _render(make(tmp_path))
    assert info.value.kind == kind


def test_limits_on_faces_and_file_size(tmp_path):
    cube = assets3d.red_cube(tmp_path)
    with pytest.raises(ImageError, match="assets.max_faces") as info:
        _render(cube, limits=AssetLimits(max_faces=11))
    assert info.value.kind == "AssetTooLarge"
    with pytest.raises(ImageError, match="assets.max_file_mb") as info:
        _render(cube, limits=AssetLimits(max_file_bytes=100))
    assert info.value.kind == "AssetTooLarge"


def test_the_render_pool_renders_in_workers_and_errors_cross_back(tmp_path):
    pool = RenderPool(1, ViewSettings(size=48))
    try:
        good = pool.submit(str(assets3d.red_cube(tmp_path)), "glb")
        bad = pool.submit(str(assets3d.empty_scene(tmp_path)), "glb")
        assert len(pool.result(good).images) == 8
        with pytest.raises(ImageError) as info:
            pool.result(bad)
        assert info.value.kind == "EmptyAsset"
    finally:
        pool.close()


def test_view_settings_from_the_config():
    settings = load_config(preset="tiny", overrides={"assets": {"views": 3, "size": 64}})
    views = settings.assets.view_settings().views
    assert [(v.azimuth, v.elevation) for v in views] == [(0.0, 15.0), (120.0, 15.0), (240.0, 15.0)]
    explicit = {"azimuths": [0, 90], "elevations": [10, 80], "caption_views": [1]}
    config = load_config(preset="tiny", overrides={"assets": explicit})
    assert [v.elevation for v in config.assets.view_settings().views] == [10.0, 80.0]
    with pytest.raises(ConfigError, match="caption_views"):
        load_config(preset="tiny", overrides={"assets": {**explicit, "caption_views": [2]}})


# --- the pipeline on views (tiny random-weight models) -------------------------------------------


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """A folder mixing photos and assets, good and broken."""
    folder = tmp_path_factory.mktemp("mixed")
    for photo in example_paths()[:2]:
        shutil.copy(photo, folder / photo.name)
    for make in (assets3d.red_cube, assets3d.point_cloud, assets3d.empty_scene):
        make(folder)
    return folder


def _config(tmp_path, **assets):
    path = tmp_path / "c.yaml"
    settings = {"size": 64, "render_workers": 1, **assets}
    path.write_text(json.dumps({"preset": "tiny", "ocr": None, "assets": settings}))  # YAML
    return path


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "webdataset"])
def test_a_folder_of_photos_and_assets_gives_one_record_each(mixed, tmp_path, fmt):
    from factcap.cli import main
    from factcap.engine.records import read_records

    out = tmp_path / {"jsonl": "out.jsonl", "parquet": "out.parquet"}.get(fmt, "shards")
    views = tmp_path / "views"
    args = ["caption", str(mixed), "-o", str(out), "--config", str(_config(tmp_path)),
            "--quiet", "--save-views", str(views), "--format", fmt]  # fmt: skip
    assert main(args) == 1  # the empty scene is an error record: exit status 1
    records = {r["source"].rsplit("/", 1)[-1]: r for r in read_records(out)}
    assert sorted(records) == sorted(p.name for p in mixed.iterdir())
    cube = records["red_cube.glb"]
    media = cube["media"]
    assert cube["status"] == "ok" and media["kind"] == "asset" and len(media["views"]) == 8
    assert media["facts"]["faces"] == 12 and cube["image_size"] == [64, 64]
    assert {p["view"] for p in cube["proposals"]} == set(range(8))  # each captioner, each view
    assert cube["captions"]["detailed"].strip()
    assert all((views / cube["id"] / f"view-{i}.png").is_file() for i in range(8))
    for claim in cube["claims"]:
        for box in claim["evidence"].get("detector_boxes", []):
            assert 0 <= box["view"] < 8
    assert records["empty.glb"]["error"]["type"] == "EmptyAsset"
    assert "media" not in records[example_paths()[0].name]  # a photo's media says nothing more
    assert records["empty.glb"]["media"] == {"kind": "asset", "views": [], "facts": {}}
    if fmt == "webdataset":
        with tarfile.open(next(out.glob("part-*.tar"))) as shard:
            names = shard.getnames()
        key = cube["id"]
        assert {f"{key}.glb", f"{key}.view0.png", f"{key}.view7.png"} <= set(names)


def test_render_talk_is_cut_from_asset_captions():
    from factcap.media.asset import drop_render_talk

    assert drop_render_talk("A 3D model of a red chair. The background is white.") == "A red chair."
    assert drop_render_talk("a chair, 3d render, white background", "phrases") == "a chair"
    assert drop_render_talk("A wooden chair with four legs.") == "A wooden chair with four legs."


# --- the report: a strip of views, boxes on the view they came from ---------------------------

from test_report import _open  # noqa: E402 - opens the report in the Chromium fixture


@pytest.fixture
def asset_report(tmp_path):
    """An asset captioned with scripted models (the detector finds the cat on every view),
    its views saved, and the report of it."""
    from factcap.engine.job import CaptionJob, JobSpec
    from factcap.report import write_report
    from scripted import scripted_pipeline

    assets = {"size": 64, "render_workers": 0, "save_views": str(tmp_path / "views")}
    config = load_config(preset="tiny", overrides={"ocr": None, "assets": assets})
    out = tmp_path / "out.jsonl"
    cube = assets3d.six_colour_box(tmp_path)
    spec = JobSpec(inputs=[str(cube)], output=out)
    assert CaptionJob(spec, config).run(scripted_pipeline(config)).ok == 1
    html = tmp_path / "r.html"
    _, stats = write_report(out, None, html, thumb_px=64)
    return html, json.loads(out.read_text()), stats


def test_the_report_shows_an_asset_as_its_views_in_chromium(asset_report, browser):
    html, record, stats = asset_report
    assert stats.thumbnails == 1
    boxes = record["claims"][0]["evidence"]["detector_boxes"]
    assert [b["view"] for b in boxes] == list(range(8))  # found on every view
    page, problems = _open(browser, html)
    card = page.locator(f"article.card[data-id='{record['id']}']")
    size = card.locator("img.thumb").evaluate("i => [i.naturalWidth, i.naturalHeight]")
    assert size == [8 * 64, 64]  # the eight views side by side
    card.locator("input.box-toggle[data-claim='0']").check()
    rects = card.locator("g[data-claim='0'] rect")
    assert rects.count() == 8
    img = card.locator("img.thumb").bounding_box()
    view_width = img["width"] / 8
    for view in (0, 3, 7):  # each box sits on the view it was found on
        box = rects.nth(view).bounding_box()
        assert box["x"] - img["x"] == pytest.approx(view * view_width + 1 * view_width / 64, abs=2)
    assert problems == []


@pytest.mark.slow
def test_kill_9_then_resume_with_assets_is_exactly_once(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    from conftest import ROOT
    from test_resume import ids_in, records_now, wait_for_records

    folder = tmp_path / "assets"
    folder.mkdir()
    for n in range(12):  # twelve cubes, each a different file (and id)
        path = assets3d.red_cube(tmp_path)
        path.rename(folder / f"cube{n:02d}.glb")
    out = tmp_path / "out.jsonl"
    cmd = [sys.executable, "-m", "factcap.cli", "caption", str(folder), "-o", str(out),
           "--config", str(_config(tmp_path, views=2)), "--quiet", "--resume"]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    log = tmp_path / "stderr.txt"
    with log.open("w") as stderr:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        wait_for_records(proc, out, 2, log)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the job ended before it was killed"
    assert 2 <= records_now(out) < 12
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    got = ids_in(out)
    assert len(got) == len(set(got)) == 12


# --- evaluation: an asset's image metrics average over its views -----------------------------


class ColourEmbedder:
    """A stand-in CLIP on the other side of the boundary: an image embeds as its mean
    colour, a text as a fixed direction (unit vectors, as the protocol says)."""

    name = "colour-clip"

    def embed_images(self, images):
        rows = np.array([np.asarray(im, dtype=float).reshape(-1, 3).mean(0) + 1 for im in images])
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)

    def embed_texts(self, texts):
        row = np.array([1.0, 0.2, 0.2]) / np.linalg.norm([1.0, 0.2, 0.2])
        return np.tile(row, (len(texts), 1))


class CountingVQA:
    name = "counting-vqa"

    def __init__(self):
        self.images = 0

    def yes_probability(self, images, questions):
        first, self.images = self.images, self.images + len(images)
        return [0.25 + 0.5 * ((first + i) % 2) for i in range(len(images))]


@pytest.mark.parametrize("saved", [True, False], ids=["saved-views", "rendered-again"])
def test_asset_metrics_average_over_the_views(tmp_path, saved):
    from factcap.engine.job import CaptionJob, JobSpec
    from factcap.engine.records import ImageFinder, read_records
    from factcap.evaluate import build_samples, evaluate
    from factcap.metrics.resources import Resources
    from scripted import scripted_pipeline

    assets = {"size": 48, "render_workers": 0}
    if saved:
        assets["save_views"] = str(tmp_path / "views")
    config = load_config(preset="tiny", overrides={"ocr": None, "assets": assets})
    out = tmp_path / "out.jsonl"
    cube = assets3d.six_colour_box(tmp_path)
    CaptionJob(JobSpec(inputs=[str(cube)], output=out), config).run(scripted_pipeline(config))
    rows = list(read_records(out))
    samples = build_samples(rows, "final", {}, {}, ImageFinder(out))
    vqa = CountingVQA()
    resources = Resources({"embedder": ColourEmbedder, "vqa": lambda: vqa}, batch_size=3)
    result = evaluate(samples, ["clip_score", "vqa_score"], resources)
    [row] = list(result.rows())
    views = resources.load_views(samples[0].source)
    assert len(views) == 8 and vqa.images == 8  # every view asked
    per_view = ColourEmbedder().embed_images(views) @ ColourEmbedder().embed_texts(["x"])[0]
    assert row["metrics"]["clip_cosine"] == pytest.approx(per_view.mean(), abs=1e-5)
    assert row["metrics"]["vqa_score"] == pytest.approx(0.5)  # mean of 0.25 / 0.75 alternating
    assert len(row["info"]["vqa_score_by_view"]) == 8


@pytest.mark.slow
def test_ray_renders_assets_in_its_decode_tasks_and_matches_the_local_run(tmp_path):
    pytest.importorskip("ray", reason="the Ray executor needs Ray: pip install 'factcap[ray]'")
    import subprocess
    import sys

    from factcap.engine.records import read_records

    folder = tmp_path / "in"
    folder.mkdir()
    assets3d.six_colour_box(folder)
    shutil.copy(example_paths()[0], folder / "photo.jpg")
    config = _config(tmp_path, views=3)
    runs = {}
    for executor in ("local", "ray"):
        out = tmp_path / f"{executor}.jsonl"
        done = subprocess.run(
            [sys.executable, "-m", "factcap.cli", "caption", str(folder), "-o", str(out),
             "--config", str(config), "--quiet", "--executor", executor],
            capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        runs[executor] = {r["id"]: r for r in read_records(out)}
    assert runs["ray"].keys() == runs["local"].keys()
    for rid, local in runs["local"].items():
        ray = runs["ray"][rid]
        for key in ("kind", "views", "proposals", "captions", "asset"):
            assert ray.get(key) == local.get(key), key


@pytest.mark.parametrize("fmt", ["stl", "off", "ply", "obj"])
def test_every_mesh_format_loads_and_renders(tmp_path, fmt):
    import trimesh

    box = trimesh.creation.box(extents=(1.0, 0.5, 0.25))
    path = tmp_path / f"box.{fmt}"
    data = box.export(file_type=fmt)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    asset = _render(path, ViewSettings(size=48))
    assert asset.facts["format"] == fmt and asset.facts["faces"] == 12
    assert all(assets3d.foreground(im).any() for im in asset.images)


def test_a_gltf_finds_its_buffers_beside_it(tmp_path):
    import trimesh

    cube = trimesh.creation.box()
    cube.visual.face_colors = [*assets3d.RED, 255]
    for name, data in cube.export(file_type="gltf").items():  # model.gltf + its .bin
        (tmp_path / name).write_bytes(data)
    [gltf] = tmp_path.glob("*.gltf")
    assert list(tmp_path.glob("*.bin")), "the export should keep its buffer in a file"
    asset = _render(gltf, ViewSettings(size=48))
    assert asset.facts["faces"] == 12
    assert assets3d.near(asset.images[0], assets3d.RED) > 50


def test_a_render_over_the_time_limit_is_an_error_and_the_pool_goes_on(tmp_path):
    pool = RenderPool(1, ViewSettings(size=256), AssetLimits(render_timeout_s=0.001))
    try:
        with pytest.raises(ImageError) as info:
            pool.result(pool.submit(str(assets3d.red_cube(tmp_path)), "glb"))
        assert info.value.kind == "RenderTimeout" and "assets.render_timeout_s" in str(info.value)
        pool.limits = AssetLimits()  # the next asset gets a fresh worker
        assert len(pool.result(pool.submit(str(assets3d.red_cube(tmp_path)), "glb")).images) == 8
    finally:
        pool.close()
