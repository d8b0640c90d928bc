#!/usr/bin/env python3
"""Loads an sbtrain network file (safetensors) into its PyTorch module.

  load_check.py RUN/velocity.safetensors [--dump out.f32]
  load_check.py --selftest

The architecture comes from the tensors' names and shapes, and from the
"sbtrain.spec" metadata where they leave something open (GroupNorm groups,
image size, activation). The module is built (unet_small.UNet for "unet",
nets.MLP or nets.DSB2D for the dense nets) and takes the file through
load_state_dict(strict=True): every name and shape must match, nothing may be
missing or left over. Dense weights are stored [in, out] by sbtrain and are
transposed for torch.nn.Linear; unet tensors are stored in torch's layout.

It then prints the output on a fixed input that any implementation can
rebuild: a batch of 2 with t = (0.25, 0.75) and x[j] = 0.9 sin(0.01 (j + 1))
for the flat row-major index j over the batch (NCHW for images).

--selftest writes random networks with this file's own safetensors writer,
reads them back and checks the loaded module reproduces the original output
bit for bit, and checks the parser rejects damaged files.
"""

import argparse
import json
import math
import os
import struct
import sys
import tempfile

import numpy as np
import torch

from nets import DSB2D, MLP
from unet_small import UNet, num_params

# The reference implementation's bound on the JSON header: a damaged length
# must not make the reader allocate gigabytes before failing.
MAX_HEADER = 100 << 20

DTYPES = {
    "F64": "<f8",
    "F32": "<f4",
    "F16": "<f2",
    "I64": "<i8",
    "I32": "<i4",
    "I16": "<i2",
    "I8": "i1",
    "U8": "u1",
    "BOOL": "?",
}


class FormatError(ValueError):
    pass


