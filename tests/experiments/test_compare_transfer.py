"""The comparison's transfer analyses without Ray: the layer-wise plan, records, aggregation, tables and plots,
and the low-shot curve."""
import json

import pytest

from patchray import config as configlib
from patchray.experiments.compare_inits import (
    CompareConfig,
    LayerRun,
    aggregate,
    aggregate_layers,
    format_result,
    layer_points,
    layerwise_markdown,
    plan_layer_runs,
    write_outputs,
)
from patchray.report.compare_plots import layerwise_figure, low_shot_figure

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _test(ma):
    return {"mA": ma, "mAP": ma - 0.2, "mBER": 1 - ma, "orientation_accuracy": None}


def _run(budget, seed, init, ma):
    return {"budget": budget, "seed": seed, "init": init, "test": _test(ma), "curve": [(1, ma - 0.05), (2, ma)],
            "wall_s": 10.0}


def _layer(budget, seed, mode, blocks, ma):
    return {"budget": budget, "seed": seed, "mode": mode, "blocks": blocks, "run": "r", "test": _test(ma),
            "wall_s": 10.0}


def test_the_plan_names_runs_by_what_they_do_and_shares_the_runs_two_modes_make():
    plan = plan_layer_runs([4, 0, 2], ["finetune", "frozen"], block_count=4)
    assert plan == [LayerRun(0, "finetune", 0, "k0-finetune"), LayerRun(0, "frozen", 0, "k0-finetune"),
                    LayerRun(2, "finetune", 0, "k2-finetune"), LayerRun(2, "frozen", 2, "k2-frozen"),
                    LayerRun(4, "finetune", 0, None), LayerRun(4, "frozen", 4, "k4-frozen")]
    # the comparison freezing a block itself: mode finetune keeps that, frozen freezes the k copied blocks
    assert plan_layer_runs([1, 3], ["frozen", "finetune"], 4, freeze_blocks=1) == [
        LayerRun(1, "frozen", 1, "k1-finetune"), LayerRun(1, "finetune", 1, "k1-finetune"),
        LayerRun(3, "frozen", 3, "k3-frozen"), LayerRun(3, "finetune", 1, "k3-finetune")]
    assert plan_layer_runs([], ["finetune", "frozen"], 4) == []


def test_layer_points_run_each_folder_once_and_take_the_full_run_from_the_comparison():
    calls = []

    def finetune(name, **settings):
        calls.append((name, settings))
        return {"test": _test(0.5 + 0.01 * settings["transfer_blocks"]), "wall_s": 3.0}

    runs = [_run(250, 1, "random", 0.5), _run(250, 1, "patchtask", 0.6)]
    plan = plan_layer_runs([0, 2, 4], ["finetune", "frozen"], 4)
    records = layer_points(plan, 250, 1, runs, finetune)
    assert calls == [
        ("labels250-seed1-patchtask-k0-finetune", {"seed": 1, "labels": 250, "transfer_blocks": 0, "freeze_blocks": 0}),
        ("labels250-seed1-patchtask-k2-finetune", {"seed": 1, "labels": 250, "transfer_blocks": 2, "freeze_blocks": 0}),
        ("labels250-seed1-patchtask-k2-frozen", {"seed": 1, "labels": 250, "transfer_blocks": 2, "freeze_blocks": 2}),
        ("labels250-seed1-patchtask-k4-frozen", {"seed": 1, "labels": 250, "transfer_blocks": 4, "freeze_blocks": 4})]
    assert [(r["mode"], r["blocks"], r["run"], r["test"]["mA"]) for r in records] == [
        ("finetune", 0, "labels250-seed1-patchtask-k0-finetune", 0.5),
        ("frozen", 0, "labels250-seed1-patchtask-k0-finetune", 0.5),
        ("finetune", 2, "labels250-seed1-patchtask-k2-finetune", 0.52),
        ("frozen", 2, "labels250-seed1-patchtask-k2-frozen", 0.52),
        ("finetune", 4, "labels250-seed1-patchtask", 0.6),  # the comparison's own patchtask run
        ("frozen", 4, "labels250-seed1-patchtask-k4-frozen", 0.54)]
    assert all(r["budget"] == 250 and r["seed"] == 1 for r in records)


