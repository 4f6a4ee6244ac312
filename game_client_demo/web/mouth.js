// Lip-sync for the portrait: the server's visemes (mouth shapes timed in samples of each turn's
// audio, docs/protocol.md) drawn against what the player is playing right now, once per frame.

export class Mouth {
  constructor(element, player) {
    this.element = element;
    this.player = player;
    this.byTurn = new Map(); // turn -> [{name, start, duration}], in order
    this.seen = new Set(); // shapes shown so far (test hook)
    this.frame = null;
  }

  /** Visemes of one `visemes` message; they come in the order of the turn's audio. */
  add(turn, visemes) {
    if (!this.byTurn.has(turn)) this.byTurn.set(turn, []);
    this.byTurn.get(turn).push(...visemes);
    if (this.frame === null) this.frame = requestAnimationFrame(() => this.draw());
  }

  /** A new session numbers its turns from 0 again. */
  forget() {
    this.byTurn.clear();
  }

  draw() {
    this.frame = requestAnimationFrame(() => this.draw());
    const at = this.player.position();
    const visemes = at && this.byTurn.get(at.turn);
    const current = visemes && visemes.find((v) => v.start <= at.sample && at.sample < v.start + v.duration);
    const name = current ? current.name : "sil";
    if (this.element.dataset.viseme !== name) {
      this.element.dataset.viseme = name;
      this.seen.add(name);
    }
  }
}
