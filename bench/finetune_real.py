"""Real fine-tuning: `--init` the default model on a real labeled folder for a fixed time on CPU and report mask AP /
AP50 on a fixed held-out split before and after (issue: "fine-tune on my labels").

    python bench/finetune_real.py --data ../shared/data/fruitsnuts --minutes 10 --out runs/ft/fruitsnuts
    python bench/finetune_real.py --data ../shared/data/coco128 --top-classes 5 --minutes 10 --out runs/ft/coco128

`--top-classes K` keeps only the K most frequent classes (every image is kept, so the held-out split, 20% by
`holdout_split(n, 0.2, seed=0)`, is the same images the default model held out). Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from qmn.data.coco import write_coco_instances  # noqa: E402
from qmn.data.folder import load_dataset  # noqa: E402
from qmn.data.sample import Sample  # noqa: E402


def restrict_to_top_classes(src: Path, out: Path, k: int) -> tuple[Path, list[str]]:
    """A COCO folder with the same images (copied: the loader refuses symlinks that leave a folder) and only the k
    most frequent classes' annotations."""
    dataset = load_dataset(src, task="instance")
    counts = Counter(a.text for s in dataset for a in s.annotations)
    keep = [name for name, _ in counts.most_common(k)]
    (out / "images").mkdir(parents=True, exist_ok=True)
    samples = []
    for sample in dataset:
        link = out / "images" / sample.image_id
        if not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(dataset.root / "images" / sample.image_id, link)
        samples.append(Sample(sample.image, [a for a in sample.annotations if a.text in keep], "instance", sample.image_id))
    write_coco_instances(samples, out / "annotations.json", categories=keep)
    assert load_dataset(out, task="instance").image_ids == dataset.image_ids, "image order changed: split would differ"
    return out, keep


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--checkpoint", default="assets/qmn_tiny.safetensors")
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--top-classes", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    data, classes = args.data, None
    if args.top_classes:
        data, classes = restrict_to_top_classes(args.data, args.out / "data", args.top_classes)
    cmd = [sys.executable, "-m", "train", "--data", str(data), "--init", args.checkpoint, "--holdout", "0.2",
           "--max-minutes", str(args.minutes), "--steps", "100000", "--batch-size", str(args.batch_size), "--lr",
           str(args.lr), "--backbone-lr-mult", "1.0", "--grad-clip", "1.0", "--threads", "1", "--eval-images", "1000",
           "--save-every", "100", "--out", str(args.out / "run")]
    print(" ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    report = json.loads((args.out / "run" / "before_after.json").read_text())
    report.update({"data": str(args.data), "classes": classes, "minutes": args.minutes, "command": " ".join(sys.argv)})
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
