"""patchray's DDP settings (patchray.train.epoch: ddp_options, compress_gradients, sync_buffers) in a real
two-process gloo group on the CPU, against DDP's defaults."""
import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from patchray.train.epoch import compress_gradients, ddp_options, sync_buffers

HALF = {"fp16": torch.float16, "bf16": torch.bfloat16}


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 4))


def _train(rank: int, options: dict, compression: str) -> torch.nn.Module:
    net = _net()
    model = DistributedDataParallel(net, **options)
    compress_gradients(model, compression)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, fused=True)
    generator = torch.Generator().manual_seed(100 + rank)   # each rank its own batches
    for _ in range(4):
        x, y = torch.randn(6, 3, 10, 10, generator=generator), torch.randint(0, 4, (6,), generator=generator)
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return net


def _held_in(net: torch.nn.Module, dtype: torch.dtype) -> bool:
    """Whether every gradient the last all-reduce left in ``net`` is a value ``dtype`` holds."""
    return all(torch.equal(p.grad, p.grad.to(dtype).float()) for p in net.parameters())


def _gathered(tensor: torch.Tensor) -> list[torch.Tensor]:
    out = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(out, tensor.contiguous())
    return out


def _worker(rank: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        reference = _train(rank, {}, "none")   # DDP's defaults: buffers sent from rank 0 before every forward
        ours = _train(rank, ddp_options(), "none")
        for mine, theirs in zip(ours.parameters(), reference.parameters()):
            assert torch.allclose(mine, theirs, atol=1e-6)       # the same steps
            first, second = _gathered(mine.detach())
            assert torch.equal(first, second)                     # and the same weights on both ranks
        # rank 0's running statistics are the reference's: they evolve from its own batches either way
        running = ours[1].running_mean
        if rank == 0:
            assert torch.allclose(running, reference[1].running_mean, atol=1e-6)
        first, second = _gathered(running)
        assert not torch.allclose(first, second)          # not sent every step ...
        sync_buffers(ours)
        first, second = _gathered(ours[1].running_mean)
        assert torch.equal(first, second)                 # ... but once, from rank 0, before an evaluation
        assert int(ours[1].num_batches_tracked) == 4
        for compression in ("fp16", "bf16"):
            halved = _train(rank, ddp_options(), compression)
            for mine, theirs in zip(halved.parameters(), reference.parameters()):
                assert torch.allclose(mine, theirs, atol=2e-2)   # rounded, not another rule
                first, second = _gathered(mine.detach())
                assert torch.equal(first, second)
            # the all-reduce really ran in half precision: every reduced gradient is a value that format holds,
            # which float32 gradients of this net are not
            assert _held_in(halved, HALF[compression])
            assert not _held_in(ours, HALF[compression])
    finally:
        dist.destroy_process_group()


def test_our_ddp_settings_step_as_ddp_s_defaults_and_sync_buffers_once():
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    mp.spawn(_worker, args=(port,), nprocs=2, join=True)


def test_gradient_compression_is_refused_by_name_and_left_alone_without_ddp():
    import pytest

    net = _net()
    compress_gradients(net, "bf16")   # one worker: no DDP, nothing to compress
    with pytest.raises(ValueError, match="grad_compression must be one of"):
        compress_gradients(net, "int8")
    sync_buffers(net)   # no process group: nothing to do
    assert set(ddp_options()) >= {"gradient_as_bucket_view", "static_graph"}
