// Hands-free voice call over /v1/realtime (protocol: assistant/realtime.py).
// Microphone -> 16 kHz PCM16 frames up; reply PCM16 down, played through WebAudio; the server
// decides when a turn ends; on `speech.started` playback pauses, on `response.cancelled` it is
// flushed, and what was played is reported back so the history keeps only what was heard.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const call = { log: [], state: "", bytesIn: 0, ws: null };
  window.assistantCall = call;
  let inCtx, outCtx, mic, proc, rate = 24000;
  let reply = null; // {id, sources: [], start, end, done, started}

  function note(kind, data) { call.log.push({ kind, t: performance.now(), ...data }); }
  function setState(s) { call.state = s; const el = $("state"); el.textContent = s; el.className = s; }

  function toPcm16(input, fromRate) {
    const ratio = fromRate / 16000, n = Math.floor(input.length / ratio), out = new Int16Array(n);
    for (let i = 0; i < n; i++) {
      const v = input[Math.floor(i * ratio)];
      out[i] = Math.max(-1, Math.min(1, v)) * 32767;
    }
    return out.buffer;
  }

  function played(upTo) { // seconds of the current reply's audio that have left the speaker
    // the sum over its scheduled pieces, so a wait for a late piece (a busy server) is not counted
    if (!reply || reply.start === null) return 0;
    const now = upTo ?? outCtx.currentTime;
    return reply.pieces.reduce((sum, [at, d]) => sum + Math.max(0, Math.min(now - at, d)), 0);
  }

  function send(obj) { if (call.ws && call.ws.readyState === 1) call.ws.send(JSON.stringify(obj)); }

  function play(buf) {
    if (!reply) return;
    const pcm = new Int16Array(buf), f = new Float32Array(pcm.length);
    for (let i = 0; i < pcm.length; i++) f[i] = pcm[i] / 32768;
    const ab = outCtx.createBuffer(1, f.length, rate);
    ab.copyToChannel(f, 0);
    const src = outCtx.createBufferSource();
    src.buffer = ab; src.connect(outCtx.destination);
    const at = Math.max(outCtx.currentTime + 0.02, reply.end ?? 0);
    if (reply.start === null) {
      reply.start = at;
      const id = reply.id;
      setTimeout(() => { if (reply && reply.id === id) { send({ type: "playback.started", id }); note("playback.started", { id }); } },
                 Math.max(0, (at - outCtx.currentTime) * 1000));
    }
    src.start(at); reply.end = at + ab.duration; reply.sources.push(src);
    reply.pieces.push([at, ab.duration]);
    src.onended = () => finishIfDone();
  }

  function finishIfDone() {
    if (reply && reply.done && outCtx.currentTime >= reply.end - 0.005) {
      const p = played(reply.end);
      send({ type: "playback.done", id: reply.id, played_s: p, interrupted: false });
      note("playback.done", { id: reply.id, played_s: p });
      reply = null;
    }
  }

  function flush(id) {
    if (!reply || reply.id !== id) return;
    const p = played();
    reply.sources.forEach((s) => { try { s.stop(); } catch (e) { /* not started */ } });
    send({ type: "playback.done", id, played_s: p, interrupted: true });
    note("playback.cut", { id, played_s: p });
    reply = null;
    outCtx.resume();
  }

  function onEvent(ev) {
    note(ev.type, ev);
    switch (ev.type) {
      case "session.created": rate = ev.output_rate; break;
      case "state": setState(ev.state); break;
      case "speech.started": outCtx.suspend(); break; // a barge-in is heard at once
      case "speech.ignored": outCtx.resume(); break;
      case "response.started": outCtx.resume(); reply = { id: ev.id, sources: [], pieces: [], start: null, end: null, done: false }; break;
      case "response.cancelled": flush(ev.id); break;
      case "response.done":
        if (reply && reply.id === ev.id) {
          reply.done = true;
          if (reply.start === null) { send({ type: "playback.done", id: ev.id, played_s: 0, interrupted: false }); reply = null; }
          else finishIfDone();
        }
        $("log").textContent = `${ev.text}\n` + $("log").textContent;
        break;
      case "transcript": $("log").textContent = `you: ${ev.text}\n` + $("log").textContent; break;
      case "error": $("error").textContent = ev.message; break;
    }
  }

  async function start() {
    $("error").textContent = "";
    const q = new URLSearchParams();
    if ($("persona").value) q.set("persona", $("persona").value);
    if ($("key").value) q.set("api_key", $("key").value);
    const base = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}`;
    inCtx = new AudioContext(); outCtx = new AudioContext({ sampleRate: 24000 });
    const ws = new WebSocket(`${base}/v1/realtime?${q}`);
    ws.binaryType = "arraybuffer"; call.ws = ws;
    // handlers first: a refusal (wrong key) comes at once
    ws.onmessage = (m) => {
      if (typeof m.data === "string") onEvent(JSON.parse(m.data));
      else { call.bytesIn += m.data.byteLength; play(m.data); }
    };
    const opened = new Promise((ok) => { ws.onopen = () => ok(true); ws.onerror = () => ok(false); });
    ws.onclose = () => { setState("not connected"); note("closed", {}); stop(); };
    try {
      mic = await navigator.mediaDevices.getUserMedia({ audio: { echoCancellation: true, noiseSuppression: true } });
    } catch (e) { $("error").textContent = `no microphone: ${e.message}`; ws.close(); return; }
    if (ws.readyState === 0 && !(await opened)) $("error").textContent ||= "cannot connect to the server";
    if (ws.readyState !== 1) { stop(); return; }
    const update = { type: "session.update", playback_reports: true };
    if ($("silero").checked) update.vad = { detector: "silero" };  // the neural detector: noise is not speech
    send(update);
    const src = inCtx.createMediaStreamSource(mic);
    proc = inCtx.createScriptProcessor(2048, 1, 1);
    proc.onaudioprocess = (e) => { if (ws.readyState === 1) ws.send(toPcm16(e.inputBuffer.getChannelData(0), inCtx.sampleRate)); };
    const sink = inCtx.createGain(); sink.gain.value = 0;
    src.connect(proc); proc.connect(sink); sink.connect(inCtx.destination);
    $("start").disabled = true; $("stop").disabled = false;
    note("started", {});
  }

  function stop() {
    if (proc) { proc.disconnect(); proc = null; }
    if (mic) { mic.getTracks().forEach((t) => t.stop()); mic = null; }
    if (call.ws && call.ws.readyState <= 1) call.ws.close();
    $("start").disabled = false; $("stop").disabled = true;
  }

  $("start").onclick = start;
  $("stop").onclick = stop;
})();
