"""Ingest benchmark: patches per second to a training step, three ways, on the same shards.

- decode limit: patchray's JPEG decoder (simplejpeg) alone, one core, times the cores given, times K patches a
  crop;
- the baseline a user would write: a torch DataLoader, one process per core, each item a crop decoded (by
  torchvision) and cut into K patches in a Python loop; and the same DataLoader decoding with patchray's
  decoder, which tells the pipeline's share of patchray's lead from the decoder's;
- patchray: the Ray Data pipeline, measured inside a Ray Train worker's batch iterator, as pretraining consumes
  it, once per ``decode_on`` setting: read + decode on data tasks and patches cut in the training worker's
  collate ("data"), or data tasks that only read and a training worker that decodes ("trainer"; nvJPEG on a GPU).

Beside patches per second, each contender's cost: patches per CPU-second, the CPU seconds being those of every
process involved (``patchray.bench.cpu``: the benchmark's whole process tree, so a DataLoader's worker processes
and all of Ray's own, GCS, raylet, data tasks and training worker included), over the same epochs.
"""
from __future__ import annotations

import json
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from patchray.bench.cpu import CpuClock
from patchray.bench.data import (
    BenchConfig,
    describe_machine,
    load_jpegs,
    machine,
    repeated_shards,
    shard_summary,
    start_bench,
)
from patchray.patches import PatchTaskConfig
from patchray.train.config import DecodeOn

GOAL_VS_DATALOADER = 1.0          # patchray's patches/s at least the DataLoader baseline's...
GOAL_PER_CPU_VS_DATALOADER = 2.0  # ...at no more than half its CPU seconds per patch...
GOAL_VS_DECODE_LIMIT = 0.6        # ...and at least this share of the decode limit
DECODE_NOTES = {"data": "data tasks read and decode, the worker cuts",
                "data+cut": "data tasks read, decode and cut; the stream carries patches",
                "alone": "data tasks read and decode, the worker cuts and runs its stream itself (no split "
                         "coordinator), as a lone fine-tuning worker does",
                "trainer": "data tasks read, the worker decodes and cuts",
                "cached": "decoded once into the object store (cache_decoded), the worker cuts",
                "cached+cut": "decoded once into the object store (cache_decoded), data tasks cut"}
CONTENDER_NAMES = {"data": "decoded on data", "data+cut": "decoded and cut on data",
                   "alone": "decoded on data, unsplit", "trainer": "decoded on trainer",
                   "cached": "decoded once, cut on the worker", "cached+cut": "decoded once, cut on data"}
# The patchray contenders: key -> (decode_on, cut_on, cache_decoded) as in PretrainConfig, and whether Ray Train
# splits the stream (a split coordinator runs its executor) or the one worker runs it itself.
CONTENDERS = {"data": ("data", "worker", False, True), "data+cut": ("data", "data", False, True),
              "alone": ("data", "worker", False, False), "trainer": ("trainer", "worker", False, True),
              "cached": ("data", "worker", True, True), "cached+cut": ("data", "data", True, True)}


@dataclass
class IngestBenchConfig(BenchConfig):
    name: str = "bench_ingest"
    copies: int = 8                 # the shards repeated this many times: a longer epoch, same crops
    cores: int | None = None        # cores given to each contender (None: all of the machine's)
    epochs: int = 3                 # the first is warm-up; the best later epoch is reported
    crops_per_step: int = 16        # as pretraining's default step (128 patches of K=8)
    decode_sample: int = 3000       # crops timed for the decode limit
    decode_on: list[DecodeOn] = field(default_factory=lambda: ["data", "trainer"])  # patchray runs, as pretraining's
    cut_in_data: bool = True        # with decode_on data: also a run whose data tasks cut the patches (cut_on=data)
    cache: bool = True              # with decode_on data: also runs that decode once into the object store
                                    # (cache_decoded), one per place that cuts; their first epoch pays the decode
    alone: bool = True              # with decode_on data: also a run whose worker runs its stream's executor itself,
                                    # unsplit, as a lone fine-tuning worker does (runner.unsplit_when_alone)

    RENAMED_KEYS = {"crops_per_batch": "crops_per_step"}

    def __post_init__(self):
        super().__post_init__()
        if not self.decode_on:
            raise ValueError("decode_on must list at least one place to decode")
        if self.copies < 1 or self.epochs < 2 or self.crops_per_step < 1 or self.decode_sample < 1:
            raise ValueError("need copies >= 1, epochs >= 2 (one is warm-up), crops_per_step >= 1, decode_sample >= 1")
        if self.cores is not None and self.cores < 1:
            raise ValueError(f"cores must be >= 1, got {self.cores}")


