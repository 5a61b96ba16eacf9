"""Driver of PatchTask pretraining: data, resources, Ray Train, then outputs and a summary."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from patchray import config as configlib
from patchray.shards.decode import decode_crops
from patchray.shards.reader import ShardSet, open_shards
from patchray.shards.schema import CROP_ID, IMAGE
from patchray.train.checkpoint import atomic_torch_save, sub_state
from patchray.train.config import PretrainConfig, SyntheticDataConfig
from patchray.train.resources import ResourcePlan
from patchray.train.runner import fit, init_ray, plan_for_cluster, run_dir, train_location

RAY_RUN_NAME = "pretrain"


def ensure_synthetic(cfg: SyntheticDataConfig, log=print) -> str:
    """The synthetic default shards, rendered on first use and cached."""
    from patchray.shards.generate import generate_synthetic
    from patchray.shards.report import SUMMARY_JSON

    root = Path(cfg.path())
    if (root / SUMMARY_JSON).exists():
        return str(root)
    log(f"[pretrain] rendering the synthetic default dataset into {root} (once; cached afterwards)")
    report = generate_synthetic(root, cfg.num_crops, cfg.labeled, cfg.seed, overwrite=True)
    log(report.format())
    return str(root)


def resolve_data(cfg: PretrainConfig, log=print) -> list[str]:
    if cfg.data:
        return list(cfg.data)
    return [os.path.join(ensure_synthetic(cfg.synthetic, log), "unlabeled")]


def read_validation_crops(shards: ShardSet, count: int, width: int, height: int):
    """The first ``count`` good crops of the first shards: the fixed validation set, held out of training.

    Bad rows met here are not counted: they stay in the training stream, which counts each bad row once.
    """
    pixels, ids = [], []
    for path in shards.files:
        parquet = pq.ParquetFile(path, filesystem=shards.filesystem)
        for batch in parquet.iter_batches(batch_size=256, columns=[IMAGE, CROP_ID]):
            decoded, reasons = decode_crops(batch.column(IMAGE).to_pylist(), width, height)
            for px, crop_id, reason in zip(decoded, batch.column(CROP_ID).to_pylist(), reasons):
                if not reason and len(ids) < count:
                    pixels.append(px)
                    ids.append(crop_id)
            if len(ids) >= count:
                return np.stack(pixels), np.array(ids, dtype=object)
    if not ids:
        raise ValueError(f"no decodable crop in {list(shards.files)} for the validation set")
    return np.stack(pixels), np.array(ids, dtype=object)


def run_pretrain(cfg: PretrainConfig, log=print) -> dict:
    from patchray.pipeline import crop_dataset
    from patchray.train.pretrain_loop import pretrain_loop

    t0 = time.time()
    out = run_dir(cfg)
    out.mkdir(parents=True, exist_ok=True)
    data = resolve_data(cfg, log)
    shards = open_shards(data)  # schema errors stop here, before any cluster work
    resolved = configlib.to_dict(cfg) | {"data": data}
    resolved_cfg = configlib.build(PretrainConfig, resolved)
    configlib.dump_yaml(resolved_cfg, out / "config.yaml")
    log(f"[pretrain] {shards.num_rows} crops in {len(shards.files)} shard(s); output -> {out}")

    ray = init_ray()
    plan = plan_for_cluster(cfg.resources)
    log(f"[pretrain] {plan.describe()}")

    task = cfg.task
    val_pixels, val_ids = read_validation_crops(shards, cfg.val_crops, task.crop_width, task.crop_height)
    dataset = crop_dataset(shards, task.crop_width, task.crop_height, exclude_ids=set(val_ids.tolist()),
                           seed=cfg.seed, data_resources=cfg.resources.data_resources, decode=cfg.decode_on == "data")
    if cfg.max_crops is not None:
        dataset = dataset.limit(cfg.max_crops)
    state, history = fit(pretrain_loop, {"config": configlib.to_dict(resolved_cfg),
                                         "val_ref": ray.put((val_pixels, val_ids))},
                         plan, location=train_location(out, cfg.storage, RAY_RUN_NAME),
                         max_failures=cfg.max_failures, datasets={"train": dataset})
    summary = write_outputs(out, resolved_cfg, state, history, plan, time.time() - t0)
    log(format_summary(summary))
    return summary


def write_outputs(out: Path, cfg: PretrainConfig, state: dict, history: list[dict], plan: ResourcePlan,
                  wall_s: float) -> dict:
    from patchray.report.plots import plot_grid_confusion, plot_pretrain_curves

    checkpoints = out / "checkpoints"
    pretext_path = atomic_torch_save(state["model"], checkpoints / "pretext.pt")
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
        "resources": plan.describe(),
        "checkpoint": str(pretext_path),
        "trunk_checkpoint": str(trunk_path),
        "plots": plots,
        "wall_s": round(wall_s, 1),
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
        f"  outputs in {s['output']}: config.yaml, metrics.jsonl, summary.json, "
        + ", ".join(Path(p).name for p in s["plots"]),
        f"  checkpoint (PretextNet state_dict): {s['checkpoint']}",
        f"  trunk for fine-tuning:             {s['trunk_checkpoint']}",
    ])
