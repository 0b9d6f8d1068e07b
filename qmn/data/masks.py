"""Per-image mask PNGs, the simplest export: what image editors and scripts read directly.

Public API:
    write_mask_pngs(item, out_dir, *, index_map=False) -> list[Path]
        item: a Sample or a (file_name, qmn.structures.Prediction) pair.
        index_map=False: `<stem>/<k>_<label>.png` per segment, 0 / 255 grayscale, k from 1.
        index_map=True:  `<stem>.png`, pixel = segment number k (0 = none; uint8, or 16-bit when
                         there are more than 255 segments; where segments overlap the first keeps
                         the pixel) plus `<stem>.json` = [{"index": k, "label", "score"?}].
        `<stem>` is the image's file name without its suffix, sub-folders kept.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Union

import numpy as np

from qmn.data.coco import Item, image_labels, output_path
from qmn.data.image_io import write_png
from qmn.io_utils import atomic_write_json


def write_mask_pngs(item: Item, out_dir: Union[str, Path], *, index_map: bool = False) -> list[Path]:
    """Write one image's masks (see the module docstring); box-only annotations are skipped."""
    labels = image_labels(item)
    stem = str(Path(labels.file_name).with_suffix(""))
    segments = [a for a in labels.annotations if a.mask is not None]
    if not index_map:
        paths = []
        for k, annotation in enumerate(segments, start=1):
            path = output_path(out_dir, f"{stem}/{k:03d}_{_slug(annotation.text)}.png")
            write_png(path, annotation.mask.astype(np.uint8) * 255)
            paths.append(path)
        return paths
    indices = np.zeros((labels.height, labels.width), np.uint8 if len(segments) < 256 else np.uint16)  # (H, W)
    legend = []
    for k, annotation in enumerate(segments, start=1):
        indices[annotation.mask & (indices == 0)] = k
        legend.append({"index": k, "label": annotation.text, **_score(annotation.extra)})
    png_path, json_path = output_path(out_dir, f"{stem}.png"), output_path(out_dir, f"{stem}.json")
    write_png(png_path, indices)
    atomic_write_json(json_path, legend, indent=1)
    return [png_path, json_path]


def _score(extra: dict) -> dict:
    return {"score": round(float(extra["score"]), 4)} if "score" in extra else {}


def _slug(text: str) -> str:
    """A label made safe as part of a file name: `the red car` -> `the_red_car` (at most 40 chars)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_.")[:40] or "segment"
