import warnings

import pytest
import torch
from opacus import GradSampleModule
from torch import nn

from models.clipping import BookKeepingClipper
from models.errors import DPCompatibilityError
from models.gan import DPSGDParams, make_private_discriminator, sample_rate_for
from models.networks import Discriminator, validate_dp_module
from models.noise import PrivacyNoise


def _params(**kw) -> DPSGDParams:
    base = dict(noise_multiplier=1.3, max_grad_norm=0.7, expected_batch_size=100, sample_rate=0.1, steps=1)
    return DPSGDParams(**{**base, **kw})


def test_dpsgd_params_refuse_non_poisson_sampling():
    with pytest.raises(DPCompatibilityError, match="poisson_sampling=False breaks the DP-SGD accounting"):
        _params(poisson_sampling=False)


def test_sample_rate_for_matches_opacus_loader_length():
    assert sample_rate_for(1000, 100) == 0.1
    assert sample_rate_for(1001, 100) == pytest.approx(1 / 11)


def test_validate_dp_module_refuses_batchnorm():
    with pytest.raises(DPCompatibilityError, match="BatchNorm"):
        validate_dp_module(nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 1)))
    validate_dp_module(Discriminator(input_dim=5, hidden=8))


def test_book_keeping_clipping_equals_opacus_per_sample_clipping():
    torch.manual_seed(0)
    disc = Discriminator(input_dim=12, hidden=16)
    x, y = torch.randn(64, 12) * 3, (torch.rand(64) < 0.5).float()
    clip = 1.5
    reference = GradSampleModule(Discriminator(input_dim=12, hidden=16), loss_reduction="sum")
    reference._module.load_state_dict(disc.state_dict())
    with warnings.catch_warnings():  # torch's notice about Opacus' hooks on inputs without grad
        warnings.simplefilter("ignore")
        nn.functional.binary_cross_entropy_with_logits(reference(x), y, reduction="sum").backward()
    per_sample = [p.grad_sample.flatten(1) for p in reference.parameters()]
    norms = torch.cat(per_sample, dim=1).norm(dim=1)
    factor = (clip / (norms + 1e-6)).clamp(max=1.0)
    expected = [
        (gs * factor.view(-1, *[1] * (gs.dim() - 1))).sum(0)
        for gs in (p.grad_sample for p in reference.parameters())
    ]

    clipper = BookKeepingClipper(disc, max_grad_norm=clip)
    with clipper.recording():
        logits = disc(x)
    disc(x)  # a forward pass outside recording() is not clipped and does not interfere
    ours = clipper.backward(nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none"))
    assert torch.allclose(ours, norms, rtol=1e-4)
    assert (norms > clip).any() and (norms < clip).any()  # both clipped and unclipped rows
    for got, want in zip((p.grad for p in disc.parameters()), expected, strict=True):
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-6)


def test_book_keeping_refuses_layers_it_cannot_clip():
    with pytest.raises(DPCompatibilityError, match="Linear layers only"):
        BookKeepingClipper(nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3)), max_grad_norm=1.0)


def test_dp_step_on_zero_gradients_moves_weights_by_the_noise():
    # Zero inputs and no bias: every per-sample gradient is exactly zero, so the update is
    # pure noise: lr * N(0, (sigma * C / expected_batch_size)^2) per weight.
    dim = 4000
    module = nn.Sequential(nn.Linear(dim, 1, bias=False), nn.Flatten(0))
    nn.init.zeros_(module[0].weight)
    params = _params(sample_rate=0.1)
    private = make_private_discriminator(
        module,
        torch.optim.SGD(module.parameters(), lr=1.0),
        1000,
        params=params,
        noise=PrivacyNoise(noise_seed=0),
    )
    assert private.sampler.sample_rate == params.sample_rate
    x = torch.zeros(len(next(iter(private.sampler))), dim)
    private.step(x, torch.ones(len(x)))
    moved = module[0].weight.detach().flatten()
    expected = params.noise_multiplier * params.max_grad_norm / params.expected_batch_size
    assert moved.std().item() == pytest.approx(expected, rel=0.05)
    assert moved.mean().item() == pytest.approx(0.0, abs=4 * expected / dim**0.5)


def test_dp_step_noise_depends_on_the_privacy_generator_not_the_global_rng():
    def run(noise_seed: int) -> torch.Tensor:
        module = nn.Sequential(nn.Linear(50, 1, bias=False), nn.Flatten(0))
        nn.init.zeros_(module[0].weight)
        private = make_private_discriminator(
            module,
            torch.optim.SGD(module.parameters(), lr=1.0),
            100,
            params=_params(),
            noise=PrivacyNoise(noise_seed=noise_seed),
        )
        torch.manual_seed(123)
        private.step(torch.zeros(10, 50), torch.ones(10))
        return module[0].weight.detach().clone()

    assert torch.equal(run(1), run(1))
    assert not torch.equal(run(1), run(2))
