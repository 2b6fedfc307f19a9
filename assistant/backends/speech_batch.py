"""Speech for many turns at once: the talkers of concurrent spoken turns share forward passes, and
their vocoder chunks share DiT / BigVGAN calls.

The thinker's decode is continuously batched (batching.KVBatch); this does the same for the
talker's codec-token decode. Each engine step: the turns whose talker has not started are
prefilled, each alone (a one-off per turn, of a prompt whose length differs per turn); then up to
`talker_steps` rounds, each one batched forward pass over every turn that has a code to make
(turns join and leave the KVBatch at any round); then every turn's new codes go to its vocoder and
the chunks that are ready are decoded together (speech25.pull_streams). Each turn keeps its own
sampling state and generator, so its codes are the ones it would make alone.

A fault stays with its turn: a batched pass that raises is taken again one turn at a time, and
the turn that still fails ends with an error while the others go on.
"""

from __future__ import annotations

import logging
from collections import Counter

import torch

from assistant.backends.batching import KVBatch
from assistant.errors import AssistantError, Code

__all__ = ["SpeechBatch"]

log = logging.getLogger(__name__)


class SpeechBatch:
    """The talker batch and the vocoder calls of one OmniBackend (Qwen2.5-Omni or Qwen3-Omni)."""

    def __init__(self, backend) -> None:
        self.backend = backend
        self.qwen3 = backend.arch.name == "qwen3_omni"
        self.batch = None
        if backend.has_talker:
            cfg = backend.model.config.talker_config
            cfg = cfg.text_config if self.qwen3 else cfg
            self.batch = KVBatch(cfg, cfg.num_hidden_layers, backend.device)
        if self.qwen3:
            from assistant.backends import speech3 as speech
        else:
            from assistant.backends import speech25 as speech
        self.speech = speech
        self.sizes: Counter = Counter()  # (stage, rows) -> calls

    def step(self, streams: list) -> None:
        """Advance every speaking stream: its talker by up to `talker_steps` codes, its vocoder by
        the chunks that are ready."""
        b = self.backend
        talking = [s for s in streams if self._guard(s, self._start, s)]
        budget = {id(s): 1 if s.phase == "text" else b.talker_steps for s in talking}
        for _ in range(b.talker_steps):
            rows, parts = [], []
            for s in talking:
                if s.done or s.talker.done or not budget[id(s)]:
                    continue
                part = self._part(s)
                if part is not None:
                    rows.append(s)
                    parts.append(part)
            if not rows:
                break
            self._talker_step(rows, parts)
            for s in rows:
                budget[id(s)] -= 1
        if all(r.done for r in self.batch.rows):
            self.batch.sync([])  # no talker left: let the batch's cache go
        self._vocode([s for s in streams if not s.done])

    # -------------------------------------------------------------- talker
    def _part(self, s):
        """The conditioning of the talker's next step; None: the thinker has not made it yet."""
        if self.qwen3:
            return self.backend._text_part3(s, len(s.talker.frames) - 1)
        return self.backend._reply_part(s, len(s.talker.codes))

    def _start(self, s) -> None:
        b, talker = self.backend, s.talker
        if self.qwen3:
            if talker.done or talker.started:
                return
            if not s.tokens:
                if s.phase != "text":
                    talker.done = True  # the reply is empty: nothing to say
                return
            talker.start(s.inputs, s.prompt_states, s.tokens[0], s.voice)
            return
        if talker.done or talker.codes:  # started (its cache may sit in the batch)
            return
        if not s.step_states and s.phase == "text":
            return  # the first reply token's state comes with the next thinker step
        if not s.tokens:  # the reply is empty: nothing to say
            talker.done = True
            return
        talker.start(s.inputs, s.prompt_states, b._reply_part(s, 0), s.tokens[0], b.model.speaker_map[s.voice])

    def _talker_step(self, rows: list, parts: list) -> None:
        step_talkers = self.speech.step_talkers
        try:
            step_talkers([s.talker for s in rows], parts, self.batch, self.sizes)
            return
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception as err:
            if len(rows) == 1:
                self._failed(rows[0], err)
                return
            log.warning("a talker step of %d turns failed (%s); stepping each alone", len(rows), type(err).__name__)
        for s, part in zip(rows, parts, strict=True):
            self._guard(s, step_talkers, [s.talker], [part], self.batch, self.sizes)

    # -------------------------------------------------------------- vocoder
    def _ready(self, s) -> list:
        """The talker's output the vocoder can take: codes (Qwen2.5), complete frames (Qwen3)."""
        return s.talker.complete_frames() if self.qwen3 else s.talker.codes

    def _vocode(self, streams: list) -> None:
        pull_streams = self.speech.pull_streams
        b = self.backend
        for s in streams:
            ready = self._ready(s)
            s.vocoder.push(ready[len(s.vocoder.frames if self.qwen3 else s.vocoder.codes):])
        finals = [s.talker.done and s.phase != "text" for s in streams]
        if b.stream_speech:
            try:
                pcms = pull_streams([s.vocoder for s in streams], finals, self.sizes)
            except torch.cuda.OutOfMemoryError:
                raise
            except Exception as err:
                if len(streams) == 1:
                    self._failed(streams[0], err)
                    return
                log.warning("a vocoder call of %d turns failed (%s); decoding each alone", len(streams),
                            type(err).__name__)
                pcms = [self._guard(s, s.vocoder.pull, final) for s, final in zip(streams, finals, strict=True)]
            for s, pcm in zip(streams, pcms, strict=True):
                if pcm is not None and not s.done:
                    s.emit_audio(pcm, b.sample_rate)
        else:
            for s, final in zip(streams, finals, strict=True):
                if final:
                    pcm = self._guard(s, s.vocoder.decode_all, self._ready(s))
                    if pcm is not None:
                        s.emit_audio(pcm, b.sample_rate)
        for s, final in zip(streams, finals, strict=True):
            if final and not s.done:
                s.phase = "finished"
                s.done = True

    # -------------------------------------------------------------- faults
    def _guard(self, s, fn, *args):
        """fn(*args) for stream `s`; a fault ends `s` with an error (True/its result: it went well)."""
        try:
            out = fn(*args)
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception as err:
            self._failed(s, err)
            return None
        return True if out is None else out

    def _failed(self, s, err: Exception) -> None:
        log.error("speech failed for turn %s", s.turn_id, exc_info=err)
        if isinstance(err, AssistantError):
            s.error = (err.code, err.message)
        else:
            s.error = (str(Code.MODEL_ERROR), f"the model failed while speaking: {type(err).__name__}")
        s.phase = "finished"
        s.done = True
        if s.talker is not None:
            s.talker.close()
