"""Linear probe of frozen trunks: how much of each person attribute a linear map of a trunk's features recovers,
for any PatchTask checkpoint and for random and ImageNet inits, at the label budgets fine-tuning is compared at.

The transfer analysis beside full fine-tuning (``compare_inits``): fine-tuning asks how good a start an init is,
the probe asks what the frozen features already hold. Per init, the trunk is built as fine-tuning builds it
(``build_trunk`` + ``initialise_trunk``, the random weights drawn after ``torch.manual_seed(trunk_seed)``) and
fed crops normalised as fine-tuning from that init feeds them; the train, val and test crops are embedded once
(``patchray.probe.embed``, eval mode, no gradients) and cached in ``OUT/NAME/features/<init>.npz``. Then, per label
budget and seed, a linear probe (``patchray.probe.linear_probe``) is fitted on the budget's train crops, the very
crops ``choose_budget`` gives fine-tuning with ``labels=N seed=S``, and scored on val and test with
``attribute_metrics``.

A single process, no Ray: the features of one init are a few hundred floats a crop (megabytes for every split)
and fit in memory, and a probe fits in seconds on one core, so there is nothing to spread over a cluster. The one
cost, embedding, runs on the GPU when torch sees one (else the CPU), and is paid once per init and checkpoint: a
re-run reuses the cached features, and a changed checkpoint (its weights are part of the cache's identity) is
embedded again.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from patchray import config as configlib
from patchray.models.init import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    InitError,
    InitSpec,
    imagenet_cache_path,
    parse_init,
    settle_normalization,
)
from patchray.probe.features import POOLS, Normalize, Pool, crop_normalizer
from patchray.probe.linear import DEFAULT_L2
from patchray.shards.default_data import SyntheticDataConfig
from patchray.train.config import FinetuneConfig, InputConfig

LOG = "[evaluate]"
SPLITS = ("train", "val", "test")
# Seeds of the crop-id draws of the caps, apart from the patch sampler's epochs (>= -1), fine-tuning's budget
# and val draws (-2, -3) and the online probe's (-4, -5). A val cap draws as fine-tuning's val_limit does.
TEST_SUBSET_EPOCH = -6
TRAIN_POOL_EPOCH = -7
SUBSET_SEED = 0
FEATURES_FORMAT = 1  # bump when what a features file holds changes: older files are then embedded again
READ_BATCH = 256  # crops decoded (and embedded by every init) at a time: a few MB of pixels
PROGRESS_EVERY_S = 10.0
# Test scores shown in the tables and plot, with their labels (keys of fine-tuning's summary scores).
TABLE_METRICS = (("mA", "mA"), ("mAP", "mAP"))


def default_inits(model: str) -> list[str]:
    """random and the default pretraining's checkpoint; imagenet too when its weights for ``model`` are in the
    local torch cache (nothing is downloaded: offline, the row is simply not there)."""
    inits = ["random", "patchtask:runs/pretrain"]
    try:
        if imagenet_cache_path(model).is_file():
            inits.append("imagenet")
    except InitError:
        pass  # no ImageNet weights exist for this trunk
    return inits


@dataclass
class LinearEvalConfig:
    name: str = "evaluate"
    out: str = "runs"
    # random | patchtask:<pretraining run folder or pretext.pt> | imagenet, any number of each kind; null: random,
    # patchtask:runs/pretrain, and imagenet when its weights are in the local torch cache.
    inits: list[str] | None = None
    model: str = "tiny_d25"  # the trunk; a PatchTask checkpoint must hold this trunk's tensors
    # Folders of labeled shards (*-train-*, *-val-*, *-test-*); empty: the synthetic default's labeled part.
    data: list[str] = field(default_factory=list)
    # Labeled training crops per probe, drawn as fine-tuning with labels=N seed=S draws them; null: every train crop
    # embedded (all of the split, or max_train_crops of it).
    budgets: list[int | None] = field(default_factory=lambda: [50, 100, 250, 1000, None])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    # The seed a random init's trunk is drawn with (fine-tuning with seed=S draws it with S). One trunk serves every
    # budget and seed, so for random the spread over seeds is the label draw's alone.
    trunk_seed: int = 0
    l2: float = DEFAULT_L2  # penalty of the linear probe (per-example mean loss + l2/2 |W|^2)
    pool: Pool = "avgmax"  # how the trunk's map becomes a feature vector (patchray.probe.features)
    # Caps on the crops embedded per split (null: all), to bound the embedding cost (~19 ms a crop for tiny_d25 on
    # one busy CPU). Train: every finite budget's crops for every seed, topped up by crop id; val: the crops
    # fine-tuning's val_limit=N scores; test: N drawn by crop id.
    max_train_crops: int | None = None
    max_val_crops: int | None = None
    max_test_crops: int | None = None
    input: InputConfig = field(default_factory=InputConfig)  # as fine-tuning's; normalize null follows each init
    synthetic: SyntheticDataConfig = field(default_factory=SyntheticDataConfig)

    def __post_init__(self):
        if not self.name or "/" in self.name:
            raise ValueError(f"name {self.name!r} must be a non-empty folder name")
        if self.inits is None:
            self.inits = default_inits(self.model)
        if not self.inits:
            raise ValueError("inits is empty: name at least one init")
        for init in self.inits:
            parse_init(init)  # an unknown init stops here, named
            finetune_view(self, init)  # and so does a normalisation fine-tuning from it would refuse
        if len(set(self.inits)) < len(self.inits):
            raise ValueError(f"inits lists an init twice: {self.inits}")
        if not self.budgets or not self.seeds:
            raise ValueError("need at least one budget and one seed")
        if any(b is not None and b < 1 for b in self.budgets) or len(set(self.budgets)) < len(self.budgets):
            raise ValueError(f"budgets must be distinct integers >= 1 (or null for all), got {self.budgets}")
        if len(set(self.seeds)) < len(self.seeds):
            raise ValueError(f"seeds lists a seed twice: {self.seeds}")
        for name in ("max_train_crops", "max_val_crops", "max_test_crops"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 (or null for all), got {value}")
        if not (math.isfinite(self.l2) and self.l2 >= 0):
            raise ValueError(f"l2 must be a finite number >= 0, got {self.l2}")
        if self.pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, got {self.pool!r}")


def finetune_view(cfg: LinearEvalConfig, init: str) -> FinetuneConfig:
    """The fine-tuning config whose data, trunk, init and input this evaluation mirrors: its checks (an input
    normalisation the init rules out) and its data resolution are fine-tuning's own."""
    return FinetuneConfig(init=init, model=cfg.model, data=list(cfg.data), input=dataclasses.replace(cfg.input),
                          synthetic=cfg.synthetic, val_limit=cfg.max_val_crops, val_seed=SUBSET_SEED)


