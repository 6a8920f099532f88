"""Library shims, kept in this one place so each can be dropped when upstream catches up.

1. open_clip 3.3 + transformers 5: open_clip's `coca_model` imports the generation helpers
from transformers in a single try block that also imports `BeamSearchScorer`.
transformers 5 removed that class, so the whole import fails and CoCa's `generate()`
asserts "Please install transformers" even though transformers is installed.
Downgrading transformers is not an option (diffusers 0.42 needs 5.x). Defining
`transformers.BeamSearchScorer = None` before open_clip is imported lets the other
helpers import; top-k / top-p sampling then work, beam search stays broken (it is the
only user of the placeholder), so callers must pass `generation_type="top_k"`.

2. open_clip 3.3 CoCa random init: the text decoder (`MultimodalTransformer`) allocates
its `text_projection` with `torch.empty` and never initialises it (its
`init_parameters` refers to a non-existent `self.transformer` and is never called). A
random-init CoCa therefore reads uninitialised memory: captions change with whatever
the allocator hands back (e.g. after another model was freed). `init_coca_text_projection`
gives it the normal(0, width^-0.5) init that method intends, under the caller's seed.
"""

from __future__ import annotations

import sys
import threading

_lock = threading.Lock()


def _patch_loaded_coca_model() -> None:
    """Repair an open_clip that was imported elsewhere before the shim was in place."""
    coca = sys.modules.get("open_clip.coca_model")
    if coca is None or getattr(coca, "_has_transformers", True):
        return
    from transformers import TopKLogitsWarper, TopPLogitsWarper

    # The failed try block had already bound the processors imported before
    # BeamSearchScorer; only the flag and the warper table are missing.
    coca.GENERATION_TYPES = {"top_k": TopKLogitsWarper, "top_p": TopPLogitsWarper, "beam_search": "beam_search"}
    coca._has_transformers = True


def import_open_clip():
    """Import open_clip with CoCa generation working under transformers 5; returns the module."""
    with _lock:
        import transformers

        try:
            present = hasattr(transformers, "BeamSearchScorer")  # still exported by 4.x
        except ImportError:
            present = False
        if not present:
            transformers.BeamSearchScorer = None
        import open_clip

        _patch_loaded_coca_model()
        return open_clip


def init_coca_text_projection(model) -> None:
    """Initialise CoCa's never-initialised decoder projection (no-op for other models)."""
    import torch

    decoder = getattr(model, "text_decoder", None)
    proj = getattr(decoder, "text_projection", None)
    if isinstance(proj, torch.nn.Parameter):
        with torch.no_grad():
            torch.nn.init.normal_(proj, std=decoder.width**-0.5)
