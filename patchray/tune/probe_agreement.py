"""Does ``objective: probe`` rank pretext configurations as fine-tuning does? Pure arithmetic over the
benchmark's recorded curves (``replay.Curves``) and one probe score per pretext configuration.

A pretext configuration's fine-tuning objective is what a search over the fine-tuning settings would find for
it: the best true value (mean over seeds of the final validation score) over those settings. The agreement is
the rank correlation of the two orderings (Spearman's rho, Kendall's tau), and the regret of the probe's pick:
how many points of the fine-tuning objective are lost by taking the configuration the probe ranks first.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from patchray.tune.replay import Curves

PRETEXT_PREFIX = "pretrain."


def pretext_key(params: Mapping[str, Any]) -> tuple:
    """The pretext part of a configuration's values, as a hashable key."""
    return tuple(sorted((k, v) for k, v in params.items() if k.startswith(PRETEXT_PREFIX)))


def finetune_objective(runs: list[Mapping[str, Any]]) -> dict[tuple, float]:
    """Per pretext configuration: the best, over the fine-tuning settings run with it, of the mean over seeds of
    the final validation score. ``runs``: ``{"pretext": key, "setting": key, "value": final score}`` per run."""
    values: dict[tuple, dict[tuple, list[float]]] = {}
    for run in runs:
        values.setdefault(run["pretext"], {}).setdefault(run["setting"], []).append(float(run["value"]))
    return {pretext: max(sum(v) / len(v) for v in settings.values()) for pretext, settings in values.items()}


def runs_of(curves: Curves) -> list[dict]:
    """The recorded curves as ``finetune_objective``'s runs (their true values: already means over seeds)."""
    return [{"pretext": pretext_key(params), "setting": tuple(sorted((k, v) for k, v in params.items()
                                                                     if not k.startswith(PRETEXT_PREFIX))),
             "value": float(value)} for params, value in zip(curves.configs, curves.true_values)]


def agreement(truth: Mapping[tuple, float], probe: Mapping[tuple, float]) -> dict[str, Any]:
    """Rank agreement of ``probe`` (pretext key -> probe score) with the fine-tuning objective ``truth`` (pretext
    key -> score, ``finetune_objective``). Every pretext configuration needs a probe score. Differences of
    scores in points (x100)."""
    from scipy.stats import kendalltau, spearmanr

    missing = [dict(k) for k in truth if k not in probe]
    if missing:
        raise ValueError(f"no probe score for pretext configuration(s) {missing}")
    keys = sorted(truth)
    fine = [truth[k] for k in keys]
    probed = [float(probe[k]) for k in keys]
    picked = max(keys, key=lambda k: probe[k])
    # A constant ranking (or fewer than 3 configurations for rho, 2 for tau) correlates with nothing.
    ranked = len(set(fine)) > 1 and len(set(probed)) > 1
    rho = float(spearmanr(fine, probed).statistic) if ranked and len(keys) > 2 else None
    tau = float(kendalltau(fine, probed).statistic) if ranked else None
    return {
        "pretext": [{"params": dict(k), "finetune": truth[k], "probe": float(probe[k])} for k in keys],
        "spearman": rho,
        "kendall": tau,
        "probe_pick": dict(picked),
        "pick_regret_points": 100 * (max(fine) - truth[picked]),
        "finetune_spread_points": 100 * (max(fine) - min(fine)),
    }


def markdown(result: Mapping[str, Any]) -> str:
    names = list(result["pretext"][0]["params"]) if result["pretext"] else []
    lines = ["| " + " | ".join([*names, "fine-tuning objective (best over fine-tuning settings)", "probe"]) + " |",
             "|" + "---|" * (len(names) + 2)]
    for row in sorted(result["pretext"], key=lambda r: -r["finetune"]):
        lines.append("| " + " | ".join([*(str(row["params"][n]) for n in names), f"{100 * row['finetune']:.2f}",
                                        f"{100 * row['probe']:.2f}"]) + " |")

    def number(key: str) -> str:
        return "n/a" if result.get(key) is None else f"{result[key]:.2f}"

    lines += ["", f"Spearman's rho {number('spearman')}, Kendall's tau {number('kendall')} over "
                  f"{len(result['pretext'])} pretext configurations; the probe's pick loses "
                  f"{result['pick_regret_points']:.2f} points of the fine-tuning objective (spread "
                  f"{result['finetune_spread_points']:.2f})."]
    if "probe_s" in result:
        lines.append(f"Compute: the probe scored every pretext configuration in {result['probe_s']:.0f} s; the "
                     f"recorded fine-tuning took {result['finetune_s']:.0f} s ({result['finetune_runs']} runs), "
                     f"{result['finetune_s'] / max(result['probe_s'], 1e-9):.0f}x as long.")
    return "\n".join(lines) + "\n"