# ---- inits: labels, trunks, normalisation ----------------------------------------------------------------------

def absolute_init(init: str) -> str:
    """``init`` with a PatchTask path made absolute, so that config.yaml and the outputs work from anywhere."""
    spec = parse_init(init)
    if spec.kind != "patchtask":
        return init
    return f"patchtask:{Path(os.path.expanduser(spec.path)).resolve()}"


def _run_name(path: str) -> str:
    """A PatchTask checkpoint's run folder name (``<run>`` of ``<run>/checkpoints/pretext.pt``)."""
    path = Path(path)
    if path.is_file() and path.parent.name == "checkpoints":
        return path.parent.parent.name
    return path.name if path.is_dir() else path.stem


def init_labels(inits: list[str]) -> list[str]:
    """A short, distinct label per init for tables, plots and feature files: ``random``, ``imagenet``,
    ``patchtask`` when there is one PatchTask init, else ``patchtask:<run folder name>`` (numbered if those
    repeat)."""
    patchtask = [i for i in inits if parse_init(i).kind == "patchtask"]
    labels = []
    for init in inits:
        spec = parse_init(init)
        label = spec.kind if spec.kind != "patchtask" or len(patchtask) == 1 else f"patchtask:{_run_name(spec.path)}"
        base, n = label, 1
        while label in labels:
            n += 1
            label = f"{base}#{n}"
        labels.append(label)
    return labels


