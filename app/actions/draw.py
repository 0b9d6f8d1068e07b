"""Drawing by hand: a box (two clicks or API), brush add / erase, edge refinement with matting. Everything
drawn or changed by hand is `edited`: a person made it, so it is exported and trained on."""
from __future__ import annotations

import json
from typing import Optional

import numpy as np

from app import tools
from app.actions.reply import Reply, refusals_as_replies, refused
from app.actions.segment import parse_json_list, predict_regions
from app.annotations import Region
from app.model_host import ModelHost
from app.session import SessionState
from qmn.grabcut import grabcut_from_box
from qmn.prompts import parse_prompts


def new_label(label: str, prompts: str, task: str) -> str:
    """The label of a hand-made mask: the typed one, else the first prompt, else 'object'."""
    return (label or "").strip() or next(iter(parse_prompts(prompts, task)), "object")


@refusals_as_replies
def box_click(session: SessionState, host: ModelHost, x: int, y: int, label: str, method: str, prompts: str,
              task: str) -> Reply:
    """First click stores a corner, second click makes the box and fills it."""
    _, ann = session.require_image()
    if session.box_corner is None:
        session.box_corner = (int(x), int(y))
        return Reply("Box: first corner set, click the opposite corner.")
    corner, session.box_corner = session.box_corner, None
    box = tools.box_from_corners(corner, (x, y), ann.width, ann.height)
    return add_box(session, host, json.dumps(box), label, method, prompts, task)


@refusals_as_replies
def add_box(session: SessionState, host: ModelHost, box: str, label: str, method: str, prompts: str = "",
            task: str = "instance") -> Reply:
    """New region from an xyxy box: the model's box prompt, or GrabCut (also the fallback)."""
    img, ann = session.require_image()
    values = parse_json_list(box, "box")
    if len(values) != 4:
        return refused("box must be [x0, y0, x1, y1] in pixels")
    xyxy = tools.box_from_corners(values[:2], [v - 1 for v in values[2:]], ann.width, ann.height)
    name, region, note = new_label(label, prompts, task), None, ""
    if method == "model":
        found = [r for r in predict_regions(host, img, [name], "instance", 0.0, [xyxy], [], ann.next_id())
                 if r.query_type == "prompted" and r.mask.any()]
        region = max(found, key=lambda r: r.score) if found else None
        note = "" if found else " (the model returned no mask for this box: GrabCut filled it)"
    if region is None:
        region = Region(id=ann.next_id(), label=name, mask=grabcut_from_box(img, xyxy), query_type="manual")
    region.id, region.label, region.review = ann.next_id(), name, "edited"
    with session.edit() as a:
        a.regions.append(region)
    session.selected = region.id
    return Reply(f"Added #{region.id} {name} from the box{note}.", ok=not note)


@refusals_as_replies
def load_into_editor(session: SessionState) -> Reply:
    """Value: the brush canvas's content (the current image, nothing painted)."""
    img, _ = session.require_image()
    return Reply("Image loaded into the brush canvas: paint, then Add or Erase.",
                 value={"background": img, "layers": [], "composite": None})


@refusals_as_replies
def brush(session: SessionState, editor: Optional[dict], erase: bool, label: str, prompts: str, task: str) -> Reply:
    """Add the pixels painted on the brush canvas (an ImageEditor value) to the selected mask, or erase them."""
    img, _ = session.require_image()
    return paint(session, tools.stroke_mask(editor, img.shape[:2]), erase, label, prompts, task)


@refusals_as_replies
def paint(session: SessionState, painted: np.ndarray, erase: bool, label: str, prompts: str, task: str) -> Reply:
    """Add `painted` ((H, W) bool) to the selected mask (or a new one), or erase it from it."""
    _, ann = session.require_image()
    region = ann.region(session.selected)
    if region is None and erase:
        return refused("select the mask to erase from first")
    with session.edit() as a:
        if region is None:
            region = Region(id=a.next_id(), label=new_label(label, prompts, task), mask=painted, review="edited")
            a.regions.append(region)
        else:
            target = a.region(region.id)
            target.mask, target.alpha, target.review = tools.apply_brush(target.mask, painted, erase), None, "edited"
    session.selected = region.id
    return Reply(f"{'Erased from' if erase else 'Painted into'} #{region.id} {region.label}.")


@refusals_as_replies
def refine_edges(session: SessionState, trimap_width: float = 0) -> Reply:
    """Alpha matte for the selected mask (hair, fur); the cut-out export uses it. `trimap_width` px on each side of
    the whole edge, or 0 for `qmn.matting.refine`'s measured default: a band only where the mask is ragged or
    unsure. A smooth, certain edge gets none there (on a crisp alphamatting photo a band all round made SAD 16%
    worse), so the user is told to set a width instead of getting an unchanged matte."""
    region = session.selected_region()
    width = int(trimap_width or 0)
    if width < 0:
        return refused(f"band width must be 0 (auto) or a number of pixels, got {trimap_width}")
    alpha = tools.refine_with_matting(session.image, region.mask, width or None)
    if not ((alpha > 0) & (alpha < 1)).any():
        reason = ("the solve explained the photo no better than the mask" if width else
                  "its edge is smooth and certain, so the automatic band is empty")
        return refused(f"matting left mask #{region.id} as it was: {reason}; set a band width (px) to refine "
                       "the whole edge")
    band = f"a {width} px band" if width else "a band where the edge is ragged or unsure"
    with session.edit() as ann:
        target = ann.region(region.id)
        target.alpha, target.mask, target.review = alpha, alpha >= 0.5, "edited"
    return Reply(f"Refined edges of mask #{region.id} with matting ({band}).")
