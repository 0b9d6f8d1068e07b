"""Property tests of the mask encodings and the COCO writer/reader pair on random masks."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from qmn.data import Annotation, Sample, decode_rle, encode_rle, load_dataset, write_coco_instances
from qmn.data.mask_codec import mask_iou, mask_to_polygon, mask_to_polygons, polygons_to_mask

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def masks(draw, max_side: int = 24) -> np.ndarray:
    """A random (H, W) bool mask: noise, blocks or both, so holes, islands and diagonals all occur."""
    h, w = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    mask = rng.random((h, w)) < draw(st.floats(0.0, 1.0))
    if draw(st.booleans()):  # blocky shapes: upsampled coarse noise
        coarse = rng.random(((h + 3) // 4, (w + 3) // 4)) < 0.5
        mask = np.kron(coarse, np.ones((4, 4), bool))[:h, :w]
    return mask


@SETTINGS
@given(masks())
def test_rle_round_trip_is_exact(mask):
    rle = encode_rle(mask)
    assert np.array_equal(decode_rle(json.loads(json.dumps(rle))), mask)
    column_major = mask.T.reshape(-1).astype(np.int8)
    runs = np.diff(np.r_[0, np.flatnonzero(np.diff(column_major)) + 1, column_major.size]).tolist()
    if column_major[0]:
        runs = [0] + runs  # COCO runs start with background
    assert np.array_equal(decode_rle({"size": list(mask.shape), "counts": runs}), mask)


@SETTINGS
@given(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=20), st.integers(1, 8), st.integers(1, 8))
def test_arbitrary_rle_strings_never_decode_out_of_bounds(counts, h, w):
    try:
        mask = decode_rle({"size": [h, w], "counts": counts})
    except ValueError:
        return
    assert mask.shape == (h, w)


@SETTINGS
@given(masks())
def test_polygon_iou_reported_equals_the_real_iou(mask):
    h, w = mask.shape
    for polygons in (mask_to_polygons(mask), [mask_to_polygon(mask)] if mask.any() else []):
        assert mask_iou(mask, polygons_to_mask(polygons, h, w)) == 1.0  # pixel-edge outlines are exact
    sample = Sample(np.zeros((h, w, 3), np.uint8), [Annotation.from_mask("thing", mask)], "instance", "x.png")
    with tempfile.TemporaryDirectory() as folder:
        report = write_coco_instances([sample], Path(folder) / "annotations.json", polygons=True)
        Image.fromarray(sample.image).save(Path(folder) / "x.png")
        read = load_dataset(Path(folder) / "annotations.json")[0].annotations[0].mask
    if mask.any():
        assert report.polygon_iou[1] == mask_iou(mask, read)
    else:
        assert not report.polygon_iou and not read.any()  # empty masks stay RLE


@SETTINGS
@given(st.lists(masks(max_side=16), min_size=1, max_size=3), st.integers(1, 16), st.integers(1, 16))
def test_coco_writer_then_reader_is_exact(mask_list, h, w):
    sized = [np.pad(m, ((0, max(0, h - m.shape[0])), (0, max(0, w - m.shape[1]))))[:h, :w] for m in mask_list]
    annotations = [Annotation.from_mask(f"class {i % 2}", m, iscrowd=bool(i % 2)) for i, m in enumerate(sized)]
    sample = Sample(np.zeros((h, w, 3), np.uint8), annotations, "instance", "x.png", ["class 0", "class 1"])
    with tempfile.TemporaryDirectory() as folder:
        write_coco_instances([sample], Path(folder) / "annotations.json")
        Image.fromarray(sample.image).save(Path(folder) / "x.png")
        back = load_dataset(Path(folder) / "annotations.json")[0].annotations
    assert [(a.text, a.iscrowd) for a in back] == [(a.text, a.iscrowd) for a in annotations]
    for a, b in zip(annotations, back):
        assert np.array_equal(a.mask, b.mask) and np.array_equal(a.box, b.box)
