"""Multi-view training data: orbit renders of an object with known cameras.

SVD's multi-view fine-tune treats "frames = views on an orbit around an object" as a
video, conditioned on the camera elevation. This module holds both ends of that data
source: a folder format users fill with their own renders, its reader and writer, and a
generator of *synthetic* orbits (procedural solids drawn by an exact numpy rasteriser) for
tests and demos. Synthetic data is labelled `"source": "synthetic-procedural"`.

Folder format (one folder per object, anywhere under a dataset prefix)::

    <root>/
      <object_id>/
        cameras.json
        view_000.png
        view_001.png
        ...

`cameras.json` is one JSON object::

    {
      "object_id": "<string>",
      "source": "synthetic-procedural" | "<free text: where the renders come from>",
      "width": W, "height": H,                 # pixel size of every view
      "views": [                               # in orbit order (frame order)
        {"file": "view_000.png",               # relative to the object folder
         "azimuth_deg": a, "elevation_deg": e, "distance": d, "fov_deg": f},
        ...
      ]
    }

- Every view is an 8-bit PNG of exactly W x H pixels, RGB (greyscale or palette PNGs
  without transparency are read as RGB; PNGs with alpha are rejected: composite them on
  a background first). At least 2 views.
- All views of one object share one elevation (an orbit); it may differ between objects.
- Extra keys are allowed and kept; the reader ignores them.
- Camera convention (y is up, the object sits at the origin): the camera is at
  `distance * (cos(e) sin(a), sin(e), cos(e) cos(a))` looking at the origin, with the
  world y axis projecting upward in the image; `fov_deg` is the full vertical = horizontal
  field of view of a square pinhole camera (for non-square images, the vertical one).
  So azimuth 0, elevation 0 looks at the object's +z side; azimuth 90 at its +x side;
  positive elevation looks down from above.

A folder is complete once its `cameras.json` exists: the writer writes it last.
"""

from __future__ import annotations

import colorsys
import io
import json
import math
import posixpath
import struct
import zlib
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from svd_dag.storage import Store

CAMERAS_FILE = "cameras.json"
SYNTHETIC_SOURCE = "synthetic-procedural"
CAMERA_KEYS = ("azimuth_deg", "elevation_deg", "distance", "fov_deg")

BACKGROUND_RGB = (255, 255, 255)
# Fixed world-space light (unit vector towards the light): faces keep their colour as the
# camera moves, so which faces are in view decides how the image is shaded.
LIGHT_DIR = np.array([0.3, 0.8, 0.5]) / np.linalg.norm([0.3, 0.8, 0.5])
AMBIENT = 0.35
# Every procedural shape fits in a sphere of this radius about the origin, so the default
# camera (distance 3, fov 40) keeps the whole object in frame.
SHAPE_RADIUS = 0.9
ELEVATION_TOLERANCE_DEG = 1e-6


class OrbitFormatError(ValueError):
    """An orbit folder that does not follow the format (the message names file and reason)."""


# --------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class Mesh:
    """Flat-shaded triangle mesh: each triangle belongs to one face with one colour."""

    name: str
    vertices: np.ndarray  # [N, 3] float64, world coordinates
    triangles: np.ndarray  # [T, 3] int, vertex indices
    triangle_face: np.ndarray  # [T] int, face index of each triangle
    face_normals: np.ndarray  # [F, 3] float64, unit, outward
    face_albedo: np.ndarray  # [F, 3] float64 in [0, 1]

    def shaded_face_colors(self, light_dir: np.ndarray = LIGHT_DIR, ambient: float = AMBIENT) -> np.ndarray:
        """uint8 [F, 3]: Lambertian albedo * (ambient + (1 - ambient) * max(0, n . l))."""
        diffuse = np.clip(self.face_normals @ np.asarray(light_dir, dtype=np.float64), 0.0, None)
        intensity = ambient + (1.0 - ambient) * diffuse
        return np.round(255.0 * self.face_albedo * intensity[:, None]).astype(np.uint8)


def _cube_faces() -> tuple[np.ndarray, list[list[int]]]:
    h = 0.5
    v = np.array([[x, y, z] for x in (-h, h) for y in (-h, h) for z in (-h, h)], dtype=np.float64)
    # index = 4*(x>0) + 2*(y>0) + (z>0)
    faces = [[0, 1, 3, 2], [4, 6, 7, 5], [0, 4, 5, 1], [2, 3, 7, 6], [0, 2, 6, 4], [1, 5, 7, 3]]
    return v, faces


