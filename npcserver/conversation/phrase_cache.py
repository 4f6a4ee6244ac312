"""Speech for the short phrases an NPC says again and again ("Good day,", "Aye,"), kept after the first time.

A small dialogue model repeats its openers: in a 47-turn load test, 35 replies began with a first
clause said before (29 of them "Good day,"). That clause's synthesis (50-100 ms of Piper on one
thread) is the last step before the player hears anything, so a cached one is heard that much sooner.

Only short texts are kept: long ones rarely come back and would push the openers out. When the
audio kept passes `max_bytes`, the phrase used longest ago goes first. Piper draws fresh noise for
every synthesis; a cached phrase is the same clip each time it is said.

Not thread-safe: the model runner reads and fills it on the event loop.
"""

from __future__ import annotations

from collections import OrderedDict

from npcserver.backends.base import Speech, VoiceSettings

MAX_WORDS = 6  # first clauses have at most 4 words; short sentences ("Not today.") come back too


class PhraseAudioCache:
    def __init__(self, max_bytes: int, max_words: int = MAX_WORDS) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self.max_bytes = max_bytes
        self.max_words = max_words
        self._speech: OrderedDict[tuple[str, VoiceSettings], Speech] = OrderedDict()
        self.bytes = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._speech)

    def keeps(self, text: str) -> bool:
        """Whether audio for `text` is worth keeping (short enough to come back)."""
        return 0 < len(text.split()) <= self.max_words

    def get(self, text: str, voice: VoiceSettings) -> Speech | None:
        """The kept speech for `text` in `voice` (read-only), or None; counts a hit or a miss for keepable texts."""
        if not self.keeps(text):
            return None
        speech = self._speech.get((text, voice))
        if speech is None:
            self.misses += 1
            return None
        self.hits += 1
        self._speech.move_to_end((text, voice))
        return speech

    def put(self, text: str, voice: VoiceSettings, speech: Speech) -> None:
        if not self.keeps(text) or speech.audio.nbytes > self.max_bytes:
            return
        key = (text, voice)
        if (old := self._speech.pop(key, None)) is not None:
            self.bytes -= old.audio.nbytes
        audio = speech.audio.copy()
        audio.flags.writeable = False  # every turn that says this phrase gets this one array
        self._speech[key] = Speech(audio, speech.phonemes)  # its phonemes too: a cached phrase has visemes
        self.bytes += audio.nbytes
        while self.bytes > self.max_bytes:
            _, dropped = self._speech.popitem(last=False)
            self.bytes -= dropped.audio.nbytes
