"""Streamed speech for Qwen2.5-Omni: the talker runs beside the thinker, the vocoder in chunks.

The talker consumes one thinker state (hidden + embedding of a reply token) per codec code, so it
can start as soon as the thinker has decoded its first reply token and follow it one step behind.
Codes go to `Token2WavStream`, which turns them into audio chunk by chunk: the DiT (flow-matching
ODE over blocks of 24 mel frames) runs on a window with left context and a little look-ahead,
BigVGAN on the resulting mel with context on both sides, and consecutive chunks are cross-faded
over a few milliseconds. The initial noise of the ODE is drawn per block from the turn's seed, so
the streamed waveform can be compared with a one-shot decode of the same codes and noise.

Concurrent turns share forward passes: `step_talkers` advances several turns' talkers by one code
in one batched pass over a `KVBatch` (turns join and leave at any step; each keeps its own
sampling state and generator), and `pull_streams` decodes the ready chunks of several streams
with one DiT ODE and one BigVGAN call per group of equal-shaped windows. Only equal shapes are
stacked: the DiT's block attention has no padding mask (its look-ahead/look-back blocks would see
padded frames, and left padding would shift the block grid) and BigVGAN's convolutions would
mix padding into the edge samples, so padded windows could not give the same audio as alone.
Steady-state chunks all have the same window (left + chunk + right codes), as do first chunks,
so in practice nearly every chunk of concurrent streams lands in a shared call.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import torch

from assistant.backends.batching import group_indices, sample_codes

__all__ = ["Talker25", "Token2WavStream", "pull_streams", "step_talkers"]

FRAMES_PER_CODE = 2  # DiT `repeats`: mel frames per codec code (50 codes/s, 100 frames/s)
SAMPLES_PER_FRAME = 240  # BigVGAN upsampling: 24 kHz / 100 frames/s


@dataclass
class Talker25:
    """Per-turn talker state: KV cache, codes so far, sampling settings as Qwen ships them."""

    model: object  # Qwen2_5OmniForConditionalGeneration
    generator: torch.Generator | None
    max_codes: int
    cache: object = None
    next_pos: int = 0
    codes: list[int] = field(default_factory=list)
    seen: torch.Tensor | None = None  # (vocab,) bool: codes in the prompt or made, for the repetition penalty
    done: bool = False
    top_k: int = 40
    top_p: float = 0.8
    temperature: float = 0.9
    repetition_penalty: float = 1.05

    @property
    def talker(self):
        return self.model.talker

    def start(self, inputs: dict, prompt_states: tuple, first_part: torch.Tensor, first_token: int,
              speaker: dict) -> None:
        """Prefill with the prompt's thinker states, the voice's text-bos and the first reply token."""
        t, thinker = self.talker, self.model.thinker
        input_ids = inputs["input_ids"]
        embeds, last = prompt_states
        embeds = embeds.clone()
        cfg = self.model.config.thinker_config
        media = (input_ids == cfg.audio_token_index) | (input_ids == cfg.image_token_index) | (
            input_ids == cfg.video_token_index)
        embeds[media] = 0  # as Qwen does: the talker does not see raw media embeddings
        device = input_ids.device
        bos = torch.tensor([[speaker["bos_token"]]], device=device)
        embed_tokens = thinker.get_input_embeddings()
        x = torch.cat([last + embeds, embed_tokens(bos), first_part], dim=1)
        codec_embed = t.get_input_embeddings()
        x[:, -1] += codec_embed(torch.tensor([t.codec_bos_token], device=device))[0]
        x[:, -2] += codec_embed(torch.tensor([t.codec_pad_token], device=device))[0]
        text_ids = torch.cat([input_ids, bos, torch.tensor([[first_token]], device=device)], dim=1)
        mask = torch.ones_like(text_ids)
        fam = inputs.get("feature_attention_mask")
        positions, deltas = t.get_rope_index(text_ids, inputs.get("image_grid_thw"), None, mask, False,
                                             fam.sum(-1) if fam is not None else None, None)
        out = t(inputs_embeds=x, position_ids=positions, attention_mask=mask, use_cache=True)
        self.cache = out.past_key_values
        self.next_pos = text_ids.shape[1] + int(deltas.reshape(-1)[0])
        self.seen = torch.zeros(out.logits.shape[-1], dtype=torch.bool)
        self.seen[[t.codec_mask_token, t.codec_pad_token, t.codec_bos_token]] = True
        self._accept(out.logits[:, -1, :])

    def step(self, part: torch.Tensor) -> None:
        """One code, conditioned on the next reply part (a thinker state, or text-eos/pad)."""
        t = self.talker
        device = part.device
        code = torch.tensor([[self.codes[-1]]], device=device)
        x = t.get_input_embeddings()(code) + part
        pos = torch.full((3, 1, 1), self.next_pos, device=device, dtype=torch.long)
        mask = torch.ones(1, self.cache.get_seq_length() + 1, device=device, dtype=torch.long)
        out = t(inputs_embeds=x, position_ids=pos, attention_mask=mask, past_key_values=self.cache, use_cache=True)
        self.cache = out.past_key_values
        self.next_pos += 1
        self._accept(out.logits[:, -1, :])

    def close(self) -> None:
        """The turn is over (finished or cancelled): a batch it sits in drops its rows next sync."""
        self.done = True
        self.cache = None

    def _accept(self, logits: torch.Tensor) -> None:
        _accept_rows([self], logits)

    def _take(self, code: int) -> None:
        t = self.talker
        self.seen[code] = True
        if code in (t.codec_eos_token, t.codec_pad_token) or len(self.codes) >= self.max_codes:
            self.done = True
            self.cache = None
            return
        self.codes.append(code)


def _accept_rows(talkers: list[Talker25], logits: torch.Tensor) -> None:
    """Sample each talker's next code from its row of (rows, vocab) logits, all rows at once."""
    t = talkers[0].talker
    codes = sample_codes(logits, torch.stack([x.seen for x in talkers]), [t.codec_bos_token],
                         [x.temperature for x in talkers], [x.top_k for x in talkers], [x.top_p for x in talkers],
                         [x.repetition_penalty for x in talkers], [x.generator for x in talkers])
    for talker, code in zip(talkers, codes, strict=True):
        talker._take(code)


