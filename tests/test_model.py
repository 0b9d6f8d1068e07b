"""QueryMeldNet: shapes and tasks on odd inputs, matcher optimality, known loss values, gradient paths, a real
overfitting run, and the checkpoint round trip (pickles refused)."""
from __future__ import annotations

import itertools
import pickle

import numpy as np
import pytest
import torch

from qmn import Predictor, QMNConfig, QueryMeldNet, get_preset, load_model
from qmn.batching import collate
from qmn.box_ops import box_cxcywh_to_xyxy, generalized_box_iou
from qmn.checkpoint import CheckpointError
from qmn.data.sample import Annotation, Sample
from qmn.losses import dice_loss
from qmn.matcher import HungarianMatcher

TASKS = ("panoptic", "instance", "semantic", "referring", "foreground", "detection")


def two_object_scene(seed: int, size: int = 128) -> Sample:
    """Sky over grass with a red circle and a yellow square: things and stuff in one image."""
    rng = np.random.default_rng(seed)
    img = np.zeros((size, size, 3), np.uint8)
    img[: size // 2] = (80, 140, 230)
    img[size // 2:] = (60, 170, 60)
    img = np.clip(img + rng.integers(-20, 20, img.shape), 0, 255).astype(np.uint8)
    yy, xx = np.mgrid[:size, :size]
    circle = (xx - 40 - seed * 10) ** 2 + (yy - 80) ** 2 < 18 ** 2
    square = (abs(xx - 95) < 14) & (abs(yy - 40 + seed * 5) < 14)
    img[circle] = (220, 40, 40)
    img[square] = (240, 220, 30)
    sky = (yy < size // 2) & ~circle & ~square
    grass = (yy >= size // 2) & ~circle & ~square
    anns = [Annotation.from_mask(t, m) for t, m in (("circle", circle), ("square", square), ("sky", sky), ("grass", grass))]
    return Sample(img, anns, "panoptic", vocabulary=["circle", "square", "sky", "grass", "triangle"])


# ---------------------------------------------------------------------------------------------- config
def test_config_json_round_trip_and_query_modes():
    cfg = get_preset("base")
    assert (cfg.hidden_dim, cfg.enc_layers, cfg.dec_layers, cfg.num_learnable, cfg.num_conditional) == (256, 6, 9, 100, 300)
    assert QMNConfig.from_json(cfg.to_json()) == cfg
    for mode, split in (("learnable", (400, 0)), ("conditional", (0, 400)), ("meld", (100, 300))):
        c = cfg.with_query_mode(mode)
        assert (c.num_learnable, c.num_conditional) == split and c.num_queries == 400
    assert cfg.with_query_mode("learnable").with_query_mode("meld").num_queries == 400
    with pytest.raises(ValueError, match="query_mode"):
        QMNConfig(query_mode="stuff")
    with pytest.raises(ValueError, match="unknown QMNConfig field"):
        QMNConfig.from_dict({"hidden": 3})


# ---------------------------------------------------------------------------------------------- predict
@pytest.mark.parametrize("shape", [(333, 517, 3), (333, 517), (200, 90, 4), (64, 700, 3)])
def test_every_task_is_well_formed_on_odd_inputs(micro_model, shape):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, shape, dtype=np.uint8)
    h, w = shape[:2]
    for task in TASKS:
        prompts = ["the red circle on the left", "a square"] if task == "referring" else "circle, sky, grass"
        pred = Predictor(micro_model).predict(image, prompts, task, threshold=0.0)
        assert pred.image_size == (h, w) and pred.task == task
        if task == "referring":
            assert [s.label for s in pred.segments] == ["the red circle on the left", "a square"]
        if task == "foreground":
            assert len(pred.segments) == 1 and pred.segments[0].label == "foreground"
        for s in pred.segments:
            assert s.query_type in ("learnable", "conditional")
            assert 0.0 <= s.score <= 1.0
            assert s.box.shape == (4,) and 0 <= s.box[0] <= s.box[2] <= w and 0 <= s.box[1] <= s.box[3] <= h
            if task == "detection":
                assert s.mask is None
            else:
                assert s.mask.dtype == bool and s.mask.shape == (h, w)
        if task == "semantic":
            assert pred.semantic.shape == (h, w) and pred.semantic.min() >= 0 and pred.semantic.max() < 3
        if task == "panoptic":
            assert pred.panoptic.shape == (h, w)
            ids = {s.id for s in pred.segments}
            assert set(np.unique(pred.panoptic)) - {0} <= ids
            for s in pred.segments:
                assert np.array_equal(pred.panoptic == s.id, s.mask)


def test_predict_rejects_bad_input_clearly(micro_model):
    img = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match="no prompt"):
        Predictor(micro_model).predict(img, "  ,  ", "instance")
    with pytest.raises(ValueError, match="unknown task"):
        Predictor(micro_model).predict(img, "cat", "stuff")
    with pytest.raises(ValueError, match="expected an image"):
        Predictor(micro_model).predict(np.zeros((0, 5, 3), np.uint8), "cat", "instance")
    with pytest.raises(ValueError, match="invalid box"):
        Predictor(micro_model).predict(img, "cat", "instance", boxes=[[10, 10, 5, 5]])
    long_prompt = "word " * 2000  # 10,000 characters: cut, not a crash
    pred = Predictor(micro_model).predict(img, [long_prompt, "ünïcødé 猫"], "referring")
    assert len(pred.segments) == 2 and len(pred.segments[0].label) <= 1000


def test_box_and_click_prompts_give_one_prompted_segment_each(micro_model):
    img = np.random.default_rng(1).integers(0, 255, (150, 220, 3), dtype=np.uint8)
    pred = Predictor(micro_model).predict(img, None, "instance", boxes=[[10, 10, 80, 90], [100, 20, 200, 140]],
                               points=[(40, 40, True), (150, 5, True), (5, 145, False)])
    # two boxes (the first refined by the click inside it) + one click outside every box
    assert len(pred.segments) == 3
    assert all(s.query_type == "prompted" and s.label == "object" and s.mask.shape == (150, 220) for s in pred.segments)
    outside = np.ones((150, 220), bool)
    outside[2:98, 3:87] = False  # box [10, 10, 80, 90] grown by 10% of its width (7) and height (8)
    assert not (pred.segments[0].mask & outside).any()
    labelled = Predictor(micro_model).predict(img, "cat, dog", "instance", boxes=[[10, 10, 80, 90]])
    assert labelled.segments[0].label in ("cat", "dog")


# ---------------------------------------------------------------------------------------------- matcher + losses
def test_matcher_equals_brute_force_assignment():
    torch.manual_seed(0)
    matcher = HungarianMatcher(4.0, 5.0, 5.0, 5.0, 2.0, num_points=256)
    for trial in range(6):
        q, m = 5, 3 + trial % 3
        logits = torch.randn(1, q, 4)
        boxes = torch.rand(1, q, 4) * 0.5 + 0.1
        target = {"labels": torch.randint(0, 4, (m,)), "boxes": torch.rand(m, 4) * 0.5 + 0.1,
                  "masks": torch.zeros(m, 8, 8, dtype=torch.bool), "has_mask": torch.zeros(m, dtype=torch.bool)}
        (rows, cols), = matcher(logits, boxes, None, [target])
        cost = matcher.cost_matrix(logits[0], boxes[0], None, target)
        best = min(sum(cost[p[j], j].item() for j in range(m)) for p in itertools.permutations(range(q), m))
        assert abs(cost[rows, cols].sum().item() - best) < 1e-4


def test_losses_have_known_values():
    target = torch.tensor([[1.0, 0, 1, 1, 0, 0]])
    assert dice_loss(torch.where(target > 0, 50.0, -50.0), target).item() == pytest.approx(0.0, abs=1e-6)
    assert dice_loss(torch.where(target > 0, -50.0, 50.0), target).item() == pytest.approx(1 - 1 / 7, abs=1e-6)
    boxes = box_cxcywh_to_xyxy(torch.tensor([[0.5, 0.5, 0.2, 0.4], [0.3, 0.3, 0.1, 0.1]]))
    giou = generalized_box_iou(boxes, boxes)
    assert torch.allclose(torch.diag(giou), torch.ones(2))
    far = box_cxcywh_to_xyxy(torch.tensor([[0.9, 0.9, 0.1, 0.1]]))
    assert generalized_box_iou(boxes[1:], far).item() < 0  # disjoint boxes: GIoU below 0


def test_box_only_annotations_skip_mask_loss(micro_cfg):
    model = QueryMeldNet(micro_cfg).train()
    s = two_object_scene(0)
    s.annotations = [Annotation(a.text, a.box, None) for a in s.annotations]
    losses = model.compute_loss(collate([s], micro_cfg))
    assert losses["loss_mask"].item() == 0.0 and losses["loss_dice"].item() == 0.0
    assert losses["loss_bbox"].item() > 0


# ---------------------------------------------------------------------------------------------- gradients
def test_gradients_reach_learnable_conditional_and_text_paths(micro_cfg):
    import dataclasses

    cfg = dataclasses.replace(micro_cfg, num_prompted_train=2, train_text_proj=True)  # the trained text path too
    torch.manual_seed(0)
    model = QueryMeldNet(cfg).train()
    batch = collate([two_object_scene(0), two_object_scene(1)], cfg, np.random.default_rng(0))
    model.compute_loss(batch)["loss"].backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    for name in ("learnable_queries.content.weight", "learnable_queries.anchor.weight",
                 "conditional_queries.enc_output.weight", "conditional_queries.class_head.proj.weight",
                 "text_proj.weight", "prompted_queries.box_proj.weight", "backbone.body.stem_0.weight",
                 "decoder.layers.0.dual_query.learnable_from_conditional.in_proj_weight",
                 "decoder.layers.0.dual_query.conditional_from_learnable.in_proj_weight",
                 "region_features.embed.layers.1.weight"):  # its zero-initialised last layer
        g = grads[name]
        assert g is not None and g.abs().sum() > 0, name


def test_prompted_queries_do_not_leak_into_matched_queries(micro_cfg):
    """Matched-query outputs are identical with and without prompted queries (attention masks them out)."""
    import dataclasses

    cfg = dataclasses.replace(micro_cfg, num_prompted_train=3)
    torch.manual_seed(0)
    model = QueryMeldNet(cfg).eval()
    batch = collate([two_object_scene(0)], cfg, np.random.default_rng(0))
    with torch.no_grad():
        with_prompts = model(batch.images, batch.texts, batch.prompts)
        without = model(batch.images, batch.texts, None)
    assert batch.prompts is not None and with_prompts.layers[-1].select(with_prompts.prompted).masks.shape[1] == 3
    matched = with_prompts.layers[-1].select(with_prompts.matched)
    for key in ("logits", "boxes", "masks"):
        assert torch.allclose(getattr(matched, key), getattr(without.layers[-1], key), atol=1e-5), key


# ---------------------------------------------------------------------------------------------- learning
def test_tiny_model_overfits_things_and_stuff(micro_cfg):
    """A real learning test: 2 images, 2 things + 2 stuff regions each; every object reaches mask IoU >= 0.9."""
    from train.optim import param_groups

    torch.manual_seed(0)
    model = QueryMeldNet(micro_cfg).train()
    samples = [two_object_scene(0), two_object_scene(1)]
    batch = collate(samples, micro_cfg, np.random.default_rng(0))
    opt = torch.optim.AdamW(param_groups(model, 1e-3, 0.0, 1.0), lr=1e-3)
    for _ in range(120):
        loss = model.compute_loss(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    for s in samples:
        pred = Predictor(model).predict(s.image, ["circle", "square", "sky", "grass"], "panoptic", threshold=0.3)
        for ann in s.annotations:
            ious = [(ann.mask & seg.mask).sum() / (ann.mask | seg.mask).sum() for seg in pred.segments if seg.label == ann.text]
            assert ious and max(ious) >= 0.9, (ann.text, ious)


# ---------------------------------------------------------------------------------------------- checkpoints
def test_save_load_round_trip_is_identical(micro_model, tmp_path):
    path = tmp_path / "m.safetensors"
    micro_model.save(path, record={"note": "test"})
    loaded = load_model(path)
    assert loaded.cfg == micro_model.cfg and loaded.record == {"note": "test"}
    img = np.random.default_rng(3).integers(0, 255, (97, 141, 3), dtype=np.uint8)
    a = Predictor(micro_model).predict(img, "circle, sky", "semantic")
    b = Predictor(loaded).predict(img, "circle, sky", "semantic")
    assert np.array_equal(a.semantic, b.semantic)
    assert [s.score for s in a.segments] == [s.score for s in b.segments]


def test_pickles_and_bad_files_are_refused(micro_model, tmp_path):
    pkl = tmp_path / "evil.safetensors"  # a pickle renamed to look like a checkpoint
    pkl.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    with pytest.raises(CheckpointError, match="pickle"):
        load_model(pkl)
    zipped = tmp_path / "model.pt"
    torch.save({"a": torch.zeros(2)}, zipped)
    with pytest.raises(CheckpointError, match="zip"):
        load_model(zipped)
    good = tmp_path / "good.safetensors"
    micro_model.save(good)
    good.with_suffix(".json").write_text("{not json")
    with pytest.raises(CheckpointError, match="malformed JSON"):
        load_model(good)
    with pytest.raises(CheckpointError, match="no such"):
        load_model(tmp_path / "missing.safetensors")


def test_backbone_any_timm_model_and_local_weights_file(tmp_path):
    """timm CNNs and window transformers (NHWC output, fixed input size by default) give NCHW maps at strides
    4..32; a local safetensors file of the full timm model loads (its classifier ignored)."""
    import timm
    from safetensors.torch import save_file

    from qmn.backbone import Backbone

    for name in ("resnet18", "swin_tiny_patch4_window7_224"):
        bb = Backbone(name)
        feats = bb(torch.zeros(1, 3, 320, 320))
        assert [f.shape[1] for f in feats] == bb.channels and [320 // f.shape[-1] for f in feats] == [4, 8, 16, 32]
    torch.manual_seed(1)
    donor = timm.create_model("resnet18", pretrained=False)
    path = tmp_path / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in donor.state_dict().items()}, str(path))
    bb = Backbone("resnet18", pretrained=str(path))
    assert torch.equal(bb.body.state_dict()["conv1.weight"], donor.state_dict()["conv1.weight"])
    with pytest.raises(ValueError, match="no tensor matches"):
        save_file({"x": torch.zeros(3)}, str(tmp_path / "other.safetensors"))
        Backbone("resnet18", pretrained=str(tmp_path / "other.safetensors"))
