"""One opened folder of images and its autosaved annotations under `<folder>/.qmn/`.

Every image has a review state (new / proposed / in review / done, see app.annotations) read from its saved
JSON, so the image list survives restarts; every save is atomic (qmn.io_utils) so a crash never loses work.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from app.annotations import ImageAnnotations, from_json, state_from_json, to_json
from qmn.data.image_io import ImageError, read_image
from qmn.io_utils import atomic_write_bytes, atomic_write_json, safe_join

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
MAX_PIXELS = 40_000_000  # refuse bigger images: one mask of this size is 40 MB and predict would crawl
STATE_DIR = ".qmn"
MAX_LISTED_FOLDERS = 20


def sanitize_filename(name: str) -> str:
    """A safe base name for an uploaded file: no folders, no leading dots, only [A-Za-z0-9._-]."""
    base = Path(str(name).replace("\\", "/")).name
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", base).lstrip(".") or "upload"
    return base[:120]


def decode_image(data: bytes, source: str) -> np.ndarray:
    """Upright RGB uint8 (H, W, 3) from encoded bytes, through qmn's reader (EXIF orientation applied, the
    pixel limit checked before decoding); ValueError naming `source` if empty, corrupt or too big."""
    try:
        return read_image(data, max_pixels=MAX_PIXELS)
    except ImageError as error:
        raise ValueError(f"{source}: not a readable image ({str(error).replace(' <bytes>', '')})") from None


class Workspace:
    """A folder of images (non-recursive) with per-image annotation JSON in `<folder>/.qmn/annotations/`."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder).resolve()
        if not self.folder.is_dir():
            raise ValueError(f"{folder}: not a folder")
        self.state_dir = self.folder / STATE_DIR

    # images -------------------------------------------------------------------------------------
    def list_images(self) -> list[str]:
        """Image file names in the folder, sorted."""
        return sorted(
            p.name
            for p in self.folder.iterdir()
            if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
        )

    def image_path(self, name: str) -> Path:
        return safe_join(self.folder, name)

    def read_image(self, name: str) -> np.ndarray:
        """RGB uint8 (H, W, 3); ValueError with the file named when unreadable."""
        path = self.image_path(name)
        if not path.is_file():
            raise ValueError(f"{name}: no such image in {self.folder}")
        return decode_image(path.read_bytes(), name)

    def add_image_bytes(self, original_name: str, data: bytes) -> str:
        """Store an upload under a sanitised, unused name; returns that name. Corrupt data is refused."""
        decode_image(data, original_name)
        base = sanitize_filename(original_name)
        stem, suffix = Path(base).stem, Path(base).suffix.lower()
        if suffix not in IMAGE_EXTENSIONS:
            stem, suffix = base, ".png"
        name, n = f"{stem}{suffix}", 1
        while self.image_path(name).exists():
            name, n = f"{stem}_{n}{suffix}", n + 1
        atomic_write_bytes(self.image_path(name), data)
        return name

    def add_image_array(self, stem: str, image: np.ndarray) -> str:
        """Store an RGB array as PNG (used for images sent straight to the API); returns its name."""
        ok, png = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        if not ok:
            raise ValueError(f"{stem}: could not encode image as PNG")
        return self.add_image_bytes(f"{stem}.png", png.tobytes())

    # annotations --------------------------------------------------------------------------------
    def annotation_path(self, name: str) -> Path:
        return safe_join(self.state_dir / "annotations", f"{name}.json")

    def load(self, name: str, image_shape: Optional[tuple[int, int]] = None) -> ImageAnnotations:
        """Saved annotation of `name`, or a fresh empty one (state "new") when none was saved."""
        path = self.annotation_path(name)
        if path.is_file():
            return from_json(json.loads(path.read_text()), source=str(path))
        if image_shape is None:
            image_shape = self.read_image(name).shape[:2]
        return ImageAnnotations(image=name, height=int(image_shape[0]), width=int(image_shape[1]))

    def save(self, ann: ImageAnnotations) -> None:
        """Atomic autosave of one image's annotation."""
        atomic_write_json(self.annotation_path(ann.image), to_json(ann))

    def state_of(self, name: str) -> tuple[str, bool]:
        """(review state, exported) of `name`; an unreadable file counts as "new" (the image list must not break)."""
        path = self.annotation_path(name)
        if not path.is_file():
            return "new", False
        try:
            d = json.loads(path.read_text())
            return state_from_json(d, str(path)), bool(d.get("exported", d.get("state") == "exported"))
        except (OSError, ValueError, AttributeError):
            return "new", False

    def states(self) -> list[tuple[str, str, bool]]:
        """[(image name, review state, exported)] for the image list."""
        return [(n, *self.state_of(n)) for n in self.list_images()]

    def annotated(self) -> list[ImageAnnotations]:
        """Saved annotations of every image that has one, in image-list order."""
        return [self.load(n) for n in self.list_images() if self.annotation_path(n).is_file()]

    def subfolders_with_images(self) -> list[str]:
        """Sub-folders (one level, not hidden) holding at least one image: what to suggest when this one has none."""
        found = []
        for p in sorted(self.folder.iterdir()):
            if p.is_dir() and not p.name.startswith(".") and Workspace(p).list_images():
                found.append(p.name)
                if len(found) == MAX_LISTED_FOLDERS:
                    break
        return found

    # ontology (saved prompt list carried from image to image) -----------------------------------
    def load_ontology(self) -> str:
        path = self.state_dir / "ontology.json"
        if not path.is_file():
            return ""
        try:
            return ", ".join(str(p) for p in json.loads(path.read_text()).get("prompts", []))
        except (OSError, ValueError):
            return ""

    def save_ontology(self, prompts: list[str]) -> None:
        atomic_write_json(self.state_dir / "ontology.json", {"prompts": prompts})
