"""The algorithm a trained DIAG linear transformer implements (Vladymyrov et al. 2024, §4, §5).

**Coefficients.** A DIAG layer is fully described by four numbers (proof of Lemma A.1), see
:func:`learnlab.incontext.linear_transformer_variants.omega_form_update`::

    x_i <- x_i + omega_xx Sigma x_i + omega_xy y_i alpha         Sigma = sum_j x_j x_j^T
    y_i <- y_i + omega_yx <alpha, x_i> + omega_yy lambda y_i      alpha = sum_j y_j x_j, lambda = sum_j y_j^2

(sums over the context tokens at the current layer). :func:`extract_omegas` reads them off a model.

**The implicit linear model (Thm 4.1).** Every token stays a linear function of its *input* data
``(x_i, y_i)``, with coefficients shared by all tokens, query included::

    y-slot_i = a y_i - <w, x_i>,      x-slot_i = M x_i + u y_i.

At the start ``a = 1, w = 0, M = I, u = 0``. The context y-slots ``r_j = a y_j - <w, x_j>`` are the
residuals of the current linear model ``w``, and since the query starts with ``y = 0`` the prediction
after ``L`` layers is ``-y-slot_query = <w^L, x_query>``. Substituting into the omega form gives the
explicit algorithm of :class:`ExtractedAlgorithm` (our derivation, exact; it is the paper's Lemma 4.3
/ 4.4 picture written for one head and any depth)::

    r_j = a y_j - <w, x_j>,   x~_j = M x_j + u y_j                 residuals and current features
    g = sum_j r_j x~_j,  S = sum_j x~_j x~_j^T,  lambda = sum_j r_j^2
    w <- (1 + omega_yy lambda) w - omega_yx M^T g                  (1) preconditioned GD step on w,
                                                                       (2) adaptive rescaling
    a <- (1 + omega_yy lambda) a + omega_yx <u, g>
    M <- (I + omega_xx S) M - omega_xy g w_old^T                   (3) preconditioner update
    u <- (I + omega_xx S) u + omega_xy a_old g                     (4) momentum: u accumulates gradients

* ``omega_yx`` is minus the step size; ``M^T g = M^T M X^T r + M^T u <y, r>`` is a gradient step
  preconditioned by ``Gamma = M^T M`` plus a term along the accumulated past gradients ``M^T u``
  (momentum-like, Lemma 4.3/4.4);
* ``omega_xx`` builds the preconditioner ``M`` (GD++: ``x <- (I + omega_xx Sigma) x``, Thm 5.1);
* ``omega_yy`` rescales the model by ``1 + omega_yy sum_j r_j^2``: it shrinks more when the residuals
  are large, i.e. when the sequence is noisy (adaptive rescaling, Thm 5.2);
* ``omega_xy`` feeds the gradient back into the features, which makes the effective step size depend
  on the residual size (noise-adaptive step, §5).

GD++ is the case ``omega_xy = omega_yy = 0`` (then ``u = 0`` and ``a = 1`` throughout).

:func:`check_extraction` runs the algorithm against the model it was read from and measures how much
the adaptive rescaling ``omega_yy`` is used.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from learnlab.incontext.linear_transformer_variants import OMEGA_NAMES, LinearTransformer
from learnlab.incontext.regression import RegressionBatch


@dataclass(frozen=True)
class LayerOmegas:
    """The four coefficients of one DIAG layer (summed over heads)."""

    omega_xx: float
    omega_xy: float
    omega_yx: float
    omega_yy: float

    def as_tensor(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        return torch.tensor([self.omega_xx, self.omega_xy, self.omega_yx, self.omega_yy], dtype=dtype)


def extract_omegas(model: LinearTransformer, model_index: int = 0) -> list[LayerOmegas]:
    """Per-layer ``omega`` coefficients of one model of a DIAG or GD++ :class:`LinearTransformer`."""
    with torch.no_grad():
        omegas = model.omegas()[model_index].double().cpu()
    return [LayerOmegas(*(float(value) for value in row)) for row in omegas]


@dataclass
class AlgorithmTrace:
    """What :meth:`ExtractedAlgorithm.run` computes.

    Attributes:
        prediction: ``<w^L, x_query>``, ``(B,)``.
        weights: the implicit linear model ``w^l`` after every layer, ``(L, B, d)``.
        residual_norms: ``lambda^l = sum_j r_j^2`` at every layer's input, ``(L, B)``.
        rescaling: the adaptive factors ``1 + omega_yy lambda^l``, ``(L, B)``.
    """

    prediction: torch.Tensor
    weights: torch.Tensor
    residual_norms: torch.Tensor
    rescaling: torch.Tensor
    extras: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ExtractedAlgorithm:
    """The explicit algorithm of a DIAG model's omega coefficients (see the module docstring)."""

    layers: tuple[LayerOmegas, ...]

    @classmethod
    def from_model(cls, model: LinearTransformer, model_index: int = 0) -> "ExtractedAlgorithm":
        return cls(tuple(extract_omegas(model, model_index)))

    def describe(self) -> str:
        """One line per layer with its coefficients."""
        return "\n".join(
            f"layer {index + 1}: " + ", ".join(f"{name}={getattr(layer, name):+.4g}" for name in OMEGA_NAMES)
            for index, layer in enumerate(self.layers)
        )

    def run(self, x: torch.Tensor, y: torch.Tensor, x_query: torch.Tensor) -> AlgorithmTrace:
        """Run the algorithm on context ``x (B, n, d)``, ``y (B, n)`` and queries ``x_query (B, d)``."""
        batch, _, dim = x.shape
        eye = torch.eye(dim, dtype=x.dtype, device=x.device)
        a = torch.ones(batch, dtype=x.dtype, device=x.device)
        w = torch.zeros(batch, dim, dtype=x.dtype, device=x.device)
        M = eye.expand(batch, dim, dim).clone()
        u = torch.zeros(batch, dim, dtype=x.dtype, device=x.device)
        weights, norms, factors = [], [], []
        for layer in self.layers:
            residuals = a.unsqueeze(-1) * y - (x @ w.unsqueeze(-1)).squeeze(-1)  # r_j: context y-slots
            features = x @ M.transpose(-1, -2) + y.unsqueeze(-1) * u.unsqueeze(-2)  # x~_j: context x-slots
            gradient = (features * residuals.unsqueeze(-1)).sum(-2)  # g = sum_j r_j x~_j
            second_moment = features.transpose(-1, -2) @ features  # S = sum_j x~_j x~_j^T
            residual_norm = residuals.pow(2).sum(-1)  # lambda = sum_j r_j^2
            rescale = 1.0 + layer.omega_yy * residual_norm  # adaptive rescaling
            preconditioner = eye + layer.omega_xx * second_moment
            new_w = rescale.unsqueeze(-1) * w - layer.omega_yx * (M.transpose(-1, -2) @ gradient.unsqueeze(-1)).squeeze(-1)
            new_a = rescale * a + layer.omega_yx * (u * gradient).sum(-1)
            new_M = preconditioner @ M - layer.omega_xy * gradient.unsqueeze(-1) * w.unsqueeze(-2)
            new_u = (preconditioner @ u.unsqueeze(-1)).squeeze(-1) + layer.omega_xy * a.unsqueeze(-1) * gradient
            a, w, M, u = new_a, new_w, new_M, new_u
            weights.append(w)
            norms.append(residual_norm)
            factors.append(rescale)
        prediction = (w * x_query).sum(-1)
        return AlgorithmTrace(prediction, torch.stack(weights), torch.stack(norms), torch.stack(factors))

    def predict(self, x: torch.Tensor, y: torch.Tensor, x_query: torch.Tensor) -> torch.Tensor:
        return self.run(x, y, x_query).prediction

    def without(self, *names: str) -> "ExtractedAlgorithm":
        """The algorithm with the named coefficients set to zero in every layer (ablations)."""
        return ExtractedAlgorithm(tuple(
            LayerOmegas(**{name: (0.0 if name in names else getattr(layer, name)) for name in OMEGA_NAMES})
            for layer in self.layers
        ))


