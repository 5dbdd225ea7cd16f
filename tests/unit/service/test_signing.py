import base64
import os
import re

import pytest
from cryptography.hazmat.primitives.asymmetric.ed448 import Ed448PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from service.core.config import Settings
from service.core.signing import Signer, decode_signature, encode_signature, load_public_pem, verify


def test_a_signer_signs_and_its_published_key_verifies():
    signer = Signer.from_seed(os.urandom(32))
    signature = signer.sign(b"manifest")
    public = load_public_pem(signer.public_pem())
    assert verify(public, signature, b"manifest")
    assert not verify(public, signature, b"manifest ")
    assert not verify(load_public_pem(Signer.from_seed(os.urandom(32)).public_pem()), signature, b"manifest")
    assert decode_signature(encode_signature(signature)) == signature


def test_the_fingerprint_is_sha256_of_the_raw_key_and_stable():
    seed = os.urandom(32)
    fingerprint = Signer.from_seed(seed).fingerprint
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", fingerprint)
    assert Signer.from_seed(seed).fingerprint == fingerprint
    assert Signer.from_seed(os.urandom(32)).fingerprint != fingerprint


def test_the_service_key_comes_from_settings(tmp_path):
    seed = os.urandom(32)
    explicit = Settings(data_dir=tmp_path, signing_key=base64.b64encode(seed).decode())
    assert Signer.from_settings(explicit).fingerprint == Signer.from_seed(seed).fingerprint
    generated = Signer.from_settings(Settings(data_dir=tmp_path / "d"))
    assert Signer.from_settings(Settings(data_dir=tmp_path / "d")).fingerprint == generated.fingerprint


@pytest.mark.parametrize(
    ("pem", "message"),
    [
        (b"not a key", "not a PEM public key"),
        (
            Ed448PrivateKey.generate()
            .public_key()
            .public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo),
            "not an Ed25519 public key but a",
        ),
    ],
)
def test_only_ed25519_public_keys_load(pem: bytes, message: str):
    with pytest.raises(ValueError, match=message):
        load_public_pem(pem)


@pytest.mark.parametrize(
    ("text", "message"), [(b"%%%", "is not base64"), (base64.b64encode(b"x" * 10), "holds 10 bytes")]
)
def test_a_signature_file_must_hold_64_bytes_of_base64(text: bytes, message: str):
    with pytest.raises(ValueError, match=message):
        decode_signature(text)
