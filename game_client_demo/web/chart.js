// Per-turn timings as a small inline SVG bar chart: the voice-to-voice time the page measured, the
// server's own figure, and its stage breakdown; below, the page's voice-to-voice for recent turns.

const SVG = "http://www.w3.org/2000/svg";

const ROWS = [
  { key: "page_v2v_ms", label: "voice to voice (this page)", kind: "total" },
  { key: "voice_to_voice_ms", label: "voice to voice (server)", kind: "total" },
  { key: "reply_audio_ms", label: "reply audio (after filler)", kind: "total" },
  { key: "endpoint_ms", label: "end of speech detected", kind: "stage" },
  { key: "asr_ms", label: "speech recognition", kind: "stage" },
  { key: "llm_first_token_ms", label: "LLM first token", kind: "stage" },
  { key: "tts_first_audio_ms", label: "first clause synthesized", kind: "stage" },
  { key: "llm_total_ms", label: "LLM whole reply", kind: "late" },
];

function el(name, attributes = {}, text) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

/** Draw `turn` ({turn, timings, v2v_ms, interrupted}) and the history of `turns` into `container`. */
export function renderTimings(container, turn, turns) {
  container.textContent = "";
  if (!turn) return;
  const values = { ...turn.timings, page_v2v_ms: turn.v2v_ms };
  // Figures a newer server adds are shown too, under their own names.
  const extra = Object.keys(values).filter((key) => key.endsWith("_ms") && !ROWS.some((row) => row.key === key))
    .map((key) => ({ key, label: key.slice(0, -3).replaceAll("_", " "), kind: "late" }));
  const rows = [...ROWS, ...extra].filter((row) => typeof values[row.key] === "number");
  const width = 360;
  const labelWidth = 168;
  const barWidth = width - labelWidth - 40;
  const rowHeight = 17;
  const history = turns.filter((t) => typeof t.v2v_ms === "number").slice(-12);
  const historyHeight = history.length > 1 ? 44 : 0;
  const height = rows.length * rowHeight + 22 + historyHeight;
  const svg = el("svg", { viewBox: `0 0 ${width} ${height}`, width: "100%", role: "img", class: "timing-chart" });
  svg.appendChild(el("title", {}, `Timings of turn ${turn.turn}`));
  const scale = Math.max(1, ...rows.map((row) => values[row.key]));
  svg.appendChild(el("text", { x: 0, y: 12, class: "chart-title" },
    `Turn ${turn.turn}${turn.interrupted ? " (interrupted)" : ""}: milliseconds`));
  rows.forEach((row, i) => {
    const y = 20 + i * rowHeight;
    const value = values[row.key];
    const length = Math.max(1, (value / scale) * barWidth);
    svg.appendChild(el("text", { x: labelWidth - 6, y: y + 11, class: "chart-label", "text-anchor": "end" }, row.label));
    svg.appendChild(el("rect", { x: labelWidth, y: y + 2, width: length, height: rowHeight - 5, rx: 2, class: `bar bar-${row.kind}` }));
    svg.appendChild(el("text", { x: labelWidth + length + 4, y: y + 11, class: "chart-value" }, `${Math.round(value)}`));
  });
  if (historyHeight) {
    const top = 24 + rows.length * rowHeight;
    const most = Math.max(...history.map((t) => t.v2v_ms));
    const step = barWidth / history.length;
    svg.appendChild(el("text", { x: labelWidth - 6, y: top + 26, class: "chart-label", "text-anchor": "end" },
      "recent turns (this page)"));
    history.forEach((t, i) => {
      const h = Math.max(1, (t.v2v_ms / most) * (historyHeight - 8));
      const bar = el("rect", { x: labelWidth + i * step, y: top + historyHeight - 4 - h, width: Math.max(2, step - 3), height: h,
        class: t === turn ? "bar bar-total" : "bar bar-history" });
      bar.appendChild(el("title", {}, `turn ${t.turn}: ${Math.round(t.v2v_ms)} ms`));
      svg.appendChild(bar);
    });
  }
  container.appendChild(svg);
}