def decode_rate(images: list[bytes], width: int, height: int, fit: str = "aspect") -> float:
    """Crops per second that patchray's JPEG decoder (libjpeg-turbo through simplejpeg, as ``decode_crops``)
    alone sustains on one core: whole for a crop of the training size, at the reduced scale ``decode_crops``
    decodes a larger one at; the fit to ``width x height`` is not part of it."""
    import simplejpeg

    from patchray.shards.decode import reduced_decode_size
    from patchray.shards.images import jpeg_size

    at_least = []
    for data in images:
        size = jpeg_size(data)
        at_least.append((size and reduced_decode_size(*size, width, height, fit)) or (0, 0))
    for data, (w, h) in list(zip(images, at_least))[:100]:  # warm-up
        simplejpeg.decode_jpeg(data, colorspace="RGB", min_width=w, min_height=h)
    start = time.perf_counter()
    for data, (w, h) in zip(images, at_least):
        simplejpeg.decode_jpeg(data, colorspace="RGB", min_width=w, min_height=h)
    return len(images) / (time.perf_counter() - start)


def fitted_decode_rate(images: list[bytes], width: int, height: int, fit: str = "aspect") -> float:
    """Crops per second of ``decode_crops`` itself on one core: the decode limit's decode, and the fit to ``width
    x height`` that a crop stored at another size needs too (a data task's work a crop before it cuts patches)."""
    from patchray.shards.decode import decode_crops

    decode_crops(images[:100], width, height, fit)  # warm-up
    start = time.perf_counter()
    for first in range(0, len(images), 256):
        decode_crops(images[first:first + 256], width, height, fit)
    return len(images) / (time.perf_counter() - start)


def _torchvision_hwc(data: bytes) -> torch.Tensor:
    from torchvision.io import ImageReadMode, decode_jpeg

    return decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB).permute(1, 2, 0)


def _simplejpeg_hwc(data: bytes) -> torch.Tensor:
    import simplejpeg

    return torch.from_numpy(simplejpeg.decode_jpeg(data, colorspace="RGB"))


# The baseline's decoders: torchvision's, what a user of torch would reach for (the baseline of the goals), and
# the one patchray decodes with, to tell the pipeline's share of a gain from the decoder's.
BASELINE_DECODERS = {"torchvision": _torchvision_hwc, "simplejpeg": _simplejpeg_hwc}


def fit_like_torchvision(crop: torch.Tensor, width: int, height: int, fit: str = "aspect") -> torch.Tensor:
    """What a torch user fits a crop of another size with: torchvision's antialiased resize (to the height,
    keeping the aspect; or to both sides for "stretch"), then a centre crop, which zero-pads a thin crop. HWC in,
    HWC out."""
    from torchvision.transforms.v2 import functional as tvf

    chw = crop.permute(2, 0, 1)
    if fit == "stretch":
        chw = tvf.resize(chw, [height, width], antialias=True)
    else:
        chw = tvf.resize(chw, [height, max(1, round(chw.shape[2] * height / chw.shape[1]))], antialias=True)
        chw = tvf.center_crop(chw, [height, width])
    return chw.permute(1, 2, 0)


class UserPatchDataset(torch.utils.data.Dataset):
    """The baseline: what a user would write without patchray. One item per crop: decode it (``decoder``, one of
    ``BASELINE_DECODERS``), fit a crop of another size to the training size (``fit_like_torchvision``), then cut
    K jittered patches from random cells in a Python loop. Same grid, same output dtype."""

    def __init__(self, images: list[bytes], task: PatchTaskConfig, decoder: str = "torchvision",
                 fit: str = "aspect"):
        self.images, self.task, self.decode, self.fit = images, task, BASELINE_DECODERS[decoder], fit
        grid = task.grid()
        self.origins = grid.cell_origins().tolist()
        low, high = grid.jitter_bounds()
        self.low, self.high = low.tolist(), high.tolist()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        crop = self.decode(self.images[index])  # HWC, as patchray's patches
        if crop.shape[:2] != (self.task.crop_height, self.task.crop_width):
            crop = fit_like_torchvision(crop, self.task.crop_width, self.task.crop_height, self.fit)
        size = self.task.patch_size
        patches, labels = [], []
        for cell in random.sample(range(len(self.origins)), self.task.patches_per_crop):
            x = self.origins[cell][0] + random.randint(self.low[cell][0], self.high[cell][0])
            y = self.origins[cell][1] + random.randint(self.low[cell][1], self.high[cell][1])
            patches.append(crop[y:y + size, x:x + size])
            labels.append(cell)
        return torch.stack(patches), torch.tensor(labels)


