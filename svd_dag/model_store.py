"""The model store: a local folder or s3:// prefix holding weights, laid out by family.

    <SVD_DAG_MODELS_URI>/
      clip/<arch>.safetensors | .pt | .bin     open_clip image/text towers (e.g. clip/ViT-L-14.pt)
      coca/<arch>.safetensors | .pt | .bin     open_clip CoCa captioner (e.g. coca/coca_ViT-L-14.pt)
      aesthetic/<file>.pth                     LAION aesthetic heads
      vblip/, llm/                             video captioner and caption summariser (optional)
      sd21/unet/                               SD 2.1 UNet, diffusers folder (stage I init, full profile)
      vae/                                     SD 2.1 VAE with SVD's temporal decoder, diffusers folder

No hub is ever contacted. `find` returns a local path (remote files are copied once into
a cache folder) or None when the store does not hold the file; callers then either fall
back to a random-init architecture, labelled `weights=random`, or report the model as not
configured. A file's version is its sha256, so lineage names the exact weights.
"""

from __future__ import annotations

import hashlib
import os
import posixpath

from svd_dag.storage import Store

WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(8 * 2**20), b""):
            h.update(block)
    return h.hexdigest()


class ModelStore:
    def __init__(self, uri: str, cache_dir: str, extra_local_dirs: tuple[str, ...] = ()):
        self.uri = uri
        self.store = Store(uri)
        self.cache_dir = cache_dir
        # Read-only fallbacks (e.g. ../shared/weights) consulted after the store itself.
        self.extra_local_dirs = tuple(d for d in extra_local_dirs if d and os.path.isdir(d))

    def find(self, relpath: str) -> str | None:
        """Local path of `relpath` in the store (or a fallback folder), else None."""
        uri = self.store.uri(relpath)
        if self.store.exists(uri):
            if self.store.is_local:
                return uri
            local = os.path.join(self.cache_dir, hashlib.sha256(self.uri.encode()).hexdigest()[:12], relpath)
            if not os.path.exists(local) or os.path.getsize(local) != self.store.size(uri):
                os.makedirs(os.path.dirname(local), exist_ok=True)
                tmp = local + ".part"
                self.store.fs.get_file(uri, tmp)
                os.replace(tmp, local)
            return local
        for d in self.extra_local_dirs:
            candidate = os.path.join(d, relpath)
            if os.path.exists(candidate):
                return candidate
        return None

    def find_weights(self, family: str, name: str) -> str | None:
        """First of <family>/<name><suffix> that exists, for the usual weight suffixes."""
        for suffix in WEIGHT_SUFFIXES:
            found = self.find(posixpath.join(family, name + suffix))
            if found:
                return found
        return None

    def describe(self, relpath: str) -> str:
        return self.store.uri(relpath)
