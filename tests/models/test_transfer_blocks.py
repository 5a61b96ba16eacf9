"""FinetuneConfig.transfer_blocks: copy only a trunk's first k blocks, the rest left at their fresh init."""
import pytest
import torch

from patchray import config as configlib
from patchray.models import PretextNet, build_trunk, transfer_trunk
from patchray.models.init import InitError, initialise_trunk, trunk_block_count
from patchray.models.transfer import block_of_keys
from patchray.train.config import FinetuneConfig

MODEL = "tiny_d25"
SEED = 7


@pytest.fixture
def pretrained_run(tmp_path):
    """A pretraining run folder whose trunk differs from every fresh init, and that trunk's tensors."""
    torch.manual_seed(123)
    source = PretextNet(build_trunk(MODEL), 18)
    with torch.no_grad():
        for tensor in source.trunk.state_dict().values():
            tensor.add_(1.0)  # off any He draw, so that "equals the source" cannot hold by chance
    (tmp_path / "checkpoints").mkdir()
    torch.save(source.state_dict(), tmp_path / "checkpoints" / "pretext.pt")
    (tmp_path / "config.yaml").write_text(f"model: {MODEL}\n")
    return tmp_path, source.trunk.state_dict()


def _seeded_trunk():
    torch.manual_seed(SEED)
    return build_trunk(MODEL)


def _tensors_by_block(trunk) -> list[dict[str, torch.Tensor]]:
    state = trunk.state_dict()
    blocks = [{} for _ in trunk.blocks]
    for key, index in block_of_keys(trunk).items():
        blocks[index][key] = state[key]
    return blocks


def test_every_tensor_of_the_tiny_trunk_belongs_to_one_of_its_four_blocks():
    trunk = build_trunk(MODEL)
    owners = block_of_keys(trunk)
    assert trunk_block_count(MODEL) == 4 and set(owners) == set(trunk.state_dict())
    assert [sorted(k for k, i in owners.items() if i == 1)] == [
        ["stages.1.0.bias", "stages.1.0.weight", "stages.1.2.bias", "stages.1.2.weight"]]
    # blocks are views under other names: resnet18's stem holds conv1 and bn1 (its buffers too)
    resnet = block_of_keys(build_trunk("resnet18"))
    assert resnet["conv1.weight"] == 0 and resnet["bn1.running_mean"] == 0 and resnet["layer4.1.bn2.weight"] == 4


@pytest.mark.parametrize("k", [0, 1, 2, 3, 4])
def test_the_first_k_blocks_come_from_the_source_and_the_others_are_the_seeded_fresh_init(pretrained_run, k):
    run, source = pretrained_run
    fresh = _seeded_trunk()
    target = _seeded_trunk()
    report = initialise_trunk(target, f"patchtask:{run}", MODEL, blocks=k)
    for index, tensors in enumerate(_tensors_by_block(target)):
        expected = source if index < k else fresh.state_dict()
        for key, value in tensors.items():
            assert torch.equal(value, expected[key]), (k, key)
            assert not torch.equal(value, (fresh.state_dict() if index < k else source)[key]), (k, key)
    assert len(report.copied) == 4 * k and len(report.fresh) == 4 * (4 - k) and report.skipped == []
    assert report.exact and (report.blocks, report.block_count) == (k, 4)
    first = report.summary().splitlines()[0]
    assert first.startswith(f"copied {4 * k} of 16 trunk tensors (transfer_blocks={k}")
    if k < 4:
        assert f"{4 * (4 - k)} tensors of block" in first and "left at their fresh init" in first
    assert ("  block 1 copied: " if k else "  block 1 left fresh: ") + "stages.0.0.weight" in report.summary()


def test_k_zero_is_the_random_init_with_the_same_seed(pretrained_run):
    run, _ = pretrained_run
    target = _seeded_trunk()
    report = initialise_trunk(target, f"patchtask:{run}", MODEL, blocks=0)
    assert report.copied == []
    assert "(transfer_blocks=0: none of the 4 blocks; 16 tensors of blocks 1-4 left" in report.summary()
    assert all(torch.equal(v, _seeded_trunk().state_dict()[k]) for k, v in target.state_dict().items())


