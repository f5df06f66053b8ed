"""Single-use login codes: a way into the page that is worthless once used or a minute old.

A notebook's IFrame needs a login URL, and a cell's output is saved in the ``.ipynb``
(readable by whoever gets the file). So whoever holds the token (the kernel) asks for
a code (``POST /api/login-codes``) and puts ``/login?code=...`` in the output instead
of the token: the frame's first load spends it.
"""

from __future__ import annotations

import secrets
import time

#: Seconds a code stays valid if nobody uses it.
CODE_TTL = 60.0
#: Codes outstanding at once; the oldest go first (a client looping on the route cannot grow memory).
MAX_CODES = 256


class LoginCodes:
    def __init__(self, ttl: float = CODE_TTL, limit: int = MAX_CODES) -> None:
        self.ttl = ttl
        self.limit = limit
        self._codes: dict[str, float] = {}  # code -> expiry (monotonic), oldest first

    def issue(self) -> str:
        self._prune()
        while len(self._codes) >= self.limit:
            del self._codes[next(iter(self._codes))]
        code = secrets.token_urlsafe(24)
        self._codes[code] = time.monotonic() + self.ttl
        return code

    def redeem(self, code: str) -> bool:
        """True once for a valid code: it is gone afterwards."""
        self._prune()
        # Each outstanding code compared in constant time (as bytes: any text may arrive here).
        presented = code.encode("utf-8", "replace")
        match = next((c for c in list(self._codes) if secrets.compare_digest(c.encode(), presented)), None)
        if match is None:
            return False
        del self._codes[match]
        return True

    def _prune(self) -> None:
        now = time.monotonic()
        for code in [c for c, expiry in self._codes.items() if expiry <= now]:
            del self._codes[code]
