"""One opened folder of images and its autosaved annotations under `<folder>/.qmn/`.

Every image has a review state (new / proposed / in review / done, see app.annotations) read from its saved
JSON, so the image list survives restarts; every save is atomic (qmn.io_utils) so a crash never loses work.
"""
from __future__ import annotations

import json
import os
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
        # name -> (the annotation file's (mtime_ns, size, inode), (review state, exported)): the image list is
        # drawn after every gesture, and re-parsing every file cost ~130 ms on a 1000-image folder
        self._states: dict[str, tuple[tuple[int, int, int], tuple[str, bool]]] = {}

    # images -------------------------------------------------------------------------------------
    def list_images(self) -> list[str]:
        """Image file names in the folder, sorted."""
        with os.scandir(self.folder) as entries:  # scandir: the file type comes without a stat per file
            return sorted(e.name for e in entries
                          if e.is_file() and Path(e.name).suffix.lower() in IMAGE_EXTENSIONS and not e.name.startswith("."))

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
        try:
            return self._saved_state(name, path, path.stat())
        except OSError:
            return "new", False

    def _saved_state(self, name: str, path: Path, info: os.stat_result) -> tuple[str, bool]:
        """`state_of` from the file at `path` with stat `info`, parsed again only when its modification time, size
        or inode changed (saves are atomic renames, so every save gives a new inode)."""
        key = (info.st_mtime_ns, info.st_size, info.st_ino)
        cached = self._states.get(name)
        if cached is not None and cached[0] == key:
            return cached[1]
        try:
            d = json.loads(path.read_text())
            found = state_from_json(d, str(path)), bool(d.get("exported", d.get("state") == "exported"))
        except (OSError, ValueError, AttributeError):
            found = "new", False
        self._states[name] = (key, found)
        return found

    def states(self) -> list[tuple[str, str, bool]]:
        """[(image name, review state, exported)] for the image list. One scan of the annotation folder (regular
        files only: a planted symlink counts as no annotation) instead of resolving a path per image."""
        try:
            with os.scandir(self.state_dir / "annotations") as entries:
                saved = {e.name: e for e in entries if e.is_file(follow_symlinks=False)}
        except OSError:
            saved = {}
        out = []
        for name in self.list_images():
            entry = saved.get(f"{name}.json")
            try:
                state = self._saved_state(name, Path(entry.path), entry.stat(follow_symlinks=False)) if entry else None
            except OSError:
                state = None
            out.append((name, *(state or ("new", False))))
        return out

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
