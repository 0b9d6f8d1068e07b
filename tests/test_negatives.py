"""Class negatives are per image (docs/why_things.md): a batch shares one prompt list, but an object is trained as a
negative only of the prompts known false for it. Before, a referred "the red circle" was a negative of "circle" and a
panoptic circle a negative of "foreground" whenever a batch mixed the tasks."""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from qmn.batching import collate
from qmn.data.synth import SyntheticScenes


def _mixed_batch(cfg):
    referring = SyntheticScenes(1, 3, cfg.image_size, "referring")[0]
    panoptic = SyntheticScenes(1, 4, cfg.image_size, "panoptic")[0]
    foreground = SyntheticScenes(1, 5, cfg.image_size, "foreground")[0]
    return referring, panoptic, collate([referring, panoptic, foreground], cfg, np.random.default_rng(0))


def test_a_referred_object_is_never_a_negative_of_its_class_name(micro_cfg):
    referring, panoptic, batch = _mixed_batch(micro_cfg)
    texts = batch.texts
    ref_valid, pan_valid, fg_valid = (t["text_valid"] for t in batch.targets)
    shapes = {a.extra["attributes"]["shape"] for a in referring.annotations}
    for name in shapes:
        assert name in texts  # the panoptic image brings the class names into the shared list ...
        assert not ref_valid[texts.index(name)]  # ... but they say nothing about the referring image's objects
    for i, t in enumerate(texts):  # the referring image is supervised on exactly its own phrases
        assert bool(ref_valid[i]) == (t in {texts[j] for j in batch.targets[0]["labels"].tolist()})
    assert not pan_valid[texts.index("foreground")]  # a panoptic circle IS foreground
    assert all(pan_valid[texts.index(n)] for n in panoptic.vocabulary)  # its closed vocabulary: true negatives
    assert fg_valid.tolist() == [t == "foreground" for t in texts]


def _loss_rise(criterion, cfg, batch, name):
    """How much the referring image's class loss rises when its object scores high on its own class name."""
    column = batch.texts.index(name)
    logits = torch.full((len(batch.targets), cfg.num_queries, len(batch.texts)), -4.0)
    none = (torch.zeros(0, dtype=torch.long),) * 2
    indices = [(torch.tensor([0]), torch.tensor([0])), none, none]
    low = criterion.loss_class(logits, indices, batch.targets, 1.0)
    logits[0, 0, column] = 4.0  # the referred circle scores high on "circle"
    return float(criterion.loss_class(logits, indices, batch.targets, 1.0) - low)


def test_the_class_loss_ignores_a_referred_objects_class_name_logit(micro_model):
    """No gradient tells a referred circle that it is not a "circle". Fails with batch-wide negatives."""
    cfg = micro_model.cfg
    referring, panoptic, batch = _mixed_batch(cfg)
    name = referring.annotations[0].extra["attributes"]["shape"]
    assert _loss_rise(micro_model.criterion, cfg, batch, name) == 0.0
    old = dataclasses.replace(cfg, negatives_per_image=False)  # the old rule: every prompt a negative for every image
    old_batch = collate([referring, panoptic, SyntheticScenes(1, 5, cfg.image_size, "foreground")[0]], old,
                        np.random.default_rng(0))
    assert _loss_rise(micro_model.criterion, cfg, old_batch, name) > 1.0
