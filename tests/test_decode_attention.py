"""The offline LLM's attention for decode steps (one new token per row) gives what SDPA gives,
with grouped key/value heads and the left padding of a batch; prompts still go to SDPA."""

from __future__ import annotations

import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from assistant.offline.llm import decode_attention


class _Layer(torch.nn.Module):
    num_key_value_groups = 7  # 14 query heads over 2 key/value heads, as in Qwen2.5-0.5B
    is_causal = True


def _inputs(rows: int, queries: int, context: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(rows, 14, queries, 64, generator=g).to(torch.bfloat16)
    k = torch.randn(rows, 2, context, 64, generator=g).to(torch.bfloat16)
    v = torch.randn(rows, 2, context, 64, generator=g).to(torch.bfloat16)
    return q, k, v


def test_one_token_per_row_matches_sdpa_with_padding():
    q, k, v = _inputs(rows=3, queries=1, context=300)
    mask = torch.ones(3, 1, 1, 300, dtype=torch.bool)
    mask[1, ..., :40] = False  # left padding of a shorter row
    mask[2, ..., :299] = False  # a row that sees only itself
    got, _ = decode_attention(_Layer(), q, k, v, mask, scaling=0.125)
    want, _ = sdpa_attention_forward(_Layer(), q, k, v, mask, scaling=0.125)
    assert got.shape == want.shape == (3, 1, 14, 64)
    assert torch.allclose(got.float(), want.float(), atol=2e-2)
    assert torch.allclose(got[2].float(), v[2, :, -1].repeat_interleave(7, 0).float(), atol=1e-2)  # itself only


def test_no_mask_and_prompts_are_unchanged():
    q, k, v = _inputs(rows=1, queries=1, context=50, seed=1)
    got, _ = decode_attention(_Layer(), q, k, v, None, scaling=0.125)
    want, _ = sdpa_attention_forward(_Layer(), q, k, v, None, scaling=0.125)
    assert torch.allclose(got.float(), want.float(), atol=2e-2)
    q, k, v = _inputs(rows=1, queries=9, context=9, seed=2)
    got, _ = decode_attention(_Layer(), q, k, v, None, scaling=0.125)
    want, _ = sdpa_attention_forward(_Layer(), q, k, v, None, scaling=0.125)
    assert torch.equal(got, want)  # a prompt: SDPA itself
