"""How closely a trained in-context learner matches gradient descent (paper §3, Fig. 2).

The paper compares a trained Transformer with GD by (i) the difference of their predictions,
(ii) the cosine similarity of their input sensitivities ``d y_hat / d x_query`` (the "implicit
linear model" each one applies to the query) and (iii) the learned weight products after a scale
correction, against the Prop. 1 construction.

For sequence models (Uncovering mesa-optimization algorithms in Transformers, §4) the same
comparison is made on the Jacobians ``d pred_t / d s_t`` of the next-state prediction at position
``t`` with respect to the current state (:func:`state_sensitivity_cosine`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from learnlab.incontext.attention import LinearSelfAttention

PredictFn = Callable[[torch.Tensor], torch.Tensor]


def prediction_difference(prediction_a: torch.Tensor, prediction_b: torch.Tensor) -> torch.Tensor:
    """Mean over tasks of ``|a - b|`` (a 0-dim tensor).

    The paper reports the L2 norm of the difference over its test batch; the mean absolute
    difference is used here because it does not grow with the batch size.
    """
    if prediction_a.shape != prediction_b.shape:
        raise ValueError(f"shapes differ: {tuple(prediction_a.shape)} vs {tuple(prediction_b.shape)}")
    return (prediction_a - prediction_b).abs().mean()


def input_sensitivities(predict_fn: PredictFn, tokens: torch.Tensor) -> torch.Tensor:
    """``d y_hat / d x_query`` per task, ``(B, d)``, via autograd (paper §3).

    One backward pass on the sum of the predictions suffices because tasks do not interact in the
    model (no batch statistics), so the gradient of the sum w.r.t. task ``b``'s query input is
    task ``b``'s own sensitivity. Gradients of the model's parameters are not touched.
    """
    with torch.enable_grad():
        tokens = tokens.detach().clone().requires_grad_(True)
        predictions = predict_fn(tokens)
        (gradient,) = torch.autograd.grad(predictions.sum(), tokens)
    return gradient[:, -1, :-1]


def sensitivity_cosine(predict_a: PredictFn, predict_b: PredictFn, tokens: torch.Tensor) -> torch.Tensor:
    """Mean over tasks of the cosine similarity of the two models' input sensitivities."""
    sensitivity_a = input_sensitivities(predict_a, tokens)
    sensitivity_b = input_sensitivities(predict_b, tokens)
    return torch.nn.functional.cosine_similarity(sensitivity_a, sensitivity_b, dim=-1).mean()


def sensitivity_distance(predict_a: PredictFn, predict_b: PredictFn, tokens: torch.Tensor) -> torch.Tensor:
    """Mean over tasks of the L2 distance between the two models' input sensitivities."""
    sensitivity_a = input_sensitivities(predict_a, tokens)
    sensitivity_b = input_sensitivities(predict_b, tokens)
    return (sensitivity_a - sensitivity_b).norm(dim=-1).mean()


def state_jacobians(predict_states: PredictFn, states: torch.Tensor, position: int) -> torch.Tensor:
    """``d pred_t / d s_t`` per sequence, ``(B, D, D)``, for a predictor of states ``(B, T, D) -> (B, T, D)``.

    ``s_t`` is varied in every role it plays in the input (the current state of position ``t`` and
    the previous state of later positions, which cannot influence position ``t`` in a causal model).
    """
    with torch.enable_grad():
        states = states.detach().clone().requires_grad_(True)
        predictions = predict_states(states)[:, position]
        rows = []
        for index in range(predictions.shape[-1]):
            (gradient,) = torch.autograd.grad(predictions[:, index].sum(), states, retain_graph=True)
            rows.append(gradient[:, position])
    return torch.stack(rows, dim=1)


def state_sensitivity_cosine(predict_a: PredictFn, predict_b: PredictFn, states: torch.Tensor,
                             positions: tuple[int, ...]) -> float:
    """Mean over ``positions`` and sequences of the cosine between two predictors' ``d pred_t / d s_t``."""
    cosines = []
    for position in positions:
        jacobian_a = state_jacobians(predict_a, states, position)
        jacobian_b = state_jacobians(predict_b, states, position)
        cosines.append(torch.nn.functional.cosine_similarity(jacobian_a.flatten(1), jacobian_b.flatten(1), dim=-1).mean())
    return float(torch.stack(cosines).mean())


