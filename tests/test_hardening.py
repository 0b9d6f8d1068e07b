"""The bad-input table (issue 7): every hostile or odd input, at every entry point a user reaches.

One parametrized test walks the table. Each row names an entry point (the image reader, the model's
predict, the dataset loader, the app's upload), builds the input, and says what must happen: either
a one-line ValueError-family message matching a pattern, or a handled result that a check accepts.
Any other exception type fails the row.
"""
from __future__ import annotations

import copy
import io
import json
import re
import struct
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Union

import numpy as np
import pytest
import torch
from PIL import Image

from app.workspace import Workspace
from qmn.data import load_dataset, read_image

@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """One intra-op thread: on a shared 2-core machine a second spinning thread makes predict ~50x slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


RED = (204, 0, 51)  # in the web palette, so palette images keep it exactly


# ------------------------------------------------------------------------------------------------ inputs
def encode(array: np.ndarray, mode: str | None = None, fmt: str = "PNG", **save_args) -> bytes:
    image = Image.fromarray(array)
    if mode is not None:
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **save_args)
    return buffer.getvalue()


def marked_rgb(height: int = 20, width: int = 30) -> np.ndarray:
    """Black (H, W, 3) with a red block in the top-left corner, so orientation is visible."""
    image = np.zeros((height, width, 3), np.uint8)
    image[:6, :10] = RED
    return image


def noise_png(side: int = 64) -> bytes:
    return encode(np.random.default_rng(0).integers(0, 255, (side, side, 3), np.uint8))


def exif_rotated_jpeg() -> bytes:
    """The marked image stored as is, with EXIF orientation 6 (display rotated 90 degrees clockwise)."""
    image = Image.fromarray(marked_rgb())
    exif = image.getexif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=95, exif=exif.tobytes())
    return buffer.getvalue()


def sixteen_bit_png() -> bytes:
    """A 16-bit gray PNG with the values 0, 32768 and 65535 in its first row."""
    values = np.zeros((4, 3), np.uint16)
    values[0] = (0, 32768, 65535)
    return encode(values)


def palette_with_transparency() -> bytes:
    image = Image.fromarray(marked_rgb()).convert("P")
    buffer = io.BytesIO()
    image.save(buffer, "PNG", transparency=0)
    return buffer.getvalue()


def bomb_png(side: int = 100_000) -> bytes:
    """A valid PNG header claiming side x side pixels (default 10 gigapixels) over a few bytes of data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)  # 8-bit gray
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def photo(height: int, width: int) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 255, (height, width, 3), np.uint8)


def coco(mutate: Callable[[dict], Any] = lambda d: None) -> dict:
    """A valid one-image, one-polygon COCO file for the 20x30 image `a.png`, changed by `mutate`."""
    data = {
        "images": [{"id": 1, "file_name": "a.png", "height": 20, "width": 30}],
        "categories": [{"id": 1, "name": "thing"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5], "iscrowd": 0,
                         "segmentation": [[1, 1, 6, 1, 6, 6, 1, 6]]}],
    }
    mutate(data)
    return data


def annotation(**fields) -> Callable[[dict], None]:
    return lambda d: d["annotations"][0].update(fields)


def segmentation(value) -> Callable[[dict], None]:
    return annotation(segmentation=value)


def image_entry(**fields) -> Callable[[dict], None]:
    return lambda d: d["images"][0].update(fields)


def drop(table: str, key: str) -> Callable[[dict], None]:
    return lambda d: d[table][0].pop(key) if table != "top" else d.pop(key)


@dataclass(frozen=True)
class LabeledFolder:
    """What `load_dataset` is given: the annotations file's content and the bytes of images/a.png."""

    annotations: Union[dict, list, str]
    image: Union[bytes, None] = None  # None: a valid 20x30 PNG


# ------------------------------------------------------------------------------------------------ entry points
def via_read_image(data: bytes, tmp_path: Path, request) -> np.ndarray:
    path = tmp_path / "input.img"
    path.write_bytes(data)
    return read_image(path)


def via_upload(data: bytes, tmp_path: Path, request) -> np.ndarray:
    """The app's upload: the file is stored only when readable, then read back as the app shows it."""
    workspace = Workspace(tmp_path)
    try:
        name = workspace.add_image_bytes("upload.png", data)
    except ValueError:
        assert list(tmp_path.iterdir()) == [], "a refused upload must leave nothing behind"
        raise
    return workspace.read_image(name)


