"""HyperTransformer (Zhmoginov et al., ICML 2022) and its continual recursion (Vladymyrov et al., TMLR 2024).

:class:`HyperTransformer` maps a support set to the weights of a target CNN
(:mod:`learnlab.continual.target_cnn`), layer by layer (HT paper §3.2):

1. the support images' *current* activations, after the layers generated so far, pass through a
   per-layer local feature extractor (3x3 conv, ReLU, global average pooling) and are joined to
   shared features of the raw images (a 4-layer stride-2 conv extractor);
2. a per-layer transformer reads ``[placeholder tokens ; sample tokens]``. Placeholder ``i`` is a
   learned vector ``mu_i`` (width ``d``) followed by a payload slot for weight slice ``i``; a sample
   token is a label embedding ``xi(y)`` (``N + 1`` of them: index ``N`` means "no label", for
   unlabelled support samples) followed by the sample's features; both are zero-padded to the
   layer's token width ``max(d + slice, d + features)`` (HT paper §3.1);
3. the output at placeholder ``i``, after dropping its first ``d`` entries, is weight slice ``i``
   (times learned per-layer scales: the weights start at He's fan-in scale and the biases at zero,
   so that no generated ReLU starts dead); the layer is applied and the next layer is generated.

A logits head's slice ``k`` belongs to class ``k``: with ``tie_logits_placeholders`` (default) its
placeholder is class ``k``'s label embedding plus a learned offset, so that the transformer need
not discover which placeholder goes with which label (without it, meta-training at CPU budgets
often stalls at a fraction of the accuracy).

Transformers are post-LayerNorm encoders with softmax attention and no positional encoding, so
the weights do not depend on the order of the support samples. The first ``trained_conv_layers``
conv layers are ordinary trained weights; the head is always generated.

Continual HT (CHT paper §3): the payload slot of task ``t``'s placeholders carries the weights
generated for task ``t-1`` (zero for the first task, where CHT is exactly HT), so
``theta_t = a_psi(S_t, theta_{t-1})``; :func:`generate_chain` unrolls it over a task sequence and
the loss of later tasks backpropagates through the whole chain.

:class:`TrainedCNN` is the same CNN with ordinary trained weights (the ProtoNet baseline); it
offers the same ``generate`` call and ignores the support set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from learnlab.continual.episodes import UNLABELLED
from learnlab.continual.target_cnn import CNNSpec, conv_block, init_slices


@dataclass(frozen=True)
class HTSettings:
    """Generator sizes (HT paper §4.1: d = 32, 8-16 local features, 32 shared features, 3 layers, 2 heads)."""

    cnn: CNNSpec = field(default_factory=CNNSpec)
    num_labels: int = 5  # label embeddings 0..num_labels-1; index num_labels is "no label"
    label_dim: int = 32
    local_features: int = 16
    shared_features: int = 32
    transformer_layers: int = 2
    heads: int = 2
    trained_conv_layers: int = 0
    tie_logits_placeholders: bool = True

    def token_width(self, slice_length: int) -> int:
        width = self.label_dim + max(slice_length, self.local_features + self.shared_features)
        return -(-width // self.heads) * self.heads

    def validate(self) -> None:
        self.cnn.validate()
        if not 0 <= self.trained_conv_layers <= self.cnn.conv_layers:
            raise ValueError(f"trained_conv_layers must be within 0..{self.cnn.conv_layers}")


class SharedFeatures(nn.Module):
    """Four stride-2 3x3 convs on the raw images, then global average pooling (HT paper §3.2)."""

    def __init__(self, in_channels: int, features: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for index in range(4):
            layers += [nn.Conv2d(in_channels if index == 0 else features, features, 3, stride=2, padding=1), nn.ReLU()]
        self.net = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:  # (B, M, C, S, S) -> (B, M, features)
        return self.net(images.flatten(0, 1)).mean(dim=(-2, -1)).view(*images.shape[:2], -1)


class LocalFeatures(nn.Module):
    """A 3x3 conv, ReLU and global average pooling of one layer's input activations."""

    def __init__(self, in_channels: int, features: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, features, 3, padding=1)

    def forward(self, activations: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(activations.flatten(0, 1))).mean(dim=(-2, -1)).view(*activations.shape[:2], -1)


def _away_from_zero(scale: torch.Tensor, floor: float = 1e-3) -> torch.Tensor:
    """``scale`` with magnitudes below ``floor`` raised to ``floor`` (sign kept): a safe divisor."""
    return torch.where(scale.abs() < floor, torch.where(scale < 0, -floor, floor), scale)


def encoder(width: int, heads: int, layers: int) -> nn.TransformerEncoder:
    """A post-LayerNorm softmax-attention encoder, inner width equal to the token width, no dropout."""
    layer = nn.TransformerEncoderLayer(width, heads, dim_feedforward=width, dropout=0.0, batch_first=True,
                                       norm_first=False)
    return nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)


class BatchNormParameters(nn.Module):
    """The learned BatchNorm scale and shift of every conv block."""

    def __init__(self, spec: CNNSpec) -> None:
        super().__init__()
        self.gammas = nn.ParameterList([nn.Parameter(torch.ones(spec.channels)) for _ in range(spec.conv_layers)])
        self.betas = nn.ParameterList([nn.Parameter(torch.zeros(spec.channels)) for _ in range(spec.conv_layers)])


