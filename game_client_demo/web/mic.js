// The microphone: getUserMedia (with the browser's echo cancellation and noise suppression) into the
// capture worklet, which hands back 20 ms frames of 16 kHz PCM s16le with their RMS level.

export const MIC_SAMPLE_RATE = 16000;
export const FRAME_MS = 20;

export class MicError extends Error {
  constructor(kind, message) {
    super(message);
    this.kind = kind; // "denied" | "missing" | "unsupported" | "failed"
  }
}

/** Open the default microphone; `onFrame({pcm: ArrayBuffer, rms: number})` is called every 20 ms. */
export async function openMicrophone(audioContext, onFrame) {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    throw new MicError("unsupported", "This page needs a secure origin (https or localhost) for the microphone.");
  }
  if (!audioContext.audioWorklet) {
    throw new MicError("unsupported", "This browser has no AudioWorklet.");
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true, channelCount: 1 },
    });
  } catch (error) {
    if (error.name === "NotAllowedError" || error.name === "SecurityError") {
      throw new MicError("denied", "Microphone permission was refused. Allow it in the address bar, or type instead.");
    }
    if (error.name === "NotFoundError" || error.name === "OverconstrainedError") {
      throw new MicError("missing", "No microphone was found. Plug one in, or type instead.");
    }
    throw new MicError("failed", `The microphone could not be opened (${error.name}: ${error.message}).`);
  }
  await audioContext.audioWorklet.addModule(new URL("./capture-worklet.js", import.meta.url));
  const source = audioContext.createMediaStreamSource(stream);
  const capture = new AudioWorkletNode(audioContext, "pcm16-capture", {
    processorOptions: { targetRate: MIC_SAMPLE_RATE, frameMs: FRAME_MS },
    numberOfOutputs: 1,
  });
  capture.port.onmessage = (event) => onFrame(event.data);
  // The worklet must reach the destination to be pulled by the renderer; it outputs silence.
  const mute = audioContext.createGain();
  mute.gain.value = 0;
  source.connect(capture).connect(mute).connect(audioContext.destination);
  const track = stream.getAudioTracks()[0];
  return {
    label: track ? track.label : "microphone",
    settings: track ? track.getSettings() : {},
    close() {
      capture.port.onmessage = null;
      source.disconnect();
      capture.disconnect();
      stream.getTracks().forEach((t) => t.stop());
    },
  };
}

/**
 * Speech or not, from frame energy: a frame is loud when its RMS is above both a fixed floor and a
 * multiple of the tracked background level; speech starts after `minSpeechMs` of loud frames (a
 * click or a cough doesn't count) and ends after `hangMs` of quiet ones.
 */
export class EnergyDetector {
  constructor({ minRms = 0.01, overNoise = 3, minSpeechMs = 200, hangMs = 400, frameMs = FRAME_MS } = {}) {
    this.minRms = minRms;
    this.overNoise = overNoise;
    this.startFrames = Math.ceil(minSpeechMs / frameMs);
    this.hangFrames = Math.ceil(hangMs / frameMs);
    this.noise = minRms / overNoise;
    this.loudRun = 0;
    this.quietRun = 0;
    this.speaking = false;
  }

  /** Feed one frame's RMS; returns {loud, started, ended} for that frame. */
  push(rms) {
    const loud = rms > Math.max(this.minRms, this.noise * this.overNoise);
    if (!loud) this.noise += (rms - this.noise) * 0.05; // follow the background, not the voice
    let started = false;
    let ended = false;
    if (loud) {
      this.loudRun += 1;
      this.quietRun = 0;
      if (!this.speaking && this.loudRun >= this.startFrames) {
        this.speaking = true;
        started = true;
      }
    } else {
      this.quietRun += 1;
      if (this.quietRun > 1) this.loudRun = 0; // one quiet frame inside a word is not a pause
      if (this.speaking && this.quietRun >= this.hangFrames) {
        this.speaking = false;
        ended = true;
      }
    }
    return { loud, started, ended };
  }
}
