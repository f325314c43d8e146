"""Call ids: the id a key knows a call by, and the platform's own id for it.

Ids the platform makes are random UUIDs, the same inside and out. A sender may name a call
itself (`call_initiated`'s `call_id`: a UUID, or its own id such as Asterisk's `1700000000.123`):
such names belong to the key, so two keys may use the same one for two calls. Inside, a named
call is known by a UUID derived from its key and its name, so neither key can reach, probe or
take the other's call, and every answer is the same whether or not another key used the name.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

from core.errors import BadRequest

# What a sender's own call id may be: URL-safe as it is, short enough to index and log.
REF_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
_REF = re.compile(REF_PATTERN)
REF_RULE = "a UUID or 1 to 128 characters of A-Z, a-z, 0-9, '.', '_', ':' and '-'"
# Namespace of the UUIDs derived from (key, sender's name).
_NAMED = uuid.UUID("0b0e3d52-4a63-4c1e-9a55-6c1f1f6e7a20")


def parse_call_id(raw: str, name: str = "call_id") -> str:
    """A call id as given in a path, query or body: a UUID (in any spelling) in canonical form,
    or a sender's own id as it is; anything else is a 400 naming `name`."""
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        pass
    if not _REF.match(raw):
        raise BadRequest(f"{name} must be {REF_RULE}, got {raw[:64]!r}")
    return raw


def named_call_uuid(key_id: str, ref: str) -> str:
    """The platform's id of the call that key `key_id` named `ref`."""
    return str(uuid.uuid5(_NAMED, f"{key_id}:{ref}"))


@dataclass(frozen=True, slots=True)
class CallRef:
    """A call as one key names it: the key, and the id the key uses (`ref`)."""

    key_id: str
    ref: str

    @property
    def ids(self) -> list[str]:
        """The platform ids the call can have: `ref` itself when it is a UUID the platform
        made, and the id derived for a name the key gave. At most one of them is the key's call
        named `ref` (a new call may not take a name another of the key's calls answers to)."""
        derived = named_call_uuid(self.key_id, self.ref)
        try:
            return [str(uuid.UUID(self.ref)), derived]
        except ValueError:
            return [derived]
