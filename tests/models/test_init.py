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
    assert any(reason == "pretext head" for _, reason in report.unused) and report.skipped == []
    assert initialise_trunk(build_trunk("tiny"), "random", "tiny") is None


def test_bad_checkpoints_are_clear_errors(tmp_path):
    with pytest.raises(InitError, match="no checkpoint at"):
        initialise_trunk(build_trunk("tiny"), f"patchtask:{tmp_path}/nope.pt", "tiny")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InitError, match="not a loadable state_dict"):
        initialise_trunk(build_trunk("tiny"), f"patchtask:{tmp_path}/junk.pt", "tiny")
    # a vgg16 checkpoint has nothing that fits the tiny trunk
    torch.save(build_trunk("vgg16").state_dict(), tmp_path / "vgg.pt")
    with pytest.raises(InitError, match="the checkpoint holds another trunk, fine-tuning builds trunk 'tiny'"):
        initialise_trunk(build_trunk("tiny"), f"patchtask:{tmp_path}/vgg.pt", "tiny")


def test_a_checkpoint_of_another_trunk_is_refused_naming_both(tmp_path):
    """vgg16 -> vgg16_bn shares some names and shapes (conv biases vs BatchNorm biases): copying those would
    put weights into the wrong layers and succeed quietly."""
    from patchray.models import transfer_trunk

    source = PretextNet(build_trunk("vgg16"), 18)
    partial = transfer_trunk(source.state_dict(), build_trunk("vgg16_bn"))
    assert partial.copied  # what the old, partial transfer would have copied
    run = tmp_path / "pretrain-vgg16"
    (run / "checkpoints").mkdir(parents=True)
    torch.save(source.state_dict(), run / "checkpoints" / "pretext.pt")
    (run / "config.yaml").write_text("model: vgg16\n")
    for spec in (f"patchtask:{run}", f"patchtask:{run}/checkpoints/pretext.pt"):
        with pytest.raises(InitError, match=r"holds trunk 'vgg16', fine-tuning builds trunk 'vgg16_bn'.*"
                                            r"Fine-tune with model=vgg16, or pretrain with model=vgg16_bn"):
            initialise_trunk(build_trunk("vgg16_bn"), spec, "vgg16_bn")
    # trunks that differ only in dropout (no weights) are one trunk for the transfer
    (run / "config.yaml").write_text("model: tiny_d25\n")
    source = PretextNet(build_trunk("tiny_d25"), 18)
    torch.save(source.state_dict(), run / "checkpoints" / "pretext.pt")
    target = build_trunk("tiny")
    assert initialise_trunk(target, f"patchtask:{run}", "tiny").exact
    assert all(torch.equal(v, source.trunk.state_dict()[k]) for k, v in target.state_dict().items())


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
