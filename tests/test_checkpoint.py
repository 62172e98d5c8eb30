"""Checkpoints from anywhere: metadata built in one place, networks imported, damage reported in one line."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from saywhy.data.images import Preprocess
from saywhy.errors import SaywhyError
from saywhy.model.checkpoint import (
    build_model,
    checkpoint_metadata,
    checkpoint_preprocess,
    import_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from saywhy.model.pretrained import IMAGENET_MEAN, IMAGENET_STD

torchvision = pytest.importorskip("torchvision")
torch.set_num_threads(1)

CLASSES = [f"{i:03d}.Bird_{i}" for i in range(1, 25)]
PREPROCESS = Preprocess(64, IMAGENET_MEAN, IMAGENET_STD, crop="bbox")


def _resnet() -> nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=24)
    for module in model.modules():  # non-trivial BatchNorm statistics, so a lost buffer would show
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    return model.eval()


def _x() -> torch.Tensor:
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(7))


def _single_line(error: pytest.ExceptionInfo) -> str:
    assert "\n" not in str(error.value)
    return str(error.value)


def _nothing_written(out: Path) -> None:
    assert not out.exists() and not list(out.parent.glob(f".{out.name}.partial-*"))


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_imported_state_dict_round_trips_to_identical_logits(tmp_path, suffix):
    source = _resnet()
    path = tmp_path / f"resnet18_cub{suffix}"
    if suffix == ".pth":
        torch.save(source.state_dict(), path)
    else:
        save_file({k: v.contiguous() for k, v in source.state_dict().items()}, path)
    out = import_checkpoint(tmp_path / "ckpt", arch="torchvision:resnet18", weights=path, classes=CLASSES,
                            preprocess=PREPROCESS, test_accuracy=0.5)
    model, meta = load_checkpoint(out)
    with torch.no_grad():
        assert torch.equal(model(_x()), source(_x()))
    assert meta["arch"] == "torchvision:resnet18" and meta["classes"] == CLASSES and meta["test_accuracy"] == 0.5
    assert checkpoint_preprocess(meta) == PREPROCESS  # size, normalization and crop travel with the weights
    assert meta["imported"]["feature_layer"] == "layer4" and meta["imported"]["head"] == "fc"


def test_training_script_checkpoints_are_unwrapped(tmp_path):
    source = _resnet()
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}},
               tmp_path / "train.pth")
    model, _ = load_checkpoint(import_checkpoint(tmp_path / "ckpt", arch="torchvision:resnet18",
                                                 weights=tmp_path / "train.pth", classes=CLASSES, preprocess=PREPROCESS))
    with torch.no_grad():
        assert torch.equal(model(_x()), source(_x()))


def test_wrong_class_count_is_refused_and_nothing_written(tmp_path):
    torch.save(_resnet().state_dict(), tmp_path / "w.pth")
    with pytest.raises(SaywhyError) as error:
        import_checkpoint(tmp_path / "ckpt", arch="torchvision:resnet18", weights=tmp_path / "w.pth",
                          classes=CLASSES[:10], preprocess=PREPROCESS)
    assert "the head fc has 24 outputs but torchvision:resnet18 with 10 classes has 10" in _single_line(error)
    _nothing_written(tmp_path / "ckpt")


def test_non_gap_head_is_refused_and_nothing_written(tmp_path):
    """MobileNetV3's head is an MLP after pooling: it loads, but saywhy cannot explain it."""
    torch.save(torchvision.models.mobilenet_v3_small(weights=None, num_classes=24).state_dict(), tmp_path / "w.pth")
    with pytest.raises(SaywhyError) as error:
        import_checkpoint(tmp_path / "ckpt", arch="torchvision:mobilenet_v3_small", weights=tmp_path / "w.pth",
                          classes=CLASSES, preprocess=PREPROCESS)
    assert "not a linear function of the average-pooled map" in _single_line(error)
    _nothing_written(tmp_path / "ckpt")


def test_weights_of_another_architecture_name_the_tensors(tmp_path):
    torch.save(_resnet().state_dict(), tmp_path / "w.pth")
    with pytest.raises(SaywhyError, match=r"w\.pth does not fit torchvision:resnet34 .*tensors missing \(layer1\.2"):
        import_checkpoint(tmp_path / "ckpt", arch="torchvision:resnet34", weights=tmp_path / "w.pth", classes=CLASSES,
                          preprocess=PREPROCESS)
    with pytest.raises(SaywhyError, match="torchvision has no model 'resnet7'"):
        import_checkpoint(tmp_path / "ckpt", arch="torchvision:resnet7", weights=tmp_path / "w.pth", classes=CLASSES,
                          preprocess=PREPROCESS)
    with pytest.raises(SaywhyError, match="needs arch="):
        import_checkpoint(tmp_path / "ckpt", weights=tmp_path / "w.pth", classes=CLASSES, preprocess=PREPROCESS)


