"""Driver of PatchTask pretraining: data, resources, Ray Train, then outputs and a summary."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from patchray import config as configlib
from patchray.models.init import NORMALIZATION_FILE
from patchray.patches import STATS_EPOCH, PixelStatistics, crop_seed, statistics_patches
from patchray.shards.decode import decode_crops
from patchray.shards.default_data import ensure_synthetic
from patchray.shards.reader import ShardSet, open_shards
from patchray.shards.schema import CROP_ID, IMAGE
from patchray.train.checkpoint import atomic_torch_save, sub_state
from patchray.train.config import PretrainConfig
from patchray.train.identity import check_resumable, location_path, run_identity
from patchray.train.resources import ResourcePlan
from patchray.train.rows import ROW_KEYS, format_rows
from patchray.train.runner import PreparedRun, fit, init_ray, plan_for_cluster, run_dir, train_location

RAY_RUN_NAME = "pretrain"


class DatasetTooSmallError(ValueError):
    """Too few crops (or none) for what the job was asked to do; the message says how many and why."""


def resolve_data(cfg: PretrainConfig, log=print) -> list[str]:
    if cfg.data:
        return list(cfg.data)
    return [os.path.join(ensure_synthetic(cfg.synthetic, log), "unlabeled")]


def read_validation_crops(shards: ShardSet, count: int, width: int, height: int, crop_fit: str = "aspect"):
    """The first ``count`` good crops of the first shards: the fixed validation set, held out of training.

    Bad rows met here are not counted: they stay in the training stream, which counts each bad row once.
    """
    pixels, ids = [], []
    for path in shards.files:
        parquet = pq.ParquetFile(path, filesystem=shards.filesystem)
        for batch in parquet.iter_batches(batch_size=256, columns=[IMAGE, CROP_ID]):
            decoded, reasons = decode_crops(batch.column(IMAGE).to_pylist(), width, height, crop_fit)
            for px, crop_id, reason in zip(decoded, batch.column(CROP_ID).to_pylist(), reasons):
                if not reason and len(ids) < count:
                    pixels.append(px)
                    ids.append(crop_id)
            if len(ids) >= count:
                return np.stack(pixels), np.array(ids, dtype=object)
    if not ids:
        raise ValueError(f"no decodable crop in {list(shards.files)} for the validation set")
    return np.stack(pixels), np.array(ids, dtype=object)


# Row groups that input.normalize=dataset's statistics are spread over, at most (each is read whole; only its chosen
# crops are decoded).
STATS_ROW_GROUPS = 16


def input_normalization(shards: ShardSet, cfg: PretrainConfig, exclude_ids, log=print) -> dict:
    """The run's input normalisation, as the workers apply it and ``checkpoints/normalization.pt`` records it:
    ``{"mode": task.normalize}``, and for ``dataset`` the per-pixel ``mean`` and ``std`` (float32 [3, P, P],
    [0, 1] units, the reference's ``make_patch_mean.py``) over ``cfg.stats_patches`` training patches.

    Those patches are every grid cell of a crop once (``statistics_patches``: the task's own sampler) of crops
    chosen by seed, never the held-out validation crops (``exclude_ids``): row groups in a seeded order, from
    each the crops first in a seeded order, spread over up to ``STATS_ROW_GROUPS`` row groups. The same seed,
    config and data give the same statistics, so a resumed run recomputes what it started with.
    """
    task = cfg.task
    if task.normalize != "dataset":
        return {"mode": task.normalize}
    wanted = -(-cfg.stats_patches // task.num_cells)  # crops
    groups = [g for g in shards.row_groups if g[2]]
    quota = -(-wanted // max(1, min(len(groups), STATS_ROW_GROUPS)))
    excluded = frozenset(exclude_ids)
    stats, crops = PixelStatistics(), 0
    for index in np.random.default_rng(cfg.seed).permutation(len(groups)):
        if crops >= wanted:
            break
        path, group, _ = groups[index]
        table = pq.ParquetFile(path, filesystem=shards.filesystem).read_row_group(group, columns=[IMAGE, CROP_ID])
        ids = table.column(CROP_ID).to_pylist()
        chosen = sorted((i for i, c in enumerate(ids) if c not in excluded),
                        key=lambda i: crop_seed(cfg.seed, STATS_EPOCH, ids[i]))[:min(quota, wanted - crops)]
        pixels, reasons = decode_crops(table.column(IMAGE).take(chosen).to_pylist(), task.crop_width,
                                       task.crop_height, cfg.input.crop_fit)
        good = [k for k, reason in enumerate(reasons) if not reason]
        if good:
            stats.add(statistics_patches(pixels[good], [ids[chosen[k]] for k in good], task, cfg.seed))
            crops += len(good)
    if not crops:
        raise DatasetTooSmallError(f"input.normalize=dataset: no decodable training crop in {list(shards.files)} "
                                   f"for the statistics ({len(excluded)} held out for validation)")
    mean, std = stats.mean_std()
    log(f"[pretrain] input.normalize=dataset: per-pixel mean/std over {stats.count} patches of {crops} training crops")
    return {"mode": "dataset", "mean": mean, "std": std, "patches": stats.count, "crops": crops}


def prepare_pretrain(cfg: PretrainConfig, log=print) -> PreparedRun:
    out = run_dir(cfg)
    data = resolve_data(cfg, log)
    shards = open_shards(data)  # schema errors stop here, before any cluster work
    if shards.num_rows <= cfg.holdout_crops:
        raise DatasetTooSmallError(
            f"{len(shards.files)} shard(s) hold {shards.num_rows} crops, and holdout_crops={cfg.holdout_crops} "
            "are held out for validation: none would be left to train on. Lower holdout_crops or add data")
    resolved = configlib.build(PretrainConfig, configlib.to_dict(cfg) | {"data": data})
    init_ray()
    plan = plan_for_cluster(cfg.resources)
    identity = run_identity(configlib.to_dict(resolved), {"train": shards.fingerprint}, plan.num_workers)
    return PreparedRun(resolved, out, shards, plan, train_location(out, cfg.storage, RAY_RUN_NAME), identity)


def run_pretrain(cfg: PretrainConfig, log=print, prepared: PreparedRun | None = None) -> dict:
    import ray

    from patchray.pipeline import crop_dataset
    from patchray.train.pretrain_loop import pretrain_loop

    t0 = time.time()
    run = prepared or prepare_pretrain(cfg, log)
    cfg, out, shards, plan, location = run.cfg, run.out, run.shards, run.plan, run.location
    resumes_after = check_resumable(location, run.identity)  # another run's checkpoint here: refused, nothing written
    out.mkdir(parents=True, exist_ok=True)
    configlib.dump_yaml(cfg, out / "config.yaml")
    log(f"[pretrain] {shards.num_rows} crops in {len(shards.files)} shard(s); output -> {out}")
    log(f"[pretrain] {plan.describe()}")
    if resumes_after is not None:
        log(f"[pretrain] resuming after epoch {resumes_after + 1} from {location_path(location)}")

    task = cfg.task
    val_pixels, val_ids = read_validation_crops(shards, cfg.holdout_crops, task.crop_width, task.crop_height,
                                                cfg.input.crop_fit)
    # Crop ids are unique within a dataset (make_shards refuses duplicates), so the held-out ids are the rows
    # the stream loses to validation.
    stream_rows = shards.num_rows - len(val_ids)
    if cfg.max_crops is not None:
        stream_rows = min(stream_rows, cfg.max_crops)
    needed = plan.num_workers * cfg.crops_per_step
    if stream_rows < needed:
        raise DatasetTooSmallError(
            f"{stream_rows} crops are left for training ({shards.num_rows} in the shards, {len(val_ids)} held out "
            f"for validation" + (f", max_crops={cfg.max_crops}" if cfg.max_crops is not None else "")
            + f"): fewer than one batch ({cfg.crops_per_step} crops) for each of {plan.num_workers} worker(s). "
            "Lower holdout_crops or patches_per_step, or add data")
    dataset = crop_dataset(shards, task.crop_width, task.crop_height, exclude_ids=set(val_ids.tolist()),
                           seed=cfg.seed, data_resources=cfg.resources.data_resources, decode=cfg.decode_on == "data",
                           fit=cfg.input.crop_fit)
    if cfg.max_crops is not None:
        dataset = dataset.limit(cfg.max_crops)
    normalization = input_normalization(shards, cfg, val_ids.tolist(), log)
    state, history = fit(pretrain_loop, {"config": configlib.to_dict(cfg), "identity": run.identity,
                                         "stream_rows": stream_rows, "val_ref": ray.put((val_pixels, val_ids)),
                                         "normalization_ref": ray.put(normalization)},
                         plan, location=location, max_failures=cfg.max_failures, datasets={"train": dataset})
    summary = write_outputs(out, cfg, state, history, plan, time.time() - t0, run.identity, normalization)
    log(format_summary(summary))
    return summary


def write_outputs(out: Path, cfg: PretrainConfig, state: dict, history: list[dict], plan: ResourcePlan,
                  wall_s: float, identity: dict | None = None, normalization: dict | None = None) -> dict:
    from patchray.report.plots import plot_grid_confusion, plot_pretrain_curves

    checkpoints = out / "checkpoints"
    pretext_path = atomic_torch_save(state["model"], checkpoints / "pretext.pt")
    # What fine-tuning from this run must feed the trunk (patchray.models.init.recorded_normalization).
    normalization = normalization or {"mode": cfg.task.normalize}
    norm_path = atomic_torch_save({k: v for k, v in normalization.items() if k in ("mode", "mean", "std")},
                                  checkpoints / NORMALIZATION_FILE)
    trunk_path = atomic_torch_save(sub_state(state["model"], "trunk"), checkpoints / "trunk.pt")
    with open(out / "metrics.jsonl", "w") as f:
        for h in history:
            f.write(json.dumps({k: v for k, v in h.items() if k != "val_confusion"}) + "\n")
    plots = [str(plot_pretrain_curves(history, out / "curves.png"))]
    last = history[-1]
    if last.get("val_confusion") is not None:
        grid = cfg.task.grid()
        plots.append(str(plot_grid_confusion(np.array(last["val_confusion"]), grid.cols, grid.rows,
                                             out / "confusion.png")))
    skipped = dict(sorted(last.get("skipped", {}).items()))  # each epoch reads every row: the last one says all
    rows = {key: last[f"rows_{key}"] for key in ROW_KEYS}
    summary = {
        "name": cfg.name,
        "output": str(out),
        "epochs": last["epoch"] + 1,
        "val_acc": last["val_acc"],
        "chance": last["chance"],
        "val_acc_over_chance": last["val_acc"] / last["chance"],
        "patches_seen": last["patches_seen"],
        "patches_per_s": last["patches_per_s"] * last["workers"],
        "patches_per_s_per_worker": last["patches_per_s"],
        "data_wait_frac": last["data_wait_frac"],
        "skipped_rows": skipped,
        "rows_per_epoch": rows,
        "resources": plan.describe(),
        "checkpoint": str(pretext_path),
        "trunk_checkpoint": str(trunk_path),
        "normalization": {"mode": normalization["mode"], "checkpoint": str(norm_path)}
        | {k: normalization[k] for k in ("patches", "crops") if k in normalization},
        "plots": plots,
        "wall_s": round(wall_s, 1),
        "identity": identity,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def format_summary(s: dict) -> str:
    skipped = ", ".join(f"{k}={v}" for k, v in s["skipped_rows"].items()) or "none"
    return "\n".join([
        f"[pretrain] done in {s['wall_s']:.0f} s: {s['epochs']} epoch(s), {s['patches_seen']} patches seen",
        f"  pretext validation accuracy {s['val_acc']:.3f} ({s['val_acc_over_chance']:.1f}x chance {s['chance']:.3f})",
        f"  {s['patches_per_s']:.0f} patches/s ({s['data_wait_frac']:.0%} of the time waiting for data); "
        f"skipped rows: {skipped}",
        "  " + format_rows(s["rows_per_epoch"]),
        f"  outputs in {s['output']}: config.yaml, metrics.jsonl, summary.json, "
        + ", ".join(Path(p).name for p in s["plots"]),
        f"  checkpoint (PretextNet state_dict): {s['checkpoint']}",
        f"  trunk for fine-tuning:             {s['trunk_checkpoint']}",
    ])
