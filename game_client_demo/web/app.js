// The demo page: pick an NPC, find a site, talk (push-to-talk or open mic), hear the reply as it
// streams, and see what happened underneath. Test hooks live on `window.npcDemo`.
//
// URL parameters: `npc=ID` preselects a character; `autostart=1` starts at once (kiosks, tests);
// `mode=open` opens the mic (default: push-to-talk); `lat=&lon=` the player's position for the
// site lookup; `ws=URL` skips the lookup and connects there; `token=` is passed on to the server.

import { renderTimings } from "./chart.js";
import { TalkConnection, TRY_AGAIN_LATER } from "./connection.js";
import { EnergyDetector, MicError, MIC_SAMPLE_RATE, openMicrophone } from "./mic.js";
import { Mouth } from "./mouth.js";
import { StreamPlayer } from "./player.js";
import { chooseSite } from "./sites.js";

const params = new URLSearchParams(window.location.search);
const $ = (id) => document.getElementById(id);

const MAX_REDIRECTS = 3; // "server full, try X" hops before giving up
const MAX_RECONNECTS = 6; // backoff 1, 2, 4, 8, 16, 16 s
const MAX_BUBBLES = 40;

/** What the page knows, readable by tests and curious developers (`npcDemo` in the console). */
const demo = {
  state: "idle",
  stateText: "",
  npc: null,
  mode: "ptt",
  site: null,
  session: null,
  outputRate: null,
  // Turns are numbered per session (from 1; turn 0 is the greeting), so entries name their session.
  transcripts: [], // {session, turn, text, final}
  replies: [], // {session, turn, text}: the NPC's words, concatenated per turn
  turns: [], // {session, turn, timings, v2v_ms, interrupted}: one per finished player turn
  errors: [], // {code, message}
  events: [],
  micFramesSent: 0,
  bargeIns: 0,
  reconnects: 0,
};
Object.defineProperties(demo, {
  // Samples of NPC voice that have really played (at the NPC audio rate): in all, and per turn of
  // the current session.
  playedSamples: { enumerable: true, get: () => (player ? player.playedSamples : 0) },
  playedSamplesByTurn: { enumerable: true, get: () => ({ ...(player ? player.playedByTurn : {}) }) },
  // Lip-sync: visemes received (per session) and the mouth shapes the portrait has shown.
  visemesReceived: { enumerable: true, get: () => (mouth ? [...mouth.byTurn.values()].reduce((n, v) => n + v.length, 0) : 0) },
  mouthShapesShown: { enumerable: true, get: () => (mouth ? [...mouth.seen] : []) },
});
window.npcDemo = demo;

let personas = [];
let audioContext = null;
let mic = null;
let player = null;
let mouth = null;
let detector = null;
let connection = null;
let greeted = false; // a reconnect does not make the NPC greet again
let redirects = 0;
let reconnects = 0;
let retryTimer = null;
let talkHeld = false;
let talkPressedAt = 0;
let lastSpeechSentAt = null; // when the last loud mic frame went out (performance.now())
const speechEndByTurn = {}; // turn -> lastSpeechSentAt when the server closed that turn
const v2vByTurn = {};
// Per session (turn numbers start again after a reconnect):
let audioTurn = null; // the turn whose audio frames are arriving
let mutedTurn = -1; // audio of this turn and older is dropped (the player cut it off)
const audioDone = new Set(); // turns whose audio_end arrived
const bubbles = new Map(); // `${who}:${turn}` -> element

function forgetTurns() {
  audioTurn = null;
  mutedTurn = -1;
  audioDone.clear();
  bubbles.clear(); // the old bubbles stay on screen; new turns get new ones
  if (player) player.playedByTurn = {};
  if (player) player.queuedByTurn = {};
  if (mouth) mouth.forget();
  for (const byTurn of [speechEndByTurn, v2vByTurn]) for (const key of Object.keys(byTurn)) delete byTurn[key];
}

// ---------------------------------------------------------------------------------------------- UI

