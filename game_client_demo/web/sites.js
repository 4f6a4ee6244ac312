// Choosing where to connect: ask this server's lookup (`GET /v1/sites/nearest`) for the sites nearest
// the player, probe the top candidates' `/v1/ping` for the real round-trip time, and let the lookup
// rank again with those measurements. Without a lookup (404), talk to the page's own server.

const LOOKUP_TIMEOUT_MS = 3000;
const PING_TIMEOUT_MS = 1500;
const PROBED_CANDIDATES = 3;
const PINGS_PER_SITE = 3; // the first one also opens the connection; the best of the rest counts

/** The WebSocket URL of the server that served this page. */
export function ownServerUrl(location = window.location) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/v1/talk`;
}

/** `ws://host:port/v1/talk` -> `http://host:port/v1/ping`. */
export function pingUrl(talkUrl) {
  const url = new URL(talkUrl);
  url.protocol = url.protocol === "wss:" ? "https:" : "http:";
  url.pathname = "/v1/ping";
  url.search = "";
  return url.toString();
}

async function fetchWithTimeout(url, timeoutMs) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeoutMs);
  try {
    return await fetch(url, { cache: "no-store", signal: controller.signal });
  } finally {
    clearTimeout(timer);
  }
}

/** Best of a few `/v1/ping` round trips in ms, or null when the site does not answer. */
export async function probeRtt(talkUrl) {
  const url = pingUrl(talkUrl);
  const times = [];
  for (let i = 0; i < PINGS_PER_SITE; i++) {
    const started = performance.now();
    try {
      const reply = await fetchWithTimeout(url, PING_TIMEOUT_MS);
      await reply.arrayBuffer();
      if (!reply.ok) return null;
    } catch (_) {
      return null;
    }
    times.push(performance.now() - started);
  }
  const measured = times.length > 1 ? times.slice(1) : times;
  return Math.round(Math.min(...measured) * 10) / 10;
}

/**
 * Where the player is, roughly: `?lat=&lon=` when the game knows, the browser's position when
 * permission was already granted (we never prompt for it), else a guess from the time zone.
 */
export async function playerPosition(params) {
  const lat = parseFloat(params.get("lat"));
  const lon = parseFloat(params.get("lon"));
  if (Number.isFinite(lat) && Number.isFinite(lon)) return { lat, lon, source: "given by the game (?lat=&lon=)" };
  try {
    const permission = await navigator.permissions.query({ name: "geolocation" });
    if (permission.state === "granted") {
      const position = await new Promise((resolve, reject) =>
        navigator.geolocation.getCurrentPosition(resolve, reject, { timeout: 1500, maximumAge: 600000 }),
      );
      return { lat: position.coords.latitude, lon: position.coords.longitude, source: "browser location" };
    }
  } catch (_) {
    // no permission API or no fix: fall through to the estimate
  }
  return { ...timeZoneGuess(), source: "estimated from the time zone" };
}

const ZONE_LATITUDE = { Europe: 50, America: 38, Asia: 30, Africa: 5, Australia: -30, Pacific: -15, Atlantic: 40, Indian: -10 };

function timeZoneGuess() {
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "";
  const lon = Math.max(-180, Math.min(180, -new Date().getTimezoneOffset() / 4)); // 15 degrees per hour
  return { lat: ZONE_LATITUDE[zone.split("/")[0]] ?? 30, lon };
}

async function lookup(position, npc, rtts) {
  const query = new URLSearchParams({ lat: position.lat.toFixed(2), lon: position.lon.toFixed(2), limit: "5" });
  if (npc) query.set("npc", npc);
  const measured = Object.entries(rtts).filter(([, ms]) => ms !== null);
  if (measured.length) query.set("rtt", measured.map(([id, ms]) => `${id}:${ms}`).join(","));
  const reply = await fetchWithTimeout(`/v1/sites/nearest?${query}`, LOOKUP_TIMEOUT_MS);
  const body = reply.headers.get("content-type")?.includes("json") ? await reply.json() : null;
  return { status: reply.status, body };
}

/**
 * Pick the site to connect to. Returns
 * `{url, id, region, why: [..], position, candidates: [{id, region, url, rtt_ms, measured_ms}], fallback}`.
 */
export async function chooseSite({ npc, params, onProgress = () => {} }) {
  const own = ownServerUrl();
  const forced = params.get("ws");
  if (forced) return { url: forced, id: "given", why: ["the page was told where to connect (?ws=)"], candidates: [], fallback: true };
  const position = await playerPosition(params);
  const fallback = (reason) => ({ url: own, id: "this server", region: "", why: [reason], position, candidates: [], fallback: true });

  onProgress("Asking for the nearest site...");
  let first;
  try {
    first = await lookup(position, npc, {});
  } catch (error) {
    return fallback(`the site lookup did not answer (${error.name}); using the page's own server`);
  }
  if (first.status === 404) return fallback("this server has no site lookup; using it directly");
  if (first.status !== 200 || !first.body || !Array.isArray(first.body.sites) || first.body.sites.length === 0) {
    const message = first.body?.error?.message || `the lookup answered ${first.status}`;
    return fallback(`${message}; trying the page's own server`);
  }

  const candidates = first.body.sites.slice(0, PROBED_CANDIDATES).map((site) => ({
    id: site.id, region: site.region, url: site.url, rtt_ms: site.rtt_ms, measured_ms: null, reasons: site.reasons || [],
  }));
  onProgress(`Measuring the round trip to ${candidates.map((c) => c.id).join(", ")}...`);
  const measured = await Promise.all(candidates.map((c) => probeRtt(c.url)));
  candidates.forEach((c, i) => (c.measured_ms = measured[i]));
  const reachable = candidates.filter((c) => c.measured_ms !== null);
  if (reachable.length === 0) {
    return { ...fallback("no candidate site answered its ping; using the page's own server"), candidates };
  }

  // Let the lookup rank again with what we measured (it also weighs load and capacity).
  let best = null;
  try {
    const rtts = Object.fromEntries(candidates.map((c) => [c.id, c.measured_ms]));
    const second = await lookup(position, npc, rtts);
    const ranked = second.status === 200 ? second.body.sites : [];
    const top = ranked.find((site) => reachable.some((c) => c.id === site.id));
    if (top) best = { ...top, why: top.reasons || [] };
  } catch (_) {
    // keep the local choice below
  }
  if (!best) {
    const fastest = reachable.reduce((a, b) => (b.measured_ms < a.measured_ms ? b : a));
    best = { ...fastest, why: [...fastest.reasons, "lowest measured round trip"] };
  }
  const mine = candidates.find((c) => c.id === best.id);
  const why = [...best.why];
  if (mine && mine.measured_ms !== null && !why.some((reason) => /measured/i.test(reason))) {
    why.push(`measured round trip ${mine.measured_ms} ms`);
  }
  return { url: best.url, id: best.id, region: best.region || "", why, position, candidates, fallback: false };
}
