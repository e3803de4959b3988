"""InPlaceReLU6: same numbers as nn.ReLU6(inplace=True), no saved copy of the input."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from backbones.layers import InPlaceReLU6
from heads.deeplabv3 import deeplabv3_mobilenet_v2
from heads.ssdlite import ssdlite_mobilenet_v2


def _relu6_step(module: nn.Module, x: Tensor, grad: Tensor) -> tuple[Tensor, Tensor, bool]:
    """Output, input gradient, and whether all autograd saved for the activation is its
    output (no copy)."""
    leaf = x.clone().requires_grad_(True)
    saved: list[Tensor] = []

    def pack(t: Tensor) -> Tensor:
        saved.append(t)
        return t

    pre = leaf * 1.0  # a non-leaf, as a BatchNorm output is
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = module(pre)
    only_output = bool(saved) and all(t.data_ptr() == out.data_ptr() for t in saved)
    out.backward(grad)
    return out.detach(), leaf.grad, only_output


def test_inplace_relu6_equals_torch_bit_for_bit_and_saves_only_its_output() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 8, 5, 5, generator=g) * 5
    x[0, 0, 0, :4] = torch.tensor([0.0, 6.0, -0.0, 6.000001])  # the edges of the mask
    grad = torch.randn(x.shape, generator=g)
    out, gx, torch_saves_output = _relu6_step(nn.ReLU6(inplace=True), x, grad)
    out_new, gx_new, saves_output = _relu6_step(InPlaceReLU6(), x, grad)
    assert torch.equal(out_new, out)
    assert torch.equal(gx_new, gx)
    # Autograd keeps the output itself (the multiplication by 1.0 saves nothing);
    # torch's in-place ReLU6 keeps a clone of the input instead.
    assert saves_output and not torch_saves_output


def test_inplace_relu6_without_grad_is_plain_relu6() -> None:
    x = torch.linspace(-3, 9, 50)
    with torch.no_grad():
        assert torch.equal(InPlaceReLU6()(x.clone()), F.relu6(x))
    assert torch.equal(InPlaceReLU6()(x.clone()), F.relu6(x))  # needs no grad either


def _with_torch_relu6(model: nn.Module) -> nn.Module:
    reference = copy.deepcopy(model)
    for module in reference.modules():
        for name, child in module.named_children():
            if isinstance(child, InPlaceReLU6):
                setattr(module, name, nn.ReLU6(inplace=True))
    return reference


def _seg_loss(model: nn.Module) -> Tensor:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 65, 65, generator=g)
    return F.cross_entropy(model(x), torch.randint(0, 21, (2, 65, 65), generator=g))


def _det_loss(model: nn.Module) -> Tensor:
    x = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    targets = [
        {"boxes": torch.tensor([[10.0, 20.0, 60.0, 90.0]]), "labels": torch.tensor([3])},
        {"boxes": torch.tensor([[0.0, 0.0, 128.0, 64.0], [70.0, 70.0, 100.0, 120.0]]),
         "labels": torch.tensor([0, 7])},
    ]  # fmt: skip
    return model.compute_loss(model.forward_outputs(x), targets)["loss"]


def _deeplab() -> nn.Module:
    return deeplabv3_mobilenet_v2(num_classes=21, width_mult=0.35, dropout=0.0)


def _ssdlite() -> nn.Module:
    return ssdlite_mobilenet_v2(num_classes=10, width_mult=0.35)


@pytest.mark.parametrize(
    ("build", "loss_fn"),
    [(_deeplab, _seg_loss), (_ssdlite, _det_loss)],
    ids=["deeplabv3", "ssdlite"],
)
def test_training_step_numbers_are_unchanged(
    build: Callable[[], nn.Module], loss_fn: Callable[[nn.Module], Tensor]
) -> None:
    """Loss and every gradient of a training step equal those of the same network with
    torch's ``nn.ReLU6(inplace=True)``, bit for bit."""
    torch.manual_seed(0)
    model = build().train()
    reference = _with_torch_relu6(model).train()
    assert any(isinstance(m, InPlaceReLU6) for m in model.modules())
    assert not any(isinstance(m, InPlaceReLU6) for m in reference.modules())
    loss, loss_ref = loss_fn(model), loss_fn(reference)
    loss.backward()
    loss_ref.backward()
    assert torch.equal(loss, loss_ref)
    for (name, p), p_ref in zip(model.named_parameters(), reference.parameters(), strict=True):
        assert torch.equal(p.grad, p_ref.grad), name
