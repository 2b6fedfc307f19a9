"""int8 weights times int8 inputs with fbgemm (torch's quantized engine on x86), in a range its
kernel on this CPU adds up without overflow.

fbgemm rounds each input to uint8 (with a zero point) and multiplies it by the int8 weights. With
AVX-512 VNNI (`vpdpbusd`) four u8 x s8 products go straight into an int32. Without it (AVX2, and
AVX-512 without VNNI) the kernel uses `vpmaddubsw`, which adds each PAIR of products into an int16
and saturates: 255 x 127 x 2 = 64770 does not fit in 32767, and with the zero point near 128 even
inputs close to 0 reach the limit, so a row's result can be wrong by most of its size (relative
error 0.84 on the self-check below, 0.13-0.17 on the tests' random layers). With inputs rounded to 7
bits (0..127, torch's `reduce_range`) a pair is at most 127 x 128 x 2 = 32512: no saturation, at
half the input resolution. So: 8 bits where the CPU has AVX-512 VNNI, else 7, and a self-check at
start-up (`input_bits`) that multiplies inputs whose int16 pair sums would saturate and compares
the result with float; a range that fails it is not used (one warning line).

The cost of 7 bits, 0.5B, `bench/offline.py --agreement` (160 tokens, against bfloat16): decoding
with the default int4 weights, the same next token 0.933 of the time (KL 0.0407) against 0.899 (KL
0.0378) with 8-bit inputs; after a 40-token prompt on int8, 0.860 (KL 0.0456) against 0.800 (KL
0.0329). The KL divergence is the steadier figure over 160 tokens: 7 bits lose a little, 8 bits on
a saturating kernel lose most of the layer. The time is the same (`bench/w8a8.py`).
"""

from __future__ import annotations

import functools
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

__all__ = ["INPUT_BITS", "available", "check", "choose_input_bits", "input_bits", "multiply", "pack", "vnni"]

log = logging.getLogger(__name__)

INPUT_BITS = (8, 7)  # the input ranges fbgemm can round to (7: torch's reduce_range)
PAD = 32  # extra zero-weight inputs of a W8A8 product (two carry the -1 and +1); 928 run as fast as 896
ROWS = 8192  # output rows per packed block: fbgemm packs big matrices slowly (the 0.5B's output
# layer: 1.6 s whole, 0.5 s in blocks of 8-9k rows, on one thread; the blocks then pack in parallel)
CHECK_LIMIT = 0.02  # relative error the self-check allows (7 bits: ~0.004; a saturating kernel: ~0.8)
_CPUINFO = Path("/proc/cpuinfo")


def available() -> bool:
    """fbgemm is torch's quantized engine on x86 CPUs (not on ARM builds)."""
    return any(e in torch.backends.quantized.supported_engines for e in ("x86", "fbgemm"))


def vnni(cpuinfo: Path = _CPUINFO) -> bool:
    """Whether the CPU has AVX-512 VNNI, which fbgemm's 8-bit kernel needs to add u8 x s8 products
    without int16 saturation (AVX-VNNI alone does not count: fbgemm has no kernel for it). False
    where /proc/cpuinfo cannot be read (the 7-bit range is safe everywhere)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return False
    return any(line.startswith("flags") and "avx512_vnni" in line.split() for line in text.splitlines())


def pack(weight_int8: torch.Tensor, scale: torch.Tensor) -> list:
    """fbgemm's packed copies of int8 weights with one scale per output row, a block of ROWS rows each."""

    def one(start: int):
        block = weight_int8[start : start + ROWS]
        rows = block.shape[0]
        padded = torch.cat([block, block.new_zeros(rows, PAD)], 1)
        weight = torch._make_per_channel_quantized_tensor(padded, scale[start : start + rows].double(),
                                                          torch.zeros(rows, dtype=torch.long), 0)  # fmt: skip
        return torch.ops.quantized.linear_prepack(weight, None)

    starts = range(0, weight_int8.shape[0], ROWS)
    if len(starts) == 1:
        return [one(0)]
    with ThreadPoolExecutor(packing_threads()) as pool:  # fbgemm packs on one thread, without the GIL
        return list(pool.map(one, starts))


def packing_threads() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def multiply(flat: torch.Tensor, packed: list, bits: int) -> torch.Tensor:
    """Rows of `flat` times packed int8 weights, each row rounded to `bits` (8 or 7) with its own scale.

    fbgemm quantizes its input with one scale for the whole batch, which would make a row's result
    depend on its neighbours. So each row is first divided by its largest magnitude and given two
    extra inputs, -1 and +1, whose weights are zero: every row then spans exactly [-1, 1], the
    kernel's scale is the same alone or in any batch, and each row's result is multiplied back by
    its magnitude."""
    if bits not in INPUT_BITS:
        raise ValueError(f"int8 input bits must be one of {INPUT_BITS}, not {bits}")
    x = flat.float()
    magnitude = x.abs().amax(1, keepdim=True).clamp(min=1e-30)
    extra = x.new_zeros(x.shape[0], PAD)
    extra[:, 0], extra[:, 1] = -1.0, 1.0
    x = torch.cat([x / magnitude, extra], 1)
    # every block sees the same input, rounded the same way (its range is always [-1, 1])
    parts = [torch.ops.quantized.linear_dynamic(x, block, bits == 7) for block in packed]
    out = parts[0] if len(parts) == 1 else torch.cat(parts, 1)
    return (out * magnitude).to(flat.dtype)


def check(bits: int) -> float:
    """Relative error of a small product whose int16 pair sums saturate unless the kernel adds in
    int32 or the inputs use 7 bits: rows of +1 against a row of weights all 127 (255 x 127 x 2 per
    pair in 8 bits), matching signs, and random rows; against the same int8 weights in float."""
    gen = torch.Generator().manual_seed(0)
    k = 256
    weight = torch.randint(-127, 128, (16, k), generator=gen, dtype=torch.int8)
    signs = torch.where(torch.arange(k) % 2 == 0, 1, -1)
    weight[0] = 127
    weight[1] = (127 * signs).to(torch.int8)
    scale = torch.full((16,), 0.01)
    x = torch.randn(4, k, generator=gen)
    x[0] = 1.0
    x[1] = signs.float()
    x[2] = x[2].abs()
    want = x.double() @ (weight.double() * scale.double()[:, None]).T
    got = multiply(x, pack(weight, scale), bits).double()
    return float((got - want).norm() / want.norm())


def choose_input_bits(first: int) -> int | None:
    """`first` (8 or 7) if its self-check passes, else 7 with a warning, else None (int8 inputs are
    not to be used: the caller keeps float inputs) with a warning."""
    tried = []
    for bits in dict.fromkeys((first, 7)):
        err = check(bits)
        if err < CHECK_LIMIT:
            if tried:
                log.warning("int8 inputs in %d bits came out wrong on this CPU (relative error %.3f: fbgemm's "
                            "kernel saturates int16 sums); using %d bits", first, tried[0], bits)  # fmt: skip
            return bits
        tried.append(err)
    log.warning("int8 inputs came out wrong on this CPU in %s bits (relative error %s): prompts and the "
                "output layer multiply float inputs instead", "/".join(map(str, dict.fromkeys((first, 7)))),
                "/".join(f"{e:.3f}" for e in tried))  # fmt: skip
    return None


@functools.cache
def input_bits() -> int | None:
    """The input range for int8 x int8 products on this machine, checked once per process: 8 bits
    with AVX-512 VNNI, else 7; None without fbgemm or when no range passes the self-check."""
    if not available():
        return None
    return choose_input_bits(8 if vnni() else 7)