def step_talkers(talkers: list[Talker25], parts: list[torch.Tensor], batch, sizes: Counter | None = None) -> None:
    """One code for each of `talkers` in one forward pass over `batch` (a KVBatch of talkers).

    Each talker's cache joins the batch's left-padded cache (rows that sit this step out keep
    theirs); positions are per row, and each row samples from its own logits with its own
    generator, so a turn's codes do not depend on which turns share its steps."""
    t = talkers[0].talker
    batch.sync(talkers, keep=[r for r in batch.rows if not r.done])
    device = parts[0].device
    n = len(talkers)
    codes = torch.tensor([[x.codes[-1]] for x in talkers], device=device)
    x = t.get_input_embeddings()(codes) + torch.cat(parts, dim=0)
    pos = torch.tensor([x_.next_pos for x_ in talkers], device=device).view(1, n, 1).expand(3, n, 1)
    with batch.undone_on_error():  # a fault mid-forward: each talker can still step alone
        mask = batch.grow()
        out = t(inputs_embeds=x, position_ids=pos, attention_mask=mask, past_key_values=batch.cache, use_cache=True)
    batch.cache = out.past_key_values
    for talker in talkers:
        talker.next_pos += 1
    _accept_rows(talkers, out.logits[:, -1, :])
    if sizes is not None:
        sizes["talker", n] += 1


@dataclass(eq=False)
class _Chunk:
    """One chunk of one stream on its way through the DiT and BigVGAN."""

    stream: Token2WavStream
    c0: int  # codes [c0, c1) are this chunk's
    c1: int
    w0: int  # the DiT window starts at code w0
    final: bool
    codes: torch.Tensor  # (1, window codes)
    noise: torch.Tensor  # (1, window frames, mel_dim)
    v0: int = 0  # the BigVGAN window starts at mel frame v0


