"""Orbit renders with known cameras: the rasteriser's geometry and the folder format."""

from __future__ import annotations

import io
import json
import logging
import math
import os
import socket

import numpy as np
import pytest
from PIL import Image

from svd_dag.storage import Store
from svd_dag.training.orbits import (
    BACKGROUND_RGB,
    SHAPES,
    SYNTHETIC_SOURCE,
    Mesh,
    OrbitFormatError,
    generate_synthetic_orbits,
    list_orbit_objects,
    make_shape,
    read_orbit_folder,
    render_mesh,
    render_orbit,
    write_orbit_folder,
)

SIZE = 64


def camera(azimuth: float, elevation: float, distance: float = 3.0, fov: float = 40.0) -> dict:
    return {"azimuth_deg": azimuth, "elevation_deg": elevation, "distance": distance, "fov_deg": fov}


def colours(image: np.ndarray) -> set[tuple[int, ...]]:
    """Distinct colours in an image, background excluded."""
    return {tuple(int(v) for v in c) for c in np.unique(image.reshape(-1, 3), axis=0)} - {BACKGROUND_RGB}


def silhouette(image: np.ndarray) -> np.ndarray:
    return np.any(image != np.array(BACKGROUND_RGB, dtype=np.uint8), axis=-1)


def face_colour(mesh: Mesh, normal: tuple[float, float, float]) -> tuple[int, ...]:
    index = int(np.argmax(mesh.face_normals @ np.array(normal, dtype=float)))
    return tuple(int(v) for v in mesh.shaded_face_colors()[index])


# --------------------------------------------------------------------------- geometry


def test_cube_front_view_shows_exactly_its_front_face():
    cube = make_shape("cube", seed=3)
    assert colours(render_mesh(cube, camera(0, 0), SIZE)) == {face_colour(cube, (0, 0, 1))}
    assert colours(render_mesh(cube, camera(90, 0), SIZE)) == {face_colour(cube, (1, 0, 0))}


def test_cube_oblique_view_from_above_shows_three_faces():
    cube = make_shape("cube", seed=3)
    seen = colours(render_mesh(cube, camera(45, 30), SIZE))
    assert seen == {face_colour(cube, n) for n in [(1, 0, 0), (0, 1, 0), (0, 0, 1)]}
    below = colours(render_mesh(cube, camera(45, -30), SIZE))
    assert below == {face_colour(cube, n) for n in [(1, 0, 0), (0, -1, 0), (0, 0, 1)]}


def test_up_is_up_and_right_is_right_in_the_image():
    """From above the top face lies above the side faces; at azimuth 45 the +x face is on
    the right of the +z face (camera right = world +x at azimuth 0, turning with azimuth)."""
    cube = make_shape("cube", seed=3)
    image = render_mesh(cube, camera(45, 30), SIZE)

    def centre(normal):
        rows, cols = np.nonzero(np.all(image == np.array(face_colour(cube, normal), np.uint8), axis=-1))
        return rows.mean(), cols.mean()

    top, front, side = centre((0, 1, 0)), centre((0, 0, 1)), centre((1, 0, 0))
    assert top[0] < front[0] - 5 and top[0] < side[0] - 5
    assert side[1] > front[1] + 5
    pyramid = silhouette(render_mesh(make_shape("pyramid"), camera(0, 0), SIZE))
    widths = pyramid.sum(axis=1)[pyramid.any(axis=1)]
    assert widths[0] < widths[-1] / 4  # apex at the top, base at the bottom


@pytest.mark.parametrize("distance", [2.5, 3.0, 4.0, 6.0])
def test_cube_front_face_area_is_the_exact_perspective_square(distance):
    """Front face (half-size 0.5, at depth d - 0.5): a square of half-width h = f*0.5/(d-0.5)
    around the image centre; pixel centres i + 0.5 inside it number (2*floor(h + 0.5))^2."""
    focal = (SIZE / 2) / math.tan(math.radians(40.0) / 2)
    half = focal * 0.5 / (distance - 0.5)
    mask = silhouette(render_mesh(make_shape("cube"), camera(0, 0, distance), SIZE))
    assert mask.sum() == (2 * math.floor(half + 0.5)) ** 2
    assert np.array_equal(mask, mask[::-1]) and np.array_equal(mask, mask[:, ::-1])