def test_none_copies_the_whole_trunk_as_before(pretrained_run):
    run, source = pretrained_run
    whole, everything = _seeded_trunk(), _seeded_trunk()
    report = initialise_trunk(whole, f"patchtask:{run}", MODEL)
    initialise_trunk(everything, f"patchtask:{run}", MODEL, blocks=4)
    assert report.fresh == [] and report.blocks is None and len(report.copied) == 16
    assert report.summary().splitlines()[0].startswith("copied 16 of 16 trunk tensors, skipped 0")
    for key, value in whole.state_dict().items():
        assert torch.equal(value, source[key]) and torch.equal(value, everything.state_dict()[key])


def test_too_many_blocks_are_refused_naming_the_trunks_block_count(pretrained_run):
    run, _ = pretrained_run
    with pytest.raises(InitError, match="transfer_blocks=5, but trunk 'tiny_d25' has 4 blocks: choose 0..4"):
        initialise_trunk(_seeded_trunk(), f"patchtask:{run}", MODEL, blocks=5)
    with pytest.raises(ValueError, match="the trunk has 4 blocks"):
        transfer_trunk(_seeded_trunk().state_dict(), _seeded_trunk(), blocks=-1)
    with pytest.raises(configlib.ConfigError, match="transfer_blocks=5, but trunk 'tiny_d25' has 4 blocks"):
        configlib.build(FinetuneConfig, {"init": f"patchtask:{run}", "transfer_blocks": 5})
    with pytest.raises(configlib.ConfigError, match="transfer_blocks=6, but trunk 'vgg16' has 5 blocks"):
        configlib.build(FinetuneConfig, {"init": "imagenet", "model": "vgg16", "transfer_blocks": 6})
    with pytest.raises(configlib.ConfigError, match="transfer_blocks=2 with init random: there is nothing to copy"):
        configlib.build(FinetuneConfig, {"transfer_blocks": 2})
    assert configlib.build(FinetuneConfig, {"init": f"patchtask:{run}", "transfer_blocks": 4}).transfer_blocks == 4


def test_a_partial_transfer_still_refuses_a_checkpoint_of_another_trunk(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    torch.save(PretextNet(build_trunk("tiny", bn=True), 18).state_dict(), tmp_path / "checkpoints" / "pretext.pt")
    with pytest.raises(InitError, match="would not transfer by name and shape"):
        initialise_trunk(_seeded_trunk(), f"patchtask:{tmp_path}", MODEL, blocks=1)


def test_the_fine_tuning_net_is_todays_without_transfer_blocks_and_partial_with_it(pretrained_run):
    """prepare_finetune's initial net: the same draws as build_attribute_net's own initialisation."""
    from patchray.shards import AttributeSet
    from patchray.shards.attributes import PARSE27K
    from patchray.train.finetune import initial_net
    from patchray.train.finetune_loop import build_attribute_net

    run, source = pretrained_run
    attributes = AttributeSet((PARSE27K["Orientation"], PARSE27K["Gender"]))
    cfg = configlib.build(FinetuneConfig, {"init": f"patchtask:{run}", "seed": SEED})
    torch.manual_seed(SEED)
    today, _ = build_attribute_net(cfg, attributes)
    net, report = initial_net(cfg, attributes)
    assert report.exact and report.fresh == []
    assert all(torch.equal(v, today.state_dict()[k]) for k, v in net.state_dict().items())

    partial = configlib.build(FinetuneConfig, {"init": f"patchtask:{run}", "seed": SEED, "transfer_blocks": 2,
                                               "freeze_blocks": 2})
    net, report = initial_net(partial, attributes)
    fresh = _seeded_trunk().state_dict()
    assert len(report.fresh) == 8
    for key, value in net.trunk.state_dict().items():
        assert torch.equal(value, source[key] if key.startswith(("stages.0.", "stages.1.")) else fresh[key]), key
    # the head is drawn as without transfer_blocks, and the copied blocks are the frozen ones
    assert all(torch.equal(v, today.state_dict()[k]) for k, v in net.state_dict().items() if not k.startswith("trunk"))
    assert [p.requires_grad for p in net.trunk.parameters()] == [False] * 8 + [True] * 8
