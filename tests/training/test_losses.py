"""The IDDPM hybrid loss: schedule equals diffusers', VLB is zero for a perfect model, gradients are split right."""

from __future__ import annotations

import math

import pytest
import torch

from training.losses import GaussianDiffusion, discretized_gaussian_log_likelihood, linear_beta_schedule, normal_kl


def test_schedule_and_q_sample_match_diffusers_ddpm():
    from diffusers import DDPMScheduler

    diffusion = GaussianDiffusion(1000)
    ref = DDPMScheduler(num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02, beta_schedule="linear")
    torch.testing.assert_close(diffusion.alphas_cumprod.float(), ref.alphas_cumprod, rtol=1e-5, atol=1e-7)
    gen = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(4, 4, 6, 6, generator=gen), torch.randn(4, 4, 6, 6, generator=gen)
    t = torch.tensor([0, 10, 500, 999])
    torch.testing.assert_close(diffusion.q_sample(x0, t, noise), ref.add_noise(x0, noise, t), rtol=1e-4, atol=1e-5)


def test_linear_schedule_scales_with_step_count():
    assert linear_beta_schedule(1000)[0].item() == pytest.approx(1e-4)
    assert linear_beta_schedule(1000)[-1].item() == pytest.approx(0.02)
    assert linear_beta_schedule(100)[-1].item() == pytest.approx(0.2)
    with pytest.raises(ValueError, match="num_timesteps"):
        linear_beta_schedule(1)


def test_perfect_model_has_zero_mse_and_kl():
    """eps = the true noise and v = -1 (the true posterior variance) make every KL term vanish."""
    diffusion = GaussianDiffusion(1000)
    gen = torch.Generator().manual_seed(1)
    x0, noise = torch.randn(3, 4, 5, 5, generator=gen), torch.randn(3, 4, 5, 5, generator=gen)
    t = torch.tensor([1, 400, 999])
    x_t = diffusion.q_sample(x0, t, noise)
    perfect = torch.cat([noise, -torch.ones_like(noise)], dim=1)
    out = diffusion.training_losses(perfect, x0, x_t, t, noise)
    assert torch.allclose(out.mse, torch.zeros(3), atol=1e-10)
    assert torch.allclose(out.vb, torch.zeros(3), atol=1e-3)
    # beta_t instead of the posterior variance: clearly wrong early in the chain (they converge for large t)
    wrong_var = torch.cat([noise, torch.ones_like(noise)], dim=1)
    early = torch.tensor([1, 2, 3])
    x_early = diffusion.q_sample(x0, early, noise)
    assert (diffusion.training_losses(wrong_var, x0, x_early, early, noise).vb > 1e-2).all()


def test_t0_uses_the_decoder_nll():
    diffusion = GaussianDiffusion(1000)
    x0 = torch.rand(1, 4, 4, 4) * 2 - 1
    noise = torch.randn(1, 4, 4, 4)
    t = torch.tensor([0])
    x_t = diffusion.q_sample(x0, t, noise)
    out = diffusion.training_losses(torch.cat([noise, torch.zeros_like(noise)], 1), x0, x_t, t, noise)
    mean, log_var = diffusion.p_mean_log_variance(noise, torch.zeros_like(noise), x_t, t)
    nll = -discretized_gaussian_log_likelihood(x0, means=mean, log_scales=0.5 * log_var).mean() / math.log(2.0)
    assert out.vb.item() == pytest.approx(nll.item(), rel=1e-5)


def test_vb_trains_only_the_variance_and_mse_only_the_mean():
    diffusion = GaussianDiffusion(1000)
    gen = torch.Generator().manual_seed(2)
    x0, noise = torch.randn(2, 4, 4, 4, generator=gen), torch.randn(2, 4, 4, 4, generator=gen)
    t = torch.tensor([300, 700])
    x_t = diffusion.q_sample(x0, t, noise)
    out = torch.randn(2, 8, 4, 4, generator=gen, requires_grad=True)
    losses = diffusion.training_losses(out, x0, x_t, t, noise)
    (grad_vb,) = torch.autograd.grad(losses.vb.sum(), out, retain_graph=True)
    (grad_mse,) = torch.autograd.grad(losses.mse.sum(), out)
    assert grad_vb[:, :4].abs().max() == 0 and grad_vb[:, 4:].abs().max() > 0  # stop-gradient on the mean
    assert grad_mse[:, 4:].abs().max() == 0 and grad_mse[:, :4].abs().max() > 0
    torch.testing.assert_close(losses.loss, losses.mse + losses.vb)


def test_normal_kl_is_zero_for_equal_gaussians_and_positive_otherwise():
    m, lv = torch.randn(10), torch.randn(10)
    assert torch.allclose(normal_kl(m, lv, m, lv), torch.zeros(10), atol=1e-6)
    assert (normal_kl(m, lv, m + 1, lv) > 0).all()


def test_bad_shapes_and_timesteps_name_the_argument():
    diffusion = GaussianDiffusion(10)
    x = torch.zeros(2, 4, 2, 2)
    with pytest.raises(ValueError, match="model_output"):
        diffusion.training_losses(torch.zeros(2, 4, 2, 2), x, x, torch.tensor([1, 2]), x)
    with pytest.raises(ValueError, match="t: timesteps"):
        diffusion.q_sample(x, torch.tensor([0, 10]), x)


def test_v_prediction_matches_epsilon_when_both_are_exact():
    """A perfect v-prediction gives zero MSE and the same variance term as a perfect noise prediction, and v
    converts back to the noise exactly (the pipeline's scheduler does the same with prediction_type=v_prediction)."""
    gen = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(6, 4, 4, 4, generator=gen), torch.randn(6, 4, 4, 4, generator=gen)
    var = torch.rand(6, 4, 4, 4, generator=gen) * 2 - 1
    t = torch.tensor([0, 1, 100, 500, 900, 999])
    eps_d = GaussianDiffusion(1000, learn_sigma=True)
    v_d = GaussianDiffusion(1000, learn_sigma=True, prediction_type="v_prediction")
    x_t = eps_d.q_sample(x0, t, noise)
    v = v_d.v_target(x0, t, noise)
    torch.testing.assert_close(v_d.eps_from_v(x_t, t, v), noise, atol=1e-5, rtol=1e-5)
    by_eps = eps_d.training_losses(torch.cat([noise, var], 1), x0, x_t, t, noise)
    by_v = v_d.training_losses(torch.cat([v, var], 1), x0, x_t, t, noise)
    assert float(by_v.mse.abs().max()) < 1e-10
    torch.testing.assert_close(by_v.vb, by_eps.vb, atol=1e-4, rtol=1e-4)
    # the scheduler agrees on what v means
    from diffusers import DDPMScheduler

    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", prediction_type="v_prediction")
    torch.testing.assert_close(sched.get_velocity(x0, noise, t), v, atol=1e-5, rtol=1e-5)


def test_unknown_prediction_type_is_refused():
    with pytest.raises(ValueError, match="prediction_type"):
        GaussianDiffusion(1000, prediction_type="sample")
