"""mp4/GIF writing round-trips through real decoders (PyAV, Pillow), and the preview/conversion helpers."""

from __future__ import annotations

import base64
import io
import re

import av
import numpy as np
import pytest
import torch
from PIL import Image, ImageSequence

from svd_dag.sampling.video_io import (
    decode_mp4,
    encode_gif,
    encode_mp4,
    even_size,
    frames_from_latent_decode,
    gif_frame_ms,
    preview_markdown,
)


def moving_gradient(num_frames: int, height: int, width: int) -> np.ndarray:
    """Smooth colour waves (half a period across the frame), drifting by 1/num_frames of the width a frame."""
    y = np.arange(height)[None, :, None] / height
    x = np.arange(width)[None, None, :] / width
    t = np.arange(num_frames)[:, None, None] / num_frames
    shape = (num_frames, height, width)
    red = np.broadcast_to(128 + 90 * np.sin(np.pi * (x - t)), shape)
    green = np.broadcast_to(128 + 90 * np.cos(np.pi * (y + 0.5 * t)), shape)
    blue = np.broadcast_to(60 + 120 * x * y, shape)
    return np.stack([red, green, blue], axis=-1).round().astype(np.uint8)


def test_mp4_round_trip_keeps_count_size_rate_and_content():
    frames = moving_gradient(12, 48, 64)
    data = encode_mp4(frames, fps=8)
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.average_rate == 8
    decoded = decode_mp4(data)
    assert decoded.shape == frames.shape and decoded.dtype == np.uint8
    # 4:2:0 chroma and swscale's 8-bit RGB<->YUV conversion cost a couple of grey levels even at crf 0
    error = np.abs(decoded.astype(np.int16) - frames).mean()
    assert error < 3.0, error
    # frames stay in order: each decoded frame is closest to its own source frame
    distances = np.abs(decoded[:, None].astype(np.int16) - frames[None]).mean(axis=(2, 3, 4))
    assert (distances.argmin(axis=1) == np.arange(12)).all()


def test_odd_sizes_are_padded_by_repeating_the_edge():
    frames = moving_gradient(5, 33, 47)
    assert even_size(33, 47) == (34, 48) and even_size(32, 48) == (32, 48)
    decoded = decode_mp4(encode_mp4(frames, fps=24))
    assert decoded.shape == (5, 34, 48, 3)
    padded = np.pad(frames, ((0, 0), (0, 1), (0, 1), (0, 0)), mode="edge")
    assert np.abs(decoded.astype(np.int16) - padded).mean() < 3.5
    assert np.abs(decoded[:, :33, :47].astype(np.int16) - frames).mean() < 3.5


def test_gif_frames_timing_size_and_loop():
    frames = moving_gradient(6, 300, 512)
    gif = encode_gif(frames, fps=4, max_width=256)
    image = Image.open(io.BytesIO(gif))
    assert image.format == "GIF" and image.size == (256, 150) and image.n_frames == 6
    assert image.info["loop"] == 0
    durations = [frame.info["duration"] for frame in ImageSequence.Iterator(image)]
    assert durations == [250] * 6
    image.seek(3)
    resized = Image.fromarray(frames[3]).resize((256, 150), Image.Resampling.LANCZOS)
    reference = np.asarray(resized, dtype=np.int16)
    assert np.abs(np.asarray(image.convert("RGB"), dtype=np.int16) - reference).mean() < 8


def test_small_gif_is_not_upscaled_and_frame_time_rounds_to_ticks():
    frames = moving_gradient(3, 21, 35)
    image = Image.open(io.BytesIO(encode_gif(frames, fps=10)))
    assert image.size == (35, 21) and image.n_frames == 3 and image.info["duration"] == 100
    assert gif_frame_ms(8) == 130 and gif_frame_ms(7) == 140 and gif_frame_ms(1000) == 20


def test_gif_merges_identical_consecutive_frames_keeping_total_time():
    still = moving_gradient(1, 16, 16)
    frames = np.concatenate([still, still, still, moving_gradient(4, 16, 16)[2:3]])
    image = Image.open(io.BytesIO(encode_gif(frames, fps=10)))
    assert [frame.info["duration"] for frame in ImageSequence.Iterator(image)] == [300, 100]


def test_preview_markdown_embeds_the_gif_bytes():
    gif = encode_gif(moving_gradient(2, 8, 8), fps=5)
    markdown = preview_markdown(gif, "seed 3, 25 steps")
    match = re.search(r"!\[[^\]]*\]\(data:image/gif;base64,([A-Za-z0-9+/=]+)\)", markdown)
    assert match and base64.b64decode(match.group(1)) == gif
    assert markdown.rstrip().endswith("seed 3, 25 steps") and markdown.index("seed 3") > match.end()
    with pytest.raises(ValueError, match="not a GIF"):
        preview_markdown(b"\x89PNG\r\n\x1a\n", "png")


def test_frames_from_latent_decode_maps_range_and_layout():
    values = torch.tensor([-1.0, 0.0, 1.0, 2.0, -3.0, 0.5])
    video = torch.zeros(2, 3, 1, 6)
    video[1, 2, 0] = values  # frame 1, blue channel
    out = frames_from_latent_decode(video)
    assert out.shape == (2, 1, 6, 3) and out.dtype == np.uint8
    assert out[1, 0, :, 2].tolist() == [0, 128, 255, 255, 0, 191]
    assert (out[1, 0, :, :2] == 128).all() and (out[0] == 128).all()
    assert np.array_equal(frames_from_latent_decode(video.to(torch.bfloat16)), out)
    assert np.array_equal(frames_from_latent_decode(video.numpy()), out)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (np.zeros((0, 8, 8, 3), np.uint8), "empty"),
        (np.zeros((2, 8, 8, 3), np.float32), "uint8"),
        (np.zeros((2, 8, 8), np.uint8), "shape"),
        (np.zeros((2, 8, 8, 4), np.uint8), "shape"),
        (np.zeros((2, 0, 8, 3), np.uint8), "zero height or width"),
    ],
)
def test_bad_frames_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        encode_mp4(bad, fps=8)
    with pytest.raises(ValueError, match=message):
        encode_gif(bad, fps=8)


def test_bad_parameters_and_data_are_refused():
    frames = moving_gradient(2, 8, 8)
    for fps in (0, -1, float("nan"), "8"):
        with pytest.raises(ValueError, match="fps"):
            encode_mp4(frames, fps=fps)
    with pytest.raises(ValueError, match="crf"):
        encode_mp4(frames, fps=8, crf=60)
    with pytest.raises(ValueError, match="max_width"):
        encode_gif(frames, fps=8, max_width=0)
    with pytest.raises(ValueError, match="empty"):
        decode_mp4(b"")
    with pytest.raises(ValueError, match="not a readable video"):
        decode_mp4(b"definitely not an mp4 file" * 10)
    with pytest.raises(ValueError, match=r"\[F, 3, H, W\]"):
        frames_from_latent_decode(torch.zeros(2, 4, 8, 8))
    with pytest.raises(ValueError, match="floating point"):
        frames_from_latent_decode(np.zeros((2, 3, 8, 8), np.uint8))
    with pytest.raises(ValueError, match="NaN"):
        frames_from_latent_decode(torch.full((1, 3, 2, 2), float("nan")))
