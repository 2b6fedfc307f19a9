"""Low-bit decode weights of the offline LLM (int4 groups, int8 rows): close to the original layer for
one-token decode steps, exact for prompts, and kept on disk so a restart does not quantize again."""

from __future__ import annotations

import pytest
import torch

from assistant.offline.llm import INT4_GROUP, Int4Linear, Int8Linear, W8A8Linear, quantize, w8a8_available


def model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = torch.nn.Module()
    net.up = torch.nn.Linear(256, 512, bias=False)
    net.down_proj = torch.nn.Linear(512, 256, bias=True)
    net.lm_head = torch.nn.Linear(256, 1024, bias=False)
    return net.to(torch.bfloat16).eval()


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.float() - want.float()).norm() / want.float().norm())


@pytest.mark.parametrize("bits,limit", [(4, 0.12), (8, 0.02)])
def test_a_decode_step_stays_close_to_the_original_weights(bits, limit):
    net = model()
    x = torch.randn(3, 1, 256, dtype=torch.bfloat16)  # three rows decoding one token each
    with torch.inference_mode():
        want = net.lm_head(x)
    quantize(net, bits, keep_int8=())
    with torch.inference_mode():
        got = net.lm_head(x)
    assert got.shape == (3, 1, 1024)
    assert relative_error(got, want) < limit
    assert isinstance(net.up, Int4Linear if bits == 4 else Int8Linear)


def test_without_int8_prompts_a_prompt_uses_the_original_weights_exactly():
    net = model()
    quantize(net, 4, keep_int8=(), int8_prompts=False)
    prompt = torch.randn(1, 7, 256, dtype=torch.bfloat16)
    with torch.inference_mode():
        assert torch.equal(net.up(prompt), net.up.linear(prompt))


@pytest.mark.skipif(not w8a8_available(), reason="torch has no fbgemm here")
@pytest.mark.parametrize("bits", [4, 8])
def test_a_prompt_runs_on_int8_and_each_position_is_its_own(tmp_path, bits):
    """Prompts multiply int8 weights with int8 inputs (by default): close to the original layer; a
    position's result does not depend on the others in its prompt (each is scaled alone); the
    original weights are dropped (memory), and a restart reads the prompt weights back."""
    net = model()
    prompt = torch.randn(1, 7, 256, dtype=torch.bfloat16)
    prompt[0, 3] *= 30  # a loud position
    with torch.inference_mode():
        want = net.up(prompt)
    for _ in range(2):  # quantized and saved, then read back
        net = model()
        quantize(net, bits, tmp_path / "w.safetensors")
        assert net.up.linear.weight is None and net.down_proj.linear.weight is None
        with torch.inference_mode():
            got = net.up(prompt)
            assert torch.equal(net.up(prompt[:, 2:5]), got[:, 2:5])  # the same positions in another prompt
            assert net.down_proj(torch.randn(1, 5, 512, dtype=torch.bfloat16)).shape == (1, 5, 256)
        assert relative_error(got, want) < 0.02


def test_named_layers_stay_int8_and_the_rest_is_int4():
    net = model()
    quantize(net, 4, keep_int8=("lm_head", "down_proj"), w8a8=())
    assert isinstance(net.up, Int4Linear)
    assert isinstance(net.down_proj, Int8Linear) and isinstance(net.lm_head, Int8Linear)


@pytest.mark.skipif(not w8a8_available(), reason="torch has no fbgemm here")
def test_the_output_layer_with_int8_inputs_is_close_and_each_row_is_its_own():
    """The output layer multiplies int8 inputs too (fbgemm); fbgemm scales a whole batch at once,
    so a row must give the same result alone as beside any other rows, even a much louder one or
    an empty one."""
    net = model()
    quantize(net, 4, keep_int8=("lm_head", "down_proj"))  # the default: lm_head is W8A8
    assert isinstance(net.lm_head, W8A8Linear) and isinstance(net.down_proj, Int8Linear)
    rows = torch.randn(4, 1, 256, dtype=torch.bfloat16)
    rows[1] *= 40  # a loud row
    rows[2] = 0  # and an empty one
    with torch.inference_mode():
        batch = net.lm_head(rows)
        alone = torch.cat([net.lm_head(rows[i : i + 1]) for i in range(4)])
        want = net.lm_head.linear(rows)
    assert torch.equal(batch, alone)
    assert not batch[2].any()
    for i in (0, 1, 3):
        assert relative_error(batch[i], want[i]) < 0.02


