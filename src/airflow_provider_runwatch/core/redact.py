"""Keep API keys out of text that may reach a log, an exception, XCom or a trigger event."""

from __future__ import annotations

from collections.abc import Iterable

MASK = "***"


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """Replace every occurrence of each non-trivial secret in ``text`` with ``***``.

    Secrets shorter than 4 characters are ignored: masking them would shred ordinary words and they are
    not real keys anyway.
    """
    for secret in secrets:
        if secret and len(secret) >= 4 and secret in text:
            text = text.replace(secret, MASK)
    return text
