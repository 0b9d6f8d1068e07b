"""qmn.data readers/writers: round trips on small crafted folders, the auto-detector, the convert
CLI, clear errors for malformed input, robust image reading, and the real sets in ../shared/data."""
from __future__ import annotations

import io
import json
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from qmn.data import (
    Annotation,
    ImageError,
    Sample,
    decode_rle,
    encode_rle,
    load_dataset,
    mask_to_polygons,
    polygons_to_mask,
    read_image,
    write_coco_instances,
    write_coco_panoptic,
    write_mask_pngs,
    write_semantic_folder,
    write_yolo_seg,
)
from qmn.data.convert import main as convert_main
from qmn.data.folder import as_task
from qmn.data.mask_codec import mask_iou
from qmn.structures import Prediction, Segment

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
H, W = 24, 32


# ------------------------------------------------------------------ fixtures
def _masks() -> dict[str, np.ndarray]:
    """Three disjoint shapes: a ring with an island in its hole, a bar, a single pixel."""
    ring = np.zeros((H, W), bool)
    ring[2:16, 2:16] = True
    ring[5:13, 5:13] = False
    ring[8:10, 8:10] = True
    bar = np.zeros((H, W), bool)
    bar[18:22, 3:29] = True
    dot = np.zeros((H, W), bool)
    dot[4, 25] = True
    return {"ring": ring, "bar": bar, "dot": dot}


def _save_image(path: Path, color=(120, 60, 30), size=(W, H)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def _samples(names=("a.png", "b.png")) -> list[Sample]:
    masks = _masks()
    samples = []
    for k, name in enumerate(names):
        image = np.full((H, W, 3), 40 * k, np.uint8)
        annotations = [Annotation.from_mask(text, mask) for text, mask in masks.items()]
        samples.append(Sample(image, annotations, "instance", name, ["ring", "bar", "dot", "unused"]))
    return samples


def _write_images(root: Path, samples: list[Sample]) -> None:
    for sample in samples:
        (root / "images").mkdir(parents=True, exist_ok=True)
        Image.fromarray(sample.image).save(root / "images" / sample.image_id)


def _coco_folder(root: Path, data: dict) -> Path:
    _save_image(root / "images" / "a.png")
    (root / "annotations.json").write_text(json.dumps(data))
    return root


def _coco_table() -> dict:
    ring = _masks()["ring"]
    rle = encode_rle(ring)
    column_major = ring.T.reshape(-1).astype(int)  # COCO runs go down columns; ring[0, 0] is 0
    runs = np.diff(np.r_[0, np.flatnonzero(np.diff(column_major)) + 1, column_major.size]).tolist()
    return {
        "images": [{"id": 7, "file_name": "a.png", "height": H, "width": W}],
        "categories": [{"id": 3, "name": "ring"}, {"id": 9, "name": "box"}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 3, "segmentation": rle, "iscrowd": 0,
             "sentences": [{"sent": "the ring on the left"}, {"sent": "a hollow square"}]},
            {"id": 2, "image_id": 7, "category_id": 3, "segmentation": {"size": [H, W], "counts": runs},
             "iscrowd": 1, "captions": ["the same ring, uncompressed"]},
            {"id": 3, "image_id": 7, "category_id": 9, "segmentation": [[20, 2, 30, 2, 30, 10, 20, 10]]},
            {"id": 4, "image_id": 7, "category_id": 9, "bbox": [1, 2, 10, 5]},
        ],
    }


# ------------------------------------------------------------------ mask codecs
def test_rle_round_trip_is_exact_for_edge_cases():
    masks = [*_masks().values(), np.zeros((H, W), bool), np.ones((H, W), bool)]
    for mask in masks:
        rle = encode_rle(mask)
        assert isinstance(rle["counts"], str) and rle["size"] == [H, W]
        assert np.array_equal(decode_rle(json.loads(json.dumps(rle))), mask)


