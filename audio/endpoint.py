"""Where a spoken turn begins and ends, in a live 16 kHz stream: webrtcvad plus a level gate.

Feed 10 ms frames to `Endpointer.push`; it answers with events, each placed by its sample
position in the stream:

- `Onset`: a run of speech frames began (a candidate: a front end pauses its playback here, so a
  barge-in is heard at once);
- `Blip`: the candidate died before it was long enough to be a turn (a cough, a click): resume;
- `Start`: the candidate is speech (at least `min_speech_s` of it): the turn has begun;
- `Pause`: the silence after speech has lasted `prepare_s` (shorter than `silence_s`): the utterance
  as `End` will give it if no more speech comes, so a front end can start preparing the reply while
  the turn's end is still being confirmed;
- `Resume`: speech came back after a `Pause`: the utterance goes on (drop what was prepared);
- `End`: the silence after speech lasted `silence_s`: the utterance, with its pre-roll.

A frame counts as speech only if the detector says so AND its level clears a gate: the higher of
`threshold_db` and the room's noise floor plus `noise_margin_db`. While the assistant is speaking
through loudspeakers (`playing=True`) the gate rises to `echo_threshold_db`, so its own voice
coming back through the microphone does not start a turn (the echo-safe default; with headphones
set `echo_threshold_db=None`).

Detectors: webrtcvad (default: 10 ms decisions, no model), or Silero VAD (`detector="silero"`: a
neural model, much better at telling speech from noise, music and clatter; the ONNX file bundled
inside faster-whisper, run with onnxruntime on one thread, so nothing is downloaded and torch's
thread settings are never touched, unlike importing the `silero_vad` package, which sets torch to
one thread for the whole process). Silero decides per 32 ms window, so its onsets come up to
32 ms later.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import webrtcvad

__all__ = [
    "DETECTORS",
    "FRAME",
    "SAMPLE_RATE",
    "Blip",
    "End",
    "EndpointConfig",
    "Endpointer",
    "Onset",
    "Pause",
    "Resume",
    "SileroDetector",
    "Start",
    "as_int16",
]

SAMPLE_RATE = 16_000
FRAME_MS = 10
FRAME = SAMPLE_RATE * FRAME_MS // 1000  # samples per frame


def as_int16(pcm: np.ndarray) -> np.ndarray:
    """Microphone audio as int16: int16 as it is, float32 in [-1, 1] scaled (and clipped)."""
    return pcm if pcm.dtype == np.int16 else (np.clip(pcm, -1.0, 1.0) * 32767).astype(np.int16)
DETECTORS = ("webrtc", "silero")


@dataclass(frozen=True)
class EndpointConfig:
    detector: str = "webrtc"  # or "silero" (see the module's notes)
    aggressiveness: int = 2  # webrtcvad 0 (keeps most) .. 3 (strictest)
    silero_threshold: float = 0.5  # Silero's speech probability that counts as speech
    silence_s: float = 0.7  # this much silence after speech ends the turn (Home Assistant, OVOS)
    # from this much silence on, a reply is prepared (Pause); >= silence_s: never. 0.1 rather than
    # 0.15: offline p50 775 vs 822 ms side by side over 20 turns (bench/talk_latency.py --turns 20
    # --prepare-after 0.1,0.15), for more prepares dropped because the user went on (the real
    # recordings of ../shared/data/speech, 145 s in 18 turns: 46 against 38; 0.2: 32). A dropped
    # prepare costs its speech recognition, in another process: the engine drops it before a prefill
    prepare_s: float = 0.1
    min_speech_s: float = 0.25  # less voiced time than this is a blip, not a turn
    onset_frames: int = 4  # consecutive speech frames that make an onset (40 ms)
    pre_roll_s: float = 0.3  # audio kept from before the onset, so the first syllable is whole
    tail_s: float = 0.1  # audio kept after the last speech frame; <= prepare_s: a prepared reply hears the turn
    threshold_db: float = -45.0  # quieter frames are never speech (dBFS)
    noise_margin_db: float = 12.0  # ... nor frames less than this above the noise floor
    echo_threshold_db: float | None = -35.0  # the gate while the assistant is speaking; None: headphones
    decay_db: float = 30.0  # within an utterance, frames this far below its loudest are its fading tail
    max_utterance_s: float = 30.0  # a turn is cut here at the latest

    def __post_init__(self) -> None:
        for name, value in self.__dict__.items():
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number")
        if self.aggressiveness not in (0, 1, 2, 3):
            raise ValueError("VAD aggressiveness must be 0, 1, 2 or 3")
        if self.detector not in DETECTORS:
            raise ValueError(f"unknown speech detector {self.detector!r}: use {' or '.join(DETECTORS)}")
        if not 0 < self.silero_threshold < 1:
            raise ValueError("the Silero threshold must be between 0 and 1")
        if not 0.1 <= self.silence_s <= 10:
            raise ValueError("the silence timeout must be between 0.1 and 10 s")
        if self.min_speech_s < 0 or self.pre_roll_s < 0 or self.prepare_s < 0:
            raise ValueError("durations cannot be negative")


@dataclass(frozen=True, slots=True)
class Onset:
    at: int  # sample position of the first speech frame


@dataclass(frozen=True, slots=True)
class Blip:
    at: int


@dataclass(frozen=True, slots=True)
class Start:
    at: int


@dataclass(frozen=True, slots=True)
class Resume:
    at: int  # sample position of the speech frame that came back


@dataclass(frozen=True, slots=True)
class End:
    start: int  # first speech sample
    end: int  # one past the last speech sample
    pcm: np.ndarray = field(repr=False)  # float32 16 kHz: pre-roll + speech + tail
    forced: bool = False  # cut by max_utterance_s or a manual commit, not by silence


@dataclass(frozen=True, slots=True)
class Pause:
    utterance: End  # what End will be if no more speech comes before silence_s


Event = Onset | Blip | Start | Pause | Resume | End


def level_db(frame: np.ndarray) -> float:
    """RMS level of int16 samples in dBFS."""
    x = frame.astype(np.float32) / 32768.0
    return float(10 * np.log10(np.mean(x * x) + 1e-12))


class _WebRtc:
    def __init__(self, aggressiveness: int) -> None:
        self._vad = webrtcvad.Vad(aggressiveness)

    def __call__(self, frame: np.ndarray) -> bool:
        return self._vad.is_speech(frame.tobytes(), SAMPLE_RATE)


class SileroDetector:
    """Silero VAD over a live stream of 10 ms frames: each frame gets the speech decision of the
    newest complete 32 ms window (the model's state carried from window to window)."""

    WINDOW = 512  # samples the model takes at 16 kHz
    CONTEXT = 64  # samples of the previous window it sees as well

    def __init__(self, threshold: float = 0.5) -> None:
        from faster_whisper.vad import get_vad_model

        # faster-whisper's own session (one thread, loaded once per process); its __call__ starts
        # every call from a fresh state, so the stream's state is carried here instead
        self._session = get_vad_model().session
        self.threshold = threshold
        self.probability = 0.0
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._context = np.zeros(self.CONTEXT, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)

    def __call__(self, frame: np.ndarray) -> bool:
        self._pending = np.concatenate([self._pending, frame.astype(np.float32) / 32768.0])
        while len(self._pending) >= self.WINDOW:
            window, self._pending = self._pending[: self.WINDOW], self._pending[self.WINDOW :]
            x = np.concatenate([self._context, window])[None, :]
            prob, self._h, self._c = self._session.run(None, {"input": x, "h": self._h, "c": self._c})
            self.probability = float(np.asarray(prob).reshape(-1)[-1])
            self._context = window[-self.CONTEXT :]
        return self.probability >= self.threshold


class Endpointer:
    """Turn detection over a live stream. Not thread-safe: one feeder."""

    _IDLE, _CANDIDATE, _SPEECH = range(3)

    def __init__(self, config: EndpointConfig | None = None) -> None:
        self.config = config or EndpointConfig()
        if self.config.detector == "silero":
            self._is_speech = SileroDetector(self.config.silero_threshold)
        else:
            self._is_speech = _WebRtc(self.config.aggressiveness)
        self.position = 0  # samples pushed so far
        self.playing = False  # set by the front end while the assistant's voice is audible
        self._state = self._IDLE
        self._run = 0  # consecutive speech frames (idle) / silent frames (candidate, speech)
        self._voiced = 0  # speech frames since the onset
        self._start = 0
        self._last_voiced_end = 0
        self._buf: list[np.ndarray] = []  # frames of the current candidate or utterance
        self._pre: deque[np.ndarray] = deque(maxlen=max(1, round(self.config.pre_roll_s * 1000 / FRAME_MS)))
        self._levels: deque[float] = deque(maxlen=1000)  # 10 s of frame levels for the noise floor
        self._floor = -90.0
        self._peak = -90.0  # the loudest frame of the current utterance
        self._paused = False  # a Pause was sent for the current silence
        self._pending = np.zeros(0, dtype=np.int16)

    # ------------------------------------------------------------------ input
    def feed(self, pcm: np.ndarray) -> list[Event]:
        """Push any number of int16 samples; returns the events of the whole frames among them."""
        pcm = as_int16(pcm)
        data = np.concatenate([self._pending, pcm]) if len(self._pending) else pcm
        n = len(data) // FRAME * FRAME
        self._pending = data[n:].copy()
        events: list[Event] = []
        for i in range(0, n, FRAME):
            events += self.push(data[i : i + FRAME])
        return events

    def push(self, frame: np.ndarray) -> list[Event]:
        """One 10 ms frame of int16 samples -> the events it causes."""
        if len(frame) != FRAME:
            raise ValueError(f"a frame is {FRAME} samples")
        level = level_db(frame)
        voiced = self._is_speech(frame)  # always: a model carries its state from frame to frame
        speech = voiced and level >= self.gate()
        self._track_floor(level, speech)
        if self._state != self._IDLE:
            self._peak = max(self._peak, level)
            speech = speech and level >= self._peak - self.config.decay_db  # a fading tail ends sooner
        pos = self.position
        self.position += FRAME
        cfg = self.config
        events: list[Event] = []
        if self._state == self._IDLE:
            self._run = self._run + 1 if speech else 0
            self._buf.append(frame)
            # while the assistant speaks, one frame less: a barge-in pauses it sooner (the gate is higher)
            onset = cfg.onset_frames - 1 if self.playing and cfg.onset_frames > 1 else cfg.onset_frames
            if self._run >= onset:
                self._state, self._voiced = self._CANDIDATE, self._run
                self._peak = max(level_db(f) for f in self._buf[-self._run :])
                self._start = pos - (self._run - 1) * FRAME
                self._last_voiced_end = pos + FRAME
                self._buf = self._buf[-self._run :]
                self._run = 0
                events.append(Onset(self._start))
            else:
                for f in self._buf[: len(self._buf) - self._run]:
                    self._pre.append(f)
                self._buf = self._buf[len(self._buf) - self._run :]
            return events
        self._buf.append(frame)
        if speech:
            self._voiced += 1
            self._run = 0
            self._last_voiced_end = pos + FRAME
            if self._paused:
                self._paused = False
                events.append(Resume(pos))
        else:
            self._run += 1
        silence_s = self._run * FRAME_MS / 1000
        if self._state == self._CANDIDATE:
            if self._voiced * FRAME_MS / 1000 >= cfg.min_speech_s:
                self._state = self._SPEECH
                events.append(Start(self._start))
            elif silence_s >= min(cfg.silence_s, 0.3):
                events.append(Blip(self._start))
                self._reset()
                return events
        if self._state == self._SPEECH:
            too_long = self.position - self._start >= cfg.max_utterance_s * SAMPLE_RATE
            if silence_s >= cfg.silence_s or too_long:
                events.append(self._finish(forced=too_long and silence_s < cfg.silence_s))
            elif not self._paused and silence_s >= cfg.prepare_s:
                self._paused = True
                events.append(Pause(self._utterance(forced=False)))
        return events

    # ------------------------------------------------------------------ control
    def commit(self) -> End | None:
        """End the current utterance now (push-to-talk release); None if there was no speech."""
        if self._state == self._IDLE and not self._buf:
            return None
        if self._state != self._SPEECH:
            self._start = self.position - len(self._buf) * FRAME
            self._last_voiced_end = self.position
        return self._finish(forced=True)

    def reset(self) -> None:
        """Forget any audio in progress (and the pre-roll)."""
        self._reset()
        self._pre.clear()

    def gate(self) -> float:
        """The level a frame must reach to count as speech, in dBFS."""
        cfg = self.config
        gate = max(cfg.threshold_db, self._floor + cfg.noise_margin_db)
        if self.playing and cfg.echo_threshold_db is not None:
            gate = max(gate, cfg.echo_threshold_db)
        return gate

    @property
    def in_speech(self) -> bool:
        return self._state != self._IDLE

    # ------------------------------------------------------------------ internals
    def _utterance(self, forced: bool) -> End:
        """The utterance so far: pre-roll, speech, and a tail of `tail_s` after the last speech frame
        (never more, so it is the same however much silence has followed)."""
        keep_tail = round(self.config.tail_s * 1000 / FRAME_MS)
        frames = list(self._pre) + self._buf
        drop = max(0, (self.position - self._last_voiced_end) // FRAME - keep_tail)
        if drop:
            frames = frames[: len(frames) - drop]
        pcm = np.concatenate(frames).astype(np.float32) / 32768.0
        return End(self._start, self._last_voiced_end, pcm, forced=forced)

    def _finish(self, forced: bool) -> End:
        event = self._utterance(forced)
        self._reset()
        self._pre.clear()
        return event

    def _reset(self) -> None:
        self._state = self._IDLE
        self._run = self._voiced = 0
        self._paused = False
        for f in self._buf:
            self._pre.append(f)
        self._buf = []

    def _track_floor(self, level: float, speech: bool) -> None:
        """The noise floor: a low percentile of the last 10 s of non-speech frame levels. Digital
        silence (a gated or virtual microphone) counts, as the quietest room: when it was skipped,
        the only levels left were the soft edges of speech, the floor rose to -37 dBFS and the gate
        (floor + 12 dB) to -25, which cut each question at its softer words (a prepared reply was
        dropped every turn)."""
        if speech:
            return
        self._levels.append(max(level, -100.0))
        if len(self._levels) % 50 == 0 or len(self._levels) < 50:
            self._floor = float(np.percentile(np.fromiter(self._levels, float), 20))
