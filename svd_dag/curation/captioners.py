"""Pluggable clip captioners: CoCa (image), V-BLIP (video) and an LLM summary of the two.

Every captioner reports `name`, `version` (exact weights), `weights` ("pretrained" /
"random" / None when there are none) and `status`. A captioner whose weights the model
store does not hold is `status="not_configured"` with `detail` saying what to put where,
and returns None: it never makes up a caption. CoCa alone falls back to a seeded random
init (so the graph runs end to end anywhere), labelled `weights="random"`.

Model folders (`vblip/`, `llm/`) are transformers `save_pretrained` folders in the store.
Models load lazily on first use and are cached per process, per resolved device and dtype
(`Placement`, given at construction and resolved there: `device` / `dtype` attributes).
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import threading
from typing import Any, Protocol, runtime_checkable

import numpy as np

from svd_dag.curation.clip_model import cached_file_sha256
from svd_dag.curation.devices import Placement, place_module, resolve
from svd_dag.model_store import ModelStore

FRAME_KINDS = ("image", "video")

_CACHE: dict[tuple, Any] = {}
_CACHE_LOCK = threading.Lock()


def _cached(key: tuple, build):
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = build()
        return _CACHE[key]


def clear_cache() -> None:
    with _CACHE_LOCK:
        _CACHE.clear()


@runtime_checkable
class Captioner(Protocol):
    name: str
    kind: str  # "image" | "video" captions frames; "summary" summarises other captions
    version: str | None
    weights: str | None  # "pretrained" | "random" | None (not configured)
    status: str  # "ok" | "not_configured"
    detail: str

    def caption(self, frames: list[np.ndarray]) -> str | None:
        """Caption of a clip from its first, middle and last RGB frames (uint8 HxWx3)."""
        ...

    def caption_batch(self, frames_per_clip: list[list[np.ndarray]]) -> list[str | None]:
        """`caption` of each clip, batched across clips where the model allows."""
        ...


def _rng_devices(device: str) -> list[int]:
    """The CUDA devices whose RNG `fork_rng` must save and restore (sampling runs there)."""
    import torch

    if not device.startswith("cuda"):
        return []
    index = torch.device(device).index
    return [torch.cuda.current_device() if index is None else index]


class CocaCaptioner:
    """open_clip CoCa on the clip's middle frame."""

    kind = "image"

    def __init__(self, arch: str = "coca_ViT-B-32", store: ModelStore | None = None, seed: int = 0,
                 max_tokens: int = 30, top_k: int = 1, placement: Placement | None = None):
        from svd_dag.curation.clip_model import open_clip_version

        if max_tokens < 6:  # open_clip's generate() needs seq_len > its min_seq_len of 5
            raise ValueError(f"max_tokens must be at least 6, got {max_tokens}")
        self.name = "coca"
        self.arch, self.store, self.seed = arch, store, seed
        self.max_tokens, self.top_k = max_tokens, top_k
        self.placement = resolve(placement)  # resolved here: an unusable device fails at construction
        self.device, self.dtype, self.batch_frames = self.placement.device, self.placement.dtype, \
            self.placement.batch_frames
        self.params = {"frame": "middle", "generation_type": "top_k", "top_k": top_k, "max_tokens": max_tokens,
                       "seed": seed}  # generation settings, for lineage next to `version`
        self.path = store.find_weights("coca", arch) if store is not None else None
        self.weights, self.version = open_clip_version(arch, self.path, seed)
        self.status = "ok"
        self.detail = (
            f"weights {self.path}" if self.path else
            f"no coca/{arch}.safetensors|.pt|.bin in the model store: random init (seed {seed}), captions are noise"
        )

    def load(self):
        from svd_dag.curation.clip_model import build_open_clip, file_key

        def build():
            built = build_open_clip(self.arch, "coca", self.store, self.seed)  # on the CPU, then placed
            built.model = place_module(built.model, self.placement)
            return built

        return _cached(("coca", self.arch, file_key(self.path), self.seed, self.device, self.dtype), build)

    def caption(self, frames: list[np.ndarray]) -> str | None:
        return self.caption_batch([frames])[0]

    def caption_batch(self, frames_per_clip: list[list[np.ndarray]]) -> list[str | None]:
        """Captions of many clips, from each clip's middle frame: one `generate` call per
        `batch_frames` clips. With top_k=1 (greedy) a clip's caption does not depend on the
        other clips of its batch; with top_k > 1 the sampled tokens do (one RNG stream)."""
        import torch
        from PIL import Image

        for frames in frames_per_clip:
            if not len(frames):
                raise ValueError("caption() needs the clip's frames (first, middle, last)")
        if not frames_per_clip:
            return []
        built = self.load()
        images = [built.preprocess(Image.fromarray(np.ascontiguousarray(frames[len(frames) // 2])))
                  for frames in frames_per_clip]
        eos, pad = 49407, built.model.pad_id  # generate()'s defaults
        out: list[str | None] = []
        for i in range(0, len(images), self.batch_frames):
            batch = torch.stack(images[i:i + self.batch_frames]).to(
                device=self.device, dtype=self.placement.torch_dtype, non_blocking=True)
            # Seeded sampling without touching the caller's RNG; top_k because beam search
            # is broken under transformers 5 (see compat.py).
            with torch.random.fork_rng(devices=_rng_devices(self.device)), torch.inference_mode():
                torch.manual_seed(self.seed)
                tokens = built.model.generate(batch, generation_type="top_k", top_k=self.top_k,
                                              seq_len=self.max_tokens)
            for row in tokens.cpu().tolist():
                out.append(self._decode(built.tokenizer, row, eos, pad))
        return out

    @staticmethod
    def _decode(tokenizer, row: list[int], eos: int, pad: int) -> str | None:
        # A row ends at its first eos or pad token (generate() stops a row there); in a batch
        # the finished rows are padded until the longest one ends: drop that padding so the
        # text is the one this clip gets on its own.
        for j, token in enumerate(row[1:], start=1):
            if token in (eos, pad):
                row = row[:j + 1]
                break
        text = tokenizer.decode(row)
        text = text.split("<end_of_text>")[0].replace("<start_of_text>", "")
        return " ".join(text.split()) or None


def find_model_dir(store: ModelStore | None, rel: str) -> str | None:
    """Local folder of a transformers checkpoint at `rel` in the store (remote files cached)."""
    if store is None:
        return None
    config = store.find(posixpath.join(rel, "config.json"))
    if config is None:
        return None
    if not store.store.is_local and store.store.exists(posixpath.join(rel, "config.json")):
        # find() copies one file at a time: fetch the rest of the remote folder too.
        base = store.store.uri(rel).split("://", 1)[-1].rstrip("/")
        for remote in store.store.fs.find(store.store.uri(rel)):
            store.find(posixpath.join(rel, remote.split("://", 1)[-1][len(base) + 1:]))
    return os.path.dirname(config)


def folder_sha256(folder: str) -> str:
    """Hash of a checkpoint folder: every file's relative path and sha256."""
    h = hashlib.sha256()
    for root, _, files in sorted(os.walk(folder)):
        for name in sorted(files):
            path = os.path.join(root, name)
            h.update(f"{os.path.relpath(path, folder)}\0{cached_file_sha256(path)}\n".encode())
    return h.hexdigest()


class _FolderModel:
    """Shared state of the transformers-folder captioners."""

    rel = ""
    what = ""

    def __init__(self, store: ModelStore | None, placement: Placement | None = None):
        self.placement = resolve(placement)
        self.device, self.dtype, self.batch_frames = self.placement.device, self.placement.dtype, \
            self.placement.batch_frames
        self.folder = find_model_dir(store, self.rel)
        if self.folder is None:
            where = store.describe(self.rel) if store is not None else f"<model store>/{self.rel}"
            self.status, self.weights, self.version = "not_configured", None, None
            self.detail = f"put a transformers save_pretrained folder ({self.what}) at {where}/ (with config.json)"
            return
        with open(os.path.join(self.folder, "config.json")) as f:
            self.model_type = json.load(f).get("model_type", "unknown")
        self.status, self.weights = "ok", "pretrained"
        self.version = f"{self.rel}:{self.model_type}@sha256:{folder_sha256(self.folder)[:12]}"
        self.detail = f"weights {self.folder}"

    def _from_pretrained(self, cls):
        """`cls.from_pretrained` in the placement's dtype (transformers 5 would otherwise pick the
        checkpoint's, often fp16: slow or unsupported on the CPU), moved to its device."""
        model = cls.from_pretrained(self.folder, local_files_only=True, dtype=self.placement.torch_dtype)
        return model.to(self.device).eval()

    def _load_error(self, exc: Exception) -> ValueError:
        return ValueError(f"{self.rel} checkpoint {self.folder} cannot be loaded: {type(exc).__name__}: {exc}")


class VideoBlipCaptioner(_FolderModel):
    """V-BLIP: a BLIP-2 checkpoint whose Q-Former attends to the tokens of all frames.

    As in Video-BLIP, each frame goes through the vision encoder on its own, the frame
    token sequences are concatenated, and the Q-Former queries the whole sequence, so
    the language model sees the clip rather than one image.
    """

    name = "vblip"
    kind = "video"
    rel = "vblip"
    what = "a BLIP-2 / Video-BLIP checkpoint with its processor"

    def __init__(self, store: ModelStore | None, max_tokens: int = 30, placement: Placement | None = None):
        super().__init__(store, placement)
        self.max_tokens = max_tokens
        if self.status == "ok" and self.model_type != "blip-2":
            raise ValueError(f"vblip checkpoint {self.folder} has model_type {self.model_type!r}; expected 'blip-2'")

    def load(self):
        def build():
            from transformers import AutoProcessor, Blip2ForConditionalGeneration

            try:
                processor = AutoProcessor.from_pretrained(self.folder, local_files_only=True)
                model = self._from_pretrained(Blip2ForConditionalGeneration)
            except Exception as exc:
                raise self._load_error(exc) from exc
            return processor, model

        return _cached(("vblip", self.folder, self.version, self.device, self.dtype), build)

    def caption_batch(self, frames_per_clip: list[list[np.ndarray]]) -> list[str | None]:
        return [self.caption(frames) for frames in frames_per_clip]  # one clip per generate() call

    def caption(self, frames: list[np.ndarray]) -> str | None:
        import torch
        from PIL import Image

        if self.status != "ok":
            return None
        if not frames:
            raise ValueError("caption() needs the clip's frames (first, middle, last)")
        processor, model = self.load()
        images = [Image.fromarray(np.ascontiguousarray(f)) for f in frames]
        pixels = processor.image_processor(images=images, return_tensors="pt")["pixel_values"]
        device = self.device
        with torch.inference_mode():
            frame_tokens = model.vision_model(pixel_values=pixels.to(device=device, dtype=model.dtype),
                                              return_dict=True).last_hidden_state
            clip_tokens = frame_tokens.reshape(1, -1, frame_tokens.shape[-1])  # [1, frames * tokens, D]
            query = model.qformer(
                query_embeds=model.query_tokens.expand(1, -1, -1),
                encoder_hidden_states=clip_tokens,
                encoder_attention_mask=torch.ones(clip_tokens.shape[:2], dtype=torch.long, device=device),
                return_dict=True,
            ).last_hidden_state
            embeds = model.language_projection(query.to(model.language_projection.weight.dtype))
            bos = model.config.text_config.bos_token_id
            if bos is not None:  # decoder-only LMs (OPT) start after BOS; T5's encoder has none
                bos_embed = model.get_input_embeddings()(torch.tensor([[bos]], device=device)).to(embeds.dtype)
                embeds = torch.cat([embeds, bos_embed], dim=1)
            out = model.language_model.generate(
                inputs_embeds=embeds,
                attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long, device=device),
                max_new_tokens=self.max_tokens,
                do_sample=False,
            )
        text = processor.tokenizer.decode(out[0].cpu(), skip_special_tokens=True).strip()
        return text or None


class LlmSummaryCaptioner(_FolderModel):
    """A causal LM that condenses the other captions of a clip into one."""

    name = "llm_summary"
    kind = "summary"
    rel = "llm"
    what = "a causal language model with its tokenizer"

    def __init__(self, store: ModelStore | None, max_tokens: int = 40, placement: Placement | None = None):
        super().__init__(store, placement)
        self.max_tokens = max_tokens

    def load(self):
        def build():
            from transformers import AutoModelForCausalLM, AutoTokenizer

            try:
                tokenizer = AutoTokenizer.from_pretrained(self.folder, local_files_only=True)
                model = self._from_pretrained(AutoModelForCausalLM)
            except Exception as exc:
                raise self._load_error(exc) from exc
            return tokenizer, model

        return _cached(("llm", self.folder, self.version, self.device, self.dtype), build)

    def caption(self, frames: list[np.ndarray]) -> str | None:
        return None  # works on captions, not frames: see summarise()

    def caption_batch(self, frames_per_clip: list[list[np.ndarray]]) -> list[str | None]:
        return [None] * len(frames_per_clip)

    @staticmethod
    def prompt(captions: list[str]) -> str:
        listed = "\n".join(f"- {c}" for c in captions)
        return f"Captions of one video clip:\n{listed}\nOne-sentence description of the clip:"

    def summarise(self, captions: list[str]) -> str | None:
        import torch

        captions = [c for c in captions if c]
        if self.status != "ok" or not captions:
            return None
        tokenizer, model = self.load()
        text = self.prompt(captions)
        if getattr(tokenizer, "chat_template", None):
            ids = tokenizer.apply_chat_template(
                [{"role": "user", "content": text}], add_generation_prompt=True, return_tensors="pt",
                return_dict=True,
            )["input_ids"]
        else:
            ids = tokenizer(text, return_tensors="pt")["input_ids"]
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        ids = ids.to(self.device)
        with torch.inference_mode():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=self.max_tokens,
                                 do_sample=False, pad_token_id=pad)
        summary = tokenizer.decode(out[0, ids.shape[1]:].cpu(), skip_special_tokens=True).strip()
        return summary.splitlines()[0].strip() if summary else None


def build_captioners(store: ModelStore | None, coca_arch: str = "coca_ViT-B-32", seed: int = 0,
                     coca_max_tokens: int = 30, placement: Placement | None = None) -> list[Captioner]:
    """CoCa, V-BLIP and the LLM summariser, all on `placement` (None: `Placement()`)."""
    return [CocaCaptioner(coca_arch, store, seed, max_tokens=coca_max_tokens, placement=placement),
            VideoBlipCaptioner(store, placement=placement), LlmSummaryCaptioner(store, placement=placement)]


def caption_clip(captioners: list[Captioner], frames: list[np.ndarray]) -> dict[str, str | None]:
    """Every captioner's caption of one clip; summarisers run last, over the others' captions."""
    out = {c.name: c.caption(frames) for c in captioners if c.kind in FRAME_KINDS}
    for c in captioners:
        if c.kind == "summary":
            out[c.name] = c.summarise([v for v in out.values() if v])  # type: ignore[attr-defined]
    return out


def caption_clips(captioners: list[Captioner], frames_per_clip: list[list[np.ndarray]]) -> list[dict[str, str | None]]:
    """`caption_clip` of many clips, each frame captioner batched across them."""
    by_name = {c.name: c.caption_batch(frames_per_clip) for c in captioners if c.kind in FRAME_KINDS}
    out = [{name: texts[i] for name, texts in by_name.items()} for i in range(len(frames_per_clip))]
    for c in captioners:
        if c.kind == "summary":
            for row in out:
                row[c.name] = c.summarise([v for v in row.values() if v])  # type: ignore[attr-defined]
    return out