def test_polygons_keep_holes_and_report_the_real_iou(tmp_path):
    ring = _masks()["ring"]
    polygons = mask_to_polygons(ring)
    assert len(polygons) == 2  # the ring (hole spliced in) and the island inside its hole
    assert np.array_equal(polygons_to_mask(polygons, H, W), ring)
    outer = [2, 2, 16, 2, 16, 16, 2, 16]
    hole = [5, 5, 13, 5, 13, 13, 5, 13]
    assert polygons_to_mask([outer, hole], H, W)[6, 6], "pycocotools unions polygons: a separate hole fills in"

    samples = _samples(["a.png"])
    report = write_coco_instances(samples, tmp_path / "annotations.json", polygons=True)
    _write_images(tmp_path, samples)
    assert all(isinstance(a["segmentation"], list) for a in json.loads((tmp_path / "annotations.json").read_text())["annotations"])
    back = load_dataset(tmp_path)[0]
    for written, read in zip(samples[0].annotations, back.annotations):
        assert report.polygon_iou[read.extra["id"]] == pytest.approx(mask_iou(written.mask, read.mask))
        assert np.array_equal(written.mask, read.mask)


# ------------------------------------------------------------------ COCO instances
def test_coco_reader_handles_rle_polygons_crowd_phrases_and_boxes(tmp_path):
    dataset = load_dataset(_coco_folder(tmp_path, _coco_table()))
    assert dataset.task == "referring" and dataset.vocabulary == ["ring", "box"]
    anns = load_dataset(tmp_path, task="instance")[0].annotations
    ring = _masks()["ring"]
    assert [a.text for a in anns] == ["ring", "ring", "box", "box"]
    assert np.array_equal(anns[0].mask, ring) and np.array_equal(anns[1].mask, ring)
    assert anns[1].iscrowd and not anns[0].iscrowd
    assert anns[0].extra["phrases"] == ["the ring on the left", "a hollow square"]
    assert anns[1].extra["phrases"] == ["the same ring, uncompressed"]
    assert anns[2].mask[2:10, 20:30].all() and anns[2].mask.sum() == 80
    assert anns[3].mask is None and anns[3].box.tolist() == [1, 2, 11, 7]
    referring = dataset[0].annotations
    assert [a.text for a in referring] == ["the ring on the left", "the same ring, uncompressed"]
    assert referring[0].extra["category"] == "ring"


def test_coco_writer_round_trip_keeps_ids_phrases_and_boxes(tmp_path):
    sample = load_dataset(_coco_folder(tmp_path / "src", _coco_table()), task="instance")[0]
    report = write_coco_instances([sample], tmp_path / "out" / "annotations.json")
    _write_images(tmp_path / "out", [sample])
    data = json.loads((tmp_path / "out" / "annotations.json").read_text())
    assert [c["id"] for c in data["categories"]] == [3, 9] and report.annotations == 4
    assert "segmentation" not in data["annotations"][3]
    back = load_dataset(tmp_path / "out", task="instance")[0].annotations
    for a, b in zip(sample.annotations, back):
        assert a.text == b.text and a.iscrowd == b.iscrowd and a.extra.get("phrases") == b.extra.get("phrases")
        assert np.array_equal(a.box, b.box)
        assert (a.mask is None and b.mask is None) or np.array_equal(a.mask, b.mask)


def test_coco_writer_takes_synthetic_category_ids_and_rejects_conflicts(tmp_path):
    mask = _masks()["bar"]
    ann = Annotation.from_mask("bar", mask, extra={"category_id": 12, "phrases": ["the long bar"]})
    sample = Sample(np.zeros((H, W, 3), np.uint8), [ann], "referring", "s.png", ["bar"])
    write_coco_instances([sample], tmp_path / "a.json")
    data = json.loads((tmp_path / "a.json").read_text())
    assert data["categories"] == [{"id": 12, "name": "bar", "supercategory": "bar"}]
    assert data["annotations"][0]["sentences"] == [{"sent": "the long bar"}]
    bad = Annotation.from_mask("dot", mask, extra={"category_id": 12})
    with pytest.raises(ValueError, match="category_id 12"):
        write_coco_instances([sample, Sample(sample.image, [bad], "instance", "t.png")], tmp_path / "b.json")


