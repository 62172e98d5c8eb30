"""The exactness check: saywhy explains a network only if head(mean of maps) gives its logits."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from saywhy.errors import SaywhyError
from saywhy.model.activations import activations_from_batches
from saywhy.model.layers import LayerCandidate, find_layers, layer_candidates
from saywhy.model.smallcnn import SmallCNN

torchvision = pytest.importorskip("torchvision")
torch.set_num_threads(1)

REFUSAL = "not a linear function of the average-pooled map of any layer"


def _zeros(size: int = 64) -> torch.Tensor:
    return torch.zeros(1, 3, size, size)


def _convnext() -> nn.Module:
    """torchvision's ConvNeXt (LayerNorm2d + Flatten + Linear head) with two tiny stages."""
    from torchvision.models.convnext import CNBlockConfig, ConvNeXt

    return ConvNeXt([CNBlockConfig(16, 32, 1), CNBlockConfig(32, None, 1)], num_classes=5)


def _vit(**kwargs) -> nn.Module:
    timm = pytest.importorskip("timm")
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, depth=2, num_classes=5, **kwargs)


def _mlp_head_resnet() -> nn.Module:
    model = torchvision.models.resnet18(weights=None, num_classes=24)
    model.fc = nn.Sequential(nn.Linear(512, 128), nn.ReLU(), nn.Linear(128, 24))
    return model


def _vgg11() -> nn.Module:
    from torchvision.models.vgg import VGG, cfgs, make_layers

    return VGG(make_layers(cfgs["A"]), num_classes=5, init_weights=False)  # vgg11, without its slow init


def _swin() -> nn.Module:
    timm = pytest.importorskip("timm")
    return timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, img_size=64, window_size=2,
                             depths=(1, 1, 1, 1), embed_dim=16, num_heads=(1, 1, 1, 1), num_classes=5)


SUPPORTED = {
    "smallcnn": (lambda: SmallCNN(5, pools=2), 64, ("features", "fc", 256, None, None)),
    "resnet18": (lambda: torchvision.models.resnet18(weights=None, num_classes=5), 64, ("layer4", "fc", 512, None, None)),
    "efficientnet_b0": (lambda: torchvision.models.efficientnet_b0(weights=None, num_classes=5), 64,
                        ("features", "classifier.1", 1280, None, None)),
    "convnext": (_convnext, 64, ("features", "classifier.2", 32, None, "classifier.0")),
    "vit_avg": (lambda: _vit(global_pool="avg", fc_norm=False), 32, ("norm", "head", 192, 1, None)),
    "vit_avg_fc_norm": (lambda: _vit(global_pool="avg"), 32, ("norm", "head", 192, 1, "fc_norm")),
    "swin_channels_last": (_swin, 64, ("norm", "head.fc", 128, None, None)),
}


@pytest.mark.parametrize("name", SUPPORTED)
def test_supported_families_are_exact_and_their_maps_average_to_the_head_input(name):
    build, size, expected = SUPPORTED[name]
    torch.manual_seed(0)
    model = build().eval()
    choice = find_layers(model, _zeros(size))
    assert (choice.feature_layer, choice.head, choice.n_filters, choice.prefix_tokens, choice.norm) == expected
    assert choice.n_classes == 5 and choice.max_error < 1e-4
    # The maps the explainer grounds with average exactly to phi, and W phi + b are the logits.
    images = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(3))
    acts = activations_from_batches(model, [(images, np.arange(2), torch.ones(2, dtype=torch.bool))], choice,
                                    keep_maps=True)
    assert acts.maps.ndim == 4 and acts.maps.shape[:2] == (2, choice.n_filters)
    np.testing.assert_allclose(acts.maps.mean((2, 3)), acts.pooled, rtol=1e-4, atol=1e-5)
    head = dict(model.named_modules())[choice.head]
    recomputed = acts.pooled @ head.weight.detach().numpy().T + head.bias.detach().numpy()
    np.testing.assert_allclose(recomputed, acts.logits, rtol=1e-4, atol=1e-5)


def test_vit_maps_are_the_patch_tokens_on_their_grid():
    model = _vit(global_pool="avg", fc_norm=False).eval()
    choice = find_layers(model, _zeros(32))
    assert choice.grid == (2, 2)
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    acts = activations_from_batches(model, [(images, np.arange(2), torch.ones(2, dtype=torch.bool))], choice,
                                    keep_maps=True)
    with torch.no_grad():
        tokens = model.forward_features(images)  # (2, 1 + 4, 192), class token first
    np.testing.assert_allclose(acts.maps[:, :, 0, 1], tokens[:, 2].numpy(), rtol=1e-5, atol=1e-6)  # row 0, col 1


def _assert_one_line_refusal(error: pytest.ExceptionInfo, *names: str) -> str:
    message = str(error.value)
    assert "\n" not in message and REFUSAL in message and "global-average-pooling + one linear layer" in message
    for name in names:
        assert name in message
    return message


