"""Exact SMS segment counting, so a template's cost is known before it is sent.

Carriers bill per segment, and TRAI DLT templates are registered for a given length, so a
message that silently grows a second segment (or switches to UCS-2 because of one curly quote or
a ``₹``) doubles or triples the bill. No maintained package counts segments; the rules are small:

- GSM-7 (3GPP TS 23.038 default alphabet): 160 septets in a single message, 153 per part of a
  concatenated one (the user data header takes 7). Characters of the extension table
  (``€ [ ] { } \\ ^ ~ |`` and form feed) are sent as ESC + char and cost two septets.
- One character outside the basic and extension tables switches the *whole* message to UCS-2:
  70 UTF-16 code units single, 67 per part. Characters outside the BMP (emoji) are surrogate
  pairs and cost two units.

Splitting is exact, not ``ceil(units / 153)``: an escape sequence is never split across two
parts, nor is a surrogate pair, which is what handsets and gateways do. So a part that would
end in the middle of one holds one unit less.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: GSM 03.38 basic character set (the ESC code 0x1B itself is not a character one can send).
GSM_BASIC: frozenset[str] = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)

#: GSM 03.38 extension table: each is sent as ESC + char, two septets.
GSM_EXTENSION: frozenset[str] = frozenset("\f^{}\\[~]|€")

Encoding = Literal["GSM-7", "UCS-2"]

#: (units in a single message, units per part of a concatenated message)
_LIMITS: dict[Encoding, tuple[int, int]] = {"GSM-7": (160, 153), "UCS-2": (70, 67)}


@dataclass(frozen=True)
class SegmentInfo:
    """How a text travels as SMS.

    ``characters`` counts code points (what a person sees, roughly); ``units`` counts what the
    carrier counts: septets for GSM-7, UTF-16 code units for UCS-2.
    """

    encoding: Encoding
    characters: int
    units: int
    segments: int


def is_gsm7(text: str) -> bool:
    """True when every character of ``text`` can be sent in GSM-7 (basic or extension table)."""
    return all(ch in GSM_BASIC or ch in GSM_EXTENSION for ch in text)


def _unit_costs(text: str, encoding: Encoding) -> list[int]:
    """The units each character costs, in order: the indivisible pieces that parts are cut from."""
    if encoding == "GSM-7":
        return [2 if ch in GSM_EXTENSION else 1 for ch in text]
    return [2 if ord(ch) > 0xFFFF else 1 for ch in text]


def _parts(costs: list[int], per_part: int) -> int:
    """Pack the pieces into parts of ``per_part`` units without splitting any piece."""
    parts, used = 1, 0
    for cost in costs:
        if used + cost > per_part:
            parts, used = parts + 1, 0
        used += cost
    return parts


def count_segments(text: str) -> SegmentInfo:
    """Count the encoding, units and segments ``text`` needs as one SMS.

    An empty text is 0 segments (nothing would be sent), not 1: callers that refuse empty
    messages can test ``segments == 0`` rather than special-casing the text.
    """
    encoding: Encoding = "GSM-7" if is_gsm7(text) else "UCS-2"
    costs = _unit_costs(text, encoding)
    units = sum(costs)
    single, per_part = _LIMITS[encoding]
    if units == 0:
        segments = 0
    elif units <= single:
        segments = 1
    else:
        segments = _parts(costs, per_part)
    return SegmentInfo(encoding=encoding, characters=len(text), units=units, segments=segments)