def test_coco_writer_takes_predictions_as_cocoeval_results(tmp_path):
    samples = _samples(["a.png"])
    write_coco_instances(samples, tmp_path / "gt.json")
    masks = _masks()
    segments = [
        Segment("ring", 0.9, masks["ring"], np.zeros(4, np.float32), "conditional", id=1),
        Segment("bar", 0.4, masks["bar"], np.zeros(4, np.float32), "learnable", id=2),
    ]
    prediction = Prediction("instance", ["ring", "bar", "dot"], segments, image_size=(H, W))
    write_coco_instances([("a.png", prediction)], tmp_path / "pred.json", categories=["ring", "bar", "dot", "unused"])
    pred = json.loads((tmp_path / "pred.json").read_text())
    assert [a["score"] for a in pred["annotations"]] == [0.9, 0.4]
    gt = COCO(str(tmp_path / "gt.json"))
    results = gt.loadRes(pred["annotations"])
    assert len(results.getAnnIds()) == 2


# ------------------------------------------------------------------ panoptic, YOLO, semantic, masks
def test_panoptic_round_trip_with_thing_flags(tmp_path):
    samples = _samples()
    report = write_coco_panoptic(samples, tmp_path / "panoptic.json", thing_classes=["ring", "dot"])
    _write_images(tmp_path, samples)
    assert (tmp_path / "panoptic" / "a.png").is_file() and report.annotations == 6
    dataset = load_dataset(tmp_path)
    assert dataset.format == "coco-panoptic" and dataset.task == "panoptic"
    assert sorted(dataset.thing_classes) == ["dot", "ring"]
    categories = json.loads((tmp_path / "panoptic.json").read_text())["categories"]
    assert {c["name"]: c["isthing"] for c in categories} == {"ring": 1, "bar": 0, "dot": 1, "unused": 0}
    for written, read in zip(samples[1].annotations, dataset[1].annotations):
        assert written.text == read.text and np.array_equal(written.mask, read.mask)


def test_yolo_round_trip_and_box_lines(tmp_path):
    samples = _samples()
    samples[1].annotations.append(Annotation("dot", np.array([4, 6, 10, 12], np.float32), None))
    report = write_yolo_seg(samples, tmp_path)
    _write_images(tmp_path, samples)
    assert (tmp_path / "classes.txt").read_text().splitlines() == ["ring", "bar", "dot", "unused"]
    assert report.min_polygon_iou == 1.0 and len(report.polygon_iou) == 6
    dataset = load_dataset(tmp_path)
    assert dataset.format == "yolo-seg" and dataset.task == "instance"
    back = dataset[1].annotations
    for written, read in zip(samples[1].annotations[:3], back):
        assert written.text == read.text and np.array_equal(written.mask, read.mask)
    assert back[3].mask is None and np.allclose(back[3].box, [4, 6, 10, 12], atol=1e-4)


def test_semantic_folder_null_ignore_and_round_trip(tmp_path):
    _save_image(tmp_path / "images" / "x.jpg")
    label = np.zeros((H, W), np.uint8)
    label[:5] = 2
    label[5:10] = 255
    label[10:12] = 1
    (tmp_path / "labels").mkdir()
    Image.fromarray(label).save(tmp_path / "labels" / "x.png")
    (tmp_path / "classes.txt").write_text("0\tnull\n1\tsky\n2\troad\n")
    dataset = load_dataset(tmp_path)
    assert dataset.format == "semantic" and dataset.vocabulary == ["sky", "road"]
    anns = dataset[0].annotations
    assert [(a.text, int(a.mask.sum())) for a in anns] == [("sky", 2 * W), ("road", 5 * W)]

    write_semantic_folder(dataset, tmp_path / "out")
    _save_image(tmp_path / "out" / "images" / "x.jpg")
    back = load_dataset(tmp_path / "out")[0].annotations
    assert [(a.text, int(a.mask.sum())) for a in back] == [("sky", 2 * W), ("road", 5 * W)]

    label[0, 0] = 7
    Image.fromarray(label).save(tmp_path / "labels" / "x.png")
    with pytest.raises(ValueError, match=r"x\.png.*\[7\]"):
        load_dataset(tmp_path)[0]


