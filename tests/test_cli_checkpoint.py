"""``saywhy checkpoint import`` and ``saywhy layers`` on torchvision networks with random weights."""
from __future__ import annotations

import pytest

from saywhy.cli import main


@pytest.fixture(scope="module")
def resnet_pth(tmp_path_factory):
    import torch
    import torchvision

    base = tmp_path_factory.mktemp("import")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=3)
    torch.save(model.state_dict(), base / "resnet.pth")
    (base / "classes.txt").write_text("001.Red_Bird\n002.Blue_Bird\n003.Green_Bird\n")
    return base, model


def test_import_a_pth_and_list_its_layers(resnet_pth, capsys):
    import torch

    from saywhy.model.checkpoint import load_checkpoint

    base, model = resnet_pth
    assert main(["checkpoint", "import", "--arch", "torchvision:resnet18", "--weights", str(base / "resnet.pth"),
                 "--classes", str(base / "classes.txt"), "--image-size", "64", "--crop", "bbox",
                 "--out", str(base / "ckpt")]) == 0
    loaded, meta = load_checkpoint(base / "ckpt")
    assert meta["classes"] == ["001.Red_Bird", "002.Blue_Bird", "003.Green_Bird"]
    assert meta["preprocess"]["image_size"] == 64 and meta["preprocess"]["crop"] == "bbox"
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), model.eval()(x))
    capsys.readouterr()
    assert main(["layers", str(base / "ckpt")]) == 0
    out = capsys.readouterr().out
    assert "exact" in out and "saywhy explains: feature layer 'layer4' (512 filters) -> head 'fc' (3 classes)" in out


def test_import_refuses_a_class_list_of_the_wrong_length(resnet_pth, capsys):
    base, _ = resnet_pth
    (base / "two.txt").write_text("a\nb\n")
    assert main(["checkpoint", "import", "--arch", "torchvision:resnet18", "--weights", str(base / "resnet.pth"),
                 "--classes", str(base / "two.txt"), "--out", str(base / "bad")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("saywhy: error:")
    assert not (base / "bad").exists()


def test_bad_arch_kwargs_are_one_line(resnet_pth, capsys):
    base, _ = resnet_pth
    assert main(["checkpoint", "import", "--arch", "torchvision:resnet18", "--weights", str(base / "resnet.pth"),
                 "--classes", str(base / "classes.txt"), "--arch-kwargs", "{width", "--out", str(base / "x")]) == 1
    assert "--arch-kwargs is not JSON" in capsys.readouterr().err
