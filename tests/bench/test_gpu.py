"""The accelerator benchmark's measurements on the CPU device (what CI has): every part runs, and its numbers
are consistent with each other."""
import pytest

from patchray import config as configlib
from patchray.bench.gpu import GpuBenchConfig, _best_per_model_and_batch, run_gpu_bench


def test_config_refuses_what_would_not_run():
    with pytest.raises(ValueError, match="unknown variants"):
        GpuBenchConfig(variants=["fp16"])
    with pytest.raises(ValueError, match="multiples"):
        GpuBenchConfig(patches_per_step=[100])
    with pytest.raises(ValueError, match="backend of the \\+compile variant"):
        GpuBenchConfig(compile="")
    with pytest.raises(configlib.ConfigError, match="device: 'tpu' is not one of"):
        configlib.load(GpuBenchConfig, None, ["device=tpu"])


def test_best_setting_per_net_and_batch():
    rows = [{"model": "a", "patches_per_step": 8, "variant": v, "patches_per_s": r} for v, r in (("x", 5), ("y", 9))]
    rows.append({"model": "b", "patches_per_step": 8, "variant": "x", "patches_per_s": 1})
    assert [(r["model"], r["variant"]) for r in _best_per_model_and_batch(rows)] == [("a", "y"), ("b", "x")]


def test_runs_every_part_on_the_cpu_device(tmp_path):
    from patchray.shards.generate import generate_synthetic

    generate_synthetic(tmp_path / "syn", num_crops=300, labeled=0, seed=1, workers=1, progress=False)
    cfg = configlib.build(GpuBenchConfig, {
        "out": str(tmp_path), "data": [str(tmp_path / "syn" / "unlabeled")], "device": "cpu", "crops": 256,
        "decode_batch": 64, "models": ["tiny"], "patches_per_step": [64], "variants": ["fp32", "bf16"], "steps": 2,
        "warmup_steps": 0})
    result = run_gpu_bench(cfg, log=lambda *_: None)
    decode = result["decode"]
    # rates: no timing bar
    assert decode["cpu_decode_crops_per_s_per_core"] > 0 and decode["device_decode_crops_per_s"] > 0
    assert decode["cpu_cores_to_match_device_decode"] == pytest.approx(
        decode["device_decode_crops_per_s"] / decode["cpu_decode_crops_per_s_per_core"], abs=0.06)
    # bf16 autocast is a GPU setting: on the CPU device only fp32 is measured
    assert [(t["model"], t["patches_per_step"], t["variant"]) for t in result["train"]] == [("tiny", 64, "fp32")]
    [e2e] = result["end_to_end"]
    assert e2e["variant"] == "fp32" and 0 < e2e["serial_data_frac"] < 1 and 0 <= e2e["data_wait_frac"] < 1
    assert e2e["patches_per_s"] > 0 and e2e["serial_patches_per_s"] > 0
    out = tmp_path / "bench_gpu"
    for name in ("gpu.json", "gpu.md", "gpu.png", "config.yaml"):
        assert (out / name).stat().st_size > 0, name
    assert "| tiny | 64 | fp32 |" in (out / "gpu.md").read_text()
