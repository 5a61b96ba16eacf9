"""Driver of attribute fine-tuning: labeled shards, trunk init, Ray Train, then metrics, plots and a summary."""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from patchray import config as configlib
from patchray import tracking
from patchray.metrics import metrics_table_markdown, parse27k_table_markdown, to_jsonable
from patchray.models.init import parse_init
from patchray.patches import crop_seed
from patchray.shards.decode import decode_crops
from patchray.shards.default_data import ensure_synthetic
from patchray.shards.reader import ShardSet, open_shards
from patchray.shards.schema import CROP_ID, IMAGE, ShardSchemaError
from patchray.train.checkpoint import atomic_torch_save
from patchray.train.config import FinetuneConfig
from patchray.train.identity import check_resumable, location_path, run_identity
from patchray.train.pretrain import DatasetTooSmallError
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
    unsplit_when_alone,
)

RAY_RUN_NAME = "finetune"
# Seed the label-budget and val-subset draws apart from the patch sampler's epochs (which are >= -1) and from
# each other.
BUDGET_EPOCH = -2
VAL_SUBSET_EPOCH = -3


def evaluated_splits(cfg: FinetuneConfig) -> tuple[str, ...]:
    """The splits a run reads: test only with ``evaluate_test`` (a search's trials tune on train and val)."""
    return ("train", "val", "test") if cfg.evaluate_test else ("train", "val")


def explicit_split_specs(cfg: FinetuneConfig, split: str) -> list[str]:
    return list(getattr(cfg, f"{split}_data"))


def labeled_folders(cfg: FinetuneConfig, log=print) -> list[str]:
    """The folders the splits are found in: ``data``, or the synthetic default's labeled part (rendered once)
    when neither it nor every split the run reads is given explicitly."""
    if cfg.data or all(explicit_split_specs(cfg, split) for split in evaluated_splits(cfg)):
        return list(cfg.data)
    return [os.path.join(ensure_synthetic(cfg.synthetic, log, tag="finetune"), "labeled")]


def resolve_splits(cfg: FinetuneConfig, log=print) -> dict[str, list[str]]:
    """Shard specs per split the run reads (no ``test`` key with ``evaluate_test`` off)."""
    folders = labeled_folders(cfg, log)
    return {split: explicit_split_specs(cfg, split) or [os.path.join(folder, f"*-{split}-*.parquet")
                                                         for folder in folders]
            for split in evaluated_splits(cfg)}


def split_crop_ids(shards: ShardSet) -> list[str]:
    """Every crop id of a split, in file order, from the id column alone (no image is read)."""
    return [c for f in shards.files for c in pq.read_table(f, columns=[CROP_ID], filesystem=shards.filesystem)
            .column(CROP_ID).to_pylist()]


def first_in_hash_order(ids: list[str], count: int, seed: int, epoch: int) -> set[str]:
    """The ``count`` ids that come first when each is ranked by a hash of (seed, epoch, its own id). A crop's
    rank depends on nothing else, so neither the shards' order nor their file layout changes the draw, and
    a larger ``count`` keeps a smaller one's crops."""
    return set(sorted(ids, key=lambda c: crop_seed(seed, epoch, c))[:count])


def choose_budget(shards: ShardSet, labels: int | None, seed: int) -> set[str] | None:
    """The label budget: ``labels`` training crops in an order set by ``seed`` alone (so every init compared
    under one seed sees the same crops); fine-tuning passes ``FinetuneConfig.budget_seed``."""
    if labels is None:
        return None
    ids = split_crop_ids(shards)
    if labels > len(ids):
        raise ValueError(f"labels={labels} but the training split has only {len(ids)} crops")
    return first_in_hash_order(ids, labels, seed, BUDGET_EPOCH)


def choose_val_subset(shards: ShardSet, cfg: FinetuneConfig) -> set[str] | None:
    """The ids of the ``val_limit`` val crops a run is scored on, drawn by ``val_seed`` and never by ``seed``:
    every trial of a search, whatever its seed, is scored on the same crops. None: the whole split (no limit,
    or a limit at least the split's size)."""
    if cfg.val_limit is None:
        return None
    ids = split_crop_ids(shards)
    if cfg.val_limit >= len(ids):
        return None
    return first_in_hash_order(ids, cfg.val_limit, cfg.val_seed, VAL_SUBSET_EPOCH)


