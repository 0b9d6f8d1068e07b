"""QueryMeldNet (paper §3.1): image encoder + text encoder -> multi-scale deformable encoder -> query meld ->
decoder -> shared heads. The module only computes: `forward` (typed per-layer outputs), `compute_loss` on a `Batch`,
`save`. Turning an image and prompts into a `Prediction` is `qmn.predictor.Predictor`'s job."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qmn.backbone import Backbone
from qmn.batching import Batch
from qmn.checkpoint import CheckpointError, read_meta, read_safetensors, write_checkpoint
from qmn.config import QMNConfig
from qmn.decoder import Decoder
from qmn.denoising import DenoisingPrompts, denoising_content
from qmn.device import resolve_device
from qmn.encoder import NUM_LEVELS, MultiScaleEncoder
from qmn.heads import ClassHead, MaskHead
from qmn.losses import SetCriterion
from qmn.outputs import LayerOutputs, QueryMeldOutput
from qmn.queries import ConditionalQueries, LearnableQueries, PromptedQueries, Prompts, QuerySet
from qmn.region_features import RegionFeatures
from qmn.text import TextEncoder, build_text_encoder, shared_text_encoder


class QueryMeldNet(nn.Module):
    """All parts are built here from one `QMNConfig` (the one place that composes the model).

    `text_encoder`: None = the process's shared frozen encoder for `cfg.text_encoder` (or a fresh trainable one when
    `cfg.train_text_encoder`). A frozen encoder is held by reference, not as a submodule: it is shared by every model,
    is not in `state_dict`, and `.to()` leaves it where it is (its embeddings are moved to the model's device).
    """

    def __init__(self, cfg: QMNConfig, text_encoder: TextEncoder | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.record: dict = {}
        dim = cfg.hidden_dim
        self.backbone = Backbone(cfg.backbone, cfg.backbone_out_indices, cfg.backbone_pretrained)
        self.encoder = MultiScaleEncoder(self.backbone.channels, dim, cfg.ffn_dim, cfg.enc_layers, cfg.num_heads,
                                         cfg.enc_points, cfg.mask_dim, cfg.dropout)
        if text_encoder is None:
            text_encoder = (build_text_encoder(cfg.text_encoder, trainable=True) if cfg.train_text_encoder
                            else shared_text_encoder(cfg.text_encoder))
        if cfg.train_text_encoder:
            self.text_encoder = text_encoder  # trained with the model: a submodule, saved in its checkpoints
        else:
            self.__dict__["text_encoder"] = text_encoder.eval()  # shared and frozen: a plain reference
        self.text_proj = nn.Linear(text_encoder.dim, dim)
        if not cfg.train_text_proj:  # a fixed projection that keeps the names apart (config: train_text_proj)
            nn.init.orthogonal_(self.text_proj.weight)
            nn.init.zeros_(self.text_proj.bias)
            self.text_proj.requires_grad_(False)
        self.learnable_queries = LearnableQueries(cfg.num_learnable, dim) if cfg.num_learnable else None
        self.conditional_queries = ConditionalQueries(dim) if cfg.num_conditional else None
        self.prompted_queries = PromptedQueries(dim)
        self.decoder = Decoder(dim, cfg.num_heads, cfg.ffn_dim, cfg.dec_layers, NUM_LEVELS, cfg.dec_points, cfg.dropout)
        self.class_head = ClassHead(dim)
        self.mask_head = MaskHead(dim, cfg.mask_dim)
        self.region_features = (RegionFeatures(cfg.mask_dim, dim, cfg.region_pool_size) if cfg.region_pool_size
                                else None)
        self.criterion = SetCriterion(cfg)

    @property
    def device(self) -> torch.device:
        return self.text_proj.weight.device

    def encode_text(self, texts: list[str]) -> Tensor:
        """(T, C) projected, normalised prompt embeddings, on the model's device and in its dtype."""
        emb = self.text_encoder.encode(texts).to(self.text_proj.weight)
        return F.normalize(self.text_proj(emb), dim=-1)

    def build_queries(self, memory: Tensor, shapes: list[tuple[int, int]], text: Tensor, mask_map: Tensor,
                      prompts: Prompts | None, mask_features: Tensor,
                      denoising: DenoisingPrompts | None = None) -> tuple[QuerySet, LayerOutputs | None]:
        """Concatenate [learnable | conditional | prompted | denoising] queries; returns them and the encoder
        proposals."""
        b = memory.shape[0]
        contents, refs, interm, num_conditional, num_prompted = [], [], None, 0, 0
        if self.learnable_queries is not None:
            c, r = self.learnable_queries(b)
            contents.append(c)
            refs.append(r)
        if self.conditional_queries is not None:
            c, r, interm = self.conditional_queries(memory, shapes, text, self.cfg.num_conditional)
            if self.cfg.interm_mask_loss and self.training:  # Mask DINO: proposals' masks train the encoder too
                interm.masks = self.mask_head(self.decoder.norm(c), mask_features)
            c = c.detach()
            contents.append(c)
            refs.append(r)
            num_conditional = c.shape[1]
        if prompts is not None:
            contents.append(self.prompted_queries(mask_map, prompts))
            refs.append(prompts.boxes.to(memory.dtype))
            num_prompted = prompts.boxes.shape[1]
        if denoising is not None:
            contents.append(denoising_content(text, denoising))
            refs.append(denoising.boxes.to(memory.dtype))
        queries = QuerySet(torch.cat(contents, 1), torch.cat(refs, 1), self.cfg.num_learnable, num_conditional,
                           num_prompted, 0 if denoising is None else denoising.boxes.shape[1])
        return queries, interm

    def forward(self, images: Tensor, texts: list[str], prompts: Prompts | None = None,
                denoising: DenoisingPrompts | None = None) -> QueryMeldOutput:
        """images (B, 3, S, S) normalised; texts: the T prompts shared by the batch -> per-layer outputs. `denoising`
        (training) adds the noised ground-truth queries after the prompted ones."""
        feats = self.backbone(images)
        enc = self.encoder(feats)
        text = self.encode_text(texts)[None].expand(images.shape[0], -1, -1)  # (T, C) -> (B, T, C)
        queries, interm = self.build_queries(enc.memory, enc.spatial_shapes, text, enc.level_map(0), prompts,
                                             enc.mask_features, denoising)
        dec = self.decoder(queries, enc.memory, enc.spatial_shapes)
        pixels = None if self.region_features is None else self.region_features.pixel_features(enc.mask_features)
        layers = [self.layer_outputs(h, boxes, text, enc.mask_features, pixels)
                  for h, boxes in zip(dec.hidden, dec.boxes)]
        return QueryMeldOutput(layers, interm, queries.num_learnable, queries.num_conditional, queries.num_prompted,
                               queries.num_denoising)

    def layer_outputs(self, hidden: Tensor, boxes: Tensor, text: Tensor, mask_features: Tensor,
                      region_pixels: Tensor | None) -> LayerOutputs:
        """One decoder layer's heads: masks first, so the class head can read the region each query found."""
        masks = self.mask_head(hidden, mask_features)
        if self.region_features is not None:
            hidden = hidden + self.region_features(boxes, masks, region_pixels)
        return LayerOutputs(self.class_head(hidden, text), boxes, masks)

    def compute_loss(self, batch: Batch) -> dict[str, Tensor]:
        """Every named loss term plus "loss", their sum weighted by `criterion.weight_dict`."""
        outputs = self(batch.images, batch.texts, batch.prompts, batch.denoising)
        return self.criterion(outputs, batch.targets, batch.prompt_targets, batch.denoising_targets)

    def save(self, path: str | Path, half: bool = False, record: dict | None = None) -> None:
        """Weights (a shared frozen text encoder ships with its package, so it is not among them) + JSON config."""
        if record is not None:
            self.record = record
        write_checkpoint(path, self.state_dict(), {"config": self.cfg.to_dict(), "record": self.record}, half)


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
    missing = [k for k in own if k not in state]
    if wrong or missing:
        raise CheckpointError(f"{path}: weights do not fit its config ({len(wrong)} unexpected, {len(missing)} missing, "
                              f"e.g. {(wrong + missing)[0]})")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})
    model.record = meta.get("record") or {}
    return model.to(resolve_device(device)).eval()