const STATE_TEXT = {
  idle: () => "idle",
  loading: () => "loading characters…",
  locating: () => "finding the nearest site…",
  connecting: () => "connecting…",
  listening: () => (demo.mode === "ptt" ? "hold Space to talk" : "listening…"),
  hearing: () => "hearing you…",
  thinking: () => `${npcName()} is thinking…`,
  speaking: () => `${npcName()} is speaking`,
  reconnecting: () => "reconnecting…",
  redirecting: () => "moving to another site…",
  ended: () => "session ended",
  error: () => "stopped",
};

function npcName() {
  return demo.npc ? demo.npc.name : "the NPC";
}

function setState(state, detail) {
  demo.state = state;
  demo.stateText = detail || STATE_TEXT[state]();
  const badge = $("state-badge");
  badge.dataset.state = state;
  badge.textContent = demo.stateText;
  const live = ["listening", "hearing", "thinking", "speaking"].includes(state);
  $("talk-button").disabled = !live || demo.mode !== "ptt" || !mic;
  $("type-input").disabled = !live;
  $("type-button").disabled = !live;
  $("talk-button").classList.toggle("held", talkHeld);
}

function logEvent(text) {
  const stamp = new Date().toLocaleTimeString([], { hour12: false });
  demo.events.push(`${stamp} ${text}`);
  if (demo.events.length > 200) demo.events.shift();
  const item = document.createElement("li");
  item.textContent = `${stamp} ${text}`;
  const list = $("events");
  list.prepend(item);
  while (list.children.length > 30) list.lastChild.remove();
}

/** Problems that last (no microphone, sound blocked); shown whenever no other notice is up. */
const standing = { mic: "", sound: "" };

function showNotice(text, kind = "info", action = null) {
  if (!text) {
    text = [standing.mic, standing.sound].filter(Boolean).join(" ");
    kind = standing.mic ? "error" : "info";
  }
  const notice = $("notice");
  notice.hidden = !text;
  notice.dataset.kind = kind;
  $("notice-text").textContent = text || "";
  const button = $("notice-action");
  button.hidden = !action;
  if (action) {
    button.textContent = action.label;
    button.onclick = action.run;
  }
}

function bubble(who, turn, { pending = false } = {}) {
  const key = `${who}:${turn}`;
  let item = bubbles.get(key);
  if (!item) {
    item = document.createElement("li");
    item.className = `bubble ${who}`;
    item.dataset.turn = turn;
    const name = document.createElement("span");
    name.className = "speaker";
    name.textContent = who === "npc" ? npcName() : "You";
    const words = document.createElement("span");
    words.className = "words";
    item.append(name, words);
    $("dialogue").append(item);
    bubbles.set(key, item);
    while ($("dialogue").children.length > MAX_BUBBLES) $("dialogue").firstChild.remove();
  }
  item.classList.toggle("pending", pending);
  return item;
}

function setBubbleText(who, turn, text, options) {
  const item = bubble(who, turn, options);
  item.querySelector(".words").textContent = text;
  const list = $("dialogue");
  list.scrollTop = list.scrollHeight;
}

function showCard(persona) {
  $("npc-name").textContent = persona ? persona.name : "Pick a character";
  $("npc-role").textContent = persona ? persona.role || "" : "";
  $("npc-description").textContent = persona ? persona.description || "" : "";
  $("portrait-initial").textContent = persona ? persona.name.trim().charAt(0).toUpperCase() : "?";
}

function showSite(site) {
  const panel = $("site-panel");
  panel.textContent = "";
  const head = document.createElement("p");
  const name = document.createElement("strong");
  name.textContent = site.region ? `${site.id} (${site.region})` : site.id;
  const url = document.createElement("code");
  url.textContent = site.url;
  head.append(name, " ", url);
  panel.append(head);
  const why = document.createElement("ul");
  why.className = "why";
  for (const reason of site.why) {
    const item = document.createElement("li");
    item.textContent = reason;
    why.append(item);
  }
  panel.append(why);
  if (site.position) {
    const where = document.createElement("p");
    where.className = "muted";
    where.textContent = `Your position: ${site.position.lat.toFixed(1)}, ${site.position.lon.toFixed(1)} (${site.position.source})`;
    panel.append(where);
  }
  if (site.candidates.length) {
    const table = document.createElement("table");
    table.innerHTML = "<thead><tr><th>site</th><th>estimated</th><th>measured</th></tr></thead>";
    const body = document.createElement("tbody");
    for (const c of site.candidates) {
      const row = document.createElement("tr");
      if (c.id === site.id) row.className = "chosen";
      for (const value of [c.id, `${Math.round(c.rtt_ms)} ms`, c.measured_ms === null ? "no answer" : `${c.measured_ms} ms`]) {
        const cell = document.createElement("td");
        cell.textContent = value;
        row.append(cell);
      }
      body.append(row);
    }
    table.append(body);
    panel.append(table);
  }
}

