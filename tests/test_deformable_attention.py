"""Multi-scale deformable attention against a point-by-point bilinear reference (the level-by-level sum is an
optimisation; this pins what it computes), and its float32 sampling under bfloat16 autocast."""
from __future__ import annotations

import math

import torch

from qmn.deformable_attention import ms_deform_attn_core


def bilinear(image: torch.Tensor, x: float, y: float) -> torch.Tensor:
    """image (C, h, w) at normalised (x, y) in [0, 1], align_corners=False, zeros outside."""
    _, h, w = image.shape
    px, py = x * w - 0.5, y * h - 0.5
    x0, y0 = math.floor(px), math.floor(py)
    out = torch.zeros(image.shape[0], dtype=torch.float64)
    for xi, yi in ((x0, y0), (x0 + 1, y0), (x0, y0 + 1), (x0 + 1, y0 + 1)):
        if 0 <= xi < w and 0 <= yi < h:
            out += (1 - abs(px - xi)) * (1 - abs(py - yi)) * image[:, yi, xi].double()
    return out


def test_matches_point_by_point_reference():
    torch.manual_seed(0)
    shapes = [(5, 6), (3, 3)]
    b, heads, dh, q, points = 2, 2, 3, 4, 2
    value = torch.randn(b, sum(h * w for h, w in shapes), heads, dh)
    locations = torch.rand(b, q, heads, len(shapes), points, 2) * 1.2 - 0.1  # some points fall outside
    weights = torch.rand(b, q, heads, len(shapes), points)
    out = ms_deform_attn_core(value, shapes, locations, weights)
    assert out.shape == (b, q, heads * dh)
    levels = value.split([h * w for h, w in shapes], dim=1)
    for i in range(b):
        for j in range(q):
            for m in range(heads):
                expected = torch.zeros(dh, dtype=torch.float64)
                for lvl, (h, w) in enumerate(shapes):
                    image = levels[lvl][i, :, m].T.reshape(dh, h, w)
                    for p in range(points):
                        x, y = locations[i, j, m, lvl, p].tolist()
                        expected += weights[i, j, m, lvl, p].item() * bilinear(image, x, y)
                assert torch.allclose(out[i, j, m * dh:(m + 1) * dh].double(), expected, atol=1e-5)


def test_samples_in_float32_under_bfloat16_autocast():
    torch.manual_seed(0)
    shapes = [(8, 8)]
    value = torch.randn(1, 64, 1, 4)
    locations = torch.rand(1, 5, 1, 1, 3, 2)
    weights = torch.rand(1, 5, 1, 1, 3)
    exact = ms_deform_attn_core(value, shapes, locations, weights)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = ms_deform_attn_core(value.bfloat16(), shapes, locations.bfloat16(), weights.bfloat16())
    assert mixed.dtype == torch.float32
    # only the inputs' bfloat16 rounding remains (bfloat16 sampling would also round the result and the grid)
    rounded = ms_deform_attn_core(value.bfloat16().float(), shapes, locations.bfloat16().float(),
                                  weights.bfloat16().float())
    assert torch.allclose(mixed, rounded, atol=1e-6) and torch.allclose(mixed, exact, atol=0.1)
