"""qmn.evaluate and qmn.predict: an oracle model gives perfect scores through both the live and the file path;
sharding partitions, --resume skips, unreadable images are counted; the real CLI runs on a tiny random model."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from qmn.data.image_io import write_png
from qmn.data.sample import Sample, mask_to_box
from qmn.data.synth import STUFF_CLASSES, THING_SHAPES, generate_sample
from qmn.evaluate import TaskEvaluator, evaluate_model, evaluate_predictions, referring_targets
from qmn.evaluate import main as evaluate_main
from qmn.predict import Labeler, list_images, main as predict_main, merge, parse_shard, shard_of
from qmn.structures import Prediction, Segment


class ListDataset(list):
    """The parts of `qmn.data.load_dataset`'s Dataset that evaluation reads."""

    def __init__(self, samples: list[Sample], root: Path | None = None) -> None:
        super().__init__(samples)
        self.vocabulary = list(samples[0].vocabulary)
        self.root = root
        self.skipped: list[str] = []
        self.thing_classes: list[str] | None = None


class OracleModel:
    """Answers every image with its own ground truth (found by pixels), optionally dropping the first object."""

    def __init__(self, samples: list[Sample], drop_first: bool = False) -> None:
        self.by_pixels = {s.image.tobytes(): s for s in samples}
        self.drop_first = drop_first

    def predict(self, image, prompts, task, threshold=0.3) -> Prediction:
        sample = self.by_pixels[image.tobytes()]
        shape = image.shape[:2]
        if task == "referring":
            items = [(phrase, mask, mask_to_box(mask)) for phrase, mask in referring_targets(sample).items()]
        else:
            items = [(a.text, a.mask, a.box) for a in sample.annotations if task == "foreground" or a.text in prompts]
        items = items[1:] if self.drop_first else items
        segments, panoptic = [], np.zeros(shape, np.int32)
        for i, (label, mask, box) in enumerate(items, start=1):
            segments.append(Segment(label, 0.9, None if task == "detection" else mask, box, "conditional", i, i))
            if mask is not None:
                panoptic[mask] = i
        return Prediction(task, list(prompts), segments, panoptic=panoptic if task == "panoptic" else None, image_size=shape)


def _samples(variant: str, n: int = 3, size: int = 64) -> list[Sample]:
    rng = np.random.default_rng(0)
    samples = [generate_sample(rng, size, variant) for _ in range(n)]
    for i, s in enumerate(samples):
        s.image_id = f"img{i}.png"
    return samples


@pytest.mark.parametrize(
    "variant, task, key",
    [
        ("panoptic", "panoptic", "PQ"),
        ("panoptic", "instance", "mask_AP"),
        ("detection", "detection", "box_AP"),
        ("panoptic", "semantic", "mIoU"),
        ("referring", "referring", "cIoU"),
        ("foreground", "foreground", "cIoU"),
    ],
)
def test_oracle_model_scores_one_on_every_task(variant, task, key):
    samples = _samples(variant)
    result = evaluate_model(OracleModel(samples), ListDataset(samples), task, progress=False)
    assert result["primary"] == key and result["num_images"] == 3
    assert result["metrics"][key] == pytest.approx(1.0)


def test_missing_objects_lower_the_score_and_max_images_limits():
    samples = _samples("panoptic")
    result = evaluate_model(OracleModel(samples, drop_first=True), ListDataset(samples), "instance", max_images=2, progress=False)
    assert result["num_images"] == 2
    assert 0.0 < result["metrics"]["mask_AP"] < 1.0


def test_thing_stuff_split_from_dataset_json(tmp_path):
    samples = _samples("panoptic")
    (tmp_path / "dataset.json").write_text(json.dumps({"things": list(THING_SHAPES), "stuff": list(STUFF_CLASSES)}))
    result = evaluate_model(OracleModel(samples), ListDataset(samples, root=tmp_path), "panoptic", progress=False)
    assert result["metrics"]["PQ_stuff"] == pytest.approx(1.0) and result["metrics"]["PQ_things"] == pytest.approx(1.0)
    assert "dataset.json" in result["notes"][0]
    unknown = evaluate_model(OracleModel(samples), ListDataset(samples), "panoptic", progress=False)
    assert unknown["metrics"]["PQ_stuff"] is None and "every class treated as a thing" in unknown["notes"][0]
    dataset = ListDataset(samples)
    dataset.thing_classes = ["circle"]  # as read from a COCO panoptic JSON's isthing: everything else is stuff
    split = evaluate_model(OracleModel(samples), dataset, "panoptic", progress=False)
    assert split["details"]["num_classes"]["things"] <= 1 and "isthing" in split["notes"][0]


def test_evaluator_rejects_mismatched_sizes():
    sample = _samples("panoptic", n=1)[0]
    with pytest.raises(ValueError, match="size"):
        TaskEvaluator("instance", sample.vocabulary).add(sample, Prediction("instance", [], [], image_size=(5, 5)))