def _layer_result():
    """Two budgets, two seeds; layer-wise at 250 labels only for k 0 and 2, both modes."""
    runs = [_run(b, s, init, ma) for b, s, init, ma in [
        (250, 0, "random", 0.50), (250, 1, "random", 0.52), (250, 0, "patchtask", 0.60), (250, 1, "patchtask", 0.56),
        (1000, 0, "random", 0.64), (1000, 1, "random", 0.66), (1000, 0, "patchtask", 0.68),
        (1000, 1, "patchtask", 0.70)]]
    layer_runs = [_layer(250, s, mode, k, ma) for s, mode, k, ma in [
        (0, "finetune", 0, 0.50), (1, "finetune", 0, 0.54), (0, "frozen", 0, 0.50), (1, "frozen", 0, 0.54),
        (0, "finetune", 2, 0.58), (1, "finetune", 2, 0.60), (0, "frozen", 2, 0.55), (1, "frozen", 2, 0.49)]]
    result = aggregate(runs, ["random", "patchtask"], [250, 1000]) | {"wall_s": 120.0}
    result["layerwise"] = {"block_count": 4, "model": "tiny_d25",
                           "table": aggregate_layers(layer_runs, [250], ["finetune", "frozen"], [2, 0])}
    return result, runs, layer_runs


def test_aggregate_layers_means_and_stds_over_seeds():
    result, _, _ = _layer_result()
    table = result["layerwise"]["table"]
    assert [(r["budget"], r["mode"], r["blocks"], r["seeds"]) for r in table] == [
        (250, "finetune", 0, 2), (250, "finetune", 2, 2), (250, "frozen", 0, 2), (250, "frozen", 2, 2)]
    frozen2 = table[3]
    assert frozen2["mA"]["mean"] == pytest.approx(0.52) and frozen2["mA"]["std"] == pytest.approx(0.03)
    assert frozen2["mAP"]["mean"] == pytest.approx(0.32) and frozen2["orientation_accuracy"]["mean"] is None
    assert table[1]["mA"]["mean"] == pytest.approx(0.59) and table[1]["mA"]["std"] == pytest.approx(0.01)
    # a k no run reached: counted as no seed, no score
    empty = aggregate_layers([], [250], ["frozen"], [1])
    assert empty[0]["seeds"] == 0 and empty[0]["mA"] == {"mean": None, "std": None}


def test_layerwise_table_brackets_each_budgets_rows_with_its_reference_runs():
    result, _, _ = _layer_result()
    text = layerwise_markdown(result)
    lines = [line for line in text.splitlines() if line.startswith("| 250 ")]
    assert lines == [
        "| 250 | none: random init | reference | 51.0 ± 1.0 | 31.0 ± 1.0 | 49.0 ± 1.0 | 2 |",
        "| 250 | 0 | finetune | 52.0 ± 2.0 | 32.0 ± 2.0 | 48.0 ± 2.0 | 2 |",
        "| 250 | 2 | finetune | 59.0 ± 1.0 | 39.0 ± 1.0 | 41.0 ± 1.0 | 2 |",
        "| 250 | 0 | frozen | 52.0 ± 2.0 | 32.0 ± 2.0 | 48.0 ± 2.0 | 2 |",
        "| 250 | 2 | frozen | 52.0 ± 3.0 | 32.0 ± 3.0 | 48.0 ± 3.0 | 2 |",
        "| 250 | all 4: patchtask init | reference | 58.0 ± 2.0 | 38.0 ± 2.0 | 42.0 ± 2.0 | 2 |"]
    assert "| labels | blocks copied (k) | mode | mA | mAP | mBER | seeds |" in text
    assert "first k of the tiny_d25 trunk's 4 blocks" in text and "| 1000 " not in text


def test_low_shot_figure_has_a_line_per_init_over_the_budgets_on_a_log_axis():
    result, _, _ = _layer_result()
    table = result["table"] + [{"budget": 250, "init": "imagenet", "seeds": 1, "mA": {"mean": 0.7, "std": 0.0}},
                               {"budget": 1000, "init": "imagenet", "seeds": 0, "mA": {"mean": None, "std": None}}]
    fig = low_shot_figure(table)
    (ax,) = fig.axes
    assert ax.get_xscale() == "log"
    lines = {c.get_label(): c.lines[0] for c in ax.containers}
    assert list(lines) == ["random", "patchtask", "imagenet"]
    assert list(lines["random"].get_xdata()) == [250, 1000]
    assert list(lines["random"].get_ydata()) == pytest.approx([0.51, 0.65])
    assert list(lines["imagenet"].get_xdata()) == [250]  # the budget it has no score at is left out
    err = ax.containers[1].lines[2][0].get_segments()  # patchtask's error bar at 250: 0.58 ± 0.02
    assert [tuple(p) for p in err[0]] == [pytest.approx((250, 0.56)), pytest.approx((250, 0.60))]


