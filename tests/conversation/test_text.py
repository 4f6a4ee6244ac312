"""From the LLM's token stream to TTS-ready text: splitting, cleaning, limiting. Pure and fast."""

from __future__ import annotations

import random

import pytest

from npcserver.conversation.text import ClauseSplitter, ReplyLimiter, clean_for_speech, is_backchannel, sounds_finished


def split_whole(text: str, **options: int) -> list[str]:
    splitter = ClauseSplitter(**options)
    return splitter.push(text) + splitter.flush()


def split_streamed(pieces: list[str], **options: int) -> list[str]:
    splitter = ClauseSplitter(**options)
    chunks = [chunk for piece in pieces for chunk in splitter.push(piece)]
    return chunks + splitter.flush()


def random_pieces(text: str, seed: int) -> list[str]:
    rng = random.Random(seed)
    pieces, position = [], 0
    while position < len(text):
        size = rng.randint(1, 6)
        pieces.append(text[position : position + size])
        position += size
    return pieces


REPLIES = [
    "Ah, welcome to my forge, traveler! What can I do for you today? I have swords. Axes too, and shields.",
    (
        "Aye. I can fix your sword by tonight, but it will cost you. Mr. Brown paid 3.5 gold, e.g. a fair price. "
        "Come back at 9 a.m. Then we talk."
    ),
    "*wipes her hands* Well, traveler, the road north is long — take care. (laughs) Dr. Vell lives there.",
    "I can fix your sword before the sun goes down tomorrow evening for you",
    "Hmm... I don't know!? Maybe; maybe not: who can say. The iron is hot\nand the bellows are loud.",
    '"Hello there," she says. "Need a blade?" Prices: 10 gold, 1,000 silver... or 2.5 gems.',
]


# ---------------------------------------------------------------------------------- ClauseSplitter
def test_first_chunk_is_a_short_clause_then_sentences() -> None:
    assert split_whole(REPLIES[0]) == [
        "Ah, welcome to my forge,",  # "Ah," alone is too short to say on its own
        "traveler! What can I do for you today?",  # a one-word sentence joins the next one
        "I have swords. Axes too, and shields.",
    ]


def test_first_clause_comes_out_before_the_rest_arrives() -> None:
    splitter = ClauseSplitter()
    assert splitter.push("Well met") == []
    assert splitter.push(", trav") == ["Well met,"]
    assert splitter.push("eler, what brings") == []
    assert splitter.push(" you here? It is late.") == ["traveler, what brings you here?"]
    assert splitter.flush() == ["It is late."]


def test_a_comma_after_a_word_ends_the_first_clause_without_waiting_for_the_next_token() -> None:
    splitter = ClauseSplitter()
    assert splitter.push("Good morning,") == ["Good morning,"]
    assert splitter.push(" 1,") == []  # a digit before the comma: maybe "1,000"
    assert split_whole('"Hello there," she says.') == ['"Hello there,', '" she says.']


def test_abbreviations_numbers_and_initials_do_not_end_sentences() -> None:
    chunks = split_whole(REPLIES[1])
    assert chunks == [
        "Aye. I can fix your sword by tonight,",
        "but it will cost you.",
        "Mr. Brown paid 3.5 gold, e.g. a fair price.",
        "Come back at 9 a.m. Then we talk.",
    ]
    assert split_whole("Well, J. R. Smith sold it to me. It is old.") == [
        "Well, J. R. Smith sold it to me.",
        "It is old.",
    ]


def test_stage_directions_are_never_cut_in_two() -> None:
    chunks = split_whole(
        "*she wipes her hands, sighs, and looks up.* Fine, I will do it. (laughs, then coughs) Pay now."
    )
    assert chunks[0] == "*she wipes her hands, sighs, and looks up.* Fine, I will do it."
    assert "(laughs, then coughs) Pay now." in chunks


def test_a_long_run_without_punctuation_is_cut_at_word_boundaries() -> None:
    words = [f"w{i}" for i in range(70)]
    chunks = split_whole(" ".join(words), first_chunk_max_words=8, max_words=30)
    assert [len(c.split()) for c in chunks] == [8, 30, 30, 2]
    assert " ".join(chunks) == " ".join(words)


def test_first_chunk_cap_takes_a_clause_closing_word_along() -> None:
    # cut after 8 words, except that the 9th word ends the clause: cut right after it instead
    assert (
        split_whole("I can fix your sword for you by tonight, but not sooner.")[0]
        == "I can fix your sword for you by tonight,"
    )
    assert split_whole("I can fix your sword for you today when the night ends.")[0] == "I can fix your sword for you today"