def features_file(out: Path, label: str) -> Path:
    return out / "features" / (re.sub(r"[^A-Za-z0-9_.-]+", "-", label) + ".npz")


def resolved_input(cfg: LinearEvalConfig, spec: InitSpec) -> dict:
    """The normalisation fine-tuning from ``spec`` feeds the trunk (``settle_normalization``, the rule fine-tuning
    uses): ImageNet's mean/std for imagenet; for a PatchTask checkpoint its pretraining's recorded normalisation
    with per-pixel statistics pooled per channel; ``input.normalize`` or ``patch`` otherwise. A set
    ``input.normalize`` that differs from the pretraining's is refused, naming both.
    ``{"normalize", "normalize_mean", "normalize_std"}`` (the two lists for ``dataset`` only)."""
    if spec.kind == "imagenet":
        return {"normalize": "dataset", "normalize_mean": list(IMAGENET_MEAN), "normalize_std": list(IMAGENET_STD)}
    given = cfg.input
    normalize, mean, std = settle_normalization(spec, given.normalize, given.normalize_mean, given.normalize_std,
                                                who="evaluate")
    return {"normalize": normalize, "normalize_mean": mean, "normalize_std": std}


def normalizer(resolved: dict) -> Normalize:
    """uint8 crops on the device -> network input, for :func:`resolved_input`'s record."""
    return crop_normalizer({"mode": resolved["normalize"], "mean": resolved["normalize_mean"],
                            "std": resolved["normalize_std"]})


def trunk_fingerprint(trunk) -> str:
    """Hash of a trunk's weights: the checkpoint's content as it reaches the trunk (a re-made pretraining at the
    same path changes it), and the seeded draw of a random init."""
    digest = hashlib.sha256()
    for key, tensor in trunk.state_dict().items():
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


@dataclass
class PreparedInit:
    init: str  # as recorded (PatchTask paths absolute)
    label: str
    trunk: object
    normalize: Normalize
    input: dict  # resolved_input's record
    transfer: str  # what the init copied, in one line
    identity: dict  # what the cached features depend on, besides which crops (see load_cached)


def prepare_init(cfg: LinearEvalConfig, init: str, label: str, data: dict, device) -> PreparedInit:
    """The frozen trunk of ``init`` on ``device``, built as fine-tuning builds it, with its normalisation and the
    identity of the features it gives on ``data`` (fingerprints of the splits' shards). A missing checkpoint, a
    checkpoint of another trunk or a refused normalisation raise ``InitError`` here, before anything is
    embedded."""
    import torch

    from patchray.accel import channels_last_for, to_memory_format
    from patchray.models import build_trunk
    from patchray.models.init import initialise_trunk

    spec = parse_init(init)
    with torch.random.fork_rng(devices=[]):  # the draw of fine-tuning with seed=trunk_seed, the caller's RNG kept
        torch.manual_seed(cfg.trunk_seed)
        trunk = build_trunk(cfg.model)
        report = initialise_trunk(trunk, spec, cfg.model)
    given = resolved_input(cfg, spec)
    transfer = report.summary().splitlines()[0] if report else f"random init (He, seed {cfg.trunk_seed})"
    size = cfg.input
    identity = {"format": FEATURES_FORMAT, "init": spec.kind, "trunk": trunk_fingerprint(trunk), "model": cfg.model,
                "input": {"crop_width": size.crop_width, "crop_height": size.crop_height,
                          "crop_fit": size.crop_fit, **given},
                "pool": cfg.pool, "data": data}
    # Channels-last: the frozen trunk embeds ~1.7x faster on CPUs and GPUs alike (docs/performance.md).
    trunk = to_memory_format(trunk.to(device), channels_last_for(None, torch.device(device)))
    return PreparedInit(init, label, trunk, normalizer(given), given, transfer, identity)


# ---- which crops ------------------------------------------------------------------------------------------------

def budget_crops(train_shards, budget: int | None, seed: int) -> set[str] | None:
    """The train crops the probe of ``budget`` and ``seed`` is fitted on: ``choose_budget``'s draw, the crops
    fine-tuning with ``labels=budget seed=seed`` trains on; None for budget None: every embedded train crop."""
    from patchray.train.finetune import choose_budget

    return choose_budget(train_shards, budget, seed)


