"""QueryMeldNet (paper §3.1): image encoder + text encoder -> multi-scale deformable encoder -> query meld ->
decoder -> shared heads. `forward` for training, `compute_loss` on a `Batch`, `predict` for users."""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qmn.backbone import Backbone
from qmn.batching import FOREGROUND_PROMPT, Batch, prepare_image, to_rgb_uint8
from qmn.box_ops import box_xyxy_to_cxcywh
from qmn.checkpoint import CheckpointError, read_meta, read_safetensors, write_checkpoint
from qmn.config import QMNConfig
from qmn.data.sample import TASKS
from qmn.decoder import Decoder
from qmn.encoder import MultiScaleEncoder
from qmn.heads import ClassHead, MaskHead
from qmn.inference import RawOutput, postprocess, prompted
from qmn.losses import SetCriterion
from qmn.prompts import parse_prompts
from qmn.queries import ConditionalQueries, LearnableQueries, PromptedQueries, Prompts, QuerySet
from qmn.structures import Prediction
from qmn.text import TextEncoder, build_text_encoder


@functools.lru_cache(maxsize=4)
def shared_text_encoder(spec: str) -> TextEncoder:
    """Frozen text encoders are shared by every model in the process (loading MiniLM takes seconds)."""
    return build_text_encoder(spec, trainable=False)