def pull_streams(streams: list[Token2WavStream], finals: list[bool], sizes: Counter | None = None) -> list[np.ndarray]:
    """`Token2WavStream.pull` for several streams at once: the chunks that are ready go through
    the DiT and BigVGAN together, one call per group of equal-shaped windows."""
    out: list[list[np.ndarray]] = [[] for _ in streams]
    active = list(range(len(streams)))
    while active:
        jobs = [(i, streams[i]._plan(finals[i])) for i in active]
        jobs = [(i, job) for i, job in jobs if job is not None]
        if not jobs:
            break
        chunks = [job for _, job in jobs]
        mels: list = [None] * len(chunks)
        shape = lambda c: (c.codes.shape[1], c.stream.cond.shape, c.stream.ref_mel.shape)  # noqa: E731
        for idx in group_indices(chunks, shape).values():
            group = [chunks[k] for k in idx]
            mel = _sample(group[0].stream.dit, torch.cat([c.codes for c in group]), torch.cat([c.noise for c in group]),
                          torch.cat([c.stream.cond for c in group]), torch.cat([c.stream.ref_mel for c in group]))
            for j, k in enumerate(idx):
                mels[k] = mel[j:j + 1]
            if sizes is not None:
                sizes["dit", len(group)] += 1
        windows = [c.stream._place(c, m) for c, m in zip(chunks, mels, strict=True)]
        wavs: list = [None] * len(chunks)
        for idx in group_indices(windows, lambda w: w.shape[-1]).values():
            bigvgan = chunks[idx[0]].stream.bigvgan
            device = next(bigvgan.parameters()).device
            wav = bigvgan(torch.cat([windows[k] for k in idx]).to(device)).reshape(len(idx), -1).float().cpu().numpy()
            for j, k in enumerate(idx):
                wavs[k] = wav[j]
            if sizes is not None:
                sizes["bigvgan", len(idx)] += 1
        for (i, chunk), wav in zip(jobs, wavs, strict=True):
            out[i].append(chunk.stream._splice(chunk, wav))
        active = [i for i, _ in jobs]
    for i, (stream, final) in enumerate(zip(streams, finals, strict=True)):
        if final:
            out[i].append(stream.tail)
            stream.tail = np.zeros(0, dtype=np.float32)
    return [np.concatenate(o) if o else np.zeros(0, dtype=np.float32) for o in out]


def _sample(dit, codes: torch.Tensor, noise: torch.Tensor, cond: torch.Tensor, ref_mel: torch.Tensor,
            num_steps: int = 10, guidance_scale: float = 0.5, sway: float = -1.0) -> torch.Tensor:
    """The DiT's flow-matching ODE (Qwen's settings) from the given initial noise, for B windows of
    equal length: codes (B, n), noise (B, frames, mel), cond (B, d), ref_mel (B, T, mel) ->
    (B, mel, frames)."""
    from transformers.models.qwen2_5_omni.modeling_qwen2_5_omni import RungeKutta4ODESolver

    frames = codes.shape[1] * FRAMES_PER_CODE
    device = next(dit.parameters()).device
    dtype = next(dit.parameters()).dtype
    spk = cond.to(device, dtype).unsqueeze(1).repeat(1, frames, 1)
    ref = ref_mel.to(device, dtype)
    codes = codes.to(device)

    def f(t, x):
        out = dit(hidden_states=x, quantized_code=codes, speaker_embedding=spk, condition_vector=ref,
                  time_step=t, apply_cfg=True)
        guided, null = torch.chunk(out, 2, dim=0)  # the DiT stacks the B guided rows, then the B unguided
        return guided + (guided - null) * guidance_scale

    ts = torch.linspace(0, 1, num_steps, device=device, dtype=dtype)
    ts = ts + sway * (torch.cos(torch.pi / 2 * ts) - 1 + ts)
    traj = RungeKutta4ODESolver(function=f, initial_value=noise.to(device, dtype)).integrate(ts)
    return traj[-1].permute(0, 2, 1).float().cpu()


