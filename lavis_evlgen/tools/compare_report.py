"""The comparison's report: per-method summaries over seeds, time and MACs to target, the Markdown and the plot.

CIDEr is shown x 100. Times are training seconds (optimizer steps only, validation excluded, summed
over a method's stages); MACs are forward connector MACs (``lavis_evlgen.tools.flops``) per sample x
batch x steps, over the stages run so far. With step costs timed in turns (``compare_step_cost``), every
time to a target is also given at those costs: the steps spent in each stage times that stage's median step.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional, Sequence

from lavis_evlgen.tools.compare_curves import (
    Point,
    Spread,
    connector_macs_to,
    differs,
    per_stage_sum,
    spread,
    summary_row,
)
from lavis_evlgen.tools.compare_plan import Method
from lavis_evlgen.tools.flops import format_macs

# What every pair of methods is compared on: (words, key of a method summary or of its reference-target row,
# the factor its means are shown with: CIDEr x100 as in the tables, steps and seconds as they are).
VERDICTS = (("final val CIDEr", "final_val_cider", 100), ("test CIDEr", "test_cider", 100),
            ("steps to the reference's final val CIDEr", "steps_spread", 1),
            ("training seconds to the reference's final val CIDEr", "train_seconds_spread", 1))
STEP_COST_VERDICT = ("seconds to the reference's final val CIDEr at the step costs timed in turns",
                     "cost_seconds_spread", 1)
DIFFERENCE_RULE = ("a difference is called only when it exceeds the sum of the two methods' standard deviations "
                   "over seeds")


def _method_summary(method: Method, lr: dict[str, Any], runs: dict[int, dict[str, Any]],
                    macs: dict[str, int], test_split: str) -> dict[str, Any]:
    seeds = list(runs)
    final = [runs[s]["points"][-1] for s in seeds]
    test = [(runs[s]["test"].get(test_split) or {}).get("CIDEr") for s in seeds]
    return {
        "label": method.label, "lr": lr,
        "stages": [{"name": st.name, "arch": st.model.arch, "model_type": st.model.model_type, "task": st.task,
                    "steps": st.steps, "init_from": st.init_from, "connector_macs_per_sample": macs[st.name]}
                   for st in method.stages],
        "runs": runs,
        "final_val_cider": asdict(spread([p["cider"] for p in final])),
        "test_cider": asdict(spread(test)),
        "train_seconds": asdict(spread([runs[s]["train_seconds"] for s in seeds])),
        "seconds_per_step": asdict(spread([runs[s]["train_seconds"] / max(runs[s]["steps"], 1) for s in seeds])),
        "final_grounding": {key: asdict(spread([p["grounding"].get(key) for p in final]))
                            for key in (final[0]["grounding"] if final else {})},
    }


def _stage_costs(method: Method, step_cost: Optional[dict[str, Any]]) -> Optional[list[tuple[int, float]]]:
    """(steps, median seconds a step) of each of the method's stages, where step costs were timed."""
    if not step_cost:
        return None
    return [(st.steps, step_cost["stages"][f"{method.name}/{st.name}"]["median"]) for st in method.stages]


def _to_target(method: Method, runs: dict[int, dict[str, Any]], macs: dict[str, int], batch: int,
               target: float, step_cost: Optional[dict[str, Any]]) -> dict[str, Any]:
    curves = {seed: [Point(**p) for p in run["points"]] for seed, run in runs.items()}
    row = summary_row(curves, target)
    stage_steps = [(st.steps, macs[st.name]) for st in method.stages]
    row["connector_macs"] = {seed: connector_macs_to(steps, stage_steps, batch) if steps is not None else None
                             for seed, steps in row["steps"].items()}
    row["connector_macs_spread"] = spread(list(row["connector_macs"].values()))
    costs = _stage_costs(method, step_cost)
    if costs is not None:
        row["cost_seconds"] = {seed: per_stage_sum(steps, costs) if steps is not None else None
                               for seed, steps in row["steps"].items()}
        row["cost_seconds_spread"] = spread(list(row["cost_seconds"].values()))
    return {key: asdict(value) if hasattr(value, "__dataclass_fields__") else value for key, value in row.items()}


