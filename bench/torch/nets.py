"""Dense networks of sbtrain's nn package, written as PyTorch modules.

Parameter names follow nn.ParamNames (net.0.weight, x_encoder.1.bias, ...):
the Linear layers of each stack sit in a ModuleList and the activations are
applied functionally, so the indices count Linear layers only. sbtrain stores
a dense weight as [in, out] (x @ W + b); torch.nn.Linear holds [out, in], so a
loaded weight must be transposed (see load_check.py).
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

ACTIVATIONS = {
    # LeakyReLU's slope is torch's default, which sbtrain copies.
    "leakyrelu": lambda x: F.leaky_relu(x, 0.01),
    "silu": F.silu,
    "relu": F.relu,
    "tanh": torch.tanh,
}


def sinusoidal(t, embed):
    """The time features of sbtrain's nn/embed.go.

    half = embed // 2 frequencies f_i = exp(-ln(10000) i / (half - 1)),
    features [sin(t f), cos(t f)] and a zero column when embed is odd. The
    product is formed in float64, as the Go code does, so large step indices
    lose no phase; the result is float32.
    """
    t = t.reshape(-1).to(torch.float64)
    half = embed // 2
    if half == 1:
        freqs = torch.ones(1, dtype=torch.float64)
    else:
        step = math.log(10000.0) / (half - 1)
        freqs = torch.exp(-step * torch.arange(half, dtype=torch.float64))
    arg = t[:, None] * freqs[None, :]
    out = torch.cat([torch.sin(arg), torch.cos(arg)], dim=1)
    if embed % 2 == 1:
        out = torch.cat([out, torch.zeros(t.shape[0], 1, dtype=torch.float64)], dim=1)
    return out.to(torch.float32)


def time_features(t, embed):
    """embed == 0 is the raw time as one column (sbtrain's mlp default)."""
    if embed == 0:
        return t.reshape(-1, 1).to(torch.float32)
    return sinusoidal(t, embed)


class Stack(nn.Module):
    """Linear layers with the activation after every layer but the last.

    The layers are the module's children "0", "1", ..., so their parameters
    are named "<stack>.<index>.weight" as in sbtrain, with no extra level.
    """

    def __init__(self, widths, act):
        super().__init__()
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            self.add_module(str(i), nn.Linear(a, b))
        self.n = len(widths) - 1
        self.act = ACTIVATIONS[act]

    def forward(self, x):
        for i in range(self.n):
            x = self._modules[str(i)](x)
            if i < self.n - 1:
                x = self.act(x)
        return x


class MLP(nn.Module):
    """sbtrain's arch "mlp": [x, time features] -> hidden widths -> dim.

    With time_embed 0 the time feature is t itself, so the input width is
    dim + 1; layers are net.0 .. net.K.
    """

    def __init__(self, dim, hidden, time_embed=0, act="silu"):
        super().__init__()
        self.dim, self.time_embed = dim, time_embed
        tw = 1 if time_embed == 0 else time_embed
        self.net = Stack([dim + tw] + list(hidden) + [dim], act)

    def forward(self, t, x):
        return self.net(torch.cat([x, time_features(t, self.time_embed)], dim=1))


class DSB2D(nn.Module):
    """sbtrain's arch "dsb2d", the reference DSB ScoreNetwork.

    x_encoder dim->16->32 and t_encoder (sinusoidal, time_embed wide)
    ->16->32, neither with a final activation; their outputs concatenated
    (x first) feed net 64->128->128->dim.
    """

    def __init__(self, dim=2, time_embed=16, act="leakyrelu"):
        super().__init__()
        self.dim, self.time_embed = dim, time_embed
        self.x_encoder = Stack([dim, 16, 32], act)
        self.t_encoder = Stack([time_embed, 16, 32], act)
        self.net = Stack([64, 128, 128, dim], act)

    def forward(self, t, x):
        xe = self.x_encoder(x)
        te = self.t_encoder(sinusoidal(t, self.time_embed))
        return self.net(torch.cat([xe, te], dim=1))
