"""An independent port of SFD's teacher sampler, for the tests only.

Written from the published description of zju-pi/diff-sampler, sfd-main (solvers.py `dpm_pp_sampler`,
solver_utils.py `dynamic_thresholding_fn`, `dpm_pp_update`; training/loss.py `get_teacher_traj`), in the VE view
x = x0 + t n with lambda = -log t. It calls the network directly and none of bdense's solvers:
  - every x0 estimate (the network's, or with AFS the analytical x - t d, d = x / sqrt(1 + t^2)) is dynamically
    thresholded (per sample s = max(quantile_0.995 |x0|, 1); clamp to [-s, s], divide by s) and appended to the
    buffer; the AFS estimate is used only while the buffer is empty;
  - order of step i with n grid points: i + 1 if i + 1 < max_order else min(max_order, n - (i + 1));
  - updates: first order (t/s) x - expm1(-h) m0; multistep second and third order in dpm-solver's data form.
"""
import torch


def threshold(x0, p=0.995):
    q = torch.quantile(x0.abs().reshape(x0.shape[0], -1), p, dim=1)
    q = torch.maximum(q, torch.ones_like(q)).reshape([-1] + [1] * (x0.dim() - 1))
    return torch.clamp(x0, -q, q) / q


def sfd_dpmpp(net, x, t_steps, *, max_order=3, afs=False, dynamic=True):
    """SFD's multistep DPM-Solver++ over t_steps (descending, > 0) from x; net(x, t) -> x0 estimate.
    Returns every grid state [len(t_steps), B, C, H, W]."""
    t = [torch.tensor(float(v), dtype=torch.float64) for v in t_steps]
    n = len(t)
    states, m_buf, t_buf = [x], [], []
    for i in range(n - 1):
        t_cur, t_next = t[i], t[i + 1]
        if afs and not m_buf:
            x0 = x - t_cur * (x / (1 + t_cur ** 2).sqrt())
        else:
            x0 = net(x, t_cur)
        m_buf.append(threshold(x0) if dynamic else x0)
        t_buf.append(t_cur)
        order = i + 1 if i + 1 < max_order else min(max_order, n - (i + 1))
        lam = [-v.log() for v in t_buf]
        h = -t_next.log() - lam[-1]
        phi_1 = torch.expm1(-h)
        m0 = m_buf[-1]
        if order == 1:
            x = (t_next / t_cur) * x - phi_1 * m0
        elif order == 2:
            r0 = (lam[-1] - lam[-2]) / h
            x = (t_next / t_cur) * x - phi_1 * m0 - 0.5 * phi_1 * (m0 - m_buf[-2]) / r0
        else:
            r0, r1 = (lam[-1] - lam[-2]) / h, (lam[-2] - lam[-3]) / h
            d1_0, d1_1 = (m0 - m_buf[-2]) / r0, (m_buf[-2] - m_buf[-3]) / r1
            d1 = d1_0 + (r0 / (r0 + r1)) * (d1_0 - d1_1)
            d2 = (d1_0 - d1_1) / (r0 + r1)
            phi_2 = phi_1 / h + 1.0
            phi_3 = phi_2 / h - 0.5
            x = (t_next / t_cur) * x - phi_1 * m0 + phi_2 * d1 - phi_3 * d2
        m_buf, t_buf = m_buf[-3:], t_buf[-3:]
        states.append(x)
    return torch.stack(states)


def network(model):
    """net(x, t) of the port: the model's own forward at sigma t (its last branch), no bdense solver involved."""
    @torch.no_grad()
    def net(x, t):
        return model(x, torch.full((x.shape[0],), float(t), dtype=x.dtype), None)[:, -1]
    return net
