"""Streamed speech for Qwen3-Omni: the multi-codebook talker beside the thinker, Code2Wav in chunks.

The talker is prefilled with the user turns' thinker states and the start of the assistant turn
(which needs only the first reply token), then makes one frame per step: a first-codebook code
from the talker, the residual codebooks from its code predictor, conditioned on the next reply
token's projected embedding (then text-eos, then pad). Code2Wav is a causal ConvNet: a chunk is
decoded with left context and its context samples dropped, like the model's `chunked_decode`.

Concurrent turns share forward passes: `step_talkers` makes one frame for each of several turns:
the residual codebooks of all of them in one run of the code predictor (every row has the same
length there, so no padding), then the next first-codebook code in one talker pass over a
`KVBatch` (turns join and leave at any step). Each row samples with its own generator. The
batched code predictor is our own loop, not HF `generate()` (whose sampling draws from the one
global generator), so a turn's codes do not depend on the rows beside it. `pull_streams` decodes
the ready chunks of several streams in one Code2Wav call per group of equal-length windows
(Code2Wav has no padding mask: a padded window would not give the samples it gives alone).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import torch

from assistant.backends.batching import group_indices

__all__ = ["Code2WavStream", "Talker3", "pull_streams", "step_talkers"]


@dataclass
class Talker3:
    model: object  # Qwen3OmniMoeForConditionalGeneration
    generator: torch.Generator | None
    max_codes: int
    cache: object = None
    next_pos: int = 0
    frames: list[list[int]] = field(default_factory=list)  # one list of num_code_groups codes per frame
    history: list[int] = field(default_factory=list)
    last_hidden: torch.Tensor | None = None
    done: bool = False
    started: bool = False
    top_k: int = 50
    temperature: float = 0.9
    repetition_penalty: float = 1.05

    @property
    def talker(self):
        return self.model.talker

    def special(self, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Projected tts bos, eos and pad embeddings, each (1, 1, d)."""
        cfg = self.model.config
        ids = torch.tensor([[cfg.tts_bos_token_id, cfg.tts_eos_token_id, cfg.tts_pad_token_id]], device=device)
        return self.talker.text_projection(self.model.thinker.get_input_embeddings()(ids)).chunk(3, dim=1)

    def text_part(self, token: int, device) -> torch.Tensor:
        emb = self.model.thinker.get_input_embeddings()(torch.tensor([[token]], device=device))
        return self.talker.text_projection(emb)

    def start(self, inputs: dict, prompt_states: tuple, first_token: int, voice: str) -> None:
        model, t = self.model, self.talker
        cfg, tcfg = model.config, model.config.talker_config
        input_ids = inputs["input_ids"]
        device = input_ids.device
        embed, hidden = prompt_states
        seq = input_ids.shape[1]
        # User turns: every position whose <|im_start|> role is `user`.
        pos = torch.arange(seq, device=device)
        starts = torch.where(input_ids[0] == cfg.im_start_token_id, pos, torch.full_like(pos, -1))
        prev = torch.cummax(starts, dim=0).values.clamp_min(0)
        role = input_ids[0].gather(0, (prev + 1).clamp_max(seq - 1))
        user = role == cfg.user_token_id
        tc = cfg.thinker_config
        media = (input_ids[0] == tc.audio_token_id) | (input_ids[0] == tc.image_token_id) | (
            input_ids[0] == tc.video_token_id)
        user_part = torch.empty(int(user.sum()), tcfg.text_config.hidden_size, device=device, dtype=t.dtype)
        u_media = media[user]
        if u_media.any():
            user_part[u_media] = t.hidden_projection(hidden[0][user][u_media])
        user_part[~u_media] = t.text_projection(embed[0][user][~u_media])
        user_ids = input_ids[0][user]
        # Assistant start: "<|im_start|>assistant\n" + pads + tts_bos + the first reply token.
        a0 = int(torch.nonzero((input_ids[0, :-1] == cfg.im_start_token_id)
                               & (input_ids[0, 1:] == cfg.assistant_token_id)).flatten()[-1])
        bos, _, pad = self.special(device)
        head = t.text_projection(embed[:, a0:a0 + 3])
        text = torch.cat([head, pad.expand(1, 4, -1), bos, self.text_part(first_token, device)], dim=1)
        speaker = tcfg.speaker_id[voice.lower()]
        codec_ids = torch.tensor([[tcfg.codec_nothink_id, tcfg.codec_think_bos_id, tcfg.codec_think_eos_id,
                                   speaker, tcfg.codec_pad_id, tcfg.codec_bos_id]], device=device)
        codec = torch.cat([torch.zeros(1, 3, text.shape[-1], device=device, dtype=t.dtype),
                           t.get_input_embeddings()(codec_ids)], dim=1)
        x = torch.cat([user_part.unsqueeze(0), text + codec], dim=1)
        ids = torch.cat([user_ids.unsqueeze(0),
                         torch.full((1, text.shape[1]), cfg.tts_pad_token_id, device=device)], dim=1)
        mask = torch.ones_like(ids)
        fam = inputs.get("feature_attention_mask")
        has_media = fam is not None or inputs.get("image_grid_thw") is not None
        if has_media:
            positions, deltas = t.get_rope_index(ids, inputs.get("image_grid_thw"), None, mask, False,
                                                 fam.sum(-1) if fam is not None else None, None)
            delta = int(deltas.reshape(-1)[0])
        else:
            positions = torch.arange(ids.shape[1], device=device).view(1, 1, -1).expand(3, 1, -1)
            delta = 0
        out = t(inputs_embeds=x, position_ids=positions, attention_mask=mask, use_cache=True,
                output_hidden_states=True, generation_step=-1)
        self.cache = out.past_key_values
        self.next_pos = ids.shape[1] + delta
        self.history = ids[0].tolist()
        self.started = True
        self._accept(out)

    def step(self, part: torch.Tensor) -> None:
        """One frame: residual codebooks for the last code, then the next first-codebook code."""
        t = self.talker
        device = part.device
        last = torch.tensor([[self.frames[-1][0]]], device=device)
        last_embed = t.get_input_embeddings()(last)
        gen_kwargs = {"do_sample": t.code_predictor.generation_config.do_sample}
        if gen_kwargs["do_sample"]:
            gen_kwargs.update(top_k=50, top_p=0.8)
        with _seeded(self.generator):
            res = t.code_predictor.generate(inputs_embeds=torch.cat((self.last_hidden, last_embed), dim=1),
                                            max_new_tokens=self.model.config.talker_config.num_code_groups - 1,
                                            output_hidden_states=True, return_dict_in_generate=True, **gen_kwargs)
        self.frames[-1] = [self.frames[-1][0], *res.sequences[0].tolist()]
        mids = [h[0] for h in res.hidden_states[1:]]
        tail = t.code_predictor.get_input_embeddings()[-1](res.sequences[..., -1:])
        x = torch.cat([last_embed, *mids, tail], dim=1).sum(1, keepdim=True) + part
        pos = torch.full((3, 1, 1), self.next_pos, device=device, dtype=torch.long)
        mask = torch.ones(1, self.cache.get_seq_length() + 1, device=device, dtype=torch.long)
        out = t(inputs_embeds=x, position_ids=pos, attention_mask=mask, past_key_values=self.cache,
                use_cache=True, output_hidden_states=True, generation_step=0)
        self.cache = out.past_key_values
        self.next_pos += 1
        self._accept(out)

    def close(self) -> None:
        """The turn is over (finished or cancelled): a batch it sits in drops its rows next sync."""
        self.done = True
        self.cache = None

    def _accept(self, out) -> None:
        self._accept_row(out.logits[0, -1], out.hidden_states[0][-1][:, -1:])

    def _accept_row(self, logits: torch.Tensor, last_hidden: torch.Tensor) -> None:
        """Sample the next first-codebook code from this row's (vocab,) logits."""
        tcfg = self.model.config.talker_config
        vocab = tcfg.text_config.vocab_size
        self.last_hidden = last_hidden
        logits = logits.float().cpu()
        seen = torch.tensor(sorted(set(self.history)), dtype=torch.long)
        seen = seen[(seen >= 0) & (seen < vocab)]
        picked = logits[seen]
        logits[seen] = torch.where(picked < 0, picked * self.repetition_penalty, picked / self.repetition_penalty)
        banned = torch.arange(vocab - 1024, vocab)
        banned = banned[banned != tcfg.codec_eos_token_id]
        logits[banned] = float("-inf")
        logits = logits / self.temperature
        kth = torch.topk(logits, min(self.top_k, logits.numel())).values[-1]
        logits[logits < kth] = float("-inf")
        code = int(torch.multinomial(torch.softmax(logits, -1), 1, generator=self.generator))
        self.history.append(code)
        # The frame's residual codes come with the next step; a finished frame list ends at eos.
        if code == tcfg.codec_eos_token_id or len(self.frames) >= self.max_codes:
            if self.frames and len(self.frames[-1]) == 1:
                self.frames.pop()  # its residual codes were never made
            self.done = True
            self.cache = None
            return
        self.frames.append([code])

    def complete_frames(self) -> list[list[int]]:
        """Frames whose residual codes are known (the newest one gets them with the next step)."""
        return [f for f in self.frames if len(f) > 1]


