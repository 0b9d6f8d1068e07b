"""MattingNet: a small AEMatter-shaped refinement network (RGB + one-hot trimap -> alpha).

Shape follows AEMatter (Liu et al., ICML 2024) at CPU scale: a conv stem at full resolution, a hierarchical
residual backbone (strides 2/4/8/16), context aggregation blocks that attend within horizontal and vertical
strips on the coarsest feature (long-range context along rows and columns at linear cost), and a U-shaped
decoder with skips back to full resolution. Only the unknown band is predicted:
`alpha = pred * unknown + foreground`, so the known regions stay exactly 0 / 1.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)


@dataclass
class MattingConfig:
    """Architecture hyper-parameters (stored in the checkpoint's JSON)."""

    widths: tuple[int, ...] = (16, 24, 32, 64, 96)  # channels at strides 1, 2, 4, 8, 16
    blocks: tuple[int, ...] = (1, 1, 2, 2)  # residual blocks in the stride 2/4/8/16 stages
    context_blocks: int = 2
    heads: int = 4
    strip: int = 4  # strip thickness (in stride-16 cells) for horizontal / vertical attention
    work_size: int = 512  # inference long side of the unknown band's crop

    def __post_init__(self) -> None:
        self.widths, self.blocks = tuple(self.widths), tuple(self.blocks)
        if len(self.widths) != len(self.blocks) + 1:
            raise ValueError(f"MattingConfig: widths needs one entry more than blocks, got {self.widths}, {self.blocks}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(d: dict) -> "MattingConfig":
        names = {f.name for f in dataclasses.fields(MattingConfig)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"MattingConfig: unknown field(s) {sorted(unknown)}")
        return MattingConfig(**d)


def conv_bn_act(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class ResidualBlock(nn.Module):
    """Two 3x3 convs with an identity skip (ResNet basic block)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(conv_bn_act(channels, channels),
                                  nn.Conv2d(channels, channels, 3, 1, 1, bias=False), nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.body(x))


class StripAttention(nn.Module):
    """Multi-head self-attention among the tokens of each horizontal (or vertical) strip of `strip` rows."""

    def __init__(self, dim: int, heads: int, strip: int, vertical: bool) -> None:
        super().__init__()
        self.heads, self.strip, self.vertical = heads, strip, vertical
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, H, W, C) channels-last, H and W multiples of `strip`."""
        if self.vertical:
            x = x.transpose(1, 2)
        b, h, w, c = x.shape
        s = self.strip
        tokens = x.reshape(b * h // s, s * w, c)  # (B*H/s, s*W, C): one row of tokens per strip
        q, k, v = self.qkv(tokens).reshape(tokens.shape[0], s * w, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # (B*H/s, heads, s*W, C/heads)
        out = self.proj(out.transpose(1, 2).reshape(b, h, w, c))
        return out.transpose(1, 2) if self.vertical else out


class StripContextBlock(nn.Module):
    """AEMatter-style context aggregation: conv position encoding, row-strip then column-strip attention, MLP."""

    def __init__(self, dim: int, heads: int, strip: int) -> None:
        super().__init__()
        self.pos = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)
        self.norm_h, self.norm_v, self.norm_mlp = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn_h = StripAttention(dim, heads, strip, vertical=False)
        self.attn_v = StripAttention(dim, heads, strip, vertical=True)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) -> same shape."""
        x = x + self.pos(x)
        t = x.permute(0, 2, 3, 1)  # (B, H, W, C)
        t = t + self.attn_h(self.norm_h(t))
        t = t + self.attn_v(self.norm_v(t))
        t = t + self.mlp(self.norm_mlp(t))
        return t.permute(0, 3, 1, 2).contiguous()


class DecoderStage(nn.Module):
    """Upsample x2, concatenate the encoder skip of that stride, fuse with two convs."""

    def __init__(self, cin: int, cskip: int, cout: int) -> None:
        super().__init__()
        self.fuse = nn.Sequential(conv_bn_act(cin + cskip, cout), conv_bn_act(cout, cout))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.fuse(torch.cat([x, skip], dim=1))


class MattingNet(nn.Module):
    """alpha = MattingNet(image, trimap_onehot); see the module docstring for the shape."""

    def __init__(self, cfg: MattingConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or MattingConfig()
        w = self.cfg.widths
        self.stem = nn.Sequential(conv_bn_act(6, w[0]), conv_bn_act(w[0], w[0]))
        self.stages = nn.ModuleList(
            nn.Sequential(conv_bn_act(w[i], w[i + 1], stride=2), *[ResidualBlock(w[i + 1]) for _ in range(n)])
            for i, n in enumerate(self.cfg.blocks))
        self.context = nn.Sequential(*[StripContextBlock(w[-1], self.cfg.heads, self.cfg.strip)
                                       for _ in range(self.cfg.context_blocks)])
        self.decoder = nn.ModuleList(DecoderStage(w[i + 1], w[i], w[i]) for i in reversed(range(len(w) - 1)))
        self.head = nn.Conv2d(w[0], 1, 3, 1, 1)
        self.register_buffer("mean", torch.tensor(IMAGE_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGE_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def size_multiple(self) -> int:
        """Inputs are padded to this multiple so every strip at the coarsest stride is whole."""
        return 2 ** len(self.cfg.blocks) * self.cfg.strip

    def forward(self, image: torch.Tensor, trimap_onehot: torch.Tensor) -> torch.Tensor:
        """image (B, 3, H, W) float in [0, 1]; trimap_onehot (B, 3, H, W) = (background, unknown, foreground).

        Returns alpha (B, 1, H, W) in [0, 1], exactly 0 / 1 where the trimap is known.
        """
        h, w = image.shape[-2:]
        m = self.size_multiple
        pad = (0, (-w) % m, 0, (-h) % m)
        x = torch.cat([(image - self.mean) / self.std, trimap_onehot], dim=1)
        x = F.pad(x, pad, mode="replicate")  # (B, 6, H', W') with H', W' multiples of m
        skips = [self.stem(x)]
        for stage in self.stages:
            skips.append(stage(skips[-1]))
        y = self.context(skips[-1])
        for stage, skip in zip(self.decoder, reversed(skips[:-1])):
            y = stage(y, skip)
        pred = torch.sigmoid(self.head(y))[..., :h, :w]
        return pred * trimap_onehot[:, 1:2] + trimap_onehot[:, 2:3]
