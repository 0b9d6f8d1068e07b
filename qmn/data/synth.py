"""Synthetic scenes with exact labels (paper §3.4: cheap data to train and test every task offline).

A scene is textured stuff regions with wavy borders (sky or wall on top, ground regions below), then
shaped things on top (named shape, palette colour, size class, surface texture), painted back to front.
Masks are exact: a thing placement is rejected (and retried) when it would leave any thing less than
`MIN_VISIBLE` of its own area visible, so every painted pixel belongs to exactly one labeled region.

Variants (one task each): panoptic (things + stuff covering every pixel), referring (things with unique
phrases from `qmn.data.phrases`), foreground (one merged "foreground" mask of a few salient things),
detection (things as boxes only), matting (a furry object from `qmn.data.furry` with its alpha,
composited over a stuff scene; task "foreground").

Each image draws from its own generator seeded by (seed, image index), so the first N images of a
run are the same whatever `num_images` is, and the same seed gives the same bytes.
"""
from __future__ import annotations

import argparse
import functools
import json
import shutil
import sys
from collections.abc import Sequence as SequenceABC
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np
from tqdm import tqdm

from qmn.data.coco import write_coco_instances
from qmn.data.coco_panoptic import write_coco_panoptic
from qmn.data.furry import render_furry
from qmn.data.phrases import facts_from_mask, referring_phrases
from qmn.data.sample import Annotation, Sample, mask_to_box
from qmn.io_utils import atomic_write_bytes, atomic_write_json

THING_SHAPES = ("circle", "square", "triangle", "star", "ring", "ellipse", "cross", "heart", "diamond")
STUFF_CLASSES = ("sky", "wall", "grass", "water", "road", "sand")
TOP_STUFF = ("sky", "wall")
GROUND_STUFF = ("grass", "water", "road", "sand")
PALETTE = {  # name -> RGB; hues far apart so the colour word stays true under the jitter
    "red": (215, 35, 35),
    "green": (40, 165, 55),
    "blue": (35, 75, 215),
    "yellow": (240, 215, 30),
    "purple": (135, 55, 175),
    "orange": (250, 135, 20),
    "white": (245, 245, 245),
    "black": (25, 25, 25),
}
SIZE_RADIUS = {"small": (0.05, 0.075), "medium": (0.10, 0.135), "large": (0.17, 0.22)}  # x image side
THING_TEXTURES = ("solid", "striped", "dotted")
VARIANTS = ("panoptic", "referring", "foreground", "detection", "matting")
VARIANT_TASK = {
    "panoptic": "panoptic",
    "referring": "referring",
    "foreground": "foreground",
    "detection": "detection",
    "matting": "foreground",
}
MIN_SIZE = 32  # pixels; below it the small things vanish
MIN_VISIBLE = 0.3  # a thing must keep this fraction of its area visible (i.e. occluded < 70%)
PLACEMENT_TRIES = 20
COLOUR_JITTER = 10.0  # std of the per-object RGB jitter


@dataclass
class Thing:
    """One placed object: its attributes and its visible mask (H, W) bool."""

    shape: str
    colour: str
    size: str
    texture: str
    mask: np.ndarray
    area: int  # full (unoccluded) area in pixels

    def attributes(self) -> dict:
        return {"shape": self.shape, "colour": self.colour, "size": self.size, "texture": self.texture}


# ---- stuff ------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """(ys, xs) float32 pixel coordinate grids (S, S), cached per size."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    ys.setflags(write=False)
    xs.setflags(write=False)
    return ys, xs


def _wave(rng: np.random.Generator, t: np.ndarray, size: int, amplitude: float) -> np.ndarray:
    """Sum of two random sines along coordinate `t` (pixels), peak about `amplitude` x size."""
    out = np.zeros_like(t)
    for _ in range(2):
        freq = rng.uniform(0.5, 3.0) * 2 * np.pi / size
        out += rng.uniform(0.3, 0.5) * amplitude * size * np.sin(freq * t + rng.uniform(0, 2 * np.pi))
    return out