// ------------------------------------------------------------------------------------- characters

/** A persona the server can talk as: `live` (a broken edit keeps the last good version live), else no error. */
function loadable(entry) {
  if (!entry.id) return false;
  return typeof entry.live === "boolean" ? entry.live : !entry.error;
}

async function loadPersonas() {
  setState("loading");
  for (let attempt = 0; attempt < MAX_RECONNECTS; attempt++) {
    try {
      const reply = await fetch("/v1/personas", { cache: "no-store" });
      if (!reply.ok) throw new Error(`the server answered ${reply.status}`);
      const body = await reply.json();
      return (body.personas || []).filter(loadable).map((p) => ({ ...p, name: p.name || p.id }));
    } catch (error) {
      const wait = 2 ** attempt;
      showNotice(`Server unreachable (${error.message}); retrying in ${wait} s.`, "error");
      await new Promise((resolve) => setTimeout(resolve, wait * 1000));
    }
  }
  throw new Error("The server could not be reached.");
}

function fillPicker() {
  const select = $("npc-select");
  select.textContent = "";
  for (const persona of personas) {
    const option = document.createElement("option");
    option.value = persona.id;
    option.textContent = persona.role ? `${persona.name}, ${persona.role}` : persona.name;
    select.append(option);
  }
  const wanted = params.get("npc");
  if (wanted && personas.some((p) => p.id === wanted)) select.value = wanted;
  pickNpc(select.value);
}

function pickNpc(id) {
  demo.npc = personas.find((p) => p.id === id) || null;
  showCard(demo.npc);
  $("start-button").disabled = !demo.npc;
}

// ------------------------------------------------------------------------------------------- audio

async function prepareAudio() {
  if (!audioContext) {
    audioContext = new AudioContext({ latencyHint: "interactive" });
    player = new StreamPlayer(audioContext);
    player.onIdle = onPlaybackIdle;
    mouth = new Mouth($("mouth"), player);
  }
  if (audioContext.state === "suspended") {
    audioContext.resume().catch(() => {});
    // Without a click the browser may keep sound off (autostart): the first click turns it on.
    setTimeout(() => {
      if (audioContext.state === "suspended") {
        standing.sound = "Click anywhere to turn the sound on.";
        if ($("notice").hidden || $("notice").dataset.kind !== "error") showNotice("");
        const resume = () => audioContext.resume().then(() => {
          standing.sound = "";
          showNotice("");
        });
        window.addEventListener("pointerdown", resume, { once: true });
        window.addEventListener("keydown", resume, { once: true });
      }
    }, 300);
  }
  if (mic) return;
  detector = new EnergyDetector();
  try {
    mic = await openMicrophone(audioContext, onMicFrame);
    standing.mic = "";
    logEvent(`microphone: ${mic.label} (${mic.settings.sampleRate || audioContext.sampleRate} Hz in, ${MIC_SAMPLE_RATE} Hz out)`);
  } catch (error) {
    const message = error instanceof MicError ? error.message : `Microphone error: ${error.message}`;
    demo.errors.push({ code: error.kind || "mic", message });
    standing.mic = message;
    showNotice("");
    logEvent(`no microphone: ${message}`);
  }
}

function onMicFrame({ pcm, rms }) {
  const level = Math.max(0, Math.min(1, (20 * Math.log10(rms + 1e-6) + 60) / 60));
  $("meter-fill").style.width = `${(level * 100).toFixed(0)}%`;
  const live = connection && connection.isOpen && demo.session;
  const sending = live && (demo.mode === "open" || talkHeld);
  const voice = detector.push(rms);
  if (!sending) return;
  connection.sendAudio(pcm);
  demo.micFramesSent += 1;
  if (voice.loud) lastSpeechSentAt = performance.now();
  if (demo.mode === "open" && voice.started) {
    if (player.playing) bargeIn("you spoke over the NPC");
    else if (demo.state === "listening") setState("hearing");
  }
  if (demo.mode === "open" && voice.ended && demo.state === "hearing") setState("listening");
}