def test_silhouette_area_falls_roughly_with_inverse_square_distance():
    octahedron = make_shape("octahedron")
    near = silhouette(render_mesh(octahedron, camera(30, 20, 3.0), SIZE)).sum()
    far = silhouette(render_mesh(octahedron, camera(30, 20, 6.0), SIZE)).sum()
    assert near > far > 0
    assert 3.5 < near / far < 4.8  # 4 for a flat object; a bit more as perspective enlarges the near side


def test_cube_silhouettes_follow_the_cubes_symmetries():
    """The cube is symmetric under x -> -x and under a half turn about the vertical axis:
    azimuth -a is the mirror image of azimuth a, and a + 180 has the same outline (seen
    from the other side, so with other faces), while the view itself is not symmetric."""
    cube = make_shape("cube", seed=1)
    view = render_mesh(cube, camera(30, 25), SIZE)
    mirrored = render_mesh(cube, camera(-30, 25), SIZE)
    opposite = render_mesh(cube, camera(210, 25), SIZE)
    assert not np.array_equal(silhouette(view), silhouette(view)[:, ::-1])
    assert np.array_equal(silhouette(mirrored), silhouette(view)[:, ::-1])
    assert colours(view) == {face_colour(cube, n) for n in [(1, 0, 0), (0, 1, 0), (0, 0, 1)]}
    assert colours(mirrored) == {face_colour(cube, n) for n in [(-1, 0, 0), (0, 1, 0), (0, 0, 1)]}
    assert np.array_equal(silhouette(opposite), silhouette(view))
    assert colours(opposite) & colours(view) == {face_colour(cube, (0, 1, 0))}  # only the top is shared


def test_views_180_degrees_apart_are_mirrored_in_the_orthographic_limit():
    """At elevation 0 the opposite camera looks along the reversed axis: without perspective
    (far away, narrow fov) its outline is the mirror image, for any object."""
    prism = make_shape("prism")
    for azimuth in (20, 70):
        view = silhouette(render_mesh(prism, camera(azimuth, 0, 60.0, 2.0), SIZE))
        opposite = silhouette(render_mesh(prism, camera(azimuth + 180, 0, 60.0, 2.0), SIZE))
        assert view.sum() > 500
        assert not np.array_equal(view, view[:, ::-1])
        assert np.array_equal(opposite, view[:, ::-1])


def _quads(*planes: tuple[float, float]) -> Mesh:
    """Coloured squares spanning x, y in [-0.5, 0.5], square k on the plane z = z0 + slope * x."""
    vertices, triangles = [], []
    corners = [(-0.5, -0.5), (0.5, -0.5), (0.5, 0.5), (-0.5, 0.5)]
    for index, (z0, slope) in enumerate(planes):
        vertices += [(x, y, z0 + slope * x) for x, y in corners]
        base = 4 * index
        triangles += [(base, base + 1, base + 2), (base, base + 2, base + 3)]
    palette = np.array([[0.9, 0.1, 0.1], [0.1, 0.1, 0.9], [0.1, 0.8, 0.1]])
    return Mesh(
        "quads",
        np.array(vertices, dtype=float),
        np.array(triangles),
        np.repeat(np.arange(len(planes)), 2),
        np.tile([0.0, 0.0, 1.0], (len(planes), 1)),
        palette[: len(planes)],
    )


def _colour_of(mesh: Mesh, face: int) -> tuple[int, ...]:
    return tuple(int(v) for v in mesh.shaded_face_colors()[face])


def test_nearer_surface_wins_whatever_the_drawing_order():
    for planes in ([(0.3, 0.0), (-0.3, 0.0)], [(-0.3, 0.0), (0.3, 0.0)]):
        mesh = _quads(*planes)
        near, far = (0, 1) if planes[0][0] > 0 else (1, 0)
        # Equal squares: the far one hides wholly behind the near one, from either side.
        assert colours(render_mesh(mesh, camera(0, 0), SIZE)) == {_colour_of(mesh, near)}
        assert colours(render_mesh(mesh, camera(180, 0), SIZE)) == {_colour_of(mesh, far)}