def train_pool(train_shards, cfg: LinearEvalConfig) -> set[str] | None:
    """The train crops embedded (None: the whole split). Under ``max_train_crops``: every finite budget's crops
    for every seed (so that each probe still trains on fine-tuning's crops), topped up to the cap by crop id.
    A budget the split cannot fill, or a cap below the budgets' own crops, is refused before any work."""
    from patchray.train.finetune import first_in_hash_order, split_crop_ids
    from patchray.train.pretrain import DatasetTooSmallError

    ids = split_crop_ids(train_shards)
    finite = [b for b in cfg.budgets if b is not None]
    if finite and max(finite) > len(ids):
        raise DatasetTooSmallError(f"budget {max(finite)} but the training split has only {len(ids)} crops "
                                   f"({list(train_shards.files)}); lower budgets")
    cap = cfg.max_train_crops
    if cap is None or cap >= len(ids):
        return None
    drawn = set().union(*(budget_crops(train_shards, max(finite), seed) for seed in cfg.seeds)) \
        if finite else set()
    if len(drawn) > cap:
        raise configlib.ConfigError(f"max_train_crops={cap} is below the {len(drawn)} train crops that budget "
                                    f"{max(finite)} draws over seeds {cfg.seeds}; raise it or lower the budgets")
    rest = [i for i in ids if i not in drawn]
    return drawn | first_in_hash_order(rest, cap - len(drawn), SUBSET_SEED, TRAIN_POOL_EPOCH)


def eval_subset(shards, cap: int | None, epoch: int) -> set[str] | None:
    """``cap`` crops of a val or test split drawn by crop id (None: all)."""
    from patchray.train.finetune import first_in_hash_order, split_crop_ids

    if cap is None or cap >= shards.num_rows:
        return None
    return first_in_hash_order(split_crop_ids(shards), cap, SUBSET_SEED, epoch)


def wanted_crops(shards: dict, cfg: LinearEvalConfig) -> dict[str, set[str] | None]:
    from patchray.train.finetune import VAL_SUBSET_EPOCH

    # The val cap draws as fine-tuning's val_limit (val_seed 0) draws: the crops a capped fine-tuning scores.
    return {"train": train_pool(shards["train"], cfg), "val": eval_subset(shards["val"], cfg.max_val_crops,
                                                                          VAL_SUBSET_EPOCH),
            "test": eval_subset(shards["test"], cfg.max_test_crops, TEST_SUBSET_EPOCH)}


# ---- features: reading, embedding, caching ----------------------------------------------------------------------

@dataclass
class SplitFeatures:
    """One split's embedded crops: ids (file order), features [N, D] float32, stored labels [N, A]; and the ids
    asked for that failed to decode (bad rows), so that a cache knows it has seen them."""
    ids: np.ndarray
    features: np.ndarray
    labels: np.ndarray
    bad: np.ndarray

    def covers(self, wanted: set[str] | None, everything: int) -> bool:
        """Whether these features hold every crop of ``wanted`` (None: the split's ``everything`` crops)."""
        seen = set(self.ids.tolist()) | set(self.bad.tolist())
        return len(seen) == everything if wanted is None else wanted <= seen

    def subset(self, wanted: set[str] | None) -> SplitFeatures:
        if wanted is None:
            return self
        keep = np.array([i in wanted for i in self.ids.tolist()], dtype=bool)
        return SplitFeatures(self.ids[keep], self.features[keep], self.labels[keep],
                             np.array([i for i in self.bad.tolist() if i in wanted], dtype=str))

    def rows(self, crops: set[str] | None) -> np.ndarray:
        """Row indices of ``crops`` among these features (None: every row); crops that failed to decode have
        none."""
        if crops is None:
            return np.arange(len(self.ids))
        return np.flatnonzero([i in crops for i in self.ids.tolist()])


