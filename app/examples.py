"""The examples gallery: synthetic scenes (what the bundled model was trained on) and a few real
photos from installed packages (scikit-image, Gradio's media), written once into `<workspace>/examples/`."""
from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from qmn.io_utils import atomic_write_bytes

log = logging.getLogger("qmn.app")
SKIMAGE_PHOTOS = ("astronaut", "coffee", "chelsea")
GRADIO_PHOTOS = ("cheetah.jpg", "lion.jpg", "tower.jpg")
NUM_SYNTHETIC = 3


def _write_rgb(path: Path, rgb: np.ndarray) -> None:
    if rgb.ndim == 2:
        rgb = np.stack([rgb] * 3, axis=-1)
    ok, png = cv2.imencode(".png", cv2.cvtColor(rgb[..., :3].astype(np.uint8), cv2.COLOR_RGB2BGR))
    if ok:
        atomic_write_bytes(path, png.tobytes())


def _synthetic(out_dir: Path) -> None:
    try:
        from qmn.data.synth import generate_sample
    except ImportError:
        return
    rng = np.random.default_rng(0)
    for i in range(NUM_SYNTHETIC):
        path = out_dir / f"synthetic_{i}.png"
        if not path.exists():
            _write_rgb(path, generate_sample(rng, size=256, variant="panoptic").image)


def _skimage_photos(out_dir: Path) -> None:
    try:
        from skimage import data
    except ImportError:
        return
    for name in SKIMAGE_PHOTOS:
        path = out_dir / f"{name}.png"
        if not path.exists() and hasattr(data, name):
            _write_rgb(path, getattr(data, name)())


def _gradio_photos(out_dir: Path) -> None:
    import gradio

    media = Path(gradio.__file__).parent / "media_assets" / "images"
    for name in GRADIO_PHOTOS:
        src, dst = media / name, out_dir / name
        if src.is_file() and not dst.exists():
            atomic_write_bytes(dst, src.read_bytes())


def prepare_examples(out_dir: Path) -> list[tuple[str, str]]:
    """Write the example images (once) and return [(path, caption)] for gr.Gallery."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for source in (_synthetic, _skimage_photos, _gradio_photos):
        try:
            source(out_dir)
        except Exception as e:  # noqa: BLE001 - an example source failing must not stop the app
            log.warning("examples: %s failed: %s", source.__name__, e)
    files = sorted(p for p in out_dir.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    return [(str(p), p.stem) for p in files]
