// The page's speech player: plays a reply's PCM16 stream (GET /ui/speech/<token>) with WebAudio
// while the reply is still being generated. One player per pane; a new reply in a pane stops the
// old one. window.assistantSpeech.log records what happened (for people debugging and for tests).
(() => {
  if (window.assistantSpeech) return;
  const LEAD_S = 0.08; // buffered before the first chunk plays, so the next chunk is in time
  const players = {}; // pane -> {abort, sources, next, ctx}
  const log = [];
  let ctx = null;

  function context() {
    if (!ctx) ctx = new (window.AudioContext || window.webkitAudioContext)();
    if (ctx.state === "suspended") ctx.resume();
    return ctx;
  }
  // Browsers let a page start sound only after the person did something: unlock on the first key or click.
  for (const type of ["pointerdown", "keydown"]) {
    document.addEventListener(type, () => context(), { capture: true, passive: true });
  }

  function mark(pane, event, extra) {
    const entry = Object.assign({ pane, event, t: performance.now() }, extra || {});
    log.push(entry);
    document.dispatchEvent(new CustomEvent("assistant-speech", { detail: entry }));
    return entry;
  }

  function stop(pane) {
    const p = players[pane];
    if (!p) return;
    p.abort.abort();
    for (const s of p.sources) {
      try { s.stop(); } catch (e) { /* already stopped */ }
    }
    delete players[pane];
    mark(pane, "stopped");
  }

  async function play(specJson) {
    if (!specJson) return;
    const spec = JSON.parse(specJson);
    stop(spec.pane);
    const ac = context();
    const p = { abort: new AbortController(), sources: [], next: 0, samples: 0 };
    players[spec.pane] = p;
    mark(spec.pane, "requested", { token: spec.token });
    let carry = null; // an odd byte left over between network chunks
    try {
      const res = await fetch(spec.url, { signal: p.abort.signal, cache: "no-store" });
      if (!res.ok) throw new Error(`speech stream: HTTP ${res.status}`);
      const reader = res.body.getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        let bytes = value;
        if (carry !== null) {
          bytes = new Uint8Array(value.length + 1);
          bytes[0] = carry;
          bytes.set(value, 1);
          carry = null;
        }
        if (bytes.length % 2) {
          carry = bytes[bytes.length - 1];
          bytes = bytes.subarray(0, bytes.length - 1);
        }
        if (bytes.length) schedule(spec, p, ac, bytes);
      }
      mark(spec.pane, "stream-end", { token: spec.token, samples: p.samples, ends_in_s: Math.max(0, p.next - ac.currentTime) });
    } catch (err) {
      if (err.name !== "AbortError") mark(spec.pane, "error", { message: String(err) });
    }
  }

  function schedule(spec, p, ac, bytes) {
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
    const n = bytes.length / 2;
    const buffer = ac.createBuffer(1, n, spec.rate);
    const out = buffer.getChannelData(0);
    for (let i = 0; i < n; i++) out[i] = view.getInt16(2 * i, true) / 32768;
    const src = ac.createBufferSource();
    src.buffer = buffer;
    src.connect(ac.destination);
    const at = Math.max(p.next, ac.currentTime + LEAD_S);
    src.start(at);
    p.sources.push(src);
    src.onended = () => { p.sources = p.sources.filter((s) => s !== src); };
    if (p.samples === 0) {
      // when the first sample reaches the speaker, on the page's clock
      mark(spec.pane, "first-audio", { token: spec.token, plays_at: performance.now() + (at - ac.currentTime) * 1000, running: ac.state === "running" });
    }
    p.samples += n;
    p.next = at + buffer.duration;
  }

  window.assistantSpeech = { play, stop, mark, log };
})();
