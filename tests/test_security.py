"""Security (issue 7): checkpoints are never unpickled, user-given names never leave the workspace, the app
binds 127.0.0.1 by default, and the code base has no eval / exec / shell / pickle loading.
"""
from __future__ import annotations

import ast
import io
import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from app.annotations import ImageAnnotations, Region
from app.export import export_folder, region_file_name
from app.actions.navigate import open_folder
from app.model_host import ModelHost
from app.session import SessionState
from app.workspace import Workspace
from qmn import load_model
from qmn.checkpoint import CheckpointError, write_checkpoint
from qmn.io_utils import safe_join

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------ checkpoints
class Booby:
    """Unpickling this creates `marker`: proof that a loader ran pickle code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def valid_checkpoint(path: Path) -> Path:
    write_checkpoint(path, {"weight": torch.arange(64, dtype=torch.float32)}, {"config": {}, "record": {}})
    return path


def pickle_file(tmp_path: Path, marker: Path) -> Path:
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps({"weight": Booby(marker)}))
    return path


def renamed_pickle(tmp_path: Path, marker: Path) -> Path:
    path = tmp_path / "model.safetensors"
    path.write_bytes(pickle.dumps({"weight": Booby(marker)}))
    path.with_suffix(".json").write_text(json.dumps({"config": {}}))
    return path


def torch_save_zip(tmp_path: Path, marker: Path) -> Path:
    path = tmp_path / "model.safetensors"
    torch.save({"weight": torch.zeros(3), "payload": Booby(marker)}, path)
    path.with_suffix(".json").write_text(json.dumps({"config": {}}))
    return path


def truncated_safetensors(tmp_path: Path, marker: Path) -> Path:
    path = valid_checkpoint(tmp_path / "model.safetensors")
    path.write_bytes(path.read_bytes()[:100])
    return path


def safetensors_without_json(tmp_path: Path, marker: Path) -> Path:
    path = valid_checkpoint(tmp_path / "model.safetensors")
    path.with_suffix(".json").unlink()
    return path


def safetensors_with_broken_json(tmp_path: Path, marker: Path) -> Path:
    path = valid_checkpoint(tmp_path / "model.safetensors")
    path.with_suffix(".json").write_text('{"config": ')
    return path


CHECKPOINTS = {
    "pickle": (pickle_file, r"pickle|safetensors"),
    "renamed-pickle": (renamed_pickle, r"a pickle file; only \.safetensors"),
    "torch-save-zip": (torch_save_zip, r"zip/torch\.save archive"),
    "truncated-safetensors": (truncated_safetensors, r"safetensors"),
    "safetensors-without-json": (safetensors_without_json, r"missing its JSON config model\.json"),
    "safetensors-broken-json": (safetensors_with_broken_json, r"model\.json: malformed JSON"),
}


@pytest.mark.parametrize("loader", ["qmn.load_model", "app model host"])
@pytest.mark.parametrize("kind", list(CHECKPOINTS))
def test_checkpoints_other_than_safetensors_json_are_refused_unread(tmp_path: Path, kind: str, loader: str):
    make, pattern = CHECKPOINTS[kind]
    marker = tmp_path / "pickle_code_ran"
    path = make(tmp_path, marker)
    load = load_model if loader == "qmn.load_model" else ModelHost(model=torch.nn.Linear(1, 1)).load
    error = CheckpointError if loader == "qmn.load_model" else ValueError
    with pytest.raises(error, match=pattern) as raised:
        load(path)
    assert "\n" not in str(raised.value)
    assert not marker.exists(), "a checkpoint loader executed pickle code"


# ------------------------------------------------------------------------------------------------ paths
@pytest.fixture()
def workspace_root(tmp_path: Path) -> Path:
    """tmp/outside/secret.png beside tmp/ws/, with ws/link_out -> outside/ and ws/link_img.png -> the secret."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(png_bytes())
    root = tmp_path / "ws"
    (root / "sub").mkdir(parents=True)
    (root / "link_out").symlink_to(outside, target_is_directory=True)
    (root / "link_img.png").symlink_to(outside / "secret.png")
    return root


