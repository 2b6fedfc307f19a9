"""Streamed speech for Qwen3-Omni: the multi-codebook talker beside the thinker, Code2Wav in chunks.

The talker is prefilled with the user turns' thinker states and the start of the assistant turn
(which needs only the first reply token), then makes one frame per step: a first-codebook code
from the talker, the residual codebooks from its code predictor, conditioned on the next reply
token's projected embedding (then text-eos, then pad). Code2Wav is a causal ConvNet: a chunk is
decoded with left context and its context samples dropped, like the model's `chunked_decode`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = ["Code2WavStream", "Talker3"]


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
        tcfg = self.model.config.talker_config
        vocab = tcfg.text_config.vocab_size
        self.last_hidden = out.hidden_states[0][-1][:, -1:]
        logits = out.logits[0, -1].float().cpu()
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
        avail = len(self.frames)
        want = self.first_chunk if self.sent == 0 else self.chunk
        if avail <= self.sent or (not final and avail - 1 - self.sent < want):
            return np.zeros(0, dtype=np.float32)
        end = avail if final else avail - 1
        ctx = min(self.left, self.sent)
        device = next(self.net.parameters()).device
        codes = torch.tensor(self.frames[self.sent - ctx:avail], device=device).T.unsqueeze(0)
        wav = self.net(codes).reshape(-1).float().cpu().numpy()
        stop = None if final else (end - self.sent + ctx) * self.upsample
        out = wav[ctx * self.upsample:stop]
        self.sent = end
        return out

    def decode_all(self, frames: list[list[int]]) -> np.ndarray:
        """One-shot decode, as the model's own generate() does it (chunks of 300, context 25)."""
        if not frames:
            return np.zeros(0, dtype=np.float32)
        device = next(self.net.parameters()).device
        codes = torch.tensor(frames, device=device).T.unsqueeze(0)
        return self.net.chunked_decode(codes, chunk_size=300, left_context_size=25).reshape(-1).float().cpu().numpy()
