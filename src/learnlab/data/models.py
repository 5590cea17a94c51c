"""Small classifiers for 1-D signals ``(C, L)`` and 2-D images ``(C, H, W)``.

- :class:`MLP`: flatten, then ReLU hidden layers;
- :class:`SmallCNN`: conv-ReLU(-BN) blocks with 2x max-pooling, global average pooling, a linear head;
- :class:`SmallResNet`: a ResNet (He et al. 2016) in miniature: a stem, stages of two-conv basic
  blocks (stride 2 between stages, 1x1 projection shortcuts), optional BatchNorm.

:func:`build_model` builds one by name from the input shape. The dimensionality (1-D or 2-D) is
read from the input shape, so the same model names serve MNIST-1D and image datasets.
"""

from __future__ import annotations

import math

import torch
from torch import nn

MODEL_NAMES = ("mlp", "cnn", "resnet", "resnet_bn", "cnn_bn")


def _layers(spatial_dims: int) -> tuple[type[nn.Module], type[nn.Module], type[nn.Module], type[nn.Module]]:
    if spatial_dims == 1:
        return nn.Conv1d, nn.BatchNorm1d, nn.MaxPool1d, nn.AdaptiveAvgPool1d
    if spatial_dims == 2:
        return nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d
    raise ValueError(f"inputs must be (C, L) or (C, H, W), got {spatial_dims} spatial dims")


class MLP(nn.Sequential):
    """Flatten, then ``Linear-ReLU`` per hidden width, then a linear head."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, hidden: tuple[int, ...] = (128, 128)) -> None:
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(input_shape)
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        layers.append(nn.Linear(width, num_classes))
        super().__init__(*layers)


class SmallCNN(nn.Sequential):
    """``[conv3-(BN)-ReLU-maxpool2]`` per channel count (pooling only while the size allows),
    global average pooling and a linear head."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, channels: tuple[int, ...] = (16, 32),
                 batch_norm: bool = False) -> None:
        conv, norm, pool, global_pool = _layers(len(input_shape) - 1)
        layers: list[nn.Module] = []
        in_channels, size = input_shape[0], min(input_shape[1:])
        for out_channels in channels:
            layers.append(conv(in_channels, out_channels, 3, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(norm(out_channels))
            layers.append(nn.ReLU())
            if size >= 4:
                layers.append(pool(2))
                size //= 2
            in_channels = out_channels
        layers += [global_pool(1), nn.Flatten(), nn.Linear(in_channels, num_classes)]
        super().__init__(*layers)


class BasicBlock(nn.Module):
    """Two 3-wide convolutions with a skip connection: ``relu(F(x) + shortcut(x))``."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, spatial_dims: int, batch_norm: bool) -> None:
        super().__init__()
        conv, norm, _, _ = _layers(spatial_dims)

        def normalise(channels: int) -> nn.Module:
            return norm(channels) if batch_norm else nn.Identity()

        self.conv1 = conv(in_channels, out_channels, 3, stride=stride, padding=1, bias=not batch_norm)
        self.norm1 = normalise(out_channels)
        self.conv2 = conv(out_channels, out_channels, 3, padding=1, bias=not batch_norm)
        self.norm2 = normalise(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(conv(in_channels, out_channels, 1, stride=stride, bias=not batch_norm),
                                          normalise(out_channels))
        if not batch_norm:  # keep the residual branch small at init so deep stacks stay stable
            nn.init.zeros_(self.conv2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.norm1(self.conv1(x)))
        return torch.relu(self.norm2(self.conv2(out)) + self.shortcut(x))


class SmallResNet(nn.Module):
    """Stem conv, one stage of ``blocks_per_stage`` basic blocks per width (stride 2 after the
    first stage), global average pooling and a linear head; ``batch_norm`` toggles BatchNorm."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, widths: tuple[int, ...] = (16, 32, 64),
                 blocks_per_stage: int = 1, batch_norm: bool = True) -> None:
        super().__init__()
        spatial_dims = len(input_shape) - 1
        conv, norm, _, global_pool = _layers(spatial_dims)
        self.stem = nn.Sequential(conv(input_shape[0], widths[0], 3, padding=1, bias=not batch_norm),
                                  norm(widths[0]) if batch_norm else nn.Identity(), nn.ReLU())
        blocks: list[nn.Module] = []
        in_channels = widths[0]
        for stage, width in enumerate(widths):
            for index in range(blocks_per_stage):
                stride = 2 if stage > 0 and index == 0 else 1
                blocks.append(BasicBlock(in_channels, width, stride, spatial_dims, batch_norm))
                in_channels = width
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(global_pool(1), nn.Flatten(), nn.Linear(in_channels, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int, width: int = 16,
                generator: torch.Generator | None = None) -> nn.Module:
    """Build ``mlp``, ``cnn``, ``cnn_bn``, ``resnet`` (no BatchNorm) or ``resnet_bn`` for ``input_shape``.

    ``width`` scales every model (MLP hidden = 8·width, CNN channels = (width, 2·width), ResNet
    widths = (width, 2·width, 4·width)). With a ``generator``, initialisation is reproducible
    without touching torch's global generator.
    """
    input_shape = tuple(int(size) for size in input_shape)
    builders = {
        "mlp": lambda: MLP(input_shape, num_classes, hidden=(8 * width, 8 * width)),
        "cnn": lambda: SmallCNN(input_shape, num_classes, channels=(width, 2 * width)),
        "cnn_bn": lambda: SmallCNN(input_shape, num_classes, channels=(width, 2 * width), batch_norm=True),
        "resnet": lambda: SmallResNet(input_shape, num_classes, widths=(width, 2 * width, 4 * width), batch_norm=False),
        "resnet_bn": lambda: SmallResNet(input_shape, num_classes, widths=(width, 2 * width, 4 * width), batch_norm=True),
    }
    if name not in builders:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(MODEL_NAMES)}")
    if generator is None:
        return builders[name]()
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return builders[name]()


def has_batch_norm(model: nn.Module) -> bool:
    return any(isinstance(module, nn.modules.batchnorm._BatchNorm) for module in model.modules())


def count_parameters(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())
