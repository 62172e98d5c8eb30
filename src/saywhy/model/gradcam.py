"""Grad-CAM (Selvaraju et al.), the gradient baseline of Table 1, through :func:`saywhy.model.hooks.capture`.

    L_c = ReLU( sum_k a_k f_k ),   a_k = mean over positions of d y_c / d f_k

For a head that is global average pooling + one linear layer, a_k = w_ck / (h w), so
Grad-CAM's peak is the CAM's; tests check that equality.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from saywhy.errors import SaywhyError
from saywhy.model.activations import feature_maps, model_device, model_dtype
from saywhy.model.hooks import capture
from saywhy.model.layers import LayerChoice


def grad_cam_maps(model: nn.Module, layers: LayerChoice, images: torch.Tensor,
                  classes: Sequence[int] | None = None) -> np.ndarray:
    """Grad-CAM before upsampling, (N, h, w), of ``classes`` (default: the predicted ones).

    The maps f are the feature layer's, as the head sees them (:func:`feature_maps`: patch
    tokens on their grid, channels-last permuted), recorded with their graph kept, so no
    hook outlives the call.
    """
    model.eval()
    layer = layers.feature_layer
    with capture(model, outputs=[layer], keep_grad=True) as seen, torch.enable_grad():
        # the input takes part in the graph, so a frozen network (requires_grad off) still has gradients
        logits = model(images.to(device=model_device(model), dtype=model_dtype(model)).requires_grad_(True))
        output = seen[f"out:{layer}"]  # loud if the layer is not on the model's path
        if not output.requires_grad:
            raise SaywhyError(f"layer {layer!r} has no gradient: the network detaches its output")
        maps = feature_maps(model, output, layers)
        target = logits.argmax(dim=1) if classes is None else torch.as_tensor(classes, device=logits.device)
        # Images in a batch are independent in eval mode, so one backward gives every image's gradients.
        grads = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), maps)[0]
    weights = grads.mean(dim=(2, 3), keepdim=True)
    return torch.relu((weights * maps.detach()).sum(dim=1)).float().cpu().numpy()