def _label_folder(tmp_path: Path, samples: list[Sample], task: str, prompts: list[str]) -> Path:
    """Write the samples as PNGs, label them with the oracle through Labeler, merge; returns the out folder."""
    images = tmp_path / "images"
    for s in samples:
        write_png(images / s.image_id, s.image)
    out = tmp_path / "out"
    labeler = Labeler(OracleModel(samples), prompts, task, out, threshold=0.3, refine=False)
    pairs = list_images([images])
    for key, path in pairs:
        labeler.label(key, path)
    merge(out, [k for k, _ in pairs], task, prompts)
    return out


@pytest.mark.parametrize("variant, task, key", [("panoptic", "instance", "mask_AP"), ("referring", "referring", "cIoU")])
def test_predictions_file_round_trip_scores_one(tmp_path, variant, task, key):
    samples = _samples(variant)
    out = _label_folder(tmp_path, samples, task, samples[0].vocabulary)
    coco = json.loads((out / "predictions.json").read_text())
    assert [im["file_name"] for im in coco["images"]] == ["img0.png", "img1.png", "img2.png"]
    assert all("score" in a and "segmentation" in a for a in coco["annotations"])
    result = evaluate_predictions(out / "predictions.json", ListDataset(samples), task, progress=False)
    assert result["metrics"][key] == pytest.approx(1.0)
    assert (out / "overlays" / "img0.png").is_file() and any((out / "masks" / "img0").iterdir())


def test_panoptic_json_and_pngs_round_trip(tmp_path):
    samples = _samples("panoptic")
    out = _label_folder(tmp_path, samples, "panoptic", samples[0].vocabulary)
    panoptic = json.loads((out / "panoptic.json").read_text())
    assert len(panoptic["annotations"]) == 3 and (out / "panoptic" / "img0.png").is_file()
    result = evaluate_predictions(out / "panoptic.json", ListDataset(samples), "panoptic", progress=False)
    assert result["metrics"]["PQ"] == pytest.approx(1.0)


def test_bare_results_list_needs_a_reference(tmp_path):
    samples = _samples("panoptic", n=1)
    out = _label_folder(tmp_path, samples, "instance", samples[0].vocabulary)
    coco = json.loads((out / "predictions.json").read_text())
    (tmp_path / "results.json").write_text(json.dumps(coco["annotations"]))
    with pytest.raises(ValueError, match="reference"):
        evaluate_predictions(tmp_path / "results.json", ListDataset(samples), "instance", progress=False)
    result = evaluate_predictions(
        tmp_path / "results.json", ListDataset(samples), "instance", reference=out / "predictions.json", progress=False
    )
    assert result["metrics"]["mask_AP"] == pytest.approx(1.0)


def test_shards_partition_the_sorted_list_and_bad_shards_are_refused():
    items = [f"{i:03d}.jpg" for i in range(10)]
    parts = [shard_of(items, i, 3) for i in range(3)]
    assert sorted(sum(parts, [])) == items and all(set(a).isdisjoint(b) for a in parts for b in parts if a is not b)
    assert parts[1] == ["001.jpg", "004.jpg", "007.jpg"]
    assert parse_shard("2/4") == (2, 4)
    for bad in ("4/4", "1", "a/b", "0/0"):
        with pytest.raises(ValueError, match="--shard"):
            parse_shard(bad)


def test_unreadable_image_is_listed_not_fatal(tmp_path):
    samples = _samples("panoptic", n=2)
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "broken.jpg").write_bytes(b"not a jpeg")
    out = _label_folder(tmp_path, samples, "instance", samples[0].vocabulary)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_images"] == 3 and summary["num_unreadable"] == 1
    assert summary["unreadable"][0]["file_name"] == "broken.jpg"
    assert len(json.loads((out / "predictions.json").read_text())["images"]) == 2


# ------------------------------------------------------------------------ the real CLI on a tiny random model


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    qmn = pytest.importorskip("qmn")
    if not hasattr(qmn, "QueryMeldNet"):
        pytest.skip("qmn.QueryMeldNet is not available yet")
    import torch

    torch.manual_seed(0)
    model = qmn.QueryMeldNet(qmn.get_preset("tiny", enc_layers=1, dec_layers=1, image_size=128))
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    model.save(path)
    return path


