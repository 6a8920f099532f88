"""Captioners: random-init CoCa, stored CoCa weights, and the folder-based V-BLIP / LLM paths.

The configured V-BLIP and LLM paths run on tiny random transformers checkpoints saved
into a temporary model store, with tokenizers trained offline on a few sentences.
"""

from __future__ import annotations

import json
import os

import pytest
import skimage.data

from svd_dag.curation import captioners as cap
from svd_dag.model_store import ModelStore, file_sha256

TINY_COCA = "svdtest-tiny-coca"
TINY_COCA_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 1, "width": 64, "patch_size": 32, "head_width": 32,
                   "attentional_pool": True, "attn_pooler_heads": 2, "attn_pooler_queries": 8, "output_tokens": True},
    "text_cfg": {"context_length": 76, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1,
                 "embed_cls": True, "output_tokens": True},
    "multimodal_cfg": {"context_length": 76, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1,
                       "attn_pooler_heads": 2},
    "custom_text": True,
}


@pytest.fixture(scope="module", autouse=True)
def tiny_coca(tmp_path_factory):
    from svd_dag.curation.compat import import_open_clip

    folder = tmp_path_factory.mktemp("open_clip_cfgs")
    (folder / f"{TINY_COCA}.json").write_text(json.dumps(TINY_COCA_CFG))
    import_open_clip().add_model_config(folder)
    yield
    cap.clear_cache()


@pytest.fixture(scope="module")
def frames():
    return [skimage.data.astronaut(), skimage.data.chelsea(), skimage.data.coffee()]


def _store(root) -> ModelStore:
    return ModelStore(str(root / "models"), str(root / "cache"))