def test_first_chunk_cut_at_its_cap_does_not_end_on_a_word_that_leans_on_the_next() -> None:
    assert split_whole("You're looking for a new horse for the road.", first_chunk_max_words=4) == [
        "You're looking",
        "for a new horse",  # still early: only 2 words were out
        "for the road.",
    ]
    assert split_whole("I can mend the old blade for you.", first_chunk_max_words=4)[0] == "I can mend"
    # with fewer than two words before the leaning ones, the cap cuts as usual
    assert split_whole("It is in the old forge now.", first_chunk_max_words=4)[0] == "It is in the"


def test_a_short_first_chunk_is_followed_by_another_early_one() -> None:
    # "Bronze." plays for half a second: waiting for the whole next sentence would leave a gap
    assert split_whole(
        "Bronze. I've been making this sword for twenty years, and it holds.", first_chunk_min_words=1, first_chunk_max_words=4
    ) == ["Bronze.", "I've been making", "this sword for twenty years, and it holds."]


def test_later_sentences_shorter_than_min_words_join_the_next() -> None:
    assert split_whole("Hello there, my good friend from the hills. Yes. No. I think so. That is all I can say.") == [
        "Hello there,",
        "my good friend from the hills.",  # still early: the first chunk was short
        "Yes. No. I think so.",
        "That is all I can say.",
    ]


def test_line_breaks_end_chunks() -> None:
    assert split_whole("Welcome to the forge\nWhat do you need from me today\nok") == [
        "Welcome to the forge",
        "What do you need from me today",
        "ok",
    ]


@pytest.mark.parametrize("text", REPLIES)
def test_streaming_one_character_at_a_time_gives_the_same_chunks(text: str) -> None:
    whole = split_whole(text)
    assert split_streamed(list(text)) == whole
    for seed in range(5):
        assert split_streamed(random_pieces(text, seed)) == whole


def same_characters(chunks: list[str], text: str) -> bool:
    """Every character of the text, in order, whitespace aside."""
    return "".join("".join(chunks).split()) == "".join(text.split())


@pytest.mark.parametrize("text", REPLIES)
def test_chunks_keep_every_character(text: str) -> None:
    assert same_characters(split_whole(text), text)


def test_flush_readies_the_splitter_for_the_next_reply() -> None:
    splitter = ClauseSplitter()
    splitter.push("One two, three four five.")
    splitter.flush()
    assert splitter.push("Hello there, friend. ") == ["Hello there,"]  # first-chunk rule again
    assert splitter.flush() == ["friend."]
    assert ClauseSplitter().flush() == []


# -------------------------------------------------------------------------------- clean_for_speech
@pytest.mark.parametrize(
    ("raw", "spoken"),
    [
        ("*smiles* Welcome, traveler!", "Welcome, traveler!"),
        ("Welcome (laughs) to my forge. [sighs]", "Welcome to my forge."),
        ("Hello (laughs).", "Hello."),
        ("Fine work 😀🔥 isn't it? 👍🏽 ❤️", "Fine work isn't it?"),
        ("**Sharp** blades and __strong__ shields", "Sharp blades and strong shields"),
        ("# Prices\n- swords: 10 gold\n- axes: 8 gold", "Prices swords: 10 gold axes: 8 gold"),
        ("Use `oil` on it", "Use oil on it"),
        ("See [the map](https://example.com/map) or www.example.com now", "See the map or now"),
        ("NPC: Good day.", "Good day."),
        ("Greta: Good day.", "Good day."),
        ("Assistant: Aye.", "Aye."),
        ("User: hi", "hi"),
        ("Player: where?", "where?"),
        ("**Greta:** Well met :)", "Well met"),
        ("  lots   of\n\n space\t here ", "lots of space here"),
        ("Café, naïve: 20°C, 50% off, 5 $.", "Café, naïve: 20°C, 50% off, 5 $."),
        ("Mr. Smith paid 3.5 gold, e.g. a lot.", "Mr. Smith paid 3.5 gold, e.g. a lot."),
        ("Nine o'clock — sharp!", "Nine o'clock — sharp!"),
        ("Prices: ten gold a blade.", "Prices: ten gold a blade."),
        ("Old Tom: Evening.", "Evening."),
    ],
)
def test_clean_for_speech(raw: str, spoken: str) -> None:
    assert clean_for_speech(raw) == spoken


