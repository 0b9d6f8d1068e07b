"""Synthetic scenes: determinism, exact non-empty masks, panoptic coverage, unique and true referring phrases."""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest

from qmn.data.folder import load_dataset
from qmn.data.image_io import read_image
from qmn.data.phrases import (
    EXTREMAL_WORDS,
    SIZE_WORDS,
    ObjectFacts,
    facts_from_mask,
    phrases_for_object,
    referring_phrases,
)
from qmn.data.sample import mask_to_box
from qmn.data.synth import (
    MIN_VISIBLE,
    PALETTE,
    STUFF_CLASSES,
    SyntheticScenes,
    THING_SHAPES,
    THING_TEXTURES,
    VARIANTS,
    generate,
    generate_sample,
    place_things,
    shape_mask,
)
from qmn.data.synth import main as synth_main

SIZE = 96  # small scenes keep the tests fast; the generator is size-agnostic


def _sample(seed: int, variant: str, size: int = SIZE):
    return generate_sample(np.random.default_rng([seed, 0]), size, variant)


@pytest.mark.parametrize("variant", VARIANTS)
def test_same_seed_same_sample(variant):
    a, b = _sample(7, variant), _sample(7, variant)
    assert np.array_equal(a.image, b.image)
    assert [x.text for x in a.annotations] == [y.text for y in b.annotations]
    for x, y in zip(a.annotations, b.annotations):
        assert np.array_equal(x.box, y.box)
        assert (x.mask is None and y.mask is None) or np.array_equal(x.mask, y.mask)
        assert x.extra.get("phrases") == y.extra.get("phrases")
    assert not np.array_equal(a.image, _sample(8, variant).image)


@pytest.mark.parametrize("variant", VARIANTS)
def test_masks_non_empty_and_boxes_tight(variant):
    for seed in range(6):
        sample = _sample(seed, variant)
        assert sample.image.shape == (SIZE, SIZE, 3) and sample.image.dtype == np.uint8
        assert sample.annotations, f"seed {seed}: no annotations"
        for ann in sample.annotations:
            if variant == "detection":
                assert ann.mask is None and ann.box[2] > ann.box[0] and ann.box[3] > ann.box[1]
            else:
                assert ann.mask.dtype == bool and ann.mask.any()
                assert np.array_equal(ann.box, mask_to_box(ann.mask))


def test_panoptic_partitions_the_image():
    for seed in range(8):
        sample = _sample(seed, "panoptic")
        stack = np.stack([a.mask for a in sample.annotations]).astype(np.int32)
        assert np.all(stack.sum(0) == 1), f"seed {seed}: pixels uncovered or covered twice"
        texts = [a.text for a in sample.annotations]
        assert set(texts) <= set(THING_SHAPES) | set(STUFF_CLASSES)
        assert any(t in STUFF_CLASSES for t in texts)
        stuff = [t for t in texts if t in STUFF_CLASSES]
        assert len(stuff) == len(set(stuff)), "one segment per stuff class"


def test_things_keep_enough_visible_area():
    rng = np.random.default_rng(3)
    for _ in range(5):
        things = place_things(rng, SIZE, 10)
        assert things
        union = np.zeros((SIZE, SIZE), np.int32)
        for thing in things:
            assert thing.mask.sum() >= MIN_VISIBLE * thing.area
            union += thing.mask
        assert union.max() == 1, "visible masks must not overlap"


@pytest.mark.parametrize("shape", THING_SHAPES)
def test_every_shape_draws(shape):
    mask = shape_mask(shape, (48.0, 48.0), 30.0, 0.1, 96)
    assert 0.15 * 60 * 60 < mask.sum() < 60 * 60
    if shape == "ring":
        assert not mask[48, 48], "a ring has a hole"
    assert len(THING_SHAPES) >= 6 and len(PALETTE) >= 6


def test_foreground_and_matting_variants():
    fg = _sample(1, "foreground")
    assert fg.task == "foreground" and [a.text for a in fg.annotations] == ["foreground"]
    matting = _sample(1, "matting")
    (ann,) = matting.annotations
    alpha = ann.extra["alpha"]
    assert matting.task == "foreground" and ann.text == "foreground"
    assert alpha.dtype == np.float32 and alpha.shape == (SIZE, SIZE)
    assert 0 <= alpha.min() and alpha.max() <= 1
    assert ((alpha > 0.02) & (alpha < 0.98)).any(), "soft edges have fractional alpha"
    assert np.array_equal(ann.mask, alpha >= 0.5)


# ---- referring phrases: an independent reader of the phrase grammar ----------------------------