/** The player talks over the NPC: silence it now and tell the server to stop generating. */
function bargeIn(why) {
  if (!player.playing && demo.state !== "thinking") return;
  player.stop();
  mutedTurn = Math.max(mutedTurn, audioTurn ?? -1);
  const item = bubbles.get(`npc:${audioTurn}`);
  if (item) item.classList.add("cut");
  connection.send({ type: "interrupt" });
  demo.bargeIns += 1;
  logEvent(`barge-in: ${why}; sent interrupt`);
  setState("hearing");
}

function onPlaybackIdle() {
  if (demo.state === "speaking" && (audioTurn === null || audioDone.has(audioTurn))) setState("listening");
}

// ------------------------------------------------------------------------------------ push to talk

function pressTalk() {
  if (talkHeld || demo.mode !== "ptt" || !mic || !connection || !demo.session) return;
  talkHeld = true;
  talkPressedAt = performance.now();
  if (player.playing) bargeIn("you pressed talk while the NPC spoke");
  setState("hearing");
}

function releaseTalk() {
  if (!talkHeld) return;
  talkHeld = false;
  if (!connection) return;
  if (lastSpeechSentAt === null || lastSpeechSentAt < talkPressedAt) lastSpeechSentAt = performance.now();
  connection.send({ type: "end_of_turn" });
  setState("thinking");
}

// -------------------------------------------------------------------------------------- session

async function startSession() {
  if (!demo.npc) return;
  clearTimeout(retryTimer);
  showNotice("");
  $("start-button").hidden = true;
  $("leave-button").hidden = false;
  $("npc-select").disabled = true;
  greeted = false;
  redirects = 0;
  reconnects = 0;
  await prepareAudio();
  setState("locating");
  let site;
  try {
    site = await chooseSite({ npc: demo.npc.id, params, onProgress: (text) => setState("locating", text) });
  } catch (error) {
    site = { url: `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/v1/talk`, id: "this server",
      why: [`site lookup failed (${error.message}); using the page's own server`], candidates: [] };
  }
  demo.site = site;
  showSite(site);
  logEvent(`site: ${site.id}, because ${site.why.join("; ")}`);
  connect(site.url);
}

/** The WebSocket URL with the page's session token, when the game gave one (`?token=`). */
function withToken(url) {
  const token = params.get("token");
  if (!token) return url;
  const withParam = new URL(url);
  withParam.searchParams.set("token", token);
  return withParam.toString();
}

function connect(url) {
  demo.session = null;
  setState("connecting", `connecting to ${new URL(url).host}…`);
  connection = new TalkConnection({
    url: withToken(url),
    start: {
      type: "start",
      npc: demo.npc.id,
      audio: { encoding: "pcm_s16le", sample_rate: MIC_SAMPLE_RATE },
      greeting: !greeted,
      visemes: true,
    },
    onOpen: () => logEvent(`connected to ${url}`),
    onMessage,
    onAudio,
    onEnd,
  });
}

function leave() {
  clearTimeout(retryTimer);
  if (connection) connection.close();
  connection = null;
  if (player) player.stop();
  if (mic) mic.close();
  mic = null;
  talkHeld = false;
  demo.session = null;
  $("start-button").hidden = false;
  $("leave-button").hidden = true;
  $("npc-select").disabled = false;
  setState("ended");
}