def via_predict(arguments: tuple, tmp_path: Path, request):
    """Predictor.predict(image, prompts, task) on the micro model."""
    from qmn import Predictor

    image, prompts, task = arguments
    return Predictor(request.getfixturevalue("micro_model")).predict(image, prompts, task, threshold=0.0)


def via_load_dataset(folder: LabeledFolder, tmp_path: Path, request) -> list:
    """load_dataset on images/a.png + annotations.json; every Sample is decoded (masks too)."""
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(encode(marked_rgb()) if folder.image is None else folder.image)
    text = folder.annotations if isinstance(folder.annotations, str) else json.dumps(folder.annotations)
    (tmp_path / "annotations.json").write_text(text)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # skipped images are announced by a warning; `skipped` is checked instead
        dataset = load_dataset(tmp_path)
    return [dataset, [dataset[i] for i in range(len(dataset))]]


ENTRY_POINTS = {"read_image": via_read_image, "upload": via_upload, "predict": via_predict,
                "load_dataset": via_load_dataset}


# ------------------------------------------------------------------------------------------------ checks of handled results
def is_rgb(height: int, width: int, pixel: tuple[int, int] | None = None, colour=None, tolerance: int = 40):
    def check(image: np.ndarray) -> None:
        assert image.dtype == np.uint8 and image.shape == (height, width, 3)
        if pixel is not None:
            assert np.abs(image[pixel].astype(int) - colour).max() <= tolerance, image[pixel]
    return check


def is_upright_exif_image(image: np.ndarray) -> None:
    """Orientation 6 turns the stored 20x30 into 30x20 and moves the top-left red block to the top-right."""
    assert image.shape == (30, 20, 3)
    assert np.abs(image[2, -3].astype(int) - RED).max() <= 40  # red block now top-right
    assert image[2, 2].max() <= 40 and image[-3, -3].max() <= 40


def is_scaled_from_bit_depth(image: np.ndarray) -> None:
    assert image.shape == (4, 3, 3) and image.dtype == np.uint8
    assert image[0, :, 0].tolist() == [0, 128, 255] and (image[0, :, 0] == image[0, :, 2]).all()


