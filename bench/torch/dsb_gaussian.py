#!/usr/bin/env python3
"""The public Gaussian DSB benchmark in PyTorch, for comparison with sbtrain.

IPF with mean matching (De Bortoli et al. 2021) between data N(-a, I) and
prior N(+a, I) in d dimensions, on the N-step Brownian chain
X_{k+1} = X_k + sqrt(2 gamma) Z with gamma = sigma^2 / (2N) (so 2T = sigma^2
over the grid). The means are F(k, x) = x + netF(k/N, x) and
B(k+1, x) = x + netB((k+1)/N, x); F_0 is the reference (netF = 0).

  backward phase n: trajectories from X_0 ~ data run forward with F_{n-1};
    netB learns (k+1, X_{k+1}) -> F(k, X_k) - F(k, X_{k+1})
  forward phase n: trajectories from X_N ~ prior run backward with B_n;
    netF learns (k, X_k) -> B(k+1, X_{k+1}) - B(k+1, X_k)

Each network is an MLP [x, t] -> 256 -> 256 -> d with SiLU and raw time t,
trained with Adam (lr 1e-4, new optimiser each phase) on the loss mean over
the batch of the squared norm summed over coordinates; no EMA.

The cache follows the public script (DSBM repository, DSBM-Gaussian.py,
model_name=dsb): a refresh simulates --cache trajectories in one batch (two
network evaluations per transition once the frozen mean is a network, none
for the reference), keeps one transition chosen at random per trajectory,
and serves them shuffled in batches of --batch without replacement
(10000 // 128 = 78 steps) before the next refresh. The public script starts
every refresh from the same fixed 10000 draws of each endpoint law and
keeps training the same two networks across phases; here every refresh
draws fresh endpoints, and networks start from scratch each phase unless
--warm-start. --cache-mode all keeps all N transitions of each trajectory
and samples batches with replacement, refreshing every --refresh steps, as
sbtrain's cache does.

Printed: wall time of the training (cache simulation included) and of the
evaluation, network evaluations (training steps, simulation calls and rows),
and the accuracy of X_0 sampled backward from --eval-samples prior draws with
the final backward network: max abs error of the mean and of the variance
over coordinates, and the diagonal of Cov(X_0, X_N) against the closed form
of the Schrödinger bridge (0.618 for unit variances and sigma 1).
"""

import argparse
import math
import os
import sys
import time

from step import loaded_blas, pin_threads


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--dim", type=int, default=5)
    p.add_argument("--a", type=float, default=0.1, help="data N(-a, I), prior N(+a, I)")
    p.add_argument("--sigma", type=float, default=1.0, help="Brownian scale over the grid: 2T = sigma^2")
    p.add_argument("--N", type=int, default=20, help="chain steps")
    p.add_argument("--iterations", type=int, default=5, help="IPF iterations (a backward and a forward phase each)")
    p.add_argument("--steps", type=int, default=2000, help="training steps per phase")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--hidden", default="256,256")
    p.add_argument("--cache", type=int, default=10000, help="trajectories per cache refresh")
    p.add_argument("--cache-mode", choices=["public", "all"], default="public")
    p.add_argument("--refresh", type=int, default=78, help="--cache-mode all: steps between refreshes")
    p.add_argument("--warm-start", action="store_true", help="keep training the previous phase's network")
    p.add_argument("--eval-samples", type=int, default=10000)
    p.add_argument("--eval-every", action="store_true", help="also evaluate after every IPF iteration")
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args(argv)
    for name in ("threads", "dim", "N", "iterations", "steps", "batch", "cache", "refresh", "eval_samples"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} {getattr(a, name)}: want >= 1")
    if a.sigma <= 0 or a.lr <= 0:
        p.error("--sigma and --lr: want > 0")
    if a.cache_mode == "public" and a.cache < a.batch:
        p.error(f"--cache {a.cache}: want at least one batch ({a.batch})")
    try:
        a.hidden = [int(w) for w in a.hidden.split(",") if w]
    except ValueError as e:
        p.error(f"--hidden: want comma-separated integers: {e}")
    return a


def closed_form_cov(s2):
    """Cov(X0, X1) of the Schrödinger bridge between N(m0, I) and N(m1, I)
    with reference variance s2 over [0, 1]: (sqrt(4 + s2^2) - s2) / 2 on the
    diagonal (DESIGN.md, "Ground truths", with S0 = S1 = I)."""
    return (math.sqrt(4 + s2 * s2) - s2) / 2


class Counter:
    """Network evaluations outside the training steps."""

    def __init__(self):
        self.calls = 0
        self.rows = 0


