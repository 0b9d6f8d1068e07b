"""Box and click prompts: a micro model trained a few dozen steps with prompted queries segments the object in a
ground-truth box and lowers its prompted mask loss; prompt sampling (training) and the benchmark's jitter / clicks
are seeded; GrabCut (qmn.grabcut) finds an object in its box; the benchmark CLI prints every method."""
from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from bench import box_prompt
from qmn import Predictor, QueryMeldNet, get_preset
from qmn.batching import collate, sample_prompts
from qmn.data import Annotation, Sample, load_dataset, write_coco_instances
from qmn.data.synth import THING_SHAPES, paint_thing, place_things, render_stuff
from qmn.grabcut import box_prior, grabcut_from_box
from qmn.io_utils import atomic_write_bytes

TRAIN_STEPS = 60
NUM_IMAGES = 6


def things_scene(rng: np.random.Generator, index: int, size: int = 128) -> Sample:
    """Textured stuff with up to 3 medium / large shapes on it; only the shapes are labeled (with masks)."""
    image, _, _ = render_stuff(rng, size)
    things = place_things(rng, size, 3, sizes=("medium", "large"))
    for thing in things:
        paint_thing(rng, image, thing)
    image = np.clip(image + 0.5, 0, 255).astype(np.uint8)
    return Sample(image, [Annotation.from_mask(t.shape, t.mask) for t in things], "instance", image_id=f"{index}.png",
                  vocabulary=list(THING_SHAPES))


def write_folder(folder: Path, samples: list[Sample]) -> Path:
    """A COCO folder (images/ + annotations.json) that `load_dataset` reads."""
    for s in samples:
        atomic_write_bytes(folder / "images" / s.image_id, cv2.imencode(".png", s.image[..., ::-1])[1].tobytes())
    write_coco_instances(samples, folder / "annotations.json")
    return folder