def test_depth_is_exact_per_pixel_where_surfaces_cross():
    """Planes z = 0.1 + 0.8x and z = 0 cross on the line x = -0.125, z = 0, which the camera
    at (0, 0, 3) sees at image column 32 - f * 0.125 / 3: left of it the flat square is
    nearer, right of it the tilted one, in either drawing order (1/z is interpolated, not z)."""
    focal = (SIZE / 2) / math.tan(math.radians(40.0) / 2)
    split = SIZE / 2 - focal * 0.125 / 3.0
    centres = np.arange(SIZE) + 0.5
    for planes, tilted in (([(0.1, 0.8), (0.0, 0.0)], 0), ([(0.0, 0.0), (0.1, 0.8)], 1)):
        mesh = _quads(*planes)
        image = render_mesh(mesh, camera(0, 0), SIZE)
        expected_right, expected_left = _colour_of(mesh, tilted), _colour_of(mesh, 1 - tilted)
        for row in range(SIZE // 2 - 8, SIZE // 2 + 8):
            drawn = silhouette(image[row : row + 1])[0]
            left = image[row, drawn & (centres < split)]
            right = image[row, drawn & (centres > split)]
            assert len(left) > 5 and len(right) > 5
            assert {tuple(int(v) for v in c) for c in left} == {expected_left}
            assert {tuple(int(v) for v in c) for c in right} == {expected_right}


def test_z_buffer_alone_hides_back_faces_of_every_shape():
    for shape in SHAPES:
        mesh = make_shape(shape, seed=5)
        for azimuth, elevation in [(0, 0), (33, 17), (200, -25), (290, 40)]:
            cam = camera(azimuth, elevation)
            assert np.array_equal(render_mesh(mesh, cam, SIZE), render_mesh(mesh, cam, SIZE, cull_backfaces=True))


def test_render_orbit_cameras_colours_and_shapes():
    frames, cameras = render_orbit("pyramid", 6, 20.0, size=SIZE, seed=2)
    assert frames.shape == (6, SIZE, SIZE, 3) and frames.dtype == np.uint8
    assert [c["azimuth_deg"] for c in cameras] == [0.0, 60.0, 120.0, 180.0, 240.0, 300.0]
    assert all(c["elevation_deg"] == 20.0 and c["distance"] == 3.0 and c["fov_deg"] == 40.0 for c in cameras)
    assert len({frame.tobytes() for frame in frames}) == 6  # the view changes along the orbit
    for shape in SHAPES:
        mesh = make_shape(shape, seed=9)
        shaded = {tuple(int(v) for v in c) for c in mesh.shaded_face_colors()}
        assert len(shaded) == len(mesh.face_normals) and BACKGROUND_RGB not in shaded
        frames, _ = render_orbit(shape, 4, 10.0, seed=9)
        assert all(not silhouette(f)[[0, -1], :].any() and not silhouette(f)[:, [0, -1]].any() for f in frames)
    recoloured, _ = render_orbit("pyramid", 6, 20.0, size=SIZE, seed=3)
    original, _ = render_orbit("pyramid", 6, 20.0, size=SIZE, seed=2)
    assert np.array_equal(silhouette(recoloured), silhouette(original))
    assert not np.array_equal(recoloured, original)


@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"shape": "sphere"}, "shape"),
        ({"num_views": 0}, "num_views"),
        ({"elevation_deg": 90.0}, "elevation_deg"),
        ({"distance": 0.5}, "distance"),
        ({"fov_deg": 180.0}, "fov_deg"),
    ],
)
def test_render_orbit_rejects_bad_parameters(kwargs, word):
    args = {"shape": "cube", "num_views": 4, "elevation_deg": 0.0, **kwargs}
    with pytest.raises(ValueError, match=word):
        render_orbit(**args)


# --------------------------------------------------------------------------- folders


