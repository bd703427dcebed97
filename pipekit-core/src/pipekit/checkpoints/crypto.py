"""Encryption of checkpoint payloads: AES-GCM from ``cryptography`` (the
``crypto`` extra, imported only when encryption is configured).

AES-GCM is authenticated: a payload that was altered, or decrypted with
another key, fails to decrypt instead of yielding garbage. Each blob gets a
fresh random 96-bit nonce, stored as the first 12 bytes of its payload, and
is bound (as associated data) to its place in the namespace (sequence
number, kind, delta base, codec), so that blobs cannot be swapped unnoticed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from .errors import CheckpointConfigError, CheckpointCorrupted, CheckpointDecryptError

__all__ = ["Encryption", "Cipher", "key_id_of", "parse_key", "generate_key", "NONCE_SIZE"]

NONCE_SIZE = 12
_EXTRA_HINT = "install the crypto extra: pip install 'pipekit-core[crypto]'"


@attrs.frozen
class Encryption:
    """Where the key comes from: ``key_file`` (a path) or ``key_env`` (the
    name of an environment variable), exactly one of them. The key is 16, 24
    or 32 bytes (AES-128/192/256): raw bytes in a file, or written as hex or
    base64 text."""

    key_file: str | None = None
    key_env: str | None = None

    @classmethod
    def from_options(cls, options: Any) -> Encryption:
        if isinstance(options, Encryption):
            return options
        if not isinstance(options, Mapping):
            raise CheckpointConfigError(
                'checkpoint encryption must be a table like {key_file = "..."} or '
                f'{{key_env = "VAR"}}, got {options!r}'
            )
        unknown = sorted(set(options) - {"key_file", "key_env"})
        if unknown:
            raise CheckpointConfigError(
                f"unknown checkpoint encryption option(s): {', '.join(unknown)} "
                "(expected key_file or key_env)"
            )
        return cls(
            key_file=_opt_str(options.get("key_file"), "key_file"),
            key_env=_opt_str(options.get("key_env"), "key_env"),
        )

    def load_key(self) -> bytes:
        if (self.key_file is None) == (self.key_env is None):
            raise CheckpointConfigError(
                "checkpoint encryption needs exactly one of key_file or key_env"
                + (" (both are set)" if self.key_file is not None else "")
            )
        if self.key_file is not None:
            path = Path(self.key_file).expanduser()
            try:
                raw = path.read_bytes()
            except OSError as exc:
                raise CheckpointConfigError(
                    f"cannot read the checkpoint key file {str(path)!r}: {exc.strerror or exc}"
                )
            return parse_key(raw, f"the key file {str(path)!r}")
        assert self.key_env is not None
        value = os.environ.get(self.key_env)
        if not value:
            raise CheckpointConfigError(
                f"the environment variable {self.key_env} (checkpoint encryption key) is not set"
            )
        return parse_key(value.encode(), f"the environment variable {self.key_env}")


def _opt_str(value: Any, name: str) -> str | None:
    if value is None or (isinstance(value, str) and value):
        return value
    raise CheckpointConfigError(f"checkpoint encryption {name} must be a non-empty string")


def parse_key(raw: bytes, where: str) -> bytes:
    """A key from raw bytes, hex text or base64 text (standard or URL-safe)."""
    if len(raw) in (16, 24, 32) and not _is_text_key(raw):
        return raw
    text = raw.strip()
    candidates: list[bytes] = []
    try:
        candidates.append(binascii.unhexlify(text))
    except (binascii.Error, ValueError):
        pass
    for decode in (base64.b64decode, base64.urlsafe_b64decode):
        try:
            candidates.append(decode(text + b"=" * (-len(text) % 4)))
        except (binascii.Error, ValueError):
            pass
    for key in candidates:
        if len(key) in (16, 24, 32):
            return key
    raise CheckpointConfigError(
        f"{where} does not hold an AES key: expected 16, 24 or 32 bytes (raw, hex or "
        'base64); make one with: python -c "import base64, os; '
        'print(base64.urlsafe_b64encode(os.urandom(32)).decode())"'
    )


def _is_text_key(raw: bytes) -> bool:
    """Bytes that are all printable ASCII (or whitespace) are read as text:
    32 hex digits are an AES-128 key, not a raw AES-256 one."""
    return all(32 <= b < 127 or b in b"\t\r\n" for b in raw)


def generate_key() -> str:
    """A new random AES-256 key as URL-safe base64 text."""
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


def key_id_of(key: bytes) -> str:
    """The key id stored in headers: 8 hex digits of a labelled SHA-256."""
    return hashlib.sha256(b"pipekit-checkpoint-key\0" + key).hexdigest()[:8]


class Cipher:
    """AES-GCM with one key."""

    def __init__(self, key: bytes) -> None:
        try:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        except ImportError:
            raise CheckpointConfigError(
                f"checkpoint encryption needs the 'cryptography' package: {_EXTRA_HINT}"
            )
        self.key_id = key_id_of(key)
        self._aead = AESGCM(key)

    @classmethod
    def from_options(cls, options: Any) -> Cipher:
        return cls(Encryption.from_options(options).load_key())

    def encrypt(self, data: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(NONCE_SIZE)
        return nonce + self._aead.encrypt(nonce, data, aad)

    def decrypt(self, data: memoryview, aad: bytes) -> bytes:
        """Raises ``cryptography.exceptions.InvalidTag`` when the data or
        ``aad`` were altered or the key is another one."""
        return self._aead.decrypt(bytes(data[:NONCE_SIZE]), bytes(data[NONCE_SIZE:]), aad)


def decrypt(
    cipher: Cipher | None, header: dict[str, Any], data: memoryview, aad: bytes, what: str, id: str
) -> bytes:
    """The plaintext of an encrypted payload, or a clear error."""
    want = header.get("key_id")
    if cipher is None:
        raise CheckpointDecryptError(
            f"{what} is encrypted (key id {want}); no key was given: set key_file or key_env "
            "(CLI: --key-file or --key-env)"
        )
    if cipher.key_id != want:
        raise CheckpointDecryptError(
            f"{what} was encrypted with key id {want}, but the key given has key id "
            f"{cipher.key_id}: use the key it was saved with"
        )
    from cryptography.exceptions import InvalidTag

    if len(data) < NONCE_SIZE + 16:
        raise CheckpointCorrupted(f"{what} is damaged: encrypted payload too short", id)
    try:
        return cipher.decrypt(data, aad)
    except InvalidTag:
        raise CheckpointCorrupted(
            f"{what} failed authentication with the right key id: its bytes or header were altered",
            id,
        )