def step_talkers(talkers: list[Talker3], parts: list[torch.Tensor], batch, sizes: Counter | None = None) -> None:
    """One frame for each of `talkers` in one code-predictor run and one talker pass over `batch`."""
    t = talkers[0].talker
    batch.sync(talkers, keep=[r for r in batch.rows if not r.done])
    device = parts[0].device
    n = len(talkers)
    last = torch.tensor([[x.frames[-1][0]] for x in talkers], device=device)
    last_embed = t.get_input_embeddings()(last)
    residual, embeds = _residuals(talkers, torch.cat([x.last_hidden for x in talkers]), last_embed)
    for talker, codes in zip(talkers, residual, strict=True):
        talker.frames[-1] = [talker.frames[-1][0], *codes]
    x = last_embed + embeds + torch.cat(parts, dim=0)
    pos = torch.tensor([x_.next_pos for x_ in talkers], device=device).view(1, n, 1).expand(3, n, 1)
    with batch.undone_on_error():  # a fault mid-forward: each talker can still step alone
        mask = batch.grow()
        out = t(inputs_embeds=x, position_ids=pos, attention_mask=mask, past_key_values=batch.cache,
                use_cache=True, output_hidden_states=True, generation_step=0)
    batch.cache = out.past_key_values
    hidden = out.hidden_states[0][-1]
    for i, talker in enumerate(talkers):
        talker.next_pos += 1
        talker._accept_row(out.logits[i, -1], hidden[i:i + 1, -1:])
    if sizes is not None:
        sizes["talker", n] += 1