def test_write_list_read_round_trip_is_exact(tmp_path):
    store = Store(str(tmp_path))
    frames, cameras = render_orbit("octahedron", 5, 10.0, size=SIZE, seed=4)
    uri = write_orbit_folder(store, "orbits", "octa", frames, cameras)
    os.makedirs(tmp_path / "orbits" / "not_an_object")
    (tmp_path / "orbits" / "not_an_object" / "view_000.png").write_bytes(b"")
    assert list_orbit_objects(store, "orbits") == [uri]

    obj = read_orbit_folder(store, uri)
    assert obj.object_id == "octa" and obj.source == SYNTHETIC_SOURCE and obj.uri == uri
    assert obj.frames.dtype == np.uint8 and np.array_equal(obj.frames, frames)
    assert [{k: v for k, v in c.items() if k != "file"} for c in obj.cameras] == cameras
    assert [c["file"] for c in obj.cameras] == [f"view_{i:03d}.png" for i in range(5)]
    assert obj.elevation_deg == 10.0
    assert np.array_equal(obj.azimuths, [0.0, 72.0, 144.0, 216.0, 288.0])
    meta = json.loads((tmp_path / "orbits" / "octa" / "cameras.json").read_text())
    assert (meta["width"], meta["height"]) == (SIZE, SIZE)


def test_generated_dataset_varies_shape_colour_and_elevation(tmp_path):
    store = Store(str(tmp_path))
    uris = generate_synthetic_orbits(store, "synthetic", num_objects=6, num_views=3, size=32, seed=1)
    assert list_orbit_objects(store, "synthetic") == sorted(uris)
    objects = [read_orbit_folder(store, uri) for uri in uris]
    assert [o.object_id.split("_")[0] for o in objects] == [*SHAPES, *SHAPES[:2]]
    assert [o.elevation_deg for o in objects] == [-10.0, 0.0, 10.0, 20.0, 30.0, -10.0]
    assert all(o.source == SYNTHETIC_SOURCE and o.frames.shape == (3, 32, 32, 3) for o in objects)
    # Same shape twice (objects 0 and 4 are both cubes at different elevations): other colours.
    assert colours(objects[0].frames[0]) != colours(objects[4].frames[0])
    again = generate_synthetic_orbits(Store(str(tmp_path / "again")), "synthetic", 6, 3, 32, seed=1)
    assert all(np.array_equal(read_orbit_folder(Store(str(tmp_path / "again")), u).frames, o.frames)
               for u, o in zip(again, objects))


def test_listing_a_missing_prefix_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        list_orbit_objects(Store(str(tmp_path)), "nowhere")


def _png(size: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((size, size, 3), 128, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _edit_cameras(folder, change) -> None:
    path = folder / "cameras.json"
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))


def _flip_a_pixel_data_byte(path) -> None:
    data = bytearray(path.read_bytes())
    data[data.index(b"IDAT") + 10] ^= 0xFF  # inside the compressed pixels: only the checksum tells
    path.write_bytes(bytes(data))


def _mixed_elevations(meta):
    meta["views"][2]["elevation_deg"] = 10.5


