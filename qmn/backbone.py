"""Image backbone: any timm model with `features_only`, from scratch, timm hub weights, or a local file."""
from __future__ import annotations

from pathlib import Path

import timm
from torch import Tensor, nn


class Backbone(nn.Module):
    """Multi-scale feature maps (NCHW) at the strides timm reports, e.g. 4/8/16/32.

    `pretrained`: "" (random init), "hub" (timm's pretrained weights; needs a network or a filled cache), or a path to a
    `.safetensors` state dict of the full timm model (classifier keys are ignored). Pickled files are refused.
    """

    def __init__(self, name: str, out_indices: tuple[int, ...] = (), pretrained: str = "") -> None:
        super().__init__()
        self.name = name
        if not out_indices:  # auto: the levels at strides 4, 8, 16, 32, whatever the model's stem does
            info = timm.create_model(name, features_only=True, pretrained=False).feature_info
            by_stride = {r: i for i, r in enumerate(info.reduction())}
            missing = [s for s in (4, 8, 16, 32) if s not in by_stride]
            if missing:
                raise ValueError(f"backbone {name!r} has no feature maps at stride(s) {missing}; set backbone_out_indices")
            out_indices = tuple(by_stride[s] for s in (4, 8, 16, 32))
        kwargs = dict(features_only=True, out_indices=out_indices, pretrained=pretrained == "hub")
        try:  # window / patch transformers (swin, vit) are built for one input size unless told otherwise
            self.body = timm.create_model(name, dynamic_img_size=True, **kwargs)
        except TypeError:  # CNNs take any size and do not know the argument
            self.body = timm.create_model(name, **kwargs)
        if pretrained and pretrained != "hub":
            self.load_weights_file(pretrained)
        self.channels: list[int] = list(self.body.feature_info.channels())
        # timm's swin / some ViT-style models return NHWC feature maps
        self.channels_last_output = getattr(self.body, "output_fmt", "NCHW") == "NHWC"

    def load_weights_file(self, path: str | Path) -> tuple[list[str], list[str]]:
        """Load a local safetensors state dict; returns (missing, unexpected) keys of the feature model."""
        from qmn.checkpoint import read_safetensors

        state = read_safetensors(path)
        own = self.body.state_dict()
        usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        if not usable:
            raise ValueError(f"{path}: no tensor matches backbone {self.name!r} (wrong model file?)")
        result = self.body.load_state_dict(usable, strict=False)
        return list(result.missing_keys), [k for k in state if k not in usable]

    def forward(self, images: Tensor) -> list[Tensor]:
        feats = self.body(images)
        if self.channels_last_output:
            feats = [f.permute(0, 3, 1, 2).contiguous() for f in feats]  # NHWC -> NCHW
        return feats
