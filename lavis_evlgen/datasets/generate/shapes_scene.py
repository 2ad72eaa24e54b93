"""Scenes of one to three coloured shapes on a 3x3 grid, and the captions that describe them.

The grammar is chosen so that a caption is fully determined by the image:

* one shape: its size, colour, kind and grid cell ("a small blue square in the top left");
* two shapes in one grid row (or column): their left-to-right (top-to-bottom) relation
  ("a large red circle left of a small blue square");
* three shapes filling one grid row (or column): their order ("..., ... and ... from left to right").

Shapes in a row share the row's centre line up to a small jitter, so "left of" / "above" are never
ambiguous. Within an image every colour-shape pair is distinct. Each image gets 3 to 4 reference
captions from paraphrase templates (both orders of a relation are valid references).

Held-out pairs (:data:`HELD_OUT_PAIRS`) never occur in train or val; a fraction of the test images
contains at least one of them, so test CIDEr on those images measures composition of seen
attributes rather than recall. Every colour and every shape still occurs in training.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (40, 160, 60),
    "blue": (40, 80, 215),
    "yellow": (240, 205, 30),
    "purple": (135, 55, 175),
    "orange": (245, 130, 20),
}
SHAPES = ("circle", "square", "triangle", "star", "cross")
SIZES: dict[str, float] = {"small": 0.14, "large": 0.28}  # diameter as a fraction of the image side
HELD_OUT_PAIRS: frozenset[tuple[str, str]] = frozenset(
    {("red", "triangle"), ("green", "circle"), ("blue", "star"), ("yellow", "square"), ("purple", "cross")}
)
ALL_PAIRS = tuple((c, s) for c in COLORS for s in SHAPES)
SEEN_PAIRS = tuple(p for p in ALL_PAIRS if p not in HELD_OUT_PAIRS)

GRID = 3
CELL_NAMES = {
    (0, 0): "in the top left", (0, 1): "at the top", (0, 2): "in the top right",
    (1, 0): "on the left", (1, 1): "in the center", (1, 2): "on the right",
    (2, 0): "in the bottom left", (2, 1): "at the bottom", (2, 2): "in the bottom right",
}
LAYOUT_WEIGHTS = {"single": 0.3, "pair_row": 0.2, "pair_column": 0.2, "triple_row": 0.15, "triple_column": 0.15}
MAX_JITTER = 0.05  # of the image side, so shapes in one row stay on one line


@dataclass(frozen=True)
class Shape:
    """One drawn shape: attributes and centre in pixels."""

    kind: str
    color: str
    size: str
    cx: float
    cy: float

    def phrase(self) -> str:
        return f"a {self.size} {self.color} {self.kind}"


@dataclass(frozen=True)
class Scene:
    """Shapes ordered left-to-right (rows) or top-to-bottom (columns); ``cell`` for single shapes."""

    layout: str
    shapes: tuple[Shape, ...]
    cell: tuple[int, int] | None = None

    def pairs(self) -> set[tuple[str, str]]:
        return {(s.color, s.kind) for s in self.shapes}


def _place(rng: np.random.Generator, row: int, col: int, size: str, image_size: int) -> tuple[float, float]:
    """Centre of a shape in grid cell (row, col), jittered without leaving the cell."""
    cell = image_size / GRID
    slack = (cell - SIZES[size] * image_size) / 2
    jitter = min(slack, MAX_JITTER * image_size)
    dx, dy = rng.uniform(-jitter, jitter, size=2)
    return (col + 0.5) * cell + dx, (row + 0.5) * cell + dy


def _attributes(rng: np.random.Generator, n: int, with_held_out: bool) -> list[tuple[str, str, str]]:
    """``n`` distinct (colour, kind) pairs with sizes; one pair is held out iff ``with_held_out``."""
    chosen: list[tuple[str, str]] = []
    if with_held_out:
        held = sorted(HELD_OUT_PAIRS)
        chosen.append(held[rng.integers(len(held))])
    while len(chosen) < n:
        pair = SEEN_PAIRS[rng.integers(len(SEEN_PAIRS))]
        if pair not in chosen:
            chosen.append(pair)
    order = rng.permutation(n)
    sizes = rng.choice(list(SIZES), size=n)
    return [(chosen[i][0], chosen[i][1], str(sz)) for i, sz in zip(order, sizes)]


def sample_scene(rng: np.random.Generator, image_size: int, with_held_out: bool = False) -> Scene:
    """Draw a random scene; ``with_held_out`` forces exactly one held-out colour-shape pair."""
    layouts = list(LAYOUT_WEIGHTS)
    layout = layouts[rng.choice(len(layouts), p=list(LAYOUT_WEIGHTS.values()))]
    n = {"single": 1, "pair_row": 2, "pair_column": 2, "triple_row": 3, "triple_column": 3}[layout]
    attrs = _attributes(rng, n, with_held_out)
    line = int(rng.integers(GRID))
    if layout == "single":
        slots = [(line, int(rng.integers(GRID)))]
    else:
        positions = sorted(rng.choice(GRID, size=n, replace=False).tolist())
        slots = [(line, p) if layout.endswith("row") else (p, line) for p in positions]
    shapes = []
    for (color, kind, size), (row, col) in zip(attrs, slots):
        cx, cy = _place(rng, row, col, size, image_size)
        shapes.append(Shape(kind, color, size, float(cx), float(cy)))
    return Scene(layout, tuple(shapes), slots[0] if layout == "single" else None)


def captions(scene: Scene) -> tuple[str, ...]:
    """Reference captions of ``scene`` (paraphrases; each one fully describes the image)."""
    p = [s.phrase() for s in scene.shapes]
    if scene.layout == "single":
        where = CELL_NAMES[scene.cell]
        return (f"{p[0]} {where}", f"there is {p[0]} {where}", f"{where} there is {p[0]}")
    if scene.layout == "pair_row":
        return (f"{p[0]} left of {p[1]}", f"{p[0]} to the left of {p[1]}",
                f"{p[1]} right of {p[0]}", f"{p[1]} to the right of {p[0]}")
    if scene.layout == "pair_column":
        return (f"{p[0]} above {p[1]}", f"{p[0]} on top of {p[1]}",
                f"{p[1]} below {p[0]}", f"{p[1]} under {p[0]}")
    if scene.layout == "triple_row":
        return (f"{p[0]}, {p[1]} and {p[2]} from left to right",
                f"from left to right {p[0]}, {p[1]} and {p[2]}",
                f"{p[0]} left of {p[1]} which is left of {p[2]}")
    return (f"{p[0]}, {p[1]} and {p[2]} from top to bottom",
            f"from top to bottom {p[0]}, {p[1]} and {p[2]}",
            f"{p[0]} above {p[1]} which is above {p[2]}")
