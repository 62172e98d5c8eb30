"""Hooks never leak; layers are found automatically or refused with a useful error."""
import pytest
import torch
from torch import nn

from saywhy.errors import SaywhyError
from saywhy.model.hooks import capture
from saywhy.model.layers import find_layers
from saywhy.model.smallcnn import SmallCNN


def _hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


class Exploding(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        self.conv(x)
        raise RuntimeError("boom")


def test_hooks_removed_when_the_model_raises():
    model = Exploding()
    with pytest.raises(RuntimeError, match="boom"):
        with capture(model, outputs=["conv"]):
            assert _hook_count(model) == 1
            model(torch.zeros(1, 3, 8, 8))
    assert _hook_count(model) == 0


def test_hooks_removed_when_the_model_raises_with_the_graph_kept():
    model = Exploding()
    with pytest.raises(RuntimeError, match="boom"), torch.enable_grad():
        with capture(model, outputs=["conv"], keep_grad=True):
            assert _hook_count(model) == 1
            model(torch.zeros(1, 3, 8, 8))
    assert _hook_count(model) == 0
    with pytest.raises(SaywhyError, match="no layer named"), capture(model, outputs=["missing"], keep_grad=True):
        pass
    assert _hook_count(model) == 0


def test_keep_grad_records_the_tensor_with_its_graph_and_the_default_detaches():
    model = nn.Sequential(nn.Conv2d(1, 1, 1, bias=False), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with torch.no_grad():
        model[0].weight.fill_(3.0)
    x = torch.ones(1, 1, 2, 2)
    with capture(model, outputs=["0"], keep_grad=True) as kept, torch.enable_grad():
        out = model(x)
        (grad,) = torch.autograd.grad(out.sum(), kept["out:0"])
    assert grad.flatten().tolist() == [0.25] * 4  # d mean / d each of the 4 positions
    with capture(model, outputs=["0"]) as detached:
        model(x)
    assert detached["out:0"].grad_fn is None and not detached["out:0"].requires_grad
    with capture(model, outputs=["1"], keep_grad=True) as seen:  # no forward pass
        pass
    with pytest.raises(SaywhyError, match="produced nothing"):
        seen["out:1"]
    assert _hook_count(model) == 0


def test_capture_records_exact_values():
    model = nn.Sequential(nn.Conv2d(1, 1, 1, bias=False), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1, 2))
    with torch.no_grad():
        model[0].weight.fill_(2.0)
    x = torch.arange(4.0).reshape(1, 1, 2, 2)
    with capture(model, outputs=["0"], inputs=["3"]) as seen:
        model(x)
    assert seen["out:0"].flatten().tolist() == [0.0, 2.0, 4.0, 6.0]
    assert seen["in:3"].flatten().tolist() == [3.0]
    assert _hook_count(model) == 0


def test_layer_that_never_ran_is_a_loud_error():
    class WithUnused(nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.unused = nn.Linear(2, 2), nn.Linear(2, 2)

        def forward(self, x):
            return self.used(x)

    model = WithUnused()
    with capture(model, outputs=["unused"]) as seen:
        model(torch.zeros(1, 2))
        with pytest.raises(SaywhyError, match="produced nothing"):
            seen["out:unused"]


def test_finds_final_block_and_head_of_small_cnn():
    choice = find_layers(SmallCNN(n_classes=7), torch.zeros(1, 3, 32, 32))
    assert choice.feature_layer == "features"
    assert choice.head == "fc"
    assert (choice.n_filters, choice.n_classes) == (256, 7)


def test_finds_layers_of_torchvision_resnet():
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.resnet18(weights=None, num_classes=3)
    choice = find_layers(model, torch.zeros(1, 3, 64, 64))
    assert (choice.feature_layer, choice.head, choice.n_filters) == ("layer4", "fc", 512)


def test_model_without_linear_head_is_refused():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with pytest.raises(SaywhyError, match="no linear head"):
        find_layers(model, torch.zeros(1, 3, 8, 8))


def test_model_without_conv_layer_names_what_it_found():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 2))
    with pytest.raises(SaywhyError, match="--layer"):
        find_layers(model, torch.zeros(1, 3, 2, 2))


def test_wrong_layer_name_lists_similar_names():
    with pytest.raises(SaywhyError, match="no layer named"):
        find_layers(SmallCNN(n_classes=2), torch.zeros(1, 3, 32, 32), feature_layer="featurez")
    assert _hook_count(SmallCNN(n_classes=2)) == 0


def test_weights_digest_tells_apart_same_weights_in_another_structure():
    from saywhy.model.checkpoint import weights_digest

    a = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1))
    b = nn.Sequential(nn.Conv2d(3, 4, 3, padding=0))
    b.load_state_dict(a.state_dict())
    assert weights_digest(a) != weights_digest(b)
    same = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1))
    same.load_state_dict(a.state_dict())
    assert weights_digest(a) == weights_digest(same)