BREAKAGES = {
    "missing cameras.json": (lambda folder: (folder / "cameras.json").unlink(), "cameras.json"),
    "missing view": (lambda folder: (folder / "view_001.png").unlink(), "view_001.png"),
    "zero-byte view": (lambda folder: (folder / "view_002.png").write_bytes(b""), "view_002.png"),
    "corrupt view": (
        lambda folder: (folder / "view_001.png").write_bytes((folder / "view_001.png").read_bytes()[:60]),
        "view_001.png",
    ),
    "flipped pixel byte": (lambda folder: _flip_a_pixel_data_byte(folder / "view_001.png"), "view_001.png"),
    "alpha channel": (
        lambda folder: Image.fromarray(np.zeros((SIZE, SIZE, 4), np.uint8)).save(folder / "view_000.png"),
        "view_000.png.*alpha",
    ),
    "not an image": (lambda folder: (folder / "view_000.png").write_bytes(b"hello, not a png"), "view_000.png"),
    "size mismatch": (lambda folder: (folder / "view_002.png").write_bytes(_png(SIZE // 2)), "view_002.png"),
    "mixed elevations": (lambda folder: _edit_cameras(folder, _mixed_elevations), "cameras.json.*elevation"),
    "bad json": (lambda folder: (folder / "cameras.json").write_text("{not json"), "cameras.json"),
    "one view": (lambda folder: _edit_cameras(folder, lambda m: m.update(views=m["views"][:1])), "at least 2"),
}


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_bad_folders_raise_orbit_format_error_naming_the_file(tmp_path, breakage):
    store = Store(str(tmp_path))
    frames, cameras = render_orbit("cube", 3, 10.0, size=SIZE)
    uri = write_orbit_folder(store, "orbits", "cube", frames, cameras)
    read_orbit_folder(store, uri)  # intact before the breakage
    breaks, names = BREAKAGES[breakage]
    breaks(tmp_path / "orbits" / "cube")
    with pytest.raises(OrbitFormatError, match=names) as caught:
        read_orbit_folder(store, uri)
    assert isinstance(caught.value, ValueError) and uri in str(caught.value)


def test_writer_rejects_inconsistent_input(tmp_path):
    store = Store(str(tmp_path))
    frames, cameras = render_orbit("prism", 3, 0.0, size=16)
    with pytest.raises(ValueError, match="3 frames"):
        write_orbit_folder(store, "orbits", "p", frames, cameras[:2])
    with pytest.raises(ValueError, match="uint8"):
        write_orbit_folder(store, "orbits", "p", frames.astype(np.float32), cameras)
    with pytest.raises(ValueError, match="object_id"):
        write_orbit_folder(store, "orbits", "a/b", frames, cameras)
    with pytest.raises(ValueError, match="at least 2"):
        write_orbit_folder(store, "orbits", "p", frames[:1], cameras[:1])
    with pytest.raises(ValueError, match="non-finite"):
        write_orbit_folder(store, "orbits", "p", frames, [{**c, "distance": float("nan")} for c in cameras])
    assert not (tmp_path / "orbits").exists()
    numpy_cameras = [{k: np.float32(v) for k, v in c.items()} for c in cameras]  # JSON gets plain floats
    uri = write_orbit_folder(store, "orbits", "p", frames, numpy_cameras)
    assert read_orbit_folder(store, uri).azimuths.tolist() == [0.0, 120.0, 240.0]


@pytest.fixture
def s3_endpoint(monkeypatch):
    """A real S3 API (moto's server on 127.0.0.1) for the store to talk to."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1", "SVD_DAG_S3_ENDPOINT_URL": f"http://127.0.0.1:{port}"}.items():
        monkeypatch.setenv(key, value)
    yield
    server.stop()


def test_orbit_folders_round_trip_through_s3(s3_endpoint, tmp_path):
    store = Store("s3://orbits/data")
    store.fs.mkdir("orbits")
    uris = generate_synthetic_orbits(store, "synthetic", num_objects=2, num_views=3, size=16)
    assert all(uri.startswith("s3://orbits/data/synthetic/") for uri in uris)
    assert list_orbit_objects(store, "synthetic") == sorted(uris)
    local = Store(str(tmp_path))
    for remote_uri, local_uri in zip(uris, generate_synthetic_orbits(local, "synthetic", 2, 3, 16)):
        remote, here = read_orbit_folder(store, remote_uri), read_orbit_folder(local, local_uri)
        assert remote.object_id == here.object_id and remote.cameras == here.cameras
        assert np.array_equal(remote.frames, here.frames)


def test_an_orbit_whose_folder_and_object_id_disagree_is_quarantined_so_the_holdout_cannot_miss(tmp_path):
    """The held-out split names objects by cameras.json's object_id, the training data by folder:
    `orbit_renders` refuses an object where the two differ (naming both), keeps the rest."""
    import shutil

    import dagster as dg

    from svd_dag.catalog import Catalog
    from svd_dag.definitions import build_defs
    from svd_dag.settings import load_settings

    source = tmp_path / "orbits"
    uris = generate_synthetic_orbits(Store(str(source)), "", num_objects=4, num_views=3, size=32, seed=2)
    renamed = os.path.basename(uris[1].rstrip("/"))
    shutil.move(str(source / renamed), str(source / "renamed-by-hand"))
    settings = load_settings({"SVD_DAG_HOME": str(tmp_path / "home"), "SVD_DAG_ORBITS_URI": str(source)})
    defs = build_defs(settings)
    result = dg.materialize([defs.get_assets_def("orbit_renders")], resources=defs.resources)
    assert result.success
    cat = Catalog.from_settings(settings)
    ids = {r["object_id"] for r in cat.rows("SELECT object_id FROM orbit_renders")}
    assert len(ids) == 3 and renamed not in ids
    [problem] = cat.quarantined("orbit_renders")
    assert f"object_id {renamed!r} but the folder is 'renamed-by-hand'" in problem["reason"]
