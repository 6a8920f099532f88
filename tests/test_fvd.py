"""FVD: Frechet distance against closed forms, I3D feature extraction and the logged protocol."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch

from svd_dag.evaluation.fvd import FvdProtocol, I3dFeatureExtractor, compute_fvd, feature_stats, frechet_distance
from svd_dag.evaluation.i3d import build_random_i3d
from synth import texture

SMALL = FvdProtocol(num_frames=16, resize=(64, 64))  # 224 costs ~1.3 s per clip on one core


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def _pan_videos(seeds: list[int], frames: int = 16, size: int = 64, speed: int = 3) -> np.ndarray:
    """uint8 [N, frames, size, size, 3]: a smooth texture panned sideways, one per seed."""
    videos = []
    for seed in seeds:
        wide = texture(seed, w=size * 3, h=size)
        videos.append(np.stack([wide[:, i * speed : i * speed + size] for i in range(frames)]))
    return np.stack(videos)


def test_frechet_distance_one_dimensional_known_answer():
    # N(0, 1) vs N(3, 4): 3^2 + 1 + 4 - 2 * sqrt(1 * 4) = 10
    distance = frechet_distance(np.array([0.0]), np.array([[1.0]]), np.array([3.0]), np.array([[4.0]]))
    assert distance == pytest.approx(10.0)


def test_frechet_distance_diagonal_closed_form():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    s1, s2 = rng.uniform(0.1, 3.0, 6), rng.uniform(0.1, 3.0, 6)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_commuting_non_diagonal_closed_form():
    # Shared eigenvectors: sqrt(S1 S2) = Q diag(sqrt(a b)) Q^T, so the trace term is sum sqrt(a b).
    rng = np.random.default_rng(1)
    q = scipy.stats.ortho_group.rvs(8, random_state=2)
    a, b = rng.uniform(0.2, 4.0, 8), rng.uniform(0.2, 4.0, 8)
    mu1, mu2 = rng.normal(size=8), rng.normal(size=8)
    s1, s2 = q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(a + b - 2 * np.sqrt(a * b))
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_general_case_matches_symmetric_formula():
    # Tr sqrt(S1 S2) = Tr sqrt(S1^1/2 S2 S1^1/2), computed here with eigh only (no sqrtm).
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(40, 10)), rng.normal(size=(40, 10)) @ rng.normal(size=(10, 10))
    (mu1, s1), (mu2, s2) = feature_stats(x), feature_stats(y)
    root1 = _psd_sqrt(s1)
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(_psd_sqrt(root1 @ s2 @ root1))
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)


def test_frechet_distance_rejects_a_complex_square_root_and_bad_shapes():
    # diag(1, -1) is no covariance: its square root is imaginary on the diagonal.
    with pytest.raises(ValueError, match="imaginary"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.diag([1.0, -1.0]))
    with pytest.raises(ValueError, match="sigma2"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.eye(3))


def test_feature_stats_uses_biased_covariance():
    mu, sigma = feature_stats(np.array([[0.0, 1.0], [2.0, 1.0]]))
    np.testing.assert_allclose(mu, [1.0, 1.0])
    np.testing.assert_allclose(sigma, [[1.0, 0.0], [0.0, 0.0]])  # divided by N = 2, not N - 1
    with pytest.raises(ValueError, match="at least 2"):
        feature_stats(np.ones((1, 4)))


def test_identical_feature_sets_have_zero_distance():
    features = np.random.default_rng(4).normal(size=(6, 400)) * 3.0  # rank-deficient, as in small evals
    mu, sigma = feature_stats(features)
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-6 * np.trace(sigma)


def test_random_i3d_features_at_protocol_size_are_labelled_random():
    videos = _pan_videos([1, 2], frames=16, size=64)
    extractor = I3dFeatureExtractor(batch_size=2)  # default protocol: 16 frames resized to 224x224
    features = extractor.extract(videos)
    assert features.shape == (2, 400) and np.isfinite(features).all()
    assert extractor.weights == "random" and extractor.features == "random"
    assert not np.allclose(features[0], features[1])


def test_random_i3d_is_deterministic_for_a_seed():
    clip = torch.from_numpy(_pan_videos([5], frames=16, size=32)).permute(0, 4, 1, 2, 3).float() / 127.5 - 1
    with torch.inference_mode():
        first, again, other = build_random_i3d(7)(clip), build_random_i3d(7)(clip), build_random_i3d(8)(clip)
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert not torch.allclose(first, other)


def test_fvd_of_a_set_with_itself_is_zero_and_grows_for_a_different_set():
    extractor = I3dFeatureExtractor(protocol=SMALL, batch_size=4)
    real = _pan_videos([1, 2, 3, 4])
    other_textures = _pan_videos([5, 6, 7, 8])
    noise = np.random.default_rng(0).integers(0, 256, size=real.shape, dtype=np.uint8)

    same = compute_fvd(real, real, extractor, SMALL)
    similar = compute_fvd(real, other_textures, extractor, SMALL)["fvd"]
    different = compute_fvd(real, noise, extractor, SMALL)["fvd"]
    assert abs(same["fvd"]) < 1e-3
    assert 0 < similar < different and different > 100
    assert same["n_real"] == same["n_fake"] == 4
    assert same["features"] == "random" and same["weights"] == "random"
    assert same["num_frames"] == 16 and same["resolution"] == "64x64" and same["resize_policy"].startswith("resize")


def test_extract_takes_the_first_frames_and_rejects_short_videos():
    extractor = I3dFeatureExtractor(protocol=FvdProtocol(num_frames=8, resize=(32, 32)), batch_size=2)
    videos = _pan_videos([1, 2], frames=12, size=32)
    np.testing.assert_allclose(extractor.extract(videos), extractor.extract(videos[:, :8]), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="have 7 frames.*at least 8"):
        extractor.extract(videos[:, :7])
    with pytest.raises(ValueError, match="uint8"):
        extractor.extract(videos.astype(np.float32))


class _ProbeI3d(torch.nn.Module):
    """Stands in for i3d_torchscript.pt with its signature; reports what it was fed.

    Like the real model it returns softmax probabilities unless return_features=True, so a
    wrong flag shows up as rows summing to 1.
    """

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False, return_features: bool = False):
        b = x.shape[0]
        flat = x.reshape(b, -1)
        probe = torch.stack(
            [flat.min(1).values, flat.max(1).values, torch.full([b], float(x.shape[1])),
             torch.full([b], float(x.shape[2])), torch.full([b], float(x.shape[3])), torch.full([b], float(x.shape[4])),
             torch.full([b], float(rescale)), torch.full([b], float(resize))],
            dim=1,
        )
        logits = torch.cat([probe, torch.zeros(b, 392)], dim=1)
        return logits if return_features else logits.softmax(dim=1)


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_torchscript_extractor_feeds_the_stylegan_v_calling_convention(tmp_path):
    path = tmp_path / "i3d_torchscript.pt"
    torch.jit.save(torch.jit.script(_ProbeI3d()), str(path))
    protocol = FvdProtocol(num_frames=16, resize=(40, 48))
    extractor = I3dFeatureExtractor(path, protocol=protocol, batch_size=3)
    videos = np.zeros((4, 20, 24, 30, 3), dtype=np.uint8)
    videos[:, :, :, :15] = 255
    features = extractor.extract(videos)
    assert extractor.weights == "pretrained" and extractor.features == "i3d-torchscript"
    assert features.shape == (4, 400)
    # [-1, 1] input, [B, 3, 16, 40, 48], rescale=False, resize=False, raw logits
    np.testing.assert_allclose(features[:, :8], [[-1, 1, 3, 16, 40, 48, 0, 0]] * 4, atol=1e-6)


def test_missing_or_corrupt_torchscript_raises_naming_the_path(tmp_path):
    missing = tmp_path / "absent" / "i3d_torchscript.pt"
    with pytest.raises(FileNotFoundError, match="absent/i3d_torchscript.pt"):
        I3dFeatureExtractor(missing)
    corrupt = tmp_path / "i3d_torchscript.pt"
    corrupt.write_bytes(b"not a torchscript archive" * 10)
    with pytest.raises(ValueError, match=str(corrupt)):
        I3dFeatureExtractor(corrupt)


def test_protocol_rejects_unimplemented_choices():
    with pytest.raises(ValueError, match="resize_policy"):
        FvdProtocol(resize_policy="center-crop")
    with pytest.raises(ValueError, match="num_frames"):
        FvdProtocol(num_frames=0)