def read_safetensors(path):
    """Returns ({name: float32 or integer torch tensor}, metadata dict).

    Format: 8-byte little-endian header length n, n bytes of JSON mapping
    each name to {"dtype", "shape", "data_offsets": [begin, end]} (offsets
    relative to the end of the header) plus an optional "__metadata__"
    string map, then the raw little-endian row-major data.
    """
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        raise FormatError(f"{path}: {len(blob)} bytes, shorter than the 8-byte header length")
    (n,) = struct.unpack("<Q", blob[:8])
    if n > MAX_HEADER or 8 + n > len(blob):
        raise FormatError(f"{path}: header length {n} does not fit the {len(blob)}-byte file")
    try:
        header = json.loads(blob[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FormatError(f"{path}: header is not JSON: {e}") from e
    if not isinstance(header, dict):
        raise FormatError(f"{path}: header is a {type(header).__name__}, want an object")
    meta = header.pop("__metadata__", None) or {}
    data = memoryview(blob)[8 + n :]
    tensors = {}
    for name, info in header.items():
        try:
            dtype, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
        except (KeyError, TypeError, ValueError) as e:
            raise FormatError(f"{path}: tensor {name!r}: want dtype, shape and data_offsets: {e}") from e
        if dtype not in DTYPES:
            raise FormatError(f"{path}: tensor {name!r}: dtype {dtype!r} not supported")
        if any(not isinstance(s, int) or s < 0 for s in shape):
            raise FormatError(f"{path}: tensor {name!r}: shape {shape} has a negative or non-integer size")
        want = math.prod(shape) * np.dtype(DTYPES[dtype]).itemsize
        if not (0 <= begin <= end <= len(data)) or end - begin != want:
            raise FormatError(
                f"{path}: tensor {name!r}: data_offsets [{begin}, {end}] for {want} bytes "
                f"of {dtype} {shape} in a {len(data)}-byte data section"
            )
        arr = np.frombuffer(data[begin:end], dtype=DTYPES[dtype]).reshape(shape)
        tensors[name] = torch.from_numpy(arr.astype(arr.dtype.newbyteorder("=")).copy())
    return tensors, meta


def write_safetensors(path, tensors, metadata=None):
    """Writes float32 tensors in the given order, header padded with spaces
    so the data starts 8-byte aligned."""
    header, chunks, off = {}, [], 0
    if metadata:
        header["__metadata__"] = dict(metadata)
    for name, t in tensors.items():
        raw = t.detach().to(torch.float32).contiguous().numpy().astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
        chunks.append(raw)
        off += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for c in chunks:
            f.write(c)


def spec_field(spec, *names, default=None):
    """A field of the JSON spec, whatever the case of its key."""
    low = {k.lower(): v for k, v in spec.items()}
    for n in names:
        if n.lower() in low and low[n.lower()] not in (None, 0, "", []):
            return low[n.lower()]
    return default


def build(tensors, spec):
    """The module for these tensors, and the input shape of one sample.
    Returns (module, sample_shape, dense)."""
    if "inc.weight" in tensors:
        inc = tensors["inc.weight"]
        in_ch, c0 = inc.shape[1], inc.shape[0]
        levels = 1 + sum(1 for k in tensors if k.startswith("down.") and k.endswith(".conv1.weight"))
        channels = [tensors[f"down.{i}.conv1.weight"].shape[0] for i in range(levels - 1)]
        channels.append(tensors["mid.conv1.weight"].shape[0])
        if levels == 1:
            channels = [c0]
        te = tensors["time_embed.0.weight"]
        groups = spec_field(spec, "Groups", default=8)
        image = spec_field(spec, "Image")
        if isinstance(image, list) and len(image) == 3:
            h, w = image[1], image[2]
        else:
            h = spec_field(spec, "H", "Height")
            w = spec_field(spec, "W", "Width")
            if not (h and w):
                dim = spec_field(spec, "Dim")
                side = int(round(math.sqrt(dim // in_ch))) if dim else 28
                h = w = side
        net = UNet(channels=channels, in_ch=in_ch, groups=groups, time_embed=te.shape[1], temb_dim=te.shape[0])
        return net, (in_ch, h, w), False
    act = spec_field(spec, "Activation")
    if "x_encoder.0.weight" in tensors:
        dim = tensors["x_encoder.0.weight"].shape[0]  # [in, out]
        embed = tensors["t_encoder.0.weight"].shape[0]
        return DSB2D(dim=dim, time_embed=embed, act=act or "leakyrelu"), (dim,), True
    if "net.0.weight" in tensors:
        k = 0
        while f"net.{k + 1}.weight" in tensors:
            k += 1
        outs = [tensors[f"net.{i}.weight"].shape[1] for i in range(k + 1)]
        dim = outs[-1]
        tw = tensors["net.0.weight"].shape[0] - dim
        embed = 0 if tw == 1 else tw
        return MLP(dim, outs[:-1], time_embed=embed, act=act or "silu"), (dim,), True
    raise FormatError("no known network in the file: want inc.* (unet), x_encoder.* (dsb2d) or net.* (mlp) tensors")


def to_state_dict(tensors, dense):
    """sbtrain's dense weights are [in, out]; torch.nn.Linear's are [out, in]."""
    out = {}
    for name, t in tensors.items():
        t = t.to(torch.float32)
        out[name] = t.t().contiguous() if dense and name.endswith(".weight") and t.dim() == 2 else t
    return out


def fixed_input(batch, sample_shape):
    n = batch * math.prod(sample_shape)
    j = torch.arange(n, dtype=torch.float64)
    x = (0.9 * torch.sin(0.01 * (j + 1))).to(torch.float32).reshape((batch,) + tuple(sample_shape))
    t = torch.tensor([0.25, 0.75][:batch], dtype=torch.float32)
    return t, x


def load(path):
    tensors, meta = read_safetensors(path)
    spec = {}
    if "sbtrain.spec" in meta:
        try:
            spec = json.loads(meta["sbtrain.spec"])
        except json.JSONDecodeError as e:
            raise FormatError(f"{path}: metadata sbtrain.spec is not JSON: {e}") from e
    net, sample_shape, dense = build(tensors, spec)
    try:
        net.load_state_dict(to_state_dict(tensors, dense), strict=True)
    except RuntimeError as e:
        raise FormatError(f"{path}: load_state_dict: {e}") from e
    return net.eval(), sample_shape, meta


def run_fixed(net, sample_shape):
    t, x = fixed_input(2, sample_shape)
    with torch.no_grad():
        return net(t, x)


def describe(y):
    flat = y.reshape(-1).double()
    first = ",".join(f"{v:.7g}" for v in flat[:8].tolist())
    return (
        f"shape={list(y.shape)} sum={flat.sum().item():.7g} l2={flat.norm().item():.7g} "
        f"min={flat.min().item():.7g} max={flat.max().item():.7g} first={first}"
    )


def selftest():
    torch.manual_seed(3)
    cases = {
        "unet-small": (UNet(), {}, False),
        "unet-tiny": (UNet(channels=(8, 16), groups=4), {"Groups": 4, "Dim": 64}, False),
        "dsb2d": (DSB2D(), {"Arch": "dsb2d"}, True),
        "mlp": (MLP(5, [64, 64]), {"Arch": "mlp", "Activation": "silu"}, True),
    }
    with tempfile.TemporaryDirectory() as d:
        for name, (net, spec, dense) in cases.items():
            with torch.no_grad():  # GroupNorm's defaults (1, 0) would hide a swapped weight and bias
                for p in net.parameters():
                    p.add_(0.1 * torch.randn_like(p))
            sd = net.state_dict()
            stored = {k: (v.t() if dense and k.endswith(".weight") and v.dim() == 2 else v) for k, v in sd.items()}
            path = os.path.join(d, name + ".safetensors")
            write_safetensors(path, stored, {"sbtrain.spec": json.dumps(spec)})
            loaded, shape, _ = load(path)
            assert num_params(loaded) == num_params(net), f"{name}: {num_params(loaded)} params, want {num_params(net)}"
            want, got = run_fixed(net.eval(), shape), run_fixed(loaded, shape)
            assert torch.equal(want, got), f"{name}: loaded output differs by {(want - got).abs().max().item()}"
            print(f"selftest {name} params={num_params(net)} ok")
        # Damaged files must fail with a message, not load something else.
        good = open(os.path.join(d, "mlp.safetensors"), "rb").read()
        (n,) = struct.unpack("<Q", good[:8])
        damaged = {
            "truncated data": good[:-4],
            "huge header length": struct.pack("<Q", 1 << 40) + good[8:],
            "header not JSON": good[:8] + b"[" + good[9:],
        }
        for what, blob in damaged.items():
            p = os.path.join(d, "bad.safetensors")
            with open(p, "wb") as f:
                f.write(blob)
            try:
                load(p)
            except FormatError:
                continue
            raise AssertionError(f"damaged file ({what}) was accepted")
        hdr = json.loads(good[8 : 8 + n])
        del hdr["net.1.bias"]
        h = json.dumps(hdr).encode()
        h += b" " * (-len(h) % 8)
        with open(p, "wb") as f:
            f.write(struct.pack("<Q", len(h)) + h + good[8 + n :])
        try:
            load(p)
            raise AssertionError("file missing net.1.bias was accepted")
        except FormatError as e:
            assert "net.1.bias" in str(e), f"missing-tensor error does not name it: {e}"
        print("selftest damaged files rejected ok")


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("file", nargs="?", help="an sbtrain .safetensors network")
    p.add_argument("--dump", help="write the output as raw little-endian float32 to this file")
    p.add_argument("--selftest", action="store_true")
    a = p.parse_args(argv)
    if a.selftest:
        selftest()
        return
    if not a.file:
        p.error("want a .safetensors file or --selftest")
    torch.set_num_threads(1)
    try:
        net, shape, meta = load(a.file)
    except (OSError, FormatError) as e:
        sys.exit(f"load_check: {e}")
    y = run_fixed(net, shape)
    print(f"loaded {a.file} module={type(net).__name__} params={num_params(net)} role={meta.get('sbtrain.role', '?')}")
    print(f"output {describe(y)}")
    if a.dump:
        with open(a.dump, "wb") as f:
            f.write(y.numpy().astype("<f4").tobytes())


if __name__ == "__main__":
    main(sys.argv[1:])
