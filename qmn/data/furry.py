"""Soft-edged hairy / furry foreground objects with an exact alpha, composited over textured backgrounds.

Why: matting needs ground-truth alpha, and no licence-clean hair/fur matting set ships with the product.
Each object is a body (smooth random outline, softened edge) grown with anti-aliased strands (hair/fur)
or blurred into a fluffy cloud; thin strands are drawn at 2x and area-downsampled so their partial pixel
coverage becomes fractional alpha. `image = alpha * fg + (1 - alpha) * bg` holds exactly (before rounding).
"""
from __future__ import annotations

import cv2
import numpy as np

SUPERSAMPLE = 2  # strands are rasterised at this factor, then area-averaged into fractional alpha
STYLES = ("fur ball", "long hair", "fluffy cloud", "spiky plant")


def render_furry(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """One composite: (image uint8 (S,S,3), alpha float32 (S,S) in [0,1], fg uint8 (S,S,3), label str)."""
    if size < 16:
        raise ValueError(f"render_furry: size must be >= 16, got {size}")
    style = STYLES[int(rng.integers(len(STYLES)))]
    alpha = _render_alpha(rng, size, style)
    fg = _textured_layer(rng, size, contrast=0.25)
    bg = _textured_layer(rng, size, contrast=0.6)
    a = alpha[..., None]
    image = a * fg.astype(np.float32) + (1.0 - a) * bg.astype(np.float32)
    return np.clip(image + 0.5, 0, 255).astype(np.uint8), alpha, fg, style


def _render_alpha(rng: np.random.Generator, size: int, style: str) -> np.ndarray:
    """Alpha (S,S) float32 of one object of `style`, rendered at SUPERSAMPLE x and area-downsampled."""
    big = size * SUPERSAMPLE
    centre = rng.uniform(0.35, 0.65, 2) * big
    radius = rng.uniform(0.12, 0.26) * big
    outline = _blob_outline(rng, centre, radius)  # (P, 2) float xy
    body = np.zeros((big, big), np.uint8)
    cv2.fillPoly(body, [np.round(outline * 16).astype(np.int32)], 255, cv2.LINE_8, shift=4)
    body_alpha = body.astype(np.float32) / 255.0
    edge_sigma = rng.uniform(0.5, 3.0) * SUPERSAMPLE
    if style == "fluffy cloud":
        edge_sigma = rng.uniform(4.0, 10.0) * SUPERSAMPLE
    body_alpha = cv2.GaussianBlur(body_alpha, (0, 0), edge_sigma)
    if style == "fluffy cloud":
        strands = np.zeros_like(body_alpha)
    else:
        strands = _strand_coverage(rng, outline, centre, radius, big, style)
    alpha = 1.0 - (1.0 - body_alpha) * (1.0 - strands)
    alpha = cv2.resize(alpha, (size, size), interpolation=cv2.INTER_AREA)
    return np.clip(alpha, 0.0, 1.0).astype(np.float32)


def _blob_outline(rng: np.random.Generator, centre: np.ndarray, radius: float, points: int = 180) -> np.ndarray:
    """Closed smooth outline (P, 2): radius modulated by a few random low-frequency harmonics."""
    theta = np.linspace(0.0, 2.0 * np.pi, points, endpoint=False)
    r = np.ones_like(theta)
    for k in range(2, 6):
        r += rng.uniform(0.0, 0.25 / k) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    stretch = rng.uniform(0.7, 1.3)
    return np.stack([centre[0] + radius * r * np.cos(theta) * stretch,
                     centre[1] + radius * r * np.sin(theta) / stretch], axis=1)


def _strand_coverage(rng: np.random.Generator, outline: np.ndarray, centre: np.ndarray, radius: float,
                     big: int, style: str) -> np.ndarray:
    """Coverage (big, big) in [0,1] of curved strands rooted on the outline, grouped in opacity layers."""
    count = int(rng.integers(150, 600))
    length_scale = {"fur ball": (0.08, 0.3), "long hair": (0.3, 0.8), "spiky plant": (0.15, 0.45)}[style]
    curl = {"fur ball": 0.15, "long hair": 0.08, "spiky plant": 0.02}[style]
    roots = outline[rng.integers(0, len(outline), count)]
    coverage_free = np.ones((big, big), np.float32)  # product of (1 - layer) over opacity layers
    for opacity in np.linspace(0.35, 1.0, 4):
        layer = np.zeros((big, big), np.uint8)
        idx = rng.random(count) < 0.25
        polylines = []
        for root in roots[idx]:
            direction = np.arctan2(root[1] - centre[1], root[0] - centre[0]) + rng.normal(0, 0.35)
            length = rng.uniform(*length_scale) * radius
            segments = 6
            turn = rng.normal(0, curl)
            points = [root - 0.15 * length * np.array([np.cos(direction), np.sin(direction)])]
            for _ in range(segments):
                direction += turn + rng.normal(0, curl * 0.5)
                points.append(points[-1] + length / segments * np.array([np.cos(direction), np.sin(direction)]))
            polylines.append(np.round(np.array(points) * 16).astype(np.int32))
        thickness = 1 if style != "spiky plant" else 2
        cv2.polylines(layer, polylines, False, 255, thickness, cv2.LINE_AA, shift=4)
        coverage_free *= 1.0 - opacity * layer.astype(np.float32) / 255.0
    return 1.0 - coverage_free


def _textured_layer(rng: np.random.Generator, size: int, contrast: float) -> np.ndarray:
    """Colour texture (S,S,3) uint8: a base colour with smooth noise, stripes or checks scaled by `contrast`."""
    base = rng.uniform(20, 235, 3).astype(np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    kind = int(rng.integers(4))
    if kind == 0:  # smooth noise
        pattern = cv2.resize(rng.normal(0, 1, (int(rng.integers(3, 12)),) * 2).astype(np.float32),
                             (size, size), interpolation=cv2.INTER_CUBIC)
    elif kind == 1:  # stripes at a random angle
        angle, freq = rng.uniform(0, np.pi), rng.uniform(3, 20)
        pattern = np.sin(2 * np.pi * freq * (xx * np.cos(angle) + yy * np.sin(angle)))
    elif kind == 2:  # checkerboard
        freq = rng.uniform(3, 12)
        pattern = np.sign(np.sin(2 * np.pi * freq * xx) * np.sin(2 * np.pi * freq * yy))
    else:  # fine grain noise (sand, carpet)
        pattern = cv2.GaussianBlur(rng.normal(0, 1, (size, size)).astype(np.float32), (0, 0), rng.uniform(0.5, 2))
        pattern /= pattern.std() + 1e-6
    tint = rng.uniform(-1, 1, 3).astype(np.float32)
    gradient = (xx - 0.5) * rng.uniform(-60, 60) + (yy - 0.5) * rng.uniform(-60, 60)
    layer = base + gradient[..., None] + pattern[..., None] * (60.0 * contrast) * (1.0 + 0.5 * tint)
    return np.clip(layer, 0, 255).astype(np.uint8)
