"""Training-loss curves from the per-step log that ``runner_evlgen`` writes (``train_loss.jsonl``)."""
from __future__ import annotations

import json
from pathlib import Path

from lavis_evlgen.runners.tracking import LOSS_LOG


def read_losses(run_dir: Path) -> list[tuple[int, float]]:
    """(iteration, loss) pairs of a run folder, in order; a resumed run's repeated steps keep the last value."""
    path = Path(run_dir) / LOSS_LOG
    if not path.exists():
        raise FileNotFoundError(f"no per-step loss log at {path}")
    by_step: dict[int, float] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            by_step[int(record["iteration"])] = float(record["loss"])
    return sorted(by_step.items())


def plot_loss_curve(curves: dict[str, list[tuple[int, float]]] | list[tuple[int, float]], path: Path,
                    title: str = "training loss") -> Path:
    """Save one or several loss curves (raw and smoothed) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not isinstance(curves, dict):
        curves = {"EVLGen": curves}
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, points in curves.items():
        steps = [s for s, _ in points]
        losses = [v for _, v in points]
        line, = ax.plot(steps, losses, alpha=0.3)
        window = max(1, len(losses) // 20)
        smooth = [sum(losses[max(0, i - window + 1):i + 1]) / len(losses[max(0, i - window + 1):i + 1])
                  for i in range(len(losses))]
        ax.plot(steps, smooth, color=line.get_color(), label=name)
    ax.set_xlabel("iteration")
    ax.set_ylabel("caption cross-entropy")
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
