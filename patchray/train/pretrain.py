"""Driver of PatchTask pretraining: data, resources, Ray Train, then outputs and a summary.

A run may continue a finished shorter one of the same settings (``start_from``): it loads that run's last
checkpoint (``checkpoints/last/``: weights, optimizer state, epoch and history) and trains only the epochs that
remain, its metrics history beginning with the earlier run's epochs as they were.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from patchray import config as configlib
from patchray import tracking
from patchray.models.init import NORMALIZATION_FILE
from patchray.patches import STATS_EPOCH, PixelStatistics, crop_seed, statistics_patches
from patchray.shards.decode import decode_crops
from patchray.shards.default_data import ensure_synthetic
from patchray.shards.reader import ShardSet, open_shards, stored_size
from patchray.shards.schema import CROP_ID, IMAGE
from patchray.train.checkpoint import (
    RUN_FILE,
    atomic_torch_save,
    final_state,
    load_checkpoint,
    read_run_file,
    save_checkpoint,
    sub_state,
)
from patchray.train.config import PretrainConfig
from patchray.train.identity import (
    SCHEDULES_SHAPED_BY_TOTAL,
    CannotContinueError,
    check_continuable,
    check_resumable,
    location_path,
    run_identity,
)
from patchray.train.resources import ResourcePlan
from patchray.train.rows import ROW_KEYS, format_rows
from patchray.train.runner import (
    PreparedRun,
    check_cache,
    decode_into_cache,
    fit,
    init_ray,
    plan_for_cluster,
    run_dir,
    train_location,
)

RAY_RUN_NAME = "pretrain"


class DatasetTooSmallError(ValueError):
    """Too few crops (or none) for what the job was asked to do; the message says how many and why."""


def resolve_data(cfg: PretrainConfig, log=print) -> list[str]:
    if cfg.data:
        return list(cfg.data)
    return [os.path.join(ensure_synthetic(cfg.synthetic, log, tag="pretrain"), "unlabeled")]


# Crops stored with this many times the training size's pixels or more make every epoch decode a larger JPEG and
# fit it: on 2 cores a detector's 300x600 crops streamed 2.9x slower than 100x200 ones (docs/performance.md).
LARGE_CROP_AREA = 2.0


def large_crops_note(stored: tuple[int, int] | None, width: int, height: int, cache_decoded: bool) -> str | None:
    """A note for the start of a run whose crops are stored well above the training size and are decoded every
    epoch, saying what would stream them faster; None otherwise."""
    if stored is None or cache_decoded or stored[0] * stored[1] < LARGE_CROP_AREA * width * height:
        return None
    return (f"note: the crops are stored at about {stored[0]}x{stored[1]} (a median), "
            f"{stored[0] * stored[1] / (width * height):.1f}x the pixels of the {width}x{height} trained on: every "
            f"epoch decodes and fits them again. Stored at the training height (make_shards.py ... --height "
            f"{height}) they stream up to 3x faster; cache_decoded=true fits them once")


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


@dataclass
class StartingPoint:
    """The finished run a ``start_from`` run continues."""
    folder: str
    epochs: int  # the epochs it trained: this run trains epochs + 1 .. cfg.epochs (1-based)
    loaded: tuple[dict, list[dict]] | None  # its last checkpoint and history; None when this run resumes its own


def _start_folder(start_from: str | None) -> str | None:
    """``start_from`` as an absolute local folder (it is part of the run identity: one spelling per folder)."""
    if not start_from:
        return None
    if "://" in start_from:
        raise CannotContinueError(f"start_from: {start_from!r} is a URI; give the local folder of the finished "
                                  "pretraining (its outputs: config.yaml, checkpoints/)")
    return str(Path(start_from).expanduser().resolve())


def starting_point(cfg: PretrainConfig, identity: dict, *, load: bool) -> StartingPoint | None:
    """What ``cfg.start_from`` names, checked to be this run but shorter (``CannotContinueError`` naming the
    folder otherwise). ``load``: also read its weights (not needed when the run resumes a checkpoint of its own)."""
    if not cfg.start_from:
        return None
    last = final_state(cfg.start_from)
    run = read_run_file(last)
    if run is None:
        raise CannotContinueError(
            f"start_from: {cfg.start_from} holds no finished pretraining to continue ({last / RUN_FILE} is missing: "
            "the run did not finish, or finished before runs kept their last checkpoint in checkpoints/last)")
    check_continuable(run.get("identity"), identity, cfg.start_from, run["epoch"])
    return StartingPoint(cfg.start_from, run["epoch"] + 1, load_checkpoint(last) if load else None)


def prepare_pretrain(cfg: PretrainConfig, log=print) -> PreparedRun:
    out = run_dir(cfg)
    data = resolve_data(cfg, log)
    shards = open_shards(data)  # schema errors stop here, before any cluster work
    if shards.num_rows <= cfg.holdout_crops:
        raise DatasetTooSmallError(
            f"{len(shards.files)} shard(s) hold {shards.num_rows} crops, and holdout_crops={cfg.holdout_crops} "
            "are held out for validation: none would be left to train on. Lower holdout_crops or add data")
    resolved = configlib.build(PretrainConfig, configlib.to_dict(cfg) | {"data": data,
                                                                        "start_from": _start_folder(cfg.start_from)})
    init_ray()
    if cfg.cache_decoded:  # refused here, before any crop is read, when the cache could not fit
        check_cache(shards.num_rows, cfg.task.crop_width, cfg.task.crop_height, cfg.resources.object_store_share)
    plan = plan_for_cluster(cfg.resources)
    identity = run_identity(configlib.to_dict(resolved), {"train": shards.fingerprint}, plan.num_workers)
    return PreparedRun(resolved, out, shards, plan, train_location(out, cfg.storage, RAY_RUN_NAME), identity)


def run_pretrain(cfg: PretrainConfig, log=print, prepared: PreparedRun | None = None) -> dict:
    import ray

    from patchray.data_tasks import CutSpec
    from patchray.pipeline import crop_dataset
    from patchray.train.pretrain_loop import pretrain_loop

    t0 = time.time()
    startup = StartupClock(t0)
    run = prepared or prepare_pretrain(cfg, log)
    startup.lap("shards and Ray")
    cfg, out, shards, plan, location = run.cfg, run.out, run.shards, run.plan, run.location
    resumes_after = check_resumable(location, run.identity)  # another run's checkpoint here: refused, nothing written
    # A run with a checkpoint of its own resumes that, and needs no weights of the run it continues.
    start = starting_point(cfg, run.identity, load=resumes_after is None)
    out.mkdir(parents=True, exist_ok=True)
    configlib.dump_yaml(cfg, out / "config.yaml")
    log(f"[pretrain] {shards.num_rows} crops in {len(shards.files)} shard(s); output -> {out}")
    if note := large_crops_note(stored_size(shards), cfg.task.crop_width, cfg.task.crop_height, cfg.cache_decoded):
        log(f"[pretrain] {note}")
    log(f"[pretrain] {plan.describe()}")
    if resumes_after is not None:
        log(f"[pretrain] resuming after epoch {resumes_after + 1} from {location_path(location)}")
    elif start is not None:
        log(f"[pretrain] continuing {start.folder} after its epoch {start.epochs}: training "
            f"{epoch_span(start.epochs + 1, cfg.epochs)} here")
    if start is not None and cfg.optim.schedule in SCHEDULES_SHAPED_BY_TOTAL:
        log(f"[pretrain] note: optim.schedule={cfg.optim.schedule} depends on the total epochs; the first "
            f"{start.epochs} followed a {start.epochs}-epoch schedule, so this run differs from a fresh "
            f"{cfg.epochs}-epoch one")

    task = cfg.task
    val_pixels, val_ids = read_validation_crops(shards, cfg.holdout_crops, task.crop_width, task.crop_height,
                                                cfg.input.crop_fit)
    startup.lap("validation crops")
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
    # The first epoch this run trains: after its own checkpoint's, or the continued run's last, or 0.
    first_epoch = resumes_after + 1 if resumes_after is not None else start.epochs if start is not None else 0
    cut = CutSpec.starting_at(task, cfg.seed, first_epoch) if cfg.cut_on == "data" else None
    dataset = crop_dataset(shards, task.crop_width, task.crop_height, exclude_ids=set(val_ids.tolist()),
                           seed=cfg.seed, data_resources=cfg.resources.data_resources, decode=cfg.decode_on == "data",
                           fit=cfg.input.crop_fit, cut=None if cfg.cache_decoded else cut)
    if cfg.cache_decoded:
        dataset = decode_into_cache(dataset, shards.num_rows - len(val_ids), task.crop_width, task.crop_height,
                                    cfg.seed, cut, "pretrain", log)
        startup.lap("decoding into the cache")
    if cfg.max_crops is not None:
        dataset = dataset.limit(cfg.max_crops)
    normalization = input_normalization(shards, cfg, val_ids.tolist(), log)
    startup.lap("input statistics")
    probe = prepare_probe(cfg, log)
    startup.lap("probe crops")
    # The state a continued run starts from travels through the object store: workers on other nodes need not
    # see the folder it came from.
    start_ref = ray.put(start.loaded) if start is not None and start.loaded is not None else None
    tracker = tracking.start(cfg.tracking, cfg.tracking_uri, out, "pretrain", cfg.name, configlib.to_dict(cfg), log)
    with tracking.failed_if_raised(tracker, [out / "config.yaml"]):
        state, history = fit(pretrain_loop, {"config": configlib.to_dict(cfg), "identity": run.identity,
                                             "stream_rows": stream_rows, "val_ref": ray.put((val_pixels, val_ids)),
                                             "normalization_ref": ray.put(normalization), "start_ref": start_ref,
                                             "start_from": cfg.start_from,
                                             "probe_ref": ray.put(probe) if probe is not None else None},
                             plan, location=location, max_failures=cfg.max_failures, datasets={"train": dataset},
                             tracking=tracker)
    startup.first_step(history, None if resumes_after is not None else first_epoch)
    summary = write_outputs(out, cfg, state, history, plan, time.time() - t0, run.identity, normalization,
                            from_epoch=start.epochs if start is not None else None,
                            val_crops=(val_pixels[:CELL_PREDICTION_CROPS], val_ids[:CELL_PREDICTION_CROPS]),
                            startup=startup.phases)
    tracking.finish(tracker, tracked_numbers(summary), summary["epochs"],
                    [out / "config.yaml", out / "summary.json", *summary["plots"]])
    log(format_summary(summary))
    return summary


def tracked_numbers(summary: dict) -> dict:
    """A pretraining's headline numbers, for the tracker."""
    probe = summary.get("probe") or {}
    return {k: summary[k] for k in ("val_acc", "val_acc_over_chance", "patches_per_s", "data_wait_frac", "wall_s")} \
        | {f"probe_{k}": probe.get(k) for k in ("mA", "knn_mA", "init_mA", "init_knn_mA")}