def _pyramid_faces() -> tuple[np.ndarray, list[list[int]]]:
    b, y0, apex = 0.55, -0.4, 0.7
    v = np.array([[-b, y0, -b], [b, y0, -b], [b, y0, b], [-b, y0, b], [0.0, apex, 0.0]])
    faces = [[0, 1, 2, 3], [0, 1, 4], [1, 2, 4], [2, 3, 4], [3, 0, 4]]
    return v, faces


def _octahedron_faces() -> tuple[np.ndarray, list[list[int]]]:
    r = 0.85
    v = np.array([[r, 0, 0], [-r, 0, 0], [0, r, 0], [0, -r, 0], [0, 0, r], [0, 0, -r]], dtype=np.float64)
    faces = [[x, y, z] for x in (0, 1) for y in (2, 3) for z in (4, 5)]
    return v, faces


def _prism_faces() -> tuple[np.ndarray, list[list[int]]]:
    """Triangular prism standing on the y axis: equilateral cross-section, 3 rectangles."""
    r, h = 0.6, 0.55
    angles = np.deg2rad([90.0, 210.0, 330.0])
    ring = [(r * math.cos(t), r * math.sin(t)) for t in angles]
    v = np.array([[x, -h, z] for x, z in ring] + [[x, h, z] for x, z in ring])
    faces = [[0, 1, 2], [3, 4, 5], [0, 1, 4, 3], [1, 2, 5, 4], [2, 0, 3, 5]]
    return v, faces


_SHAPE_BUILDERS = {
    "cube": _cube_faces,
    "pyramid": _pyramid_faces,
    "octahedron": _octahedron_faces,
    "prism": _prism_faces,
}
SHAPES = tuple(_SHAPE_BUILDERS)


def _face_albedos(num_faces: int, rng: np.random.Generator) -> np.ndarray:
    """Distinct colours: hues evenly spaced from a random offset, shuffled over the faces."""
    hues = (rng.uniform() + np.arange(num_faces) / num_faces) % 1.0
    rng.shuffle(hues)
    sats = rng.uniform(0.6, 0.85, num_faces)
    vals = rng.uniform(0.75, 0.95, num_faces)
    return np.array([colorsys.hsv_to_rgb(h, s, v) for h, s, v in zip(hues, sats, vals)])


def make_shape(shape: str, seed: int = 0) -> Mesh:
    """One of SHAPES, centred on the origin, each face a distinct seeded colour."""
    if shape not in _SHAPE_BUILDERS:
        raise ValueError(f"unknown shape {shape!r}; expected one of {', '.join(SHAPES)}")
    vertices, faces = _SHAPE_BUILDERS[shape]()
    vertices = np.asarray(vertices, dtype=np.float64)
    triangles, triangle_face, normals = [], [], []
    for face_index, polygon in enumerate(faces):
        pts = vertices[polygon]
        normal = np.cross(pts[1] - pts[0], pts[2] - pts[0])
        normal /= np.linalg.norm(normal)
        if normal @ pts.mean(axis=0) < 0:  # convex and around the origin: outward = away from it
            normal = -normal
        normals.append(normal)
        for k in range(1, len(polygon) - 1):  # fan of a convex planar polygon
            triangles.append([polygon[0], polygon[k], polygon[k + 1]])
            triangle_face.append(face_index)
    albedo = _face_albedos(len(faces), np.random.default_rng(seed))
    return Mesh(shape, vertices, np.array(triangles), np.array(triangle_face), np.array(normals), albedo)


# --------------------------------------------------------------------------- camera


def camera_position(azimuth_deg: float, elevation_deg: float, distance: float) -> np.ndarray:
    """World position of a camera on the orbit (see the module docstring's convention)."""
    a, e = math.radians(azimuth_deg), math.radians(elevation_deg)
    return distance * np.array([math.cos(e) * math.sin(a), math.sin(e), math.cos(e) * math.cos(a)])


def camera_axes(position: np.ndarray) -> np.ndarray:
    """[3, 3] rows (right, up, forward) of a camera at `position` looking at the origin."""
    forward = -np.asarray(position, dtype=np.float64)
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 1.0, 0.0])
    norm = np.linalg.norm(right)
    if norm < 1e-9:
        raise ValueError("camera is straight above or below the object: elevation must be strictly inside (-90, 90)")
    right /= norm
    up = np.cross(right, forward)
    return np.stack([right, up, forward])