function onMessage(message) {
  switch (message.type) {
    case "ready":
      demo.session = message.session;
      forgetTurns();
      demo.outputRate = message.audio.sample_rate;
      player.setSampleRate(message.audio.sample_rate);
      greeted = true;
      redirects = 0;
      reconnects = 0;
      showNotice("");
      logEvent(`ready: session ${message.session}, ${message.npc.name}'s voice at ${message.audio.sample_rate} Hz`);
      setState("listening");
      break;
    case "transcript": {
      demo.transcripts.push({ session: demo.session, turn: message.turn, text: message.text, final: message.final });
      setBubbleText("player", message.turn, message.text || "…", { pending: !message.final });
      if (message.final) {
        speechEndByTurn[message.turn] = lastSpeechSentAt;
        if (message.text) {
          setBubbleText("npc", message.turn, "", { pending: true });
          setState("thinking");
        }
      }
      break;
    }
    case "reply": {
      let entry = demo.replies.find((r) => r.turn === message.turn && r.session === demo.session);
      if (!entry) demo.replies.push((entry = { session: demo.session, turn: message.turn, text: "" }));
      entry.text += message.text;
      setBubbleText("npc", message.turn, entry.text.trim(), { pending: false });
      break;
    }
    case "audio_start":
      audioTurn = message.turn;
      break;
    case "emote":
      logEvent(`emote: ${message.name}`);
      break;
    case "action": {
      // what a game would carry out: the demo only shows it
      const args = Object.entries(message.args || {}).map(([name, value]) => `${name}=${JSON.stringify(value)}`);
      logEvent(`action: ${message.id}(${args.join(", ")})`);
      break;
    }
    case "visemes":
      if (message.turn > mutedTurn) mouth.add(message.turn, message.visemes);
      break;
    case "audio_end":
      audioDone.add(message.turn);
      if (!player.playing) onPlaybackIdle();
      break;
    case "turn_end":
      onTurnEnd(message);
      break;
    case "error":
      onServerError(message);
      break;
    default:
      break; // newer servers may say more; unknown messages are ignored
  }
}

function onAudio(pcm) {
  if (audioTurn === null || audioTurn <= mutedTurn) return;
  if (audioTurn >= 1 && !(audioTurn in v2vByTurn)) {
    const spokeUntil = speechEndByTurn[audioTurn] ?? lastSpeechSentAt;
    v2vByTurn[audioTurn] = spokeUntil === null ? null : Math.round(performance.now() - spokeUntil);
  }
  player.push(pcm, audioTurn);
  if (demo.state !== "hearing") setState("speaking");
}

function onTurnEnd(message) {
  const item = bubbles.get(`npc:${message.turn}`);
  if (item) {
    item.classList.remove("pending");
    if (message.interrupted) item.classList.add("cut");
    if (!item.querySelector(".words").textContent) item.remove();
  }
  if (message.turn >= 1) {
    const turn = { session: demo.session, turn: message.turn, timings: message.timings || {}, v2v_ms: v2vByTurn[message.turn] ?? null,
      interrupted: Boolean(message.interrupted) };
    demo.turns.push(turn);
    renderTimings($("timings"), turn, demo.turns);
    const v2v = turn.v2v_ms === null ? "no reply audio" : `voice to voice ${turn.v2v_ms} ms`;
    logEvent(`turn ${turn.turn} ended${turn.interrupted ? " (interrupted)" : ""}: ${v2v}`);
  }
  if (!player.playing && ["thinking", "speaking"].includes(demo.state)) setState("listening");
}

function onServerError(message) {
  demo.errors.push({ code: message.code, message: message.message });
  logEvent(`server error ${message.code}: ${message.message}`);
  if (message.code === "server_full" || message.code === "draining") return; // the close follows; onEnd moves on
  if (message.code === "unknown_npc") {
    showNotice(`${message.message}`, "error");
    return;
  }
  showNotice(`The server said: ${message.message}`, message.fatal ? "error" : "info");
  if (demo.state === "thinking") setState("listening");
}