def prompted_mask_loss(model: QueryMeldNet, batch) -> float:
    """loss_mask_prompt + loss_dice_prompt on a fixed batch (eval mode, seeded point sampling)."""
    model.eval()
    torch.manual_seed(0)
    with torch.no_grad():
        losses = model.compute_loss(batch)
    return float(losses["loss_mask_prompt"] + losses["loss_dice_prompt"])


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Micro models gain nothing from a second thread, and on a shared CPU two spinning threads run them far slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(micro_cfg, tmp_path_factory):
    """A micro model trained TRAIN_STEPS steps (batch 2) with 4 prompted queries per image on a generated folder,
    its untrained copy, and the prompted mask loss on a fixed batch before and after."""
    from train.optim import param_groups

    # the trained text projection of older checkpoints: with the presets' fixed one, 60 micro steps leave the box
    # masks at IoU 0.41-0.45 (0.5+ trained): the image side has to meet fixed names first; the box path is tested here
    cfg = dataclasses.replace(micro_cfg, num_prompted_train=4, train_text_proj=True)
    rng = np.random.default_rng(0)
    folder = write_folder(tmp_path_factory.mktemp("things"), [things_scene(rng, i) for i in range(NUM_IMAGES)])
    dataset = load_dataset(folder)
    samples = [dataset[i] for i in range(len(dataset))]
    torch.manual_seed(0)
    model = QueryMeldNet(cfg)
    untrained = copy.deepcopy(model).eval()
    fixed = collate(samples[:4], cfg, np.random.default_rng(123))
    before = prompted_mask_loss(model, fixed)
    model.train()
    opt = torch.optim.AdamW(param_groups(model, 1e-3, 0.0, 1.0), lr=1e-3)
    for _ in range(TRAIN_STEPS):
        batch = collate([samples[i] for i in rng.choice(len(samples), 2, replace=False)], cfg, rng)
        loss = model.compute_loss(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    after = prompted_mask_loss(model, fixed)
    return {"model": model.eval(), "untrained": untrained, "samples": samples, "folder": folder,
            "loss_before": before, "loss_after": after}


def box_prompt_scores(model: QueryMeldNet, samples: list[Sample]) -> tuple[list[float], list[float]]:
    """Per object: (IoU with the object, fraction of the predicted mask inside the GT box) from its GT box, on the whole
    image (the scale the micro model was trained at; look-closely crops are tested in test_interactive.py)."""
    ious, inside = [], []
    for s in samples:
        pred = Predictor(model).predict(s.image, None, "instance", boxes=[a.box for a in s.annotations],
                                        look_closely=False)
        assert len(pred.segments) == len(s.annotations)
        for ann, seg in zip(s.annotations, pred.segments):
            ious.append(box_prompt.mask_iou(seg.mask, ann.mask))
            in_box = box_prompt.box_mask(ann.box, ann.mask.shape)
            inside.append(float((seg.mask & in_box).sum() / max(1, seg.mask.sum())))
    return ious, inside


# ---------------------------------------------------------------------------------------------- learning
def test_prompted_mask_lies_around_its_box_after_training(trained):
    ious, inside = box_prompt_scores(trained["model"], trained["samples"])
    untrained_ious, _ = box_prompt_scores(trained["untrained"], trained["samples"])
    assert len(ious) >= 10
    assert np.median(inside) >= 0.8, inside  # most of the mask's area lies inside its box
    assert np.mean(ious) >= 0.5 and np.mean(ious) >= np.mean(untrained_ious) + 0.3, (ious, untrained_ious)


def test_training_with_prompts_lowers_the_prompted_mask_loss(trained):
    assert trained["loss_after"] < 0.7 * trained["loss_before"], (trained["loss_before"], trained["loss_after"])


# ---------------------------------------------------------------------------------------------- seeding
def test_training_prompt_sampling_is_seeded():
    rng = np.random.default_rng(0)
    samples = [things_scene(rng, i) for i in range(2)]
    targets = collate(samples, get_preset("tiny", image_size=128, num_prompted_train=0)).targets

    def draw(seed: int):
        prompts, assign = sample_prompts(targets, 3, np.random.default_rng(seed))
        return [getattr(prompts, f) for f in prompts.__dataclass_fields__] + [assign]

    same, again, other = draw(1), draw(1), draw(2)
    assert all(torch.equal(a, b) for a, b in zip(same, again))
    assert not all(torch.equal(a, b) for a, b in zip(same, other))


def test_benchmark_jitter_and_clicks_are_seeded():
    box = np.array([20.0, 30.0, 80.0, 70.0])

    def draw(seed: int) -> np.ndarray:
        return box_prompt.jitter_box(box, 0.1, np.random.default_rng(seed), (100, 120))

    assert np.array_equal(draw(3), draw(3)) and not np.array_equal(draw(3), draw(4))
    moved = np.abs(draw(3) - box)
    assert (moved <= 0.1 * np.array([60, 40, 60, 40]) + 1e-4).all() and moved.any()

    gt = np.zeros((60, 80), bool)
    gt[10:40, 10:40] = True  # a 30 x 30 square: its most interior point is its centre
    x, y, positive = box_prompt.next_click(gt, np.zeros_like(gt))
    assert positive and abs(x - 25) <= 1 and abs(y - 25) <= 1
    spill = gt.copy()
    spill[5:55, 40:78] = True  # the prediction spills far to the right: the next click is negative, out there
    x, y, positive = box_prompt.next_click(gt, spill)
    assert not positive and 40 <= x <= 75 and not gt[int(y), int(x)]
    assert box_prompt.next_click(gt, spill) == (x, y, positive)


# ---------------------------------------------------------------------------------------------- GrabCut
def test_grabcut_finds_the_object_in_its_box_and_fails_clearly():
    img = np.full((80, 100, 3), 30, np.uint8)
    img[20:60, 30:70] = (240, 200, 30)
    obj = np.zeros((80, 100), bool)
    obj[20:60, 30:70] = True
    found = grabcut_from_box(img, [22, 12, 80, 68])
    assert box_prompt.mask_iou(found, obj) > 0.9
    seeded = grabcut_from_box(img, [22, 12, 80, 68], seed_mask=obj)
    assert box_prompt.mask_iou(seeded, obj) > 0.9
    assert np.array_equal(grabcut_from_box(img, [22, 12, 80, 68]), found)  # seeded: same input, same mask
    flat = np.full((40, 40, 3), 90, np.uint8)  # nothing to separate: the box's inscribed ellipse comes back
    assert np.array_equal(grabcut_from_box(flat, [0, 0, 40, 40]), box_prior(40, 40))
    with pytest.raises(ValueError, match="no area"):
        grabcut_from_box(img, [50, 10, 40, 30])
    with pytest.raises(ValueError, match="seed_mask"):
        grabcut_from_box(img, [22, 12, 80, 68], seed_mask=np.ones((5, 5), bool))


# ---------------------------------------------------------------------------------------------- the benchmark
def test_benchmark_cli_prints_every_method(trained, tmp_path, capsys):
    checkpoint = tmp_path / "m.safetensors"
    trained["model"].save(checkpoint)
    assert box_prompt.main(["--data", str(trained["folder"]), "--checkpoint", str(checkpoint), "--max-images", "2"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["images"] == 2 and report["objects"] == sum(len(s.annotations) for s in trained["samples"][:2])
    assert set(report["mask_iou"]) == set(box_prompt.METHODS)
    for method, stats in report["mask_iou"].items():
        assert 0.0 <= stats["median"] <= 1.0 and 0.0 <= stats["mean"] <= 1.0, method
    assert report["mask_iou"]["model_box"]["mean"] > 0.5
    with pytest.raises(SystemExit):
        box_prompt.main(["--data", str(trained["folder"]), "--checkpoint", str(tmp_path / "absent.safetensors")])