def prepare_probe(cfg: PretrainConfig, log=print):
    """The online probe's labeled crops (``patchray.train.probe_set``), decoded once here; None when the probe is
    off or there is nothing to probe on (said in the log either way)."""
    from patchray.train.probe_set import probe_folders, read_probe_set

    folders = probe_folders(cfg.probe, cfg.data)
    if not folders:
        if cfg.probe.enabled:
            log("[pretrain] online probe: off (no labeled shards beside the data; set probe.data to a labeled "
                "folder to measure the trunk's features for attributes as it trains)")
        return None
    probe = read_probe_set(folders, cfg.probe, cfg.task.crop_width, cfg.task.crop_height, cfg.input.crop_fit,
                           cfg.seed)
    log(f"[pretrain] online probe: {probe.describe()}; linear and kNN probes of the frozen trunk before "
        f"training and every {cfg.probe.every} epoch(s)")
    return probe


CELL_PREDICTION_CROPS = 6  # validation crops drawn with the net's per-cell probabilities (cell_predictions.png)


def probe_summary(history: list[dict], wall_s: float) -> dict | None:
    """The online probe's numbers of a run: the last probe, the untrained trunk's, and what probing cost."""
    probed = [h for h in history if h.get("probe_s") is not None]
    if not probed:
        return None
    first, last = history[0], probed[-1]
    seconds = sum(h["probe_s"] for h in probed) + (first.get("init_probe_s") or 0.0)
    return {"mA": last.get("probe_mA"), "mAP": last.get("probe_mAP"), "knn_mA": last.get("knn_mA"),
            "init_mA": first.get("init_probe_mA"), "init_knn_mA": first.get("init_knn_mA"),
            "epoch": last["epoch"] + 1, "attributes": last.get("probe_attributes"),
            "seconds": round(seconds, 1), "share_of_run": round(seconds / wall_s, 3) if wall_s > 0 else None}


