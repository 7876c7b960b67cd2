"""The device side of ADB authentication: read a host's public key, check a token signature.

ADB hosts sign the 20-byte random token with RSA PKCS#1 v1.5, treating the token as an already
computed SHA-1 digest; the public key travels in Android's own binary layout, base64-encoded.
"""

from __future__ import annotations

import base64
import struct

MODULUS_BYTES = 2048 // 8
_KEY_LAYOUT = f"<LL{MODULUS_BYTES}s{MODULUS_BYTES}sL"
_SHA1_DIGEST_INFO = bytes.fromhex("3021300906052b0e03021a05000414")


def parse_public_key(payload: bytes) -> tuple[int, int]:
    """(modulus, exponent) from an AUTH RSAPUBLICKEY payload (``base64 user@host\\0``)."""
    encoded = payload.rstrip(b"\0").split()[0]
    raw = base64.b64decode(encoded)
    words, _n0inv, modulus, _rr, exponent = struct.unpack(_KEY_LAYOUT, raw[: struct.calcsize(_KEY_LAYOUT)])
    if words != MODULUS_BYTES // 4:
        raise ValueError(f"unexpected modulus size {words} words")
    return int.from_bytes(modulus, "little"), exponent


def signature_matches(token: bytes, signature: bytes, key: tuple[int, int]) -> bool:
    """Whether ``signature`` is the PKCS#1 v1.5 signature of the pre-hashed ``token`` under ``key``."""
    modulus, exponent = key
    if len(signature) != MODULUS_BYTES:
        return False
    decoded = pow(int.from_bytes(signature, "big"), exponent, modulus).to_bytes(MODULUS_BYTES, "big")
    digest_info = _SHA1_DIGEST_INFO + token
    expected = b"\x00\x01" + b"\xff" * (MODULUS_BYTES - 3 - len(digest_info)) + b"\x00" + digest_info
    return decoded == expected
