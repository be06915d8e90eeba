"""Password hashing: Argon2id (argon2-cffi), PHC strings stored in ``users.password_hash``."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MIN_LENGTH = 8
MAX_LENGTH = 1024  # an upper bound keeps a huge "password" from costing the hasher anything

# The library's defaults (RFC 9106 "low memory" profile: t=3, m=64 MiB, p=4).
_hasher = PasswordHasher()

# Verified when the user does not exist or has no password, so that the answer takes as long as for
# a real user and does not tell an attacker which names exist. Made on first use, not at import.
_dummy_hash: str | None = None


class WeakPassword(ValueError):
    """A password that is too short or too long to be set."""


def check_strength(password: str) -> None:
    """Refuse passwords shorter than ``MIN_LENGTH`` or longer than ``MAX_LENGTH`` characters."""
    if len(password) < MIN_LENGTH:
        raise WeakPassword(f"a password needs at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise WeakPassword(f"a password may have at most {MAX_LENGTH} characters")


def hash_password(password: str) -> str:
    """A salted Argon2id hash of ``password`` in PHC string form."""
    check_strength(password)
    return _hasher.hash(password)


def verify_password(stored: str | None, password: str) -> bool:
    """Whether ``password`` matches ``stored``; with nothing stored, burns the same time and says no."""
    if len(password) > MAX_LENGTH:
        return False
    try:
        if stored is None:
            global _dummy_hash
            if _dummy_hash is None:
                _dummy_hash = _hasher.hash("nbfleet-dummy-password")
            _hasher.verify(_dummy_hash, password)  # for the time it costs; the answer is no either way
            return False
        return _hasher.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored: str) -> bool:
    """Whether ``stored`` was made with weaker parameters than today's and should be replaced."""
    try:
        return _hasher.check_needs_rehash(stored)
    except (InvalidHashError, ValueError):
        return True
