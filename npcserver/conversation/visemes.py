"""Lip-sync: the phonemes a voice spoke (espeak IPA, as Piper aligns them) to mouth shapes. No I/O.

The shapes are the 15 visemes of Oculus / Meta OVR LipSync, which Unity and Unreal face rigs map.
docs/protocol.md prints the same table (a test keeps the two equal).
"""

from __future__ import annotations

from collections.abc import Sequence

from npcserver.protocol import Viseme

VISEMES = ("sil", "PP", "FF", "TH", "DD", "kk", "CH", "SS", "nn", "RR", "aa", "E", "ih", "oh", "ou")

# Each viseme and the espeak IPA symbols that make it (Latin letters are IPA symbols too).
_SYMBOLS_BY_VISEME = {
    "sil": "^$_.,!?;:-…\"'()ʔ",  # Piper's sentence start/end, pauses at punctuation, glottal stop
    "PP": "pbmɓʙ",
    "FF": "fvɸβʋɱⱱ",
    "TH": "θð",
    "DD": "tdɾʈɖɗɽɺ",
    "kk": "kgɡcɟʄqɢɠʛxɣχhɦħʕʜʢʡŋɴɰ",
    "CH": "ʃʒçʝɕʑʂʐɧ",
    "SS": "sz",
    "nn": "nlɫɲɳʎɭɬɮʟ",
    "RR": "ɹrɚɻʀʁɝ",
    "aa": "aɑɐæʌɶ",
    "E": "eɛəɜɘɞε",
    "ih": "iɪɨᵻjɯ",
    "oh": "oɔɒɵøœɤ",
    "ou": "uʊwʉʍɥyʏ",
}
PHONEME_VISEMES: dict[str, str] = {
    symbol: viseme for viseme, symbols in _SYMBOLS_BY_VISEME.items() for symbol in symbols
}
# Stress marks stand before the syllable they stress: their time belongs to the sound after them.
STRESS_MARKS = frozenset("ˈˌ")
# Every other symbol (the length mark, diacritics, the gap between words) has no shape of its own: its time
# belongs to the sound before it, as the mouth holds that shape.


def visemes_of(phonemes: Sequence[tuple[str, int]], first_sample: int = 0) -> tuple[Viseme, ...]:
    """Mouth shapes for (phoneme, samples) spoken end to end from `first_sample` on.

    The shapes cover the phonemes' samples exactly, back to back; a shape held over several phonemes
    ("mb") is one viseme.
    """
    shapes: list[tuple[str, int]] = []
    stressed = 0  # samples of stress marks, waiting for the sound they mark
    for symbol, samples in phonemes:
        if symbol in STRESS_MARKS:
            stressed += samples
            continue
        viseme = PHONEME_VISEMES.get(symbol) or (shapes[-1][0] if shapes else "sil")
        if shapes and shapes[-1][0] == viseme:
            shapes[-1] = (viseme, shapes[-1][1] + stressed + samples)
        else:
            shapes.append((viseme, stressed + samples))
        stressed = 0
    if stressed:
        shapes.append(("sil", stressed))
    visemes = []
    start = first_sample
    for viseme, samples in shapes:
        if samples > 0:
            visemes.append(Viseme(viseme, start, samples))
            start += samples
    return tuple(visemes)
