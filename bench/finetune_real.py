"""Real fine-tuning: `--init` the default model on a real labeled folder for a fixed time on CPU and report mask AP /
AP50 on a fixed held-out split before and after (issue: "fine-tune on my labels").

    python bench/finetune_real.py --data ../shared/data/fruitsnuts --minutes 10 --out runs/ft/fruitsnuts
    python bench/finetune_real.py --data ../shared/data/coco128 --top-classes 5 --minutes 10 --out runs/ft/coco128
    python bench/finetune_real.py --data ../shared/data/clothing --top-classes 6 --minutes 10 --out runs/ft/clothing
    python bench/finetune_real.py --data ../shared/data/fruitsnuts --mosaics 48 --minutes 10 --out runs/ft/mosaic
    python bench/finetune_real.py --data ../shared/data/fruitsnuts --mosaics 48 --train-flags "--text-proj train" \
        --out runs/ft/mosaic_text_proj          # the same, with a change to the trainer's defaults

`--mosaics N` first builds a narrow-domain folder of many small objects: N full-resolution 2 x 2 mosaics of the
photos (1600 x 1200 from 800 x 600 ones, ~36 objects of ~120 px each, ~19 px once the whole mosaic is shrunk to
256). The held-out mosaics (the trainer's fixed 20% split of the N) are made only of photos no training mosaic uses,
so nothing is tuned on the held-out objects.

`--top-classes K` keeps only the K most frequent classes (by pixels for semantic label maps; every image is kept, so the held-out split, 20% by
`holdout_split(n, 0.2, seed=0)`, is the same images the default model held out). Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from qmn.data.coco import write_coco_instances  # noqa: E402
from qmn.data.folder import load_dataset  # noqa: E402
from qmn.data.image_io import write_png  # noqa: E402
from qmn.data.mixing import holdout_split  # noqa: E402
from qmn.data.sample import Annotation, Sample  # noqa: E402
from qmn.data.semantic_folder import write_semantic_folder  # noqa: E402

HELDOUT_PHOTO_FRACTION = 0.25


def restrict_to_top_classes(src: Path, out: Path, k: int) -> tuple[Path, list[str]]:
    """The same images (copied: the loader refuses symlinks that leave a folder) with only the k most frequent classes
    (instances: by count; semantic maps: by pixels, the other classes' pixels become null = unlabeled)."""
    dataset = load_dataset(src)
    semantic = dataset.task == "semantic"
    counts = Counter()
    for s in dataset:
        counts.update({a.text: int(a.mask.sum()) if semantic else 1 for a in s.annotations})
    keep = [name for name, _ in counts.most_common(k)]
    (out / "images").mkdir(parents=True, exist_ok=True)
    samples = []
    for sample in dataset:
        link = out / "images" / sample.image_id
        if not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(dataset.root / "images" / sample.image_id, link)
        samples.append(Sample(sample.image, [a for a in sample.annotations if a.text in keep], dataset.task,
                              sample.image_id))
    if semantic:
        write_semantic_folder(samples, out, classes=keep)
    else:
        write_coco_instances(samples, out / "annotations.json", categories=keep)
    assert load_dataset(out).image_ids == dataset.image_ids, "image order changed: split would differ"
    return out, keep


def _mosaic(photos: list[Sample], rng) -> tuple[np.ndarray, list[Annotation]]:
    """Four photos (each flipped at random) on a 2 x 2 grid at full resolution; masks follow."""
    h, w = photos[0].image.shape[:2]
    image = np.zeros((2 * h, 2 * w, 3), np.uint8)
    annotations = []
    for k, photo in enumerate(photos):
        flip = rng.random() < 0.5
        y0, x0 = (k // 2) * h, (k % 2) * w
        image[y0:y0 + h, x0:x0 + w] = photo.image[:, ::-1] if flip else photo.image
        for ann in photo.annotations:
            mask = np.zeros(image.shape[:2], bool)
            mask[y0:y0 + h, x0:x0 + w] = ann.mask[:, ::-1] if flip else ann.mask
            annotations.append(Annotation.from_mask(ann.text, mask))
    return image, annotations


def build_mosaics(src: Path, out: Path, count: int, seed: int = 0) -> Path:
    """`count` mosaics as a COCO folder; held-out slots (holdout_split(count, 0.2, 0), as the trainer) use held-out
    photos only."""
    dataset = load_dataset(src, task="instance")
    photos = [s for s in dataset if s.image.shape[:2] == dataset[0].image.shape[:2]]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(photos))
    n_held = max(4, round(len(photos) * HELDOUT_PHOTO_FRACTION))
    held_photos, train_photos = [photos[i] for i in order[:n_held]], [photos[i] for i in order[n_held:]]
    _, held_slots = holdout_split(count, 0.2, seed=0)
    (out / "images").mkdir(parents=True, exist_ok=True)
    samples = []
    for i in range(count):
        pool = held_photos if i in held_slots else train_photos
        image, annotations = _mosaic([pool[j] for j in rng.choice(len(pool), 4, replace=False)], rng)
        name = f"mosaic_{i:03d}.png"
        write_png(out / "images" / name, image)
        samples.append(Sample(image, annotations, "instance", name))
    write_coco_instances(samples, out / "annotations.json", categories=sorted(dataset.vocabulary))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--checkpoint", default="assets/qmn_tiny.safetensors")
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--top-classes", type=int, default=0)
    p.add_argument("--mosaics", type=int, default=0, help="build N 2x2 full-resolution mosaics of --data first")
    p.add_argument("--mosaic-seed", type=int, default=0,
                   help="which photos are held out and how they are tiled (0); another seed = another split")
    p.add_argument("--threads", type=int, default=2, help="torch threads of the trainer (2)")
    p.add_argument("--train-flags", default="",
                   help="extra flags for the trainer, to measure a change to its defaults (e.g. \"--text-proj train\")")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    data, classes = args.data, None
    if args.mosaics:
        data = build_mosaics(args.data, args.out / "data", args.mosaics, seed=args.mosaic_seed)
    if args.top_classes:
        data, classes = restrict_to_top_classes(args.data, args.out / "data", args.top_classes)
    # the README's fine-tune command, nothing more (its defaults are what is measured), plus the thread count
    cmd = [sys.executable, "-m", "train", "--data", str(data), "--init", args.checkpoint, "--max-minutes",
           str(args.minutes), "--threads", str(args.threads), "--out", str(args.out / "run"),
           *shlex.split(args.train_flags)]
    print(" ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    report = json.loads((args.out / "run" / "before_after.json").read_text())
    report.update({"data": str(args.data), "classes": classes, "minutes": args.minutes, "command": " ".join(sys.argv)})
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
