"""QMNConfig: every architecture and loss hyper-parameter, as data (JSON round trip) with presets.

`base` follows the paper (Mask DINO settings); `tiny` is the CPU-trainable miniature that ships.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

QUERY_MODES = ("meld", "learnable", "conditional")
# removed fields still present in older checkpoints' JSON: text_dim (read from the text encoder), num_feature_levels
# (the encoder has exactly 4 levels: strides 8/16/32/64)
RETIRED_FIELDS = frozenset({"text_dim", "num_feature_levels"})


@dataclass
class QMNConfig:
    # image side
    backbone: str = "convnext_atto"  # any timm model name that supports features_only
    backbone_pretrained: str = ""  # "" = random init; "hub" = timm hub weights; or a local weights file
    backbone_out_indices: tuple[int, ...] = ()  # () = the levels at strides 4/8/16/32, found from timm's feature_info
    image_size: int = 256  # training / inference long side
    pixel_mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    pixel_std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    # text side
    text_encoder: str = "minilm"  # "minilm" (bundled, offline) | "open_clip:<model>:<pretrained tag or file>"
    train_text_encoder: bool = False
    # False: `text_proj` is a fixed orthonormal projection (rows orthonormal, no bias) that keeps the text encoder's
    # geometry, so the class loss cannot fold every name into one "object" vector (it did: nine shape names at cosine
    # 0.96 after training, 0.35 in MiniLM; docs/why_things.md); the image side learns to meet the names. True = trained
    # (checkpoints from before)
    train_text_proj: bool = True
    # transformer
    hidden_dim: int = 128
    num_heads: int = 4
    ffn_dim: int = 512
    dropout: float = 0.0
    enc_layers: int = 2
    dec_layers: int = 3
    enc_points: int = 4  # deformable sampling points per head and level
    dec_points: int = 4
    mask_dim: int = 128
    # queries: `query_mode` decides the groups; a single-group mode folds the other group's count into its own
    query_mode: str = "meld"
    num_learnable: int = 20  # "learnable" mode: all num_queries; "conditional" mode: 0
    num_conditional: int = 60  # "conditional" mode: all num_queries; "learnable" mode: 0
    # prompted (box / click) queries and denoising, as Mask DINO's denoising groups
    num_prompted_train: int = 8  # ground-truth objects given as box/click prompts per image in training
    # label denoising (DN-DETR / Mask DINO): up to this many ground-truth objects per image are given to the decoder as
    # their class name's text embedding (another of the image's names with `denoising_label_noise` chance) at a box
    # noised by `denoising_box_noise`; they must reconstruct the true name, box and mask. Training only, no weights
    # (so any checkpoint can train with or without them); 0 = off
    num_denoising: int = 0
    denoising_label_noise: float = 0.25
    denoising_box_noise: float = 0.4
    # loss (Mask DINO)
    class_weight: float = 4.0
    mask_bce_weight: float = 5.0
    dice_weight: float = 5.0
    box_l1_weight: float = 5.0
    giou_weight: float = 2.0
    # > 0: also a softmax cross-entropy over each image's own names for every matched / assigned query (which name,
    # Mask2Former's class loss), beside the focal term (object or not); 0 = off
    name_loss_weight: float = 0.0
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    num_mask_points: int = 12544
    interm_mask_loss: bool = True  # mask loss on the encoder proposals too (Mask DINO); no weights, training only
    oversample_ratio: float = 3.0
    importance_sample_ratio: float = 0.75
    num_negative_prompts: int = 16  # vocabulary words added as negatives per training batch
    # a batch prompt is a negative only for the images it is known false for (their own targets' texts + their
    # closed vocabulary; `qmn.batching.text_validity`); False = every prompt is a negative for every image of the
    # batch (before: a referred "the red circle" was trained as not-"circle", see docs/why_things.md)
    negatives_per_image: bool = True
    # class head: each query also sees an S x S RoIAlign of the pixel features and of its own mask at its own box
    # (`qmn.region_features`); 0 = off (checkpoints from before it)
    region_pool_size: int = 0
    # inference
    score_threshold: float = 0.3  # default segment score cut; `bench/calibrate_threshold.py` tunes it per model
    # resolution (qmn.tiling): 0 = shrink every photo to image_size (older checkpoints); > 0 = train on crops at the
    # photo's own scale and predict instance / detection / semantic in image_size windows, photos capped at this side
    native_max_side: int = 0

    def __post_init__(self) -> None:
        if self.query_mode not in QUERY_MODES:
            raise ValueError(f"query_mode must be one of {QUERY_MODES}, got {self.query_mode!r}")
        # query_mode is the one source of the group sizes: the total is kept, the groups follow the mode
        total = self.num_queries
        if total <= 0:
            raise ValueError(f"num_learnable + num_conditional must be > 0, got {total}")
        if self.query_mode == "learnable":
            self.num_learnable, self.num_conditional = total, 0
        elif self.query_mode == "conditional":
            self.num_learnable, self.num_conditional = 0, total
        elif self.num_learnable <= 0 or self.num_conditional <= 0:
            raise ValueError(f"query_mode 'meld' needs both groups, got {self.num_learnable} learnable + "
                             f"{self.num_conditional} conditional queries (use with_query_mode('meld') to split)")
        self.backbone_out_indices = tuple(self.backbone_out_indices)
        self.pixel_mean = tuple(self.pixel_mean)
        self.pixel_std = tuple(self.pixel_std)

    @property
    def num_queries(self) -> int:
        return self.num_learnable + self.num_conditional

    def with_query_mode(self, mode: str) -> "QMNConfig":
        """Same total query count, split for the ablation (paper Table 2)."""
        if mode == "meld" and self.query_mode != "meld":  # from one group: the paper's 1 : 3 split
            total = self.num_queries
            return dataclasses.replace(self, query_mode=mode, num_learnable=total // 4, num_conditional=total - total // 4)
        return dataclasses.replace(self, query_mode=mode)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "QMNConfig":
        """Fields of older checkpoints that no longer mean anything (RETIRED_FIELDS) are dropped; others are errors."""
        d = {k: v for k, v in d.items() if k not in RETIRED_FIELDS}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown QMNConfig field(s): {', '.join(unknown)}")
        return cls(**d)

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            from qmn.io_utils import atomic_write_text

            atomic_write_text(path, text)
        return text

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> "QMNConfig":
        p = Path(text_or_path)
        text = p.read_text() if not str(text_or_path).lstrip().startswith("{") else str(text_or_path)
        return cls.from_dict(json.loads(text))


PRESETS: dict[str, QMNConfig] = {
    "tiny": QMNConfig(num_mask_points=2048, region_pool_size=7, train_text_proj=False),
    "base": QMNConfig(
        backbone="swin_base_patch4_window12_384",
        image_size=1024,
        hidden_dim=256,
        num_heads=8,
        ffn_dim=2048,
        enc_layers=6,
        dec_layers=9,
        mask_dim=256,
        num_learnable=100,
        num_conditional=300,
        num_negative_prompts=100,
        region_pool_size=7,
        train_text_proj=False,
    ),
}


def get_preset(name: str, **overrides) -> QMNConfig:
    """A copy of preset `name` with field overrides."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return dataclasses.replace(PRESETS[name], **overrides)