def _value_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth noise (S, S) float32 in about [-1, 1]: a random (cells x cells) grid, bicubic-upsampled."""
    grid = rng.uniform(-1, 1, (cells, cells)).astype(np.float32)
    return cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)


def stuff_layout(rng: np.random.Generator, size: int) -> tuple[np.ndarray, list[str]]:
    """Label map (S, S) int8 indexing the returned class list: a top region over 1-3 ground regions."""
    ys, xs = _grid(size)
    top = TOP_STUFF[int(rng.random() < 0.3)]
    ground = list(rng.choice(GROUND_STUFF, size=int(rng.integers(1, 4)), replace=False))
    names = [top] + [str(g) for g in ground]
    horizon = rng.uniform(0.3, 0.55) * size + _wave(rng, xs[0], size, 0.06)  # (S,) per column
    labels = np.zeros((size, size), np.int8)
    below = ys >= horizon[None, :]
    k = len(ground)
    if k > 1 and rng.random() < 0.5:  # horizontal bands below the horizon
        top_of_ground = float(horizon.max())
        cuts = top_of_ground + (size - top_of_ground) * (np.arange(1, k) / k + rng.uniform(-0.05, 0.05, k - 1))
        band = np.zeros((size, size), np.int8)
        for cut in cuts:
            band += (ys >= cut + _wave(rng, xs[0], size, 0.02)[None, :]).astype(np.int8)
    else:  # parallel slanted columns
        slant = rng.uniform(-0.3, 0.3)
        cuts = size * (np.arange(1, k) / k + rng.uniform(-0.04, 0.04, k - 1))
        band = np.zeros((size, size), np.int8)
        for cut in cuts:
            border = cut + slant * (ys[:, 0] - size) + _wave(rng, ys[:, 0], size, 0.03)  # (S,) per row
            band += (xs >= border[:, None]).astype(np.int8)
    labels[below] = 1 + band[below]
    return labels, names


def _jittered(rng: np.random.Generator, rgb: Sequence[float], std: float = COLOUR_JITTER) -> np.ndarray:
    """`rgb` with a shared brightness change and a small per-channel one (std / 3): the hue stays put."""
    brightness = 1.0 + rng.normal(0, std / 100)
    return np.asarray(rgb, np.float32) * brightness + rng.normal(0, std / 3, 3).astype(np.float32)


def stuff_texture(rng: np.random.Generator, name: str, size: int) -> np.ndarray:
    """Procedural texture (S, S, 3) float32 in 0..255 for a stuff class."""
    ys, xs = _grid(size)
    v = ys / size  # 0 at the top, 1 at the bottom
    if name == "sky":
        base = _jittered(rng, (90, 150, 225), 15) * (1.0 - 0.35 * v[..., None]) + 80 * v[..., None]
        clouds = np.clip(_value_noise(rng, size, 5) * 1.2 - 0.3, 0, 0.8)[..., None]
        return base * (1 - clouds) + 245 * clouds
    if name == "wall":
        base = _jittered(rng, (205, 190, 165), 20)
        brick_h = rng.uniform(12, 22) * size / 256
        row = np.floor(ys / brick_h)
        offset = (row % 2) * brick_h
        mortar = (ys % brick_h < 1.5) | ((xs + offset) % (2 * brick_h) < 1.5)
        tone = 1.0 + 0.06 * _value_noise(rng, size, 16)[..., None]
        return np.where(mortar[..., None], base * 0.7, base * tone)
    if name == "grass":
        base = _jittered(rng, (70, 150, 50), 15)
        blades = rng.normal(0, 1, (size // 4, size)).astype(np.float32)
        streaks = cv2.resize(blades, (size, size), interpolation=cv2.INTER_LINEAR)
        return base * (1.0 + 0.15 * streaks[..., None] + 0.15 * _value_noise(rng, size, 6)[..., None])
    if name == "water":
        base = _jittered(rng, (40, 95, 170), 15)
        phase = _value_noise(rng, size, 4) * 6
        ripples = np.sin(ys * rng.uniform(0.3, 0.6) * 256 / size + phase)
        return base * (1.0 + 0.18 * ripples[..., None])
    if name == "road":
        base = _jittered(rng, (90, 90, 95), 12)
        grain = rng.normal(0, 1, (size, size)).astype(np.float32)
        return base * (1.0 + 0.12 * grain[..., None] + 0.08 * _value_noise(rng, size, 8)[..., None])
    if name == "sand":
        base = _jittered(rng, (215, 190, 135), 12)
        angle = rng.uniform(0, np.pi)
        dunes = np.sin((xs * np.cos(angle) + ys * np.sin(angle)) * rng.uniform(0.15, 0.3) * 256 / size)
        grain = rng.normal(0, 1, (size, size)).astype(np.float32)
        return base * (1.0 + 0.06 * dunes[..., None] + 0.05 * grain[..., None])
    raise ValueError(f"unknown stuff class {name!r}; expected one of {', '.join(STUFF_CLASSES)}")


def render_stuff(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(image float32 (S, S, 3), label map (S, S) int8, class names) of a thing-free scene."""
    labels, names = stuff_layout(rng, size)
    image = np.zeros((size, size, 3), np.float32)
    for index, name in enumerate(names):
        np.copyto(image, stuff_texture(rng, name, size), where=(labels == index)[..., None])
    return image, labels, names


