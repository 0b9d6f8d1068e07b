"""Label denoising queries (qmn/denoising.py): noise within bounds, never matched, invisible to the matched queries,
trained on their own targets, no new weights."""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from qmn import QueryMeldNet
from qmn.batching import collate
from qmn.denoising import sample_denoising
from tests.test_model import two_object_scene


def dn_config(micro_cfg, **overrides):
    return dataclasses.replace(micro_cfg, num_denoising=3, **overrides)


def test_off_by_default_and_no_new_weights(micro_cfg):
    batch = collate([two_object_scene(0)], micro_cfg, np.random.default_rng(0))
    assert batch.denoising is None and batch.denoising_targets is None
    torch.manual_seed(0)
    plain = QueryMeldNet(micro_cfg).state_dict()
    torch.manual_seed(0)
    with_dn = QueryMeldNet(dn_config(micro_cfg)).state_dict()
    assert plain.keys() == with_dn.keys()  # a checkpoint trained without denoising loads into one with it


def test_boxes_noised_within_bounds_and_labels_flipped_only_to_known_names(micro_cfg):
    batch = collate([two_object_scene(0), two_object_scene(1)], dn_config(micro_cfg, denoising_label_noise=0.0),
                    np.random.default_rng(0))
    dn, assign = batch.denoising, batch.denoising_targets
    assert dn.boxes.shape == (2, 3, 4) and bool(dn.valid.all())
    for b, t in enumerate(batch.targets):
        truth = t["boxes"][assign[b]]
        assert torch.equal(dn.labels[b], t["labels"][assign[b]])  # no label noise asked
        assert ((dn.boxes[b, :, :2] - truth[:, :2]).abs() <= 0.4 * truth[:, 2:] / 2 + 1e-6).all()
        ratio = dn.boxes[b, :, 2:] / truth[:, 2:]
        assert ((ratio >= 0.6 - 1e-6) & (ratio <= 1.4 + 1e-6)).all()
        assert not torch.equal(dn.boxes[b], truth)  # it is noised
    flipped = collate([two_object_scene(0)], dn_config(micro_cfg, denoising_label_noise=1.0), np.random.default_rng(0))
    t = flipped.targets[0]
    labels = flipped.denoising.labels[0]
    assert (labels != t["labels"][flipped.denoising_targets[0]]).all()  # every name swapped...
    assert t["text_valid"][labels].all()  # ...for one this image is supervised on


def test_padding_when_an_image_has_fewer_objects():
    targets = [{"labels": torch.tensor([0, 1]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.3, 0.3, 0.1, 0.1]])},
               {"labels": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 4)}]
    dn, assign = sample_denoising(targets, 4, 0.0, 0.4, np.random.default_rng(0))
    assert dn.boxes.shape == (2, 2, 4)
    assert assign.tolist()[1] == [-1, -1] and not dn.valid[1].any() and sorted(assign[0].tolist()) == [0, 1]
    assert sample_denoising(targets[1:], 4, 0.0, 0.4, np.random.default_rng(0)) is None


def test_denoising_queries_never_reach_the_matcher_and_train_their_own_terms(micro_cfg):
    cfg = dataclasses.replace(dn_config(micro_cfg), train_text_proj=True)  # to see the gradient reach the names
    torch.manual_seed(0)
    model = QueryMeldNet(cfg).train()
    seen = []
    matcher = model.criterion.matcher
    original = matcher.forward

    def recording(logits, *args, **kwargs):
        seen.append(logits.shape[1])
        return original(logits, *args, **kwargs)

    matcher.forward = recording
    batch = collate([two_object_scene(0), two_object_scene(1)], cfg, np.random.default_rng(0))
    losses = model.compute_loss(batch)
    # one matching per decoder layer over the N + K matched queries, one over the K proposals; never more
    assert seen == [cfg.num_queries] * cfg.dec_layers + [cfg.num_conditional]
    for name in ("loss_class_dn", "loss_bbox_dn", "loss_mask_dn", "loss_dice_dn", "loss_class_dn_0"):
        assert losses[name].item() > 0, name
    losses["loss_class_dn"].backward()
    assert model.text_proj.weight.grad.abs().sum() > 0  # the name's embedding is the query's content


def test_denoising_queries_do_not_change_matched_outputs(micro_cfg):
    cfg = dn_config(micro_cfg)
    torch.manual_seed(0)
    model = QueryMeldNet(cfg).eval()
    batch = collate([two_object_scene(0)], cfg, np.random.default_rng(0))
    with torch.no_grad():
        with_dn = model(batch.images, batch.texts, None, batch.denoising)
        without = model(batch.images, batch.texts, None)
    assert with_dn.num_denoising == 3 and with_dn.layers[-1].select(with_dn.denoising).masks.shape[1] == 3
    assert with_dn.query_types()[-3:] == ["denoising"] * 3
    matched = with_dn.layers[-1].select(with_dn.matched)
    for key in ("logits", "boxes", "masks"):
        assert torch.allclose(getattr(matched, key), getattr(without.layers[-1], key), atol=1e-5), key