def _user_collate(items):
    patches, labels = zip(*items)
    return torch.cat(patches), torch.cat(labels)


@dataclass
class EpochCost:
    """One epoch of a contender: patches delivered, wall seconds, and CPU seconds of every process involved
    (``roles``: by what the process was doing, ``patchray.bench.cpu.ROLES``)."""
    patches: int
    seconds: float
    cpu_seconds: float
    roles: dict[str, float] = field(default_factory=dict)

    @property
    def patches_per_s(self) -> float:
        return self.patches / self.seconds

    @property
    def patches_per_cpu_s(self) -> float:
        return self.patches / max(self.cpu_seconds, 1e-9)


def best_epoch(epochs: list[EpochCost]) -> EpochCost:
    """The fastest epoch after the first (warm-up: process start, imports, first blocks)."""
    return max(epochs[1:], key=lambda e: e.patches_per_s)


def dataloader_epochs(images: list[bytes], cfg: IngestBenchConfig, cores: int, clock: CpuClock,
                      decoder: str = "torchvision") -> list[EpochCost]:
    """The DataLoader baseline (one worker process per core), epoch by epoch."""
    loader = torch.utils.data.DataLoader(
        UserPatchDataset(images, cfg.task, decoder, cfg.input.crop_fit), batch_size=cfg.crops_per_step, shuffle=True,
        num_workers=cores,
        collate_fn=_user_collate, drop_last=True, persistent_workers=True, prefetch_factor=4)
    epochs = []
    for _ in range(cfg.epochs):
        count, started = 0, time.time()
        for patches, _labels in loader:
            count += len(patches)
        ended = time.time()
        epochs.append(EpochCost(count, ended - started, clock.seconds_between(started, ended),
                                clock.roles_between(started, ended)))
    del loader  # its worker processes end here, before Ray's start
    return epochs


def contenders(cfg: IngestBenchConfig) -> list[str]:
    """The patchray runs: one per ``decode_on``, with ``cut_in_data`` the data tasks cutting too, with ``alone``
    the worker running its stream unsplit, and with ``cache`` the crops decoded once (``cache_decoded``), cut by
    the worker and (with ``cut_in_data``) by data tasks."""
    keys = list(cfg.decode_on)
    if cfg.cut_in_data and "data" in keys:
        keys.insert(keys.index("data") + 1, "data+cut")
    if cfg.alone and "data" in keys:
        keys.insert(keys.index("data") + 1 + cfg.cut_in_data, "alone")
    if cfg.cache and "data" in keys:
        keys += ["cached", "cached+cut"] if cfg.cut_in_data else ["cached"]
    return keys


def ray_pipeline_epochs(files: list[str], cfg: IngestBenchConfig, storage: Path, contender: str, clock: CpuClock
                        ) -> tuple[list[EpochCost], str]:
    """One Ray Train worker's batch iterator, epoch by epoch (stamped in the worker); and the resource plan."""
    from patchray.bench.stream import stream_to_one_worker
    from patchray.shards.reader import open_shards

    decode_on, cut_on, cache, split = CONTENDERS[contender]
    epochs, plan, built = stream_to_one_worker(open_shards(files), cfg.task, cfg.epochs, cfg.crops_per_step,
                                               cfg.seed, storage, f"ingest-{contender.replace('+', '-')}",
                                               decode_on=decode_on, cut_on=cut_on, cache=cache, split=split,
                                               fit=cfg.input.crop_fit)
    costs = [EpochCost(e["patches"], e["seconds"], clock.seconds_between(e["started_at"], e["ended_at"]),
                       clock.roles_between(e["started_at"], e["ended_at"])) for e in epochs]
    if built is not None:  # the one-off decode into the cache is the first epoch's cost too: added to it
        first = costs[0]
        costs[0] = EpochCost(first.patches, first.seconds + built["ended_at"] - built["started_at"],
                             first.cpu_seconds + clock.seconds_between(built["started_at"], built["ended_at"]),
                             first.roles)
    return costs, plan