def _residuals(talkers: list[Talker3], last_hidden: torch.Tensor, last_embed: torch.Tensor):
    """The residual codebooks of every row's newest frame: (codes per row, sum of their embeddings
    (B, 1, d)). Sampling as Qwen ships it (top-k 50, top-p 0.8, or greedy where its generation
    config says so), each row from a generator seeded from its turn's, one draw per frame."""
    cp = talkers[0].talker.code_predictor
    groups = talkers[0].model.config.talker_config.num_code_groups
    gc = cp.generation_config
    sample = bool(gc.do_sample)
    gens = [None if x.generator is None else
            torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=x.generator)))
            for x in talkers]
    out = cp(inputs_embeds=torch.cat([last_hidden, last_embed], dim=1), use_cache=True)
    cache = out.cache
    codes: list[torch.Tensor] = []
    embeds = 0
    tables = cp.get_input_embeddings()
    for g in range(1, groups):
        tok = _sample_rows(out.logits[:, -1], sample, gens, gc.temperature or 1.0)
        codes.append(tok)
        embeds = embeds + tables[g - 1](tok.unsqueeze(1))
        if g < groups - 1:
            out = cp(input_ids=tok.unsqueeze(1), cache=cache, use_cache=True, generation_steps=g)
            cache = out.cache
    per_row = torch.stack(codes, dim=1).tolist()
    return per_row, embeds


def _sample_rows(logits: torch.Tensor, sample: bool, gens: list, temperature: float, top_k: int = 50,
                 top_p: float = 0.8) -> torch.Tensor:
    """One code per row of (B, vocab) logits: greedy, or top-k then top-p from each row's generator."""
    if not sample:
        return logits.argmax(-1)
    rows = []
    for row, gen in zip(logits.float().cpu(), gens, strict=True):
        row = row / temperature
        kth = torch.topk(row, min(top_k, row.numel())).values[-1]
        row[row < kth] = float("-inf")
        probs = torch.softmax(row, -1)
        sorted_p, idx = torch.sort(probs, descending=True)
        keep = torch.cumsum(sorted_p, 0) - sorted_p < top_p
        probs = torch.zeros_like(probs).scatter(0, idx[keep], sorted_p[keep])
        rows.append(torch.multinomial(probs, 1, generator=gen))
    return torch.cat(rows).to(logits.device)


