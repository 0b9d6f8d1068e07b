"""Reviewing the current image: select a mask, accept / reject / relabel it, hide it, undo / redo, and mark the
image done. After a decision the selection moves to the next pending proposal, so a / r walk the review."""
from __future__ import annotations

from typing import Optional

from app import tools
from app.actions.reply import Reply, refusals_as_replies, refused
from app.session import SessionState


def _advance(session: SessionState) -> str:
    """Select the next pending proposal; the sentence saying where review stands."""
    _, ann = session.require_image()
    session.selected = ann.next_proposal()
    pending = ann.count("proposed")
    return f"{pending} proposals left." if pending else "No proposals left: press d (Done) when the image is finished."


@refusals_as_replies
def select_at(session: SessionState, x: int, y: int) -> Reply:
    _, ann = session.require_image()
    session.selected = tools.region_at([r for r in ann.regions if r.shown], int(x), int(y))
    return Reply(f"Selected mask #{session.selected}." if session.selected else "No mask there: selection cleared.")


@refusals_as_replies
def select_region(session: SessionState, region_id: Optional[float]) -> Reply:
    _, ann = session.require_image()
    if region_id is not None and ann.region(int(region_id)) is None:
        return refused(f"no mask with id {int(region_id)} on this image")
    session.selected = None if region_id is None else int(region_id)
    return Reply(f"Selected mask #{session.selected}." if session.selected else "Selection cleared.")


@refusals_as_replies
def accept(session: SessionState) -> Reply:
    region = session.selected_region()
    with session.edit() as ann:
        target = ann.region(region.id)
        target.review = "edited" if target.review == "edited" else "accepted"
    return Reply(f"Accepted #{region.id} {region.label}. " + _advance(session))


@refusals_as_replies
def accept_all(session: SessionState) -> Reply:
    _, ann = session.require_image()
    pending = ann.count("proposed")
    if not pending:
        return refused("no proposals to accept on this image")
    with session.edit() as a:
        for r in a.regions:
            r.review = "accepted" if r.review == "proposed" else r.review
    return Reply(f"Accepted {pending} proposals. " + _advance(session))


@refusals_as_replies
def reject(session: SessionState) -> Reply:
    """Mark the selected mask rejected: it stays listed (undo or Accept brings it back) but is never used."""
    region = session.selected_region()
    if region.review == "rejected":
        return refused(f"#{region.id} is already rejected")
    with session.edit() as ann:
        ann.region(region.id).review = "rejected"
    return Reply(f"Rejected #{region.id} {region.label}. " + _advance(session))


@refusals_as_replies
def relabel(session: SessionState, label: str) -> Reply:
    region = session.selected_region()
    if not label or not label.strip():
        return refused("type the new label first")
    with session.edit() as ann:
        target = ann.region(region.id)
        target.label, target.review = label.strip(), "edited"
    return Reply(f"#{region.id} is now {label.strip()!r} (edited).")


@refusals_as_replies
def toggle_visibility(session: SessionState) -> Reply:
    """Hide/show the selected mask (or show all when none is selected); a view setting, not a review decision."""
    _, ann = session.require_image()
    region = ann.region(session.selected)
    for r in [region] if region else ann.regions:
        r.visible = not r.visible if region else True
    session.workspace.save(ann)
    return Reply(f"#{region.id} {'shown' if region.visible else 'hidden'}." if region else "All masks shown.")


@refusals_as_replies
def mark_done(session: SessionState) -> Reply:
    """The person finished this image: remaining proposals count as rejected (so the image's labels are exactly
    what they kept), and the image joins exports and fine-tuning. Undo takes it back."""
    _, ann = session.require_image()
    if ann.done:
        return Reply(f"{ann.image} is already done.")
    pending = ann.count("proposed")
    with session.edit() as a:
        for r in a.regions:
            r.review = "rejected" if r.review == "proposed" else r.review
        a.done = True
    session.selected = None
    kept = sum(r.vouched for r in ann.regions)
    rejected = f"; {pending} pending proposals rejected" if pending else ""
    return Reply(f"{ann.image} done: {kept} masks kept{rejected}.")


@refusals_as_replies
def undo(session: SessionState) -> Reply:
    session.require_image()
    return Reply("Undone.") if session.undo() else refused("nothing to undo")


@refusals_as_replies
def redo(session: SessionState) -> Reply:
    session.require_image()
    return Reply("Redone.") if session.redo() else refused("nothing to redo")
