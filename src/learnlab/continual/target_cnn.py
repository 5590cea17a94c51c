"""The target CNN of the HyperTransformer and its weights as token slices.

Zhmoginov et al. 2022 (§4 and their "maxpool-4-layer" model): ``L`` blocks of [3x3 conv (same
padding) -> ReLU -> 2x2 max-pool -> BatchNorm], all with the same channel count, then a linear
layer on the flattened map: logits (one output per class) or an embedding (Continual HT's
prototypical head, Vladymyrov et al. 2024 §3.2).

Weights are kept in the layout the generator emits (the ``output`` allocation of §3.1 of the
HT paper): one token per output channel / unit, whose slice is that unit's incoming weights and
its bias, ``in_channels * 3 * 3 + 1`` for a conv layer and ``in_features + 1`` for the head. A
layer's weights are a tensor ``(B, tokens, slice)``, one CNN per task of a batch; all ``B`` CNNs
run at once as a grouped convolution.

BatchNorm's scale and shift are learned, never generated, and it always normalises with the
statistics of the batch it sees (training mode), per task: "All BN variables were learned and not
generated" (HT paper, App. A).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

BN_EPS = 1e-5


@dataclass(frozen=True)
class CNNSpec:
    """The target CNN: ``conv_layers`` blocks of ``channels`` channels, then a head of ``head_units`` outputs."""

    channels: int = 8
    conv_layers: int = 4
    image_size: int = 28
    in_channels: int = 1
    head: Literal["logits", "embedding"] = "logits"
    head_units: int = 5

    @property
    def map_size(self) -> int:
        """The side of the feature map after the last max-pool."""
        size = self.image_size
        for _ in range(self.conv_layers):
            size //= 2
        return size

    @property
    def num_layers(self) -> int:
        return self.conv_layers + 1

    def layer_tokens(self) -> list[tuple[int, int]]:
        """``(tokens, slice length)`` of every layer, conv layers first, the head last."""
        shapes = [(self.channels, (self.in_channels if layer == 0 else self.channels) * 9 + 1)
                  for layer in range(self.conv_layers)]
        return shapes + [(self.head_units, self.channels * self.map_size ** 2 + 1)]

    def validate(self) -> None:
        if self.map_size < 1:
            raise ValueError(f"{self.conv_layers} max-pools leave nothing of a {self.image_size}x{self.image_size} image")


def batch_norm(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """BatchNorm in training mode over each task's samples: ``x (B, M, C, H, W)``, statistics over (M, H, W).

    ``gamma, beta``: one scale and shift per channel ``(C,)``, or per task and channel ``(B, C)``.
    """
    mean = x.mean(dim=(1, 3, 4), keepdim=True)
    var = x.var(dim=(1, 3, 4), keepdim=True, unbiased=False)
    return (x - mean) * torch.rsqrt(var + BN_EPS) * gamma[..., None, :, None, None] + beta[..., None, :, None, None]


def conv_block(x: torch.Tensor, weights: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """One block for ``B`` CNNs at once: ``x (B, M, Cin, H, W)``, ``weights (B, Cout, Cin*9 + 1)``."""
    batch, samples, channels, height, width = x.shape
    out = weights.shape[1]
    kernel = weights[..., :-1].reshape(batch * out, channels, 3, 3)
    bias = weights[..., -1].reshape(batch * out)
    # channels-last: the grouped convolution then writes channels-last output, whose max-pool kernel is
    # several times faster on the CPU than the contiguous one at these small shapes (same values).
    grouped = x.transpose(0, 1).reshape(samples, batch * channels, height, width).contiguous(memory_format=torch.channels_last)
    y = F.conv2d(grouped, kernel, bias, padding=1, groups=batch)
    y = F.max_pool2d(F.relu(y), 2)
    y = y.view(samples, batch, out, *y.shape[-2:]).transpose(0, 1)
    return batch_norm(y, gamma, beta)


def head(x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The linear head of ``B`` CNNs: ``x (B, M, C, h, w)``, ``weights (B, units, C*h*w + 1)`` -> ``(B, M, units)``."""
    features = x.flatten(2)
    return torch.einsum("bmi,bui->bmu", features, weights[..., :-1]) + weights[..., -1].unsqueeze(1)


def forward(x: torch.Tensor, weights: list[torch.Tensor], gammas: list[torch.Tensor], betas: list[torch.Tensor]
            ) -> torch.Tensor:
    """The whole CNN: images ``(B, M, 1, S, S)`` and every layer's weights -> logits or embeddings ``(B, M, units)``."""
    for layer, (gamma, beta) in enumerate(zip(gammas, betas)):
        x = conv_block(x, weights[layer], gamma, beta)
    return head(x, weights[-1])


def init_slices(tokens: int, length: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """He-initialised weights of one layer in slice layout (bias zero), for a trained, not generated, layer."""
    weights = torch.randn(tokens, length, generator=generator) * (2.0 / (length - 1)) ** 0.5
    weights[:, -1] = 0.0
    return weights
