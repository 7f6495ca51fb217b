"""lesion's own texts, by name: several kinds, languages and lengths, for the robustness analysis and
for searches on more than one text."""
from __future__ import annotations

from collections.abc import Sequence

from ..errors import ParameterError


def named_texts(names: Sequence[str]) -> dict[str, str]:
    """lesion's own texts (:data:`TEXTS`: wikipedia, news, ..., french, chinese, short,
    long) by name, in the order given, each once."""
    names = list(dict.fromkeys(n.strip() for n in names if n.strip()))
    if not names:
        raise ParameterError("texts", f"names no text: use one or more of {', '.join(TEXTS)}, or leave it out")
    unknown = [n for n in names if n not in TEXTS]
    if unknown:
        raise ParameterError("texts", f"names unknown text(s) {', '.join(unknown)}: use {', '.join(TEXTS)}")
    return {n: TEXTS[n] for n in names}

# Written for lesion: several kinds, languages and lengths (the shortest is just over 10 tokens).
TEXTS = {
    "wikipedia": ("The Amazon River in South America is the largest river by discharge volume of water in the "
                  "world, and the disputed longest river system in the world in comparison to the Nile."),
    "news": ("The central bank left interest rates unchanged on Thursday, saying that inflation had eased "
             "for a third month in a row but that wage growth remained stronger than expected."),
    "biography": ("Marie Curie was born in Warsaw in 1867. She moved to Paris to study physics and "
                  "mathematics, and later became the first person to win Nobel Prizes in two sciences."),
    "media": ("The film opens with a long shot of an empty harbour at dawn, and the director holds it for "
              "almost two minutes before the first character walks into the frame."),
    "french": ("La Seine traverse Paris d'est en ouest et se jette dans la Manche au Havre, après un cours "
               "de plus de sept cents kilomètres à travers le nord de la France."),
    "german": ("Der Rhein entspringt in den Schweizer Alpen, fließt durch den Bodensee und mündet nach über "
               "tausend Kilometern in den Niederlanden in die Nordsee."),
    "spanish": ("El río Ebro nace en Cantabria y atraviesa el norte de España hasta desembocar en el mar "
                "Mediterráneo, donde forma un amplio delta lleno de arrozales."),
    "chinese": "长江是亚洲第一长河，全长约六千三百公里，发源于青藏高原，流经中国多个省份，最后注入东海。",
    "short": "The cat sat quietly on the warm windowsill all afternoon.",
    "long": " ".join([
        "The history of the printing press begins in the middle of the fifteenth century, when Johannes "
        "Gutenberg combined a screw press with movable metal type, oil-based ink and a new alloy that could "
        "be cast quickly and precisely.",
        "Before his work, books in Europe were copied by hand or printed from carved wooden blocks, both of "
        "which were slow and expensive, so that a single manuscript could cost as much as a small farm.",
        "Within fifty years of the first printed Bible, presses were running in more than two hundred "
        "cities, and millions of volumes had been produced, from grammars and calendars to sermons and "
        "pamphlets.",
        "The spread of cheap books changed how people learned, argued and worshipped: scholars could "
        "compare identical copies of a text, reformers could reach thousands of readers in weeks, and "
        "governments soon tried to license and censor the new trade.",
        "Historians still debate how quickly literacy rose in response, but few doubt that the press "
        "helped standardise spelling, fix the forms of national languages and make scientific results "
        "easier to check and to build upon.",
    ]),
}