def png_bytes(value: int = 90) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((8, 10, 3), value, np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


ESCAPES = ["../secret.png", "sub/../../x", "../", "..", "/etc/passwd", "//etc/passwd", "link_out/secret.png",
           "link_out", "link_img.png", "sub/\x00.png", "\x00", ""]


@pytest.mark.parametrize("relative", ESCAPES)
def test_safe_join_refuses_every_escape(workspace_root: Path, relative: str):
    with pytest.raises(ValueError, match="unsafe path") as raised:
        safe_join(workspace_root, relative)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize("relative", ["sub/a.png", "sub/../a.png", "./a.png", "new/deeper/b.json", "."])
def test_safe_join_keeps_paths_inside(workspace_root: Path, relative: str):
    joined = safe_join(workspace_root, relative)
    assert joined == workspace_root.resolve() or workspace_root.resolve() in joined.parents


UPLOAD_NAMES = ["../../evil.png", "/tmp/evil.png", "..\\..\\evil.png", "sub/../../evil.png", "ev\x00il.png",
                ".hidden.png", "..", "", "link_img.png", "link_out/evil.png", "a" * 400 + ".png", "évil name!.png"]


@pytest.mark.parametrize("name", UPLOAD_NAMES)
def test_upload_names_stay_in_the_workspace(workspace_root: Path, name: str):
    secret = workspace_root.parent / "outside" / "secret.png"
    before = {p for p in workspace_root.parent.rglob("*")}
    workspace = Workspace(workspace_root)
    try:
        stored = workspace.add_image_bytes(name, png_bytes(200))
    except ValueError as error:  # refusing is fine; writing outside is not
        assert "\n" not in str(error)
    else:
        path = workspace_root / stored
        assert path.is_file() and not path.is_symlink() and path.parent == workspace_root
        assert "/" not in stored and "\\" not in stored and "\x00" not in stored and not stored.startswith(".")
        assert workspace.read_image(stored)[0, 0, 0] == 200
    new = {p for p in workspace_root.parent.rglob("*")} - before
    assert all(p.parent == workspace_root for p in new), new
    assert secret.read_bytes() == png_bytes(), "the file behind a symlink was overwritten"


@pytest.mark.parametrize("folder", ["../", "..", "/etc", "sub/../..", "link_out", "link_out/", "s\x00ub",
                                    str(Path("/tmp").resolve())])
def test_open_folder_refuses_folders_outside_the_workspace(workspace_root: Path, folder: str):
    session = SessionState()
    reply = open_folder(session, workspace_root, folder)
    assert not reply.ok and "unsafe path" in reply.message and session.folder is None


def test_open_folder_inside_the_workspace_works(workspace_root: Path):
    (workspace_root / "sub" / "a.png").write_bytes(png_bytes())
    session = SessionState()
    assert open_folder(session, workspace_root, "sub").ok
    assert session.folder == str((workspace_root / "sub").resolve()) and session.image_name == "a.png"


def test_symlinked_image_in_the_folder_is_not_read(workspace_root: Path):
    """A link inside the workspace pointing outside is listed (it looks like an image) but never read."""
    with pytest.raises(ValueError, match="leaves the workspace"):
        Workspace(workspace_root).read_image("link_img.png")


@pytest.mark.parametrize("label", ["../../../evil", "/etc/evil", "..", "a/../../b", "ev\x00il", "..\\..\\evil"])
def test_export_names_stay_inside_the_export(workspace_root: Path, label: str):
    assert "/" not in region_file_name(3, label) and "\x00" not in region_file_name(3, label)
    workspace = Workspace(workspace_root / "sub")
    (workspace.folder / "a.png").write_bytes(png_bytes())
    mask = np.zeros((8, 10), bool)
    mask[2:6, 3:7] = True
    workspace.save(ImageAnnotations("a.png", 8, 10, regions=[Region(1, label, mask, review="accepted")], done=True))
    before = {p for p in workspace_root.parent.rglob("*")}
    result = export_folder(workspace)
    export_dir = result.zip_path.with_suffix("")
    new = {p for p in workspace_root.parent.rglob("*")} - before
    allowed = {result.zip_path, export_dir, export_dir.parent}  # the zip, its folder, and exports/ itself
    assert all(p in allowed or export_dir in p.parents for p in new), new
    with zipfile.ZipFile(result.zip_path) as archive:
        for member in archive.namelist():
            assert not member.startswith("/") and ".." not in Path(member).parts and "\x00" not in member


# ------------------------------------------------------------------------------------------------ network binding
def test_app_binds_localhost_by_default():
    import inspect

    import launch
    from app.ui import start_in_background

    args = launch.parse_args([])
    assert args.host == "127.0.0.1" and args.share is False
    assert inspect.signature(start_in_background).parameters["host"].default == "127.0.0.1"


# ------------------------------------------------------------------------------------------------ dangerous calls
FORBIDDEN_NAMES = {"eval", "exec", "compile", "__import__"}
FORBIDDEN_ATTRIBUTES = {("os", "system"), ("os", "popen"), ("pickle", "load"), ("pickle", "loads"), ("torch", "load"),
                        ("marshal", "loads"), ("yaml", "load"), ("yaml", "unsafe_load"), ("dill", "load"),
                        ("shelve", "open"), ("subprocess", "getoutput"), ("subprocess", "getstatusoutput")}


def dangerous_calls(source: str) -> list[str]:
    """Calls to eval/exec, os.system, pickle/torch/yaml loading, or anything with shell=True, in one file.

    An AST walk rather than a text grep: `model.eval()`, docstrings and comments do not count."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        function = node.func
        if isinstance(function, ast.Name) and function.id in FORBIDDEN_NAMES:
            found.append(f"line {node.lineno}: {function.id}(")
        if isinstance(function, ast.Attribute) and isinstance(function.value, ast.Name):
            if (function.value.id, function.attr) in FORBIDDEN_ATTRIBUTES:
                found.append(f"line {node.lineno}: {function.value.id}.{function.attr}(")
        if isinstance(function, ast.Attribute) and function.attr == "load" and any(
                k.arg == "allow_pickle" and getattr(k.value, "value", False) is True for k in node.keywords):
            found.append(f"line {node.lineno}: load(allow_pickle=True)")
        if any(k.arg == "shell" and getattr(k.value, "value", True) is not False for k in node.keywords):
            found.append(f"line {node.lineno}: shell=True")
    return found


def test_the_checker_catches_what_it_looks_for():
    bad = "import os, pickle, torch, subprocess\neval('1')\nexec('x=1')\nos.system('ls')\npickle.load(f)\n" \
          "torch.load(p)\nsubprocess.run('ls', shell=True)\nnp.load(p, allow_pickle=True)\n"
    assert len(dangerous_calls(bad)) == 7
    assert dangerous_calls("model.eval()\nx = 'eval(1) torch.load'\nsubprocess.run(['ls'], shell=False)\n") == []


def test_code_base_has_no_eval_exec_shell_or_pickle_loading():
    sources = [p for p in REPO.rglob("*.py")
               if not ({"tests", ".git", "venv", ".venv", "node_modules"} & set(p.relative_to(REPO).parts))]
    assert len(sources) > 20
    problems = {str(p.relative_to(REPO)): calls for p in sources if (calls := dangerous_calls(p.read_text()))}
    assert problems == {}