def build(info: dict[str, Any], methods: Sequence[Method], lrs: dict[str, Any], runs: dict[str, dict[int, Any]],
          macs: dict[str, dict[str, int]], paper: dict[str, Any],
          step_cost: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """The whole report as JSON-ready data; ``step_cost``: ``compare.step_cost``'s timing, if any."""
    summaries = {m.name: _method_summary(m, lrs[m.name], runs[m.name], macs[m.name], info["test_split"])
                 for m in methods}
    for m in methods:
        costs = _stage_costs(m, step_cost)
        if costs is not None:
            summaries[m.name]["budget_seconds_at_step_cost"] = per_stage_sum(sum(n for n, _ in costs), costs)
    targets = {"reference": summaries[info["reference"]]["final_val_cider"]["mean"]}
    if info.get("target_cider") is not None:
        targets["fixed"] = float(info["target_cider"])
    for m in methods:
        summaries[m.name]["to_target"] = {name: _to_target(m, runs[m.name], macs[m.name], info["batch_size"], value,
                                                           step_cost)
                                          for name, value in targets.items()}
    checks = VERDICTS + ((STEP_COST_VERDICT,) if step_cost else ())
    verdicts = [_verdict(summaries, a, b, what, key, scale) for a, b in itertools.combinations(summaries, 2)
                for what, key, scale in checks]
    return {**info, "targets": targets, "methods": summaries, "verdicts": verdicts, "difference_rule": DIFFERENCE_RULE,
            "paper_scale": paper, "step_cost": step_cost}


def _verdict(summaries: dict[str, Any], a: str, b: str, what: str, key: str, scale: int) -> dict[str, Any]:
    """Whether methods ``a`` and ``b`` differ in ``what`` by more than their spread over seeds."""
    def value(name: str) -> dict[str, Any]:
        summary = summaries[name]
        return summary[key] if key in summary else summary["to_target"]["reference"][key]
    first, second = value(a), value(b)
    return {"method": a, "other": b, "what": what, "differs": differs(_spread(first), _spread(second)),
            "method_mean": first["mean"], "other_mean": second["mean"], "scale": scale}


def _spread(data: dict[str, Any]) -> Spread:
    return Spread(**data)


def _cider(data: dict[str, Any]) -> str:
    return _spread(data).text(scale=100)


def _mean_text(mean: float, scale: int) -> str:
    if math.isnan(mean):
        return "not reached"
    return f"{mean * scale:.1f}" if scale != 1 else f"{mean:.0f}"


def _seconds(data: dict[str, Any]) -> str:
    return _spread(data).text(digits=0)


def _macs(data: dict[str, Any]) -> str:
    s = _spread(data)
    if s.n == 0:
        return "not reached"
    body = format_macs(s.mean) + (f" ± {format_macs(s.std)}" if s.n > 1 else "")
    return body + (f" ({s.n} of {s.n + s.missing} seeds)" if s.missing else "")


def markdown(result: dict[str, Any]) -> str:
    """The comparison as a Markdown report."""
    where = result["machine"]
    device = where["gpu"] or (f"CPU only ({where.get('cpu') or where['processor']}, {where['cpu_count']} cores, "
                              f"{where['torch_threads']} torch threads)")
    total = sum(c["seconds"] or 0 for c in result["commands"])
    cpus = sorted({c["machine"].get("cpu") or "not recorded" for c in result["commands"]})
    if len(cpus) > 1:
        device += (f". The commands ran on {len(cpus)} CPUs ({'; '.join(cpus)}): wall times compare only between "
                   "runs of one machine (`commands.json` says which command ran where)")
    lines = [f"# Time to caption quality: {len(result['methods'])} methods, {result['steps']} steps each, "
             f"seeds {result['seeds']}",
             "",
             f"Config `{result['config']}`, model type `{result['model_type']}`, batch {result['batch_size']}, "
             f"validation on `{result['valid_split']}` every {result['eval_every']} steps, ViT features cached: "
             f"{result['feature_cache']}. Machine: {device}; {where['platform']}; torch {where['torch']}. "
             f"{len(result['commands'])} command(s), {total / 3600:.2f} h in all. CIDEr x 100; times are training "
             "seconds (validation excluded); MACs are forward connector MACs.",
             "", "## Learning rate, chosen per method by one rule", "",
             "| method | val CIDEr at the end of the sweep, per lr | chosen lr | how |", "|---|---|---|---|"]
    for s in result["methods"].values():
        tried = ", ".join(f"{lr}: {c * 100:.1f}" for lr, c in s["lr"]["final_val_cider"].items()) or "-"
        lines.append(f"| {s['label']} | {tried} | {s['lr']['lr']:g} | {s['lr']['how']} |")
    lines += ["", "## Result over seeds (mean ± standard deviation)", "",
              "| method | stages (steps) | connector MACs / sample | s / step | training time (s) | final val CIDEr "
              "| test CIDEr | distinct val captions | val shapes named exactly |",
              "|---|---|---|---|---|---|---|---|---|"]
    for s in result["methods"].values():
        stages = " + ".join(f"{st['name']} {st['arch']} ({st['steps']})" for st in s["stages"])
        per_sample = " / ".join(format_macs(st["connector_macs_per_sample"]) for st in s["stages"])
        grounding = s["final_grounding"]
        distinct = _seconds(grounding["distinct_captions"]) if "distinct_captions" in grounding else "-"
        named = _seconds(grounding["shapes_named_exactly"]) if "shapes_named_exactly" in grounding else "-"
        lines.append(f"| {s['label']} | {stages} | {per_sample} | {_spread(s['seconds_per_step']).text(digits=2)} | "
                     f"{_seconds(s['train_seconds'])} | {_cider(s['final_val_cider'])} | {_cider(s['test_cider'])} | "
                     f"{distinct} | {named} |")
    floor = result.get("most_frequent_caption_val_cider")
    if floor is not None:
        lines += ["", "For scale: the most frequent training caption given to every val image scores "
                  f"{floor * 100:.1f}."]
    cost = result.get("step_cost")
    if cost:
        lines += _step_cost_lines(result, cost)
    for name, target in result["targets"].items():
        what = (f"the final val CIDEr of `{result['reference']}`" if name == "reference" else "a fixed target")
        lines += ["", f"## Time to val CIDEr {target * 100:.1f} ({what})", "",
                  "| method | steps | training time (s) | connector MACs |"
                  + (" time at the step costs (s) |" if cost else ""),
                  "|---|---|---|---|" + ("---|" if cost else "")]
        for s in result["methods"].values():
            row = s["to_target"][name]
            lines.append(f"| {s['label']} | {_seconds(row['steps_spread'])} | "
                         f"{_seconds(row['train_seconds_spread'])} | {_macs(row['connector_macs_spread'])} |"
                         + (f" {_seconds(row['cost_seconds_spread'])} |" if cost else ""))
    lines += ["", "## Differences between methods", "", f"Rule: {result['difference_rule']}.", ""]
    for v in result["verdicts"]:
        a, b = (result["methods"][v[k]]["label"] for k in ("method", "other"))
        means = f"{_mean_text(v['method_mean'], v['scale'])} vs {_mean_text(v['other_mean'], v['scale'])}"
        lines.append(f"- {a} vs {b}, {v['what']} ({means}): "
                     + ("differs by more than the spread" if v["differs"] else "no conclusion (within the spread, "
                        "or too few seeds reached it)"))
    paper = result.get("paper_scale") or {}
    if paper:
        lines += ["", "## Paper scale, on paper (connector MACs, forward, whole schedule)", "",
                  "| schedule | configs | connector MACs | ratio to the first |", "|---|---|---|---|"]
        for label, sched in paper["schedules"].items():
            configs = ", ".join(f"`{c}`" for c in sched["configs"])
            lines.append(f"| {label} | {configs} | {sched['connector_macs_forward'] / 1e18:.2f} x 10^18 | "
                         f"{sched['ratio_to_first']:.2f} |")
    return "\n".join(lines) + "\n"


def _step_cost_lines(result: dict[str, Any], cost: dict[str, Any]) -> list[str]:
    machine = cost["machine"]
    where = machine["gpu"] or machine.get("cpu") or machine["processor"]
    lines = ["", "## Step cost, timed in turns in one process", "",
             f"Every stage's `runner.train_step`, the stages taking turns step by step ({cost['steps']} timed rounds "
             f"after {cost['warmup']} untimed; {where}), so a slow spell of the machine slows them alike.",
             "", "| method | stage | s / step, median (quartiles) | steps in the budget | budget at this cost (s) |",
             "|---|---|---|---|---|"]
    for name, s in result["methods"].items():
        for st in s["stages"]:
            c = cost["stages"][f"{name}/{st['name']}"]
            lines.append(f"| {s['label']} | {st['name']} | {c['median']:.3f} ({c['q1']:.3f}-{c['q3']:.3f}) | "
                         f"{st['steps']} | {st['steps'] * c['median']:.0f} |")
    return lines


def plot(result: dict[str, Any], path: Path) -> Path:
    """Val CIDEr against training time, one line per method (colour) and seed (line style); targets dashed, the
    most frequent caption's score dotted. With step costs timed in turns, a second panel puts every point at its
    time at those costs, which the machine's drift during training does not move."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cost = result.get("step_cost")
    panels = [("training time (s, validation excluded)", "as trained", None)]
    if cost:
        panels.append(("time at the step costs timed in turns (s)", "at the step costs", cost))
    fig, axes = plt.subplots(1, len(panels), figsize=(9 * len(panels), 5), squeeze=False)
    for ax, (xlabel, title, timing) in zip(axes[0], panels):
        _plot_panel(ax, result, timing)
        ax.set(xlabel=xlabel, ylabel=f"val CIDEr x 100 ({result['valid_split']})",
               title=f"Val CIDEr against training time, {title}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def point_seconds(name: str, summary: dict[str, Any], points: Sequence[dict[str, Any]],
                  cost: Optional[dict[str, Any]]) -> list[float]:
    """Each validation point's training seconds, or with ``cost`` (``step_cost.json``) its steps at the step costs
    of the stages they fell in (``summary``: the report's entry of method ``name``)."""
    if not cost:
        return [p["train_seconds"] for p in points]
    stage_costs = [(st["steps"], cost["stages"][f"{name}/{st['name']}"]["median"]) for st in summary["stages"]]
    return [per_stage_sum(p["steps"], stage_costs) for p in points]


def _plot_panel(ax: Any, result: dict[str, Any], cost: Optional[dict[str, Any]]) -> None:
    """One panel of ``plot``: x is each point's training seconds, or with ``cost`` its steps at the step costs."""
    styles = ["-", "--", ":", "-."]
    for i, (name, summary) in enumerate(result["methods"].items()):
        for j, (seed, run) in enumerate(summary["runs"].items()):
            points = run["points"]
            ax.plot(point_seconds(name, summary, points, cost), [p["cider"] * 100 for p in points], color=f"C{i}",
                    linestyle=styles[j % len(styles)], marker="o", markersize=3,
                    label=f"{summary['label']}, seed {seed}")
    lines = {f"target: {name}": (value, "--") for name, value in result["targets"].items()}
    if result.get("most_frequent_caption_val_cider") is not None:
        lines["most frequent caption"] = (result["most_frequent_caption_val_cider"], ":")
    for text, (value, style) in lines.items():
        ax.axhline(value * 100, color="grey", linestyle=style, linewidth=1)
        ax.text(0.01, value * 100, text, transform=ax.get_yaxis_transform(), fontsize=7, color="grey", va="bottom")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
