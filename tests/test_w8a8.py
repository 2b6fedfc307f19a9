"""int8 x int8 products with fbgemm on both kinds of x86 CPU: without AVX-512 VNNI its kernel adds
pairs of u8 x s8 products into int16 and saturates, so inputs are rounded to 7 bits there.

fbgemm's FBGEMM_ENABLE_INSTRUCTIONS=AVX2 makes it use its AVX2 kernel on any x86 CPU (set before
torch loads, so in a child process): the saturating kernel is tested on every machine, a VNNI one
included, with real products and no stand-in for fbgemm.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from assistant.offline import w8a8
from assistant.offline.llm import Int8Linear, W8A8Linear, quantize

pytestmark = pytest.mark.skipif(not w8a8.available(), reason="torch has no fbgemm here")

REPO = Path(__file__).resolve().parents[1]
AVX2 = {"FBGEMM_ENABLE_INSTRUCTIONS": "AVX2"}  # fbgemm's AVX2 kernel (vpmaddubsw: int16 pair sums)


def child(script: str, env: dict[str, str], timeout_s: float = 300) -> subprocess.CompletedProcess:
    """Run `script` in a fresh Python with `env` added (fbgemm reads its settings once, at start)."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True,
                          cwd=REPO, env={**os.environ, **env}, timeout=timeout_s)  # fmt: skip


def test_the_avx2_kernel_saturates_8_bit_inputs_and_not_7_bit_ones():
    """The self-check's product really saturates int16 pair sums on the AVX2 kernel in 8 bits (so
    the check can fail), and the 7-bit range gives the float result on that same kernel."""
    run = child("from assistant.offline import w8a8; print(w8a8.check(8), w8a8.check(7))", AVX2)
    assert run.returncode == 0, run.stderr[-2000:]
    eight, seven = map(float, run.stdout.split())
    assert eight > 0.2, eight  # most of the result lost
    assert seven < w8a8.CHECK_LIMIT, seven


@pytest.mark.parametrize("bits", w8a8.INPUT_BITS)
def test_inputs_that_would_saturate_come_out_right_in_the_range_chosen_here(bits):
    """On this machine's own kernel: 7 bits always match float; 8 bits match where the CPU has
    AVX-512 VNNI (int32 sums), and are chosen there; without it 7 are chosen. Whatever is chosen
    passes the check (with FBGEMM_ENABLE_INSTRUCTIONS set, fbgemm's kernel is not the CPU's)."""
    own_kernel = "FBGEMM_ENABLE_INSTRUCTIONS" not in os.environ
    err = w8a8.check(bits)
    if bits == 7 or (w8a8.vnni() and own_kernel):
        assert err < w8a8.CHECK_LIMIT, err
    chosen = w8a8.input_bits()
    assert w8a8.check(chosen) < w8a8.CHECK_LIMIT
    if own_kernel:
        assert chosen == (8 if w8a8.vnni() else 7)


def test_the_self_check_falls_back_to_7_bits_with_one_warning_line():
    """Where 8 bits come out wrong, the start-up check picks 7 and says so in one line; a model
    quantized there with the checked range decodes close to its original weights."""
    run = child("""
        import logging, torch
        logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
        from assistant.offline import w8a8
        from assistant.offline.llm import quantize
        bits = w8a8.choose_input_bits(8)
        print(bits)
        torch.manual_seed(0)
        net = torch.nn.Module()
        net.lm_head = torch.nn.Linear(256, 1024, bias=False).to(torch.bfloat16)
        x = torch.randn(3, 1, 256, dtype=torch.bfloat16)
        with torch.inference_mode():
            want = net.lm_head(x).float()
            quantize(net, 8, input_bits=bits)
            got = net.lm_head(x).float()
        print(net.lm_head.input_bits, float((got - want).norm() / want.norm()))
    """, AVX2)
    assert run.returncode == 0, run.stderr[-2000:]
    chosen, layer_bits, err = run.stdout.split()
    assert chosen == "7" and layer_bits == "7"
    assert float(err) < 0.02
    warnings = [line for line in run.stderr.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1 and "using 7 bits" in warnings[0], run.stderr


def test_without_a_safe_range_every_layer_keeps_float_inputs():
    """input_bits None (what the check returns when no range passes): no W8A8 layer, and prompts
    run on the original weights exactly."""
    torch.manual_seed(0)
    net = torch.nn.Module()
    net.up = torch.nn.Linear(256, 512, bias=False)
    net.lm_head = torch.nn.Linear(512, 1024, bias=False)
    net = net.to(torch.bfloat16).eval()
    quantize(net, 8, input_bits=None)
    assert type(net.lm_head) is Int8Linear and not isinstance(net.lm_head, W8A8Linear)
    prompt = torch.randn(1, 5, 256, dtype=torch.bfloat16)
    with torch.inference_mode():
        assert torch.equal(net.up(prompt), net.up.linear(prompt))


@pytest.mark.parametrize(("flags", "has"), [("fpu avx2 avx512f avx512_vnni", True), ("fpu avx2 avx_vnni", False),
                                            ("fpu avx2", False)])  # fmt: skip
def test_vnni_is_read_from_the_cpu_flags(tmp_path, flags, has):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: x\nflags\t\t: {flags}\n\n")
    assert w8a8.vnni(cpuinfo) is has
    assert w8a8.vnni(tmp_path / "missing") is False


def test_the_low_bit_tests_pass_on_the_avx2_kernel():
    """tests/test_low_bit.py (five of its int8 checks failed on an AVX2-only EPYC) on fbgemm's AVX2
    kernel, whatever this CPU has."""
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_low_bit.py"],
                         capture_output=True, text=True, cwd=REPO, env={**os.environ, **AVX2}, timeout=600)  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:]
    assert " passed" in run.stdout and "failed" not in run.stdout