@dataclass
class ScaleCorrectedProducts:
    """Weight products of a single-head layer after removing the ``(s PW_V, W_K^T W_Q / s)`` symmetry.

    Attributes:
        key_query: ``W_K^T W_Q / scale``, ``(D, D)``; its x-block should be ``I`` for GD.
        value_projection: ``P W_V * scale``, ``(D, D)``; its y-row should be ``(0, ..., 0, -eta/N)``.
        scale: the mean of the x-block diagonal of ``W_K^T W_Q`` before correction.
        dim: ``d``.
    """

    key_query: torch.Tensor
    value_projection: torch.Tensor
    scale: float
    dim: int

    @property
    def eta_over_n(self) -> float:
        """The effective step size ``eta_eff / N = -(corrected P W_V)[y, y]``."""
        return float(-self.value_projection[self.dim, self.dim])

    def relative_error_to_construction(self, eta_over_n: float | None = None) -> float:
        """Relative Frobenius error of the prediction-relevant entries against Prop. 1.

        Compares ``key_query[:, :d]`` with ``[[I_d], [0]]`` and the y-row of ``value_projection``
        with ``(0, ..., 0, -eta/N)``, and divides by the norm of those construction entries.
        Only these entries reach a one-layer prediction: the query enters as ``(x_query, 0)``, so
        only the first ``d`` columns of ``W_K^T W_Q`` act on it, and the readout is the query's
        y-slot, so only the y-row of ``P W_V`` matters (its x-rows change the x-slots only).

        Args:
            eta_over_n: the construction's ``eta / N``; default :attr:`eta_over_n`,
                which measures the shape of the products alone.
        """
        d = self.dim
        eta_over_n = self.eta_over_n if eta_over_n is None else eta_over_n
        key_query = self.key_query.detach().to(torch.float64)
        y_row = self.value_projection.detach().to(torch.float64)[d]
        target_key_query = torch.zeros_like(key_query[:, :d])
        target_key_query[:d] = torch.eye(d, dtype=torch.float64, device=key_query.device)
        target_y_row = torch.zeros_like(y_row)
        target_y_row[d] = -eta_over_n
        error_sq = (key_query[:, :d] - target_key_query).pow(2).sum() + (y_row - target_y_row).pow(2).sum()
        norm_sq = target_key_query.pow(2).sum() + target_y_row.pow(2).sum()
        return float((error_sq / norm_sq).sqrt())


def scale_corrected_products(
    layer_or_products: LinearSelfAttention | tuple[torch.Tensor, torch.Tensor],
    dim: int,
) -> ScaleCorrectedProducts:
    """Scale-correct a single-head layer's ``(W_K^T W_Q, P W_V)`` (paper §3, Fig. 2 right).

    ``M = W_K^T W_Q`` is divided by ``s``, the mean of its x-block diagonal, and ``P W_V`` is
    multiplied by ``s`` — the same model, since only ``P W_V (...) W_K^T W_Q`` enters the update.
    (The paper's check multiplies only the y-row of ``P W_V``; the whole matrix is scaled here,
    which leaves that row identical.)

    Args:
        layer_or_products: a one-head :class:`LinearSelfAttention`, or ``(M, P W_V)`` as
            ``(D, D)`` or ``(1, D, D)`` tensors (e.g. from :meth:`LinearSelfAttention.weight_products`).
        dim: ``d`` (so ``D = d + 1``).
    """
    if isinstance(layer_or_products, LinearSelfAttention):
        key_query, value_projection = layer_or_products.weight_products()
    else:
        key_query, value_projection = layer_or_products
    key_query, value_projection = key_query.detach(), value_projection.detach()
    if key_query.dim() == 3:
        if key_query.shape[0] != 1:
            raise ValueError("scale correction needs a single-head layer")
        key_query, value_projection = key_query[0], value_projection[0]
    if key_query.shape != (dim + 1, dim + 1) or value_projection.shape != (dim + 1, dim + 1):
        raise ValueError(f"products must be ({dim + 1}, {dim + 1}), got {tuple(key_query.shape)}")
    scale = float(torch.diagonal(key_query)[:dim].mean())
    if scale == 0.0:
        raise ValueError("the x-block diagonal of W_K^T W_Q averages to 0; cannot scale-correct")
    return ScaleCorrectedProducts(
        key_query=key_query / scale,
        value_projection=value_projection * scale,
        scale=scale,
        dim=dim,
    )