def read_crops(shards, wanted: set[str] | None, size: InputConfig) -> Iterator[tuple[list, np.ndarray, np.ndarray,
                                                                                     list]]:
    """Batches of a split's crops in file order, decoded at the fine-tuning crop size: (ids, uint8 pixels
    [B, H, W, 3], stored labels [B, A], ids of bad rows). Like fine-tuning's ``read_labeled``, but batch by batch
    (every init embeds a batch while it is decoded, so pixels never pile up) and with the ids, which map the
    label budgets onto rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from patchray.shards.decode import decode_crops
    from patchray.shards.schema import CROP_ID, IMAGE

    columns = shards.attributes.columns
    for path in shards.files:
        for batch in pq.ParquetFile(path, filesystem=shards.filesystem).iter_batches(
                batch_size=READ_BATCH, columns=[IMAGE, CROP_ID, *columns]):
            if wanted is not None:
                batch = batch.filter(pa.array([c in wanted for c in batch.column(CROP_ID).to_pylist()]))
            if not batch.num_rows:
                continue
            ids = batch.column(CROP_ID).to_pylist()
            pixels, reasons = decode_crops(batch.column(IMAGE).to_pylist(), size.crop_width, size.crop_height,
                                           size.crop_fit)
            good = [i for i, reason in enumerate(reasons) if not reason]
            labels = np.stack([batch.column(c).to_numpy(zero_copy_only=False) for c in columns], 1)
            yield ([ids[i] for i in good], pixels[good], labels[good].astype(np.int64),
                   [ids[i] for i, reason in enumerate(reasons) if reason])


class Progress:
    """Progress lines while a split is embedded: crops done, rate and time left, every PROGRESS_EVERY_S."""

    def __init__(self, split: str, total: int, inits: list[str], device, log):
        self.split, self.total, self.log = split, total, log
        self.done, self.start = 0, time.time()
        self.last = self.start
        log(f"{LOG} embedding {total} {split} crops with {', '.join(inits)} on {device}")

    def advance(self, crops: int) -> None:
        self.done += crops
        now = time.time()
        if now - self.last >= PROGRESS_EVERY_S and self.done < self.total:
            self.last = now
            rate = self.done / (now - self.start)
            self.log(f"{LOG}   {self.split}: {self.done}/{self.total} crops, {rate:.0f} crops/s, "
                     f"~{(self.total - self.done) / rate:.0f} s left")

    def finish(self, num_inits: int) -> None:
        seconds = max(time.time() - self.start, 1e-9)
        self.log(f"{LOG}   {self.split}: {self.done} crops in {seconds:.0f} s ({self.done / seconds:.0f} crops/s "
                 f"decoded and embedded, {1000 * seconds / max(self.done * num_inits, 1):.1f} ms a crop and init)")


def embed_splits(stale: list[PreparedInit], shards: dict, wanted: dict, cfg: LinearEvalConfig, device,
                 log) -> dict[str, dict[str, SplitFeatures]]:
    """Every split's wanted crops decoded once and embedded by each of ``stale``'s trunks: {label: {split:
    SplitFeatures}}. A split without a usable crop is refused, naming its files."""
    from patchray.probe import embed
    from patchray.train.pretrain import DatasetTooSmallError

    result = {init.label: {} for init in stale}
    for split in SPLITS:
        total = shards[split].num_rows if wanted[split] is None else len(wanted[split])
        progress = Progress(split, total, [init.label for init in stale], device, log)
        ids, labels, bad = [], [], []
        features = {init.label: [] for init in stale}
        for batch_ids, pixels, batch_labels, batch_bad in read_crops(shards[split], wanted[split], cfg.input):
            for init in stale:
                features[init.label].append(embed(init.trunk, pixels, init.normalize, device, pool=cfg.pool))
            ids += batch_ids
            labels.append(batch_labels)
            bad += batch_bad
            progress.advance(len(batch_ids) + len(batch_bad))
        progress.finish(len(stale))
        if not ids:
            raise DatasetTooSmallError(f"the {split} split has no usable crop ({len(bad)} bad) in "
                                       f"{list(shards[split].files)}")
        for init in stale:
            result[init.label][split] = SplitFeatures(np.array(ids, dtype=str), np.concatenate(features[init.label]),
                                                      np.concatenate(labels), np.array(bad, dtype=str))
    return result


def save_features(path: Path, identity: dict, splits: dict[str, SplitFeatures]) -> None:
    """Written whole or not at all (a temporary file renamed into place): an interrupted run leaves no half file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"identity": np.array(json.dumps(identity, sort_keys=True))}
    for split, data in splits.items():
        arrays |= {f"{split}_{key}": getattr(data, key) for key in ("ids", "features", "labels", "bad")}
    scratch = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(scratch, "wb") as f:
        np.savez(f, **arrays)
    os.replace(scratch, path)