class Token2WavStream:
    """Codes in, 24 kHz audio chunks out, with bounded context per chunk."""

    def __init__(self, token2wav, speaker: dict, seed: int, first_chunk_codes: int = 8,
                 chunk_codes: int = 48, left_codes: int = 24, right_codes: int = 12, first_right_codes: int = 4,
                 vocoder_frames: int = 24,
                 crossfade_samples: int = 240) -> None:
        self.dit = token2wav.code2wav_dit_model
        self.bigvgan = token2wav.code2wav_bigvgan_model
        self.cond = speaker["cond"].float()
        self.ref_mel = speaker["ref_mel"].float()
        self.seed = seed
        self.block = self.dit.block_size  # mel frames per DiT block
        self.first_chunk_codes = first_chunk_codes
        self.chunk_codes = chunk_codes
        self.left_codes = left_codes
        self.right_codes = right_codes
        self.first_right_codes = first_right_codes  # less look-ahead for the first chunk: sooner sound
        self.vocoder_frames = vocoder_frames
        self.fade = crossfade_samples
        self.codes: list[int] = []
        self.mel = torch.zeros(1, self.dit.mel_dim, 0)  # mel frames decided so far
        self.sent_codes = 0  # codes whose audio has been emitted (up to the held-back tail)
        self.tail = np.zeros(0, dtype=np.float32)  # last samples, held back for the cross-fade
        self._noise: dict[int, torch.Tensor] = {}

    # -------------------------------------------------------------- noise and the ODE
    def noise(self, f0: int, f1: int) -> torch.Tensor:
        """Initial ODE state for mel frames [f0, f1): per-block seeded, so any window agrees."""
        parts = []
        for b in range(f0 // self.block, (f1 - 1) // self.block + 1):
            if b not in self._noise:
                gen = torch.Generator().manual_seed(self.seed * 1_000_003 + b)
                self._noise[b] = torch.randn(self.block, self.dit.mel_dim, generator=gen)
            parts.append(self._noise[b])
        whole = torch.cat(parts)
        start = f0 - (f0 // self.block) * self.block
        return whole[start:start + (f1 - f0)].unsqueeze(0)

    def _sample(self, codes: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The ODE for this stream's window: (1, 80, frames)."""
        return _sample(self.dit, codes, noise, self.cond, self.ref_mel)

    # -------------------------------------------------------------- one-shot reference
    def decode_all(self, codes: list[int]) -> np.ndarray:
        """The whole utterance in one pass (the non-streamed waveform, same noise)."""
        if not codes:
            return np.zeros(0, dtype=np.float32)
        c = torch.tensor([codes])
        mel = self._sample(c, self.noise(0, len(codes) * FRAMES_PER_CODE))
        device = next(self.bigvgan.parameters()).device
        return self.bigvgan(mel.to(device)).reshape(-1).float().cpu().numpy()

    # -------------------------------------------------------------- streaming
    def push(self, codes: list[int]) -> None:
        self.codes.extend(codes)

    def pull(self, final: bool = False) -> np.ndarray:
        """Audio ready so far (possibly empty). With `final`, everything, tail included."""
        return pull_streams([self], [final])[0]

    def _plan(self, final: bool) -> _Chunk | None:
        """The next chunk to decode, or None if not enough codes are there yet."""
        todo = len(self.codes) - self.sent_codes
        want = self.first_chunk_codes if self.sent_codes == 0 else self.chunk_codes
        right = self.first_right_codes if self.sent_codes == 0 else self.right_codes
        if todo <= 0 or (not final and todo < want + right):
            return None
        c0 = self.sent_codes
        c1 = c0 + (todo if final and todo < want + right else want)
        # DiT on [c0 - left, c1 + right) codes; keep the frames of [c0, c1).
        w0 = max(0, c0 - self.left_codes)
        w1 = min(len(self.codes), c1 + self.right_codes)
        return _Chunk(self, c0, c1, w0, final, torch.tensor([self.codes[w0:w1]]),
                      self.noise(w0 * FRAMES_PER_CODE, w1 * FRAMES_PER_CODE))

    def _place(self, chunk: _Chunk, mel: torch.Tensor) -> torch.Tensor:
        """Keep the chunk's frames of the DiT window's mel; the BigVGAN window for them: left
        context from decided mel, right up to what exists."""
        c0, c1, w0 = chunk.c0, chunk.c1, chunk.w0
        keep = mel[:, :, (c0 - w0) * FRAMES_PER_CODE:(c1 - w0) * FRAMES_PER_CODE]
        self.mel = torch.cat([self.mel[:, :, :c0 * FRAMES_PER_CODE], keep], dim=2)
        chunk.v0 = max(0, c0 * FRAMES_PER_CODE - self.vocoder_frames)
        return self.mel[:, :, chunk.v0:c1 * FRAMES_PER_CODE]

    def _splice(self, chunk: _Chunk, wav: np.ndarray) -> np.ndarray:
        """The chunk's new samples, cross-faded into the held-back tail; holds back the next tail."""
        a0, v0 = chunk.c0 * FRAMES_PER_CODE, chunk.v0
        new = wav[(a0 - v0) * SAMPLES_PER_FRAME:]
        fade = min(self.fade, len(self.tail), len(new))
        if fade:
            # The held-back tail was vocoded without right context: fade it into the new version.
            redo = wav[(a0 - v0) * SAMPLES_PER_FRAME - len(self.tail):(a0 - v0) * SAMPLES_PER_FRAME]
            ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
            head = self.tail.copy()
            head[-fade:] = self.tail[-fade:] * (1 - ramp) + redo[-fade:] * ramp
            new = np.concatenate([head, new])
        else:
            new = np.concatenate([self.tail, new])
        c1 = chunk.c1
        self.sent_codes = c1
        hold = 0 if chunk.final and c1 == len(self.codes) else min(self.fade, len(new))
        self.tail = new[len(new) - hold:] if hold else np.zeros(0, dtype=np.float32)
        return new[:len(new) - hold]