class _seeded:
    """Run HF generate()'s sampling (global RNG) from the turn's generator, then restore it."""

    def __init__(self, generator: torch.Generator | None) -> None:
        self.generator = generator

    def __enter__(self):
        if self.generator is not None:
            self.state = torch.random.get_rng_state()
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=self.generator)))

    def __exit__(self, *exc):
        if self.generator is not None:
            torch.random.set_rng_state(self.state)
        return False


class Code2WavStream:
    """Frames of codes in, audio out: causal decoding with left context, as `chunked_decode` does."""

    def __init__(self, code2wav, first_chunk: int = 2, chunk: int = 12, left_context: int = 25) -> None:
        self.net = code2wav
        self.first_chunk = first_chunk
        self.chunk = chunk
        self.left = left_context
        self.frames: list[list[int]] = []
        self.sent = 0
        self.upsample = int(code2wav.total_upsample)

    def push(self, frames: list[list[int]]) -> None:
        self.frames.extend(frames)

    def pull(self, final: bool = False) -> np.ndarray:
        """Audio for the frames that are ready. The newest frame is held back until the next one
        exists (a causal transposed convolution completes a frame's samples only then)."""
        return pull_streams([self], [final])[0]

    def _plan(self, final: bool) -> tuple[int, int, int] | None:
        """(context, first, end) frames of the next chunk: [first - context, end] is decoded (one
        frame past the end, but with `final`), [first, end) kept; None: not enough frames yet.
        Chunks are `chunk` frames (`first_chunk` the first one) so that concurrent streams'
        windows have the same length and share a call."""
        avail = len(self.frames)
        want = self.first_chunk if self.sent == 0 else self.chunk
        if avail <= self.sent or (not final and avail - 1 - self.sent < want):
            return None
        end = avail if final and avail - 1 - self.sent < want else self.sent + want
        return min(self.left, self.sent), self.sent, end

    def _window(self, plan: tuple[int, int, int]) -> list[list[int]]:
        ctx, first, end = plan
        return self.frames[first - ctx:min(end + 1, len(self.frames))]

    def _take(self, plan: tuple[int, int, int], wav: np.ndarray) -> np.ndarray:
        ctx, first, end = plan
        self.sent = end
        return wav[ctx * self.upsample:(end - first + ctx) * self.upsample]

    def decode_all(self, frames: list[list[int]]) -> np.ndarray:
        """One-shot decode, as the model's own generate() does it (chunks of 300, context 25)."""
        if not frames:
            return np.zeros(0, dtype=np.float32)
        device = next(self.net.parameters()).device
        codes = torch.tensor(frames, device=device).T.unsqueeze(0)
        return self.net.chunked_decode(codes, chunk_size=300, left_context_size=25).reshape(-1).float().cpu().numpy()


def pull_streams(streams: list[Code2WavStream], finals: list[bool], sizes: Counter | None = None) -> list[np.ndarray]:
    """`Code2WavStream.pull` for several streams: one Code2Wav call per group of equal-length windows."""
    out: list[list[np.ndarray]] = [[] for _ in streams]
    active = list(range(len(streams)))
    while active:
        plans = [(i, streams[i]._plan(finals[i])) for i in active]
        plans = [(i, p) for i, p in plans if p is not None]
        if not plans:
            break
        windows = [streams[i]._window(p) for i, p in plans]
        for idx in group_indices(windows, len).values():
            net = streams[plans[idx[0]][0]].net
            device = next(net.parameters()).device
            codes = torch.tensor([windows[k] for k in idx], device=device).transpose(1, 2)  # (B, groups, frames)
            wav = net(codes).reshape(len(idx), -1).float().cpu().numpy()
            for j, k in enumerate(idx):
                i, plan = plans[k]
                out[i].append(streams[i]._take(plan, wav[j]))
            if sizes is not None:
                sizes["code2wav", len(idx)] += 1
        active = [i for i, _ in plans]
    return [np.concatenate(o) if o else np.zeros(0, dtype=np.float32) for o in out]
