"""Token-merge maps (the paper's Figure 4): each image patch coloured by the final token it merged into.

The TomeFormer's source map says, for every output token, which input tokens it covers; with a
class token first and a square patch grid, that gives one token index per patch.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch


@torch.no_grad()
def merge_map(model: torch.nn.Module, image: torch.Tensor, prompt: str | None = None) -> np.ndarray:
    """Index of the final merged token covering each patch, shaped [grid, grid], for one image [3, H, W];
    a question-conditioned connector merges as it does for ``prompt`` (default: the model's own prompt)."""
    was_training = model.training
    model.eval()
    samples = {"image": image[None].to(model.device)}
    samples["condition_text"] = model.prompts_for(samples, 1, prompt)
    _, _, source = model.encode_image(samples, return_source=True)
    model.train(was_training)
    owner = source[0, :, 1:].argmax(dim=0).cpu().numpy()  # [patches]: drop the class token column
    grid = math.isqrt(owner.size)
    if grid * grid != owner.size:
        raise ValueError(f"merge_map needs a square patch grid, got {owner.size} patches")
    return owner.reshape(grid, grid)


def colour_map(owner: np.ndarray, seed: int = 0) -> np.ndarray:
    """RGB image [grid, grid, 3] in [0, 1]: one random colour per token, so each region has one colour."""
    palette = np.random.default_rng(seed).uniform(0.15, 1.0, size=(owner.max() + 1, 3))
    return palette[owner]


def plot_merge_maps(photo: np.ndarray, maps: dict[str, np.ndarray], path: Path, title: str = "") -> Path:
    """Save the photo beside one overlay per map (e.g. before / after training) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(maps) + 1, figsize=(4 * (len(maps) + 1), 4.3))
    axes[0].imshow(photo)
    axes[0].set_title("input")
    height, width = photo.shape[:2]
    for ax, (name, owner) in zip(axes[1:], maps.items()):
        ax.imshow(photo)
        ax.imshow(colour_map(owner), alpha=0.6, extent=(0, width, height, 0), interpolation="nearest")
        ax.set_title(f"{name}: {len(np.unique(owner))} tokens")
    for ax in axes:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
