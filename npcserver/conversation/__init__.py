"""One player's conversation with an NPC, in the order the data flows: turn-taking (turn_taking, the
rules with no I/O; endpoint, the end of speech), the session that runs them, a turn's pipeline and
its scheduling, what the NPC knows and may say (prompt, knowledge, answer_kinds, grounding, claims,
reply_form, persona_turn), and how the reply is spoken (text, fillers, phrase_cache, emotes, visemes)."""