WORD_ATTRIBUTE = {
    **{w: ("size", s) for s, w in SIZE_WORDS.items()},
    **{t: ("texture", t) for t in THING_TEXTURES},
    **{c: ("colour", c) for c in PALETTE},
    **{s: ("shape", s) for s in THING_SHAPES},
}
PHRASE_RE = re.compile(
    r"^the (?:(?P<extremal>leftmost|rightmost|topmost|bottommost) )?(?P<head>.+?)"
    r"(?: (?P<relation>left of|right of|above|below) the (?P<anchor>.+)"
    r"| (?P<region>on the left|on the right|at the top|at the bottom))?$"
)


def _descriptor(words: str) -> dict:
    return dict(WORD_ATTRIBUTE[w] for w in words.split())


def _fits(obj: ObjectFacts, descriptor: dict) -> bool:
    return all(getattr(obj, k) == v for k, v in descriptor.items())


def _referents(phrase: str, objects: list[ObjectFacts], width: int, height: int) -> list[int]:
    """Indices of the objects the phrase can denote, read with lenient (margin-free) geometry."""
    m = PHRASE_RE.match(phrase)
    assert m, f"phrase outside the grammar: {phrase!r}"
    head = _descriptor(m["head"])
    candidates = [i for i, o in enumerate(objects) if _fits(o, head)]
    if m["extremal"]:
        axis, sign = EXTREMAL_WORDS[m["extremal"]]
        best = min(sign * objects[i].centroid[axis] for i in candidates)
        candidates = [i for i in candidates if sign * objects[i].centroid[axis] == best]
    if m["relation"]:
        anchors = [i for i, o in enumerate(objects) if _fits(o, _descriptor(m["anchor"]))]
        assert len(anchors) == 1, f"anchor of {phrase!r} is not unique"
        b = objects[anchors[0]]
        axis = 0 if m["relation"] in ("left of", "right of") else 1
        before = m["relation"] in ("left of", "above")
        candidates = [
            i for i in candidates if i != anchors[0]
            and (objects[i].centroid[axis] < b.centroid[axis]) == before
        ]
    if m["region"]:
        axis = 0 if m["region"] in ("on the left", "on the right") else 1
        side = width if axis == 0 else height
        low = m["region"] in ("on the left", "at the top")
        candidates = [i for i in candidates if (objects[i].centroid[axis] < side / 2) == low]
    return candidates


def _assert_strictly_true(phrase: str, target: ObjectFacts, objects: list[ObjectFacts]) -> None:
    """Relations must hold with clearance: the target's centroid lies beyond the anchor's box."""
    m = PHRASE_RE.match(phrase)
    if not m["relation"]:
        return
    (b,) = [o for o in objects if _fits(o, _descriptor(m["anchor"]))]
    cx, cy = target.centroid
    assert {
        "left of": cx < b.box[0], "right of": cx > b.box[2], "above": cy < b.box[1], "below": cy > b.box[3]
    }[m["relation"]], phrase


def test_referring_phrases_are_unique_and_true():
    checked = 0
    for seed in range(15):
        sample = _sample(seed, "referring", size=128)
        assert sample.task == "referring"
        objects = [facts_from_mask(a.extra["attributes"], a.mask) for a in sample.annotations]
        seen: dict[str, int] = {}
        for index, ann in enumerate(sample.annotations):
            assert ann.text in THING_SHAPES and ann.extra["phrases"], "text is the class, phrases are a list"
            for phrase in ann.extra["phrases"]:
                assert seen.setdefault(phrase, index) == index, f"{phrase!r} names two objects"
                assert _referents(phrase, objects, 128, 128) == [index], phrase
                _assert_strictly_true(phrase, objects[index], objects)
                checked += 1
    assert checked > 50


def _facts(shape, colour, x, y, r=5.0, size="small", texture="solid"):
    return ObjectFacts(shape, colour, size, texture, (x - r, y - r, x + r, y + r), (x, y))


def test_phrases_on_a_hand_made_scene():
    objects = [
        _facts("circle", "red", 20, 50),
        _facts("circle", "blue", 80, 50),
        _facts("star", "red", 50, 10),
    ]
    red_circle = phrases_for_object(objects, 0, (100, 100))
    assert "the red circle" in red_circle
    assert "the leftmost circle" in red_circle
    assert "the circle left of the blue circle" in red_circle
    assert "the circle on the left" in red_circle
    assert "the star" in phrases_for_object(objects, 2, (100, 100))
    assert not any("rightmost" in p for p in red_circle)


def test_ambiguous_phrases_are_not_emitted():
    twins = [_facts("square", "green", 40, 50), _facts("square", "green", 43, 50), _facts("heart", "red", 90, 50)]
    for target in (0, 1):
        phrases = phrases_for_object(twins, target, (100, 100))
        assert not any("leftmost" in p or "rightmost" in p or "left of" in p for p in phrases), phrases
        assert "the green square" not in phrases
    picked = referring_phrases(twins, (100, 100), np.random.default_rng(0), max_phrases=2)
    assert len(picked) == 3 and all(len(p) <= 2 for p in picked)