def test_semantic_classes_one_name_per_line(tmp_path):
    _save_image(tmp_path / "images" / "x.png")
    (tmp_path / "labels").mkdir()
    Image.fromarray(np.ones((H, W), np.uint8)).save(tmp_path / "labels" / "x.png")
    (tmp_path / "classes.txt").write_text("background\nperson\n")
    sample = load_dataset(tmp_path)[0]
    assert sample.vocabulary == ["background", "person"] and [a.text for a in sample.annotations] == ["person"]


def test_mask_pngs_per_segment_and_index_map(tmp_path):
    sample = _samples(["sub/a.jpg"])[0]
    paths = write_mask_pngs(sample, tmp_path)
    assert [p.name for p in paths] == ["001_ring.png", "002_bar.png", "003_dot.png"]
    assert np.array_equal(np.asarray(Image.open(paths[0])) > 0, sample.annotations[0].mask)
    png, legend = write_mask_pngs(sample, tmp_path, index_map=True)
    assert png == tmp_path / "sub" / "a.png"
    index = np.asarray(Image.open(png))
    assert np.array_equal(index == 2, sample.annotations[1].mask)
    assert [e["label"] for e in json.loads(legend.read_text())] == ["ring", "bar", "dot"]


def test_as_task_merges_for_semantic_and_foreground():
    anns = _samples(["a.png"])[0].annotations + [Annotation.from_mask("bar", _masks()["dot"])]
    semantic = as_task(anns, "semantic")
    assert [a.text for a in semantic] == ["ring", "bar", "dot"] and semantic[1].mask.sum() == 4 * 26 + 1
    foreground = as_task(anns, "foreground")
    assert len(foreground) == 1 and foreground[0].mask.sum() == sum(m.sum() for m in _masks().values())
    assert all(a.mask is None for a in as_task(anns, "detection"))


# ------------------------------------------------------------------ detection of layouts, convert CLI
def test_auto_detector_dataset_json_and_missing_labels(tmp_path):
    samples = _samples()
    write_coco_instances(samples, tmp_path / "annotations.json")
    write_coco_panoptic(samples, tmp_path / "panoptic.json", thing_classes=[])
    _write_images(tmp_path, samples)
    assert load_dataset(tmp_path).format == "coco"
    assert load_dataset(tmp_path, task="panoptic").format == "coco-panoptic"
    (tmp_path / "dataset.json").write_text(json.dumps({"format": "coco-panoptic", "task": "semantic"}))
    dataset = load_dataset(tmp_path)
    assert (dataset.format, dataset.task) == ("coco-panoptic", "semantic")
    assert [a.text for a in pickle.loads(pickle.dumps(dataset))[0].annotations] == ["ring", "bar", "dot"]
    assert load_dataset(tmp_path / "annotations.json").format == "coco"

    (tmp_path / "dataset.json").write_text(json.dumps({"format": "pascal"}))
    with pytest.raises(ValueError, match="dataset.json.*'format'"):
        load_dataset(tmp_path)
    _save_image(tmp_path / "bare" / "images" / "a.png")
    with pytest.raises(ValueError, match="no labels found"):
        load_dataset(tmp_path / "bare")


