"""Datasets: the unified Sample, `load_dataset` for labeled folders, and the format writers.

    load_dataset(path, task=None) -> Dataset (lazy Sequence[Sample])      qmn.data.folder
    read_image(path_or_bytes, max_pixels=...) -> (H, W, 3) uint8, ImageError  qmn.data.image_io
    write_coco_instances / write_coco_panoptic / write_yolo_seg / write_semantic_folder /
    write_mask_pngs                                                        one module per format
    encode_rle / decode_rle / mask_to_polygons / polygons_to_mask         qmn.data.mask_codec
Command line: `python -m qmn.data.convert SRC --out DIR --to coco|coco-panoptic|yolo-seg|semantic|masks`.
"""
from qmn.data.coco import WriteReport, read_coco_instances, write_coco_instances
from qmn.data.coco_panoptic import read_coco_panoptic, write_coco_panoptic
from qmn.data.folder import FORMATS, Dataset, load_dataset
from qmn.data.image_io import ImageError, read_image
from qmn.data.mask_codec import decode_rle, encode_rle, mask_to_polygons, polygons_to_mask
from qmn.data.masks import write_mask_pngs
from qmn.data.sample import TASKS, Annotation, Sample, mask_to_box
from qmn.data.semantic_folder import read_semantic_folder, write_semantic_folder
from qmn.data.yolo import read_yolo_seg, write_yolo_seg

__all__ = [
    "FORMATS", "TASKS", "Annotation", "Dataset", "ImageError", "Sample", "WriteReport",
    "decode_rle", "encode_rle", "load_dataset", "mask_to_box", "mask_to_polygons", "polygons_to_mask",
    "read_coco_instances", "read_coco_panoptic", "read_image", "read_semantic_folder", "read_yolo_seg",
    "write_coco_instances", "write_coco_panoptic", "write_mask_pngs", "write_semantic_folder", "write_yolo_seg",
]
