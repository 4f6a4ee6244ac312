"""The LLM's token stream to TTS-ready pieces. Pure functions and small state machines, no I/O.

    tokens -> ReplyLimiter.accept()   stop at the word cap / when the model starts speaking for the player
           -> ClauseSplitter.push()   cut into clauses/sentences as soon as each is complete
           -> clean_for_speech()      drop what must not be spoken (stage directions, emoji, markup, labels)
           -> TTS

Every decision depends only on the text seen so far plus a small look-ahead, so text streamed one
character at a time gives the same result as the whole text at once.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

# "Mr. Smith" and "e.g. this" do not end a sentence (compared lower-case, without the final dot)
ABBREVIATIONS = frozenset(
    {
        "mr", "mrs", "ms", "mx", "dr", "st", "sr", "jr", "prof", "rev", "fr", "sgt", "capt", "cpt", "lt",
        "col", "gen", "maj", "cmdr", "adm", "gov", "sen", "pres", "mt", "ft", "vs", "etc", "approx", "dept",
        "vol", "inc", "ltd", "co", "jan", "feb", "apr", "jun", "jul", "aug",
        "sep", "sept", "oct", "nov", "dec",
    }
)  # fmt: skip
# "etc." and the months can also end a sentence, but cutting a sentence late is harmless while cutting
# "Dec. 3" in two is audible. Words that often end sentences ("no", "fig", "mar") are left out.
_DOTTED_ABBREVIATION = re.compile(r"^(?:[a-z]\.)+[a-z]$")  # e.g, i.e, a.m, u.s
TERMINALS = ".!?…"
CLAUSE_MARKS = ",;:"
DASHES = "—–"
CLOSERS = "\"'”’»)]*"
# words that negate what follows, in lowercased text ("I don't want...", "She does not forge armour")
NEGATION = re.compile(r"\b(?:don'?t|do\s+not|won'?t|will\s+not|wouldn'?t|can'?t|cannot|no\s+need|not|never)\b")
_GO_ON = -2  # a scanning step that neither cuts nor waits


def _is_word_char(ch: str) -> bool:
    return ch.isalnum()


def _sentence_end(text: str, i: int, final: bool) -> int | None:
    """If text[i] (one of TERMINALS) ends a sentence, the index just past it (and closing quotes).

    Returns -1 when it does not, None when the next characters have not arrived yet.
    """
    j = i + 1
    while j < len(text) and (text[j] in TERMINALS or text[j] in CLOSERS):
        j += 1
    if j == len(text):
        return j if final else None
    if not text[j].isspace():
        return -1  # "3.5", "e.g.", "Mr.Smith", "?!x"
    if text[i] == "." and (i == 0 or text[i - 1] != "."):
        k = i
        while k > 0 and not text[k - 1].isspace():
            k -= 1
        token = text[k:i].lstrip("\"'“‘«([*").lower()
        if token in ABBREVIATIONS or _DOTTED_ABBREVIATION.match(token):
            return -1
        if len(token) == 1 and token.isalpha() and token != "i":
            return -1  # an initial: "J. Smith"
    return j


class _WordCounter:
    """Counts words (runs of non-space containing a letter or digit) while scanning characters.

    `spoken` counts only words outside stage directions (*...*, (...), [...]). `**bold**` toggles the
    asterisk state twice, so bold text counts as spoken.
    """

    __slots__ = ("_in_run", "_run_alnum", "_run_spoken", "asterisk", "depth", "spoken", "words")

    def __init__(self) -> None:
        self.words = 0
        self.spoken = 0
        self.depth = 0
        self.asterisk = False
        self._in_run = False
        self._run_alnum = False
        self._run_spoken = False

    @property
    def in_direction(self) -> bool:
        return self.depth > 0 or self.asterisk

    def feed(self, ch: str) -> None:
        if ch.isspace():
            self._end_run()
            return
        if ch in "([":
            self.depth += 1
        elif ch in ")]":
            self.depth = max(self.depth - 1, 0)
        elif ch == "*":
            self.asterisk = not self.asterisk
        self._in_run = True
        if _is_word_char(ch):
            self._run_alnum = True
            if not self.in_direction:
                self._run_spoken = True

    def _end_run(self) -> None:
        if self._in_run and self._run_alnum:
            self.words += 1
            self.spoken += self._run_spoken
        self._in_run = self._run_alnum = self._run_spoken = False

    def words_including_current(self) -> tuple[int, int]:
        """(words, spoken) counting the word in progress."""
        partial = self._in_run and self._run_alnum
        return self.words + partial, self.spoken + (partial and self._run_spoken)


# Words that lean on the next one: a first chunk cut at its word cap does not end on one of these.
LEANING_WORDS = frozenset(
    {
        "a", "an", "the", "my", "your", "his", "her", "its", "our", "their", "this", "that", "these", "those",
        "of", "for", "to", "in", "on", "at", "by", "with", "from", "into", "about", "and", "or", "but", "nor",
        "is", "are", "was", "were", "be", "am", "i", "you", "we", "they", "he", "she", "it", "very", "so", "not",
    }
)  # fmt: skip
_MIN_WORDS_BEFORE_LEANING = 2


def _before_leaning_words(text: str, i: int) -> int | None:
    """text[i] is a space after a word. If text[:i] ends in words that lean on the next one ("for a"),
    the index of the space before them, provided at least two words come first; else None."""
    words = [(match.start(), match.group()) for match in re.finditer(r"\S+", text[:i])]
    run = len(words)
    while run > 0 and words[run - 1][1].strip(CLOSERS).lower() in LEANING_WORDS:
        run -= 1
    if run == len(words) or run < _MIN_WORDS_BEFORE_LEANING:
        return None
    return words[run][0] - 1  # words come before it, so a space does too


def _next_word_closes_clause(text: str, i: int, final: bool) -> bool | None:
    """text[i] is a space after a word: does the next word end with punctuation? None if not known yet."""
    j = i
    while j < len(text) and text[j].isspace():
        j += 1
    k = j
    while k < len(text) and not text[k].isspace():
        k += 1
    if k == len(text) and not final:
        return None
    word = text[j:k].rstrip(CLOSERS)
    return bool(word) and word[-1] in TERMINALS + CLAUSE_MARKS + DASHES


class ClauseSplitter:
    """Cuts a reply streamed in arbitrary pieces into speakable chunks, each as soon as it is complete.

    - The first chunk of a reply is cut at the first clause boundary (, ; : — or a sentence end) once it
      holds `first_chunk_min_words` spoken words, or after `first_chunk_max_words` spoken words at a
      word boundary (unless the next word closes a clause: then right after it; nor after a word that
      leans on the next, "for a"), so TTS starts early. While the chunks cut so far hold fewer than
      `first_chunk_max_words` words, the next chunk is cut the same way: a one-word opener plays
      for half a second, too short to hide the next sentence's wait.
    - Later chunks are cut at sentence ends (. ! ? … and line breaks) once they hold `min_words` spoken
      words (shorter sentences join the next one), or at a word boundary after `max_words` words
      (any chunk, stage directions counted, so an unclosed "*" cannot hold speech back for long).
    - "Mr.", "e.g.", "3.5" and initials are not sentence ends; nothing is cut inside a stage direction
      (*...*, (...), [...]) except by the `max_words` rule, so clean_for_speech() sees it whole.

    The chunks hold every character of the text, in order (whitespace aside; a quote closing right
    after the first clause's comma starts the next chunk). `flush()` returns the rest and
    makes the splitter ready for the next reply.
    """

    def __init__(
        self,
        first_chunk_min_words: int = 2,
        first_chunk_max_words: int = 8,
        min_words: int = 4,
        max_words: int = 30,
        *,
        early_first_chunk: bool = True,
    ) -> None:
        if not 1 <= first_chunk_min_words <= first_chunk_max_words:
            raise ValueError("need 1 <= first_chunk_min_words <= first_chunk_max_words")
        if not 1 <= min_words <= max_words:
            raise ValueError("need 1 <= min_words <= max_words")
        self.first_chunk_min_words = first_chunk_min_words
        self.first_chunk_max_words = first_chunk_max_words
        self.min_words = min_words
        self.max_words = max_words
        self.early_first_chunk = early_first_chunk  # False: the first chunk is cut like all others
        self._buffer = ""
        self._words_out = 0  # words in the chunks already cut from this reply
        # scanning resumes where the last push stopped: the counter has seen _buffer[:_scan_from]
        # (or also the character at _scan_from, when feeding it again changes nothing)
        self._counter = _WordCounter()
        self._scan_from = 0

    def push(self, text_piece: str) -> list[str]:
        self._buffer += text_piece
        return self._cut_all(final=False)

    def flush(self) -> list[str]:
        chunks = self._cut_all(final=True)
        rest = self._buffer.strip()
        if rest:
            chunks.append(rest)
        self._buffer = ""
        self._words_out = 0
        self._counter, self._scan_from = _WordCounter(), 0
        return chunks

    def _cut_all(self, final: bool) -> list[str]:
        chunks: list[str] = []
        while True:
            cut = self._find_cut(self._buffer, final)
            if cut is None:
                return chunks
            chunk, self._buffer = self._buffer[:cut].strip(), self._buffer[cut:]
            self._counter, self._scan_from = _WordCounter(), 0
            if chunk:
                chunks.append(chunk)
                self._words_out += len(chunk.split())

    def _find_cut(self, text: str, final: bool) -> int | None:
        """Index just past the earliest cut in text, or None when none is certain yet."""
        i = self._scan_from
        while i < len(text):
            cut = self._decide(text, i, final)
            if cut != _GO_ON:
                if cut is None:
                    self._scan_from = i  # undecided here: feeding text[i] again is harmless
                return cut
            i += 1
        self._scan_from = len(text)
        return None

    def _decide(self, text: str, i: int, final: bool) -> int | None:
        """Feeds text[i]; returns a cut index, None (wait for more text) or _GO_ON."""
        # a one-word opener ("Bronze.") plays for half a second: the chunk after it is cut early too
        first = self.early_first_chunk and self._words_out < self.first_chunk_max_words
        min_spoken = self.first_chunk_min_words if first else self.min_words
        cap = self.first_chunk_max_words if first else self.max_words
        counter = self._counter
        ch = text[i]
        counter.feed(ch)
        words, spoken = counter.words_including_current()
        if ch.isspace():
            if ch == "\n" and not counter.in_direction and spoken >= min_spoken:
                return i
            if i == 0 or text[i - 1].isspace():
                return _GO_ON
            if words >= self.max_words:
                return i  # however many of them sit in stage directions
            if spoken >= cap:
                if first and spoken == cap:
                    closes = _next_word_closes_clause(text, i, final)
                    if closes is None:
                        return None
                    if closes:
                        return _GO_ON  # one more word, and the clause rule cuts right after it
                    if (before := _before_leaning_words(text, i)) is not None:
                        return before  # "You're looking" | "for a new sword": cut where a phrase starts
                return i
            return _GO_ON
        if counter.in_direction or spoken < min_spoken:
            return _GO_ON
        if ch in TERMINALS:
            end = _sentence_end(text, i, final)
            if end is None:
                return None
            if end >= 0:
                return end
        elif first and ch in CLAUSE_MARKS:
            if ch != ":" and text[i - 1].isalpha():
                # "word," ends the clause whatever follows (a closing quote goes with the next chunk):
                # cutting now saves waiting one token for the space. Not "1,000" nor "https:".
                return i + 1
            if i + 1 == len(text):
                return len(text) if final else None
            if text[i + 1].isspace():
                return i + 1
        elif first and (ch in DASHES or (ch == "-" and i > 0 and text[i - 1] == " ")):
            if ch == "-":
                if i + 1 == len(text):
                    return len(text) if final else None
                if not text[i + 1].isspace():
                    return _GO_ON
            return i + 1
        return _GO_ON


# ------------------------------------------------------------------------------------ clean-up
_URL = re.compile(r"(?:https?://|ftp://|www\.)\S+", re.IGNORECASE)
_MD_LINK = re.compile(r"\[([^\]\n]*)\]\((?:[^)\s]*)\)")
_MD_BOLD = re.compile(r"(\*\*|__)(.+?)\1", re.DOTALL)
_ASTERISK_DIRECTION = re.compile(r"\*[^*\n]*\*")
_PAREN_DIRECTION = re.compile(r"\([^()]*\)")
_BRACKET_DIRECTION = re.compile(r"\[[^\[\]]*\]")
_CODE_FENCE = re.compile(r"```[^\n]*")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s*", re.MULTILINE)
_BULLET = re.compile(r"^\s*(?:[-*+•]|\d{1,3}[.)])\s+", re.MULTILINE)
_QUOTE_MARK = re.compile(r"^\s*>+\s?", re.MULTILINE)
KNOWN_ROLE_LABELS = frozenset(
    {"npc", "assistant", "user", "player", "human", "system", "narrator", "ai", "bot", "character", "you", "me"}
)
_ROLE_LABEL = re.compile(r"^\s*(?P<name>[A-Za-z][\w'-]*(?: [A-Z][\w'-]*)?)\s*:(?=\s|$)", re.MULTILINE)
_LEFTOVER_MARKUP = re.compile(r"[*_#`~|<>\[\]{}()^=\\]")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([,.;:!?…])")
_REPEATED_COMMAS = re.compile(r"([,;:])(?:\s*[,;:])+")
_KEEP_SYMBOLS = frozenset("°%$€£&+@")
_DROPPED_CATEGORIES = frozenset({"So", "Sk", "Cf", "Co", "Cs", "Me"})
_EMOTICON = re.compile(r"(?<!\S)[:;=][-'^o]?[()\[\]DPpOo3/\\|*$@]+(?!\S)")


# Capitalised words that start a line with a colon without being anybody's name ("Prices: ten gold")
NOT_ROLE_LABELS = frozenset(
    {
        "note", "listen", "remember", "warning", "look", "well", "yes", "no", "okay", "ok", "so", "now", "here",
        "there", "first", "second", "third", "next", "then", "finally", "also", "price", "prices", "cost",
        "answer", "question", "hint", "tip", "example", "reminder", "important", "careful", "attention",
        "rule", "rules", "step", "steps", "ingredients", "materials", "reward", "rewards", "quest", "task",
        "today", "tomorrow", "tonight", "options", "choices", "menu", "danger", "caution",
    }
)  # fmt: skip


def _is_label(name: str) -> bool:
    """Whether "name:" at a line start is a speaker label: a known role, else a capitalised name."""
    lowered = name.lower()
    if lowered in KNOWN_ROLE_LABELS:
        return True
    return name[0].isupper() and lowered.split()[0] not in NOT_ROLE_LABELS


def _strip_role_labels(text: str) -> str:
    return _ROLE_LABEL.sub(lambda m: "" if _is_label(m.group("name")) else m.group(0), text)


def _drop_pictographs(text: str) -> str:
    kept = []
    for ch in text:
        if ch in _KEEP_SYMBOLS:
            kept.append(ch)
            continue
        category = unicodedata.category(ch)
        # So: emoji, dingbats, pictographs, flags; Sk: skin-tone modifiers; Cf: zero-width joiners;
        # Me: keycaps; Co: private use. Mn stays (accents) except the emoji variation selectors.
        if category in _DROPPED_CATEGORIES or (category == "Mn" and 0xFE00 <= ord(ch) <= 0xFE0F):
            continue
        kept.append(ch)
    return "".join(kept)


def stage_directions(text: str) -> list[str]:
    """The stage directions in reply text (*smiles*, (laughs), [sighs]), without their marks, in order:
    what clean_for_speech() removes as directions (**bold** and [links](...) are not directions)."""
    text = _MD_BOLD.sub(r"\2", _MD_LINK.sub(r"\1", unicodedata.normalize("NFC", text)))
    found = [
        (match.start(), match.group()[1:-1].strip())
        for pattern in (_ASTERISK_DIRECTION, _PAREN_DIRECTION, _BRACKET_DIRECTION)
        for match in pattern.finditer(text)
    ]
    return [inner for _, inner in sorted(found) if inner]


def clean_for_speech(text: str) -> str:
    """What TTS should say for a piece of reply text; "" when nothing sayable is left.

    Removes stage directions (*smiles*, (laughs), [sighs]), emoji and other pictographs, markdown
    (**bold** keeps its words; headings, bullets, quotes, backticks, links keep their text), URLs and
    role labels at line starts ("Greta:", "NPC:", "Player:"), and collapses whitespace.
    """
    text = unicodedata.normalize("NFC", text)
    text = _MD_LINK.sub(r"\1", text)
    text = _URL.sub(" ", text)
    text = _EMOTICON.sub(" ", text)
    text = _CODE_FENCE.sub(" ", text)
    text = _MD_BOLD.sub(r"\2", text)
    text = _ASTERISK_DIRECTION.sub(" ", text)
    for _ in range(3):  # nested directions, innermost first
        text = _PAREN_DIRECTION.sub(" ", text)
        text = _BRACKET_DIRECTION.sub(" ", text)
    text = _HEADING.sub("", text)
    text = _QUOTE_MARK.sub("", text)
    text = _BULLET.sub("", text)
    text = _strip_role_labels(text)
    text = _drop_pictographs(text)
    text = _LEFTOVER_MARKUP.sub(" ", text)
    text = " ".join(text.split())
    text = _SPACE_BEFORE_PUNCT.sub(r"\1", text)
    text = _REPEATED_COMMAS.sub(r"\1", text)
    text = _strip_role_labels(text)  # a label may surface once a direction before it is gone
    text = text.strip().lstrip(",;:.!?…—–- ").strip()
    if not any(ch.isalnum() for ch in text):
        return ""
    return text


# -------------------------------------------------------------------------------- reply limiter
DEFAULT_PLAYER_LABELS = ("Player", "User", "Human", "You", "Me")
_LABEL_AT = re.compile(r"[ \t]*(?P<name>[A-Za-z][\w'-]*(?: [A-Z][\w'-]*)?)[ \t]*:")
_MAYBE_LABEL = re.compile(r"[ \t]*(?:[A-Za-z][\w'-]*(?: (?:[A-Z][\w'-]*)?)?)?[ \t]*")  # a prefix of a label
_MAX_LABEL_CHARS = 32


class ReplyLimiter:
    """Keeps a streamed reply short and in the NPC's voice.

    `accept(piece) -> (text_to_keep, done)`: feed each generated piece; speak only `text_to_keep`
    (it may lag the input by a few characters while a label or a sentence end is being recognised);
    stop generating once `done` is True. `flush()` returns what was held back when generation ended.

    Stops the reply:
    - at the first sentence end after `max_words` spoken words (the persona's cap; stage directions
      don't count), or at a word boundary after `hard_max_words` spoken words (default 2 x max_words)
      if no sentence ends, or twice that many words of any kind (an unclosed stage direction);
    - when the model starts speaking for the player: a player label (`player_labels`, e.g. "Player:",
      "User:") at the start, at a line start or right after a sentence end;
    - at a line starting with any other role label ("Greta:", "NPC:"): the model is writing a script.
    A role label at the very start of the reply ("Greta: Well met.") is the NPC's own and is dropped.
    """

    def __init__(
        self,
        max_words: int,
        player_labels: Iterable[str] = DEFAULT_PLAYER_LABELS,
        hard_max_words: int | None = None,
    ) -> None:
        if max_words < 1:
            raise ValueError("max_words must be at least 1")
        self.max_words = max_words
        self.hard_max_words = hard_max_words or max_words * 2
        self.player_labels = frozenset(label.lower() for label in player_labels)
        self._text = ""
        self._released = 0  # characters of the kept text already handed out
        self._done = False
        self._lead: int | None = None  # where the reply proper starts (after a leading label), once known
        # scanning resumes where it stopped: the counter has seen the body up to _scan_from (or also the
        # character at _scan_from, which is a newline or sentence punctuation: feeding it again changes nothing)
        self._counter = _WordCounter()
        self._scan_from = 0

    @property
    def done(self) -> bool:
        return self._done

    def accept(self, piece: str) -> tuple[str, bool]:
        if self._done:
            return "", True
        self._text += piece
        return self._release(final=False)

    def flush(self) -> str:
        """The rest of the reply once generation has ended (normally or because `done`)."""
        if self._done:
            return ""
        kept, _ = self._release(final=True)
        self._done = True
        return kept

    def _release(self, final: bool) -> tuple[str, bool]:
        kept, stop = self._evaluate(self._text, final)
        if stop:
            self._done = True
        kept = kept.rstrip()  # hand trailing whitespace out with the next word, or never
        new = kept[self._released :]
        self._released = max(self._released, len(kept))
        return new, self._done

    def _is_player(self, name: str) -> bool:
        return name.strip().lower() in self.player_labels

    def _evaluate(self, text: str, final: bool) -> tuple[str, bool]:
        """(kept text so far, stop) for the whole text seen; kept only grows as text grows."""
        if self._lead is None:
            # a label at the very start: the NPC's own is dropped, the player's ends the reply
            lead = len(text) - len(text.lstrip())
            m = _LABEL_AT.match(text, lead)
            if m and _is_label(m.group("name")):
                if self._is_player(m.group("name")):
                    return "", True
                lead = m.end()
            elif not final and self._could_become_label(text, lead):
                return "", False
            self._lead = lead
        body = text[self._lead :]
        stop, hold = self._scan(body, final)
        return body[:hold].lstrip(), stop

    def _scan(self, body: str, final: bool) -> tuple[bool, int]:
        """(stop, end of the text to keep) from where the last scan stopped."""
        counter = self._counter
        i = self._scan_from
        while i < len(body):
            ch = body[i]
            counter.feed(ch)
            words, spoken = counter.words_including_current()
            if ch == "\n":
                m = _LABEL_AT.match(body, i + 1)
                if m and _is_label(m.group("name")):
                    return True, len(body[:i].rstrip())
                if not final and self._could_become_label(body, i + 1):
                    self._scan_from = i
                    return False, i
            elif (
                ch.isspace()
                and (spoken >= self.hard_max_words or words >= 2 * self.hard_max_words)  # an unclosed "*" too
                and not body[i - 1].isspace()
            ):
                return True, i
            elif ch in TERMINALS and not counter.in_direction:
                end = _sentence_end(body, i, final)
                if end is None:
                    self._scan_from = i
                    return False, i
                if end >= 0:
                    if spoken >= self.max_words:
                        return True, end
                    # "Aye. Player: ..." — the model answering for the player on the same line
                    label_start = end + len(body[end:]) - len(body[end:].lstrip(" \t"))
                    m = _LABEL_AT.match(body, label_start)
                    if m and self._is_player(m.group("name")):
                        return True, end
                    if not final and self._could_become_label(body, label_start, players_only=True):
                        self._scan_from = i
                        return False, end
            i += 1
        self._scan_from = len(body)
        return False, len(body)

    def _could_become_label(self, text: str, start: int, players_only: bool = False) -> bool:
        """Whether the text from start (to its end) is still a possible beginning of a role label."""
        rest = text[start:]
        if len(rest) > _MAX_LABEL_CHARS or "\n" in rest:
            return False
        m = _MAYBE_LABEL.fullmatch(rest)
        if not m:
            return False
        if not rest.strip():
            return True
        if players_only:
            name = rest.strip().lower()
            return any(label.startswith(name) for label in self.player_labels)
        return True


# Sounds a player makes while listening: not a request to stop the NPC (a false interruption).
BACKCHANNEL_WORDS = frozenset(
    ["uh", "um", "umm", "hmm", "hm", "mm", "mhm", "mmm", "ah", "oh", "er", "erm", "huh", "uh-huh", "mm-hmm", "okay", "ok", "yeah", "yes", "right", "sure", "aha"]
)
_NON_SPEECH = re.compile(r"\[[^\]]*\]|\([^)]*\)|\*[^*]*\*")  # [BLANK_AUDIO], (coughs), *sniff*


def is_backchannel(transcript: str) -> bool:
    """True when a transcript holds no request of its own: nothing, noise markers or "uh-huh"-like words."""
    words = re.findall(r"[a-z]+(?:-[a-z]+)?", _NON_SPEECH.sub(" ", transcript.lower()))
    return all(word in BACKCHANNEL_WORDS for word in words)


# Words a sentence goes on from: a transcript ending in one was cut mid-thought, whatever its punctuation.
CONTINUATION_WORDS = frozenset(
    ["and", "but", "or", "nor", "so", "because", "if", "then", "than", "that", "which", "who", "whose", "where", "when", "while", "the", "a", "an", "to", "of", "for", "from", "with", "without", "about", "into", "at", "by", "on", "in", "my", "your", "his", "her", "its", "our", "their", "this", "these", "those", "is", "are", "was", "were", "um", "uh", "er", "erm", "like"]
)


def sounds_finished(transcript: str) -> bool:
    """Whether a transcript reads as a finished turn: whisper closed it with . ? or ! (not "..."),
    it has a word that is not only a backchannel, and its last word is not one a sentence goes on from."""
    text = _NON_SPEECH.sub(" ", transcript).strip().rstrip(CLOSERS).rstrip()
    if not text or text[-1] not in "?!." or text.endswith(("...", "…")):
        return False
    words = re.findall(r"[a-z']+", text.lower())
    if not words or words[-1] in CONTINUATION_WORDS:
        return False
    return not is_backchannel(text)


_MIN_STEM = 3  # "sing" is not "s" + "ing"


def word_stem(word: str) -> str:
    """A crude English stem, enough for gestures and wares: nods/nodding/nodded -> nod, smiles/smiling
    -> smil, lanterns -> lantern, charms -> charm (lowercase in, lowercase out)."""
    if word.endswith("ies") and len(word) > _MIN_STEM + 1:
        return word[:-3] + "y"
    for suffix in ("ing", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= _MIN_STEM:
            word = word[: -len(suffix)]
            break
    if word.endswith("e") and len(word) > _MIN_STEM:
        word = word[:-1]
    if len(word) > _MIN_STEM and word[-1] == word[-2] and word[-1] not in "aeiou":
        word = word[:-1]  # nodd -> nod
    return word
