"""Text encoders behind one interface: normalised (N, D) embeddings, an LRU prompt cache, open_clip from a local file."""
from __future__ import annotations

import torch

from qmn.text import OpenCLIPTextEncoder, build_text_encoder


def test_minilm_is_offline_normalised_and_cached(monkeypatch):
    enc = build_text_encoder("minilm")
    emb = enc.encode(["person", "dog", "the woman wearing a blue mask"])
    assert emb.shape == (3, 384) and torch.allclose(emb.norm(dim=1), torch.ones(3), atol=1e-5)
    assert emb[0] @ emb[1] < 0.99  # different prompts, different embeddings
    calls = []
    monkeypatch.setattr(enc, "_embed", lambda texts: calls.append(texts) or torch.ones(len(texts), 384))
    again = enc.encode(["dog", "person"])  # both cached: no encoder call
    assert calls == [] and torch.equal(again[0], emb[1])
    enc.encode(["dog", "cat"])
    assert calls == [["cat"]]  # only the new prompt is encoded


def test_open_clip_text_tower_from_a_local_safetensors_file(tmp_path):
    import open_clip
    from safetensors.torch import save_file

    torch.manual_seed(0)
    donor = open_clip.create_model("ViT-B-32", pretrained=None)
    path = tmp_path / "clip.safetensors"
    save_file({k: v.contiguous() for k, v in donor.state_dict().items()}, str(path))
    enc = build_text_encoder(f"open_clip:ViT-B-32:{path}")
    assert isinstance(enc, OpenCLIPTextEncoder) and enc.dim == 512
    assert torch.equal(enc.model.token_embedding.weight, donor.token_embedding.weight)
    emb = enc.encode(["a photo of a dog", "sky"])
    assert emb.shape == (2, 512) and torch.allclose(emb.norm(dim=1), torch.ones(2), atol=1e-5)
    expected = torch.nn.functional.normalize(donor.encode_text(open_clip.get_tokenizer("ViT-B-32")(["sky"])), dim=-1)
    assert torch.allclose(emb[1], expected[0], atol=1e-5)