# ---- files on disk ------------------------------------------------------------------------------


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_generate_all_is_byte_reproducible(tmp_path):
    first = generate(tmp_path / "a", 3, seed=11, size=64, variant="all")
    second = generate(tmp_path / "b", 3, seed=11, size=64, variant="all")
    digest = _digest(first)
    assert digest == _digest(second)
    assert {name.split("/")[0] for name in digest} == set(VARIANTS)
    assert "matting/alpha/000002.png" in digest and "panoptic/panoptic/000000.png" in digest
    generate(tmp_path / "c", 3, seed=12, size=64, variant="detection")
    assert _digest(tmp_path / "c")["images/000000.png"] != digest["detection/images/000000.png"]


def test_written_panoptic_reads_back_exactly(tmp_path):
    root = generate(tmp_path / "pan", 3, seed=4, size=64, variant="panoptic")
    spec = json.loads((root / "dataset.json").read_text())
    assert spec["task"] == "panoptic" and spec["format"] == "coco-panoptic" and spec["seed"] == 4
    assert spec["generator"] == "qmn.data.synth" and spec["things"] == list(THING_SHAPES)
    assert spec["stuff"] == list(STUFF_CLASSES)
    panoptic = load_dataset(root)
    instances = load_dataset(root / "annotations.json")
    assert panoptic.task == "panoptic" and len(panoptic) == len(instances) == 3
    for index in range(3):
        expected = generate_sample(np.random.default_rng([4, index]), 64, "panoptic")
        for dataset in (panoptic, instances):
            loaded = dataset[index]
            assert np.array_equal(loaded.image, expected.image)
            assert [a.text for a in loaded.annotations] == [a.text for a in expected.annotations]
            for got, want in zip(loaded.annotations, expected.annotations):
                assert np.array_equal(got.mask, want.mask)


def test_written_referring_detection_and_matting_read_back(tmp_path):
    root = generate(tmp_path / "all", 2, seed=6, size=96, variant="all")
    referring = load_dataset(root / "referring")
    expected = generate_sample(np.random.default_rng([6, 1]), 96, "referring")
    assert referring.task == "referring"
    assert [a.extra["phrases"] for a in referring[1].annotations] == [a.extra["phrases"] for a in expected.annotations]
    detection = load_dataset(root / "detection")
    expected = generate_sample(np.random.default_rng([6, 0]), 96, "detection")
    assert detection.task == "detection" and all(a.mask is None for a in detection[0].annotations)
    assert np.array_equal(np.stack([a.box for a in detection[0].annotations]),
                          np.stack([a.box for a in expected.annotations]))
    matting = generate_sample(np.random.default_rng([6, 0]), 96, "matting")
    alpha_png = read_image(root / "matting" / "alpha" / "000000.png")[..., 0]
    assert np.abs(alpha_png / 255.0 - matting.annotations[0].extra["alpha"]).max() <= 0.5 / 255 + 1e-6
    assert json.loads((root / "matting" / "dataset.json").read_text())["task"] == "foreground"
    assert load_dataset(root / "foreground")[0].annotations[0].text == "foreground"


def test_generate_refuses_a_foreign_folder_and_rewrites_its_own(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not empty"):
        generate(foreign, 1, seed=0, size=48)
    assert (foreign / "notes.txt").read_text() == "keep me"
    ours = generate(tmp_path / "ours", 3, seed=0, size=48, variant="detection")
    generate(ours, 1, seed=0, size=48, variant="detection")
    assert sorted(p.name for p in (ours / "images").iterdir()) == ["000000.png"], "stale images removed"
    with pytest.raises(ValueError, match="variant"):
        generate(tmp_path / "x", 1, seed=0, variant="cartoon")


def test_cli_writes_a_dataset(tmp_path, capsys):
    assert synth_main(["--out", str(tmp_path / "cli"), "--num-images", "2", "--seed", "1", "--size", "48",
                       "--variant", "foreground"]) == 0
    assert (tmp_path / "cli" / "images" / "000001.png").is_file()
    with pytest.raises(SystemExit):
        synth_main(["--out", str(tmp_path / "cli2"), "--num-images", "2", "--variant", "nope"])


def test_synthetic_scenes_sequence_matches_generate_sample():
    scenes = SyntheticScenes(4, seed=2, size=64, variant="referring")
    assert len(scenes) == 4 and scenes.task == "referring" and scenes.vocabulary == list(THING_SHAPES)
    expected = generate_sample(np.random.default_rng([2, 3]), 64, "referring")
    assert np.array_equal(scenes[3].image, expected.image) and scenes[-1].image_id == "000003.png"
    with pytest.raises(IndexError):
        scenes[4]
    with pytest.raises(ValueError, match="size must be"):
        SyntheticScenes(2, seed=0, size=8)
