import pytest
import torch

from patchray import config as configlib
from patchray.accel import as_input, channels_last_for, maybe_compile, to_memory_format
from patchray.models import PretextNet, build_trunk
from patchray.train.config import PretrainConfig


def _net(pairwise=False):
    torch.manual_seed(0)
    return PretextNet(build_trunk("tiny"), 18, patch_size=32, pairwise=pairwise).eval()


def test_channels_last_defaults_to_on_for_every_device_and_obeys_the_setting():
    assert channels_last_for(None, torch.device("cuda")) and channels_last_for(None, torch.device("cpu"))
    assert channels_last_for(True, torch.device("cpu")) and not channels_last_for(False, torch.device("cuda"))
    assert not channels_last_for(False, torch.device("cpu"))


@pytest.mark.parametrize("pairwise", [False, True])
def test_channels_last_changes_layout_not_results(pairwise):
    reference = _net(pairwise)
    x = torch.randn(4, 2, 3, 32, 32) if pairwise else torch.randn(4, 3, 32, 32)
    expected = reference(x)
    converted = to_memory_format(_net(pairwise), True)
    conv = next(m for m in converted.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    batch = as_input(x, True)
    assert batch.is_contiguous(memory_format=torch.channels_last) if x.ndim == 4 else batch is x
    torch.testing.assert_close(converted(batch), expected, rtol=1e-4, atol=1e-5)
    assert to_memory_format(reference, False) is reference and as_input(x, False) is x


def test_compile_gives_the_same_outputs_and_keeps_state_dict_keys():
    net = _net()
    x = torch.randn(8, 3, 32, 32)
    compiled = maybe_compile(net, "aot_eager")
    torch.testing.assert_close(compiled(x), net(x), rtol=1e-4, atol=1e-5)
    assert maybe_compile(net, "") is net
    assert maybe_compile(net, "reduce-overhead")._orig_mod is net   # compiled lazily: CUDA graphs on a GPU only
    assert set(net.state_dict()) == set(_net().state_dict())  # checkpoints save the uncompiled module


def test_unknown_compile_backend_is_refused_at_config_time():
    with pytest.raises(configlib.ConfigError, match="compile: 'fastest' is not one of"):
        configlib.load(PretrainConfig, None, ["compile=fastest"])
    with pytest.raises(ValueError, match="compile must be one of"):
        maybe_compile(_net(), "fastest")


def test_decode_on_names_a_place_and_autocast_is_bf16_on_gpus_only():
    from patchray.accel import autocast

    assert PretrainConfig(decode_on="trainer").decode_on == "trainer"
    with pytest.raises(configlib.ConfigError, match="decode_on: 'gpu' is not one of"):
        configlib.load(PretrainConfig, None, ["decode_on=gpu"])
    with autocast(torch.device("cpu"), True):
        assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.float32
    if torch.cuda.is_available():
        with autocast(torch.device("cuda"), True):
            assert torch.mm(torch.ones(2, 2, device="cuda"), torch.ones(2, 2, device="cuda")).dtype == torch.bfloat16
