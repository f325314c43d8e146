"""Twilio's names for our keys and calls: an Account SID is `AC` and the key's id in 32 hex
digits, a Call SID `CA` and the call's platform id; one rule each way, so no table maps them."""

from __future__ import annotations

import re
import uuid

ACCOUNT_SID_PATTERN = r"^AC[0-9a-f]{32}$"
CALL_SID_PATTERN = r"^CA[0-9a-f]{32}$"
_ACCOUNT_SID = re.compile(ACCOUNT_SID_PATTERN)
_CALL_SID = re.compile(CALL_SID_PATTERN)


def account_sid(key_id: str) -> str:
    """The Account SID of the key whose id is `key_id` (a UUID)."""
    return "AC" + uuid.UUID(key_id).hex


def call_sid(call_id: str) -> str:
    """The Call SID of the call whose platform id is `call_id` (a UUID)."""
    return "CA" + uuid.UUID(call_id).hex


def is_account_sid(value: str) -> bool:
    return bool(_ACCOUNT_SID.match(value))


def call_id_of(sid: str) -> str | None:
    """The platform id a Call SID names, or None when `sid` is not one."""
    if not _CALL_SID.match(sid):
        return None
    return str(uuid.UUID(hex=sid[2:]))
