"""The one exception every wire codec raises for malformed input."""
from __future__ import annotations


class WireError(ValueError):
    """Bytes that do not form a valid header: truncated, inconsistent, out of range.

    Receivers catch exactly this type, drop the frame and count it; anything
    else escaping a parser is a bug in the codec.
    """

    def __init__(self, protocol: str, reason: str) -> None:
        super().__init__(f"{protocol}: {reason}")
        self.protocol = protocol
        self.reason = reason
