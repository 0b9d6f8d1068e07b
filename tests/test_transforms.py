"""Training transforms keep labels exact: boxes = mask boxes, flips mirror phrases, empty annotations dropped."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

from qmn.data.phrases import facts_from_mask, mirror_phrase, phrases_for_object
from qmn.data.sample import Annotation, Sample, mask_to_box
from qmn.data.synth import generate_sample
from qmn.data.transforms import TrainTransform, crop, hflip, large_scale_jitter, resize


def _toy(height=40, width=60) -> Sample:
    """A masked square on the left, a box-only annotation on the right, a matting alpha."""
    image = np.zeros((height, width, 3), np.uint8)
    image[:, : width // 2] = 200
    mask = np.zeros((height, width), bool)
    mask[5:15, 4:14] = True
    alpha = np.zeros((height, width), np.float32)
    alpha[5:15, 4:14] = 0.7
    left = Annotation.from_mask("the square left of the box", mask, extra={"phrases": ["the leftmost square"],
                                                                         "alpha": alpha})
    right = Annotation("box", np.array([40, 10, 55, 30], np.float32))
    return Sample(image, [left, right], task="referring")


def _assert_consistent(sample: Sample) -> None:
    h, w = sample.image.shape[:2]
    for ann in sample.annotations:
        if ann.mask is None:
            assert 0 <= ann.box[0] < ann.box[2] <= w and 0 <= ann.box[1] < ann.box[3] <= h
        else:
            assert ann.mask.shape == (h, w) and ann.mask.any()
            assert np.array_equal(ann.box, mask_to_box(ann.mask))
        if "alpha" in ann.extra:
            assert ann.extra["alpha"].shape == (h, w)


def test_mirror_phrase_swaps_left_and_right():
    assert mirror_phrase("the red circle left of the star") == "the red circle right of the star"
    assert mirror_phrase("The leftmost cat, on the right") == "The rightmost cat, on the left"
    assert mirror_phrase("Left hand; bright light") == "Right hand; bright light"


def test_hflip_mirrors_pixels_boxes_and_phrases():
    sample = _toy()
    flipped = hflip(sample)
    left, right = flipped.annotations
    assert np.array_equal(left.mask, sample.annotations[0].mask[:, ::-1])
    assert np.array_equal(left.box, [46, 5, 56, 15])
    assert np.array_equal(right.box, [5, 10, 20, 30])
    assert left.text == "the square right of the box"
    assert left.extra["phrases"] == ["the rightmost square"]
    assert np.array_equal(left.extra["alpha"], sample.annotations[0].extra["alpha"][:, ::-1])
    assert np.array_equal(flipped.image, sample.image[:, ::-1])
    assert sample.annotations[0].extra["phrases"] == ["the leftmost square"], "input untouched"
    twice = hflip(flipped)
    assert np.array_equal(twice.image, sample.image) and twice.annotations[0].text == sample.annotations[0].text
    _assert_consistent(flipped)


def test_hflip_keeps_class_names_outside_referring():
    sample = _toy()
    sample.task = "panoptic"
    assert hflip(sample).annotations[0].text == "the square left of the box"


def test_flipped_synthetic_phrases_stay_true():
    """A mirrored phrase is one the generator itself would emit for the mirrored scene."""
    checked = 0
    for seed in range(6):
        sample = generate_sample(np.random.default_rng([seed, 0]), 128, "referring")
        flipped = hflip(sample)
        objects = [facts_from_mask(a.extra["attributes"], a.mask) for a in flipped.annotations]
        for index, (before, after) in enumerate(zip(sample.annotations, flipped.annotations)):
            assert after.extra["phrases"] == [mirror_phrase(p) for p in before.extra["phrases"]]
            valid = set(phrases_for_object(objects, index, (128, 128)))
            for phrase in after.extra["phrases"]:
                assert phrase in valid, phrase
                checked += 1
        _assert_consistent(flipped)
    assert checked > 20


def test_resize_long_side_keeps_aspect():
    out = resize(_toy(40, 60), 30)
    assert out.image.shape == (20, 30, 3)
    assert np.allclose(out.annotations[1].box, [20, 5, 27.5, 15])
    assert out.annotations[0].extra["alpha"].shape == (20, 30)
    _assert_consistent(out)


def test_crop_drops_what_leaves_the_window_and_pads():
    out = crop(_toy(), 30, 0, 40, 40, pad_value=7)
    assert [a.text for a in out.annotations] == ["box"]
    assert np.array_equal(out.annotations[0].box, [10, 10, 25, 30])
    assert out.image.shape == (40, 40, 3) and np.all(out.image[:, 30:] == 7)


@pytest.mark.parametrize("variant", ["panoptic", "detection", "matting"])
def test_lsj_boxes_equal_mask_boxes(variant):
    rng = np.random.default_rng(0)
    for seed in range(8):
        sample = generate_sample(np.random.default_rng([seed, 1]), 96, variant)
        out = large_scale_jitter(sample, 64, rng)
        assert out.image.shape == (64, 64, 3)
        _assert_consistent(out)
        if variant == "matting" and out.annotations:
            ann = out.annotations[0]
            assert ann.extra["alpha"].dtype == np.float32
            assert sample.annotations[0].extra["alpha"].shape == (96, 96), "input untouched"


def test_lsj_panoptic_stays_a_partition_of_the_image_part():
    sample = generate_sample(np.random.default_rng([2, 0]), 96, "panoptic")
    out = large_scale_jitter(sample, 64, np.random.default_rng(5), scale_range=(0.5, 0.5))
    stack = np.stack([a.mask for a in out.annotations]).sum(0)
    assert stack.max() == 1
    assert out.image.shape == (64, 64, 3)
    assert stack[:32, :32].min() == 1, "the 32 x 32 image part stays fully covered"
    assert stack[32:].max() == 0 and stack[:, 32:].max() == 0, "padding has no labels"


def test_train_transform_is_reproducible_and_picklable():
    sample = generate_sample(np.random.default_rng([4, 0]), 96, "referring")
    transform = pickle.loads(pickle.dumps(TrainTransform(64)))
    a = transform(sample, np.random.default_rng(11))
    b = transform(sample, np.random.default_rng(11))
    assert np.array_equal(a.image, b.image)
    assert [x.extra["phrases"] for x in a.annotations] == [y.extra["phrases"] for y in b.annotations]
    plain = TrainTransform(48, lsj=False, flip=False)(sample, np.random.default_rng(0))
    assert plain.image.shape == (48, 48, 3)
    _assert_consistent(a)


@pytest.mark.parametrize("size", [37, 150])
def test_resized_masks_stay_aligned_with_the_image(size):
    mask = np.zeros((64, 64), bool)
    mask[10:41, 23:50] = True
    image = np.repeat(mask[..., None] * np.uint8(255), 3, axis=2)
    out = resize(Sample(image, [Annotation.from_mask("square", mask)]), size)
    seen = out.image[..., 0] > 127
    resized = out.annotations[0].mask
    offset = np.argwhere(seen).mean(0) - np.argwhere(resized).mean(0)
    assert np.abs(offset).max() < 0.6, "OpenCV's plain INTER_NEAREST would shift the mask"
    assert (seen & resized).sum() / (seen | resized).sum() > 0.9


def test_native_scale_crops_keep_small_objects_at_their_photo_size():
    """A 1280 x 1024 photo of 60 px squares: whole-photo LSJ at scale 1 makes them 12 px; crops at the photo's own
    scale (max_side) keep them 60 px, as the tiled predictor will see them."""
    image = np.zeros((1024, 1280, 3), np.uint8)
    annotations = []
    for y in range(0, 1024, 128):
        for x in range(0, 1280, 128):
            mask = np.zeros((1024, 1280), bool)
            mask[y + 30:y + 90, x + 30:x + 90] = True
            annotations.append(Annotation.from_mask("nut", mask))
    sample = Sample(image, annotations, "instance")
    widths = lambda s: {int(a.box[2] - a.box[0]) for a in s.annotations if a.box[0] > 0 and a.box[2] < 256}  # noqa: E731
    native = TrainTransform(256, flip=False, scale_range=(1.0, 1.0), max_side=2048)(sample, np.random.default_rng(0))
    whole = TrainTransform(256, flip=False, scale_range=(1.0, 1.0))(sample, np.random.default_rng(0))
    assert native.image.shape[:2] == whole.image.shape[:2] == (256, 256)
    assert widths(native) == {60} and widths(whole) == {12}