def load_cached(path: Path, identity: dict, shards: dict, wanted: dict) -> tuple[dict | None, str]:
    """The cached features of this identity holding every wanted crop, cut to those crops; else (None, why not)."""
    from patchray.train.identity import differences

    if not path.is_file():
        return None, "no cached features"
    try:
        with np.load(path, allow_pickle=False) as cached:
            stored = json.loads(str(cached["identity"]))
            changed = differences(stored, identity)
            if changed:
                return None, "cached features of other settings (" + "; ".join(changed)[:300] + ")"
            splits = {split: SplitFeatures(*(cached[f"{split}_{key}"] for key in ("ids", "features", "labels", "bad")))
                      for split in SPLITS}
    except (OSError, ValueError, KeyError) as e:  # a damaged or foreign file is embedded again, not trusted
        return None, f"unreadable cached features ({e})"
    for split in SPLITS:
        if not splits[split].covers(wanted[split], shards[split].num_rows):
            return None, f"the cached features lack some of the {split} crops asked for now"
    return {split: splits[split].subset(wanted[split]) for split in SPLITS}, "reused"


# ---- probes and their aggregate ----------------------------------------------------------------------------------

def probe_run(train: SplitFeatures, rows: np.ndarray, val: SplitFeatures, test: SplitFeatures, attributes,
              l2: float) -> dict:
    """One linear probe fitted on ``train``'s ``rows``, scored on val and test: fine-tuning's summary scores per
    split and the test balanced accuracy per attribute. Val and test are predicted in one pass (the fit is the
    same; standardisation uses the train rows only)."""
    from patchray.metrics import attribute_metrics, to_jsonable
    from patchray.probe import linear_probe
    from patchray.train.finetune import summary_scores

    probs = linear_probe(train.features[rows], train.labels[rows], np.concatenate([val.features, test.features]),
                         attributes, l2=l2)
    n = len(val.ids)
    val_metrics = to_jsonable(attribute_metrics([p[:n] for p in probs], val.labels, attributes))
    test_metrics = to_jsonable(attribute_metrics([p[n:] for p in probs], test.labels, attributes))
    return {"train_crops": len(rows), "val": summary_scores(val_metrics), "test": summary_scores(test_metrics),
            "test_attributes": {name: entry["balanced_accuracy"]
                                for name, entry in test_metrics["attributes"].items()}}


def mean_std(values: list) -> dict:
    """Mean and (population) std over seeds of the defined values; None for both when none is defined."""
    defined = np.array([v for v in values if v is not None], dtype=float)
    if not len(defined):
        return {"mean": None, "std": None}
    return {"mean": float(defined.mean()), "std": float(defined.std())}


def aggregate(runs: list[dict], inits: list[str], budgets: list) -> list[dict]:
    """Per init and budget: how many seeds, the train crops, and mean ± std over seeds of every score of val and
    test."""
    table = []
    for init in inits:
        for budget in budgets:
            chosen = [r for r in runs if r["init"] == init and r["budget"] == budget]
            row = {"init": init, "budget": budget, "seeds": len(chosen),
                   "train_crops": max((r["train_crops"] for r in chosen), default=0)}
            for split in ("val", "test"):
                keys = dict.fromkeys(k for r in chosen for k in r[split])
                row[split] = {k: mean_std([r[split].get(k) for r in chosen]) for k in keys}
            table.append(row)
    return table


def budget_label(row: dict) -> str:
    return str(row["budget"]) if row["budget"] is not None else f"all ({row['train_crops']})"