def test_live_module_is_rebuilt_and_must_compute_the_same(tmp_path):
    source = _resnet()
    model, _ = load_checkpoint(import_checkpoint(tmp_path / "a", arch="torchvision:resnet18", model=source,
                                                 classes=CLASSES, preprocess=PREPROCESS))
    with torch.no_grad():
        assert torch.equal(model(_x()), source(_x()))

    class Custom(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.pool, self.fc = nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Linear(4, 24)

        def forward(self, x):
            return self.fc(self.pool(self.conv(x)).flatten(1))

    with pytest.raises(SaywhyError, match="Custom module needs arch="):
        import_checkpoint(tmp_path / "b", model=Custom(), classes=CLASSES, preprocess=PREPROCESS)
    with pytest.raises(SaywhyError, match="model is a .*Custom but torchvision:resnet18 builds a ResNet") as error:
        import_checkpoint(tmp_path / "b", arch="torchvision:resnet18", model=Custom(), classes=CLASSES,
                          preprocess=PREPROCESS)
    _single_line(error)
    _nothing_written(tmp_path / "b")


def test_live_module_built_with_other_options_is_caught():
    """The same tensors in a ViT that pools its class token instead of its patch tokens compute other logits."""
    timm = pytest.importorskip("timm")
    kwargs = {"img_size": 32, "depth": 1}
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=24, global_pool="avg", fc_norm=False,
                            **kwargs)
    with pytest.raises(SaywhyError, match="computes other logits .*pass the arch_kwargs"):
        import_checkpoint(Path("unused"), arch="timm:vit_tiny_patch16_224", model=vit, classes=CLASSES,
                          preprocess=Preprocess(32), arch_kwargs=kwargs)


def test_live_vit_with_average_pooling_imports(tmp_path):
    timm = pytest.importorskip("timm")
    kwargs = {"img_size": 32, "depth": 1, "global_pool": "avg", "fc_norm": False}
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=24, **kwargs).eval()
    model, meta = load_checkpoint(import_checkpoint(tmp_path / "vit", arch="timm:vit_tiny_patch16_224", model=vit,
                                                    classes=CLASSES, preprocess=Preprocess(32), arch_kwargs=kwargs))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), vit(x))
    assert meta["arch_kwargs"] == kwargs and meta["imported"]["feature_layer"] == "norm"


# ----- load_checkpoint: every damage is one line naming the file ---------------------------------
def _saved(tmp_path: Path) -> Path:
    return save_checkpoint(tmp_path / "ckpt", build_model("saywhy:smallcnn", 3),
                           checkpoint_metadata("saywhy:smallcnn", ["a", "b", "c"], Preprocess(32)))


def test_bad_json_is_one_line_naming_the_file(tmp_path):
    folder = _saved(tmp_path)
    (folder / "model.json").write_text('{"arch": "saywhy:smallcnn",')
    with pytest.raises(SaywhyError, match=r"model\.json is not valid JSON") as error:
        load_checkpoint(folder)
    _single_line(error)
    (folder / "model.json").write_text('{"arch": "saywhy:smallcnn"}')
    with pytest.raises(SaywhyError, match=r"model\.json lacks classes, preprocess"):
        load_checkpoint(folder)


def test_weights_that_do_not_fit_are_one_line_naming_the_file(tmp_path):
    folder = _saved(tmp_path)
    meta = json.loads((folder / "model.json").read_text())
    (folder / "model.json").write_text(json.dumps({**meta, "classes": ["a", "b"]}))  # one class fewer than the head
    with pytest.raises(SaywhyError, match=r"model\.safetensors: the head fc has 3 outputs but saywhy:smallcnn with 2 "
                                          "classes has 2") as error:
        load_checkpoint(folder)
    _single_line(error)
    (folder / "model.json").write_text(json.dumps(meta))
    state = build_model("saywhy:smallcnn", 3).state_dict()
    del state["features.0.0.weight"]
    save_file({k: v.contiguous() for k, v in state.items()}, folder / "model.safetensors")
    with pytest.raises(SaywhyError, match=r"model\.safetensors does not fit .*1 tensors missing \(features\.0\.0\.weight\)"):
        load_checkpoint(folder)
    (folder / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(SaywhyError, match=r"cannot read .*model\.safetensors"):
        load_checkpoint(folder)


def test_metadata_is_checked_where_it_is_built():
    meta = checkpoint_metadata("torchvision:resnet18", ["a", "b"], PREPROCESS.to_dict(), class_ids=[3, 7],
                               dataset=Path("/data/cub"), crop="bbox")
    assert meta == {"arch": "torchvision:resnet18", "arch_kwargs": {}, "classes": ["a", "b"], "class_ids": [3, 7],
                    "dataset": "/data/cub", "crop": "bbox", "preprocess": PREPROCESS.to_dict() | {"mean": list(IMAGENET_MEAN),
                                                                                                "std": list(IMAGENET_STD)}}
    with pytest.raises(SaywhyError, match="repeated: a"):
        checkpoint_metadata("saywhy:smallcnn", ["a", "a"], Preprocess())
    with pytest.raises(SaywhyError, match="3 class ids for 2 classes"):
        checkpoint_metadata("saywhy:smallcnn", ["a", "b"], Preprocess(), class_ids=[1, 2, 3])
    with pytest.raises(SaywhyError, match="preprocessing needs image_size, mean and std"):
        checkpoint_metadata("saywhy:smallcnn", ["a"], {"image_size": 64})
    with pytest.raises(SaywhyError, match="not FAMILY:NAME"):
        checkpoint_metadata("resnet18", ["a"], Preprocess())