def training_class_counts(shards: ShardSet, budget: set[str] | None, mirror: bool) -> list[np.ndarray]:
    """Per attribute, how many crops the run trains on hold each class (``[K_a]``, N/A not counted), read
    from the ``attr_*`` columns alone. Only the label budget's crops count; with mirroring on, the mean of
    the crops and their mirror images (each crop is flipped with probability 1/2, Orientation left/right and
    the *Left/*Right attributes trade places). Rows that later fail to decode are counted all the same."""
    attributes = shards.attributes
    parts = []
    for path in shards.files:
        table = pq.read_table(path, columns=[CROP_ID, *attributes.columns], filesystem=shards.filesystem)
        labels = np.stack([table.column(c).to_numpy(zero_copy_only=False) for c in attributes.columns], 1)
        if budget is not None:
            labels = labels[[c in budget for c in table.column(CROP_ID).to_pylist()]]
        parts.append(labels.astype(np.int64))
    labels = np.concatenate(parts) if parts else np.zeros((0, len(attributes)), dtype=np.int64)
    views = [labels, attributes.mirror(labels)] if mirror else [labels]
    return [np.mean([np.bincount(v[:, a], minlength=attribute.num_classes + 1)[1:] for v in views], axis=0)
            for a, attribute in enumerate(attributes)]


def balanced_class_weights(counts: list[np.ndarray]) -> list[list[float]]:
    """``loss: balanced``'s weights from :func:`training_class_counts`: inverse class frequency,
    w_c = n / (k * n_c) with n the attribute's labeled count and k its classes present, so that a labeled
    training example weighs 1 on average (sum_c n_c * w_c = n). A class without a training example weighs 0
    (it never is a target in training); an attribute without a labeled example has all weights 0."""
    weights = []
    for n_c in counts:
        n_c = np.asarray(n_c, dtype=np.float64)
        present = n_c > 0
        w = np.zeros_like(n_c)
        w[present] = n_c.sum() / (present.sum() * n_c[present])
        weights.append([float(x) for x in w])
    return weights


