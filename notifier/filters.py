"""Jinja filters for customer messages in India: names, rupees, IST times, short SMS values.

Every filter turns ``None`` into ``""`` so a template can print an optional value without a
guard, and raises ``ValueError``/``TypeError`` on input it cannot format; the renderer turns
those into a :class:`notifier.errors.TemplateError` naming the template and line.
The defaults are GSM-7 safe (``Rs``, ``...``) because one ``₹`` or ``…`` turns an SMS into
UCS-2 and cuts its length from 160 to 70 characters.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

IST = ZoneInfo("Asia/Kolkata")
DATETIME_FORMAT = "%d %b %Y, %I:%M %p"
DATE_FORMAT = "%d %b %Y"

#: Honorifics that merchants' checkout forms let through into the name field.
_TITLES = frozenset({"mr", "mrs", "ms", "miss", "dr", "shri", "sri", "smt", "kumari", "km"})
_PAISE = Decimal("0.01")


def first_name(value: str | None) -> str:
    """The first given name, capitalised: ``"prashant gupta"`` → ``"Prashant"``.

    Checkout forms give names in any case and with titles (``"MR. PRASHANT"``); a greeting
    needs one tidy word. Mixed-case words (``"McKenzie"``) are kept as typed. An empty name
    gives ``""``: the template decides how to greet nobody.
    """
    words = [w for w in (value or "").split() if w.strip(".").lower() not in _TITLES]
    if not words:
        return ""
    word = words[0]
    if word.islower() or word.isupper():
        return "-".join(part.capitalize() for part in word.split("-"))
    return word


def _to_decimal(value: Decimal | int | float | str) -> Decimal:
    """Read an amount exactly: floats through ``str`` so 0.1 stays 0.1, strings without commas."""
    if isinstance(value, bool):
        raise TypeError(f"rupees: expected an amount, got {value!r}")
    if isinstance(value, Decimal | int | float | str):
        text = str(value).replace(",", "").strip()
        try:
            amount = Decimal(text)
        except InvalidOperation as err:
            raise ValueError(f"rupees: {value!r} is not an amount") from err
        if amount.is_finite():
            return amount
        raise ValueError(f"rupees: {value!r} is not an amount")
    raise TypeError(f"rupees: expected an amount, got {type(value).__name__}")


def indian_grouping(digits: str) -> str:
    """Group whole-rupee digits the Indian way: the last three, then pairs (12,34,567)."""
    if len(digits) <= 3:
        return digits
    head, tail = digits[:-3], digits[-3:]
    pairs = [head[max(i - 2, 0) : i] for i in range(len(head), 0, -2)]
    return ",".join([*reversed(pairs), tail])


def rupees(value: Decimal | int | float | str | None, symbol: bool = False) -> str:
    """Format an amount in rupees: ``"Rs 12,34,567.50"``, or ``"Rs 1,000"`` when whole.

    ``symbol=True`` gives ``"₹1,000"`` for email and WhatsApp, where Unicode costs nothing.
    Paise are rounded half up, as shops round a COD amount.
    """
    if value is None:
        return ""
    amount = _to_decimal(value).quantize(_PAISE, rounding=ROUND_HALF_UP)
    whole, paise = divmod(abs(amount), 1)
    text = indian_grouping(str(int(whole)))
    if paise:
        text += f".{int(paise * 100):02d}"
    sign = "-" if amount < 0 else ""
    return f"{sign}₹{text}" if symbol else f"{sign}Rs {text}"


def ist(value: datetime | date | str | None, fmt: str | None = None) -> str:
    """Format a time or date as the customer reads it, in India Standard Time.

    Times are stored in UTC; a naive datetime is read as UTC, like every Clickpost time in
    :mod:`notifier.events`. A date (an EDD) has no zone and is formatted as is. ISO strings are
    accepted because EDDs sometimes arrive as ``"2017-08-05"``.
    """
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        value = _parse_iso(value)
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)
        return aware.astimezone(IST).strftime(fmt or DATETIME_FORMAT)
    if isinstance(value, date):
        return value.strftime(fmt or DATE_FORMAT)
    raise TypeError(f"ist: expected a datetime or date, got {type(value).__name__}")


def _parse_iso(text: str) -> datetime | date:
    """A date (``YYYY-MM-DD``) stays a date; anything longer is a datetime."""
    try:
        if len(text.strip()) == 10:
            return date.fromisoformat(text.strip())
        return datetime.fromisoformat(text.strip())
    except ValueError as err:
        raise ValueError(f"ist: {text!r} is not an ISO date or time") from err


def shorten(value: object, n: int = 40) -> str:
    """Cap a value at ``n`` characters for an SMS variable, ending in ``...`` when cut.

    40 is the TRAI DLT limit for one ``{#var#}`` slot. Whitespace runs (a newline in an item
    name) become one space, since a line break in an SMS variable breaks the DLT match.
    """
    if n < 1:
        raise ValueError(f"shorten: n must be at least 1, got {n}")
    text = " ".join(("" if value is None else str(value)).split())
    if len(text) <= n:
        return text
    if n <= 3:
        return text[:n]
    return text[: n - 3].rstrip() + "..."


FILTERS: dict[str, Callable[..., Any]] = {
    "first_name": first_name,
    "rupees": rupees,
    "ist": ist,
    "shorten": shorten,
}
