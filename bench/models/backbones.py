"""Backbones: input in [0, 1] (already normalised by the model) → features h of width ``feature_dim``.

* ``mlp``        -- for digits: flatten, Linear+SiLU layers.
* ``small_cnn``  -- for CPU-scale image suites: three conv stages (conv-BN-SiLU ×2, pool).
* ``resnet18`` / ``resnet50`` -- CIFAR-style (3×3 stem, stride 1, no max-pool), batch
  norm and SiLU everywhere, as in the paper's Appendix C. Feature widths 512 / 2048.
"""
from __future__ import annotations

import math

from torch import nn

from bench.config.schema import BackboneConfig
from registry import Registry

BACKBONES: Registry = Registry("backbone", entry_point_group="lpc_bench.backbones")


class MLP(nn.Module):
    def __init__(self, input_shape: tuple[int, ...], hidden: tuple[int, ...]) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(input_shape)
        for h in hidden:
            layers += [nn.Linear(width, h), nn.SiLU()]
            width = h
        self.net = nn.Sequential(*layers)
        self.feature_dim = width

    def forward(self, x):
        return self.net(x)


class GlobalAvgPool(nn.Module):
    """Mean over the spatial dimensions → (B, C).

    Written as a plain mean rather than ``nn.AdaptiveAvgPool2d(1)`` because the latter's
    CUDA backward has no deterministic implementation, which would break ``--deterministic``.
    """

    def forward(self, x):
        return x.mean(dim=(2, 3))


def _conv_bn(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.SiLU()]


class SmallCNN(nn.Module):
    def __init__(self, input_shape: tuple[int, ...], channels: tuple[int, ...]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = input_shape[0]
        for i, cout in enumerate(channels):
            layers += _conv_bn(cin, cout) + _conv_bn(cout, cout)
            if i < len(channels) - 1:
                layers.append(nn.MaxPool2d(2))
            cin = cout
        layers.append(GlobalAvgPool())
        self.net = nn.Sequential(*layers)
        self.feature_dim = cin

    def forward(self, x):
        return self.net(x)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act = nn.SiLU()
        self.shortcut = _shortcut(cin, planes * self.expansion, stride)

    def forward(self, x):
        out = self.act(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act(out + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.act = nn.SiLU()
        self.shortcut = _shortcut(cin, out, stride)

    def forward(self, x):
        y = self.act(self.bn1(self.conv1(x)))
        y = self.act(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.act(y + self.shortcut(x))


def _shortcut(cin: int, cout: int, stride: int) -> nn.Module:
    if stride == 1 and cin == cout:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


class CifarResNet(nn.Module):
    def __init__(self, block: type[nn.Module], depths: tuple[int, ...], in_channels: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(*_conv_bn(in_channels, 64))
        stages, cin = [], 64
        for i, (planes, depth) in enumerate(zip((64, 128, 256, 512), depths)):
            blocks = []
            for j in range(depth):
                blocks.append(block(cin, planes, 2 if (j == 0 and i > 0) else 1))
                cin = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = GlobalAvgPool()
        self.feature_dim = cin

    def forward(self, x):
        return self.pool(self.stages(self.stem(x)))


@BACKBONES.register("mlp")
def mlp(cfg: BackboneConfig, input_shape: tuple[int, ...]) -> nn.Module:
    """MLP: flatten, then Linear + SiLU per width of backbone.hidden (default 256-256); features h = the last width."""
    return MLP(input_shape, tuple(cfg.hidden))


@BACKBONES.register("small_cnn")
def small_cnn(cfg: BackboneConfig, input_shape: tuple[int, ...]) -> nn.Module:
    """Small CNN for CPU-scale image suites: per width of backbone.channels (default 32-64-128) two conv-BN-SiLU, 2×2 max-pool between stages, global mean pool."""
    return SmallCNN(input_shape, tuple(cfg.channels))


@BACKBONES.register("resnet18")
def resnet18(cfg: BackboneConfig, input_shape: tuple[int, ...]) -> nn.Module:
    """CIFAR ResNet-18 (3×3 stem, stride 1, no max-pool; batch norm, SiLU; paper Appendix C): 512-wide features."""
    return CifarResNet(BasicBlock, (2, 2, 2, 2), input_shape[0])


@BACKBONES.register("resnet50")
def resnet50(cfg: BackboneConfig, input_shape: tuple[int, ...]) -> nn.Module:
    """CIFAR ResNet-50 (bottleneck blocks, 3×3 stem, no max-pool; batch norm, SiLU; paper Appendix C): 2048-wide features."""
    return CifarResNet(Bottleneck, (3, 4, 6, 3), input_shape[0])


def create_backbone(cfg: BackboneConfig, input_shape: tuple[int, ...]) -> nn.Module:
    return BACKBONES.create(cfg.name, cfg, input_shape)