def cell_predictions(net_state: dict, cfg: PretrainConfig, normalization: dict, crops: np.ndarray, ids) -> tuple:
    """(crops, probabilities [n, cells], true cells, patch origins) of one validation patch per crop under the
    trained net, on the driver's CPU: what ``plot_cell_predictions`` draws."""
    import torch

    from patchray.models.heads import build_pretext_net
    from patchray.report.filters import one_patch_per_crop
    from patchray.train.epoch import InputNormalization

    picked = one_patch_per_crop(crops, [str(i) for i in ids], cfg.task, cfg.seed)
    net = build_pretext_net(cfg.model, cfg.task)
    net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in net_state.items()})
    net.eval()
    with torch.no_grad():
        x = InputNormalization(normalization, torch.device("cpu"))(torch.from_numpy(picked.patches.copy()))
        probabilities = torch.softmax(net(x).float(), 1).numpy()
    return crops, probabilities, picked.true_cells, picked.top_left


def write_outputs(out: Path, cfg: PretrainConfig, state: dict, history: list[dict], plan: ResourcePlan,
                  wall_s: float, identity: dict | None = None, normalization: dict | None = None,
                  from_epoch: int | None = None, val_crops: tuple | None = None,
                  startup: dict | None = None) -> dict:
    """``from_epoch``: for a run that continued ``cfg.start_from``, the epochs that run had trained.
    ``val_crops``: (uint8 crops, ids) of a few validation crops for ``cell_predictions.png``."""
    from patchray.report.filters import first_conv_weight, plot_cell_predictions, plot_first_layer_filters
    from patchray.report.plots import plot_grid_confusion, plot_pretrain_curves

    checkpoints = out / "checkpoints"
    pretext_path = atomic_torch_save(state["model"], checkpoints / "pretext.pt")
    # The whole last checkpoint, beside the outputs (Ray Train's storage may be elsewhere, or cleaned up): what a
    # longer run of the same settings continues (start_from).
    last_path = save_checkpoint(final_state(out), model=state["model"], optimizer=state["optimizer"],
                           epoch=state["epoch"], config=state["config"], history=history,
                           identity=state.get("identity"))
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
    plots.append(str(plot_first_layer_filters(first_conv_weight(state["model"]), out / "filters.png",
                                              title=f"{cfg.model}: first-layer filters after {last['epoch'] + 1} "
                                                    "epoch(s)")))
    if val_crops is not None and len(val_crops[0]) and not cfg.task.pairwise:
        crops, probabilities, true_cells, origins = cell_predictions(state["model"], cfg, normalization, *val_crops)
        plots.append(str(plot_cell_predictions(crops, cfg.task, probabilities, out / "cell_predictions.png",
                                               true_cells=true_cells, patch_origins=origins)))
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
        "resources": plan.describe(), "torch_threads_per_worker": plan.torch_threads,
        "checkpoint": str(pretext_path),
        "trunk_checkpoint": str(trunk_path),
        "last_checkpoint": str(last_path),
        "continued_from": cfg.start_from,
        "from_epoch": from_epoch,
        "normalization": {"mode": normalization["mode"], "checkpoint": str(norm_path)}
        | {k: normalization[k] for k in ("patches", "crops") if k in normalization},
        "probe": probe_summary(history, wall_s),
        "startup_s": startup,
        "plots": plots,
        "wall_s": round(wall_s, 1),
        "identity": identity,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


