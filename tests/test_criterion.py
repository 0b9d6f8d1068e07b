"""Criterion recipe: the mask loss is normalised by the global mask count under DDP (as the box terms), and the
encoder proposals get a mask loss too."""
from __future__ import annotations

import pytest
import torch

from qmn.config import get_preset
from qmn.losses import SetCriterion
from qmn.outputs import LayerOutputs, QueryMeldOutput


def _outputs_and_targets(seed: int = 0):
    """Two images of two objects (one box-only), one decoder layer and proposals with masks."""
    g = torch.Generator().manual_seed(seed)
    b, q, t, m = 2, 6, 3, 2
    layer = lambda: LayerOutputs(torch.randn(b, q, t, generator=g), torch.rand(b, q, 4, generator=g) * 0.5 + 0.2,  # noqa: E731
                                 torch.randn(b, q, 16, 16, generator=g))
    targets = [{"labels": torch.randint(0, t, (m,), generator=g), "boxes": torch.rand(m, 4, generator=g) * 0.4 + 0.2,
                "masks": torch.rand(m, 64, 64, generator=g) > 0.5, "has_mask": torch.tensor([True, False])}
               for _ in range(b)]
    return QueryMeldOutput([layer()], layer(), 3, 3, 0), targets


def test_mask_loss_is_normalised_by_the_all_reduced_mask_count(monkeypatch):
    cfg = get_preset("tiny", num_mask_points=64, dec_layers=1)
    outputs, targets = _outputs_and_targets()
    torch.manual_seed(0)
    local = SetCriterion(cfg)(outputs, targets)
    # a second rank with 3x as many objects (and masks): every normaliser becomes the mean count, (n + 3n) / 2 = 2n
    dist = torch.distributed
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(dist, "all_reduce", lambda x: x.mul_(4))
    torch.manual_seed(0)
    reduced = SetCriterion(cfg)(outputs, targets)
    for name in ("loss_bbox", "loss_mask", "loss_dice", "loss_mask_interm"):
        assert reduced[name].item() == pytest.approx(local[name].item() / 2, rel=1e-5), name


@pytest.mark.parametrize("enabled", [True, False])
def test_encoder_proposals_get_a_mask_loss_that_trains_the_encoder(micro_cfg, enabled):
    """Mask DINO's interm mask loss: the selected proposals' masks (through the shared mask head, not detached from
    the encoder tokens) are supervised; the flag turns it off."""
    import dataclasses

    import numpy as np

    from qmn.batching import collate
    from qmn.data.synth import generate_sample
    from qmn.model import QueryMeldNet

    cfg = dataclasses.replace(micro_cfg, interm_mask_loss=enabled)
    torch.manual_seed(0)
    model = QueryMeldNet(cfg).train()
    rng = np.random.default_rng(0)
    batch = collate([generate_sample(rng, cfg.image_size, "panoptic") for _ in range(2)], cfg, rng)
    losses = model.compute_loss(batch)
    assert ("loss_mask_interm" in losses) == enabled
    if enabled:
        assert losses["loss_dice_interm"] > 0
        losses["loss_dice_interm"].backward()
        assert model.conditional_queries.enc_output.weight.grad.abs().sum() > 0


def test_the_name_loss_is_a_softmax_over_each_image_own_names():
    """name_loss_weight > 0 adds "loss_name" to every family: cross-entropy of each matched query's logits over the
    prompts valid for its image (another image's phrase takes no part), the target's own text being the answer."""
    import torch.nn.functional as F

    cfg = get_preset("tiny", num_mask_points=64, dec_layers=1, name_loss_weight=2.0)
    outputs, targets = _outputs_and_targets()
    for t in targets:
        t["text_valid"] = torch.tensor([True, True, False])
        t["labels"] = torch.tensor([0, 1])
    criterion = SetCriterion(cfg)
    torch.manual_seed(0)  # the matcher samples points: the same draws below
    losses = criterion(outputs, targets)
    assert criterion.weight_dict["loss_name"] == 2.0 and "loss_name_interm" in losses
    layer = outputs.layers[0].select(outputs.matched)
    torch.manual_seed(0)
    indices = criterion.matcher(layer.logits, layer.boxes, layer.masks, targets)
    expected = sum(F.cross_entropy(layer.logits[b, q][:, :2], targets[b]["labels"][t], reduction="sum")
                   for b, (q, t) in enumerate(indices)) / 4  # 4 objects in the batch
    assert losses["loss_name"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert "loss_name" not in SetCriterion(get_preset("tiny"))(outputs, targets)  # off by default