def test_mlp_after_pooling_is_refused_though_channel_counts_match():
    """layer2 has 128 channels like fc.2's input: the old search picked it; the check refuses it."""
    with pytest.raises(SaywhyError) as error:
        find_layers(_mlp_head_resnet(), _zeros())
    message = _assert_one_line_refusal(error, "candidates: ", "layer2", "-> fc.2 error")
    assert "more" in message  # every 128-channel module of layer2 was tried


def test_vgg_flattening_into_an_mlp_is_refused():
    with pytest.raises(SaywhyError) as error:
        find_layers(_vgg11(), _zeros())
    _assert_one_line_refusal(error, "classifier.6 (4096->5)", "no layer outputs a map of that width", "avgpool 512x7x7")


def test_a_1x1_conv_after_pooling_is_an_mlp_and_refused():
    """timm's MobileNetV3 pools, then runs conv_head + act2 on the 1x1 vector: exact numbers, not phi = GAP(f)."""
    timm = pytest.importorskip("timm")
    with pytest.raises(SaywhyError) as error:
        find_layers(timm.create_model("mobilenetv3_small_050", pretrained=False, num_classes=5), _zeros())
    _assert_one_line_refusal(error, "act2 1024x1x1 after pooling -> classifier")


def test_class_token_vit_is_refused_with_the_fix():
    with pytest.raises(SaywhyError) as error:
        find_layers(_vit(), _zeros(32))
    _assert_one_line_refusal(error, "global_pool='avg'")


class _Known(nn.Module):
    """conv1 -> act -> conv2 (1x1) -> average pool -> fc: only conv2 and the pool are exact."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 4, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.pool(self.conv2(self.act(self.conv1(x)))).flatten(1))


def test_layer_candidates_of_a_known_model():
    torch.manual_seed(0)
    found = layer_candidates(_Known(), _zeros(8))
    assert all(isinstance(c, LayerCandidate) for c in found)
    assert [(c.feature_layer, c.head, c.map_shape, c.exact) for c in found] == [
        ("conv1", "fc", (4, 8, 8), False),
        ("act", "fc", (4, 8, 8), False),
        ("conv2", "fc", (4, 8, 8), True),
        ("pool", "fc", (4, 1, 1), True),
    ]
    assert all((c.n_filters, c.n_classes, c.prefix_tokens, c.norm) == (4, 2, None, None) for c in found)
    assert found[0].max_error > 1e-2 and found[2].max_error < 1e-6
    assert find_layers(_Known(), _zeros(8)).feature_layer == "conv2"  # a real map beats the 1x1 pool output


class _UnusedBranch(nn.Module):
    """A side branch runs after the real maps and has their width, but feeds nothing."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, bias=False)
        self.act = nn.ReLU()
        self.side = nn.Conv2d(4, 4, 1, bias=False)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        maps = self.act(self.conv(x))
        self.side(maps)
        return self.fc(maps.mean((2, 3)))


def test_zeros_example_cannot_hide_a_wrong_layer():
    """On zeros every bias-free map is zero and any layer 'explains' the bias; the random probe does not."""
    assert find_layers(_UnusedBranch(), _zeros(8)).feature_layer == "act"
    with pytest.raises(SaywhyError, match="does not explain the logits"):
        find_layers(_UnusedBranch(), _zeros(8), feature_layer="side")


def test_explicit_layer_is_checked_too():
    model = torchvision.models.resnet18(weights=None, num_classes=3)
    assert find_layers(model, _zeros(), feature_layer="layer4", head="fc").feature_layer == "layer4"
    with pytest.raises(SaywhyError, match=r"'layer4.1.bn2' does not explain the logits.*leave --layer out") as error:
        find_layers(model, _zeros(), feature_layer="layer4.1.bn2")  # 512 channels, but before the residual sum
    assert "\n" not in str(error.value)
    with pytest.raises(SaywhyError, match=r"'layer3' outputs \(256, 4, 4\).*width 512"):
        find_layers(model, _zeros(), feature_layer="layer3")
    with pytest.raises(SaywhyError, match="not nn.Linear"):
        find_layers(model, _zeros(), head="conv1")
    with pytest.raises(SaywhyError, match="no layer named"):
        find_layers(model, _zeros(), feature_layer="layer9")
    with pytest.raises(SaywhyError, match="does not explain the logits"):
        find_layers(_mlp_head_resnet(), _zeros(), feature_layer="layer2", head="fc.2")
    with pytest.raises(SaywhyError, match="outputs 128 values but the model outputs 24 logits"):
        find_layers(_mlp_head_resnet(), _zeros(), head="fc.0")


def test_check_leaves_no_hooks_and_costs_one_forward_of_two():
    model = _Known()
    calls = []
    model.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape[0]))
    find_layers(model, _zeros(8))
    assert calls == [2]
    assert sum(len(m._forward_hooks) for m in model.modules()) == 0
