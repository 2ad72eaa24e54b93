"""The comparison's arithmetic and plan on small hand-made inputs: time to target, seed spread, lr choice, budget
split, and the plan read only from the config."""
import math
from pathlib import Path

import pytest

from lavis_evlgen.common.cli_config import load_config
from lavis_evlgen.common.config_check import ConfigError
from lavis_evlgen.tools import compare_plan
from lavis_evlgen.tools.compare_curves import (
    Point,
    Spread,
    choose_lr,
    connector_macs_to,
    differs,
    first_reach,
    per_stage_sum,
    spread,
    summary_row,
)

REPO = Path(__file__).resolve().parents[2]
CONFIG = str(REPO / "projects/compare/embedded.yaml")


def curve(ciders, every=100, seconds_per_step=2.0):
    return [Point(steps=every * (i + 1), train_seconds=every * (i + 1) * seconds_per_step,
                  wall_seconds=every * (i + 1) * seconds_per_step + 10 * (i + 1), cider=c)
            for i, c in enumerate(ciders)]


def test_time_to_target_is_the_first_validated_point_at_or_above_it():
    points = curve([0.2, 0.7, 0.65, 0.9, 1.2])  # dips after first crossing 0.6: the first crossing counts
    assert first_reach(points, 0.6).steps == 200 and first_reach(points, 0.6).train_seconds == 400.0
    assert first_reach(points, 0.9).steps == 400  # equal to the target reaches it
    assert first_reach(points, 1.21) is None
    assert first_reach(points, 0.0).steps == 100


def test_seeds_are_summarised_by_mean_and_sample_spread():
    s = spread([1.0, 2.0, 4.0])
    assert s.mean == pytest.approx(7 / 3) and s.std == pytest.approx(math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2
                                                                               + (4 - 7 / 3) ** 2) / 2))
    assert (s.n, s.missing) == (3, 0)
    partial = spread([300.0, None, 500.0])  # a seed that never reached the target
    assert (partial.mean, partial.n, partial.missing) == (400.0, 2, 1)
    assert partial.text(digits=0) == "400 ± 141 (2 of 3 seeds)"
    assert spread([None, None]).text() == "not reached"
    one = spread([5.0])
    assert one.n == 1 and math.isnan(one.std)


def test_no_conclusion_from_a_difference_within_the_spread():
    assert differs(Spread(10.0, 1.0, 3), Spread(13.0, 1.0, 3))       # 3 > 1 + 1
    assert not differs(Spread(10.0, 1.0, 3), Spread(11.5, 1.0, 3))   # 1.5 < 2
    assert not differs(Spread(10.0, 0.0, 1), Spread(20.0, 0.0, 3))   # one seed has no spread


def test_summary_row_reads_every_seed():
    row = summary_row({1: curve([0.5, 1.0]), 2: curve([1.1, 1.3]), 3: curve([0.1, 0.2])}, target=1.0)
    assert row["steps"] == {1: 200, 2: 100, 3: None}
    assert row["train_seconds_spread"].mean == 300.0 and row["train_seconds_spread"].missing == 1


def test_lr_choice_rule():
    assert choose_lr({1e-4: 0.5, 2e-4: 0.8, 4e-4: 0.7}) == 2e-4
    assert choose_lr({1e-4: 0.8, 4e-4: 0.8}) == 1e-4  # a tie keeps the smaller lr
    with pytest.raises(ValueError):
        choose_lr({})


def test_connector_macs_count_each_stage_up_to_the_point():
    stages = [(250, 40), (80, 6)]  # steps, MACs per sample
    assert connector_macs_to(100, stages, global_batch=2) == 100 * 40 * 2
    assert connector_macs_to(300, stages, global_batch=2) == (250 * 40 + 50 * 6) * 2
    assert connector_macs_to(10_000, stages, global_batch=1) == 250 * 40 + 80 * 6


def test_time_at_step_costs_counts_each_step_at_its_stages_cost():
    stages = [(455, 1.25), (145, 0.75)]  # steps, seconds a step (stage 1, stage 2)
    assert per_stage_sum(400, stages) == pytest.approx(400 * 1.25)
    assert per_stage_sum(500, stages) == pytest.approx(455 * 1.25 + 45 * 0.75)
    assert per_stage_sum(600, [(600, 0.9)]) == pytest.approx(540.0)


def test_plan_comes_from_the_config_with_blip2s_proportion():
    cfg = load_config(CONFIG, ["compare.steps=330"])
    methods = {m.name: m for m in compare_plan.check_plan(cfg)}
    two = methods["blip2_two_stage"]
    assert [(s.name, s.start, s.steps, s.init_from) for s in two.stages] == [("stage1", 0, 250, None),
                                                                          ("stage2", 250, 80, "stage1")]
    assert [s.task for s in two.stages] == [compare_plan.PRETRAIN_TASK, compare_plan.CAPTION_TASK]  # from LOSSES
    assert methods["evlgen"].steps == methods["blip2_stage2_only"].steps == two.steps == 330
    # A method added in the config alone shows up in the plan.
    cfg = load_config(CONFIG, ["methods.evlgen_opt.stages.caption.model.arch=evlgen_opt"])
    added = compare_plan.check_plan(cfg)[-1]
    assert added.name == "evlgen_opt" and added.stages[0].model.vision.num_layers == 8  # compare.vision for all


def test_the_tools_name_no_method_and_no_model_class():
    """The plan is declared once (the config); the tools ask the models (class attributes), not isinstance."""
    tools = REPO / "lavis_evlgen" / "tools"
    for module in ("compare.py", "compare_plan.py", "compare_report.py", "compare_curves.py", "flops.py"):
        source = (tools / module).read_text()
        for word in ("blip2_two_stage", "blip2_stage2_only", "isinstance(model", "Blip2Stage1", "Blip2Stage2OPT",
                     "EVLGenBase", '"BLIP-2 stage 1"'):
            assert word not in source, (module, word)


STAGE = "methods.evlgen.stages.caption."


@pytest.mark.parametrize("option, key", [
    ("compare.steps=0", r"compare\.steps"),
    ("compare.reference=nothing", r"compare\.reference"),
    ("compare.seeds=[1,1]", r"compare\.seeds"),
    (STAGE + "init_from=stage9", r"methods\.evlgen\.stages\.caption\.init_from"),
    (STAGE + "model.arch=blip2_stage1", r"methods\.evlgen\.stages: the last stage"),
    (STAGE + "model.arch=nothing", r"methods\.evlgen\.stages\.caption\.model\.arch"),
    (STAGE + "proportion=0", r"methods\.evlgen\.stages\.caption\.proportion"),
    ("methods.evlgen.stages=null", r"methods\.evlgen\.stages: a mapping"),
    ("compare.sweep=null", r"compare\.sweep"),
])
def test_bad_plans_are_named(option, key):
    with pytest.raises(ConfigError, match=key):
        compare_plan.check_plan(load_config(CONFIG, [option]))


def test_a_budget_too_small_for_both_stages_is_named():
    with pytest.raises(ConfigError, match=r"methods\.blip2_two_stage\.stages"):
        compare_plan.check_plan(load_config(CONFIG, ["compare.steps=2"]))
