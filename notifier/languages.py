"""Which language a shopper reads, and how a template file says which language it is in.

Merchants send the language, when they send it at all, as whatever their checkout stored:
``"hi"``, ``"hi-IN"``, ``"HI"``, ``"Hindi"``, ``"हिंदी"``. :func:`normalize_language` maps all of
them to one ISO 639-1 code through a table (data, not branches); English and anything unknown
map to ``None``, which means the default (untagged, English) templates.

A language variant of a message is the same base name with the code before the part suffix::

    templates/sms/delivered.txt.j2        the default
    templates/sms/delivered.hi.txt.j2     Hindi

Only codes in :data:`LANGUAGE_CODES` are read as tags, so a base name that merely contains a
dot (``offer.v2``) stays a message of its own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from notifier.errors import TemplateError
from notifier.events import Registration

#: The languages templates may be written in (ISO 639-1), with their own names for previews.
LANGUAGE_NAMES: Mapping[str, str] = {
    "hi": "हिन्दी",
    "ta": "தமிழ்",
    "te": "తెలుగు",
    "bn": "বাংলা",
    "mr": "मराठी",
    "gu": "ગુજરાતી",
    "kn": "ಕನ್ನಡ",
    "ml": "മലയാളം",
    "pa": "ਪੰਜਾਬੀ",
}
LANGUAGE_CODES: frozenset[str] = frozenset(LANGUAGE_NAMES)

_DEFAULT = ""  # English: the untagged templates, returned as None

#: Spellings seen in checkout data, lower-cased, to a code ("" for the default).
_SPELLINGS: Mapping[str, str] = {
    **{code: code for code in LANGUAGE_CODES},
    **{name: code for code, name in LANGUAGE_NAMES.items()},
    "en": _DEFAULT,
    "eng": _DEFAULT,
    "english": _DEFAULT,
    "hin": "hi",
    "hindi": "hi",
    "हिंदी": "hi",
    "tam": "ta",
    "tamil": "ta",
    "tel": "te",
    "telugu": "te",
    "ben": "bn",
    "bengali": "bn",
    "bangla": "bn",
    "mar": "mr",
    "marathi": "mr",
    "guj": "gu",
    "gujarati": "gu",
    "kan": "kn",
    "kannada": "kn",
    "mal": "ml",
    "malayalam": "ml",
    "pan": "pa",
    "punjabi": "pa",
    "panjabi": "pa",
}


def normalize_language(value: str | None) -> str | None:
    """The language code for a spelling, or None for English, absent and unknown values.

    Unknown is not an error: a registration is never refused over its language, and the
    default templates are always there to fall back on. A region (``hi-IN``, ``hi_IN``) is
    dropped because templates are written per language, not per region.
    """
    if not isinstance(value, str):
        return None
    text = value.strip().lower().replace("_", "-")
    code = _SPELLINGS.get(text)
    if code is None:
        code = _SPELLINGS.get(text.split("-", 1)[0], _DEFAULT)
    return code or None


def language_of(registration: Registration) -> str | None:
    """The shopper's language from the awb-register body: ``consumer_details.language``, else
    ``additional.language``.

    Read from ``raw`` because :class:`~notifier.events.Registration` has no language field yet;
    the first non-blank value wins, so an explicit ``"en"`` for the consumer is not overridden
    by the order's ``additional``.
    """
    for section in ("consumer_details", "additional"):
        value = _text(registration.raw.get(section), "language")
        if value:
            return normalize_language(value)
    return None


def _text(section: Any, key: str) -> str | None:
    """``section[key]`` when section is an object and the value is non-blank text."""
    if not isinstance(section, Mapping):
        return None
    value = section.get(key)
    return value if isinstance(value, str) and value.strip() else None


# --- how template files name their language ------------------------------------------------


def tagged(stem: str, language: str | None) -> str:
    """``sms/delivered`` in ``language``: ``sms/delivered.hi``; the stem itself for None.

    The code becomes part of a file path, so only the known codes are accepted.
    """
    if language is None:
        return stem
    if language not in LANGUAGE_CODES:
        raise TemplateError(f"{language!r} is not a known language code", template=language)
    return f"{stem}.{language}"


def split_tag(stem: str) -> tuple[str, str | None]:
    """A file stem without its part suffix as (base name, language): ``delivered.hi`` gives
    ``("delivered", "hi")``; ``delivered`` and ``offer.v2`` have no language."""
    base, dot, tag = stem.rpartition(".")
    if dot and base and tag in LANGUAGE_CODES:
        return base, tag
    return stem, None


def message_files(
    folder: Path, parts: Sequence[tuple[str, bool]]
) -> dict[str, dict[str | None, Path]]:
    """The message files of one channel folder: base name, then language (None: default), then
    the first of its files by name, the one ``notifier check`` points at when parts are missing.

    ``parts`` are the channel's (suffix, required) pairs; partials (``_layout``) are skipped.
    """
    found: dict[str, dict[str | None, Path]] = {}
    for file in sorted(folder.glob("*.j2")):
        suffix = next((s for s, _ in parts if file.name.endswith(s)), None)
        if suffix and not file.name.startswith("_"):
            base, language = split_tag(file.name.removesuffix(suffix))
            found.setdefault(base, {}).setdefault(language, file)
    return found
