"""Access tokens of the identity service: one live token at a time, reissued once expired."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

from .errors import ApiError

SCOPE = "apiuser@sandbox.local"


class AccessTokens:
    """Issues and checks bearer tokens for one client id/secret pair."""

    def __init__(self, client_id: str, client_secret: str, ttl_s: float) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.ttl_s = ttl_s
        self.lock = threading.Lock()
        self.expiry: dict[str, float] = {}  # every token ever issued, so an old one answers 602, not 601
        self.current: str | None = None

    def issue(self, client_id: str, client_secret: str, grant_type: str) -> dict[str, Any] | None:
        """The identity answer for these credentials, or None when they are wrong."""
        if (client_id, client_secret, grant_type) != (self.client_id, self.client_secret, "client_credentials"):
            return None
        with self.lock:
            now = time.monotonic()
            if self.current is None or self.expiry[self.current] <= now:
                self.current = f"{uuid.uuid4()}:sb"
                self.expiry[self.current] = now + self.ttl_s
            remaining = self.expiry[self.current] - now
            return {"access_token": self.current, "token_type": "bearer",
                    "expires_in": max(1, int(remaining)), "scope": SCOPE}

    def check(self, token: str | None) -> None:
        """Accept a live token.

        Raises:
            ApiError: 601 for a missing or unknown token, 602 for an expired one.
        """
        with self.lock:
            expiry = self.expiry.get(token or "")
        if expiry is None:
            raise ApiError("601")
        if expiry <= time.monotonic():
            raise ApiError("602")

    def expire_all(self) -> None:
        """Make every issued token expired now."""
        with self.lock:
            now = time.monotonic()
            self.expiry = {token: min(expiry, now) for token, expiry in self.expiry.items()}