def read_labeled(shards: ShardSet, width: int, height: int, split: str = "", crop_fit: str = "aspect",
                 include_ids: set[str] | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """The crops of a (val or test) split, decoded, in file order, with their labels [N, A]; bad rows counted.
    ``include_ids``: only these crops (the rest are never decoded); None: all. A split with no usable crop is
    refused, naming its files: its metrics would be undefined."""
    pixels, labels, skipped = [], [], {}
    columns = shards.attributes.columns
    id_column = [CROP_ID] if include_ids is not None else []
    for path in shards.files:
        for batch in pq.ParquetFile(path, filesystem=shards.filesystem).iter_batches(
                batch_size=256, columns=[IMAGE, *id_column, *columns]):
            if include_ids is not None:
                batch = batch.filter(pa.array([c in include_ids for c in batch.column(CROP_ID).to_pylist()]))
            decoded, reasons = decode_crops(batch.column(IMAGE).to_pylist(), width, height, crop_fit)
            good = [i for i, r in enumerate(reasons) if not r]
            for r in reasons:
                if r:
                    skipped[r] = skipped.get(r, 0) + 1
            pixels.append(decoded[good])
            labels.append(np.stack([batch.column(c).to_numpy(zero_copy_only=False) for c in columns], 1)[good])
    if not sum(len(p) for p in pixels):
        bad = f" (all {sum(skipped.values())} skipped: {skipped})" if skipped else ""
        rows = shards.num_rows if include_ids is None else f"{len(include_ids)} chosen of {shards.num_rows}"
        raise DatasetTooSmallError(f"the {split or 'evaluation'} split has no usable crop{bad}: "
                                   f"{rows} row(s) in {list(shards.files)}")
    return np.concatenate(pixels), np.concatenate(labels).astype(np.int64), skipped


def init_fingerprint(net) -> str:
    """Hash of the trunk's initial weights: a re-made pretraining at the same path is another init."""
    digest = hashlib.sha256()
    for key, tensor in net.trunk.state_dict().items():
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def initial_net(cfg: FinetuneConfig, attributes):
    """The run's initial attribute net, drawn with ``cfg.seed``, and what its init transferred (None: random):
    the trunk's own He init, then the init's tensors copied over it (with ``transfer_blocks``, over its first
    blocks only)."""
    import torch

    from patchray.train.finetune_loop import build_attribute_net

    torch.manual_seed(cfg.seed)
    return build_attribute_net(cfg, attributes)


@dataclass
class PreparedFinetune(PreparedRun):
    """A fine-tuning run before anything is written (``PreparedRun``; ``shards`` per split), with its initial
    net, built once in the driver, and what its init transferred."""
    net: object = None
    transfer_text: str = ""


def prepare_finetune(cfg: FinetuneConfig, log=print) -> PreparedFinetune:
    from patchray.train.finetune_loop import resolve_normalization

    out = run_dir(cfg)
    splits = resolve_splits(cfg, log)
    shards = {split: open_shards(specs, require_attributes=True) for split, specs in splits.items()}
    attributes = shards["train"].attributes
    for split in [split for split in shards if split != "train"]:
        if shards[split].attributes != attributes:
            raise ShardSchemaError(shards[split].files[0], None,
                                   f"attributes differ from the training split's ({attributes.names})")
    init = parse_init(cfg.init)
    if init.kind == "patchtask":  # absolute, so that the recorded config works from anywhere
        init = f"patchtask:{Path(os.path.expanduser(init.path)).resolve()}"
    # The splits read are recorded as the files found; an unread test split's setting is kept as given.
    resolved = configlib.build(FinetuneConfig, configlib.to_dict(cfg) | {"init": str(init)} | {
        f"{split}_data": list(split_shards.files) for split, split_shards in shards.items()})

    # Build once here: a bad init (missing checkpoint, no ImageNet weights) stops before any cluster work.
    net, report = initial_net(resolved, attributes)
    # The input normalisation follows the init's pretraining; settled here, before config.yaml, the identity
    # and the workers see the config.
    resolve_normalization(resolved)
    transfer_text = report.summary() if report else "random init (He): nothing transferred"

    init_ray()
    plan = plan_for_cluster(cfg.resources)
    fingerprints = {split: shards[split].fingerprint for split in shards} | {"init": init_fingerprint(net)}
    identity = run_identity(configlib.to_dict(resolved), fingerprints, plan.num_workers)
    return PreparedFinetune(resolved, out, shards, plan, train_location(out, cfg.storage, RAY_RUN_NAME), identity,
                            net=net, transfer_text=transfer_text)


def run_finetune(cfg: FinetuneConfig, log=print, callbacks=(), prepared: PreparedFinetune | None = None) -> dict:
    import ray

    from patchray.pipeline import crop_dataset
    from patchray.train.finetune_loop import finetune_loop

    t0 = time.time()
    run = prepared or prepare_finetune(cfg, log)
    cfg, out, shards, plan = run.cfg, run.out, run.shards, run.plan
    attributes = shards["train"].attributes
    resumes_after = check_resumable(run.location, run.identity)  # another run's checkpoint: refused, nothing written
    out.mkdir(parents=True, exist_ok=True)
    configlib.dump_yaml(cfg, out / "config.yaml")
    (out / "transfer.txt").write_text(f"init: {cfg.init}\n{run.transfer_text}\n")
    log(f"[finetune] init {cfg.init}: {run.transfer_text.splitlines()[0]}")
    if resumes_after is not None:
        log(f"[finetune] resuming after epoch {resumes_after + 1} from {location_path(run.location)}")

    budget = choose_budget(shards["train"], cfg.labels, cfg.budget_seed)
    train_rows = len(budget) if budget is not None else shards["train"].num_rows
    if train_rows < plan.num_workers:
        raise DatasetTooSmallError(f"the training split has {train_rows} crop(s), fewer than the "
                                   f"{plan.num_workers} training workers: add data or lower resources.num_workers")
    size = cfg.input
    if cfg.cache_decoded:  # refused before any crop is decoded when the cache could not fit
        check_cache(train_rows, size.crop_width, size.crop_height, cfg.resources.object_store_share)
    val = read_labeled(shards["val"], size.crop_width, size.crop_height, "val", size.crop_fit,
                       include_ids=choose_val_subset(shards["val"], cfg))
    test = None
    if cfg.evaluate_test:
        test = read_labeled(shards["test"], size.crop_width, size.crop_height, "test", size.crop_fit)
    tested = f"{len(test[0])} test" if test is not None else "test not evaluated (evaluate_test: false)"
    log(f"[finetune] {train_rows} training crops, {len(val[0])} val, {tested}; output -> {out}")
    log(f"[finetune] {plan.describe()}")
    class_weights = None
    if cfg.loss == "balanced":
        class_weights = balanced_class_weights(training_class_counts(shards["train"], budget, cfg.mirror))
        log("[finetune] loss balanced, class weights: " + "; ".join(
            f"{a.name} " + "/".join(f"{w:.2f}" for w in ws) for a, ws in zip(attributes, class_weights)))
    dataset = crop_dataset(shards["train"], size.crop_width, size.crop_height, include_ids=budget,
                           label_columns=tuple(attributes.columns), seed=cfg.seed,
                           data_resources=cfg.resources.data_resources, fit=size.crop_fit)
    if cfg.cache_decoded:
        dataset = decode_into_cache(dataset, train_rows, size.crop_width, size.crop_height, cfg.seed,
                                    job="finetune", log=log)
    tracker = tracking.start(cfg.tracking, cfg.tracking_uri, out, "finetune", cfg.name, configlib.to_dict(cfg), log)
    with tracking.failed_if_raised(tracker, [out / "config.yaml"]):
        state, history = fit(finetune_loop, {"config": configlib.to_dict(cfg), "attributes": attributes.to_list(),
                                             "identity": run.identity, "stream_rows": train_rows,
                                             "class_weights": class_weights,
                                             "initial_ref": ray.put(run.net.state_dict()),
                                             "val_ref": ray.put(val[:2]),
                                             "test_ref": ray.put(test[:2]) if test is not None else None},
                             plan, location=run.location, max_failures=cfg.max_failures,
                             datasets={"train": dataset}, datasets_to_split=unsplit_when_alone(plan),
                             callbacks=callbacks, tracking=tracker)
    eval_skipped = {"val": val[2]} | ({"test": test[2]} if test is not None else {})
    summary = write_outputs(out, cfg, state, history, train_rows, eval_skipped,
                            plan.describe(), time.time() - t0, run.identity, class_weights)
    tracking.finish(tracker, {f"{split}_{k}": v for split in ("val", "test") for k, v in (summary[split] or {}).items()}
                    | {"wall_s": summary["wall_s"]}, summary["epochs"],
                    [out / "config.yaml", out / "summary.json", *summary["tables"], *summary["plots"]])
    log(format_summary(summary))
    return summary


def summary_scores(metrics: dict) -> dict:
    """The headline scores of one split's metrics (or their JSON form): protocol balanced's mA, mAP, mBER and
    orientation accuracy, and protocol parse27k's (the paper's) mAP and mBER as ``parse27k_mAP`` /
    ``parse27k_mBER``. None where undefined (no binary attribute, no Orientation)."""
    paper = metrics.get("parse27k") or {}
    return ({k: metrics.get(k) for k in ("mA", "mAP", "mBER", "orientation_accuracy")}
            | {f"parse27k_{k}": paper.get(k) for k in ("mAP", "mBER")})


TEST_OUTPUTS = ("test_metrics.md", "test_metrics.json")


def write_test_tables(out: Path, cfg: FinetuneConfig, test: dict | None) -> list[str]:
    """``test_metrics.json`` and ``.md`` for the test split's metrics; returns the table's path, or nothing
    when the test split was not evaluated."""
    if test is None:
        # A folder that held another run (its checkpoint gone) may keep its test tables: they are not this run's.
        for name in TEST_OUTPUTS:
            (out / name).unlink(missing_ok=True)
        return []
    (out / "test_metrics.json").write_text(json.dumps(test, indent=2) + "\n")
    (out / "test_metrics.md").write_text(
        f"# Test metrics: {cfg.name} (init {cfg.init})\n\n"
        "## Protocol parse27k (the authors' evaluation; comparable with the paper's tables)\n\n"
        "11-point interpolated AP of the positive class (yes / male / standing), N/A dropped; BER with N/A "
        "counted as a true class the net never predicts, averaged over every class present.\n\n"
        + parse27k_table_markdown(test) + "\n"
        "## Protocol balanced (patchray's)\n\n"
        "N/A excluded; balanced accuracy and BER over the classes present; non-interpolated AP of the second "
        "class (yes / female / walking).\n\n"
        + metrics_table_markdown(test) + "\n")
    return [str(out / "test_metrics.md")]


def write_outputs(out: Path, cfg: FinetuneConfig, state: dict, history: list[dict], train_rows: int,
                  eval_skipped: dict, resources: str, wall_s: float, identity: dict | None = None,
                  class_weights: list[list[float]] | None = None) -> dict:
    """Checkpoint, metrics.jsonl, val (and when evaluated test) metrics, curves and summary.json. The test
    split's place in the history (``test`` None: not evaluated) decides whether test numbers are written."""
    from patchray.report.plots import plot_finetune_curves

    model_path = atomic_torch_save(state["model"], out / "checkpoints" / "model.pt")
    with open(out / "metrics.jsonl", "w") as f:
        for h in history:
            f.write(json.dumps({k: v for k, v in h.items() if k not in ("val", "test")}) + "\n")
    last = history[-1]
    test = last["test"]
    (out / "val_metrics.json").write_text(json.dumps(last["val"], indent=2) + "\n")
    tables = write_test_tables(out, cfg, test)
    curves = plot_finetune_curves(history, out / "curves.png", f"{cfg.name}: init {cfg.init}")
    summary = {
        "name": cfg.name, "output": str(out), "init": cfg.init, "model": cfg.model, "seed": cfg.seed,
        "labels": train_rows, "epochs": last["epoch"] + 1,
        "loss": cfg.loss, "class_weights": class_weights,
        "val": summary_scores(last["val"]), "test": summary_scores(test) if test is not None else None,
        "crops_per_s": last["crops_per_s"] * last["workers"],
        "skipped_rows": {"train": last.get("skipped", {}), **eval_skipped},
        "rows_per_epoch": {key: last[f"rows_{key}"] for key in ROW_KEYS},
        "resources": resources, "checkpoint": str(model_path), "identity": identity,
        "tables": tables, "plots": [str(curves)], "wall_s": round(wall_s, 1),
    }
    (out / "summary.json").write_text(json.dumps(to_jsonable(summary), indent=2) + "\n")
    return summary


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}"