# ---- things -----------------------------------------------------------------------------------------


def _regular_polygon(n: int, angle: float, radii: Sequence[float]) -> np.ndarray:
    """(n * len(radii), 2) vertices alternating the given radii (a star when two radii are given)."""
    count = n * len(radii)
    theta = angle - np.pi / 2 + np.arange(count) * 2 * np.pi / count
    r = np.resize(np.asarray(radii, np.float64), count)
    return np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1)


def _rotate(points: np.ndarray, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return points @ np.array([[c, s], [-s, c]])


def _heart(angle: float) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, 60, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    return _rotate(np.stack([x, y + 2.5], axis=1) / 17.0, angle)


def shape_mask(shape: str, centre: tuple[float, float], radius: float, angle: float, size: int) -> np.ndarray:
    """Binary mask (S, S) bool of `shape` with circumradius about `radius` pixels (no anti-aliasing)."""
    canvas = np.zeros((size, size), np.uint8)
    cx, cy = centre
    if shape in ("circle", "ring"):
        cv2.circle(canvas, (round(cx * 16), round(cy * 16)), round(radius * 16), 1, -1, cv2.LINE_8, shift=4)
        if shape == "ring":
            cv2.circle(canvas, (round(cx * 16), round(cy * 16)), round(radius * 0.5 * 16), 0, -1, cv2.LINE_8, shift=4)
        return canvas.astype(bool)
    if shape == "ellipse":
        axes = (round(radius * 16), round(radius * 0.5 * 16))
        cv2.ellipse(canvas, (round(cx * 16), round(cy * 16)), axes, np.degrees(angle), 0, 360, 1, -1,
                    cv2.LINE_8, shift=4)
        return canvas.astype(bool)
    polygons = {
        "square": lambda: _regular_polygon(4, angle + np.pi / 4, [1.0]) * 0.85,
        "triangle": lambda: _regular_polygon(3, angle, [1.0]),
        "star": lambda: _regular_polygon(5, angle, [1.0, 0.42]),
        "diamond": lambda: _rotate(np.array([[0, -1.0], [0.6, 0], [0, 1.0], [-0.6, 0]]), angle),
        "cross": lambda: _rotate(np.array([[-0.3, -1], [0.3, -1], [0.3, -0.3], [1, -0.3], [1, 0.3], [0.3, 0.3],
                                           [0.3, 1], [-0.3, 1], [-0.3, 0.3], [-1, 0.3], [-1, -0.3], [-0.3, -0.3]])
                                 * 0.85, angle),
        "heart": lambda: _heart(angle),
    }
    if shape not in polygons:
        raise ValueError(f"unknown shape {shape!r}; expected one of {', '.join(THING_SHAPES)}")
    vertices = np.round((polygons[shape]() * radius + (cx, cy)) * 16).astype(np.int32)  # 4-bit fixed point
    cv2.fillPoly(canvas, [vertices], 1, cv2.LINE_8, shift=4)
    return canvas.astype(bool)


def place_things(
    rng: np.random.Generator, size: int, count: int, sizes: Sequence[str] = tuple(SIZE_RADIUS)
) -> list[Thing]:
    """Up to `count` things, back to front; visible masks never overlap and keep >= MIN_VISIBLE of their area."""
    things: list[Thing] = []
    for _ in range(count):
        shape = THING_SHAPES[int(rng.integers(len(THING_SHAPES)))]
        colour = list(PALETTE)[int(rng.integers(len(PALETTE)))]
        size_class = sizes[int(rng.integers(len(sizes)))]
        texture = THING_TEXTURES[int(rng.integers(len(THING_TEXTURES)))]
        for _ in range(PLACEMENT_TRIES):
            radius = rng.uniform(*SIZE_RADIUS[size_class]) * size
            centre = tuple(rng.uniform(radius, size - radius, 2))
            angle = rng.uniform(0, np.pi) if shape == "ellipse" else rng.uniform(-0.25, 0.25)
            mask = shape_mask(shape, centre, radius, angle, size)
            area = int(mask.sum())
            if area == 0:
                continue
            if all((t.mask & ~mask).sum() >= MIN_VISIBLE * t.area for t in things):
                for t in things:
                    t.mask &= ~mask
                things.append(Thing(shape, colour, size_class, texture, mask, area))
                break
    return things


def _secondary(rgb: np.ndarray) -> np.ndarray:
    """The pattern colour of a striped / dotted thing: a darker shade, or a lighter one for dark colours."""
    return rgb * 0.5 if rgb.mean() > 90 else rgb * 0.4 + 150


def paint_thing(rng: np.random.Generator, image: np.ndarray, thing: Thing) -> None:
    """Paint the visible part of `thing` into `image` (S, S, 3) float32, in place."""
    x1, y1, x2, y2 = mask_to_box(thing.mask).astype(int)
    region = thing.mask[y1:y2, x1:x2]
    rgb = _jittered(rng, PALETTE[thing.colour])
    ys, xs = np.mgrid[y1:y2, x1:x2].astype(np.float32)
    period = rng.uniform(5, 10) * image.shape[0] / 256
    if thing.texture == "striped":
        angle = rng.uniform(0, np.pi)
        pattern = ((xs * np.cos(angle) + ys * np.sin(angle)) % period) < period / 2
    elif thing.texture == "dotted":
        pattern = (np.hypot(xs % period - period / 2, ys % period - period / 2)) < period * 0.28
    else:
        pattern = np.zeros_like(region)
    patch = np.where(pattern[..., None], _secondary(rgb), rgb)
    patch = patch + rng.normal(0, 4, patch.shape).astype(np.float32)  # sensor-like grain
    image[y1:y2, x1:x2][region] = patch[region]


# ---- samples ----------------------------------------------------------------------------------------


def _scene(rng: np.random.Generator, size: int, count: int, sizes: Sequence[str] = tuple(SIZE_RADIUS)):
    """(image uint8, stuff labels, stuff names, things) with the things painted over the stuff."""
    image, labels, names = render_stuff(rng, size)
    things = place_things(rng, size, count, sizes)
    for thing in things:
        paint_thing(rng, image, thing)
    return np.clip(image + 0.5, 0, 255).astype(np.uint8), labels, names, things


def _thing_annotation(thing: Thing, with_mask: bool = True) -> Annotation:
    extra = {"attributes": thing.attributes()}
    if with_mask:
        return Annotation.from_mask(thing.shape, thing.mask, extra=extra)
    return Annotation(text=thing.shape, box=mask_to_box(thing.mask), mask=None, extra=extra)


def _check_request(variant: str, size: int) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {', '.join(VARIANTS)}")
    if size < MIN_SIZE:
        raise ValueError(f"size must be >= {MIN_SIZE} pixels, got {size}")


def generate_sample(rng: np.random.Generator, size: int = 256, variant: str = "panoptic") -> Sample:
    """One synthetic image with its labels for `variant` (see the module docstring)."""
    _check_request(variant, size)
    task = VARIANT_TASK[variant]
    if variant == "matting":
        return _matting_sample(rng, size)
    if variant == "foreground":
        image, _, _, things = _scene(rng, size, int(rng.integers(1, 4)), sizes=("medium", "large"))
        union = np.logical_or.reduce([t.mask for t in things])
        return Sample(image, [Annotation.from_mask("foreground", union)], task, vocabulary=["foreground"])
    image, labels, names, things = _scene(rng, size, int(rng.integers(3, 9)))
    if variant == "detection":
        annotations = [_thing_annotation(t, with_mask=False) for t in things]
        return Sample(image, annotations, task, vocabulary=list(THING_SHAPES))
    if variant == "referring":
        all_phrases = referring_phrases([facts_from_mask(t.attributes(), t.mask) for t in things], (size, size), rng)
        annotations = []
        for thing, phrases in zip(things, all_phrases):
            if phrases:  # an object no phrase can single out is simply not referred to
                annotation = _thing_annotation(thing)
                annotation.extra["phrases"] = phrases
                annotations.append(annotation)
        return Sample(image, annotations, task, vocabulary=list(THING_SHAPES))
    annotations = [_thing_annotation(t) for t in things]
    covered = np.logical_or.reduce([t.mask for t in things]) if things else np.zeros((size, size), bool)
    for index, name in enumerate(names):
        region = (labels == index) & ~covered
        if region.any():
            annotations.append(Annotation.from_mask(name, region))
    return Sample(image, annotations, task, vocabulary=list(THING_SHAPES) + list(STUFF_CLASSES))


def _matting_sample(rng: np.random.Generator, size: int) -> Sample:
    """A furry object (qmn.data.furry) composited over a stuff scene; alpha in the annotation's extra."""
    _, alpha, fg, style = render_furry(rng, size)
    background, _, _ = render_stuff(rng, size)
    a = alpha[..., None]
    image = np.clip(a * fg.astype(np.float32) + (1.0 - a) * background + 0.5, 0, 255).astype(np.uint8)
    mask = alpha >= 0.5
    if not mask.any():  # a wispy object with no solid core: label its most opaque pixels
        mask = alpha >= alpha.max() * 0.5
    annotation = Annotation.from_mask("foreground", mask, extra={"alpha": alpha, "style": style})
    return Sample(image, [annotation], "foreground", vocabulary=["foreground"])


def _class_lists(variant: str) -> tuple[list[str], list[str]]:
    """(things, stuff) class names a variant's files can contain."""
    if variant in ("foreground", "matting"):
        return ["foreground"], []
    if variant == "panoptic":
        return list(THING_SHAPES), list(STUFF_CLASSES)
    return list(THING_SHAPES), []


class SyntheticScenes(SequenceABC):
    """`num_images` scenes as a lazy Sequence[Sample]: item i is generated on access from (seed, i).

    Lets the trainer mix synthetic data in without writing it to disk; `image_id` is "<i:06d>.png",
    the name `generate` writes it under.
    """

    def __init__(self, num_images: int, seed: int, size: int = 256, variant: str = "panoptic") -> None:
        _check_request(variant, size)
        if num_images < 1:
            raise ValueError(f"num_images must be >= 1, got {num_images}")
        self.num_images, self.seed, self.size, self.variant = num_images, seed, size, variant
        self.task = VARIANT_TASK[variant]
        things, stuff = _class_lists(variant)
        self.vocabulary = things + stuff

    def __len__(self) -> int:
        return self.num_images

    def __getitem__(self, index: int) -> Sample:  # type: ignore[override]
        if not -self.num_images <= index < self.num_images:
            raise IndexError(f"scene {index} out of range for {self.num_images} scenes")
        index %= self.num_images
        sample = generate_sample(np.random.default_rng([self.seed, index]), self.size, self.variant)
        sample.image_id = f"{index:06d}.png"
        return sample


# ---- writing ----------------------------------------------------------------------------------------

VARIANT_FORMAT = {v: "coco-panoptic" if v == "panoptic" else "coco" for v in VARIANTS}
INSTANCES_JSON = "annotations.json"  # COCO instances (every variant; the panoptic one lists things and stuff)
PANOPTIC_JSON = "panoptic.json"  # + panoptic/<stem>.png, panoptic variant only
OUTPUT_ENTRIES = ("images", "alpha", "panoptic", INSTANCES_JSON, PANOPTIC_JSON, "dataset.json")


def _png_bytes(array: np.ndarray) -> bytes:
    """PNG of an RGB (H, W, 3) or gray (H, W) uint8 array (OpenCV's encoder is deterministic)."""
    ok, data = cv2.imencode(".png", array[..., ::-1] if array.ndim == 3 else array)
    if not ok:
        raise ValueError(f"cannot encode a PNG of shape {array.shape}")
    return data.tobytes()


def _prepare_folder(folder: Path) -> None:
    """Make `folder` ready: new, empty, or a previous synthetic dataset (whose files are replaced)."""
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"output {folder} exists and is not a folder")
    if folder.is_dir() and any(folder.iterdir()):
        spec = folder / "dataset.json"
        try:
            ours = json.loads(spec.read_text()).get("generator") == "qmn.data.synth"
        except (OSError, ValueError, AttributeError):
            ours = False
        if not ours:
            raise ValueError(f"output folder {folder} is not empty and holds no synthetic dataset: choose another")
        for entry in OUTPUT_ENTRIES:
            path = folder / entry
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()


