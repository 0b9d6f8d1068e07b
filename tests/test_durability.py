"""Durability (issue 7): a process killed with SIGKILL in the middle of a write leaves the previous good file or
the new one, never a partial one, and no leftover that a reader would take for data.

A forked child (it inherits the imported modules, so no import cost) rewrites one large file in a loop through
the writer under test, each version self-describing; the test kills it at a seeded random moment and checks
what is on disk. The writes take nearly all of the child's time, so most kills land inside a write.
"""
from __future__ import annotations

import multiprocessing
import os
import random
import signal
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from app.annotations import ImageAnnotations, Region
from app.workspace import Workspace
from qmn.data.coco import read_coco_instances, write_coco_instances
from qmn.data.sample import Annotation, Sample
from qmn.io_utils import atomic_path, atomic_write_bytes

SEEDS = [0, 1, 2, 3]
PAYLOAD_BYTES = 8 << 20


def random_masks(count: int, side: int, seed: int = 0) -> list[np.ndarray]:
    """Noisy (side, side) bool masks: their RLE is long, so each file is megabytes."""
    rng = np.random.default_rng(seed)
    return [rng.random((side, side)) < 0.5 for _ in range(count)]


# ------------------------------------------------------------------------------------------------ writers and checks
def write_bytes(target: Path, version: int) -> None:
    atomic_write_bytes(target, f"version {version:08d}\n".encode() + bytes([version % 251]) * PAYLOAD_BYTES)


def write_in_chunks(target: Path, version: int) -> None:
    """Like a zip export or a safetensors save: many writes into one atomic_path, so a kill can land between them."""
    with atomic_path(target) as tmp, open(tmp, "wb") as f:
        f.write(f"version {version:08d}\n".encode())
        for _ in range(PAYLOAD_BYTES >> 16):
            f.write(bytes([version % 251]) * (1 << 16))


def check_bytes(target: Path) -> int:
    data = target.read_bytes()
    header, payload = data.split(b"\n", 1)
    version = int(header.split()[1])
    assert payload == bytes([version % 251]) * PAYLOAD_BYTES, "payload torn"
    return version


COCO_MASKS = random_masks(6, 256)


def write_coco(target: Path, version: int) -> None:
    samples = [
        Sample(np.zeros((256, 256, 3), np.uint8), [Annotation.from_mask("thing", COCO_MASKS[i])], "instance",
               f"v{version:06d}_{i}.png", ["thing"])
        for i in range(len(COCO_MASKS))
    ]
    write_coco_instances(samples, target)


def check_coco(target: Path) -> int:
    table = read_coco_instances(target, target.parent)  # validates every field and RLE
    versions = {name.split("_")[0] for name in table.image_ids}
    assert len(table.image_ids) == len(COCO_MASKS) and len(versions) == 1, table.image_ids
    for index, mask in enumerate(COCO_MASKS):
        assert (table.annotations(index, 256, 256)[0].mask == mask).all()
    return int(versions.pop()[1:])


AUTOSAVE_MASKS = random_masks(8, 256, seed=1)


def write_autosave(target: Path, version: int) -> None:
    """The app's autosave of image `a.png` in the workspace that holds `target`'s .qmn folder."""
    workspace = Workspace(target.parents[2])
    regions = [Region(i + 1, f"thing{i}", mask, score=0.5) for i, mask in enumerate(AUTOSAVE_MASKS)]
    workspace.save(ImageAnnotations("a.png", 256, 256, prompts=[f"v{version}"], regions=regions, done=True))


def check_autosave(target: Path) -> int:
    annotations = Workspace(target.parents[2]).load("a.png")
    assert len(annotations.regions) == len(AUTOSAVE_MASKS)
    assert all((r.mask == m).all() for r, m in zip(annotations.regions, AUTOSAVE_MASKS))
    return int(annotations.prompts[0][1:])


WRITERS: dict[str, tuple[Callable[[Path, int], None], Callable[[Path], int], str]] = {
    "atomic_write_bytes": (write_bytes, check_bytes, "data.bin"),
    "atomic_path_chunked": (write_in_chunks, check_bytes, "export.zip"),
    "coco_writer": (write_coco, check_coco, "instances.json"),
    "app_autosave": (write_autosave, check_autosave, ".qmn/annotations/a.png.json"),
}


def rewrite_forever(writer: str, target: Path, ready) -> None:
    """The child: version 0, then 1, 2, ... until killed; `ready` is set once version 0 is on disk."""
    write = WRITERS[writer][0]
    version = 0
    while True:
        write(target, version)
        if version == 0:
            ready.set()
        version += 1


# ------------------------------------------------------------------------------------------------ the test
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("writer", list(WRITERS))
def test_kill_during_write_leaves_a_whole_file(tmp_path: Path, writer: str, seed: int):
    _, check, relative = WRITERS[writer]
    target = tmp_path / relative
    context = multiprocessing.get_context("fork")
    ready = context.Event()
    child = context.Process(target=rewrite_forever, args=(writer, target, ready), daemon=True)
    child.start()
    try:
        assert ready.wait(120), "the writer never finished its first version"
        child.join(random.Random(seed).uniform(0.0, 0.6))  # the random moment (join = sleep, unless it died)
        assert child.is_alive(), f"the writer died on its own (exit code {child.exitcode})"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.join()
    assert child.exitcode == -signal.SIGKILL
    assert check(target) >= 0  # a whole, parseable version: the previous good one or the new one
    leftovers = [p for p in target.parent.iterdir() if p != target]
    for path in leftovers:  # at most the killed write's temp file, which no reader picks up
        assert path.name.startswith(f".{target.name}.") and path.name.endswith(".tmp"), path.name
    assert len(leftovers) <= 1