class StartupClock:
    """Where the time before the first training step goes: the driver's phases as laps, then the workers' part up
    to the first step, as rank 0 stamps it in the first epoch's metrics (wall-clock times): Ray Train starting the
    workers (to ``worker_started_at``: its controller, the worker processes, the process group), the worker's
    setup (to ``worker_ready_at``: the net, validation patches, the untrained trunk's probe) and the data stream's
    first batch (to ``first_step_at``). Seconds, in ``summary.json`` ``startup_s``."""

    def __init__(self, started: float):
        self.started = self.last = started
        self.phases: dict[str, float] = {}

    def lap(self, phase: str) -> None:
        now = time.time()
        self.phases[phase] = round(now - self.last, 1)
        self.last = now

    def first_step(self, history: list[dict], first_epoch: int | None) -> None:
        """``first_epoch``: the first epoch this process trained (None: it resumed a checkpoint, whose first
        step another process took)."""
        stamped = next((h for h in history if h["epoch"] == first_epoch and h.get("first_step_at")), None)
        if stamped is None:
            return
        worker_phases = (("Ray Train starting the workers", "worker_started_at"),
                         ("their setup and the untrained probe", "worker_ready_at"),
                         ("the first batch", "first_step_at"))
        if all(stamped.get(key) for _, key in worker_phases):
            for phase, key in worker_phases:
                self.phases[phase] = round(stamped[key] - self.last, 1)
                self.last = stamped[key]
        else:   # a history from before the workers stamped their phases
            self.phases["workers to the first step"] = round(stamped["first_step_at"] - self.last, 1)
        self.phases["total"] = round(stamped["first_step_at"] - self.started, 1)


