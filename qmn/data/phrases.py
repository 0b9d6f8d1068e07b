"""Referring phrases for synthetic scenes: attribute, extremal, region and relation phrases that are unique.

A phrase is emitted for an object only when it picks out that object and no other one, with a margin:
every predicate is three-valued (True / False / None = too close to call), and a phrase whose
predicate is None for any object is never emitted. This keeps the synthetic referring data free of
ambiguous targets, which real referring datasets (RefCOCO) also avoid by construction.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

# Words for the attributes, in the order they appear in a phrase: "the large striped red star".
ATTRIBUTE_ORDER = ("size", "texture", "colour", "shape")
SIZE_WORDS = {"small": "small", "medium": "medium-sized", "large": "large"}
DESCRIPTOR_KEYS = (  # which attributes a descriptor names; the shape is always named
    ("shape",),
    ("colour", "shape"),
    ("size", "shape"),
    ("texture", "shape"),
    ("size", "colour", "shape"),
    ("texture", "colour", "shape"),
    ("size", "texture", "colour", "shape"),
)
RELATION_DESCRIPTOR_KEYS = DESCRIPTOR_KEYS[:2]  # the head of a relation phrase stays short

# Region predicates use the object centroid in image fractions: inside `near`, clearly outside past `far`.
REGION_NEAR, REGION_FAR = 0.4, 0.5
EXTREMAL_MARGIN = 0.08  # the extremal object must beat the runner-up by this fraction of the image side

Truth = Optional[bool]  # None = ambiguous, never used to emit a phrase


@dataclass(frozen=True)
class ObjectFacts:
    """What the phrase generator knows about one visible object (pixel coordinates, visible part)."""

    shape: str
    colour: str
    size: str  # "small" | "medium" | "large"
    texture: str  # "solid" | "striped" | "dotted"
    box: tuple[float, float, float, float]  # visible xyxy
    centroid: tuple[float, float]  # visible (x, y)


def facts_from_mask(attributes: dict, mask: np.ndarray) -> ObjectFacts:
    """Facts of an object from its attributes {shape, colour, size, texture} and visible mask (H, W) bool.

    Box and centroid are in pixel-edge coordinates (a pixel's centre is at +0.5), so both mirror
    exactly under a horizontal flip: x -> W - x.
    """
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        raise ValueError("facts_from_mask: the mask is empty")
    box = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
    centroid = (float(xs.mean()) + 0.5, float(ys.mean()) + 0.5)
    return ObjectFacts(
        attributes["shape"], attributes["colour"], attributes["size"], attributes["texture"], box, centroid
    )


def describe(obj: ObjectFacts, keys: Sequence[str]) -> str:
    """Noun phrase without the article, e.g. keys ("size", "colour", "shape") -> "small red triangle"."""
    words = []
    for attribute in ATTRIBUTE_ORDER:
        if attribute in keys:
            value = getattr(obj, attribute)
            words.append(SIZE_WORDS.get(value, value) if attribute == "size" else value)
    return " ".join(words)


def matches(obj: ObjectFacts, target: ObjectFacts, keys: Sequence[str]) -> bool:
    return all(getattr(obj, k) == getattr(target, k) for k in keys)


# ---- geometric predicates (three-valued) -------------------------------------------------------


def left_of(a: ObjectFacts, b: ObjectFacts) -> Truth:
    """True when a's centroid is left of b's box and b's centroid right of a's box; False when a is not left."""
    if a.centroid[0] < b.box[0] and b.centroid[0] > a.box[2]:
        return True
    if a.centroid[0] >= b.centroid[0]:
        return False
    return None


def above(a: ObjectFacts, b: ObjectFacts) -> Truth:
    if a.centroid[1] < b.box[1] and b.centroid[1] > a.box[3]:
        return True
    if a.centroid[1] >= b.centroid[1]:
        return False
    return None


RELATIONS: dict[str, Callable[[ObjectFacts, ObjectFacts], Truth]] = {
    "left of": left_of,
    "right of": lambda a, b: left_of(b, a),
    "above": above,
    "below": lambda a, b: above(b, a),
}


def _region_truth(fraction: float) -> Truth:
    """Whether a centroid at `fraction` of the side lies in the near region [0, REGION_NEAR)."""
    if fraction < REGION_NEAR:
        return True
    if fraction > REGION_FAR:
        return False
    return None


def region_predicates(width: int, height: int) -> dict[str, Callable[[ObjectFacts], Truth]]:
    """Phrase suffix -> predicate; "on the left" means the centroid lies in the left ~40% of the image."""
    return {
        "on the left": lambda o: _region_truth(o.centroid[0] / width),
        "on the right": lambda o: _region_truth(1.0 - o.centroid[0] / width),
        "at the top": lambda o: _region_truth(o.centroid[1] / height),
        "at the bottom": lambda o: _region_truth(1.0 - o.centroid[1] / height),
    }


EXTREMAL_WORDS = {  # word -> (centroid axis, sign: +1 = smallest coordinate wins)
    "leftmost": (0, 1),
    "rightmost": (0, -1),
    "topmost": (1, 1),
    "bottommost": (1, -1),
}


# ---- generation --------------------------------------------------------------------------------


def _unique(target: int, truths: Sequence[Truth]) -> bool:
    """The predicate holds for `target` and is clearly false for every other object."""
    return truths[target] is True and all(t is False for i, t in enumerate(truths) if i != target)


def _extremal_phrases(objects: Sequence[ObjectFacts], target: int, keys: Sequence[str], side: float) -> list[str]:
    group = [i for i, o in enumerate(objects) if matches(o, objects[target], keys)]
    if len(group) < 2:  # "the leftmost star" only says something when there are several stars
        return []
    out = []
    for word, (axis, sign) in EXTREMAL_WORDS.items():
        coords = sorted((sign * objects[i].centroid[axis], i) for i in group)
        if coords[0][1] == target and coords[1][0] - coords[0][0] >= EXTREMAL_MARGIN * side:
            out.append(f"the {word} {describe(objects[target], keys)}")
    return out


def phrases_for_object(
    objects: Sequence[ObjectFacts],
    target: int,
    image_size: tuple[int, int],
    anchor_descriptors: Optional[Sequence[Optional[str]]] = None,
) -> list[str]:
    """Every unique phrase for objects[target], in a fixed order (attribute, extremal, region, relation).

    `anchor_descriptors[i]` is objects[i]'s shortest unique descriptor (computed here when not given).
    """
    height, width = image_size
    if anchor_descriptors is None:
        anchor_descriptors = [shortest_unique_descriptor(objects, i) for i in range(len(objects))]
    me = objects[target]
    out: list[str] = []
    for keys in DESCRIPTOR_KEYS:
        desc = describe(me, keys)
        if _unique(target, [matches(o, me, keys) for o in objects]):
            out.append(f"the {desc}")
        out += _extremal_phrases(objects, target, keys, float(max(height, width)))
    for suffix, predicate in region_predicates(width, height).items():
        for keys in RELATION_DESCRIPTOR_KEYS:
            truths = [predicate(o) if matches(o, me, keys) else False for o in objects]
            if _unique(target, truths):
                out.append(f"the {describe(me, keys)} {suffix}")
    for anchor_index, anchor in enumerate(objects):
        if anchor_index == target:
            continue
        anchor_desc = anchor_descriptors[anchor_index]
        if anchor_desc is None:
            continue
        for relation, predicate in RELATIONS.items():
            for keys in RELATION_DESCRIPTOR_KEYS:
                truths = [
                    predicate(o, anchor) if (i != anchor_index and matches(o, me, keys)) else False
                    for i, o in enumerate(objects)
                ]
                if _unique(target, truths):
                    out.append(f"the {describe(me, keys)} {relation} the {anchor_desc}")
    return out


def shortest_unique_descriptor(objects: Sequence[ObjectFacts], index: int) -> Optional[str]:
    """The first (shortest) attribute descriptor naming objects[index] alone, e.g. "blue circle"."""
    me = objects[index]
    for keys in DESCRIPTOR_KEYS:
        if _unique(index, [matches(o, me, keys) for o in objects]):
            return describe(me, keys)
    return None


def referring_phrases(
    objects: Sequence[ObjectFacts], image_size: tuple[int, int], rng: np.random.Generator, max_phrases: int = 5
) -> list[list[str]]:
    """Up to `max_phrases` unique phrases per object (a random, seeded pick of all valid ones)."""
    anchors = [shortest_unique_descriptor(objects, i) for i in range(len(objects))]
    result = []
    for target in range(len(objects)):
        candidates = list(dict.fromkeys(phrases_for_object(objects, target, image_size, anchors)))
        order = rng.permutation(len(candidates))[:max_phrases]
        result.append([candidates[i] for i in sorted(order)])
    return result


# ---- mirroring (used by the horizontal flip) ---------------------------------------------------

_MIRROR = {"left": "right", "right": "left", "leftmost": "rightmost", "rightmost": "leftmost"}
_MIRROR_RE = re.compile(r"\b(left|right|leftmost|rightmost)\b", re.IGNORECASE)


def mirror_phrase(text: str) -> str:
    """Swap left/right words so a phrase stays true after a horizontal flip ("left of" -> "right of")."""

    def swap(m: re.Match) -> str:
        word = m.group(0)
        new = _MIRROR[word.lower()]
        return new.capitalize() if word[0].isupper() else new

    return _MIRROR_RE.sub(swap, text)