def verdict(limit: float, dataloader: float, patchray: float, dataloader_per_cpu: float | None = None,
            patchray_per_cpu: float | None = None) -> dict:
    vs_loader, vs_limit = patchray / dataloader, patchray / limit
    found = {"patchray_vs_dataloader": round(vs_loader, 3), "patchray_vs_decode_limit": round(vs_limit, 3),
             "dataloader_vs_decode_limit": round(dataloader / limit, 3),
             "goal_vs_dataloader": GOAL_VS_DATALOADER, "goal_vs_decode_limit": GOAL_VS_DECODE_LIMIT,
             "met_vs_dataloader": vs_loader >= GOAL_VS_DATALOADER,
             "met_vs_decode_limit": vs_limit >= GOAL_VS_DECODE_LIMIT}
    if dataloader_per_cpu and patchray_per_cpu:
        per_cpu = patchray_per_cpu / dataloader_per_cpu
        found |= {"patchray_per_cpu_vs_dataloader": round(per_cpu, 3),
                  "goal_per_cpu_vs_dataloader": GOAL_PER_CPU_VS_DATALOADER,
                  "met_per_cpu_vs_dataloader": per_cpu >= GOAL_PER_CPU_VS_DATALOADER}
    return found


def run_ingest_bench(cfg: IngestBenchConfig, log=print) -> dict:
    from patchray.report.plots import plot_throughput
    from patchray.train.runner import init_ray

    out, base = start_bench(cfg, log)
    files = repeated_shards(base, cfg.copies, out / "shards")
    images, _ = load_jpegs(files)
    data = shard_summary(files, images)
    cores = cfg.cores or os.cpu_count() or 1
    k = cfg.task.patches_per_crop
    log(f"[bench_ingest] {data['crops']} crops ({data['files']} shard files, ~{data['mean_jpeg_bytes']} B JPEG each"
        f"{stored_size_text(data['median_size'], [cfg.task.crop_width, cfg.task.crop_height])}), "
        f"K={k} patches per crop, {cores} core(s)")

    per_core = decode_rate(images[:cfg.decode_sample], cfg.task.crop_width, cfg.task.crop_height, cfg.input.crop_fit)
    limit = per_core * cores * k
    fitted = fitted_decode_rate(images[:cfg.decode_sample], cfg.task.crop_width, cfg.task.crop_height,
                                cfg.input.crop_fit)
    log(f"[bench_ingest] decode limit: {per_core:.0f} crops/s per core x {cores} x {k} = {limit:.0f} patches/s; "
        f"decoded and fitted (decode_crops): {fitted:.0f} crops/s per core")

    random.seed(cfg.seed)
    with CpuClock() as clock:
        loader = dataloader_epochs(images, cfg, cores, clock)
        log(f"[bench_ingest] DataLoader ({cores} worker processes): {by_epoch_text(loader)}")
        same_decoder = dataloader_epochs(images, cfg, cores, clock, "simplejpeg")
        del images
        log(f"[bench_ingest] DataLoader, patchray's decoder: {by_epoch_text(same_decoder)}")

        init_ray()
        by_decode = {}
        for contender in contenders(cfg):
            pipeline, plan = ray_pipeline_epochs(files, cfg, out / "ray", contender, clock)
            best = best_epoch(pipeline)
            by_decode[contender] = {"patches_per_s": round(best.patches_per_s),
                                    "patches_per_cpu_s": round(best.patches_per_cpu_s),
                                    "cpu_s_by_role": best.roles, "seconds": round(best.seconds, 2),
                                    "by_epoch": [round(e.patches_per_s) for e in pipeline],
                                    "per_cpu_s_by_epoch": [round(e.patches_per_cpu_s) for e in pipeline]}
            log(f"[bench_ingest] patchray, {DECODE_NOTES[contender]} (Ray Data -> Ray Train worker; {plan}): "
                f"{by_epoch_text(pipeline)}")
    # The headline is the best run that decodes every epoch; a cached run's, beside it, says what decoding once buys.
    best_decode = max((d for d in by_decode if not CONTENDERS[d][2]), key=lambda d: by_decode[d]["patches_per_s"])
    cached = [d for d in by_decode if CONTENDERS[d][2]]
    best_cached = max(cached, key=lambda d: by_decode[d]["patches_per_s"]) if cached else None

    best_loader, best_pipeline = best_epoch(loader), by_decode[best_decode]
    best_same_decoder = best_epoch(same_decoder)
    result = {
        "machine": machine(), "data": data, "patches_per_crop": k, "cores": cores, "resources": plan,
        "crop_size": [cfg.task.crop_width, cfg.task.crop_height], "crop_fit": cfg.input.crop_fit,
        "decode_crops_per_s_per_core": round(per_core), "decode_limit": round(limit),
        "fitted_decode_crops_per_s_per_core": round(fitted),
        # one thread decoding flat out: the decode limit's cost, K patches per decoded crop
        "decode_limit_per_cpu_s": round(per_core * k),
        "dataloader": round(best_loader.patches_per_s), "dataloader_per_cpu_s": round(best_loader.patches_per_cpu_s),
        "dataloader_cpu_s_by_role": best_loader.roles, "dataloader_seconds": round(best_loader.seconds, 2),
        "dataloader_by_epoch": [round(e.patches_per_s) for e in loader],
        "dataloader_per_cpu_s_by_epoch": [round(e.patches_per_cpu_s) for e in loader],
        "dataloader_simplejpeg": round(best_same_decoder.patches_per_s),
        "dataloader_simplejpeg_per_cpu_s": round(best_same_decoder.patches_per_cpu_s),
        "dataloader_simplejpeg_by_epoch": [round(e.patches_per_s) for e in same_decoder],
        "patchray": best_pipeline["patches_per_s"], "patchray_per_cpu_s": best_pipeline["patches_per_cpu_s"],
        "patchray_decode_on": best_decode, "patchray_by_decode": by_decode,
    } | verdict(limit, best_loader.patches_per_s, best_pipeline["patches_per_s"], best_loader.patches_per_cpu_s,
                best_pipeline["patches_per_cpu_s"])
    if best_cached is not None:
        result["cached"] = {"contender": best_cached} | verdict(
            limit, best_loader.patches_per_s, by_decode[best_cached]["patches_per_s"], best_loader.patches_per_cpu_s,
            by_decode[best_cached]["patches_per_cpu_s"])
    (out / "ingest.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "ingest.md").write_text(format_markdown(result))
    plot_throughput({"decode limit": limit, "DataLoader": best_loader.patches_per_s,
                     "DataLoader, patchray's decoder": result["dataloader_simplejpeg"]}
                    | {f"patchray, {CONTENDER_NAMES[d]}": r["patches_per_s"] for d, r in by_decode.items()},
                    out / "ingest.png", f"Ingest, K={k} patches per crop, {describe_machine(result['machine'])}")
    plot_throughput({"decode limit (one core decoding)": per_core * k, "DataLoader": best_loader.patches_per_cpu_s,
                     "DataLoader, patchray's decoder": result["dataloader_simplejpeg_per_cpu_s"]}
                    | {f"patchray, {CONTENDER_NAMES[d]}": r["patches_per_cpu_s"] for d, r in by_decode.items()},
                    out / "ingest_cpu.png", f"Ingest cost, K={k}, {describe_machine(result['machine'])}",
                    unit="patches per CPU-second (every process involved)")
    log(format_markdown(result))
    log(f"[bench_ingest] outputs in {out}: ingest.json, ingest.md, ingest.png, ingest_cpu.png, config.yaml")
    return result


def by_epoch_text(epochs: list[EpochCost]) -> str:
    return (", ".join(f"{e.patches_per_s:.0f}" for e in epochs) + " patches/s by epoch; "
            + ", ".join(f"{e.patches_per_cpu_s:.0f}" for e in epochs) + " per CPU-second")


def format_markdown(r: dict) -> str:
    def row(name, value, note, per_cpu=None):
        cost = "" if per_cpu is None else f" {per_cpu:,.0f} |" if isinstance(per_cpu, (int, float)) else f" {per_cpu} |"
        return f"| {name} | {value:,.0f} |{cost} {value / r['decode_limit']:.2f} | {note} |"

    goal = lambda met: "met" if met else "not met"  # noqa: E731
    return "\n".join([
        f"Ingest on {describe_machine(r['machine'])}: {r['data']['crops']:,} crops"
        f"{stored_size_text(r['data'].get('median_size'), r.get('crop_size'))}, "
        f"K={r['patches_per_crop']}",
        "",
        "| contender | patches/s | patches per CPU-second | of decode limit | notes |",
        "|---|---|---|---|---|",
        row("decode limit", r["decode_limit"],
            f"{r['decode_crops_per_s_per_core']:,} crops/s on one core x {r['cores']}"
            + (f"; decoded and fitted: {fitted:,} crops/s" if (fitted := r.get("fitted_decode_crops_per_s_per_core"))
               else ""),
            r.get("decode_limit_per_cpu_s", "n/a")),
        row("torch DataLoader", r["dataloader"], f"{r['cores']} worker processes, Python-loop cutting",
            r.get("dataloader_per_cpu_s", "n/a")),
        *([row("torch DataLoader, patchray's decoder", r["dataloader_simplejpeg"],
               "the same, decoding with simplejpeg as patchray does", r.get("dataloader_simplejpeg_per_cpu_s", "n/a"))]
          if "dataloader_simplejpeg" in r else []),
        *[row(f"patchray (Ray Data -> Ray Train), {CONTENDER_NAMES[decode_on]}", run["patches_per_s"],
              f"{r['resources']}; {DECODE_NOTES[decode_on]}", run.get("patches_per_cpu_s", "n/a"))
          for decode_on, run in r["patchray_by_decode"].items()],
        "",
        f"patchray ({CONTENDER_NAMES[r['patchray_decode_on']]}) / DataLoader: {r['patchray_vs_dataloader']:.2f}x "
        f"patches/s (goal {r['goal_vs_dataloader']:g}x, {goal(r['met_vs_dataloader'])})"
        + (f", {r['patchray_per_cpu_vs_dataloader']:.2f}x patches per CPU-second (goal "
           f"{r['goal_per_cpu_vs_dataloader']:g}x, {goal(r['met_per_cpu_vs_dataloader'])})"
           if "patchray_per_cpu_vs_dataloader" in r else "")
        + (f"; against the DataLoader with patchray's decoder: "
           f"{r['patchray'] / r['dataloader_simplejpeg']:.2f}x patches/s"
           + (f", {r['patchray_per_cpu_s'] / r['dataloader_simplejpeg_per_cpu_s']:.2f}x per CPU-second"
              if r.get("patchray_per_cpu_s") and r.get("dataloader_simplejpeg_per_cpu_s") else "")
           if r.get("dataloader_simplejpeg") else "")
        + f"; patchray / decode limit: {r['patchray_vs_decode_limit']:.2f} "
        f"(goal {r['goal_vs_decode_limit']:g}, {goal(r['met_vs_decode_limit'])})",
        *([f"patchray decoding once (cache_decoded; {CONTENDER_NAMES[c['contender']]}) / DataLoader, epochs after "
           f"the first: {c['patchray_vs_dataloader']:.2f}x patches/s, {c['patchray_per_cpu_vs_dataloader']:.2f}x "
           f"patches per CPU-second (goal {c['goal_per_cpu_vs_dataloader']:g}x, "
           f"{goal(c['met_per_cpu_vs_dataloader'])}); its first epoch includes the decode into the cache"]
          if (c := r.get("cached")) and "patchray_per_cpu_vs_dataloader" in c else []),
        "CPU seconds: every process of the benchmark's tree (DataLoader workers; Ray's GCS, raylet, data tasks and "
        "training worker), in the same epoch as patches/s (the fastest after the first).",
        "",
        *role_lines(r),
    ])


def stored_size_text(median: list[int] | None, crop: list[int] | None) -> str:
    """" of WxH", or " stored at WxH (median), fitted to WxH" where the crops are not stored at the training
    size ``crop``."""
    if not median:
        return ""
    if crop is None or list(median) == list(crop):
        return f" of {median[0]}x{median[1]}"
    return f" stored at {median[0]}x{median[1]} (median), fitted to {crop[0]}x{crop[1]}"


def role_lines(r: dict) -> list[str]:
    """Where each contender's CPU went in its measured epoch, as CPUs busy on average."""
    runs = [("torch DataLoader", r.get("dataloader_cpu_s_by_role"), r.get("dataloader_seconds"))] + [
        (CONTENDER_NAMES[d], run.get("cpu_s_by_role"), run.get("seconds"))
        for d, run in r["patchray_by_decode"].items()]
    lines = []
    for name, roles, seconds in runs:
        if roles and seconds:
            lines.append(f"- {name}: " + ", ".join(f"{role} {spent / seconds:.2f}" for role, spent in
                                                    sorted(roles.items(), key=lambda item: -item[1])) + " CPUs")
    return (["CPUs busy, by process, in the measured epoch:", "", *lines, ""]) if lines else []