def startup_lines(phases: dict | None) -> list[str]:
    if not phases or "total" not in phases:
        return []
    parts = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in phases.items() if name != "total")
    return [f"  time to the first step: {phases['total']:.0f} s ({parts})"]


def probe_lines(probe: dict | None) -> list[str]:
    if not probe:
        return []

    def number(key: str) -> str:
        return "n/a" if probe.get(key) is None else f"{probe[key]:.3f}"

    share = f" ({probe['share_of_run']:.0%} of the run)" if probe.get("share_of_run") is not None else ""
    return [f"  attribute probe of the frozen trunk after epoch {probe['epoch']}: linear mA {number('mA')} "
            f"(untrained {number('init_mA')}), kNN mA {number('knn_mA')} (untrained {number('init_knn_mA')}); "
            f"probing took {probe['seconds']:.0f} s{share}"]


def epoch_span(first: int, last: int) -> str:
    """1-based epochs ``first`` to ``last``, for the log: "epoch 3" or "epochs 3-5"."""
    return f"epoch {first}" if first == last else f"epochs {first}-{last}"


def format_summary(s: dict) -> str:
    skipped = ", ".join(f"{k}={v}" for k, v in s["skipped_rows"].items()) or "none"
    continued = [f"  continued {s['continued_from']} after its epoch {s['from_epoch']}: "
                 f"{epoch_span(s['from_epoch'] + 1, s['epochs'])} trained here"] if s.get("continued_from") else []
    return "\n".join([
        f"[pretrain] done in {s['wall_s']:.0f} s: {s['epochs']} epoch(s), {s['patches_seen']} patches seen",
        *continued,
        f"  pretext validation accuracy {s['val_acc']:.3f} ({s['val_acc_over_chance']:.1f}x chance {s['chance']:.3f})",
        f"  {s['patches_per_s']:.0f} patches/s ({s['data_wait_frac']:.0%} of the time waiting for data); "
        f"skipped rows: {skipped}",
        "  " + format_rows(s["rows_per_epoch"]),
        *probe_lines(s.get("probe")),
        *startup_lines(s.get("startup_s")),
        f"  outputs in {s['output']}: config.yaml, metrics.jsonl, summary.json, "
        + ", ".join(Path(p).name for p in s["plots"]),
        f"  checkpoint (PretextNet state_dict): {s['checkpoint']}",
        f"  trunk for fine-tuning:             {s['trunk_checkpoint']}",
    ])