def main(argv):
    a = parse_args(argv)
    pin_threads(a.threads)
    import torch

    from nets import MLP

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    d, N = a.dim, a.N
    gamma = a.sigma**2 / (2 * N)
    noise = math.sqrt(2 * gamma)
    data_mean = -a.a * torch.ones(d)
    prior_mean = a.a * torch.ones(d)

    def new_net():
        return MLP(d, a.hidden, time_embed=0, act="silu")

    nets = {"b": None, "f": None}  # None for f is the reference
    sim = Counter()

    def mean_fn(net, x, t):
        """x + net(t, x), or x for the reference."""
        if net is None:
            return x
        sim.calls += 1
        sim.rows += x.shape[0]
        return x + net(torch.full((x.shape[0],), t), x)

    @torch.no_grad()
    def simulate(direction, M):
        """Trajectories for training `direction`'s net: inputs, times and
        targets per transition, stacked [N, M, ...] in transition order k."""
        inputs = torch.empty(N, M, d)
        targets = torch.empty(N, M, d)
        times = torch.empty(N)
        if direction == "b":
            frozen = nets["f"]
            x = data_mean + torch.randn(M, d)
            for k in range(N):
                m = mean_fn(frozen, x, k / N)
                xn = m + noise * torch.randn(M, d)
                inputs[k] = xn
                targets[k] = m - mean_fn(frozen, xn, k / N)
                times[k] = (k + 1) / N
                x = xn
        else:
            frozen = nets["b"]
            x = prior_mean + torch.randn(M, d)
            for k in range(N - 1, -1, -1):
                m = mean_fn(frozen, x, (k + 1) / N)
                xp = m + noise * torch.randn(M, d)
                inputs[k] = xp
                targets[k] = m - mean_fn(frozen, xp, (k + 1) / N)
                times[k] = k / N
                x = xp
        return inputs, times, targets

    def batches(direction):
        """Yields (t, x, target) training batches forever, refreshing the cache."""
        M, B = a.cache, a.batch
        while True:
            inputs, times, targets = simulate(direction, M)
            if a.cache_mode == "public":
                k = torch.randint(N, (M,))
                rows = torch.arange(M)
                x, tgt, t = inputs[k, rows], targets[k, rows], times[k]
                perm = torch.randperm(M)
                for i in range(M // B):
                    idx = perm[i * B : (i + 1) * B]
                    yield t[idx], x[idx], tgt[idx]
            else:
                flat_x, flat_tgt = inputs.reshape(N * M, d), targets.reshape(N * M, d)
                flat_t = times[:, None].expand(N, M).reshape(N * M)
                for _ in range(a.refresh):
                    idx = torch.randint(N * M, (B,))
                    yield flat_t[idx], flat_x[idx], flat_tgt[idx]

    def train_phase(direction):
        if nets[direction] is None or not a.warm_start:
            nets[direction] = new_net()
        net = nets[direction]
        opt = torch.optim.Adam(net.parameters(), lr=a.lr)
        src = batches(direction)
        loss = None
        for _ in range(a.steps):
            t, x, tgt = next(src)
            opt.zero_grad(set_to_none=True)
            loss = (net(t, x) - tgt).pow(2).sum(1).mean()
            loss.backward()
            opt.step()
        return loss.item()

    @torch.no_grad()
    def evaluate():
        """X_N ~ prior, X_k = B(k+1, X_{k+1}) + noise, the last step's noise
        kept as in the public script."""
        x_n = prior_mean + torch.randn(a.eval_samples, d)
        x = x_n
        for k in range(N - 1, -1, -1):
            x = x + nets["b"](torch.full((x.shape[0],), (k + 1) / N), x) + noise * torch.randn_like(x)
        x0 = x.double()
        mean = x0.mean(0)
        var = x0.var(0)
        xc, nc = x0 - mean, x_n.double() - x_n.double().mean(0)
        cross = (xc * nc).sum(0) / (x0.shape[0] - 1)
        return {
            "mean_max_abs_err": (mean - data_mean.double()).abs().max().item(),
            "var_max_abs_err": (var - 1).abs().max().item(),
            "cov_x0_xn_diag": cross.tolist(),
            "cov_max_abs_err": (cross - closed_form_cov(a.sigma**2)).abs().max().item(),
        }

    def fmt(fig):
        diag = ",".join(f"{c:.3f}" for c in fig["cov_x0_xn_diag"])
        return (
            f"mean_max_abs_err={fig['mean_max_abs_err']:.4f} var_max_abs_err={fig['var_max_abs_err']:.4f} "
            f"cov_x0_xn_diag={diag} cov_closed_form={closed_form_cov(a.sigma**2):.3f} "
            f"cov_max_abs_err={fig['cov_max_abs_err']:.4f}"
        )

    print(
        f"config dim={d} a={a.a} sigma={a.sigma} N={N} gamma={gamma:g} iterations={a.iterations} "
        f"steps={a.steps} batch={a.batch} lr={a.lr} hidden={a.hidden} cache={a.cache} "
        f"cache_mode={a.cache_mode} warm_start={a.warm_start} threads={a.threads} "
        f"blas={loaded_blas()} omp_wait={os.environ['OMP_WAIT_POLICY']} torch={torch.__version__}",
        flush=True,
    )
    train_wall = eval_wall = 0.0
    cpu0 = time.process_time()
    for n in range(1, a.iterations + 1):
        for direction in ("b", "f"):
            t0 = time.perf_counter()
            loss = train_phase(direction)
            dt = time.perf_counter() - t0
            train_wall += dt
            print(f"phase it={n} dir={direction} wall_s={dt:.2f} last_loss={loss:.4f}", flush=True)
        if a.eval_every or n == a.iterations:
            t0 = time.perf_counter()
            fig = evaluate()
            eval_wall += time.perf_counter() - t0
            print(f"eval it={n} {fmt(fig)}", flush=True)
    cpu = time.process_time() - cpu0
    train_steps = 2 * a.iterations * a.steps
    print(
        f"total threads={a.threads} train_wall_s={train_wall:.2f} eval_wall_s={eval_wall:.2f} cpu_s={cpu:.2f} "
        f"train_steps={train_steps} train_rows={train_steps * a.batch} sim_evals={sim.calls} "
        f"sim_rows={sim.rows} {fmt(fig)}"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
