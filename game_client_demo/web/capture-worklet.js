// AudioWorklet processor: mixes the microphone to mono, resamples it to 16 kHz with a windowed-sinc
// low-pass (no aliasing from 44.1/48 kHz), and posts 20 ms frames of PCM s16le to the page, each with
// its RMS level (for the page's speech detector). Runs on the audio thread: no allocation per sample.

const ZERO_CROSSINGS = 6; // per side of the kernel: ~60 dB stop band, 40 taps at 48 kHz
const TABLE_STEPS = 64; // kernel samples per input sample (the fractional position is rounded to 1/64)

class Pcm16CaptureProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const { targetRate = 16000, frameMs = 20 } = options.processorOptions || {};
    this.step = sampleRate / targetRate; // input samples per output sample
    this.frame = new Int16Array(Math.round((targetRate * frameMs) / 1000));
    this.frameFill = 0;
    this.frameEnergy = 0;
    this.passThrough = Math.abs(this.step - 1) < 1e-9;
    // Cutoff just under the target Nyquist frequency, in cycles per input sample.
    const cutoff = 0.45 * Math.min(1, targetRate / sampleRate);
    this.half = Math.ceil(ZERO_CROSSINGS / (2 * cutoff)); // kernel half-width, in input samples
    this.table = buildKernel(cutoff, this.half);
    this.pending = new Float32Array(this.half * 2 + 8192);
    this.pendingLength = this.half; // leading zeros: the first output sample has a full history
    this.position = this.half; // where the next output sample lies, in `pending` coordinates
  }

  process(inputs) {
    const channels = inputs[0];
    if (!channels || channels.length === 0 || channels[0].length === 0) return true;
    const length = channels[0].length;
    this.ensureRoom(length);
    const scale = 1 / channels.length;
    for (let i = 0; i < length; i++) {
      let sum = 0;
      for (let c = 0; c < channels.length; c++) sum += channels[c][i];
      this.pending[this.pendingLength + i] = sum * scale;
    }
    this.pendingLength += length;
    if (this.passThrough) {
      for (let i = this.half; i < this.pendingLength; i++) this.emit(this.pending[i]);
      this.pending.copyWithin(this.half, this.pendingLength);
      this.pendingLength = this.half;
      return true;
    }
    this.resampleAvailable();
    return true;
  }

  resampleAvailable() {
    const { pending, table, half } = this;
    while (Math.floor(this.position) + half < this.pendingLength) {
      const base = Math.floor(this.position);
      const fraction = this.position - base;
      let acc = 0;
      let weights = 0;
      for (let k = -half + 1; k <= half; k++) {
        const distance = Math.abs(k - fraction);
        const w = table[Math.round(distance * TABLE_STEPS)] || 0;
        acc += pending[base + k] * w;
        weights += w;
      }
      this.emit(weights > 0 ? acc / weights : 0);
      this.position += this.step;
    }
    // Drop what no future output sample needs.
    const keepFrom = Math.floor(this.position) - half + 1;
    if (keepFrom > 0) {
      pending.copyWithin(0, keepFrom, this.pendingLength);
      this.pendingLength -= keepFrom;
      this.position -= keepFrom;
    }
  }

  ensureRoom(extra) {
    if (this.pendingLength + extra <= this.pending.length) return;
    const bigger = new Float32Array((this.pendingLength + extra) * 2);
    bigger.set(this.pending.subarray(0, this.pendingLength));
    this.pending = bigger;
  }

  emit(value) {
    const clipped = value > 1 ? 1 : value < -1 ? -1 : value;
    this.frame[this.frameFill++] = clipped < 0 ? clipped * 0x8000 : clipped * 0x7fff;
    this.frameEnergy += clipped * clipped;
    if (this.frameFill === this.frame.length) {
      const rms = Math.sqrt(this.frameEnergy / this.frame.length);
      const pcm = this.frame.slice().buffer; // a copy we can transfer; `frame` is reused
      this.port.postMessage({ pcm, rms }, [pcm]);
      this.frameFill = 0;
      this.frameEnergy = 0;
    }
  }
}

// Hann-windowed sinc, sampled TABLE_STEPS times per input sample from distance 0 to `half`.
function buildKernel(cutoff, half) {
  const table = new Float32Array(half * TABLE_STEPS + 2);
  for (let i = 0; i < table.length; i++) {
    const d = i / TABLE_STEPS;
    if (d >= half) break;
    const x = 2 * cutoff * d;
    const sinc = x === 0 ? 1 : Math.sin(Math.PI * x) / (Math.PI * x);
    const window = 0.5 + 0.5 * Math.cos((Math.PI * d) / half);
    table[i] = 2 * cutoff * sinc * window;
  }
  return table;
}

registerProcessor("pcm16-capture", Pcm16CaptureProcessor);
