"""sbtrain's image network "unet" as a PyTorch module.

The default, unet-small (1x28x28 input, channels (32, 64, 64), GroupNorm with
8 groups, 32-wide sinusoidal time embedding), has 444,833 parameters. The
parameter names and shapes are the ones sbtrain writes to safetensors
(conv weight [cout, cin, kh, kw], Linear weight [out, in], torch's layout),
so load_state_dict(strict=True) takes sbtrain's file as it is.

Run directly, it builds unet-small, checks the parameter count and one
forward pass, and prints the count.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from nets import sinusoidal

UNET_SMALL_PARAMS = 444_833


class ResBlock(nn.Module):
    def __init__(self, cin, cout, temb_dim=128, groups=8):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.temb = nn.Linear(temb_dim, cout)
        self.norm2 = nn.GroupNorm(groups, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        # A 1x1 convolution only where the residual changes width, so a
        # same-width block has no skip parameters (and no "skip" names).
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x, temb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb(temb)[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return (self.skip(x) if self.skip is not None else x) + h


class UNet(nn.Module):
    """Levels c_0..c_{L-1}: level i < L-1 is a ResBlock at resolution /2^i whose
    output is a skip, then a stride-2 convolution; mid joins the last two
    widths at the lowest resolution; the up path mirrors the down path on
    [upsampled, skip] concatenations and ends with a block on [h, inc(x)].
    """

    def __init__(self, channels=(32, 64, 64), in_ch=1, groups=8, time_embed=32, temb_dim=128):
        super().__init__()
        channels = list(channels)
        if not channels or any(c <= 0 for c in channels):
            raise ValueError(f"channels {channels}: want one or more positive widths")
        for c in channels:
            if c % groups:
                raise ValueError(f"channels {channels}: {c} is not divisible by groups {groups}")
        self.channels, self.in_ch, self.groups = channels, in_ch, groups
        self.time_embed_dim = time_embed
        L = len(channels)
        c0 = channels[0]
        self.time_embed = nn.Sequential(nn.Linear(time_embed, temb_dim), nn.SiLU(), nn.Linear(temb_dim, temb_dim))
        self.inc = nn.Conv2d(in_ch, c0, 3, padding=1)

        def block(cin, cout):
            return ResBlock(cin, cout, temb_dim, groups)

        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        prev = c0
        for i in range(L - 1):
            self.down.append(block(prev, channels[i]))
            self.downsample.append(nn.Conv2d(channels[i], channels[i], 3, stride=2, padding=1))
            prev = channels[i]
        self.mid = block(channels[L - 2], channels[L - 1]) if L > 1 else block(c0, c0)
        self.up = nn.ModuleList()
        cur = channels[L - 1]
        for i in range(L - 2, -1, -1):
            self.up.append(block(cur + channels[i], channels[i]))
            cur = channels[i]
        self.up.append(block(cur + c0, c0))
        self.out_norm = nn.GroupNorm(groups, c0)
        self.out_conv = nn.Conv2d(c0, in_ch, 3, padding=1)

    def forward(self, t, x):
        temb = self.time_embed(sinusoidal(t, self.time_embed_dim))
        h0 = self.inc(x)
        h, skips = h0, []
        for blk, ds in zip(self.down, self.downsample):
            s = blk(h, temb)
            skips.append(s)
            h = ds(s)
        h = self.mid(h, temb)
        for blk in self.up[:-1]:
            s = skips.pop()
            h = blk(torch.cat([F.interpolate(h, scale_factor=2, mode="nearest"), s], dim=1), temb)
        h = self.up[-1](torch.cat([h, h0], dim=1), temb)
        return self.out_conv(F.silu(self.out_norm(h)))


def unet_small():
    return UNet(channels=(32, 64, 64), in_ch=1, groups=8, time_embed=32)


def num_params(module):
    return sum(p.numel() for p in module.parameters())


def check_unet_small():
    net = unet_small()
    n = num_params(net)
    assert n == UNET_SMALL_PARAMS, f"unet-small has {n} parameters, want {UNET_SMALL_PARAMS}"
    with torch.no_grad():
        y = net(torch.tensor([0.3, 0.7]), torch.zeros(2, 1, 28, 28))
    assert y.shape == (2, 1, 28, 28), f"unet-small output shape {tuple(y.shape)}, want (2, 1, 28, 28)"
    return n


if __name__ == "__main__":
    print(f"unet-small params={check_unet_small()}")
