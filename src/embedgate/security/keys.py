"""API key format: visible prefix, key id, >= 128 random bits, checksum.

``egk_<id>_<secret><check>``: the id (12 base32 chars) finds the record, the secret (32 base62
chars, ~190 bits) is verified as HMAC-SHA256 with a server-side pepper in constant time, and the
6-char CRC32 checksum lets scanners (and us, before any lookup) reject mistyped or forged keys
offline. Keys are shown once; afterwards only ``egk_<id>_…<last4>``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
import zlib
from dataclasses import dataclass

PREFIX = "egk_"
_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
_B62 = string.digits + string.ascii_letters
SECRET_LEN = 32
CHECK_LEN = 6
ID_LEN = 12
KEY_RE = re.compile(rf"^{PREFIX}([a-z2-7]{{{ID_LEN}}})_([0-9A-Za-z]{{{SECRET_LEN + CHECK_LEN}}})$")


def _b62(number: int, width: int) -> str:
    out = []
    for _ in range(width):
        number, digit = divmod(number, 62)
        out.append(_B62[digit])
    return "".join(reversed(out))


def _checksum(body: str) -> str:
    return _b62(zlib.crc32(body.encode("ascii")), CHECK_LEN)


@dataclass(frozen=True)
class ParsedKey:
    key_id: str
    secret: str


def new_key_id() -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(ID_LEN))


def generate_key(key_id: str | None = None) -> tuple[str, str]:
    """A fresh (key_id, full key)."""
    key_id = key_id or new_key_id()
    secret = "".join(secrets.choice(_B62) for _ in range(SECRET_LEN))
    body = f"{PREFIX}{key_id}_{secret}"
    return key_id, body + _checksum(body)


def parse_key(candidate: str) -> ParsedKey | None:
    """Shape and checksum only: no database, no pepper. None for anything malformed."""
    if len(candidate) != len(PREFIX) + ID_LEN + 1 + SECRET_LEN + CHECK_LEN:
        return None
    match = KEY_RE.match(candidate)
    if match is None:
        return None
    body = candidate[:-CHECK_LEN]
    if not hmac.compare_digest(_checksum(body), candidate[-CHECK_LEN:]):
        return None
    return ParsedKey(match.group(1), match.group(2)[:SECRET_LEN])


def digest(pepper: bytes, key: str) -> str:
    """What is stored: HMAC-SHA256(pepper, key), hex."""
    return hmac.new(pepper, key.encode("ascii"), hashlib.sha256).hexdigest()


def verify(pepper: bytes, key: str, stored_digest: str) -> bool:
    return hmac.compare_digest(digest(pepper, key), stored_digest)


def redact(key_id: str, last4: str) -> str:
    return f"{PREFIX}{key_id}_…{last4}"


def looks_like_key(text: str) -> bool:
    return text.startswith(PREFIX)


def pepper_check(pepper: bytes) -> str:
    """A value that identifies the pepper without revealing it (HMAC of a fixed label):
    stored in a shared database, it lets a replica with another pepper refuse to start
    instead of answering 401 to every key."""
    return hmac.new(pepper, b"embedgate pepper check v1", hashlib.sha256).hexdigest()
