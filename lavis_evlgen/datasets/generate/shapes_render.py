"""Render a :class:`Scene` as an RGB image: light vertical-gradient background, filled shapes.

Drawn at twice the size and box-downsampled, which anti-aliases edges cheaply.
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from lavis_evlgen.datasets.generate.shapes_scene import COLORS, SIZES, Scene, Shape

SUPERSAMPLE = 2


def _background(rng: np.random.Generator, side: int) -> Image.Image:
    """Vertical gradient between two random light colours."""
    top, bottom = rng.uniform(190, 245, size=(2, 3))
    t = np.linspace(0.0, 1.0, side)[:, None, None]
    rows = ((1 - t) * top + t * bottom).round().astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(np.broadcast_to(rows, (side, side, 3))), "RGB")


def _polygon(kind: str, cx: float, cy: float, radius: float) -> list[tuple[float, float]]:
    """Outline of a triangle, star or cross of circumradius ``radius`` around (cx, cy)."""
    if kind == "triangle":
        angles = [-90, 30, 150]
        return [(cx + radius * math.cos(math.radians(a)), cy + radius * math.sin(math.radians(a))) for a in angles]
    if kind == "star":
        points = []
        for i in range(10):
            r = radius if i % 2 == 0 else radius * 0.45
            a = math.radians(-90 + 36 * i)
            points.append((cx + r * math.cos(a), cy + r * math.sin(a)))
        return points
    arm = radius / 3
    return [(cx + x, cy + y) for x, y in [
        (-arm, -radius), (arm, -radius), (arm, -arm), (radius, -arm), (radius, arm), (arm, arm),
        (arm, radius), (-arm, radius), (-arm, arm), (-radius, arm), (-radius, -arm), (-arm, -arm)]]


def _draw(draw: ImageDraw.ImageDraw, shape: Shape, image_size: int) -> None:
    radius = SIZES[shape.size] * image_size * SUPERSAMPLE / 2
    fill = COLORS[shape.color]
    cx, cy = shape.cx * SUPERSAMPLE, shape.cy * SUPERSAMPLE
    if shape.kind == "circle":
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=fill)
    elif shape.kind == "square":
        half = radius * 0.85
        draw.rectangle([cx - half, cy - half, cx + half, cy + half], fill=fill)
    else:
        draw.polygon(_polygon(shape.kind, cx, cy, radius), fill=fill)


def render(scene: Scene, rng: np.random.Generator, image_size: int) -> Image.Image:
    """The scene as an ``image_size`` x ``image_size`` RGB image (background drawn from ``rng``)."""
    canvas = _background(rng, image_size * SUPERSAMPLE)
    draw = ImageDraw.Draw(canvas)
    for shape in scene.shapes:
        _draw(draw, shape, image_size)
    return canvas.resize((image_size, image_size), Image.Resampling.BOX)
