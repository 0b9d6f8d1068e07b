"""Geometric training transforms on `Sample`s (numpy): resize, large-scale jitter, horizontal flip.

Why these: Mask DINO (whose settings the paper follows) trains with large-scale jitter (LSJ, as in
Copy-Paste: scale 0.1..2.0, then a fixed S x S crop / pad). Labels stay exact: masks are resized with
centre-aligned nearest-neighbour sampling (a panoptic partition stays a partition, and the mask stays
on its pixels, which OpenCV's plain INTER_NEAREST shifts), boxes of masked annotations are recomputed
from the masks, box-only (detection) boxes are transformed directly, annotations that end up empty
are dropped, and `extra["alpha"]` (matting) follows the image. A horizontal flip swaps the
left/right words of referring phrases so they stay true.

Every function returns a new Sample and leaves its input untouched; randomness comes only from the
`rng` argument, so a seeded generator reproduces an augmentation exactly.
"""
from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from qmn.data.phrases import mirror_phrase
from qmn.data.sample import Annotation, Sample, mask_to_box
from qmn.tiling import inference_scale

LSJ_SCALE_RANGE = (0.1, 2.0)
NATIVE_SCALE_RANGE = (0.5, 1.5)  # jitter around the photo's own scale: small objects stay as many pixels as at test
PAD_VALUE = 128  # image padding grey: close to the pixel mean, so it normalises to about zero
MIN_BOX_SIDE = 1.0  # a box-only annotation thinner than this (pixels) after a crop is dropped


def _resize_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    shrinking = height * width < image.shape[0] * image.shape[1]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=interpolation)


def _resize_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    source = np.ascontiguousarray(mask, dtype=np.uint8)  # cv2 takes no bool and no negative strides
    return cv2.resize(source, (width, height), interpolation=cv2.INTER_NEAREST_EXACT).astype(bool)


def scale_to(sample: Sample, height: int, width: int) -> Sample:
    """`sample` resized to exactly (height, width); boxes from masks, box-only boxes scaled."""
    h, w = sample.image.shape[:2]
    sx, sy = width / w, height / h
    annotations = []
    for ann in sample.annotations:
        extra = dict(ann.extra)
        if "alpha" in extra:
            extra["alpha"] = _resize_image(np.asarray(extra["alpha"], np.float32), height, width)
        if ann.mask is None:
            box = ann.box * np.array([sx, sy, sx, sy], np.float32)
            annotations.append(dataclasses.replace(ann, box=box, extra=extra))
            continue
        mask = _resize_mask(ann.mask, height, width)
        if mask.any():
            annotations.append(dataclasses.replace(ann, box=mask_to_box(mask), mask=mask, extra=extra))
    return dataclasses.replace(sample, image=_resize_image(sample.image, height, width), annotations=annotations)


def resize(sample: Sample, size: int) -> Sample:
    """Long side to `size`, aspect kept (short side rounded, at least 1 pixel)."""
    h, w = sample.image.shape[:2]
    scale = size / max(h, w)
    return scale_to(sample, max(1, round(h * scale)), max(1, round(w * scale)))


def _window(array: np.ndarray, x0: int, y0: int, height: int, width: int, fill) -> np.ndarray:
    """The (height, width) window of `array` starting at (x0, y0); parts outside it are `fill`."""
    out = np.full((height, width) + array.shape[2:], fill, array.dtype)
    src_h, src_w = array.shape[:2]
    ys, ye = max(y0, 0), min(y0 + height, src_h)
    xs, xe = max(x0, 0), min(x0 + width, src_w)
    if ye > ys and xe > xs:
        out[ys - y0 : ye - y0, xs - x0 : xe - x0] = array[ys:ye, xs:xe]
    return out


def crop(sample: Sample, x0: int, y0: int, height: int, width: int, pad_value: int = PAD_VALUE) -> Sample:
    """The (height, width) window at (x0, y0), padded with `pad_value` where it leaves the image.

    Annotations with nothing left inside the window are dropped.
    """
    annotations = []
    for ann in sample.annotations:
        extra = dict(ann.extra)
        if "alpha" in extra:
            extra["alpha"] = _window(np.asarray(extra["alpha"], np.float32), x0, y0, height, width, 0.0)
        if ann.mask is None:
            box = ann.box - np.array([x0, y0, x0, y0], np.float32)
            box = np.clip(box, 0, [width, height, width, height]).astype(np.float32)
            if box[2] - box[0] >= MIN_BOX_SIDE and box[3] - box[1] >= MIN_BOX_SIDE:
                annotations.append(dataclasses.replace(ann, box=box, extra=extra))
            continue
        mask = _window(ann.mask, x0, y0, height, width, False)
        if mask.any():
            annotations.append(dataclasses.replace(ann, box=mask_to_box(mask), mask=mask, extra=extra))
    image = _window(sample.image, x0, y0, height, width, pad_value)
    return dataclasses.replace(sample, image=image, annotations=annotations)