def _tokenizer(special: list[str], **kwargs):
    """A small byte-level BPE tokenizer trained in memory: no hub, no files needed."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=special,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["a cat sitting on a mat", "a dog running in a park", "captions of one video clip"],
                            trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, **kwargs)


def test_random_coca_b32_captions_deterministically(frames):
    import torch

    coca = cap.CocaCaptioner("coca_ViT-B-32", None, seed=0, max_tokens=8)
    assert (coca.weights, coca.status, coca.kind) == ("random", "ok", "image")
    assert "random" in coca.version and coca.version.startswith("coca_ViT-B-32@")
    rng_before = torch.get_rng_state()
    first = coca.caption(frames)
    assert isinstance(first, str) and first.strip() and "<end_of_text>" not in first and "<start_of_text>" not in first
    assert coca.caption(frames) == first
    assert torch.equal(torch.get_rng_state(), rng_before)  # sampling is seeded locally


def test_coca_seed_and_stored_weights(tmp_path, frames):
    from safetensors.torch import save_file

    seeded = {s: cap.CocaCaptioner(TINY_COCA, None, seed=s, max_tokens=12) for s in (0, 7)}
    captions = {s: c.caption(frames) for s, c in seeded.items()}
    assert captions[0] != captions[7]

    path = tmp_path / "models" / "coca" / f"{TINY_COCA}.safetensors"
    path.parent.mkdir(parents=True)
    state = seeded[7].load().model.state_dict()
    save_file({k: v.detach().clone().contiguous() for k, v in state.items()}, str(path))
    stored = cap.CocaCaptioner(TINY_COCA, _store(tmp_path), seed=0, max_tokens=12)
    assert stored.weights == "pretrained"
    assert stored.version == f"{TINY_COCA}@sha256:{file_sha256(str(path))[:12]}"
    assert stored.caption(frames) == captions[7]


def test_shim_repairs_an_open_clip_imported_before_it():
    import subprocess
    import sys

    code = (
        "import open_clip, open_clip.coca_model as c\n"
        "assert not c._has_transformers  # open_clip 3.3 under transformers 5, unpatched\n"
        "from svd_dag.curation.compat import import_open_clip\n"
        "import_open_clip()\n"
        "assert c._has_transformers and c.GENERATION_TYPES['top_k'] is not None\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_random_coca_decoder_projection_is_seeded():
    # open_clip leaves CoCa's decoder projection as torch.empty: see compat.py.
    from svd_dag.curation.clip_model import build_open_clip

    a, b = (build_open_clip(TINY_COCA, "coca", None, seed=3).model.text_decoder for _ in range(2))
    assert a.text_projection.std().item() == pytest.approx(a.width**-0.5, rel=0.2)
    assert a.text_projection.data.equal(b.text_projection.data)


def test_unconfigured_captioners_return_none(tmp_path, frames):
    store = _store(tmp_path)
    built = cap.build_captioners(store, TINY_COCA)
    assert [c.name for c in built] == ["coca", "vblip", "llm_summary"]
    assert all(isinstance(c, cap.Captioner) for c in built)
    coca, vblip, llm = built
    for c, rel in ((vblip, "vblip"), (llm, "llm")):
        assert (c.status, c.weights, c.version) == ("not_configured", None, None)
        assert os.path.join(str(tmp_path / "models"), rel) in c.detail
        assert c.caption(frames) is None
    assert llm.summarise(["a cat on a mat"]) is None
    out = cap.caption_clip(built, frames)
    assert out["vblip"] is None and out["llm_summary"] is None
    assert out["coca"] == coca.caption(frames) and out["coca"]


@pytest.fixture
def llm_store(tmp_path):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = _tokenizer(["<|endoftext|>"], bos_token="<|endoftext|>", eos_token="<|endoftext|>")
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, n_positions=256, vocab_size=len(tokenizer),
                                       bos_token_id=0, eos_token_id=0))
    folder = tmp_path / "models" / "llm"
    tokenizer.save_pretrained(str(folder))
    model.save_pretrained(str(folder))
    return tmp_path


def test_llm_summary_from_a_stored_checkpoint(llm_store):
    llm = cap.LlmSummaryCaptioner(_store(llm_store))
    assert (llm.status, llm.weights, llm.kind) == ("ok", "pretrained", "summary")
    assert llm.version.startswith("llm:gpt2@sha256:")
    summary = llm.summarise(["a cat sitting on a mat", "a dog running in a park"])
    assert isinstance(summary, str) and summary
    assert "Captions of one video clip" not in summary  # only the generated tokens come back
    assert llm.summarise(["a cat sitting on a mat", "a dog running in a park"]) == summary
    assert llm.summarise([]) is None and llm.summarise(["", ""]) is None

    (llm_store / "models" / "llm" / "extra.txt").write_text("changed")
    assert cap.LlmSummaryCaptioner(_store(llm_store)).version != llm.version  # the folder hash covers every file


@pytest.fixture
def s3_models(monkeypatch):
    """A moto S3 server on 127.0.0.1 with an empty bucket `models`."""
    import logging
    import socket

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1", "SVD_DAG_S3_ENDPOINT_URL": f"http://127.0.0.1:{port}"}.items():
        monkeypatch.setenv(key, value)
    from svd_dag.storage import Store

    Store("s3://models").fs.mkdir("models")
    yield "s3://models/store"
    server.stop()


def test_llm_folder_from_an_s3_model_store(llm_store, s3_models, tmp_path):
    from svd_dag.storage import Store

    local = llm_store / "models" / "llm"
    remote = Store(s3_models)
    for name in os.listdir(local):
        remote.write_bytes(f"llm/{name}", (local / name).read_bytes())
    llm = cap.LlmSummaryCaptioner(ModelStore(s3_models, str(tmp_path / "s3cache")))
    assert llm.status == "ok" and llm.folder.startswith(str(tmp_path / "s3cache"))
    assert sorted(os.listdir(llm.folder)) == sorted(os.listdir(local))  # the whole folder, not just config.json
    assert llm.version == cap.LlmSummaryCaptioner(_store(llm_store)).version
    assert llm.summarise(["a cat sitting on a mat"]) == cap.LlmSummaryCaptioner(_store(llm_store)).summarise(
        ["a cat sitting on a mat"])


@pytest.fixture
def vblip_store(tmp_path):
    import torch
    from transformers import Blip2Config, Blip2ForConditionalGeneration, Blip2Processor, BlipImageProcessor

    tokenizer = _tokenizer(["<|endoftext|>", "<pad>"], bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                           pad_token="<pad>")
    processor = Blip2Processor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}),
                               tokenizer=tokenizer, num_query_tokens=4)
    vocab = len(processor.tokenizer)
    config = Blip2Config(
        vision_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        qformer_config=dict(vocab_size=vocab, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=37, encoder_hidden_size=32),
        text_config=dict(model_type="opt", vocab_size=vocab, hidden_size=32, num_hidden_layers=1,
                         num_attention_heads=2, ffn_dim=37, word_embed_proj_dim=32, max_position_embeddings=64,
                         bos_token_id=0, eos_token_id=0, pad_token_id=1),
        num_query_tokens=4,
        image_token_index=processor.tokenizer.convert_tokens_to_ids("<image>"),
    )
    torch.manual_seed(0)
    model = Blip2ForConditionalGeneration(config)
    with torch.no_grad():
        # The LM head is tied to the token embeddings: zero rows give the special tokens
        # logit 0, so the random LM emits plain tokens instead of stopping at once.
        special = [0, 1, config.image_token_index]
        model.language_model.get_input_embeddings().weight[special] = 0.0
    folder = tmp_path / "models" / "vblip"
    processor.save_pretrained(str(folder))
    model.save_pretrained(str(folder))
    return tmp_path


def test_vblip_attends_to_all_three_frames(vblip_store, frames):
    vblip = cap.VideoBlipCaptioner(_store(vblip_store), max_tokens=8)
    assert (vblip.status, vblip.weights, vblip.kind) == ("ok", "pretrained", "video")
    assert vblip.version.startswith("vblip:blip-2@sha256:")
    _, model = vblip.load()
    seen = []
    hook = model.qformer.register_forward_hook(
        lambda mod, args, kwargs, out: seen.append(tuple(kwargs["encoder_hidden_states"].shape)), with_kwargs=True
    )
    try:
        caption = vblip.caption(frames)
    finally:
        hook.remove()
    tokens_per_frame = (32 // 8) ** 2 + 1  # patches + class token
    assert seen == [(1, 3 * tokens_per_frame, 32)]  # one clip, every frame's tokens
    assert isinstance(caption, str) and caption
    assert vblip.caption(frames) == caption


def test_vblip_folder_of_the_wrong_kind_is_an_error(llm_store):
    os.rename(llm_store / "models" / "llm", llm_store / "models" / "vblip")
    with pytest.raises(ValueError, match="blip-2"):
        cap.VideoBlipCaptioner(_store(llm_store))


def test_caption_batch_equals_each_clip_on_its_own(frames):
    from svd_dag.curation.devices import Placement

    clips = [frames, [frames[1], frames[0], frames[2]], [frames[0], frames[2], frames[1]]]  # three middle frames
    for arch, tokens in ((TINY_COCA, 12), ("coca_ViT-B-32", 8)):
        coca = cap.CocaCaptioner(arch, None, seed=0, max_tokens=tokens, placement=Placement("cpu", batch_frames=2))
        assert (coca.device, coca.dtype, coca.batch_frames) == ("cpu", "fp32", 2)
        alone = [coca.caption(clip) for clip in clips]
        assert len(set(alone)) == 3 and all(alone)
        assert coca.caption_batch(clips) == alone  # chunks of 2 + 1: one generate() call each
        if arch == TINY_COCA:  # (each ViT-B-32 caption costs ~0.5 s here)
            wide = cap.CocaCaptioner(arch, None, seed=0, max_tokens=tokens, placement=Placement("cpu", batch_frames=8))
            assert wide.load() is coca.load()  # the batch size does not reload the model
            assert wide.caption_batch(clips) == alone and wide.caption_batch([]) == []
    with pytest.raises(ValueError, match="frames"):
        coca.caption_batch([frames, []])


def test_a_row_that_ended_early_drops_the_batch_padding():
    from svd_dag.curation.compat import import_open_clip

    tok = import_open_clip().get_tokenizer("coca_ViT-B-32")
    sot, eos, pad = 49406, 49407, 0
    cat = tok("a cat")[0, 1:3].tolist()
    assert cap.CocaCaptioner._decode(tok, [sot, *cat, eos, pad, pad], eos, pad) == "a cat"
    ended_on_pad = cap.CocaCaptioner._decode(tok, [sot, *cat, pad], eos, pad)  # generate() stops a row at pad
    assert cap.CocaCaptioner._decode(tok, [sot, *cat, pad, pad, pad], eos, pad) == ended_on_pad


def test_coca_bf16_on_cpu_and_cuda_error(frames):
    import torch

    from svd_dag.curation.devices import Placement

    coca = cap.CocaCaptioner(TINY_COCA, None, seed=0, max_tokens=12, placement=Placement("cpu", "bf16"))
    assert (coca.device, coca.dtype) == ("cpu", "bf16")
    assert next(coca.load().model.parameters()).dtype == torch.bfloat16
    fp32 = cap.CocaCaptioner(TINY_COCA, None, seed=0, max_tokens=12)
    assert next(fp32.load().model.parameters()).dtype == torch.float32  # cached apart
    text = coca.caption(frames)
    assert isinstance(text, str) and text
    built = cap.build_captioners(None, TINY_COCA, placement=Placement("cpu", "bf16"))
    assert [(c.device, c.dtype) for c in built] == [("cpu", "bf16")] * 3
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA device"):
            cap.CocaCaptioner(TINY_COCA, None, placement=Placement(device="cuda"))


def test_caption_clips_batches_like_caption_clip(tmp_path, frames):
    built = cap.build_captioners(_store(tmp_path), TINY_COCA, coca_max_tokens=12)
    clips = [frames, [frames[1], frames[0], frames[2]]]
    assert cap.caption_clips(built, clips) == [cap.caption_clip(built, c) for c in clips]
    assert [c.caption_batch(clips) for c in built[1:]] == [[None, None]] * 2


def test_vblip_and_llm_follow_the_placement(vblip_store, llm_store, frames):
    import torch

    from svd_dag.curation.devices import Placement

    bf16 = Placement("cpu", "bf16")
    vblip = cap.VideoBlipCaptioner(_store(vblip_store), max_tokens=8, placement=bf16)
    assert (vblip.device, vblip.dtype) == ("cpu", "bf16") and vblip.load()[1].dtype == torch.bfloat16
    assert cap.VideoBlipCaptioner(_store(vblip_store)).load()[1].dtype == torch.float32  # cached apart
    texts = vblip.caption_batch([frames, frames[::-1]])
    assert len(texts) == 2 and all(isinstance(t, str) and t for t in texts)
    llm = cap.LlmSummaryCaptioner(_store(llm_store), placement=bf16)
    assert llm.load()[1].dtype == torch.bfloat16
    assert isinstance(llm.summarise(["a cat sitting on a mat"]), str)
