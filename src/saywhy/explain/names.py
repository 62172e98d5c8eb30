"""Readable class names and the right English article, for any dataset's class folders."""
from __future__ import annotations

import re

# Words whose first letter misleads a/an; generic English, not a domain list.
_AN_DESPITE_CONSONANT = ("hour", "honest", "honor", "honour", "heir")
_A_DESPITE_VOWEL = ("eu", "uni", "use", "usu", "one", "once", "ubiq", "ure", "uti", "ewe")


def readable_class_name(raw: str) -> str:
    """Strip the numeric prefix and underscores; a lower-case word joins the previous one with a hyphen.

    >>> readable_class_name("001.Black_footed_Albatross")
    'Black-footed Albatross'
    >>> readable_class_name("104.American_Pipit")
    'American Pipit'
    >>> readable_class_name("sports_car")
    'sports car'
    """
    name = re.sub(r"^\d+[._ ]", "", raw.strip())
    words = [w for w in re.split(r"[_\s]+", name) if w]
    if not words:
        return raw
    out = [words[0]]
    for word in words[1:]:
        if word[0].islower() and out[-1][0].isupper():
            out[-1] = f"{out[-1]}-{word}"
        else:
            out.append(word)
    return " ".join(out)


def with_article(noun_phrase: str) -> str:
    """Prefix "a" or "an" by how the phrase sounds.

    >>> with_article("American Pipit"), with_article("Eared Grebe"), with_article("European Goldfinch")
    ('an American Pipit', 'an Eared Grebe', 'a European Goldfinch')
    >>> with_article("Carolina Wren"), with_article("honest bird")
    ('a Carolina Wren', 'an honest bird')
    """
    lower = noun_phrase.lower()
    if lower.startswith(_AN_DESPITE_CONSONANT):
        return f"an {noun_phrase}"
    if lower.startswith(_A_DESPITE_VOWEL):
        return f"a {noun_phrase}"
    return f"{'an' if lower[:1] in 'aeiou' and lower else 'a'} {noun_phrase}"