@pytest.mark.parametrize(
    "raw",
    ["*smiles*", "(laughs)", "[sighs] *nods*", "😀🔥", "NPC: *grins*", "...", "", "  ", "**", "https://example.com"],
)
def test_nothing_sayable_gives_empty(raw: str) -> None:
    assert clean_for_speech(raw) == ""


# ---------------------------------------------------------------------------------- ReplyLimiter
def limit(text: str, max_words: int = 8, piece_size: int = 1) -> tuple[str, bool]:
    limiter = ReplyLimiter(max_words)
    kept = ""
    for start in range(0, len(text), piece_size):
        piece, done = limiter.accept(text[start : start + piece_size])
        kept += piece
        if done:
            return kept, True
    return kept + limiter.flush(), False


def limit_all_ways(text: str, max_words: int = 8) -> tuple[str, bool]:
    results = {limit(text, max_words, size) for size in (1, 2, 3, 7, len(text) or 1)}
    assert len(results) == 1, results  # the same whatever the piece sizes
    return results.pop()


def test_reply_stops_at_the_first_sentence_end_after_the_cap() -> None:
    text = "Well met, traveler. I can fix that sword of yours by nightfall. It will cost ten gold."
    assert limit_all_ways(text, max_words=8) == (
        "Well met, traveler. I can fix that sword of yours by nightfall.",
        True,
    )
    assert limit_all_ways(text, max_words=40) == (text, False)


def test_cap_ignores_abbreviations_and_numbers() -> None:
    text = "It costs 3.5 gold, e.g. for Mr. Brown's sons. Then more."
    assert limit_all_ways(text, max_words=6) == ("It costs 3.5 gold, e.g. for Mr. Brown's sons.", True)


def test_reply_without_sentence_end_stops_at_twice_the_cap() -> None:
    words = " ".join(f"w{i}" for i in range(40))
    kept, done = limit_all_ways(words, max_words=8)
    assert done and kept.split() == [f"w{i}" for i in range(16)]


def test_the_npcs_own_label_at_the_start_is_dropped() -> None:
    assert limit_all_ways("Greta: Aye, that I can.") == ("Aye, that I can.", False)
    assert limit_all_ways("NPC:Aye.") == ("Aye.", False)


def test_a_reply_that_starts_as_the_player_is_stopped() -> None:
    assert limit_all_ways("Player: hi there") == ("", True)
    assert limit_all_ways("User: what is this") == ("", True)


def test_speaking_for_the_player_on_a_new_line_stops_the_reply() -> None:
    assert limit_all_ways("Aye, that I can.\nPlayer: Thanks!\nGreta: You're welcome.") == ("Aye, that I can.", True)
    assert limit_all_ways("Aye, that I can.\n\nGreta: Anything else?") == ("Aye, that I can.", True)


def test_speaking_for_the_player_after_a_sentence_stops_the_reply() -> None:
    assert limit_all_ways("Aye, that I can. User: thanks") == ("Aye, that I can.", True)
    assert limit_all_ways("Aye, that I can. Usually I charge more.", max_words=40) == (
        "Aye, that I can. Usually I charge more.",
        False,
    )


def test_ordinary_lines_and_colons_pass() -> None:
    text = "Sure thing\nthe forge is hot. Prices: ten gold."
    assert limit_all_ways(text, max_words=40) == (text, False)


def test_limiter_holds_back_only_while_undecided() -> None:
    limiter = ReplyLimiter(max_words=40)
    assert limiter.accept("Gre") == ("", False)  # could be a label
    assert limiter.accept("ta: Aye") == ("Aye", False)
    assert limiter.accept(", friend.") == (", friend", False)  # "." might be "3.5" or "Mr."
    assert limiter.accept(" Come") == (". Come", False)
    assert limiter.flush() == ""
    assert limiter.accept("more") == ("", True)  # after the end, nothing more is kept


def test_limiter_flush_releases_the_held_sentence_end() -> None:
    limiter = ReplyLimiter(max_words=40)
    kept, done = limiter.accept("It is done.")
    assert (kept, done) == ("It is done", False)
    assert limiter.flush() == "."


VOCABULARY = (
    "Aye",
    "the",
    "forge",
    "is",
    "hot,",
    "Mr.",
    "3.5",
    "gold.",
    "e.g.",
    "sword!",
    "why?",
    "*smiles*",
    "(laughs)",
    "Well...",
    "—",
    "-",
    "yes;",
    "note:",
    "\n",
    "Player:",
    "Greta:",
    "\nUser:",
    '"Hello,"',
    'it."',
    "J.",
    "ok",
)


