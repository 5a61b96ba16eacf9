"""Fine-tuning and init-comparison plots draw what the attribute set defines (no empty mAP panel or line)."""
import pytest

from patchray.report import plots


@pytest.fixture
def figures(monkeypatch):
    """The figures the plots make, kept open for inspection (and still saved)."""
    from pathlib import Path

    kept = []

    def keep(fig, path):
        kept.append(fig)
        fig.savefig(path)
        return Path(path)

    monkeypatch.setattr(plots, "_save", keep)
    yield kept
    import matplotlib.pyplot as plt

    for fig in kept:
        plt.close(fig)


def _history(map_values):
    return [{"epoch": e, "loss": 1.0 - 0.1 * e, "val_mA": 0.3 + 0.01 * e, "val_mAP": m,
             "val_parse27k_mAP": m} for e, m in enumerate(map_values)]


def test_finetune_curves_without_a_binary_attribute_show_ma_alone(figures, tmp_path):
    path = plots.plot_finetune_curves(_history([None, None]), tmp_path / "c.png", "orientation only")
    assert path.stat().st_size > 0
    score = figures[0].axes[1]
    assert [line.get_label() for line in score.lines] == ["validation mA"]


def test_finetune_curves_with_binary_attributes_show_both_protocols(figures, tmp_path):
    plots.plot_finetune_curves(_history([0.3, 0.4]) + [{"epoch": 2, "loss": 0.5}], tmp_path / "c.png")
    labels = [line.get_label() for line in figures[0].axes[1].lines]
    assert labels == ["validation mA", "validation mAP", "validation mAP (parse27k)"]
    assert list(figures[0].axes[1].lines[0].get_xdata()) == [1, 2]  # the unscored epoch 3 is not drawn


def _row(budget, init, ma, map_):
    return {"budget": budget, "init": init, "seeds": 1, "mA": {"mean": ma, "std": 0.0},
            "mAP": {"mean": map_, "std": None if map_ is None else 0.0}}


def test_init_bars_leave_out_the_map_panel_when_no_run_has_one(figures, tmp_path):
    table = [_row(100, "random", 0.3, None), _row(100, "patchtask", 0.4, None)]
    plots.plot_init_bars(table, tmp_path / "bars.png")
    assert [ax.get_title() for ax in figures[0].axes] == ["Test mA by init"]
    plots.plot_init_bars([_row(100, "random", 0.5, 0.3), _row(100, "patchtask", 0.6, None)], tmp_path / "b2.png")
    assert [ax.get_title() for ax in figures[1].axes] == ["Test mA by init", "Test mAP by init"]


def test_init_curves_fit_low_scores_and_runs_without_curves(figures, tmp_path):
    runs = [{"budget": 100, "init": "random", "curve": [(1, 0.26), (2, 0.31)]},
            {"budget": 100, "init": "patchtask", "curve": [(1, 0.33), (2, None)]},
            {"budget": 200, "init": "random", "curve": []}]
    plots.plot_init_curves(runs, tmp_path / "curves.png")
    first, second = figures[0].axes
    assert first.get_ylim()[0] <= 0.26 and [line.get_label() for line in first.lines] == ["random", "patchtask"]
    assert list(first.lines[1].get_xdata()) == [1]  # the undefined point is left out
    assert not second.lines  # no validation score at 200 labels: an empty panel that says so
    assert any("no validation score" in t.get_text() for t in second.texts)


def test_probe_agreement_plot_is_written(tmp_path):
    from patchray.report.plots import plot_probe_agreement

    result = {"pretext": [{"params": {"patch": 24}, "finetune": 0.55, "probe": 0.51},
                          {"params": {"patch": 32}, "finetune": 0.57, "probe": 0.53}], "spearman": None,
              "kendall": 1.0}
    path = plot_probe_agreement(result, "mA", tmp_path / "agreement.png")
    from PIL import Image

    with Image.open(path) as image:
        assert image.size == (550, 420)