class HyperTransformer(nn.Module):
    """Support set (and, for CHT, the previous task's weights) -> the target CNN's weights, layer by layer."""

    def __init__(self, settings: HTSettings, generator: torch.Generator | None = None) -> None:
        super().__init__()
        settings.validate()
        self.settings = settings
        spec = settings.cnn
        self.spec = spec
        self.bn = BatchNormParameters(spec)
        self.labels = nn.Embedding(settings.num_labels + 1, settings.label_dim)
        self.shared = SharedFeatures(spec.in_channels, settings.shared_features)
        shapes = spec.layer_tokens()
        generated = range(settings.trained_conv_layers, spec.num_layers)
        self.trained = nn.ParameterList([nn.Parameter(init_slices(*shapes[layer], generator))
                                         for layer in range(settings.trained_conv_layers)])
        self.placeholders = nn.ParameterList([nn.Parameter(torch.randn(shapes[layer][0], settings.label_dim,
                                                                       generator=generator)) for layer in generated])
        self.local = nn.ModuleList([LocalFeatures(spec.in_channels if layer == 0 else spec.channels,
                                                  settings.local_features) for layer in generated])
        self.transformers = nn.ModuleList([encoder(settings.token_width(shapes[layer][1]), settings.heads,
                                                   settings.transformer_layers) for layer in generated])
        # weights = scale * raw output, biases = bias scale * raw output: a generated layer starts like a
        # He-initialised one (fan-in scale, zero bias), so no ReLU starts dead
        self.log_scales = nn.Parameter(torch.tensor([-0.5 * math.log(shapes[layer][1] - 1.0) for layer in generated]))
        self.bias_scales = nn.Parameter(torch.zeros(len(generated)))

    def slice_scales(self, index: int, length: int) -> torch.Tensor:
        """Per-entry scales of a generated slice: the weight scale, and the bias scale for its last entry."""
        weight = self.log_scales[index].exp().expand(length - 1)
        return torch.cat([weight, self.bias_scales[index].view(1)])

    def placeholder_tokens(self, layer: int, index: int) -> torch.Tensor:
        """``mu`` of a layer's weight slices; a logits head's slice ``k`` is class ``k``'s, so (when
        ``tie_logits_placeholders``) its ``mu`` is class ``k``'s label embedding plus a learned offset."""
        mu = self.placeholders[index]
        if self.settings.tie_logits_placeholders and self.spec.head == "logits" and layer == self.spec.conv_layers:
            mu = mu + self.labels.weight[:self.spec.head_units]
        return mu

    def label_tokens(self, labels: torch.Tensor) -> torch.Tensor:
        return self.labels(torch.where(labels == UNLABELLED, torch.full_like(labels, self.settings.num_labels), labels))

    def generate(self, support_x: torch.Tensor, support_y: torch.Tensor,
                 previous: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
        """Weights ``[(B, tokens, slice)]`` of every layer from a support set ``(B, M, 1, S, S)``, labels ``(B, M)``.

        ``previous`` (the weights generated for the previous task) fills the placeholders' payload;
        ``None`` leaves it zero, as in HT.
        """
        batch = support_x.shape[0]
        shapes = self.spec.layer_tokens()
        shared = self.shared(support_x)
        labels = self.label_tokens(support_y)
        activations, weights = support_x, []
        first = self.settings.trained_conv_layers
        for layer, (tokens, length) in enumerate(shapes):
            if layer < first:
                layer_weights = self.trained[layer].expand(batch, tokens, length)
            else:
                index = layer - first
                width = self.settings.token_width(length)
                scale = self.slice_scales(index, length)
                features = torch.cat([labels, self.local[index](activations), shared], dim=-1)
                samples = nn.functional.pad(features, (0, width - features.shape[-1]))
                payload = (torch.zeros(batch, tokens, length, dtype=support_x.dtype, device=support_x.device)
                           if previous is None else previous[layer] / _away_from_zero(scale))
                mu = self.placeholder_tokens(layer, index).expand(batch, tokens, self.settings.label_dim)
                slots = nn.functional.pad(torch.cat([mu, payload], dim=-1), (0, width - self.settings.label_dim - length))
                out = self.transformers[index](torch.cat([slots, samples], dim=1))
                layer_weights = scale * out[:, :tokens, self.settings.label_dim:self.settings.label_dim + length]
            weights.append(layer_weights)
            if layer < self.spec.conv_layers:
                activations = conv_block(activations, layer_weights, self.bn.gammas[layer], self.bn.betas[layer])
        return weights


class TrainedCNN(nn.Module):
    """The target CNN with ordinary trained weights (ProtoNet's fixed embedding, "ConstPN")."""

    def __init__(self, spec: CNNSpec, generator: torch.Generator | None = None) -> None:
        super().__init__()
        spec.validate()
        self.spec = spec
        self.bn = BatchNormParameters(spec)
        self.slices = nn.ParameterList([nn.Parameter(init_slices(tokens, length, generator))
                                        for tokens, length in spec.layer_tokens()])

    def generate(self, support_x: torch.Tensor, support_y: torch.Tensor | None = None,
                 previous: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
        batch = support_x.shape[0]
        return [weights.expand(batch, *weights.shape) for weights in self.slices]


def generate_chain(model: nn.Module, supports: list[tuple[torch.Tensor, torch.Tensor]],
                   detach_between_tasks: bool = False) -> list[list[torch.Tensor]]:
    """CHT: ``theta_t = a(S_t, theta_{t-1})`` over a task sequence, ``theta_{-1}`` = zero payload (HT).

    ``detach_between_tasks`` cuts the gradient path through earlier weights (only for tests and
    ablations; training backpropagates through the whole chain).
    """
    chain: list[list[torch.Tensor]] = []
    previous = None
    for support_x, support_y in supports:
        weights = model.generate(support_x, support_y, previous)
        chain.append(weights)
        previous = [w.detach() for w in weights] if detach_between_tasks else weights
    return chain
