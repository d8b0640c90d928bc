#!/usr/bin/env python3
"""Times one PyTorch training step of an sbtrain network.

A step is what sbtrain's nn benchmarks time: forward, the loss (mean over
the batch of |net(t, x) - target|^2 (squared norm summed over
coordinates)), backward, one Adam step (lr 1e-4). After --warmup untimed
steps, --steps steps are timed one by one; the result is one line of
key=value pairs:

  step arch=mlp batch=512 threads=1 params=133122 median_ms=... p10_ms=...
       p90_ms=... cpu_ms=... samples_per_s=... gflop=... gflops=...
       blas=openblas:SkylakeX omp_wait=PASSIVE torch=1.13.0a0 steps=200

median_ms is the median wall time of a step, samples_per_s is batch over it,
cpu_ms is the process CPU time per step (all threads; on a shared machine it
excludes time spent waiting for a core), gflop is the multiply-adds of the
convolutions and Linear layers, doubled, times 3 for forward plus backward,
and gflops is gflop over median_ms.
"""

import argparse
import os
import statistics
import sys
import time


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", choices=["mlp", "dsb2d", "unet"], required=True)
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--dim", type=int, default=2, help="mlp and dsb2d: data dimension (mlp input is dim+1)")
    p.add_argument("--hidden", default="256,256,256", help="mlp: hidden widths")
    p.add_argument("--channels", default="32,64,64", help="unet: widths per level")
    p.add_argument("--image", type=int, default=28, help="unet: image side (1 channel)")
    p.add_argument("--steps", type=int, default=0, help="timed steps (default: 200 dense, 20 unet)")
    p.add_argument("--warmup", type=int, default=0, help="untimed steps first (default: 20 dense, 3 unet)")
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args(argv)
    for name in ("batch", "threads", "dim", "image"):
        if getattr(a, name) < 1:
            p.error(f"--{name} {getattr(a, name)}: want >= 1")
    if a.steps < 0 or a.warmup < 0:
        p.error("--steps and --warmup: want >= 0")
    try:
        a.hidden = [int(w) for w in a.hidden.split(",") if w]
        a.channels = [int(c) for c in a.channels.split(",") if c]
    except ValueError as e:
        p.error(f"--hidden/--channels: want comma-separated integers: {e}")
    if any(w < 1 for w in a.hidden) or not a.channels or any(c < 1 for c in a.channels):
        p.error("--hidden/--channels: widths must be positive")
    unet = a.arch == "unet"
    a.steps = a.steps or (20 if unet else 200)
    a.warmup = a.warmup or (3 if unet else 20)
    return a


def pin_threads(n):
    """Thread pools read their settings when the libraries load, so the
    environment must be set before torch is imported. OpenBLAS (Debian's
    libblas.so.3 alternative, used by torch's Linear layers) keeps its own
    pool, which torch.set_num_threads does not size."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    # libgomp's default is to spin between parallel regions; on a machine
    # shared with other work the spinning threads take the cores the
    # working ones need, and a 2-thread step of a small MLP measured 7x
    # slower than with passive waiting. An explicit setting is kept.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def loaded_blas():
    """Names the BLAS the process mapped, from /proc/self/maps (Linux), and
    for OpenBLAS the kernel set it chose: on a CPU model it does not know
    (common in virtual machines) it falls back to generic SSE3 kernels
    ("Prescott") several times slower than the AVX-512 ones, which
    OPENBLAS_CORETYPE=SkylakeX selects."""
    try:
        with open("/proc/self/maps") as f:
            libs = {line.split()[-1] for line in f if "blas" in line.lower() or "mkl" in line.lower()}
    except OSError:
        return "unknown"
    for lib in sorted(libs):
        real = os.path.realpath(lib)
        if "openblas" in real:
            return "openblas:" + openblas_core(real)
    if any("mkl" in lib for lib in libs):
        return "mkl"
    if any("libblas" in lib for lib in libs):
        return "reference"
    return "none"


def openblas_core(path):
    import ctypes

    try:
        lib = ctypes.CDLL(path)
        lib.openblas_get_corename.restype = ctypes.c_char_p
        return lib.openblas_get_corename().decode()
    except (OSError, AttributeError):
        return "unknown"


def flops_per_step(torch, model, t, x):
    """Forward multiply-adds of Conv2d and Linear layers, via hooks, as
    FLOPs for forward plus backward (backward costs about twice forward)."""
    nn = torch.nn
    total = [0]

    def hook(mod, inp, out):
        if isinstance(mod, nn.Conv2d):
            k = mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
            total[0] += out.numel() * k
        elif isinstance(mod, nn.Linear):
            total[0] += out.numel() * mod.in_features

    hs = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model(t, x)
    for h in hs:
        h.remove()
    return 2 * total[0] * 3


def build(a):
    import torch

    from nets import DSB2D, MLP
    from unet_small import UNET_SMALL_PARAMS, UNet, num_params

    g = torch.Generator().manual_seed(a.seed)
    if a.arch == "mlp":
        model = MLP(a.dim, a.hidden)
        shape = (a.batch, a.dim)
    elif a.arch == "dsb2d":
        model = DSB2D(a.dim)
        shape = (a.batch, a.dim)
    else:
        model = UNet(channels=a.channels)
        if a.channels == [32, 64, 64]:
            n = num_params(model)
            assert n == UNET_SMALL_PARAMS, f"unet-small has {n} parameters, want {UNET_SMALL_PARAMS}"
        shape = (a.batch, 1, a.image, a.image)
    x = torch.randn(shape, generator=g)
    target = torch.randn(shape, generator=g)
    t = torch.rand(a.batch, generator=g)
    return model, t, x, target


def main(argv):
    a = parse_args(argv)
    pin_threads(a.threads)
    import torch

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    model, t, x, target = build(a)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        out = model(t, x)
        loss = (out - target).pow(2).flatten(1).sum(1).mean()
        loss.backward()
        opt.step()
        return loss

    for _ in range(a.warmup):
        step()
    wall = []
    cpu0 = time.process_time()
    for _ in range(a.steps):
        t0 = time.perf_counter()
        step()
        wall.append(time.perf_counter() - t0)
    cpu = (time.process_time() - cpu0) / a.steps
    wall.sort()
    med = statistics.median(wall)

    def pct(q):
        return wall[min(len(wall) - 1, int(q * len(wall)))]

    gflop = flops_per_step(torch, model, t, x) / 1e9
    params = sum(p.numel() for p in model.parameters())
    print(
        f"step arch={a.arch} batch={a.batch} threads={a.threads} params={params} "
        f"median_ms={med * 1e3:.3f} p10_ms={pct(0.1) * 1e3:.3f} p90_ms={pct(0.9) * 1e3:.3f} "
        f"cpu_ms={cpu * 1e3:.3f} samples_per_s={a.batch / med:.1f} gflop={gflop:.3f} "
        f"gflops={gflop / med:.2f} blas={loaded_blas()} omp_wait={os.environ['OMP_WAIT_POLICY']} "
        f"torch={torch.__version__} steps={a.steps}"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