@pytest.mark.skipif(not w8a8_available(), reason="torch has no fbgemm here")
def test_a_big_output_layer_is_packed_in_blocks_and_stays_whole():
    """fbgemm packs a big matrix slowly, so the output layer (151936 rows in the 0.5B) is packed in
    blocks of rows: their results join in order, each row of the vocabulary where it belongs."""
    torch.manual_seed(1)
    net = torch.nn.Module()
    net.lm_head = torch.nn.Linear(64, 20_000, bias=False).to(torch.bfloat16)  # three blocks
    x = torch.randn(2, 1, 64, dtype=torch.bfloat16)
    with torch.inference_mode():
        want = net.lm_head(x)
        quantize(net, 4)
        got = net.lm_head(x)
    assert isinstance(net.lm_head, W8A8Linear) and got.shape == (2, 1, 20_000)
    assert relative_error(got, want) < 0.02
    assert (got.argmax(-1) == want.argmax(-1)).all()


def test_a_layer_int4_cannot_pack_falls_back_to_int8():
    net = torch.nn.Module()
    net.odd_inputs = torch.nn.Linear(INT4_GROUP + 3, 64).to(torch.bfloat16)
    net.odd_outputs = torch.nn.Linear(64, 1000).to(torch.bfloat16)
    quantize(net, 4, keep_int8=())
    assert isinstance(net.odd_inputs, Int8Linear) and isinstance(net.odd_outputs, Int8Linear)
    with torch.inference_mode():
        assert net.odd_outputs(torch.randn(1, 1, 64, dtype=torch.bfloat16)).shape == (1, 1, 1000)


def test_the_saved_weights_give_the_same_results_after_a_restart(tmp_path):
    cache = tmp_path / "int4.safetensors"
    first, second = model(), model()
    quantize(first, 4, cache)
    assert cache.is_file()
    stamp = cache.stat().st_mtime_ns
    quantize(second, 4, cache)  # a restart: read, not computed again
    assert cache.stat().st_mtime_ns == stamp
    x = torch.randn(2, 1, 256, dtype=torch.bfloat16)
    h = torch.randn(2, 1, 512, dtype=torch.bfloat16)
    with torch.inference_mode():
        assert torch.equal(first.up(x), second.up(x))
        assert torch.equal(first.down_proj(h), second.down_proj(h))
        assert torch.equal(first.lm_head(x), second.lm_head(x))


def test_weights_read_back_serve_a_batch_of_many_rows(tmp_path):
    """The int8 kernel crashed (SIGSEGV) on 4+ rows when its weights sat where safetensors had read
    them, at an offset 8 bytes off a 64-byte boundary: weights read back are copied to aligned memory.
    Run in a child process, so a crash fails this test rather than ending the run."""
    import subprocess
    import sys
    import textwrap
    from pathlib import Path

    script = textwrap.dedent(f"""
        import sys, torch
        from pathlib import Path
        sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
        from test_low_bit import model
        from assistant.offline.llm import quantize, _LowBitLinear
        for _ in range(2):  # the first quantizes and saves; the second reads back, as a restart does
            net = model()
            quantize(net, 4, Path({str(tmp_path / "w.safetensors")!r}))
        misaligned = [n for n, b in net.named_buffers() if b.data_ptr() % 64]
        assert not misaligned, misaligned
        with torch.inference_mode():
            for rows in (1, 4, 6, 16):
                out = net.lm_head(torch.randn(rows, 1, 256, dtype=torch.bfloat16))
                assert out.shape == (rows, 1, 1024)
                out = net.down_proj(torch.randn(rows, 1, 512, dtype=torch.bfloat16))
                assert out.shape == (rows, 1, 256)
        print("ok")
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "ok", (run.returncode, run.stderr[-2000:])


def test_other_widths_are_refused():
    with pytest.raises(ValueError, match="weight bits"):
        quantize(model(), 3)
