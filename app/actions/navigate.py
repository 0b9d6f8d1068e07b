"""Opening things: a folder of the workspace, uploaded files, an image of the list, the next / previous one,
an example, and the folder's saved prompt list (its ontology)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from app.actions.reply import Reply, refusals_as_replies, refused
from app.session import SessionState
from app.workspace import Workspace
from qmn.io_utils import safe_join
from qmn.prompts import parse_prompts

UPLOADS = "uploads"


def folder_path(root: Path, folder: Optional[str]) -> Path:
    """`folder` inside the workspace root ('' or '.' = the root); ValueError if it leaves the workspace."""
    folder = (folder or "").strip()
    return root if folder in ("", ".") else safe_join(root, folder)


def uploads_folder(session: SessionState, root: Path) -> Workspace:
    """The opened folder, or `<root>/uploads` (created) when none is open: where new images go."""
    if session.folder is None:
        path = safe_join(root, UPLOADS)
        path.mkdir(parents=True, exist_ok=True)
        session.folder = str(path)
    return session.workspace


@refusals_as_replies
def open_folder(session: SessionState, root: Path, folder: Optional[str]) -> Reply:
    """Open a folder and its first image; value = the folder's saved prompts. With no images, name the
    sub-folders that have some."""
    ws = Workspace(folder_path(root, folder))
    session.folder = str(ws.folder)
    session.close_image()
    names = ws.list_images()
    if names:
        session.open_image(ws, names[0])
        return Reply(f"Opened {folder or '.'}: {len(names)} images.", value=ws.load_ontology())
    subfolders = ws.subfolders_with_images()
    hint = f"folders with images: {', '.join(subfolders)}" if subfolders else "upload some"
    return Reply(f"{folder or '.'}: no images in this folder; {hint}.", ok=False, value=ws.load_ontology())


@refusals_as_replies
def upload(session: SessionState, root: Path, paths: Optional[Sequence[str]]) -> Reply:
    """Copy uploads into the opened folder (or `uploads/`) under sanitised names; corrupt files are skipped."""
    if not paths:
        return refused("no files received")
    ws, added, skipped = uploads_folder(session, root), [], []
    for path in map(Path, paths):
        try:
            added.append(ws.add_image_bytes(path.name, path.read_bytes()))
        except ValueError as e:
            skipped.append(str(e))
    if not added:
        return refused("none of the uploaded files is a readable image: " + "; ".join(skipped))
    session.open_image(ws, added[0])
    message = f"Added {len(added)} images."
    return Reply(message + (" Skipped: " + "; ".join(skipped) if skipped else ""), ok=not skipped)


@refusals_as_replies
def open_image(session: SessionState, name: str) -> Reply:
    if not name:
        return refused("pick an image from the list")
    session.open_image(session.workspace, name)
    return Reply(f"Opened {name}.")


@refusals_as_replies
def step_image(session: SessionState, offset: int) -> Reply:
    """Next (+1) / previous (-1) image of the folder, wrapping around."""
    names = session.workspace.list_images()
    if not names:
        return refused("this folder has no images")
    index = names.index(session.image_name) if session.image_name in names else -offset  # none open: the first
    return open_image(session, names[(index + offset) % len(names)])


@refusals_as_replies
def next_to_review(session: SessionState) -> Reply:
    """The next image after the current one (wrapping) that is not done yet: one key to walk a folder's backlog."""
    states = session.workspace.states()
    if not states:
        return refused("this folder has no images")
    names = [name for name, _, _ in states]
    start = names.index(session.image_name) + 1 if session.image_name in names else 0
    for name, state, _ in states[start:] + states[:start]:
        if state != "done" and name != session.image_name:
            return open_image(session, name)
    return refused(f"all {len(names)} images are done" if all(s == "done" for _, s, _ in states)
                   else "no other image is waiting for review")


@refusals_as_replies
def open_example(session: SessionState, examples_dir: Path, examples: Sequence[tuple[str, str]], index: int) -> Reply:
    if not 0 <= index < len(examples):
        return refused("no such example")
    session.folder = str(examples_dir)
    return open_image(session, Path(examples[index][0]).name)


@refusals_as_replies
def save_ontology(session: SessionState, prompts: str, task: str) -> Reply:
    """Keep the prompt list for this folder; value = the list as typed back into the box."""
    items = parse_prompts(prompts, task)
    session.workspace.save_ontology(items)
    joined = "; ".join(items) if task == "referring" else ", ".join(items)
    return Reply(f"Saved {len(items)} prompts for this folder.", value=joined)


def remembered(session: SessionState, root: Path, prompts: str, task: str) -> dict:
    """What the browser keeps (gr.BrowserState) so a reload resumes here: folder (relative to the workspace),
    image, selected mask, prompts and task."""
    folder = Path(session.folder).relative_to(root).as_posix() if session.folder else None
    return {"folder": folder, "image": session.image_name, "selected": session.selected, "prompts": prompts or "",
            "task": task}


@refusals_as_replies
def resume(session: SessionState, root: Path, saved: Optional[dict]) -> Reply:
    """Reopen what `remembered` stored: the folder, its image and the selected mask (the review position)."""
    if not isinstance(saved, dict) or saved.get("folder") is None:
        return Reply()
    session.folder = str(Workspace(folder_path(root, str(saved["folder"]))).folder)
    name = saved.get("image")
    if name:
        session.open_image(session.workspace, str(name))
        if session.ann is not None and session.ann.region(saved.get("selected")) is not None:
            session.selected = int(saved["selected"])
    return Reply(f"Resumed {name or saved['folder']}.")
