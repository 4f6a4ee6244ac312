// One WebSocket session with an npcserver (protocol v1, see docs/protocol.md): sends `start`, mic
// frames and control messages; hands JSON messages and audio frames to callbacks; reports how it
// ended (opened or not, close code, the server's last error) so the page can decide to reconnect.

export const TRY_AGAIN_LATER = 1013; // the server is full: reconnect to the site it names

export class TalkConnection {
  /**
   * @param {{url: string, start: object, onMessage: (msg: object) => void, onAudio: (pcm: ArrayBuffer) => void,
   *          onOpen: () => void, onEnd: (end: {opened: boolean, code: number, reason: string, lastError: object|null, byUs: boolean}) => void}} options
   */
  constructor({ url, start, onMessage, onAudio, onOpen, onEnd }) {
    this.url = url;
    this.opened = false;
    this.closedByUs = false;
    this.lastError = null;
    this.socket = new WebSocket(url);
    this.socket.binaryType = "arraybuffer";
    this.socket.onopen = () => {
      this.opened = true;
      this.socket.send(JSON.stringify(start));
      onOpen();
    };
    this.socket.onmessage = (event) => {
      if (typeof event.data !== "string") {
        onAudio(event.data);
        return;
      }
      let message;
      try {
        message = JSON.parse(event.data);
      } catch (_) {
        return; // not ours to fix; the protocol only sends JSON text frames
      }
      if (message.type === "error") this.lastError = message;
      onMessage(message);
    };
    this.socket.onclose = (event) => {
      onEnd({ opened: this.opened, code: event.code, reason: event.reason, lastError: this.lastError, byUs: this.closedByUs });
    };
  }

  get isOpen() {
    return this.socket.readyState === WebSocket.OPEN;
  }

  sendAudio(pcm) {
    // A stalled connection must not buffer minutes of audio: drop frames past ~1 s of backlog.
    if (this.isOpen && this.socket.bufferedAmount < 32000) this.socket.send(pcm);
  }

  send(message) {
    if (this.isOpen) this.socket.send(JSON.stringify(message));
  }

  close() {
    this.closedByUs = true;
    this.socket.close(1000, "player left");
  }
}
