"""The service's Ed25519 signing key: it signs audit bundles, and anyone may check them.

The private key is the 32-byte seed in ``DPSYNTH_SIGNING_KEY`` (``Settings.signing_seed``).
The public key is published at ``GET /audit/public-key``, printed by ``dpsynth admin
public-key`` and shipped in every bundle. Its fingerprint is ``sha256:`` and the hex
SHA-256 of the 32 raw public-key bytes, short enough to read out over the phone; an auditor
who wrote it down (or kept the PEM) from a trusted channel can check that a bundle was
signed by this service and not re-signed by whoever handed it over.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from typing import Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from service.core.config import Settings

ALGORITHM: Literal["Ed25519"] = "Ed25519"


def fingerprint(public_key: Ed25519PublicKey) -> str:
    """``sha256:<hex>`` of the raw public key bytes."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def public_pem(public_key: Ed25519PublicKey) -> bytes:
    """The public key as a PEM ``PUBLIC KEY`` block (SubjectPublicKeyInfo)."""
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_public_pem(pem: bytes) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM.

    Raises:
        ValueError: not a PEM public key, or not an Ed25519 one.
    """
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError, binascii.Error) as exc:
        raise ValueError(f"not a PEM public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"not an {ALGORITHM} public key but a {type(key).__name__}")
    return key


def verify(public_key: Ed25519PublicKey, signature: bytes, data: bytes) -> bool:
    """Whether ``signature`` is ``public_key``'s signature of exactly ``data``."""
    try:
        public_key.verify(signature, data)
    except InvalidSignature:
        return False
    return True


def encode_signature(signature: bytes) -> bytes:
    """A signature as the text of a ``.sig`` file: base64 and a newline."""
    return base64.b64encode(signature) + b"\n"


def decode_signature(text: bytes) -> bytes:
    """The raw signature from a ``.sig`` file.

    Raises:
        ValueError: not base64 of 64 bytes.
    """
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except binascii.Error:
        raise ValueError("is not base64") from None
    if len(raw) != 64:
        raise ValueError(f"holds {len(raw)} bytes where an {ALGORITHM} signature has 64")
    return raw


@dataclass(frozen=True)
class Signer:
    """The service's private key and what is published about it."""

    private_key: Ed25519PrivateKey

    @classmethod
    def from_seed(cls, seed: bytes) -> Signer:
        """The signer of a 32-byte Ed25519 seed."""
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    @classmethod
    def from_settings(cls, settings: Settings) -> Signer:
        """The service's signer (a key generated into ``data_dir`` outside production).

        Raises:
            RuntimeError: production mode without ``DPSYNTH_SIGNING_KEY``.
        """
        return cls.from_seed(settings.signing_seed())

    @property
    def public_key(self) -> Ed25519PublicKey:
        """The public half."""
        return self.private_key.public_key()

    @property
    def fingerprint(self) -> str:
        """``sha256:<hex>`` of the public key."""
        return fingerprint(self.public_key)

    def public_pem(self) -> bytes:
        """The public key as PEM."""
        return public_pem(self.public_key)

    def sign(self, data: bytes) -> bytes:
        """The 64-byte signature of ``data``."""
        return self.private_key.sign(data)