def project(points: np.ndarray, camera: dict[str, float], width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates [N, 2] (x right, y down, pixel i spans [i, i+1)) and depth [N]."""
    position = camera_position(camera["azimuth_deg"], camera["elevation_deg"], camera["distance"])
    cam = (np.asarray(points, dtype=np.float64) - position) @ camera_axes(position).T
    depth = cam[:, 2]
    focal = (height / 2.0) / math.tan(math.radians(camera["fov_deg"]) / 2.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        xy = np.stack([width / 2.0 + focal * cam[:, 0] / depth, height / 2.0 - focal * cam[:, 1] / depth], axis=1)
    return xy, depth


# --------------------------------------------------------------------------- rasteriser


def render_mesh(
    mesh: Mesh,
    camera: dict[str, float],
    size: int,
    background: tuple[int, int, int] = BACKGROUND_RGB,
    cull_backfaces: bool = False,
) -> np.ndarray:
    """uint8 [size, size, 3]: z-buffered triangles, one sample at each pixel centre.

    Depth is tested as 1/z interpolated linearly in screen space (exact for perspective).
    A pixel centre on a triangle's edge counts as inside; on a depth tie the triangle drawn
    first keeps the pixel. Without culling, hidden faces are removed by the z-buffer alone.
    """
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    xy, depth = project(mesh.vertices, camera, size, size)
    if np.any(depth <= 1e-6):
        raise ValueError(
            f"camera at distance {camera['distance']} is inside or behind part of the {mesh.name!r} mesh "
            "(no near-plane clipping): move it farther away"
        )
    image = np.empty((size, size, 3), dtype=np.uint8)
    image[:] = np.asarray(background, dtype=np.uint8)
    nearest = np.zeros((size, size))  # 1/z of the nearest surface so far; 0 = infinitely far
    colors = mesh.shaded_face_colors()
    eye = camera_position(camera["azimuth_deg"], camera["elevation_deg"], camera["distance"])
    for tri, face in zip(mesh.triangles, mesh.triangle_face):
        if cull_backfaces and mesh.face_normals[face] @ (eye - mesh.vertices[tri[0]]) <= 0:
            continue
        (x0, y0), (x1, y1), (x2, y2) = xy[tri]
        area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
        if abs(area) < 1e-12:  # edge-on: covers no pixel centre
            continue
        left = max(0, math.floor(min(x0, x1, x2)))
        right = min(size, math.ceil(max(x0, x1, x2)) + 1)
        top = max(0, math.floor(min(y0, y1, y2)))
        bottom = min(size, math.ceil(max(y0, y1, y2)) + 1)
        if left >= right or top >= bottom:
            continue
        px, py = np.meshgrid(np.arange(left, right) + 0.5, np.arange(top, bottom) + 0.5)
        b0 = ((x1 - px) * (y2 - py) - (x2 - px) * (y1 - py)) / area
        b1 = ((x2 - px) * (y0 - py) - (x0 - px) * (y2 - py)) / area
        b2 = 1.0 - b0 - b1
        inside = (b0 >= 0) & (b1 >= 0) & (b2 >= 0)
        inv_z = b0 / depth[tri[0]] + b1 / depth[tri[1]] + b2 / depth[tri[2]]
        window = nearest[top:bottom, left:right]
        wins = inside & (inv_z > window)
        window[wins] = inv_z[wins]
        image[top:bottom, left:right][wins] = colors[face]
    return image


def render_orbit(
    shape: str,
    num_views: int,
    elevation_deg: float,
    size: int = 64,
    distance: float = 3.0,
    fov_deg: float = 40.0,
    seed: int = 0,
) -> tuple[np.ndarray, list[dict[str, float]]]:
    """uint8 [V, size, size, 3] views of a procedural shape and one camera dict per view.

    Azimuths are evenly spaced over 360 degrees from 0; `seed` picks the face colours.
    """
    if num_views < 1:
        raise ValueError(f"num_views must be at least 1, got {num_views}")
    if not -90.0 < elevation_deg < 90.0:
        raise ValueError(f"elevation_deg must be strictly inside (-90, 90), got {elevation_deg}")
    if size < 8:
        raise ValueError(f"size must be at least 8 pixels, got {size}")
    if distance <= SHAPE_RADIUS:
        raise ValueError(f"distance must exceed the shapes' radius {SHAPE_RADIUS}, got {distance}")
    if not 0.0 < fov_deg < 180.0:
        raise ValueError(f"fov_deg must be inside (0, 180), got {fov_deg}")
    mesh = make_shape(shape, seed)
    cameras = [
        {
            "azimuth_deg": 360.0 * k / num_views,
            "elevation_deg": float(elevation_deg),
            "distance": float(distance),
            "fov_deg": float(fov_deg),
        }
        for k in range(num_views)
    ]
    # Closed convex solids: back faces can never show, and culling them avoids depth ties
    # along shared edges.
    frames = np.stack([render_mesh(mesh, cam, size, cull_backfaces=True) for cam in cameras])
    return frames, cameras


# --------------------------------------------------------------------------- folder I/O


def _encode_png(frame: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(frame, "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def _check_object_id(object_id: str) -> None:
    if not isinstance(object_id, str) or not object_id or "/" in object_id or object_id in (".", ".."):
        raise ValueError(f"object_id must be a non-empty folder name without '/', got {object_id!r}")


def write_orbit_folder(
    store: Store,
    prefix: str,
    object_id: str,
    frames: np.ndarray,
    cameras: Sequence[dict[str, Any]],
    source: str = SYNTHETIC_SOURCE,
) -> str:
    """Write one object folder (PNGs, then cameras.json) under `prefix`; returns its URI.

    Each camera dict needs CAMERA_KEYS; its other keys are kept; "file" is set here.
    """
    _check_object_id(object_id)
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [V, H, W, 3], got {frames.dtype} {list(frames.shape)}")
    if len(frames) < 2:
        raise ValueError(f"an orbit needs at least 2 views, got {len(frames)}")
    if len(cameras) != len(frames):
        raise ValueError(f"{len(cameras)} cameras for {len(frames)} frames")
    for index, camera in enumerate(cameras):
        missing = [k for k in CAMERA_KEYS if k not in camera]
        if missing:
            raise ValueError(f"camera {index} lacks {', '.join(missing)}")
        if not all(math.isfinite(float(camera[k])) for k in CAMERA_KEYS):
            raise ValueError(f"camera {index} has a non-finite value: {[camera[k] for k in CAMERA_KEYS]}")
    digits = max(3, len(str(len(frames) - 1)))
    folder = posixpath.join(prefix, object_id)
    views = []
    for index, (frame, camera) in enumerate(zip(frames, cameras)):
        name = f"view_{index:0{digits}d}.png"
        store.write_bytes(posixpath.join(folder, name), _encode_png(frame))
        extras = {k: v for k, v in camera.items() if k != "file" and k not in CAMERA_KEYS}
        views.append({"file": name, **{k: float(camera[k]) for k in CAMERA_KEYS}, **extras})
    meta = {
        "object_id": object_id,
        "source": source,
        "width": int(frames.shape[2]),
        "height": int(frames.shape[1]),
        "views": views,
    }
    store.write_bytes(posixpath.join(folder, CAMERAS_FILE), json.dumps(meta, indent=1).encode())
    return store.uri(folder)


def generate_synthetic_orbits(
    store: Store,
    prefix: str,
    num_objects: int,
    num_views: int,
    size: int,
    seed: int = 0,
    elevations: Sequence[float] = (-10, 0, 10, 20, 30),
) -> list[str]:
    """A small synthetic dataset: shapes cycle through SHAPES, elevations through
    `elevations`, colours are seeded per object. Returns the object folder URIs."""
    if num_objects < 1:
        raise ValueError(f"num_objects must be at least 1, got {num_objects}")
    if not elevations:
        raise ValueError("elevations must not be empty")
    uris = []
    for index in range(num_objects):
        shape = SHAPES[index % len(SHAPES)]
        elevation = float(elevations[index % len(elevations)])
        object_seed = int(np.random.SeedSequence([seed, index]).generate_state(1)[0])
        frames, cameras = render_orbit(shape, num_views, elevation, size=size, seed=object_seed)
        uris.append(write_orbit_folder(store, prefix, f"{shape}_{index:04d}", frames, cameras))
    return uris


@dataclass
class OrbitObject:
    """One object's orbit, read and validated."""

    object_id: str
    source: str
    frames: np.ndarray  # uint8 [V, H, W, 3], orbit order
    cameras: list[dict[str, Any]]  # the views' entries of cameras.json ("file" included)
    elevation_deg: float  # the orbit's one elevation (mean of the views')
    azimuths: np.ndarray  # float64 [V], degrees
    uri: str = ""


def list_orbit_objects(store: Store, prefix: str) -> list[str]:
    """URIs of folders under `prefix` that hold a cameras.json, sorted."""
    base = store.uri(prefix)
    if not store.fs.exists(base):
        raise FileNotFoundError(f"orbit dataset prefix does not exist: {base}")
    scheme = "s3://" if store.protocol == "s3" else ""
    found = []
    for path in store.fs.find(base):
        if posixpath.basename(path) == CAMERAS_FILE:
            folder = posixpath.dirname(path)
            found.append(scheme + folder if scheme and not folder.startswith(scheme) else folder)
    return sorted(found)


def _load_view(store: Store, object_uri: str, name: Any) -> np.ndarray:
    if not isinstance(name, str) or not name or name.startswith("/") or ".." in name.split("/"):
        raise OrbitFormatError(f"{posixpath.join(object_uri, CAMERAS_FILE)}: bad view file name {name!r}")
    uri = posixpath.join(object_uri, name)
    if not store.exists(uri):
        raise OrbitFormatError(f"{uri}: view file listed in cameras.json is missing")
    data = store.read_bytes(uri)
    if not data:
        raise OrbitFormatError(f"{uri}: view file is empty (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()  # chunk checksums: a flipped byte can otherwise still decode
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            fmt, mode, transparent = image.format, image.mode, "transparency" in image.info
            pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)
    except UnidentifiedImageError as e:
        raise OrbitFormatError(f"{uri}: view file is not in any image format Pillow recognises") from e
    except (OSError, SyntaxError, ValueError, struct.error, zlib.error) as e:
        # Pillow reports corrupt or truncated data with any of these.
        raise OrbitFormatError(f"{uri}: view file does not decode as an image ({type(e).__name__}: {e})") from e
    if fmt != "PNG":
        raise OrbitFormatError(f"{uri}: expected a PNG, found {fmt}")
    if mode not in ("RGB", "L", "P") or transparent:
        detail = f"mode {mode}" + (" with transparency" if transparent else "")
        raise OrbitFormatError(f"{uri}: expected an 8-bit RGB PNG without alpha, found {detail}")
    return pixels


def _number(meta_uri: str, index: int, view: dict, key: str) -> float:
    value = view.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise OrbitFormatError(f"{meta_uri}: view {index} needs a finite number {key!r}, got {value!r}")
    return float(value)


def read_orbit_folder(store: Store, object_uri: str) -> OrbitObject:
    """Read and validate one object folder; any defect raises OrbitFormatError."""
    object_uri = store.uri(object_uri).rstrip("/")
    meta_uri = posixpath.join(object_uri, CAMERAS_FILE)
    if not store.exists(meta_uri):
        raise OrbitFormatError(f"{meta_uri}: missing (not an orbit folder)")
    try:
        meta = json.loads(store.read_bytes(meta_uri))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise OrbitFormatError(f"{meta_uri}: not valid JSON ({e})") from e
    if not isinstance(meta, dict):
        raise OrbitFormatError(f"{meta_uri}: expected a JSON object, got {type(meta).__name__}")
    for key in ("object_id", "source"):
        if not isinstance(meta.get(key), str):
            raise OrbitFormatError(f"{meta_uri}: {key!r} must be a string, got {meta.get(key)!r}")
    for key in ("width", "height"):
        value = meta.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise OrbitFormatError(f"{meta_uri}: {key!r} must be a positive integer, got {value!r}")
    views = meta.get("views")
    if not isinstance(views, list) or len(views) < 2:
        count = len(views) if isinstance(views, list) else views
        raise OrbitFormatError(f"{meta_uri}: 'views' must list at least 2 views, got {count!r}")

    cameras, frames = [], []
    for index, view in enumerate(views):
        if not isinstance(view, dict):
            raise OrbitFormatError(f"{meta_uri}: view {index} is not a JSON object")
        camera = {**view, **{key: _number(meta_uri, index, view, key) for key in CAMERA_KEYS}}
        frame = _load_view(store, object_uri, view.get("file"))
        if frame.shape[:2] != (meta["height"], meta["width"]):
            raise OrbitFormatError(
                f"{posixpath.join(object_uri, view['file'])}: is {frame.shape[1]}x{frame.shape[0]}, "
                f"cameras.json says {meta['width']}x{meta['height']}"
            )
        cameras.append(camera)
        frames.append(frame)

    elevations = np.array([c["elevation_deg"] for c in cameras])
    if elevations.max() - elevations.min() > ELEVATION_TOLERANCE_DEG:
        raise OrbitFormatError(
            f"{meta_uri}: views disagree on elevation ({elevations.min()} to {elevations.max()} degrees); "
            "an orbit has one elevation"
        )
    return OrbitObject(
        object_id=meta["object_id"],
        source=meta["source"],
        frames=np.stack(frames),
        cameras=cameras,
        elevation_deg=float(elevations.mean()),
        azimuths=np.array([c["azimuth_deg"] for c in cameras]),
        uri=object_uri,
    )