def test_convert_cli_yolo_to_coco_keeps_file_names(tmp_path, capsys):
    samples = _samples(["one.png", "two.png"])
    write_yolo_seg(samples, tmp_path / "src")
    _write_images(tmp_path / "src", samples)
    assert convert_main([str(tmp_path / "src"), "--out", str(tmp_path / "out"), "--to", "coco", "--polygons"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["images"] == 2 and summary["annotations"] == 6 and summary["polygon_iou_min"] == 1.0
    data = json.loads((tmp_path / "out" / "annotations.json").read_text())
    assert [i["file_name"] for i in data["images"]] == ["one.png", "two.png"]
    assert (tmp_path / "out" / "images" / "two.png").read_bytes() == (tmp_path / "src" / "images" / "two.png").read_bytes()
    back = load_dataset(tmp_path / "out")[1]
    assert all(np.array_equal(a.mask, b.mask) for a, b in zip(samples[1].annotations, back.annotations))

    assert convert_main([str(tmp_path / "src"), "--out", str(tmp_path / "out"), "--to", "coco"]) == 2
    assert "not empty" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        convert_main(["--help"])
    assert exit_info.value.code == 0


# ------------------------------------------------------------------ malformed COCO
def _break(mutate):
    data = _coco_table()
    mutate(data)
    return data


MALFORMED = {
    "images not a list": (lambda d: d.update(images={}), "field 'images' must be list"),
    "missing file_name": (lambda d: d["images"][0].pop("file_name"), r"images\[0\]: missing field 'file_name'"),
    "height as string": (lambda d: d["images"][0].update(height="24"), "field 'height' must be int"),
    "missing categories": (lambda d: d.pop("categories"), "missing field 'categories'"),
    "category id as float": (lambda d: d["categories"][0].update(id=3.0), "field 'id' must be int"),
    "dangling image id": (lambda d: d["annotations"][0].update(image_id=99), "'image_id' 99 is not in 'images'"),
    "dangling category id": (lambda d: d["annotations"][2].update(category_id=5), "'category_id' 5 is not in"),
    "missing category id": (lambda d: d["annotations"][0].pop("category_id"), "missing field 'category_id'"),
    "RLE counts too long": (lambda d: d["annotations"][1]["segmentation"]["counts"].append(5), "invalid RLE"),
    "RLE bad characters": (lambda d: d["annotations"][0]["segmentation"].update(counts="!!"), "invalid RLE"),
    "RLE wrong size": (lambda d: d["annotations"][0]["segmentation"].update(size=[H, W + 1]), "invalid RLE"),
    "odd polygon": (lambda d: d["annotations"][2].update(segmentation=[[1, 2, 3, 4, 5, 6, 7]]), "odd number"),
    "bbox of 3": (lambda d: d["annotations"][3].update(bbox=[1, 2, 3]), "field 'bbox'"),
    "no geometry": (lambda d: d["annotations"][3].pop("bbox"), "needs a 'segmentation' or a 'bbox'"),
    "sentence not text": (lambda d: d["annotations"][0].update(sentences=[{"sent": 5}]), "'sentences'"),
    "duplicate image id": (lambda d: d["images"].append(dict(d["images"][0])), "duplicate image id"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_coco_gives_a_clear_error(tmp_path, case):
    mutate, message = MALFORMED[case]
    _coco_folder(tmp_path, _break(mutate))
    with pytest.raises(ValueError, match=message) as error:
        load_dataset(tmp_path)
    assert "annotations.json" in str(error.value) and "\n" not in str(error.value)


def test_invalid_json_names_file_and_position(tmp_path):
    _save_image(tmp_path / "images" / "a.png")
    (tmp_path / "annotations.json").write_text('{"images": [}')
    with pytest.raises(ValueError, match=r"annotations.json: not valid JSON.*line 1"):
        load_dataset(tmp_path)


# ------------------------------------------------------------------ images
def test_corrupt_and_missing_images_are_skipped_with_a_count(tmp_path):
    data = _coco_table()
    data["images"] += [
        {"id": 8, "file_name": "broken.jpg", "height": H, "width": W},
        {"id": 9, "file_name": "gone.png", "height": H, "width": W},
        {"id": 10, "file_name": "big.png", "height": H, "width": W},
    ]
    _coco_folder(tmp_path, data)
    (tmp_path / "images" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    _save_image(tmp_path / "images" / "big.png", size=(W * 2, H))
    with pytest.warns(UserWarning, match="skipped 3 image"):
        dataset = load_dataset(tmp_path)
    assert len(dataset) == 1 and sorted(dataset.skipped) == ["big.png", "broken.jpg", "gone.png"]
    assert dataset[0].image_id == "a.png"


def _encode(image: Image.Image, format: str, **kw) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **kw)
    return buffer.getvalue()


def test_read_image_normalises_modes_and_orientation():
    gradient = np.tile(np.arange(W, dtype=np.uint8)[None] * 8, (H, 1))
    rgb = np.stack([gradient, 255 - gradient, np.full_like(gradient, 7)], -1)
    cases = {
        "gray": Image.fromarray(gradient),
        "rgba": Image.fromarray(np.dstack([rgb, np.zeros((H, W), np.uint8)])),
        "palette": Image.fromarray(rgb).quantize(16),
        "16-bit": Image.fromarray(gradient.astype(np.uint16) * 257),
        "cmyk": Image.fromarray(rgb).convert("CMYK"),
    }
    for name, image in cases.items():
        array = read_image(_encode(image, "TIFF" if name == "cmyk" else "PNG"))
        assert array.shape == (H, W, 3) and array.dtype == np.uint8, name
    assert np.array_equal(read_image(_encode(cases["16-bit"], "PNG"))[..., 0], gradient)
    assert np.array_equal(read_image(_encode(cases["rgba"], "PNG")), rgb)

    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    rotated = read_image(_encode(Image.fromarray(rgb), "JPEG", exif=exif, quality=95))
    assert rotated.shape == (W, H, 3)


def test_read_image_errors_are_one_line_image_errors(tmp_path):
    with pytest.raises(ImageError, match="image not found"):
        read_image(tmp_path / "nope.png")
    with pytest.raises(ImageError, match="cannot read image <bytes>"):
        read_image(b"hello")
    with pytest.raises(ImageError, match="over the limit of 100"):
        read_image(_encode(Image.new("RGB", (20, 20)), "PNG"), max_pixels=100)
    truncated = _encode(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)), "JPEG")
    with pytest.raises(ImageError) as error:
        read_image(truncated[: len(truncated) // 2])
    assert isinstance(error.value, ValueError) and "\n" not in str(error.value)


# ------------------------------------------------------------------ real data in ../shared/data
SHARED = {"fruitsnuts": ("coco", "instance"), "coco128": ("yolo-seg", "instance"), "clothing": ("semantic", "semantic")}


@pytest.mark.parametrize("name", sorted(SHARED))
def test_shared_dataset_loads_and_round_trips(tmp_path, name):
    root = SHARED_DATA / name
    if not root.is_dir():
        pytest.skip(f"{root} is absent (the shared real data sets live beside the repo, not in a clone)")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the real sets must load with nothing skipped
        dataset = load_dataset(root)
    assert (dataset.format, dataset.task) == SHARED[name] and len(dataset) > 10 and not dataset.skipped
    samples = dataset[:3]
    assert all(s.image.dtype == np.uint8 and s.image.ndim == 3 and s.annotations for s in samples)
    write_coco_instances(samples, tmp_path / "coco" / "annotations.json")
    writer = write_semantic_folder if dataset.task == "semantic" else write_yolo_seg
    report = writer(samples, tmp_path / "native")
    assert report.min_polygon_iou == 1.0
    for out in ("coco", "native"):
        for sample in samples:
            (tmp_path / out / "images" / sample.image_id).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / out / "images" / sample.image_id).write_bytes((dataset.source.image_dir / sample.image_id).read_bytes())
        back = load_dataset(tmp_path / out)
        for sample, again in zip(samples, back):
            assert [a.text for a in again.annotations] == [a.text for a in sample.annotations], out
            assert all(np.array_equal(a.mask, b.mask) for a, b in zip(sample.annotations, again.annotations)), out


def test_shared_alphamatting_is_not_a_labeled_folder():
    root = SHARED_DATA / "alphamatting"
    if not root.is_dir():
        pytest.skip(f"{root} is absent (the shared real data sets live beside the repo, not in a clone)")
    with pytest.raises(ValueError, match="no labels found"):
        load_dataset(root)