def is_gray_of_marked(image: np.ndarray) -> None:
    assert image.shape == (20, 30, 3)
    assert (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all()
    assert image[0, 0, 0] > 40 and image[-1, -1, 0] == 0


def is_prediction_at(height: int, width: int, minimum_segments: int = 1):
    """Prediction for the full-size image: every mask (H, W) bool, boxes inside the image."""
    def check(prediction) -> None:
        assert tuple(prediction.image_size) == (height, width)
        assert len(prediction.segments) >= minimum_segments
        for segment in prediction.segments:
            if segment.mask is not None:
                assert segment.mask.shape == (height, width) and segment.mask.dtype == bool
            x1, y1, x2, y2 = segment.box
            assert -1 <= x1 <= x2 <= width + 1 and -1 <= y1 <= y2 <= height + 1
    return check


def is_prompted_with(expected: Callable[[list[str]], bool]):
    def check(prediction) -> None:
        is_prediction_at(24, 36)(prediction)
        assert expected(list(prediction.prompts)), prediction.prompts
    return check


def loads_one_sample(check_mask: Callable[[np.ndarray], None] = lambda m: None):
    def check(result) -> None:
        dataset, samples = result
        assert len(samples) == 1 and dataset.skipped == []
        masks = [a.mask for a in samples[0].annotations]
        assert len(masks) == 1 and masks[0].shape == (20, 30)
        check_mask(masks[0])
    return check


def is_even_odd_bowtie(mask: np.ndarray) -> None:
    """The self-intersecting polygon (1,1)->(10,10)->(10,1)->(1,10) fills two mirrored triangles."""
    ys, xs = np.nonzero(mask)
    assert mask.any() and xs.min() >= 1 and xs.max() < 10 and ys.min() >= 1 and ys.max() < 10
    inner = mask[1:10, 1:10]
    assert (inner == inner[:, ::-1]).all()  # left and right triangles mirror each other
    assert mask[5, 1] and not mask[1, 5]  # the left wing is in; the top edge's middle is not


def skips_the_image(result) -> None:
    dataset, samples = result
    assert samples == [] and dataset.skipped == ["a.png"]


# ------------------------------------------------------------------------------------------------ the table
@dataclass(frozen=True)
class Case:
    id: str
    entry: str
    make: Callable[[], Any]
    expect: Union[str, Callable[[Any], None]]  # regex of the one-line ValueError, or a check of the result


IMAGE_FILES = [  # (id, bytes, expected) for both the reader and the app's upload
    ("zero-byte", lambda: b"", r"not a recognised image format"),
    ("not-an-image", lambda: b"GIF89a" + b"\x00garbage" * 8, r"image"),
    ("corrupt-png-body", lambda: noise_png()[:40] + b"\xff" * 400, r"image"),
    ("truncated-png", lambda: noise_png()[: len(noise_png()) // 2], r"image"),
    ("truncated-jpeg", lambda: encode(photo(64, 64), fmt="JPEG")[:300], r"image"),
    ("decompression-bomb", bomb_png, r"too large to decode safely|over the limit"),
    ("over-pixel-limit", lambda: bomb_png(12_000), r"12000x12000 = 144000000 pixels, over the limit"),
    ("grayscale", lambda: encode(marked_rgb(), "L"), is_gray_of_marked),
    ("rgba", lambda: encode(marked_rgb(), "RGBA"), is_rgb(20, 30, (0, 0), RED, tolerance=0)),
    ("palette", lambda: encode(marked_rgb(), "P"), is_rgb(20, 30, (0, 0), RED, tolerance=0)),
    ("palette-transparent", palette_with_transparency, is_rgb(20, 30, (0, 0), RED, tolerance=0)),
    ("16-bit", sixteen_bit_png, is_scaled_from_bit_depth),
    ("cmyk-jpeg", lambda: encode(marked_rgb(), "CMYK", fmt="JPEG", quality=95), is_rgb(20, 30, (2, 2), RED)),
    ("exif-rotated", exif_rotated_jpeg, is_upright_exif_image),
]

PREDICT_INPUTS = [  # (id, (image, prompts, task), expected)
    ("larger-than-model", (photo(150, 260), "dog, sky", "instance"), is_prediction_at(150, 260)),  # model: 128 px
    ("thin-strip", (photo(1, 300), "dog", "instance"), is_prediction_at(1, 300)),
    ("grayscale-array", (photo(24, 36)[..., 0], "dog", "instance"), is_prediction_at(24, 36)),
    ("rgba-array", (np.dstack([photo(24, 36), np.zeros((24, 36), np.uint8)]), "dog", "instance"), is_prediction_at(24, 36)),
    ("16-bit-array", (photo(24, 36).astype(np.uint16) * 257, "dog", "instance"), is_prediction_at(24, 36)),
    ("empty-image", (np.zeros((0, 0, 3), np.uint8), "dog", "instance"), r"expected an image array"),
    ("five-channels", (np.zeros((8, 8, 5), np.uint8), "dog", "instance"), r"expected an image array"),
    ("empty-prompt", (photo(24, 36), "", "instance"), r"no prompt"),
    ("whitespace-prompt", (photo(24, 36), " \t\n ", "panoptic"), r"no prompt"),
    ("only-commas", (photo(24, 36), " , ,, ", "semantic"), r"no prompt"),
    ("empty-prompt-list", (photo(24, 36), ["", "  "], "referring"), r"no prompt"),
    ("empty-prompt-foreground", (photo(24, 36), "", "foreground"), is_prediction_at(24, 36)),
    ("10000-char-prompt", (photo(24, 36), "a" * 10_000, "instance"),
     is_prompted_with(lambda p: len(p) == 1 and 0 < len(p[0]) <= 10_000)),
    ("10000-char-phrase", (photo(24, 36), "the dog " * 1250, "referring"), is_prompted_with(lambda p: len(p) == 1)),
    ("non-ascii-prompts", (photo(24, 36), "狗, chat noir, Straße, 🐶", "instance"),
     is_prompted_with(lambda p: p == ["狗", "chat noir", "Straße", "🐶"])),
    ("non-ascii-phrase", (photo(24, 36), "la femme à l'écharpe bleue", "referring"),
     is_prompted_with(lambda p: p == ["la femme à l'écharpe bleue"])),
    ("unknown-task", (photo(24, 36), "dog", "depth"), r"unknown task 'depth'"),
]

COCO_FILES = [  # (id, LabeledFolder, expected)
    ("valid", LabeledFolder(coco()), loads_one_sample(lambda m: m.sum() == 25)),
    ("not-json", LabeledFolder("{oops"), r"annotations\.json: not valid JSON: .* line 1"),
    ("top-level-list", LabeledFolder([]), r"top level must be a JSON object"),
    ("images-not-a-list", LabeledFolder(coco(lambda d: d.update(images="x"))), r"field 'images' must be list"),
    ("height-as-string", LabeledFolder(coco(image_entry(height="20"))), r"images\[0\]: field 'height' must be int"),
    ("category-name-int", LabeledFolder(coco(lambda d: d["categories"][0].update(name=3))), r"field 'name' must be str"),
    ("image-id-float", LabeledFolder(coco(annotation(image_id=1.5))), r"field 'image_id' must be int or str"),
    ("bbox-string", LabeledFolder(coco(annotation(bbox="1,1,5,5"))), r"field 'bbox' must be list"),
    ("iscrowd-2", LabeledFolder(coco(annotation(iscrowd=2))), r"field 'iscrowd' must be 0/1"),
    ("missing-annotations", LabeledFolder(coco(drop("top", "annotations"))), r"missing field 'annotations'"),
    ("missing-file-name", LabeledFolder(coco(drop("images", "file_name"))), r"missing field 'file_name'"),
    ("missing-category-id", LabeledFolder(coco(drop("annotations", "category_id"))), r"missing field 'category_id'"),
    ("annotation-not-object", LabeledFolder(coco(lambda d: d["annotations"].append(7))), r"annotations\[1\].*JSON object"),
    ("dangling-image-id", LabeledFolder(coco(annotation(image_id=9))), r"'image_id' 9 is not in 'images'"),
    ("dangling-category-id", LabeledFolder(coco(annotation(category_id=9))), r"'category_id' 9 is not in 'categories'"),
    ("rle-bad-alphabet", LabeledFolder(coco(segmentation({"size": [20, 30], "counts": "!!\x7f"}))), r"invalid RLE"),
    ("rle-too-short", LabeledFolder(coco(segmentation({"size": [20, 30], "counts": [5, 5]}))),
     r"invalid RLE: 'counts' cover 10 pixels"),
    ("rle-overflowing", LabeledFolder(coco(segmentation({"size": [20, 30], "counts": [0, 10**12]}))), r"invalid RLE"),
    ("rle-negative-run", LabeledFolder(coco(segmentation({"size": [20, 30], "counts": [700, -100]}))),
     r"invalid RLE: negative run"),
    ("rle-wrong-size", LabeledFolder(coco(segmentation({"size": [2, 3], "counts": [6]}))), r"differs from the image"),
    ("rle-no-size", LabeledFolder(coco(segmentation({"counts": [600]}))), r"invalid RLE"),
    ("polygon-odd", LabeledFolder(coco(segmentation([[1, 1, 10]]))), r"odd number of coordinates"),
    ("polygon-strings", LabeledFolder(coco(segmentation([["1", 1, 6, 1, 6, 6]]))), r"invalid polygon"),
    ("polygon-not-a-list", LabeledFolder(coco(segmentation(5))), r"invalid polygons"),
    ("polygon-far-outside", LabeledFolder(coco(segmentation([[1e9, 1, -1e9, 1, 2, 1e9]]))), r"far outside"),
    ("polygon-self-intersecting", LabeledFolder(coco(segmentation([[1, 1, 10, 10, 10, 1, 1, 10]]))),
     loads_one_sample(is_even_odd_bowtie)),
    ("image-zero-byte", LabeledFolder(coco(), image=b""), skips_the_image),
    ("image-size-mismatch", LabeledFolder(coco(image_entry(height=21))), skips_the_image),
    ("image-missing", LabeledFolder(coco(image_entry(file_name="nope.png"))), lambda r: r[0].skipped == ["nope.png"]),
    ("image-name-escapes", LabeledFolder(coco(image_entry(file_name="../outside.png"))),
     lambda r: r[0].skipped == ["../outside.png"]),
    ("image-decodes-badly", LabeledFolder(coco(), image=encode(photo(20, 30))[:80] + b"\0" * 200), r"image"),
]

CASES = [
    *(Case(name, entry, make, expect) for entry in ("read_image", "upload") for name, make, expect in IMAGE_FILES),
    *(Case(name, "predict", lambda value=value: value, expect) for name, value, expect in PREDICT_INPUTS),
    *(Case(name, "load_dataset", lambda value=value: copy.deepcopy(value), expect) for name, value, expect in COCO_FILES),
]


@pytest.mark.parametrize("case", CASES, ids=[f"{case.entry}:{case.id}" for case in CASES])
def test_bad_input_gives_a_one_line_error_or_a_handled_result(case: Case, tmp_path: Path, request):
    run = ENTRY_POINTS[case.entry]
    if callable(case.expect):
        case.expect(run(case.make(), tmp_path, request))
        return
    with pytest.raises(ValueError) as raised:  # any other exception type fails the row
        run(case.make(), tmp_path, request)
    message = str(raised.value)
    assert message.strip() and "\n" not in message, f"not a one-line message: {message!r}"
    assert re.search(case.expect, message), message
    assert "Traceback" not in message and "object at 0x" not in message