def test_layerwise_figure_has_a_panel_per_budget_a_line_per_mode_and_both_reference_lines():
    result, _, _ = _layer_result()
    layer = result["layerwise"]
    fig = layerwise_figure(layer["table"], result["table"], layer["block_count"])
    (ax,) = fig.axes  # layer-wise runs at one budget
    modes = {c.get_label(): c.lines[0] for c in ax.containers}
    assert list(modes) == ["finetune", "frozen"]
    assert list(modes["frozen"].get_xdata()) == pytest.approx([0.04, 2.04])  # set beside finetune's points
    assert list(modes["frozen"].get_ydata()) == pytest.approx([0.52, 0.52])
    references = {line.get_label(): line.get_ydata()[0] for line in ax.lines if "reference" in line.get_label()}
    assert references == {"patchtask, every block (reference)": pytest.approx(0.58),
                          "random (reference)": pytest.approx(0.51)}
    assert list(ax.get_xticks()) == [0, 1, 2, 3, 4] and "250 labels" in ax.get_title()

    two = layer["table"] + [r | {"budget": 1000} for r in layer["table"]]
    assert len(layerwise_figure(two, result["table"], 4).axes) == 2


def test_outputs_of_a_comparison_with_two_budgets_and_layers(tmp_path):
    result, runs, layer_runs = _layer_result()
    write_outputs(tmp_path, result, runs, layer_runs)
    for name in ("low_shot.png", "layerwise.png", "comparison.png", "learning_curves.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG_MAGIC, name
        assert (tmp_path / name).stat().st_size > 5000, name
    assert "| 250 | 2 | frozen | 52.0 ± 3.0 |" in (tmp_path / "layerwise.md").read_text()
    comparison = (tmp_path / "comparison.md").read_text()
    assert "- low_shot.png: test mA by label budget" in comparison and "- layerwise.md: layer-wise" in comparison
    saved = json.loads((tmp_path / "comparison.json").read_text())
    assert saved["layerwise_runs"] == layer_runs and saved["result"]["layerwise"]["block_count"] == 4
    summary = format_result(result, tmp_path)
    assert "    250 labels, frozen: k=0 52.0, k=2 52.0" in summary
    assert "low_shot.png, layerwise.md, layerwise.png, runs/" in summary

    # the same folder, now one budget and no layers: no low-shot curve, no layer-wise files left behind
    one = aggregate([r for r in runs if r["budget"] == 250], ["random", "patchtask"], [250]) | {"wall_s": 1.0}
    write_outputs(tmp_path, one, [r for r in runs if r["budget"] == 250])
    assert not any((tmp_path / name).exists() for name in ("low_shot.png", "layerwise.md", "layerwise.png"))
    assert "low_shot" not in (tmp_path / "comparison.md").read_text()
    assert json.loads((tmp_path / "comparison.json").read_text())["layerwise_runs"] == []


def test_layer_settings_are_checked_when_the_config_loads():
    cfg = configlib.load(CompareConfig, None, ["layers=[0, 2, 4]", "layer_modes=[frozen]"])
    assert cfg.layers == [0, 2, 4] and cfg.layer_modes == ["frozen"]
    assert CompareConfig().layers == [] and CompareConfig().layer_modes == ["finetune", "frozen"]
    with pytest.raises(configlib.ConfigError, match="transfer_blocks=5, but trunk 'tiny_d25' has 4 blocks"):
        configlib.load(CompareConfig, None, ["layers=[1, 5]"])
    with pytest.raises(configlib.ConfigError, match="take each value once"):
        configlib.load(CompareConfig, None, ["layers=[1, 1]"])
    with pytest.raises(configlib.ConfigError, match="not one of \\['finetune', 'frozen'\\]"):
        configlib.load(CompareConfig, None, ["layers=[1]", "layer_modes=[linear]"])
    with pytest.raises(configlib.ConfigError, match="at least one of 'finetune', 'frozen'"):
        configlib.load(CompareConfig, None, ["layers=[1]", "layer_modes=[]"])
    with pytest.raises(configlib.ConfigError, match="layer-wise runs take theirs from layers"):
        configlib.load(CompareConfig, None, ["finetune.init=imagenet", "finetune.transfer_blocks=2"])