function onEnd(end) {
  if (end.byUs) return;
  player.stop();
  demo.session = null;
  talkHeld = false;
  const error = end.lastError;
  const full = end.code === TRY_AGAIN_LATER || (error && ["server_full", "draining"].includes(error.code));
  if (full && error && error.retry_url && redirects < MAX_REDIRECTS) {
    redirects += 1;
    logEvent(`${error.code}: moving to ${error.retry_url}`);
    showNotice(`This site is full; moving to ${new URL(error.retry_url).host}.`, "info");
    demo.site = { ...(demo.site || {}), url: error.retry_url, id: new URL(error.retry_url).host,
      why: [`the previous site was full (${error.code}) and suggested this one`], candidates: [] };
    showSite(demo.site);
    setState("redirecting");
    retryTimer = setTimeout(() => connect(error.retry_url), 200);
    return;
  }
  if (error && error.fatal && !full) {
    showNotice(`Session ended: ${error.message}`, "error", { label: "Start again", run: () => { leave(); startSession(); } });
    setState("error");
    return;
  }
  if (end.opened && end.code === 1000) {
    showNotice("The server ended the session.", "info", { label: "Start again", run: () => { leave(); startSession(); } });
    setState("ended");
    return;
  }
  reconnects += 1;
  demo.reconnects += 1;
  if (reconnects > MAX_RECONNECTS) {
    showNotice("The server cannot be reached.", "error", { label: "Try again", run: () => { leave(); startSession(); } });
    setState("error");
    return;
  }
  const delay = Math.min(16, 2 ** (reconnects - 1)) * (0.8 + Math.random() * 0.4);
  const why = full ? "The server is full" : end.opened ? "Connection lost" : "Server unreachable or refused the connection";
  showNotice(`${why} (close code ${end.code}); reconnecting in ${delay.toFixed(1)} s (try ${reconnects} of ${MAX_RECONNECTS}).`, "error");
  logEvent(`${why.toLowerCase()} (code ${end.code}); retry in ${delay.toFixed(1)} s`);
  setState("reconnecting");
  const url = demo.site ? demo.site.url : connection.url;
  retryTimer = setTimeout(() => connect(url), delay * 1000);
}

// ---------------------------------------------------------------------------------------- wiring

function typedLine(event) {
  event.preventDefault();
  const input = $("type-input");
  const text = input.value.trim();
  if (!text || !connection) return;
  if (player.playing) bargeIn("you typed over the NPC");
  lastSpeechSentAt = performance.now();
  connection.send({ type: "text", text });
  input.value = "";
  setState("thinking");
}

function isTyping(event) {
  return ["INPUT", "SELECT", "TEXTAREA"].includes(event.target.tagName);
}

function wire() {
  $("npc-select").addEventListener("change", (event) => pickNpc(event.target.value));
  $("setup-form").addEventListener("submit", (event) => {
    event.preventDefault();
    startSession();
  });
  $("leave-button").addEventListener("click", leave);
  for (const radio of document.querySelectorAll('input[name="mode"]')) {
    radio.addEventListener("change", () => {
      if (talkHeld) releaseTalk();
      demo.mode = radio.value;
      $("talk-button").textContent = demo.mode === "ptt" ? "Hold to talk " : "Open mic is on";
      if (demo.mode === "ptt") $("talk-button").insertAdjacentHTML("beforeend", "<kbd>Space</kbd>");
      setState(demo.state, demo.state === "listening" ? undefined : demo.stateText);
    });
  }
  const talk = $("talk-button");
  talk.addEventListener("pointerdown", (event) => {
    talk.setPointerCapture(event.pointerId);
    pressTalk();
  });
  talk.addEventListener("pointerup", releaseTalk);
  talk.addEventListener("pointercancel", releaseTalk);
  window.addEventListener("keydown", (event) => {
    if (event.code !== "Space" || event.repeat || isTyping(event)) return;
    event.preventDefault();
    pressTalk();
  });
  window.addEventListener("keyup", (event) => {
    if (event.code !== "Space" || isTyping(event)) return;
    event.preventDefault();
    releaseTalk();
  });
  window.addEventListener("blur", releaseTalk);
  $("type-form").addEventListener("submit", typedLine);
}

async function main() {
  wire();
  const mode = params.get("mode") === "open" ? "open" : "ptt";
  document.querySelector(`input[name="mode"][value="${mode}"]`).checked = true;
  document.querySelector(`input[name="mode"][value="${mode}"]`).dispatchEvent(new Event("change"));
  try {
    personas = await loadPersonas();
  } catch (error) {
    showNotice(error.message, "error", { label: "Reload", run: () => window.location.reload() });
    setState("error");
    return;
  }
  showNotice("");
  if (personas.length === 0) {
    showNotice("This server has no loadable characters (check its voices/ folder).", "error");
    setState("error");
    return;
  }
  fillPicker();
  setState("idle", "press Start to talk");
  if (params.get("autostart") === "1") startSession();
}

main();
