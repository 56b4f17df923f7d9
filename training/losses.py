"""The diffusion training loss PixArt-alpha trains with: noise prediction plus a learned variance (IDDPM hybrid loss).

Ported from OpenAI's improved-diffusion (IDDPM, https://github.com/openai/improved-diffusion, MIT licence:
``improved_diffusion/gaussian_diffusion.py`` and ``losses.py``), in the form DiT (``diffusion/gaussian_diffusion.py``)
and PixArt-alpha (``diffusion/model/gaussian_diffusion.py``) carry it. What is kept is exactly what PixArt's
``IDDPM(learn_sigma=True, pred_sigma=True)`` trains with: the linear beta schedule over 1000 steps,
``ModelMeanType.EPSILON``, ``ModelVarType.LEARNED_RANGE`` and ``LossType.MSE`` (no rescaling of the VLB term)::

    loss = mean((eps - eps_pred) ** 2) + L_vlb(mean = stop_gradient(mean from eps_pred), variance from v_pred)

The VLB term trains only the variance channels (the mean is detached, "Learn the variance using the variational
bound, but don't let it affect our mean prediction"). The schedule is held in float64 as in the original and cast
when gathered. Sampling code is not ported: inference uses diffusers schedulers (DPM-Solver++).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = [
    "GaussianDiffusion",
    "HybridLoss",
    "approx_standard_normal_cdf",
    "discretized_gaussian_log_likelihood",
    "linear_beta_schedule",
    "mean_flat",
    "normal_kl",
]


def linear_beta_schedule(num_timesteps: int = 1000) -> torch.Tensor:
    """IDDPM's ``get_named_beta_schedule("linear", n)``: Ho et al.'s schedule, scaled to work for any number of steps
    (1e-4 .. 2e-2 for 1000 steps; the same schedule diffusers' PixArt pipelines use)."""
    if isinstance(num_timesteps, bool) or not isinstance(num_timesteps, int) or num_timesteps < 2:
        raise ValueError(f"num_timesteps: expected an integer >= 2, got {num_timesteps!r}")
    scale = 1000 / num_timesteps
    return torch.linspace(scale * 0.0001, scale * 0.02, num_timesteps, dtype=torch.float64)


def mean_flat(tensor: torch.Tensor) -> torch.Tensor:
    """Mean over all non-batch dimensions."""
    return tensor.mean(dim=tuple(range(1, tensor.ndim)))


def normal_kl(mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor, logvar2: torch.Tensor) -> torch.Tensor:
    """KL divergence between two Gaussians, elementwise (``diffusion_utils.normal_kl``)."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def approx_standard_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    """A fast approximation of the standard normal CDF (``diffusion_utils.approx_standard_normal_cdf``)."""
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3))))


def discretized_gaussian_log_likelihood(
    x: torch.Tensor, *, means: torch.Tensor, log_scales: torch.Tensor
) -> torch.Tensor:
    """Log-likelihood of ``x`` (in [-1, 1], 256 bins) under a discretised Gaussian, elementwise, in nats
    (``diffusion_utils.discretized_gaussian_log_likelihood``). PixArt applies it to latents as well (at t = 0)."""
    if not x.shape == means.shape == log_scales.shape:
        raise ValueError(f"x/means/log_scales: shapes differ: {tuple(x.shape)}, {tuple(means.shape)}, "
                         f"{tuple(log_scales.shape)}")
    centered_x = x - means
    inv_stdv = torch.exp(-log_scales)
    plus_in = inv_stdv * (centered_x + 1.0 / 255.0)
    cdf_plus = approx_standard_normal_cdf(plus_in)
    min_in = inv_stdv * (centered_x - 1.0 / 255.0)
    cdf_min = approx_standard_normal_cdf(min_in)
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    cdf_delta = cdf_plus - cdf_min
    return torch.where(
        x < -0.999,
        log_cdf_plus,
        torch.where(x > 0.999, log_one_minus_cdf_min, torch.log(cdf_delta.clamp(min=1e-12))),
    )


@dataclass
class HybridLoss:
    """Per-sample terms of :meth:`GaussianDiffusion.training_losses` (each ``(B,)``): ``loss = mse + vb``."""

    loss: torch.Tensor
    mse: torch.Tensor
    vb: torch.Tensor


class GaussianDiffusion:
    """The forward process and the hybrid training loss of IDDPM/DiT/PixArt (see the module docstring).

    Args:
        num_timesteps: diffusion steps (PixArt: 1000).
        learn_sigma: the model predicts ``2 * C`` channels (the prediction, then the variance interpolation ``v`` in
            [-1, 1]); otherwise ``C`` channels and the loss is the plain MSE.
        prediction_type: what the first ``C`` channels predict, with diffusers' scheduler names: ``"epsilon"`` (the
            noise, PixArt-alpha) or ``"v_prediction"`` (``v = sqrt(abar) eps - sqrt(1 - abar) x_0``, Salimans & Ho
            2022). Measured in x_0 terms the epsilon loss weighs timestep t by SNR(t), v by SNR(t) + 1, so v keeps
            a learning signal at high noise, where a story's layout, scene and colours are decided; the MSE is on
            the prediction, and the variance term converts it to the noise first (the mean stays detached).
    """

    PREDICTION_TYPES = ("epsilon", "v_prediction")

    def __init__(self, num_timesteps: int = 1000, *, learn_sigma: bool = True,
                 prediction_type: str = "epsilon") -> None:
        if prediction_type not in self.PREDICTION_TYPES:
            raise ValueError(f"prediction_type: expected one of {self.PREDICTION_TYPES}, got {prediction_type!r}")
        betas = linear_beta_schedule(num_timesteps)
        self.num_timesteps = num_timesteps
        self.learn_sigma = bool(learn_sigma)
        self.prediction_type = prediction_type
        self.betas = betas
        alphas = 1.0 - betas
        self.alphas_cumprod = torch.cumprod(alphas, dim=0)
        self.alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod[:-1]])
        self.sqrt_alphas_cumprod = torch.sqrt(self.alphas_cumprod)
        self.sqrt_one_minus_alphas_cumprod = torch.sqrt(1.0 - self.alphas_cumprod)
        self.sqrt_recip_alphas_cumprod = torch.sqrt(1.0 / self.alphas_cumprod)
        self.sqrt_recipm1_alphas_cumprod = torch.sqrt(1.0 / self.alphas_cumprod - 1)
        # calculations for the posterior q(x_{t-1} | x_t, x_0)
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        # log calculation clipped because the posterior variance is 0 at the beginning of the chain
        self.posterior_log_variance_clipped = torch.log(
            torch.cat([self.posterior_variance[1:2], self.posterior_variance[1:]]))
        self.posterior_mean_coef1 = betas * torch.sqrt(self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef2 = (1.0 - self.alphas_cumprod_prev) * torch.sqrt(alphas) / (1.0 - self.alphas_cumprod)
        self.log_betas = torch.log(betas)

    @staticmethod
    def _extract(table: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """``table[t]`` broadcast to ``like``'s shape (``_extract_into_tensor``), in ``like``'s dtype and device."""
        values = table.to(t.device)[t].to(like.dtype)
        return values.view(-1, *([1] * (like.ndim - 1))).expand_as(like)

    def _check_t(self, t: torch.Tensor, batch: int) -> None:
        if t.ndim != 1 or t.shape[0] != batch:
            raise ValueError(f"t: expected shape ({batch},), got {tuple(t.shape)}")
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= self.num_timesteps):
            raise ValueError(f"t: timesteps must lie in [0, {self.num_timesteps}), got {int(t.min())}..{int(t.max())}")

    def q_sample(self, x_start: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Diffuse ``x_start`` to step ``t``: ``sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise``."""
        self._check_t(t, x_start.shape[0])
        return (self._extract(self.sqrt_alphas_cumprod, t, x_start) * x_start
                + self._extract(self.sqrt_one_minus_alphas_cumprod, t, x_start) * noise)

    def q_posterior_mean_variance(self, x_start: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor):
        """Mean, variance and clipped log-variance of ``q(x_{t-1} | x_t, x_0)``."""
        mean = (self._extract(self.posterior_mean_coef1, t, x_t) * x_start
                + self._extract(self.posterior_mean_coef2, t, x_t) * x_t)
        variance = self._extract(self.posterior_variance, t, x_t)
        log_variance = self._extract(self.posterior_log_variance_clipped, t, x_t)
        return mean, variance, log_variance

    def v_target(self, x_start: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """``v = sqrt(abar_t) noise - sqrt(1 - abar_t) x_0`` (diffusers' ``get_velocity``)."""
        return (self._extract(self.sqrt_alphas_cumprod, t, x_start) * noise
                - self._extract(self.sqrt_one_minus_alphas_cumprod, t, x_start) * x_start)

    def eps_from_v(self, x_t: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """The noise a v-prediction implies: ``sqrt(abar_t) v + sqrt(1 - abar_t) x_t``."""
        return (self._extract(self.sqrt_alphas_cumprod, t, x_t) * v
                + self._extract(self.sqrt_one_minus_alphas_cumprod, t, x_t) * x_t)

    def predict_xstart_from_eps(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        return (self._extract(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t
                - self._extract(self.sqrt_recipm1_alphas_cumprod, t, x_t) * eps)

    def p_mean_log_variance(self, eps: torch.Tensor, var_values: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor):
        """``p_mean_variance`` for ``LEARNED_RANGE`` / ``EPSILON`` without clipping: the model's mean and
        log-variance of ``p(x_{t-1} | x_t)``; the log-variance interpolates between the posterior's (min) and
        ``log beta_t`` (max) with ``frac = (v + 1) / 2``."""
        min_log = self._extract(self.posterior_log_variance_clipped, t, x_t)
        max_log = self._extract(self.log_betas, t, x_t)
        frac = (var_values + 1) / 2
        log_variance = frac * max_log + (1 - frac) * min_log
        pred_xstart = self.predict_xstart_from_eps(x_t, t, eps)
        mean, _, _ = self.q_posterior_mean_variance(pred_xstart, x_t, t)
        return mean, log_variance

    def vb_terms_bpd(self, eps: torch.Tensor, var_values: torch.Tensor, x_start: torch.Tensor, x_t: torch.Tensor,
                     t: torch.Tensor) -> torch.Tensor:
        """``_vb_terms_bpd``: per-sample VLB term in bits per dimension (KL for t > 0, decoder NLL at t = 0)."""
        true_mean, _, true_log_variance = self.q_posterior_mean_variance(x_start, x_t, t)
        mean, log_variance = self.p_mean_log_variance(eps, var_values, x_t, t)
        kl = mean_flat(normal_kl(true_mean, true_log_variance, mean, log_variance)) / math.log(2.0)
        decoder_nll = -discretized_gaussian_log_likelihood(x_start, means=mean, log_scales=0.5 * log_variance)
        decoder_nll = mean_flat(decoder_nll) / math.log(2.0)
        return torch.where(t == 0, decoder_nll, kl)

    def training_losses(self, model_output: torch.Tensor, x_start: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor,
                        noise: torch.Tensor, weight: torch.Tensor | None = None) -> HybridLoss:
        """The per-sample hybrid loss for a model output at ``(x_t, t)`` (``training_losses`` with ``LossType.MSE``).

        ``model_output`` is ``(B, 2C, ...)`` (eps, variance values) when ``learn_sigma``, else ``(B, C, ...)``. The
        loss is computed in float32 whatever the model's dtype. ``weight`` (broadcastable to ``x_start``, e.g.
        ``(B, 1, H, W)``, positive) makes the MSE a weighted mean per sample (uniform weights: the plain MSE); the
        variance term stays unweighted.
        """
        self._check_t(t, x_start.shape[0])
        channels = x_start.shape[1]
        expected = 2 * channels if self.learn_sigma else channels
        if model_output.shape[0] != x_start.shape[0] or model_output.shape[1] != expected or \
                model_output.shape[2:] != x_start.shape[2:]:
            raise ValueError(f"model_output: expected shape {(x_start.shape[0], expected, *x_start.shape[2:])}, got "
                             f"{tuple(model_output.shape)}")
        model_output = model_output.float()
        x_start, x_t, noise = x_start.float(), x_t.float(), noise.float()
        if self.learn_sigma:
            pred, var_values = model_output.split(channels, dim=1)
        else:
            pred, var_values = model_output, None
        if self.prediction_type == "v_prediction":
            target, eps = self.v_target(x_start, t, noise), self.eps_from_v(x_t, t, pred)
        else:
            target, eps = noise, pred
        if var_values is not None:
            # learn the variance with the variational bound, without letting it affect the mean prediction
            vb = self.vb_terms_bpd(eps.detach(), var_values, x_start, x_t, t)
        else:
            vb = torch.zeros(x_start.shape[0], device=x_start.device)
        if weight is None:
            mse = mean_flat((target - pred) ** 2)
        else:
            weight = weight.float().expand_as(target)
            mse = mean_flat(weight * (target - pred) ** 2) / mean_flat(weight)
        return HybridLoss(loss=mse + vb, mse=mse, vb=vb)
