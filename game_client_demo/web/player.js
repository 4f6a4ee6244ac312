// Gapless playback of streamed PCM s16le: each chunk becomes an AudioBuffer scheduled on the
// AudioContext timeline right where the previous one ends, so network jitter never opens a gap
// inside a stream. `stop()` silences everything at once (barge-in) and counts what was really heard.

const START_LEAD_S = 0.05; // headroom before the first chunk of a stream (absorbs scheduling jitter)

export class StreamPlayer {
  constructor(audioContext) {
    this.context = audioContext;
    this.sampleRate = 22050;
    this.nextTime = 0;
    this.active = new Set(); // {source, startAt, length, turn, firstSample}
    this.playedSamples = 0; // samples that have actually played, at the stream's rate
    this.playedByTurn = {};
    this.queuedByTurn = {}; // samples of each turn handed to push(): where its next chunk starts
    this.onIdle = null; // called when the last scheduled chunk has finished
  }

  setSampleRate(rate) {
    this.sampleRate = rate;
  }

  get playing() {
    return this.active.size > 0;
  }

  /** Queue one chunk (ArrayBuffer of PCM s16le) belonging to reply `turn`. */
  push(pcm, turn) {
    const samples = new Int16Array(pcm);
    if (samples.length === 0) return;
    const buffer = this.context.createBuffer(1, samples.length, this.sampleRate);
    const channel = buffer.getChannelData(0);
    for (let i = 0; i < samples.length; i++) channel[i] = samples[i] / 32768;
    const source = this.context.createBufferSource();
    source.buffer = buffer;
    source.connect(this.context.destination);
    const now = this.context.currentTime;
    const startAt = this.nextTime > now ? this.nextTime : now + START_LEAD_S;
    const firstSample = this.queuedByTurn[turn] || 0;
    this.queuedByTurn[turn] = firstSample + samples.length;
    const entry = { source, startAt, length: samples.length, turn, firstSample };
    source.onended = () => this.finished(entry, samples.length);
    source.start(startAt);
    this.nextTime = startAt + samples.length / this.sampleRate;
    this.active.add(entry);
  }

  /** What is playing now: the turn and the sample of that turn's audio, or null in silence. */
  position() {
    const now = this.context.currentTime;
    for (const entry of this.active) {
      const offset = Math.floor((now - entry.startAt) * this.sampleRate);
      if (offset >= 0 && offset < entry.length) return { turn: entry.turn, sample: entry.firstSample + offset };
    }
    return null;
  }

  finished(entry, played) {
    if (!this.active.delete(entry)) return;
    this.count(entry.turn, played);
    if (this.active.size === 0 && this.onIdle) this.onIdle();
  }

  count(turn, samples) {
    this.playedSamples += samples;
    this.playedByTurn[turn] = (this.playedByTurn[turn] || 0) + samples;
  }

  /** Stop at once; counts the part of each chunk that already played. */
  stop() {
    const now = this.context.currentTime;
    for (const entry of this.active) {
      entry.source.onended = null;
      try {
        entry.source.stop();
      } catch (_) {
        // never started: nothing to stop
      }
      const heard = Math.round((now - entry.startAt) * this.sampleRate);
      this.count(entry.turn, Math.max(0, Math.min(entry.length, heard)));
    }
    this.active.clear();
    this.nextTime = 0;
  }
}