def format_summary(s: dict) -> str:
    """The printed summary: the test scores, or without a test evaluation the last validation's (so that a
    search's trial still says how it did, and no test number is shown that was not measured)."""
    tested = s.get("test") is not None
    split = "test" if tested else "val"
    t = s[split]

    def scores(names) -> str:  # only what the attribute set defines (no mAP without a binary attribute, ...)
        return "  ".join(f"{label} {_pct(t.get(key))}" for key, label in names if t.get(key) is not None) or "n/a"

    untested = [] if tested else ["  test not evaluated (evaluate_test: false)"]
    outputs = ["config.yaml", "metrics.jsonl", "summary.json", *(["test_metrics.md/.json"] if tested else []),
               "val_metrics.json", "transfer.txt", "curves.png"]
    return "\n".join([
        f"[finetune] done in {s['wall_s']:.0f} s: {s['epochs']} epoch(s) on {s['labels']} labeled crops, "
        f"init {s['init']}" + (f", loss {s['loss']}" if s.get("loss") else ""),
        f"  {split}, protocol parse27k (the paper's): "
        + scores((("parse27k_mAP", "mAP"), ("parse27k_mBER", "mBER"))),
        f"  {split}, protocol balanced: " + scores((("mA", "mA"), ("mAP", "mAP"), ("mBER", "mBER"),
                                                   ("orientation_accuracy", "orientation accuracy"))),
        *untested,
        "  " + format_rows(s["rows_per_epoch"]),
        f"  outputs in {s['output']}: {', '.join(outputs)}",
        f"  checkpoint (AttributeNet state_dict): {s['checkpoint']}",
    ])
