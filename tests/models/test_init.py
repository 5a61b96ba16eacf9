import pytest
import torch

from patchray.models import PretextNet, build_trunk
from patchray.models.init import InitError, imagenet_cache_path, initialise_trunk, parse_init


def test_parse_init():
    assert parse_init("random").kind == "random"
    spec = parse_init("patchtask:runs/pretrain")
    assert (spec.kind, spec.path) == ("patchtask", "runs/pretrain")
    for bad in ("patchtask:", "imagenet1k", "scratch"):
        with pytest.raises(InitError, match="expected 'random'"):
            parse_init(bad)


def test_patchtask_init_copies_trunk_from_a_run_folder(tmp_path):
    source = PretextNet(build_trunk("tiny"), 18)
    (tmp_path / "checkpoints").mkdir()
    torch.save(source.state_dict(), tmp_path / "checkpoints" / "pretext.pt")
    target = build_trunk("tiny")
    report = initialise_trunk(target, f"patchtask:{tmp_path}", "tiny")
    assert report.copied and all(torch.equal(v, source.trunk.state_dict()[k]) for k, v in target.state_dict().items())
    assert any(reason == "pretext head" for _, reason in report.skipped)
    assert initialise_trunk(build_trunk("tiny"), "random", "tiny") is None


def test_bad_checkpoints_are_clear_errors(tmp_path):
    with pytest.raises(InitError, match="no checkpoint at"):
        initialise_trunk(build_trunk("tiny"), f"patchtask:{tmp_path}/nope.pt", "tiny")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InitError, match="not a loadable state_dict"):
        initialise_trunk(build_trunk("tiny"), f"patchtask:{tmp_path}/junk.pt", "tiny")
    # a vgg16 checkpoint has nothing that fits the tiny trunk
    torch.save(build_trunk("vgg16").state_dict(), tmp_path / "vgg.pt")
    with pytest.raises(InitError, match="no tensor of the checkpoint fits"):
        initialise_trunk(build_trunk("tiny"), f"patchtask:{tmp_path}/vgg.pt", "tiny")


def test_imagenet_only_from_the_local_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(InitError, match="not in the local torch cache"):
        initialise_trunk(build_trunk("resnet18"), "imagenet", "resnet18")
    with pytest.raises(InitError, match="no ImageNet weights exist for trunk 'tiny'"):
        initialise_trunk(build_trunk("tiny"), "imagenet", "tiny")
    # a file in the cache is used: here a torchvision resnet18 state_dict standing in for the download
    import torchvision

    path = imagenet_cache_path("resnet18")
    path.parent.mkdir(parents=True)
    reference = torchvision.models.resnet18(weights=None)
    torch.save(reference.state_dict(), path)
    trunk = build_trunk("resnet18")
    report = initialise_trunk(trunk, "imagenet", "resnet18")
    assert torch.equal(trunk.state_dict()["layer1.0.conv1.weight"], reference.state_dict()["layer1.0.conv1.weight"])
    skipped = dict(report.skipped)
    assert skipped["conv1.weight"].startswith("shape mismatch")  # the 3x3 stem for 32 px patches stays fresh
