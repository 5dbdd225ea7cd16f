import pytest
import torch
from torch import nn

from models.errors import DPCompatibilityError
from models.gan import DPSGDParams, make_private_discriminator, quiet_hooks, sample_rate_for
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


def test_dp_step_on_zero_gradients_moves_weights_by_the_noise():
    # Zero inputs and no bias: every per-sample gradient is exactly zero, so the update is
    # pure noise: lr * N(0, (sigma * C / expected_batch_size)^2) per weight.
    dim, n = 4000, 1000
    module = nn.Linear(dim, 1, bias=False)
    nn.init.zeros_(module.weight)
    opt = torch.optim.SGD(module.parameters(), lr=1.0)
    params = _params(sample_rate=0.1)
    noise = PrivacyNoise(noise_seed=0)
    private, dp_opt, criterion, loader, _ = make_private_discriminator(
        module, opt, torch.zeros(n, dim), params=params, noise=noise, accountant="prv"
    )
    (x,) = next(iter(loader))
    dp_opt.zero_grad()
    with quiet_hooks():
        criterion(private(x).squeeze(1), torch.ones(len(x))).backward()
    dp_opt.step()
    moved = module.weight.detach().flatten()
    expected = params.noise_multiplier * params.max_grad_norm / params.expected_batch_size
    assert moved.std().item() == pytest.approx(expected, rel=0.05)
    assert moved.mean().item() == pytest.approx(0.0, abs=4 * expected / dim**0.5)


def test_make_private_refuses_a_sample_rate_other_than_planned():
    module = Discriminator(input_dim=3, hidden=4)
    opt = torch.optim.SGD(module.parameters(), lr=0.1)
    with pytest.raises(DPCompatibilityError, match="but the plan assumed 0.5"):
        make_private_discriminator(
            module,
            opt,
            torch.zeros(1000, 3),
            params=_params(sample_rate=0.5),
            noise=PrivacyNoise(),
            accountant="rdp",
        )