def score_table(table: list[dict], key: str) -> str | None:
    """Markdown: an init per row, a budget per column, test ``key`` mean ± std in points; None when no run
    defines it (mAP without a binary attribute)."""
    if all((row["test"].get(key) or {}).get("mean") is None for row in table):
        return None
    inits = list(dict.fromkeys(row["init"] for row in table))
    first = [row for row in table if row["init"] == inits[0]]
    lines = ["| init | " + " | ".join(budget_label(row) for row in first) + " |",
             "| --- |" + " ---: |" * len(first)]
    for init in inits:
        cells = []
        for row in (r for r in table if r["init"] == init):
            cell = row["test"].get(key) or {}
            cells.append("–" if cell.get("mean") is None else f"{100 * cell['mean']:.1f} ± {100 * cell['std']:.1f}")
        lines.append(f"| {init} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---- outputs ----------------------------------------------------------------------------------------------------

def plot_low_shot(table: list[dict], path: Path) -> Path:
    """Test mA against labeled training crops (log x), a line per init, error bars = std over seeds."""
    from patchray.report.compare_plots import low_shot_axes
    from patchray.report.plots import _save

    series = {init: [(r["train_crops"], r["test"]["mA"]["mean"], r["test"]["mA"]["std"]) for r in table
                     if r["init"] == init and (r["test"].get("mA") or {}).get("mean") is not None]
              for init in dict.fromkeys(row["init"] for row in table)}
    ticks = {row["train_crops"]: budget_label(row) for row in table if row["train_crops"] and row["budget"] is None}
    ticks = {row["train_crops"]: str(row["budget"]) for row in table if row["budget"] is not None} | ticks
    return _save(low_shot_axes(series, ticks, "labeled training crops", "test mA",
                               "Linear probe of the frozen trunk, by init"), path)


def report_markdown(cfg: LinearEvalConfig, result: dict) -> str:
    sections = [f"# Linear probe of frozen trunks: {cfg.name}\n",
                "Test split, mean ± std over seeds " + ", ".join(map(str, cfg.seeds)) + ", in points (protocol "
                "balanced: N/A excluded). A logistic regression per attribute on the frozen trunk's "
                f"{cfg.pool}-pooled features (l2 {cfg.l2:g}), fitted on the labeled training crops fine-tuning with "
                "labels=N seed=S trains on; \"all\" is every embedded train crop, the same for every seed.\n"]
    for key, label in TABLE_METRICS:
        table = score_table(result["table"], key)
        if table:
            sections.append(f"## Test {label}\n\n{table}\n")
    lines = [f"- {label}: `{info['init']}`; {info['transfer']}; input normalize {info['input']['normalize']}"
             for label, info in result["inits"].items()]
    crops = result["crops"]
    sections.append("## Inits\n\n" + "\n".join(lines) + "\n")
    sections.append(f"Embedded crops: {crops['train']} train, {crops['val']} val, {crops['test']} test. Val scores, "
                    "mBER, orientation accuracy, the parse27k protocol's mAP / mBER and per-attribute test balanced "
                    "accuracies are in linear_eval.json.\n")
    return "\n".join(sections)


def write_outputs(out: Path, cfg: LinearEvalConfig, result: dict) -> list[str]:
    (out / "linear_eval.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "linear_eval.md").write_text(report_markdown(cfg, result))
    plot_low_shot(result["table"], out / "low_shot_linear.png")
    return ["linear_eval.md", "linear_eval.json", "low_shot_linear.png", "config.yaml", "features/"]


def format_summary(result: dict, out: Path, outputs: list[str]) -> str:
    reused = [label for label, info in result["inits"].items() if info["features"] == "reused"]
    return "\n".join([
        f"{LOG} done in {result['wall_s']:.0f} s: linear probes of {len(result['inits'])} init(s) at "
        f"{len(result['budgets'])} budget(s) x {len(result['seeds'])} seed(s); test mA:",
        score_table(result["table"], "mA") or "  (no test mA defined)",
        f"  features reused for: {', '.join(reused) or 'none'}; embedded on {result['device']}",
        f"  outputs in {out}: {', '.join(outputs)}",
    ])


# ---- the job ----------------------------------------------------------------------------------------------------

def open_splits(cfg: LinearEvalConfig, log) -> dict:
    """The train / val / test shards fine-tuning would read; all three must label the same attributes."""
    from patchray.shards.reader import open_shards
    from patchray.shards.schema import ShardSchemaError
    from patchray.train.finetune import resolve_splits

    specs = resolve_splits(finetune_view(cfg, cfg.inits[0]), log)
    shards = {split: open_shards(specs[split], require_attributes=True) for split in SPLITS}
    for split in ("val", "test"):
        if shards[split].attributes != shards["train"].attributes:
            raise ShardSchemaError(shards[split].files[0], None,
                                   f"attributes differ from the training split's ({shards['train'].attributes.names})")
    return shards


def run_linear_eval(cfg: LinearEvalConfig, log=print) -> dict:
    import torch

    from patchray.train.runner import run_dir

    t0 = time.time()
    out = run_dir(cfg)
    cfg = dataclasses.replace(cfg, inits=[absolute_init(init) for init in cfg.inits])
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    shards = open_splits(cfg, log)
    data = {split: shards[split].fingerprint for split in SPLITS}
    # Every trunk built and checked before any crop is read: a bad init stops the job at once, naming it.
    inits = [prepare_init(cfg, init, label, data, device) for init, label in zip(cfg.inits, init_labels(cfg.inits))]
    wanted = wanted_crops(shards, cfg)
    out.mkdir(parents=True, exist_ok=True)
    configlib.dump_yaml(cfg, out / "config.yaml")

    features, status = {}, {}
    for init in inits:
        features[init.label], why = load_cached(features_file(out, init.label), init.identity, shards, wanted)
        status[init.label] = "reused" if features[init.label] is not None else "embedded"
        log(f"{LOG} init {init.label} ({init.init}): {init.transfer}; "
            + ("features reused from " + str(features_file(out, init.label)) if status[init.label] == "reused"
               else f"{why}: embedding"))
    stale = [init for init in inits if features[init.label] is None]
    if stale:
        for label, splits in embed_splits(stale, shards, wanted, cfg, device, log).items():
            features[label] = splits
            save_features(features_file(out, label), next(i.identity for i in stale if i.label == label), splits)

    runs = probe_runs(cfg, inits, features, shards, log)
    labels = [init.label for init in inits]
    some = features[labels[0]]
    result = {"name": cfg.name, "output": str(out), "model": cfg.model, "pool": cfg.pool, "l2": cfg.l2,
              "budgets": cfg.budgets, "seeds": cfg.seeds, "device": str(device),
              "crops": {split: len(some[split].ids) for split in SPLITS},
              "inits": {init.label: {"init": init.init, "transfer": init.transfer, "input": init.input,
                                     "features": status[init.label],
                                     "features_file": str(features_file(out, init.label))} for init in inits},
              "table": aggregate(runs, labels, cfg.budgets), "runs": runs}
    result["wall_s"] = round(time.time() - t0, 1)
    outputs = write_outputs(out, cfg, result)
    log(format_summary(result, out, outputs))
    return result


def probe_runs(cfg: LinearEvalConfig, inits: list[PreparedInit], features: dict, shards: dict, log) -> list[dict]:
    """A probe per init, budget and seed. The budget's crops are drawn once per budget and seed and shared by
    every init; budget None is fitted once per init (the same crops for every seed, and the fit is
    deterministic) and recorded for each seed."""
    runs = []
    for budget in cfg.budgets:
        t0 = time.time()
        for seed in cfg.seeds:
            crops = budget_crops(shards["train"], budget, seed)
            for init in inits:
                splits = features[init.label]
                if budget is None and seed != cfg.seeds[0]:
                    scores = next(r for r in runs if r["init"] == init.label and r["budget"] is None)
                    scores = {k: v for k, v in scores.items() if k not in ("init", "budget", "seed")}
                else:
                    scores = probe_run(splits["train"], splits["train"].rows(crops), splits["val"], splits["test"],
                                       shards["train"].attributes, cfg.l2)
                runs.append({"init": init.label, "budget": budget, "seed": seed, **scores})
        log(f"{LOG} probes at budget {budget if budget is not None else 'all'}: {len(cfg.seeds)} seed(s) x "
            f"{len(inits)} init(s) in {time.time() - t0:.1f} s")
    return runs

