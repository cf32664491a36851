"""SMS segment counting, checked against the GSM 03.38 tables written out here as data.

Python has no ``gsm0338`` codec, so the tables below are typed in independently of
``notifier.segments``, in code-point order (3GPP TS 23.038 section 6.2.1), and the module's
sets are compared against them.
"""

from __future__ import annotations

import pytest

from notifier.segments import GSM_BASIC, GSM_EXTENSION, SegmentInfo, count_segments, is_gsm7

ESC = "\x1b"
#: The default alphabet, 0x00-0x7F, 16 per row. 0x1B is the escape to the extension table.
GSM_TABLE = (
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞ" + ESC + "ÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNO"
    "PQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmno"
    "pqrstuvwxyzäöñüà"
)
#: The extension table: code after ESC -> character.
GSM_EXTENSION_TABLE = {
    0x0A: "\f",
    0x14: "^",
    0x28: "{",
    0x29: "}",
    0x2F: "\\",
    0x3C: "[",
    0x3D: "~",
    0x3E: "]",
    0x40: "|",
    0x65: "€",
}


def test_tables_match_the_standard() -> None:
    assert len(GSM_TABLE) == 128
    assert set(GSM_TABLE) - {ESC} == GSM_BASIC
    assert set(GSM_EXTENSION_TABLE.values()) == GSM_EXTENSION
    assert not GSM_BASIC & GSM_EXTENSION


def test_escape_itself_is_not_a_sendable_character() -> None:
    assert count_segments(ESC).encoding == "UCS-2"


@pytest.mark.parametrize("char", sorted(GSM_BASIC))
def test_basic_characters_cost_one_septet(char: str) -> None:
    assert count_segments(char * 3) == SegmentInfo("GSM-7", 3, 3, 1)


@pytest.mark.parametrize("char", sorted(GSM_EXTENSION))
def test_extension_characters_cost_two_septets(char: str) -> None:
    assert count_segments("a" + char) == SegmentInfo("GSM-7", 2, 3, 1)


@pytest.mark.parametrize(
    ("text", "segments"),
    [
        ("a" * 160, 1),
        ("a" * 161, 2),
        ("a" * 153 * 2, 2),
        ("a" * (153 * 2 + 1), 3),
        ("a" * 153 * 3, 3),
    ],
)
def test_gsm_boundaries(text: str, segments: int) -> None:
    info = count_segments(text)
    assert (info.encoding, info.units, info.segments) == ("GSM-7", len(text), segments)


def test_one_euro_in_160_characters_needs_two_segments() -> None:
    info = count_segments("a" * 159 + "€")
    assert (info.characters, info.units, info.segments) == (160, 161, 2)


def test_306_characters_with_one_euro_need_three_parts() -> None:
    info = count_segments("a" * 305 + "€")
    assert (info.encoding, info.characters, info.units, info.segments) == ("GSM-7", 306, 307, 3)


def test_escape_sequence_is_not_split_across_parts() -> None:
    # 306 septets would fit two parts by arithmetic, but the € sits on the boundary (septets
    # 153-154), so the first part ends one early and the rest spills into a third.
    text = "a" * 152 + "€" + "a" * 152
    info = count_segments(text)
    assert (info.units, info.segments) == (306, 3)


@pytest.mark.parametrize("char", ["’", "“", "₹", "क", "…", "ç"])
def test_one_character_outside_gsm_switches_the_whole_message_to_ucs2(char: str) -> None:
    text = "Your order is out for delivery" + char
    info = count_segments(text)
    assert info.encoding == "UCS-2"
    assert not is_gsm7(text)
    assert info.units == len(text)


@pytest.mark.parametrize(
    ("length", "segments"),
    [(70, 1), (71, 2), (67 * 2, 2), (67 * 2 + 1, 3)],
)
def test_ucs2_boundaries(length: int, segments: int) -> None:
    text = "₹" + "a" * (length - 1)
    info = count_segments(text)
    assert (info.encoding, info.units, info.segments) == ("UCS-2", length, segments)


def test_emoji_counts_two_utf16_units() -> None:
    info = count_segments("📦")
    assert info == SegmentInfo("UCS-2", 1, 2, 1)
    assert count_segments("a" * 68 + "📦").segments == 1
    assert count_segments("a" * 69 + "📦").segments == 2


def test_surrogate_pair_is_not_split_across_parts() -> None:
    text = "a" * 66 + "📦" + "a" * 66  # 134 units, but the emoji straddles units 67-68
    info = count_segments(text)
    assert (info.units, info.segments) == (134, 3)


def test_extension_character_counts_single_in_ucs2() -> None:
    info = count_segments("€’")
    assert (info.encoding, info.units) == ("UCS-2", 2)


def test_empty_text_is_zero_segments() -> None:
    assert count_segments("") == SegmentInfo("GSM-7", 0, 0, 0)


def test_realistic_indian_sms() -> None:
    text = (
        "Hi Priya, your Acme Store order ACME-240805-17 is out for delivery. Keep Rs 1,299 "
        "ready. Track: https://track.acme.example/SF18399217NER"
    )
    assert count_segments(text) == SegmentInfo("GSM-7", len(text), len(text), 1)
    assert count_segments(text.replace("Rs ", "₹")).segments == 2
