"""The export tab's action: export the opened folder's reviewed annotations and say what went in and what not."""
from __future__ import annotations

from typing import Optional, Sequence

from app.actions.reply import Reply, refusals_as_replies
from app.export import FORMATS, export_folder
from app.session import SessionState


@refusals_as_replies
def export(session: SessionState, formats: Optional[Sequence[str]], encoding: str,
           include_proposals: bool = False) -> Reply:
    """Value: the ExportResult (zip path and report)."""
    result = export_folder(session.workspace, list(formats or FORMATS), encoding, include_proposals=include_proposals)
    if session.ann is not None:  # the open image's in-memory copy must carry the new mark, or its next save drops it
        session.ann = session.workspace.load(session.ann.image)
    r = result.report
    reviews = ", ".join(f"{n} {state}" for state, n in r["by_review"].items())
    left = f"; left out {r['proposals_left_out']} unreviewed proposals" if r["proposals_left_out"] else ""
    hint = " (tick 'include proposals' to export them, labelled)" if left and not include_proposals else ""
    return Reply(f"Exported {r['annotations']} annotations ({reviews}) of {r['images']} images{left}{hint}.",
                 value=result)