def test_cli_shards_merge_once_all_done_and_resume_skips(tmp_path, tiny_checkpoint, capsys):
    images = tmp_path / "images"
    for i, s in enumerate(_samples("panoptic", n=3, size=48)):
        write_png(images / f"{i}.png", s.image)
    out = tmp_path / "out"
    base = ["--checkpoint", str(tiny_checkpoint), "--images", str(images), "--prompts", "circle, sky",
            "--task", "panoptic", "--out", str(out), "--threshold", "0.0", "--device", "cpu"]
    assert predict_main(base + ["--shard", "0/2"]) == 0
    assert sorted(p.name for p in (out / "per_image").iterdir()) == ["0.png.json", "2.png.json"]
    assert not (out / "predictions.json").exists()  # shard 1 still to do
    assert predict_main(base + ["--shard", "1/2"]) == 0
    coco = json.loads((out / "predictions.json").read_text())
    assert [im["file_name"] for im in coco["images"]] == ["0.png", "1.png", "2.png"]
    assert {c["name"] for c in coco["categories"]} == {"circle", "sky"}
    panoptic = json.loads((out / "panoptic.json").read_text())
    for ann in panoptic["annotations"]:
        from qmn.data.image_io import read_image

        rgb = read_image(out / "panoptic" / ann["file_name"]).astype(np.int64)
        ids = set(np.unique(rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]).tolist()) - {0}
        assert ids == {s["id"] for s in ann["segments_info"]}
    record = out / "per_image" / "1.png.json"
    before = record.stat().st_mtime_ns
    assert predict_main(base + ["--resume"]) == 0
    assert record.stat().st_mtime_ns == before  # skipped, yet merged again
    assert "3 images (0 unreadable)" in capsys.readouterr().out
    assert predict_main(base[:5] + ["circle"] + base[6:] + ["--resume"]) == 2  # other prompts: records don't fit
    assert "use a new --out" in capsys.readouterr().err


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert predict_main(["--images", str(tmp_path / "nope"), "--prompts", "a", "--out", str(tmp_path / "o")]) == 2
    assert "neither an image file nor a folder" in capsys.readouterr().err


def test_refine_writes_alpha_and_rgba_cutouts_named_as_the_masks(tmp_path):
    from PIL import Image

    sample = _samples("foreground", n=1, size=48)[0]
    write_png(tmp_path / "img0.png", sample.image)
    labeler = Labeler(OracleModel([sample]), ["foreground"], "foreground", tmp_path / "out", 0.3, refine=True)
    labeler.label("img0.png", tmp_path / "img0.png")
    masks = sorted(p.name for p in (tmp_path / "out" / "masks" / "img0").iterdir())
    assert masks and masks == sorted(p.name for p in (tmp_path / "out" / "alpha" / "img0").iterdir())
    cut = Image.open(tmp_path / "out" / "cutouts" / "img0" / masks[0])
    assert cut.mode == "RGBA" and cut.size == (48, 48)


def test_classes_outside_the_evaluated_set_are_left_out_on_both_sides():
    samples = _samples("panoptic")
    dataset = ListDataset(samples)
    model = OracleModel(samples)
    everything = evaluate_model(model, dataset, "panoptic", progress=False)
    only_sky = evaluate_model(model, dataset, "panoptic", prompts=["sky"], progress=False)
    assert everything["metrics"]["PQ"] == pytest.approx(1.0) and only_sky["metrics"]["PQ"] == pytest.approx(1.0)
    assert set(only_sky["details"]["per_class"]) <= {"sky"}
    evaluator = TaskEvaluator("instance", ["sky"])
    evaluator.add(samples[0], model.predict(samples[0].image, samples[0].vocabulary, "instance"))  # other classes: ignored
    assert evaluator.num_images == 1


def test_undecodable_images_are_listed_as_skipped():
    from qmn.data.image_io import ImageError

    samples = _samples("panoptic")

    class FlakyDataset(ListDataset):
        image_ids = ["img0.png", "img1.png", "img2.png"]

        def __getitem__(self, index):
            if index == 1:
                raise ImageError("cannot decode image img1.png: truncated")
            return super().__getitem__(index)

    result = evaluate_model(OracleModel(samples), FlakyDataset(samples), "instance", progress=False)
    assert result["num_images"] == 2 and result["skipped_images"] == ["img1.png"]


SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.mark.skipif(not (SHARED_DATA / "fruitsnuts").is_dir(), reason="../shared/data/fruitsnuts is absent (no shared data)")
def test_real_coco_folder_ground_truth_as_predictions_scores_one(tmp_path):
    from qmn.data import load_dataset
    from qmn.data.coco import write_coco_instances

    dataset = load_dataset(SHARED_DATA / "fruitsnuts", task="instance")
    first = [dataset[i] for i in range(3)]
    write_coco_instances(first, tmp_path / "gt_as_predictions.json")  # no "score": every entry counts as 1.0
    result = evaluate_predictions(tmp_path / "gt_as_predictions.json", dataset, "instance", max_images=3, progress=False)
    assert result["num_images"] == 3
    assert result["metrics"]["mask_AP"] == pytest.approx(1.0) and result["metrics"]["box_AP"] == pytest.approx(1.0)
    out = tmp_path / "metrics.json"
    argv = ["--data", str(SHARED_DATA / "fruitsnuts"), "--task", "instance", "--max-images", "3",
            "--predictions", str(tmp_path / "gt_as_predictions.json"), "--out", str(out)]
    assert evaluate_main(argv) == 0
    assert json.loads(out.read_text())["metrics"]["mask_AP"] == pytest.approx(1.0)
