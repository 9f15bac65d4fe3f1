"""Exact ideal denoiser for per-pixel Gaussian data, so solver errors can be measured against the true PF-ODE."""
import torch


class GaussianDenoiser:
    """Data ~ N(mu, s^2) per pixel: D(x, sigma) = mu + s^2/(s^2+sigma^2) (x - mu); counts calls and samples."""

    def __init__(self, shape=(1, 4, 4), seed=0, s_range=(0.3, 1.0), dtype=torch.float64, branches=1):
        g = torch.Generator().manual_seed(seed)
        self.mu = torch.randn(shape, generator=g, dtype=dtype)
        self.s = s_range[0] + (s_range[1] - s_range[0]) * torch.rand(shape, generator=g, dtype=dtype)
        self.branches = branches
        self.calls = 0
        self.samples = 0

    def __call__(self, x, sigma, label=None):
        self.calls += 1
        self.samples += x.shape[0]
        sig2 = sigma.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1))) ** 2
        s2 = self.s.to(x.dtype) ** 2
        d = self.mu.to(x.dtype) + s2 / (s2 + sig2) * (x - self.mu.to(x.dtype))
        return d.unsqueeze(1).expand(-1, self.branches, *d.shape[1:])

    def exact(self, x0, sigma0, sigma1):
        """Exact PF-ODE transport of x0 from sigma0 to sigma1."""
        s2 = self.s.to(x0.dtype) ** 2
        mu = self.mu.to(x0.dtype)
        return mu + (x0 - mu) * torch.sqrt(s2 + sigma1 ** 2) / torch.sqrt(s2 + sigma0 ** 2)

    def sample_prior(self, batch, sigma, seed=1):
        """x at noise level sigma drawn from the exact marginal N(mu, s^2 + sigma^2)."""
        g = torch.Generator().manual_seed(seed)
        n = torch.randn((batch, *self.mu.shape), generator=g, dtype=self.mu.dtype)
        return self.mu + torch.sqrt(self.s ** 2 + sigma ** 2) * n