def _samples(scenes: SyntheticScenes, folder: Optional[Path], desc: str):
    """Yield the scenes' samples; with `folder`, also write images/ (and alpha/) as they go."""
    for sample in tqdm(scenes, desc=desc, unit="img", disable=None):
        if folder is not None:
            atomic_write_bytes(folder / "images" / sample.image_id, _png_bytes(sample.image))
            for annotation in sample.annotations:
                if "alpha" in annotation.extra:
                    alpha = np.clip(annotation.extra["alpha"] * 255 + 0.5, 0, 255).astype(np.uint8)
                    atomic_write_bytes(folder / "alpha" / sample.image_id, _png_bytes(alpha))
        yield sample


def write_variant(folder: Path, num_images: int, seed: int, size: int, variant: str) -> Path:
    """One dataset folder: images/, annotations.json (+ panoptic.json, panoptic/, alpha/), dataset.json."""
    scenes = SyntheticScenes(num_images, seed, size, variant)  # checks the request before touching files
    _prepare_folder(folder)
    things, stuff = _class_lists(variant)
    categories = things + stuff
    write_coco_instances(_samples(scenes, folder, variant), folder / INSTANCES_JSON, categories=categories)
    if variant == "panoptic":  # a second, identical pass: samples are regenerated rather than held in memory
        write_coco_panoptic(_samples(scenes, None, "panoptic PNGs"), folder / PANOPTIC_JSON, folder / "panoptic",
                            thing_classes=things, categories=categories)
    record = {
        "task": VARIANT_TASK[variant],
        "format": VARIANT_FORMAT[variant],
        "generator": "qmn.data.synth",
        "variant": variant,
        "seed": seed,
        "size": size,
        "num_images": num_images,
        "things": things,
        "stuff": stuff,
    }
    if variant == "matting":
        record["alpha"] = "alpha"
    atomic_write_json(folder / "dataset.json", record, indent=2)  # written last: marks the folder complete
    return folder