def random_reply(seed: int) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(VOCABULARY) for _ in range(rng.randint(1, 60)))


@pytest.mark.parametrize("seed", range(40))
def test_random_replies_split_and_limit_the_same_whatever_the_pieces(seed: int) -> None:
    text = random_reply(seed)
    whole = split_whole(text)
    assert split_streamed(list(text)) == whole
    assert split_streamed(random_pieces(text, seed)) == whole
    assert same_characters(whole, text)
    kept, _ = limit_all_ways(text, max_words=10)
    assert text.replace("Greta:", "", 1).strip().startswith(kept) or text.strip().startswith(kept)


def test_common_words_that_look_like_abbreviations_still_end_sentences() -> None:
    assert split_whole("Well met, friend. I said no. Get out of my forge now.")[1:] == [
        "friend. I said no.",
        "Get out of my forge now.",
    ]


def speak_reply(tokens: list[str], max_words: int) -> list[str]:
    """The text path as the pipeline should run it: limiter -> splitter -> clean-up, flushing both at the end."""
    limiter, splitter, spoken = ReplyLimiter(max_words), ClauseSplitter(), []
    for token in tokens:
        kept, done = limiter.accept(token)
        spoken += splitter.push(kept)
        if done:
            break
    spoken += splitter.push(limiter.flush())  # what the limiter held back (a final ".") when generation ended
    spoken += splitter.flush()
    return [sayable for chunk in spoken if (sayable := clean_for_speech(chunk))]


def test_the_whole_text_path_on_a_typical_small_model_reply() -> None:
    reply = (
        "Greta: *wipes her hands on her apron* Ah, a traveler! 😊 I can fix that blade by sundown, "
        "for 3.5 gold. (grins) Mr. Hale paid the same.\nPlayer: Deal!\nGreta: Good."
    )
    tokens = [reply[i : i + 3] for i in range(0, len(reply), 3)]
    assert speak_reply(tokens, max_words=40) == [
        "Ah, a traveler!",
        "I can fix that blade by sundown, for 3.5 gold.",
        "Mr. Hale paid the same.",
    ]
    assert speak_reply(tokens, max_words=8) == ["Ah, a traveler!", "I can fix that blade by sundown, for 3.5 gold."]
    assert speak_reply(["It is done", "."], max_words=40) == ["It is done."]


@pytest.mark.parametrize("transcript", ["", "Uh-huh.", "hmm, okay", "(coughs)", "[BLANK_AUDIO]", "Mm-hmm. Yeah."])
def test_backchannels_are_not_requests(transcript: str) -> None:
    assert is_backchannel(transcript)


@pytest.mark.parametrize("transcript", ["Wait!", "What about axes?", "uh, how much is it?"])
def test_real_requests_are_not_backchannels(transcript: str) -> None:
    assert not is_backchannel(transcript)


def test_without_the_early_first_chunk_the_first_clause_waits_for_the_sentence_end() -> None:
    text = "Aye, that I can, but not today. Come back tomorrow."
    early, late = ClauseSplitter(), ClauseSplitter(early_first_chunk=False)
    assert [*early.push(text), *early.flush()][0] == "Aye, that I can,"
    assert [*late.push(text), *late.flush()][0] == "Aye, that I can, but not today."


@pytest.mark.parametrize(
    ("transcript", "finished"),
    [
        ("How much for a steel sword?", True),
        ("Can you repair my shield by tomorrow.", True),
        ("Hello there!", True),
        ('"Yes, please."', True),
        ("Can you repair my shield by tomorrow", False),  # no closing mark
        ("I want the...", False),
        ("I need a sword and.", False),  # whisper put a full stop after a word a sentence goes on from
        ("I am looking for the", False),
        ("Um.", False),
        ("Okay.", False),  # a backchannel: the usual end silence decides
        ("[BLANK_AUDIO]", False),
        ("", False),
    ],
)
def test_a_transcript_sounds_finished_when_whisper_closed_it_on_a_word_that_ends_sentences(
    transcript: str, finished: bool
) -> None:
    assert sounds_finished(transcript) is finished


def test_the_sentence_end_model_reads_the_words_not_whispers_punctuation() -> None:
    from npcserver.backends.sentence_end import plain_words

    assert plain_words("He might even.") == "he might even"
    assert plain_words("  Mr. Dashwood’s  house, by-the-way?!") == "mr dashwood's house by the way"
    assert plain_words("...") == ""
