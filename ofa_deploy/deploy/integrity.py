"""What makes a bundle trustworthy: contained paths, a self-digest, and an optional signature.

* Every file a manifest names must be a plain relative path (no ``..``, no absolute path, no
  backslash, no empty part) of a regular file inside the bundle, and not a symlink: a manifest
  cannot make the toolkit hash or run a file elsewhere on the machine.
* ``manifest_sha256`` is the SHA-256 of the canonical JSON of every other field
  (``json.dumps(rest, sort_keys=True, separators=(",", ":"), ensure_ascii=False)``, UTF-8); the
  toolkit recomputes it whenever it updates the manifest. It catches corruption and careless
  edits of the manifest itself (a checksum inside the file cannot stop a deliberate forger).
* Authenticity: an optional detached **Ed25519** signature (``manifest.sig``) with a key the user
  gives. Ed25519 because the fleet side only needs the 32-byte public key to verify (no shared
  secret to distribute, unlike an HMAC), signatures are deterministic and small, and keys come
  from standard tools (``openssl genpkey -algorithm ed25519``). The signature covers the manifest
  as compiled: every field except ``measurements`` (benchmarks append to it later) and the
  self-digest.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path, PurePosixPath
from typing import Any

from ofa_deploy.errors import BadInputError

DIGEST_FIELD = "manifest_sha256"
SIGNATURE_FILE = "manifest.sig"
SIGNATURE_SCHEME = "ed25519"
UNSIGNED_FIELDS = (DIGEST_FIELD, "measurements")


def canonical(document: dict[str, Any], without: tuple[str, ...]) -> bytes:
    """The canonical JSON bytes of ``document`` without the fields ``without`` (what digests and signatures cover)."""
    rest = {k: v for k, v in document.items() if k not in without}
    text = json.dumps(rest, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8", errors="surrogatepass")  # a lone surrogate (JSON "\ud83d") still digests


def manifest_digest(document: dict[str, Any]) -> str:
    """The ``manifest_sha256`` of a manifest: SHA-256 of the canonical JSON of every other field."""
    return hashlib.sha256(canonical(document, (DIGEST_FIELD,))).hexdigest()


def check_digest(document: dict[str, Any], where: Path) -> None:
    """BadInputError unless the manifest's recorded ``manifest_sha256`` matches its content."""
    recorded = document.get(DIGEST_FIELD)
    if not isinstance(recorded, str):
        raise BadInputError(f"{where}: no '{DIGEST_FIELD}': not a bundle this toolkit wrote; compile it again")
    if recorded != manifest_digest(document):
        raise BadInputError(
            f"{where}: the manifest was modified after ofa-deploy wrote it ('{DIGEST_FIELD}' does not match its "
            "content); refusing the bundle: compile it again"
        )


def bundle_member(directory: Path, name: Any, where: Path) -> Path:
    """``directory / name`` for a name a manifest gives, or BadInputError if it could leave the bundle."""
    if not isinstance(name, str) or not name or "\\" in name or "\x00" in name:
        raise BadInputError(f"{where}: invalid file name {name!r} in the manifest; refusing the bundle")
    pure = PurePosixPath(name)
    if pure.is_absolute() or any(part in ("", "..", ".") for part in name.split("/")):
        raise BadInputError(f"{where}: file '{name}' is not a plain path inside the bundle; refusing the bundle")
    path = Path(directory) / pure
    root = Path(directory).resolve()
    current = Path(directory)
    for part in pure.parts:  # no symlink anywhere on the way, even one pointing back inside
        current = current / part
        if current.is_symlink():
            raise BadInputError(f"{where}: '{name}' is a symbolic link; refusing the bundle")
    if not path.resolve().is_relative_to(root):
        raise BadInputError(f"{where}: '{name}' resolves outside the bundle; refusing the bundle")
    return path


# ---------------------------------------------------------------------- signatures


def _crypto():
    from ofa_deploy.backend.interface import require_module

    return require_module("signing", "sign", "cryptography.hazmat.primitives.serialization", "cryptography")


def _load_key(path: Path, private: bool):
    serialization = _crypto()
    from cryptography.hazmat.primitives.asymmetric import ed25519

    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise BadInputError(f"{path}: cannot read the key ({exc.strerror})") from None
    try:
        key = (
            serialization.load_pem_private_key(data, password=None)
            if private
            else serialization.load_pem_public_key(data)
        )
    except (ValueError, TypeError) as exc:
        raise BadInputError(f"{path}: not a PEM {'private' if private else 'public'} key ({exc})") from None
    wanted = ed25519.Ed25519PrivateKey if private else ed25519.Ed25519PublicKey
    if not isinstance(key, wanted):
        raise BadInputError(
            f"{path}: not an Ed25519 key (make one with: openssl genpkey -algorithm ed25519 -out key.pem; "
            "openssl pkey -in key.pem -pubout -out key.pub.pem)"
        )
    return key


def signature_document(document: dict[str, Any], key_path: Path) -> dict[str, str]:
    """The ``manifest.sig`` document: an Ed25519 signature of the manifest's signed fields with the private key."""
    key = _load_key(key_path, private=True)
    signature = key.sign(canonical(document, UNSIGNED_FIELDS))
    return {
        "scheme": SIGNATURE_SCHEME,
        "covers": "manifest.json without " + ", ".join(UNSIGNED_FIELDS),
        "signature": base64.b64encode(signature).decode("ascii"),
    }


def verify_signature(directory: Path, document: dict[str, Any], public_key: Path) -> None:
    """BadInputError unless the bundle's ``manifest.sig`` verifies for ``document`` with the public key."""
    key = _load_key(public_key, private=False)  # first: without cryptography, the one-line install hint
    from cryptography.exceptions import InvalidSignature

    path = bundle_member(directory, SIGNATURE_FILE, Path(directory) / SIGNATURE_FILE)
    if not path.is_file():
        raise BadInputError(f"{directory}: no {SIGNATURE_FILE}: the bundle is not signed (compile it with --sign-key)")
    try:
        sig = json.loads(path.read_text())
        raw = base64.b64decode(sig["signature"], validate=True)
        if sig.get("scheme") != SIGNATURE_SCHEME:
            raise ValueError(f"scheme {sig.get('scheme')!r}")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BadInputError(f"{path}: not a readable signature ({exc})") from None
    try:
        key.verify(raw, canonical(document, UNSIGNED_FIELDS))
    except InvalidSignature:
        raise BadInputError(
            f"{directory}: the signature does not match the manifest for {public_key}; refusing the bundle"
        ) from None