def generate(
    out_dir: str | Path, num_images: int, seed: int, size: int = 256, variant: str = "panoptic"
) -> Path:
    """Write `num_images` scenes of `variant` to `out_dir` ("all": one sub-folder per variant); returns out_dir."""
    if variant != "all" and variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {', '.join(VARIANTS)} or all")
    out_dir = Path(out_dir)
    if variant == "all":
        for name in VARIANTS:
            write_variant(out_dir / name, num_images, seed, size, name)
    else:
        write_variant(out_dir, num_images, seed, size, variant)
    return out_dir


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m qmn.data.synth",
        description="Write a synthetic labeled dataset (PNG images + COCO JSON + dataset.json). "
        "The same seed always writes the same bytes.",
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder (new, empty, or an earlier synth run)")
    parser.add_argument("--num-images", required=True, type=int, help="images per variant")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels (default 256)")
    parser.add_argument(
        "--variant",
        default="panoptic",
        choices=VARIANTS + ("all",),
        help="panoptic: things + stuff; referring: things with unique phrases; foreground: one salient mask; "
        "detection: boxes only; matting: furry object + alpha/; all: one sub-folder each (default panoptic)",
    )
    args = parser.parse_args(argv)
    try:
        out = generate(args.out, args.num_images, args.seed, args.size, args.variant)
    except ValueError as error:
        parser.exit(2, f"error: {error}\n")
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