@dataclass(frozen=True)
class ExtractionCheck:
    """A DIAG model's extracted algorithm run against the model on one batch (:func:`check_extraction`).

    Attributes:
        algorithm: the algorithm read off the model.
        max_abs_error: largest ``|algorithm - model|`` prediction gap (the model's moment readout).
        token_path_max_abs_error: the same against minus the query's y-slot after a token forward pass.
        prediction_scale: the largest ``|model prediction|`` (what the errors compare with).
        omega_yy_rescaling: ``|omega_yy lambda^l|`` averaged over sequences, at the layer where it is
            largest: how much the adaptive rescaling ``1 + omega_yy lambda^l`` moves the implicit model.
        loss_with_omega_yy: ½·MSE of the algorithm on the noise-free query labels.
        loss_without_omega_yy: the same with ``omega_yy = 0`` in every layer (the ablation).
    """

    algorithm: ExtractedAlgorithm
    max_abs_error: float
    token_path_max_abs_error: float
    prediction_scale: float
    omega_yy_rescaling: float
    loss_with_omega_yy: float
    loss_without_omega_yy: float


def check_extraction(model: LinearTransformer, batch: RegressionBatch) -> ExtractionCheck:
    """Extract the algorithm of a single DIAG ``model`` and run both on ``batch``."""
    algorithm = ExtractedAlgorithm.from_model(model)
    tokens = batch.tokens()
    with torch.no_grad():
        model_prediction = model.predict(tokens)
        token_prediction = -model(tokens)[:, -1, -1]
        trace = algorithm.run(batch.x, batch.y, batch.x_query)
        no_rescaling = algorithm.without("omega_yy").predict(batch.x, batch.y, batch.x_query)
    target = batch.y_query
    return ExtractionCheck(
        algorithm=algorithm,
        max_abs_error=(trace.prediction - model_prediction).abs().max().item(),
        token_path_max_abs_error=(trace.prediction - token_prediction).abs().max().item(),
        prediction_scale=model_prediction.abs().max().item(),
        omega_yy_rescaling=(trace.rescaling - 1).abs().mean(-1).max().item(),
        loss_with_omega_yy=0.5 * (trace.prediction - target).pow(2).mean().item(),
        loss_without_omega_yy=0.5 * (no_rescaling - target).pow(2).mean().item(),
    )
