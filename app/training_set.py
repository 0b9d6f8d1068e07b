"""Which labels fine-tuning may learn from, and the training folder written for `python -m train`.

Only images a person marked done: their accepted / edited masks are the labels and every other pixel is
background, which is true only once someone has finished the image (an unreviewed proposal would teach the
model its own guesses, and a half-reviewed image would teach it that missed objects are background). The
trainer holds out HOLDOUT of these images (a fixed split) and scores the current and the new model on them,
so "before / after" compares both against a person's labels.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from app.export import export_regions, label_names, select_for_export, to_sample, write_instances
from app.workspace import Workspace

MIN_DONE_IMAGES = 4  # 3 to train on, 1 held out: fewer cannot tell whether the new model is better
HOLDOUT = 0.25


def training_refusal(ws: Workspace) -> str:
    """Why `ws` cannot be fine-tuned on yet ('' when it can): counts of done images and of what waits for review."""
    anns = ws.annotated()
    done = [a for a in anns if a.done]
    masks = sum(len(export_regions(a)) for a in done)
    if len(done) >= MIN_DONE_IMAGES and masks:
        return ""
    in_review = sum(a.state == "in review" for a in anns)
    proposals = sum(a.count("proposed") for a in anns)
    return (f"Fine-tuning learns only from images a person marked done (press d on a reviewed image): it needs at "
            f"least {MIN_DONE_IMAGES} with at least one kept mask; this folder has {len(done)} done ({masks} masks), "
            f"{in_review} in review and {proposals} unreviewed proposals.")


def write_training_set(ws: Workspace, out_dir: Path) -> Path:
    """COCO instances of the done images plus copies of them: `<out_dir>/images/<name>`, `<out_dir>/annotations.json`.

    ValueError (with `training_refusal`'s sentence) when there are too few.
    """
    refusal = training_refusal(ws)
    if refusal:
        raise ValueError(refusal)
    selected = [c for c in select_for_export(ws.annotated()) if c.ann.done]
    for chosen in selected:
        target = out_dir / "images" / chosen.ann.image
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ws.image_path(chosen.ann.image), target)
    write_instances([to_sample(c.ann, c.regions) for c in selected], out_dir / "annotations.json",
                    label_names(selected), "rle")
    return out_dir