def large_scale_jitter(
    sample: Sample,
    size: int,
    rng: np.random.Generator,
    scale_range: tuple[float, float] = LSJ_SCALE_RANGE,
    pad_value: int = PAD_VALUE,
    max_side: int = 0,
) -> Sample:
    """LSJ: fit the image in (s*size)^2 for s ~ U(scale_range), then a random size x size crop / pad.

    As detectron2's ResizeScale + FixedSizeCrop (Copy-Paste, Mask DINO): padding goes right and bottom.
    `max_side` > 0: s scales the photo's own resolution instead (as `qmn.tiling` predicts: capped at `max_side`), so a
    1280 px photo gives 256 px crops of 60 px objects rather than a 256 px photo of 12 px ones.
    """
    low, high = scale_range
    if not 0 < low <= high:
        raise ValueError(f"scale_range must satisfy 0 < low <= high, got {scale_range}")
    h, w = sample.image.shape[:2]
    base = inference_scale(h, w, size, max_side) if max_side > 0 else size / max(h, w)
    scale = rng.uniform(low, high) * base
    new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    scaled = scale_to(sample, new_h, new_w)
    x0 = int(rng.integers(0, new_w - size + 1)) if new_w > size else 0
    y0 = int(rng.integers(0, new_h - size + 1)) if new_h > size else 0
    return crop(scaled, x0, y0, size, size, pad_value)


def _mirror_annotation(ann: Annotation, width: int, mirror_text: bool) -> Annotation:
    extra = dict(ann.extra)
    if "alpha" in extra:
        extra["alpha"] = np.ascontiguousarray(np.asarray(extra["alpha"])[:, ::-1])
    if "phrases" in extra:
        extra["phrases"] = [mirror_phrase(p) for p in extra["phrases"]]
    text = mirror_phrase(ann.text) if mirror_text else ann.text
    if ann.mask is None:
        x1, y1, x2, y2 = ann.box
        return dataclasses.replace(ann, text=text, box=np.array([width - x2, y1, width - x1, y2], np.float32),
                                   extra=extra)
    mask = np.ascontiguousarray(ann.mask[:, ::-1])
    return dataclasses.replace(ann, text=text, box=mask_to_box(mask), mask=mask, extra=extra)


def hflip(sample: Sample) -> Sample:
    """Mirror left-right. Phrases in extra["phrases"] swap left/right words; so does `text` for the
    referring task, where it is a phrase (class names of other tasks are kept as they are)."""
    width = sample.image.shape[1]
    mirror_text = sample.task == "referring"
    annotations = [_mirror_annotation(a, width, mirror_text) for a in sample.annotations]
    return dataclasses.replace(sample, image=np.ascontiguousarray(sample.image[:, ::-1]), annotations=annotations)


class TrainTransform:
    """The training augmentation: LSJ to size x size (or a long-side resize) and a 50% horizontal flip.

    Picklable (for DataLoader workers); call it as `transform(sample, rng)` with a seeded generator.
    """

    def __init__(
        self, size: int, lsj: bool = True, flip: bool = True, scale_range: tuple[float, float] = LSJ_SCALE_RANGE,
        max_side: int = 0,
    ) -> None:
        if size < 1:
            raise ValueError(f"TrainTransform size must be >= 1, got {size}")
        self.size = size
        self.lsj = lsj
        self.flip = flip
        self.scale_range = tuple(scale_range)
        self.max_side = max_side

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if self.lsj:
            out = large_scale_jitter(sample, self.size, rng, self.scale_range, max_side=self.max_side)
        else:
            out = resize(sample, self.size)
        if self.flip and rng.random() < 0.5:
            out = hflip(out)
        return out

    def __repr__(self) -> str:
        return f"TrainTransform(size={self.size}, lsj={self.lsj}, flip={self.flip}, scale_range={self.scale_range}, max_side={self.max_side})"
