"""The fine-tuning step and evaluation in channels-last (the default on every device) against the plain layout:
the same numbers, with the net and its input really in channels-last."""
import numpy as np
import torch

from patchray import config as configlib
from patchray.models import attribute_loss
from patchray.shards import PARSE27K
from patchray.train.config import FinetuneConfig
from patchray.train.epoch import TrainStep, accelerate
from patchray.train.finetune_loop import AttributeStep, build_attribute_net, predict

CPU = torch.device("cpu")


def _config(channels_last):
    return configlib.build(FinetuneConfig, {"channels_last": channels_last,
                                            "input": {"normalize": "patch", "crop_width": 48, "crop_height": 96}})


def _net(cfg):
    torch.manual_seed(0)
    net, _ = build_attribute_net(cfg, PARSE27K)   # seeded He init, as a random-init run
    return net


def _crops(n=6, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 96, 48, 3), dtype=np.uint8)


def test_evaluation_in_channels_last_predicts_what_the_plain_layout_does():
    plain, fast = _config(False), _config(None)
    crops = _crops()
    expected = predict(_net(plain), crops, plain, CPU)
    net, _ = accelerate(_net(fast), CPU, channels_last=True)
    conv = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    got = predict(net, crops, fast, CPU)
    assert len(got) == len(PARSE27K) and got[0].shape == (6, PARSE27K.attributes[0].num_classes)
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def _step(cfg, channels_last):
    net = _net(cfg)
    # Dropout draws its mask in memory order, so the same seed drops other activations in channels-last (a run is
    # still reproducible, but not the plain layout's run): off here, to compare the arithmetic.
    for module in net.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    model, _ = accelerate(net, CPU, channels_last=channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.002)
    step = AttributeStep(TrainStep(model, optimizer, attribute_loss, device=CPU, amp=False, lr=0.01,
                                   what="fine-tuning"), cfg, PARSE27K)
    seen = []
    model.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    labels = torch.as_tensor(np.random.default_rng(1).integers(1, 3, (6, len(PARSE27K))))  # 0 is N/A
    batch = {"images": torch.from_numpy(_crops()), "labels": labels}
    results = [step(batch) for _ in range(3)]   # the heads start at zero: the trunk moves from the second step on
    return results[-1], seen[0], net


def test_a_training_step_in_channels_last_takes_the_plain_layouts_step():
    plain, plain_input, plain_net = _step(_config(False), False)
    fast, fast_input, fast_net = _step(_config(None), True)
    assert fast_input.is_contiguous(memory_format=torch.channels_last)
    assert not plain_input.is_contiguous(memory_format=torch.channels_last)
    assert fast.count == plain.count == 6
    assert abs(fast.loss - plain.loss) < 1e-4
    assert not torch.equal(fast_net.state_dict()["trunk.stages.0.0.weight"], _net(_config(None)).state_dict()[
        "trunk.stages.0.0.weight"])   # the trunk took a step
    for (name, a), b in zip(fast_net.state_dict().items(), plain_net.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