class QueryMeldNet(nn.Module):
    def __init__(self, cfg: QMNConfig, text_encoder: TextEncoder | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.record: dict = {}
        dim = cfg.hidden_dim
        self.backbone = Backbone(cfg.backbone, cfg.backbone_out_indices, cfg.backbone_pretrained)
        self.encoder = MultiScaleEncoder(self.backbone.channels, dim, cfg.ffn_dim, cfg.enc_layers, cfg.num_feature_levels,
                                         cfg.num_heads, cfg.enc_points, cfg.mask_dim, cfg.dropout)
        if text_encoder is None:
            text_encoder = (build_text_encoder(cfg.text_encoder, trainable=True) if cfg.train_text_encoder
                            else shared_text_encoder(cfg.text_encoder))
        self.text_encoder = text_encoder
        self.text_proj = nn.Linear(text_encoder.dim, dim)
        self.learnable_queries = LearnableQueries(cfg.num_learnable, dim) if cfg.num_learnable else None
        self.conditional_queries = ConditionalQueries(dim) if cfg.num_conditional else None
        self.prompted_queries = PromptedQueries(dim)
        self.decoder = Decoder(dim, cfg.num_heads, cfg.ffn_dim, cfg.dec_layers, cfg.num_feature_levels, cfg.dec_points, cfg.dropout)
        self.class_head = ClassHead(dim)
        self.mask_head = MaskHead(dim, cfg.mask_dim)
        self.criterion = SetCriterion(cfg)

    # ------------------------------------------------------------------------------------------------ forward
    def train(self, mode: bool = True) -> "QueryMeldNet":
        super().train(mode)
        if not self.cfg.train_text_encoder:
            self.text_encoder.eval()
        return self

    @property
    def device(self) -> torch.device:
        return self.text_proj.weight.device

    def encode_text(self, texts: list[str]) -> Tensor:
        """(T, C) projected, normalised prompt embeddings."""
        emb = self.text_encoder.encode(texts).to(self.device)
        return F.normalize(self.text_proj(emb), dim=-1)

    def build_queries(self, memory: Tensor, shapes, text: Tensor, mask_map: Tensor, prompts: Prompts | None) -> tuple[QuerySet, dict | None]:
        """Concatenate [learnable | conditional | prompted] queries; returns them and the encoder proposals."""
        b = memory.shape[0]
        contents, refs, interm, num_conditional, num_prompted = [], [], None, 0, 0
        if self.learnable_queries is not None:
            c, r = self.learnable_queries(b)
            contents.append(c)
            refs.append(r)
        if self.conditional_queries is not None:
            c, r, interm = self.conditional_queries(memory, shapes, text, self.cfg.num_conditional)
            contents.append(c)
            refs.append(r)
            num_conditional = c.shape[1]
        if prompts is not None:
            contents.append(self.prompted_queries(mask_map, prompts))
            refs.append(prompts.boxes.to(memory.dtype))
            num_prompted = prompts.boxes.shape[1]
        queries = QuerySet(torch.cat(contents, 1), torch.cat(refs, 1), self.cfg.num_learnable, num_conditional,
                           num_prompted, None if prompts is None else prompts.valid)
        return queries, interm

    def forward(self, images: Tensor, texts: list[str], prompts: Prompts | None = None) -> dict:
        """images (B, 3, S, S) normalised; texts: the T prompts shared by the batch -> per-layer outputs."""
        feats = self.backbone(images)
        enc = self.encoder(feats)
        text = self.encode_text(texts)[None].expand(images.shape[0], -1, -1)  # (B, T, C)
        queries, interm = self.build_queries(enc.memory, enc.spatial_shapes, text, enc.level_map(0), prompts)
        dec = self.decoder(queries, enc.memory, enc.spatial_shapes)
        logits = [self.class_head(h, text) for h in dec.hidden]
        masks = [self.mask_head(h, enc.mask_features) for h in dec.hidden]
        matched = queries.num_learnable + queries.num_conditional
        split = lambda xs, sl: [x[:, sl] for x in xs]  # noqa: E731
        out = {"logits": split(logits, slice(0, matched)), "boxes": split(dec.boxes, slice(0, matched)),
               "masks": split(masks, slice(0, matched)), "interm": interm, "num_learnable": queries.num_learnable,
               "num_conditional": queries.num_conditional}
        if prompts is not None:
            tail = slice(matched, None)
            out["prompted"] = {"logits": split(logits, tail), "boxes": split(dec.boxes, tail), "masks": split(masks, tail)}
        return out

    def compute_loss(self, batch: Batch) -> dict[str, Tensor]:
        outputs = self(batch.images, batch.texts, batch.prompts)
        if batch.prompts is not None:
            outputs["prompt_targets"] = batch.prompt_targets
        return self.criterion(outputs, batch.targets)

    # ------------------------------------------------------------------------------------------------ predict
    def _user_prompts(self, boxes, points, scale: float, size: int) -> Prompts | None:
        """xyxy pixel boxes and (x, y, positive) clicks -> one prompted query per box; clicks inside a box refine
        that box's query; the clicks outside every box together make one more query (an object picked by clicks),
        whose small box sits on its first positive click."""
        boxes = [np.asarray(b, np.float32).reshape(4) for b in (boxes or [])]
        points = [(float(x), float(y), bool(p)) for x, y, p in (points or [])]
        for b in boxes:
            if not np.isfinite(b).all() or b[2] <= b[0] or b[3] <= b[1]:
                raise ValueError(f"invalid box {b.tolist()}: expected [x1, y1, x2, y2] with x2 > x1 and y2 > y1")
        queries: list[tuple[np.ndarray, bool, list]] = [(b * scale / size, True, []) for b in boxes]
        loose = []
        for x, y, positive in points:
            xy = np.array([x, y], np.float32) * scale / size
            inside = [q for q in queries if q[0][0] <= xy[0] <= q[0][2] and q[0][1] <= xy[1] <= q[0][3]]
            for q in inside:
                q[2].append((xy, positive))
            if not inside:
                loose.append((xy, positive))
        anchor = next((xy for xy, positive in loose if positive), None)
        if anchor is not None:
            queries.append((np.concatenate([anchor - 0.05, anchor + 0.05]), False, loose))
        if not queries:
            return None
        m = max(1, max(len(q[2]) for q in queries))
        p = len(queries)
        pts = torch.zeros(1, p, m, 2)
        labels = torch.full((1, p, m), -1, dtype=torch.long)
        for i, (_, _, clicks) in enumerate(queries):
            for j, (xy, positive) in enumerate(clicks):
                pts[0, i, j] = torch.from_numpy(np.clip(xy, 0, 1))
                labels[0, i, j] = int(positive)
        xyxy = torch.from_numpy(np.clip(np.stack([q[0] for q in queries]), 0, 1))
        return Prompts(box_xyxy_to_cxcywh(xyxy)[None].clamp(1e-3, 1), torch.ones(1, p, dtype=torch.bool),
                       torch.tensor([[q[1] for q in queries]]), pts, labels)

    @torch.no_grad()
    def predict(self, image: np.ndarray, prompts: str | list[str] | None = None, task: str = "panoptic",
                threshold: float | None = None, boxes: list | None = None, points: list | None = None) -> Prediction:
        """Segment one RGB image (any size; gray / RGBA accepted). Box / click prompts, when given, each return one
        segment (query_type "prompted"; a box's mask is kept within the box plus a 10% margin) and the task's own
        post-processing is skipped. `threshold=None` uses the model's calibrated `cfg.score_threshold`."""
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
        threshold = self.cfg.score_threshold if threshold is None else threshold
        if not 0.0 <= float(threshold) <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        texts = [FOREGROUND_PROMPT] if task == "foreground" else parse_prompts(prompts, task)
        has_visual = bool(boxes) or bool(points)
        if not texts and not has_visual:
            raise ValueError(f"no prompt: type class names (e.g. 'person, dog, sky') for {task}, or a phrase for referring")
        image = to_rgb_uint8(image)
        was_training = self.training
        self.eval()
        try:
            prep = prepare_image(image, self.cfg.image_size, self.cfg.pixel_mean, self.cfg.pixel_std)
            user = self._user_prompts(boxes, points, prep.scale, self.cfg.image_size)
            model_texts = texts or [FOREGROUND_PROMPT]
            out = self(prep.tensor[None].to(self.device), model_texts, None if user is None else _to(user, self.device))
            n, k = out["num_learnable"], out["num_conditional"]
            logits, boxes_, masks = out["logits"][-1][0], out["boxes"][-1][0], out["masks"][-1][0]
            types = ["learnable"] * n + ["conditional"] * k
            if user is not None:
                p = out["prompted"]
                logits = torch.cat([logits, p["logits"][-1][0]])
                boxes_ = torch.cat([boxes_, p["boxes"][-1][0]])
                masks = torch.cat([masks, p["masks"][-1][0]])
                types += ["prompted"] * p["logits"][-1].shape[1]
            raw = RawOutput(logits.float().sigmoid(), masks.float(), boxes_.float(), types, self.cfg.image_size,
                            prep.valid_hw, prep.original_hw)
            if user is not None:
                pred = Prediction(task=task, prompts=texts, image_size=prep.original_hw)
                clip = [np.asarray(b, np.float32) if from_box else None
                        for b, from_box in zip(boxes or [], user.from_box[0].tolist())]
                clip += [None] * (user.valid.shape[1] - len(clip))
                pred.segments = prompted(raw, model_texts, n + k, labelled=bool(texts), clip_boxes=clip)
                return pred
            return postprocess(raw, task, model_texts, float(threshold))
        finally:
            self.train(was_training)

    # ------------------------------------------------------------------------------------------------ save / load
    def trainable_state_dict(self) -> dict[str, Tensor]:
        """Everything but a frozen, bundled text encoder (it ships with its package, not in our checkpoints)."""
        state = self.state_dict()
        if not self.cfg.train_text_encoder:
            state = {k: v for k, v in state.items() if not k.startswith("text_encoder.")}
        return state

    def save(self, path: str | Path, half: bool = False, record: dict | None = None) -> None:
        if record is not None:
            self.record = record
        write_checkpoint(path, self.trainable_state_dict(), {"config": self.cfg.to_dict(), "record": self.record}, half)


def _to(prompts: Prompts, device: torch.device) -> Prompts:
    return Prompts(*(getattr(prompts, f).to(device) for f in Prompts.__dataclass_fields__))


def load_model(path: str | Path, device: str | torch.device = "cpu") -> QueryMeldNet:
    """Load a `.safetensors` + `.json` checkpoint written by `QueryMeldNet.save`. Pickle files are refused."""
    state = read_safetensors(path)
    meta = read_meta(path)
    try:
        cfg = QMNConfig.from_dict(meta["config"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: invalid config in its JSON ({e})") from None
    model = QueryMeldNet(cfg)
    own = model.state_dict()
    wrong = [k for k, v in state.items() if k not in own or own[k].shape != v.shape]
    missing = [k for k in own if k not in state and not k.startswith("text_encoder.")]
    if wrong or missing:
        raise CheckpointError(f"{path}: weights do not fit its config ({len(wrong)} unexpected, {len(missing)} missing, "
                              f"e.g. {(wrong + missing)[0]})")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=False)
    model.record = meta.get("record") or {}
    return model.to(resolve_device(device)).eval()


def resolve_device(device: str | torch.device) -> torch.device:
    """"auto" -> cuda when available, else cpu; a clear error for an unavailable device."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but no CUDA GPU is available; use --device cpu or auto")
    return dev
