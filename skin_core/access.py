"""The admin password that guards launching, continuing, cancelling, promoting, rolling back and deleting models."""
from __future__ import annotations

import hmac
import os

ENV_VAR = "SKIN_ADMIN_PASSWORD"


def required_password(secrets: dict | None = None) -> str | None:
    """The configured password (environment first, then the app's secrets), or None if unset."""
    value = os.environ.get(ENV_VAR) or (secrets or {}).get(ENV_VAR)
    return str(value) if value else None


def allowed(given: str | None, required: str | None) -> bool:
    """True when no password is set, or when `given` matches it (constant-time comparison)."""
    if not required:
        return True
    return bool(given) and hmac.compare_digest(given.encode(), required.encode())
