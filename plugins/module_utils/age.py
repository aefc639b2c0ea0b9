# Copyright (c) 2026, prodready.vps contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Streaming implementation of the age v1 file encryption format.

This follows the C2SP specification (https://c2sp.org/age, also published as
https://age-encryption.org/v1) and produces files that the reference ``age``
and ``rage`` tools decrypt, and decrypts theirs.

Supported:

* X25519 recipients (``age1...``) and identities (``AGE-SECRET-KEY-1...``),
  including key generation (:func:`generate_identity`).
* scrypt passphrase recipients (``-> scrypt``), with a configurable work factor
  on encryption and an upper bound on the accepted work factor on decryption.
* Streaming encryption (:class:`Encryptor`, a writable file object) and
  decryption (:class:`Decryptor`, a readable file object) in 64 KiB chunks, with
  memory use bounded by a few chunks whatever the size of the stream.
* Unknown stanza types are skipped when decrypting; encryption adds a random
  "grease" stanza by default (as rage does) so that parsers keep tolerating them.

Out of scope (rejected with a clear :class:`AgeError`):

* ASCII armor (PEM ``-----BEGIN AGE ENCRYPTED FILE-----``) input and output.
* Post-quantum / hybrid recipients (``age1pq1...``, ``mlkem768x25519``
  stanzas), tagged hardware recipients, SSH recipients and plugins. Their
  stanzas are skipped like any other unknown stanza type.

Only the standard library and ``cryptography`` are used. The module imports
without ``cryptography`` (``HAS_CRYPTOGRAPHY`` is then False and
``CRYPTOGRAPHY_IMPORT_ERROR`` holds the traceback), as Ansible module_utils must.

Security notes for streaming decryption: every chunk returned by
:meth:`Decryptor.read` is authenticated, but truncation and trailing data are
only detected when the end of the payload is reached, so a consumer that stops
early (``tarfile`` stops at the end-of-archive marker) must call
:meth:`Decryptor.finish` to verify the rest of the stream.
"""

from __future__ import absolute_import, division, print_function  # noqa: UP010 (Ansible boilerplate)

__metaclass__ = type  # noqa: UP001 (Ansible boilerplate)

import base64
import binascii
import hashlib
import hmac
import io
import os
import random
import re
import stat
import struct
import sys
import traceback

try:
    import fcntl
except ImportError:  # not POSIX
    fcntl = None

try:
    from cryptography.exceptions import InvalidTag, UnsupportedAlgorithm
    from cryptography.hazmat.primitives.asymmetric.x25519 import (
        X25519PrivateKey,
        X25519PublicKey,
    )
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
except ImportError:
    HAS_CRYPTOGRAPHY = False
    CRYPTOGRAPHY_IMPORT_ERROR = traceback.format_exc()
else:
    HAS_CRYPTOGRAPHY = True
    CRYPTOGRAPHY_IMPORT_ERROR = None


VERSION_LINE = b"age-encryption.org/v1\n"
CHUNK_SIZE = 64 * 1024
TAG_SIZE = 16
ENCRYPTED_CHUNK_SIZE = CHUNK_SIZE + TAG_SIZE
FILE_KEY_SIZE = 16
NONCE_SIZE = 16
DEFAULT_WORK_FACTOR = 18
MAX_WORK_FACTOR = 22
MAX_HEADER_SIZE = 1024 * 1024
PIPE_BUFFER_SIZE = 1024 * 1024

X25519_RECIPIENT_HRP = "age"
X25519_IDENTITY_HRP = "AGE-SECRET-KEY-"

_VERSION_PREFIX = b"age-encryption.org/"
_ARMOR_BEGIN = b"-----BEGIN AGE ENCRYPTED FILE-----"
_X25519_LABEL = b"age-encryption.org/v1/X25519"
_SCRYPT_LABEL = b"age-encryption.org/v1/scrypt"
_ZERO_NONCE = bytes(12)
_B64_RE = re.compile(b"\\A[A-Za-z0-9+/]*\\Z")
_WORK_FACTOR_RE = re.compile("\\A[1-9][0-9]*\\Z")
_F_SETPIPE_SZ = 1031  # Linux fcntl commands (fcntl.F_SETPIPE_SZ needs Python 3.10)
_F_GETPIPE_SZ = 1032
# 11-byte big-endian chunk counter (the top 3 bytes stay zero) and the final-chunk flag.
_CHUNK_NONCE = struct.Struct(">3xQB")
_GREASE_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&*+-.:=?@^_~"


# ---------------------------------------------------------------------------
# Exceptions


class AgeError(Exception):
    """Base class of every error raised by this module."""


class AgeKeyError(AgeError, ValueError):
    """A recipient, identity or passphrase argument is invalid or unsupported."""


class AgeHeaderError(AgeError):
    """The file header is malformed, uses an unsupported feature or is not an age file."""


class NoIdentityMatchError(AgeError):
    """None of the given identities can unwrap the file key."""


class AgeIntegrityError(AgeError):
    """Authentication failed: the file was modified, corrupted or truncated."""


AgeDecryptionError = AgeIntegrityError


class AgeHeaderMacError(AgeIntegrityError):
    """The header MAC does not match (the header was modified)."""


class AgePayloadError(AgeIntegrityError):
    """A payload chunk failed authentication, or the payload is truncated or has trailing data."""


class AgeTruncatedError(AgePayloadError):
    """The payload ends without a final chunk."""


def _require_cryptography():
    if not HAS_CRYPTOGRAPHY:
        raise AgeError(f"the Python 'cryptography' library is required for age encryption:\n{CRYPTOGRAPHY_IMPORT_ERROR}")


# ---------------------------------------------------------------------------
# Encodings: bech32 (BIP 173, without the length limit) and unpadded base64

_BECH32_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_BECH32_REV = {c: i for i, c in enumerate(_BECH32_CHARSET)}
_BECH32_GEN = (0x3b6a57b2, 0x26508e6d, 0x1ea119fa, 0x3d4233dd, 0x2a1462b3)


def _bech32_polymod(values):
    chk = 1
    for value in values:
        top = chk >> 25
        chk = ((chk & 0x1ffffff) << 5) ^ value
        for i in range(5):
            if (top >> i) & 1:
                chk ^= _BECH32_GEN[i]
    return chk


def _bech32_hrp_expand(hrp):
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def _convert_bits(data, from_bits, to_bits, pad):
    acc = 0
    bits = 0
    out = []
    maxv = (1 << to_bits) - 1
    for value in data:
        acc = (acc << from_bits) | value
        bits += from_bits
        while bits >= to_bits:
            bits -= to_bits
            out.append((acc >> bits) & maxv)
    if pad:
        if bits:
            out.append((acc << (to_bits - bits)) & maxv)
    elif bits >= from_bits or ((acc << (to_bits - bits)) & maxv):
        raise ValueError("invalid bech32 padding")
    return out


def bech32_encode(hrp, data):
    """Encode ``data`` (bytes) as bech32 with the human-readable part ``hrp``.

    The result is lowercase; callers wanting uppercase (age identities) upper() it.
    """
    hrp = hrp.lower()
    values = _convert_bits(bytearray(data), 8, 5, True)
    polymod = _bech32_polymod(_bech32_hrp_expand(hrp) + values + [0] * 6) ^ 1
    checksum = [(polymod >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(_BECH32_CHARSET[v] for v in values + checksum)


def bech32_decode(text):
    """Decode a bech32 string, returning ``(hrp, data)``; ``hrp`` is lowercased.

    Raises ValueError on mixed case, bad characters, bad checksum or padding.
    """
    if not isinstance(text, str):
        raise TypeError("bech32 string must be text")
    if text.lower() != text and text.upper() != text:
        raise ValueError("bech32 string mixes upper and lower case")
    text = text.lower()
    pos = text.rfind("1")
    if pos < 1 or pos + 7 > len(text):
        raise ValueError("bech32 separator missing or data part too short")
    hrp = text[:pos]
    if any(ord(c) < 33 or ord(c) > 126 for c in hrp):
        raise ValueError("invalid character in bech32 human-readable part")
    try:
        values = [_BECH32_REV[c] for c in text[pos + 1:]]
    except KeyError:
        raise ValueError("invalid character in bech32 data") from None
    if _bech32_polymod(_bech32_hrp_expand(hrp) + values) != 1:
        raise ValueError("invalid bech32 checksum")
    return hrp, bytes(bytearray(_convert_bits(values[:-6], 5, 8, False)))


def _b64encode(data):
    return base64.b64encode(data).rstrip(b"=")


def _b64decode(text, what):
    """Decode canonical unpadded base64 (bytes in, bytes out) or raise AgeHeaderError."""
    if not _B64_RE.match(text) or len(text) % 4 == 1:
        raise AgeHeaderError(f"{what} is not valid unpadded base64")
    try:
        data = base64.b64decode(text + b"=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise AgeHeaderError(f"{what} is not valid unpadded base64") from None
    if _b64encode(data) != text:
        raise AgeHeaderError(f"{what} is not canonical base64")
    return data


def _hkdf(ikm, salt, info):
    """HKDF-SHA-256 with a 32-byte output (RFC 5869)."""
    prk = hmac.new(salt or bytes(32), ikm, hashlib.sha256).digest()
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()


def _to_bytes(value, what):
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise AgeKeyError(f"{what} must be str or bytes, not {type(value).__name__}")


# ---------------------------------------------------------------------------
# Stanzas, recipients and identities


class Stanza:
    """A recipient stanza: ``args`` (list of str, the first is the type) and ``body`` (bytes)."""

    __slots__ = ("args", "body")

    def __init__(self, args, body):
        self.args = list(args)
        self.body = bytes(body)

    @property
    def type(self):
        """The stanza type (its first argument)."""
        return self.args[0]

    def encode(self):
        """Serialize the stanza: argument line and base64 body wrapped at 64 columns."""
        for arg in self.args:
            if not arg or any(ord(c) < 33 or ord(c) > 126 for c in arg):
                raise AgeError(f"invalid stanza argument {arg!r}")
        encoded = _b64encode(self.body)
        lines = [b"-> " + " ".join(self.args).encode("ascii")]
        lines.extend(encoded[i:i + 64] for i in range(0, len(encoded), 64))
        if len(encoded) % 64 == 0:
            lines.append(b"")
        return b"\n".join(lines) + b"\n"

    def __repr__(self):
        return f"Stanza({self.args!r}, <{len(self.body)} bytes>)"


_AEAD_TAKES_BUFFERS = None


def _aead_takes_buffers():
    """Whether ChaCha20Poly1305 accepts memoryviews (cryptography < 42, e.g. 38 on Debian 12, wants bytes)."""
    global _AEAD_TAKES_BUFFERS  # pylint: disable=global-statement
    if _AEAD_TAKES_BUFFERS is None:
        try:
            ChaCha20Poly1305(bytes(32)).encrypt(bytes(12), memoryview(b"x"), None)
            _AEAD_TAKES_BUFFERS = True
        except TypeError:
            _AEAD_TAKES_BUFFERS = False
    return _AEAD_TAKES_BUFFERS


def _chunk_function(method):
    """``method`` (an AEAD encrypt/decrypt), copying memoryviews to bytes where the library needs it."""
    if _aead_takes_buffers():
        return method

    def call(nonce, data, associated_data):
        return method(nonce, bytes(data), associated_data)
    return call


def _aead_unwrap(key, body):
    try:
        return ChaCha20Poly1305(key).decrypt(_ZERO_NONCE, body, None)
    except InvalidTag:
        return None


class X25519Recipient:
    """An ``age1...`` public key."""

    def __init__(self, public_bytes):
        _require_cryptography()
        if len(public_bytes) != 32:
            raise AgeKeyError(f"an X25519 public key is 32 bytes, got {len(public_bytes)}")
        self.public_bytes = bytes(public_bytes)
        self._key = X25519PublicKey.from_public_bytes(self.public_bytes)

    @classmethod
    def from_string(cls, text):
        """Parse an ``age1...`` string."""
        text = text.strip() if isinstance(text, str) else text
        _check_ssh(text)
        try:
            hrp, data = bech32_decode(text)
        except (TypeError, ValueError) as exc:
            raise AgeKeyError(f"invalid age recipient {text!r}: {exc}") from None
        if hrp != X25519_RECIPIENT_HRP:
            raise AgeKeyError(_unsupported_key_message(hrp, "recipient"))
        if len(data) != 32:
            raise AgeKeyError(f"invalid age recipient {text!r}: the key is {len(data)} bytes, expected 32")
        return cls(data)

    def __str__(self):
        return bech32_encode(X25519_RECIPIENT_HRP, self.public_bytes)

    def __repr__(self):
        return f"X25519Recipient({str(self)!r})"

    def __eq__(self, other):
        return isinstance(other, X25519Recipient) and other.public_bytes == self.public_bytes

    def __hash__(self):
        return hash(self.public_bytes)

    def wrap(self, file_key):
        """Return the stanzas wrapping ``file_key`` for this recipient."""
        ephemeral = X25519PrivateKey.generate()
        share = _raw_public(ephemeral.public_key())
        try:
            shared = ephemeral.exchange(self._key)
        except ValueError:
            shared = bytes(32)
        if shared == bytes(32):
            raise AgeKeyError(f"recipient {self} is a low-order point and can't be encrypted to")
        key = _hkdf(shared, share + self.public_bytes, _X25519_LABEL)
        body = ChaCha20Poly1305(key).encrypt(_ZERO_NONCE, file_key, None)
        return [Stanza(["X25519", _b64encode(share).decode("ascii")], body)]


class X25519Identity:
    """An ``AGE-SECRET-KEY-1...`` secret key."""

    def __init__(self, secret_bytes):
        _require_cryptography()
        if len(secret_bytes) != 32:
            raise AgeKeyError(f"an X25519 secret key is 32 bytes, got {len(secret_bytes)}")
        self.secret_bytes = bytes(secret_bytes)
        self._key = X25519PrivateKey.from_private_bytes(self.secret_bytes)
        self._public = _raw_public(self._key.public_key())

    @classmethod
    def generate(cls):
        """Generate a new random identity."""
        _require_cryptography()
        return cls(os.urandom(32))

    @classmethod
    def from_string(cls, text):
        """Parse an ``AGE-SECRET-KEY-1...`` string."""
        text = text.strip() if isinstance(text, str) else text
        _check_ssh(text)
        try:
            hrp, data = bech32_decode(text)
        except (TypeError, ValueError) as exc:
            # Don't echo secret material into logs.
            raise AgeKeyError(f"invalid age identity: {exc}") from None
        if hrp != X25519_IDENTITY_HRP.lower():
            raise AgeKeyError(_unsupported_key_message(hrp, "identity"))
        if len(data) != 32:
            raise AgeKeyError(f"invalid age identity: the key is {len(data)} bytes, expected 32")
        return cls(data)

    def __str__(self):
        return bech32_encode(X25519_IDENTITY_HRP, self.secret_bytes).upper()

    def __repr__(self):
        return f"X25519Identity(<secret for {self.recipient()}>)"

    def recipient(self):
        """Return the matching :class:`X25519Recipient`."""
        return X25519Recipient(self._public)

    def unwrap(self, stanzas):
        """Return the file key from the first stanza addressed to this identity, or None."""
        for stanza in stanzas:
            if stanza.args[0] != "X25519":
                continue
            if len(stanza.args) != 2:
                raise AgeHeaderError(f"malformed X25519 stanza: expected 1 argument, got {len(stanza.args) - 1}")
            share = _b64decode(stanza.args[1].encode("ascii"), "X25519 stanza share")
            if len(share) != 32:
                raise AgeHeaderError(f"malformed X25519 stanza: the share is {len(share)} bytes, expected 32")
            if len(stanza.body) != 32:
                raise AgeHeaderError(f"malformed X25519 stanza: the body is {len(stanza.body)} bytes, expected 32")
            try:
                shared = self._key.exchange(X25519PublicKey.from_public_bytes(share))
            except ValueError:
                shared = bytes(32)
            if shared == bytes(32):
                raise AgeHeaderError("invalid X25519 stanza: the share is a low-order point")
            key = _hkdf(shared, share + self._public, _X25519_LABEL)
            file_key = _aead_unwrap(key, stanza.body)
            if file_key is not None:
                return file_key
        return None


class ScryptRecipient:
    """Passphrase encryption (``-> scrypt`` stanza). It must be the file's only recipient."""

    def __init__(self, passphrase, work_factor=DEFAULT_WORK_FACTOR):
        _require_cryptography()
        self.passphrase = _to_bytes(passphrase, "passphrase")
        if not self.passphrase:
            raise AgeKeyError("the passphrase is empty")
        # Capped at what age (and this module) accept when decrypting by default.
        if not isinstance(work_factor, int) or isinstance(work_factor, bool) or not 1 <= work_factor <= MAX_WORK_FACTOR:
            raise AgeKeyError(f"scrypt work factor must be an integer from 1 to {MAX_WORK_FACTOR} (log2 N), got {work_factor!r}")
        self.work_factor = work_factor

    def __repr__(self):
        return f"ScryptRecipient(<passphrase>, work_factor={self.work_factor})"

    def wrap(self, file_key):
        """Return the scrypt stanza wrapping ``file_key``."""
        salt = os.urandom(16)
        key = _scrypt(self.passphrase, salt, self.work_factor)
        body = ChaCha20Poly1305(key).encrypt(_ZERO_NONCE, file_key, None)
        return [Stanza(["scrypt", _b64encode(salt).decode("ascii"), str(self.work_factor)], body)]


class ScryptIdentity:
    """Passphrase decryption; rejects work factors above ``max_work_factor``."""

    def __init__(self, passphrase, max_work_factor=MAX_WORK_FACTOR):
        _require_cryptography()
        self.passphrase = _to_bytes(passphrase, "passphrase")
        self.max_work_factor = max_work_factor

    def __repr__(self):
        return "ScryptIdentity(<passphrase>)"

    def unwrap(self, stanzas):
        """Return the file key from the scrypt stanza, or None if the passphrase is wrong."""
        for stanza in stanzas:
            if stanza.args[0] != "scrypt":
                continue
            if len(stanzas) != 1:
                raise AgeHeaderError("an scrypt stanza must be the only stanza in the header")
            if len(stanza.args) != 3:
                raise AgeHeaderError(f"malformed scrypt stanza: expected 2 arguments, got {len(stanza.args) - 1}")
            salt = _b64decode(stanza.args[1].encode("ascii"), "scrypt stanza salt")
            if len(salt) != 16:
                raise AgeHeaderError(f"malformed scrypt stanza: the salt is {len(salt)} bytes, expected 16")
            if not _WORK_FACTOR_RE.match(stanza.args[2]):
                raise AgeHeaderError(f"malformed scrypt stanza: invalid work factor {stanza.args[2][:32]!r}")
            # Bound the length before int(): huge digit strings are slow (and rejected by Python 3.11+).
            work_factor = int(stanza.args[2]) if len(stanza.args[2]) <= 4 else None
            if work_factor is None or work_factor > self.max_work_factor:
                raise AgeHeaderError(f"scrypt work factor {stanza.args[2][:32]} is above the accepted maximum of {self.max_work_factor}")
            if len(stanza.body) != 32:
                raise AgeHeaderError(f"malformed scrypt stanza: the body is {len(stanza.body)} bytes, expected 32")
            file_key = _aead_unwrap(_scrypt(self.passphrase, salt, work_factor), stanza.body)
            if file_key is not None:
                return file_key
        return None


def _scrypt(passphrase, salt, work_factor):
    try:
        return Scrypt(salt=_SCRYPT_LABEL + salt, length=32, n=1 << work_factor, r=8, p=1).derive(passphrase)
    except (MemoryError, ValueError, UnsupportedAlgorithm) as exc:
        raise AgeError(f"scrypt with work factor {work_factor} failed (it needs {1 << (work_factor - 10)} MiB of memory): {exc}") from exc


def _raw_public(key):
    if hasattr(key, "public_bytes_raw"):  # cryptography >= 40
        return key.public_bytes_raw()
    # Imported lazily: the serialization package costs ~20 ms of start-up time.
    from cryptography.hazmat.primitives import serialization  # pylint: disable=import-outside-toplevel
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _unsupported_key_message(hrp, wanted):
    if hrp in ("age1pq", "age-secret-key-pq-"):
        return "post-quantum (ML-KEM hybrid) age keys are not supported by this implementation"
    if hrp.startswith("age1tag"):
        return "tagged (hardware) age recipients are not supported by this implementation"
    if hrp.startswith(("age1", "age-plugin-")):
        return "age plugin keys are not supported by this implementation"
    if wanted == "identity" and hrp == X25519_RECIPIENT_HRP:
        return "an age1... recipient (public key) was given where an identity (AGE-SECRET-KEY-1...) is required"
    if wanted == "recipient" and hrp == X25519_IDENTITY_HRP.lower():
        return "an identity (secret key) was given where a recipient (age1...) is required"
    return f"unrecognized age key type {hrp!r} (expected age1... or AGE-SECRET-KEY-1...)"


def _check_ssh(text):
    if isinstance(text, str) and text.startswith(("ssh-", "ecdsa-sha2-")):
        raise AgeKeyError("SSH keys are not supported as age recipients or identities by this implementation")


def parse_recipient(recipient):
    """Return a recipient object for an ``age1...`` string (objects are passed through)."""
    if isinstance(recipient, str):
        return X25519Recipient.from_string(recipient)
    if hasattr(recipient, "wrap"):
        return recipient
    raise AgeKeyError(f"a recipient must be an age1... string or a recipient object, not {type(recipient).__name__}")


def parse_identity(identity):
    """Return an identity object for an ``AGE-SECRET-KEY-1...`` string (objects are passed through)."""
    if isinstance(identity, str):
        return X25519Identity.from_string(identity)
    if hasattr(identity, "unwrap"):
        return identity
    raise AgeKeyError(f"an identity must be an AGE-SECRET-KEY-1... string or an identity object, not {type(identity).__name__}")


def _key_lines(text):
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            yield line


def parse_identities(text):
    """Parse an identity file as written by ``age-keygen`` (one key per line, ``#`` comments)."""
    identities = [X25519Identity.from_string(line) for line in _key_lines(text)]
    if not identities:
        raise AgeKeyError("no identities found")
    return identities


def parse_recipients(text):
    """Parse a recipients file (one ``age1...`` key per line, ``#`` comments)."""
    recipients = [X25519Recipient.from_string(line) for line in _key_lines(text)]
    if not recipients:
        raise AgeKeyError("no recipients found")
    return recipients


def generate_identity():
    """Generate an X25519 key pair, returned as ``(secret, public)`` strings in age's formats."""
    identity = X25519Identity.generate()
    return str(identity), str(identity.recipient())


def identity_to_recipient(identity):
    """Return the ``age1...`` recipient string of an ``AGE-SECRET-KEY-1...`` identity."""
    if isinstance(identity, str):
        identity = X25519Identity.from_string(identity)
    return str(identity.recipient())


def recipient_fingerprint(recipient):
    """Short stable identifier of a recipient for manifests and logs.

    The first 16 hex characters of the SHA-256 of the canonical (lowercase)
    recipient string. An identity is accepted too and fingerprinted as its
    recipient, so keys can be matched to backups without exposing them.
    """
    if isinstance(recipient, str) and recipient.strip().upper().startswith(X25519_IDENTITY_HRP):
        recipient = identity_to_recipient(recipient)
    elif isinstance(recipient, X25519Identity):
        recipient = recipient.recipient()
    canonical = str(parse_recipient(recipient))
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()[:16]


def _as_list(value):
    if value is None:
        return []
    if isinstance(value, (str, bytes)) or hasattr(value, "wrap") or hasattr(value, "unwrap"):
        return [value]
    return list(value)


def _grease_stanza():
    rng = random.SystemRandom()

    def word(low, high):
        return "".join(rng.choice(_GREASE_CHARS) for dummy in range(rng.randint(low, high)))
    args = [word(1, 8) + "-grease"] + [word(1, 12) for dummy in range(rng.randint(0, 2))]
    return Stanza(args, os.urandom(rng.randint(0, 64)))


# ---------------------------------------------------------------------------
# Header


def encode_header(stanzas, file_key):
    """Serialize a header (version line, stanzas, MAC line)."""
    if not stanzas:
        raise AgeError("an age header needs at least one recipient stanza")
    parts = [VERSION_LINE]
    parts.extend(s.encode() for s in stanzas)
    parts.append(b"---")
    mac_input = b"".join(parts)
    mac = hmac.new(_hkdf(file_key, b"", b"header"), mac_input, hashlib.sha256).digest()
    return mac_input + b" " + _b64encode(mac) + b"\n"


class _Source:
    """Reads from a file object, keeping bytes read past the header for the payload."""

    def __init__(self, fileobj):
        self.fileobj = fileobj
        self.pending = b""
        self.header_size = 0
        self._readinto = getattr(fileobj, "readinto", None)

    def readline(self):
        """Return the next header line, including its LF."""
        while True:
            end = self.pending.find(b"\n")
            if end >= 0:
                line = self.pending[:end + 1]
                self.pending = self.pending[end + 1:]
                self.header_size += len(line)
                if self.header_size > MAX_HEADER_SIZE:
                    break
                return line
            if self.header_size + len(self.pending) > MAX_HEADER_SIZE:
                break
            data = self.fileobj.read(4096)
            if not data:
                if not self.header_size and not self.pending:
                    raise AgeHeaderError("the file is empty")
                raise AgeHeaderError("the file ends inside the header")
            self.pending += data
        raise AgeHeaderError(f"the header is larger than {MAX_HEADER_SIZE} bytes")

    def read(self, size):
        """Read up to ``size`` bytes, fewer only at end of file."""
        parts = []
        have = 0
        if self.pending:
            parts.append(self.pending[:size])
            self.pending = self.pending[size:]
            have = len(parts[0])
        while have < size:
            data = self.fileobj.read(size - have)
            if not data:
                break
            parts.append(data)
            have += len(data)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def readinto(self, view):
        """Fill the memoryview ``view`` as far as possible; return the count (short only at EOF)."""
        size = len(view)
        have = 0
        if self.pending:
            have = min(size, len(self.pending))
            view[:have] = self.pending[:have]
            self.pending = self.pending[have:]
        while have < size and self._readinto is not None:
            try:
                count = self._readinto(view[have:])
            except NotImplementedError:  # an io.RawIOBase subclass that only implements read()
                self._readinto = None
                break
            if not count:
                return have
            have += count
        while have < size:
            data = self.fileobj.read(size - have)
            if not data:
                break
            view[have:have + len(data)] = data
            have += len(data)
        return have


def _parse_stanza_line(line):
    if not line.endswith(b"\n"):
        raise AgeHeaderError("header line is not terminated")
    raw = line[:-1]
    args = raw[3:].split(b" ")
    for arg in args:
        if not arg:
            raise AgeHeaderError("stanza has an empty argument (stray or doubled space)")
        if any(c < 33 or c > 126 for c in bytearray(arg)):
            raise AgeHeaderError("stanza argument contains a character outside printable ASCII")
    return [arg.decode("ascii") for arg in args]


def read_header(source):
    """Parse a header from a _Source; return ``(stanzas, mac_input, mac)``."""
    line = source.readline()
    if line != VERSION_LINE:
        if line.startswith(_ARMOR_BEGIN):
            raise AgeHeaderError("the file is ASCII-armored (PEM); armor is not supported, decode it with 'age -d' first")
        if line.startswith(_VERSION_PREFIX):
            if line.endswith(b"\r\n"):
                raise AgeHeaderError("the header uses CRLF line endings; age headers must use LF")
            version = line[len(_VERSION_PREFIX):-1].decode("ascii", "replace")
            raise AgeHeaderError(f"unsupported age format version {version!r}")
        raise AgeHeaderError("not an age file (the first line is not the age-encryption.org/v1 version line)")
    lines = [line]
    stanzas = []
    while True:
        line = source.readline()
        if line.startswith(b"-> "):
            lines.append(line)
            args = _parse_stanza_line(line)
            body = []
            while True:
                line = source.readline()
                lines.append(line)
                raw = line[:-1]
                if len(raw) > 64:
                    raise AgeHeaderError("stanza body line is longer than 64 columns")
                body.append(_b64decode(raw, "stanza body"))
                if len(raw) < 64:
                    break
            stanzas.append(Stanza(args, b"".join(body)))
        elif line.startswith(b"---"):
            if not line.startswith(b"--- ") or len(line) != 4 + 43 + 1:
                raise AgeHeaderError("malformed header MAC line")
            mac = _b64decode(line[4:-1], "header MAC")
            if not stanzas:
                raise AgeHeaderError("the header has no recipient stanzas")
            lines.append(b"---")
            return stanzas, b"".join(lines), mac
        else:
            raise AgeHeaderError("unexpected line in the header (expected a '-> ' stanza or the '---' MAC line)")


def unwrap_file_key(stanzas, identities):
    """Find the file key with the first identity that matches a stanza."""
    types = [s.args[0] for s in stanzas]
    if "scrypt" in types and len(stanzas) != 1:
        raise AgeHeaderError("an scrypt (passphrase) stanza must be the only stanza in the header")
    for identity in identities:
        file_key = identity.unwrap(stanzas)
        if file_key is not None:
            if len(file_key) != FILE_KEY_SIZE:
                raise AgeHeaderError(f"unwrapped file key is {len(file_key)} bytes, expected {FILE_KEY_SIZE}")
            return file_key
    if types == ["scrypt"] and not any(isinstance(i, ScryptIdentity) for i in identities):
        raise NoIdentityMatchError("the file is passphrase-encrypted (scrypt) but no passphrase was given")
    if types == ["scrypt"]:
        raise NoIdentityMatchError("incorrect passphrase")
    raise NoIdentityMatchError(
        f"no identity matched any of the file's recipients (tried {len(identities)} identit{'y' if len(identities) == 1 else 'ies'}"
        f" against {len(stanzas)} stanza(s) of type {', '.join(sorted(set(types)))})")


# ---------------------------------------------------------------------------
# Streaming encryption and decryption


# Note: pylint takes io.IOBase.closed for a method, hence the using-constant-test
# disables on "if self.closed:" below.


class Encryptor(io.RawIOBase):
    """Writable file object that encrypts to ``fileobj`` as an age file.

    ``recipients`` is an ``age1...`` string, a recipient object or a list of
    them; ``passphrase`` adds an scrypt recipient (which must then be the only
    one). The header is written immediately. :meth:`close` writes the final
    chunk; it does not close ``fileobj`` unless ``close_fileobj`` is true.

    Sealed chunks are passed to ``fileobj.write`` as memoryviews of a reused
    buffer; as the io contract says, ``write`` must not keep a reference.

    As a context manager, leaving the block with an exception calls
    :meth:`abort` instead: the output then has no final chunk and any age
    implementation rejects it as truncated. Garbage collection of an
    unclosed Encryptor aborts too, so an interrupted producer can never leave
    a valid-looking but incomplete file.
    """

    def __init__(self, fileobj, recipients=None, *, passphrase=None, work_factor=DEFAULT_WORK_FACTOR,
                 grease=True, close_fileobj=False):
        super().__init__()
        self._finished = True  # until the header is written; see __del__
        _require_cryptography()
        recips = [parse_recipient(r) for r in _as_list(recipients)]
        if passphrase is not None:
            recips.append(ScryptRecipient(passphrase, work_factor))
        if not recips:
            raise AgeKeyError("at least one recipient or a passphrase is required")
        scrypt = any(isinstance(r, ScryptRecipient) for r in recips)
        if scrypt and len(recips) > 1:
            raise AgeKeyError("a passphrase (scrypt) recipient can't be combined with other recipients")
        file_key = os.urandom(FILE_KEY_SIZE)
        stanzas = []
        for recipient in recips:
            stanzas.extend(recipient.wrap(file_key))
        if grease and not scrypt:
            stanzas.insert(random.SystemRandom().randint(0, len(stanzas)), _grease_stanza())
        nonce = os.urandom(NONCE_SIZE)
        self._fileobj = fileobj
        self._close_fileobj = close_fileobj
        aead = ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload"))
        self._seal_chunk = _chunk_function(aead.encrypt)
        # cryptography >= 45 can encrypt into a reused buffer, saving an allocation per chunk.
        self._seal_into = getattr(aead, "encrypt_into", None)
        self._out_view = memoryview(bytearray(ENCRYPTED_CHUNK_SIZE))
        self._counter = 0
        self._view = memoryview(bytearray(CHUNK_SIZE))
        self._write_fully = _write_fully(fileobj)
        self._fill = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self._write_all(encode_header(stanzas, file_key) + nonce)
        self._finished = False

    def writable(self):
        return True

    def _write_all(self, data):
        self._write_fully(data)
        self.bytes_out += len(data)

    def _seal(self, data, last):
        nonce = _CHUNK_NONCE.pack(self._counter, last)
        if self._seal_into is None:
            self._write_all(self._seal_chunk(nonce, data, None))
        else:
            out = self._out_view[:len(data) + TAG_SIZE]
            self._seal_into(nonce, data, None, out)
            self._write_all(out)
        self._counter += 1

    def write(self, data):
        if self.closed or self._finished:
            raise ValueError("write to a closed age Encryptor")
        view = memoryview(data)
        if view.ndim != 1 or view.itemsize != 1:
            view = view.cast("B")
        size = len(view)
        if not size:
            return 0
        try:
            fill = self._fill
            if fill:
                room = CHUNK_SIZE - fill
                if size <= room:
                    self._view[fill:fill + size] = view
                    self._fill = fill + size
                    self.bytes_in += size
                    return size
                self._view[fill:] = view[:room]
                view = view[room:]
                self._seal(self._view, False)
            # A chunk is only sealed once more data follows it: the final chunk
            # may be full, and it is flagged when close() seals it.
            while len(view) > CHUNK_SIZE:
                self._seal(view[:CHUNK_SIZE], False)
                view = view[CHUNK_SIZE:]
            self._fill = len(view)
            self._view[:self._fill] = view
        except BaseException:
            self._finished = True  # broken stream: never write a final chunk after a gap
            raise
        self.bytes_in += size
        return size

    def flush(self):
        if not self.closed and not self._finished and hasattr(self._fileobj, "flush"):
            self._fileobj.flush()

    def close(self):
        """Write the final chunk and flush; a second call does nothing."""
        if self.closed:  # pylint: disable=using-constant-test
            return
        try:
            if not self._finished:
                self._finished = True
                self._seal(self._view[:self._fill], True)
                self._fill = 0
                if hasattr(self._fileobj, "flush"):
                    self._fileobj.flush()
        finally:
            self._release()

    def abort(self):
        """Close without writing the final chunk, leaving a file every decryptor rejects."""
        if not self.closed:
            self._finished = True
            self._release()

    def _release(self):
        try:
            if self._close_fileobj:
                self._fileobj.close()
        finally:
            self._view.release()
            self._out_view.release()
            super().close()

    def __exit__(self, exc_type, exc_value, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __del__(self):
        # Deliberately not io.IOBase's finalizer (which calls close() and would
        # turn an interrupted stream into a valid, truncated file).
        if not getattr(self, "_finished", True):
            self._finished = True


class Decryptor(io.RawIOBase):
    """Readable file object decrypting the age file read from ``fileobj``.

    ``identities`` is an ``AGE-SECRET-KEY-1...`` string, an identity object or a
    list of them; ``passphrase`` adds an scrypt identity. The header is parsed
    and authenticated in the constructor (raising :class:`AgeHeaderError`,
    :class:`NoIdentityMatchError` or :class:`AgeHeaderMacError`); payload errors
    raise :class:`AgePayloadError` from :meth:`read`. ``stanzas`` lists the
    header's recipient stanzas.
    """

    def __init__(self, fileobj, identities=None, *, passphrase=None, max_work_factor=MAX_WORK_FACTOR,
                 close_fileobj=False):
        super().__init__()
        self._fileobj = fileobj
        self._close_fileobj = close_fileobj
        self._raw_views = []
        try:
            _require_cryptography()
            idents = [parse_identity(i) for i in _as_list(identities)]
            if passphrase is not None:
                idents.append(ScryptIdentity(passphrase, max_work_factor))
            if not idents:
                raise AgeKeyError("at least one identity or a passphrase is required")
            self._source = _Source(fileobj)
            self.stanzas, mac_input, mac = read_header(self._source)
            file_key = unwrap_file_key(self.stanzas, idents)
            expected = hmac.new(_hkdf(file_key, b"", b"header"), mac_input, hashlib.sha256).digest()
            if not hmac.compare_digest(expected, mac):
                raise AgeHeaderMacError("header MAC mismatch: the header was modified or corrupted")
            nonce = self._source.read(NONCE_SIZE)
            if len(nonce) != NONCE_SIZE:
                raise AgeHeaderError("the file ends before the payload nonce")
        except BaseException:
            self.close()
            raise
        self.header_size = self._source.header_size + NONCE_SIZE
        aead = ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload"))
        self._open_chunk = _chunk_function(aead.decrypt)
        self._open_into = getattr(aead, "decrypt_into", None)
        self._counter = 0
        self._eof = False
        self._error = None
        # Two raw chunk buffers: the next one is read ahead to know whether the
        # current chunk is the last (a final chunk may be full).
        self._raw_views = [memoryview(bytearray(ENCRYPTED_CHUNK_SIZE)) for dummy in range(2)]
        self._ahead = None
        self._plain = b""
        self._pos = 0
        self.bytes_out = 0

    def readable(self):
        return True

    def _next_chunk(self, target=None):
        """Decrypt the next chunk; b'' (or 0) after the final chunk.

        Without ``target`` the plaintext is returned as bytes; otherwise it is
        decrypted into the memoryview ``target`` (at least CHUNK_SIZE bytes) and
        its length is returned.
        """
        if self.closed:  # pylint: disable=using-constant-test
            raise ValueError("read from a closed age Decryptor")
        if self._error is not None:
            raise self._error
        if self._eof:
            return b"" if target is None else 0
        try:
            return self._open_next(target)
        except AgeError as exc:
            self._error = exc  # the stream can't be resumed after a failure
            raise

    def _open_next(self, target):
        index = self._counter
        slot = index & 1
        if self._ahead is None:
            length = self._source.readinto(self._raw_views[slot])
        else:
            length = self._ahead
        if length < TAG_SIZE:
            if length == 0 and index == 0:
                raise AgeTruncatedError("the payload has no chunks: the file is truncated after the header")
            raise AgeTruncatedError(f"payload chunk {index} is shorter than its authentication tag: the file is truncated")
        if length == ENCRYPTED_CHUNK_SIZE:
            self._ahead = self._source.readinto(self._raw_views[slot ^ 1])
            last = not self._ahead
        else:
            self._ahead = 0
            last = True
        data = self._raw_views[slot][:length]
        nonce = _CHUNK_NONCE.pack(index, last)
        try:
            if target is None:
                plain = self._open_chunk(nonce, data, None)
                size = len(plain)
            else:
                size = plain = length - TAG_SIZE
                self._open_into(nonce, data, None, target[:size])
        except InvalidTag:
            if target is not None:
                target[:size] = bytes(size)  # don't leave unauthenticated plaintext behind
            self._raise_chunk_error(index, data, last)
        if last:
            if not size and index:
                raise AgePayloadError(f"the final chunk {index} is empty, which only an empty payload may have")
            self._eof = True
        self._counter = index + 1
        return plain

    def _raise_chunk_error(self, index, data, last):
        try:
            self._open_chunk(_CHUNK_NONCE.pack(index, not last), data, None)
        except InvalidTag:
            raise AgePayloadError(f"payload authentication failed at chunk {index}: the file is corrupted or truncated") from None
        if last:
            raise AgeTruncatedError(f"the payload ends after chunk {index} without a final chunk: the file is truncated")
        raise AgePayloadError(f"unexpected data after the final chunk {index}: the file is corrupted")

    def read(self, size=-1):
        if self.closed:  # pylint: disable=using-constant-test
            raise ValueError("read from a closed age Decryptor")
        if size is None or size < 0:
            return self.readall()
        if not size:
            return b""
        plain = self._plain
        pos = self._pos
        if pos >= len(plain):
            plain = self._plain = self._next_chunk()
            pos = 0
            if not plain:
                return b""
        if not pos and size >= len(plain):
            self._pos = len(plain)
            self.bytes_out += len(plain)
            return plain
        end = min(pos + size, len(plain))
        self._pos = end
        self.bytes_out += end - pos
        return plain[pos:end]

    def readinto(self, buffer):
        with memoryview(buffer) as view, view.cast("B") as target:
            if self._pos >= len(self._plain) and len(target) >= CHUNK_SIZE and self._open_into is not None:
                # Fast path: decrypt a whole chunk straight into the caller's buffer.
                size = self._next_chunk(target)
                self.bytes_out += size
                return size
            data = self.read(len(target))
            target[:len(data)] = data
        return len(data)

    def readall(self):
        parts = []
        if self._pos < len(self._plain):
            parts.append(self._plain[self._pos:])
            self._pos = len(self._plain)
        while True:
            plain = self._next_chunk()
            if not plain:
                break
            parts.append(plain)
        data = b"".join(parts)
        self.bytes_out += len(data)
        return data

    def finish(self):
        """Read and authenticate the rest of the payload; return how many bytes were discarded.

        Call this when the consumer may stop before the end (for example
        ``tarfile``), to detect truncation or appended data.
        """
        skipped = len(self._plain) - self._pos
        self._pos = len(self._plain)
        while True:
            plain = self._next_chunk()
            if not plain:
                return skipped
            skipped += len(plain)

    def close(self):
        if self.closed:  # pylint: disable=using-constant-test
            return
        try:
            if self._close_fileobj:
                self._fileobj.close()
        finally:
            for view in self._raw_views:
                view.release()
            super().close()


# ---------------------------------------------------------------------------
# Convenience functions


def encrypt_bytes(data, recipients=None, *, passphrase=None, work_factor=DEFAULT_WORK_FACTOR, grease=True):
    """Encrypt ``data`` and return the age file as bytes."""
    out = io.BytesIO()
    with Encryptor(out, recipients, passphrase=passphrase, work_factor=work_factor, grease=grease) as enc:
        enc.write(data)
    return out.getvalue()


def decrypt_bytes(data, identities=None, *, passphrase=None, max_work_factor=MAX_WORK_FACTOR):
    """Decrypt an age file given as bytes and return the plaintext."""
    with Decryptor(io.BytesIO(data), identities, passphrase=passphrase, max_work_factor=max_work_factor) as dec:
        return dec.readall()


def _copy_into(src, sink, size):
    """Copy ``src`` to the callable ``sink`` through one reused buffer."""
    buf = bytearray(size)
    # readinto1 (buffered readers) returns what is available instead of blocking
    # until the buffer is full: from a pipe that is several times fewer context switches.
    readinto = getattr(src, "readinto1", None) or getattr(src, "readinto", None)
    with memoryview(buf) as view:
        while readinto is not None:
            try:
                count = readinto(buf)
            except NotImplementedError:  # an io.RawIOBase subclass that only implements read()
                break
            if not count:
                return
            sink(view[:count])
        while True:
            data = src.read(size)
            if not data:
                return
            sink(data)


def _write_fully(fileobj):
    """Return a callable writing all of its argument to ``fileobj`` (raw files may write less)."""
    def write(data):
        done = fileobj.write(data)
        if done is not None and done < len(data):
            with memoryview(data) as view:
                while done < len(data):
                    count = fileobj.write(view[done:])
                    if count is None:
                        raise AgeError("the output file object would block")
                    done += count
    return write


def enlarge_pipe_buffer(fileobj, size=PIPE_BUFFER_SIZE):
    """Best effort: grow the kernel buffer of a pipe (Linux) to ``size`` bytes.

    With the default 64 KiB, a process streaming through a pipe is woken up for
    every few chunks; a 1 MiB buffer cuts context switches by an order of
    magnitude. Returns True if ``fileobj`` is a pipe whose buffer is now at
    least ``size``; anything else (not a pipe, not Linux, over the per-user
    limit) leaves it alone and returns False.
    """
    if fcntl is None or not sys.platform.startswith("linux"):
        return False
    try:
        fd = fileobj.fileno()
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return False
        if fcntl.fcntl(fd, _F_GETPIPE_SZ) < size:
            fcntl.fcntl(fd, _F_SETPIPE_SZ, size)
        return True
    except (AttributeError, OSError, ValueError):
        return False


def encrypt_stream(src, dst, recipients=None, *, passphrase=None, work_factor=DEFAULT_WORK_FACTOR, grease=True):
    """Encrypt the readable file object ``src`` into ``dst``; return the plaintext size.

    Pipes given as ``src`` or ``dst`` get a larger buffer (:func:`enlarge_pipe_buffer`).
    """
    enlarge_pipe_buffer(src)
    enlarge_pipe_buffer(dst)
    with Encryptor(dst, recipients, passphrase=passphrase, work_factor=work_factor, grease=grease) as enc:
        _copy_into(src, enc.write, 4 * CHUNK_SIZE)
    return enc.bytes_in


def decrypt_stream(src, dst, identities=None, *, passphrase=None, max_work_factor=MAX_WORK_FACTOR):
    """Decrypt the age file read from ``src`` into ``dst``; return the plaintext size.

    The whole payload is authenticated: truncation or trailing data raise.
    Pipes given as ``src`` or ``dst`` get a larger buffer (:func:`enlarge_pipe_buffer`).
    """
    enlarge_pipe_buffer(src)
    enlarge_pipe_buffer(dst)
    with Decryptor(src, identities, passphrase=passphrase, max_work_factor=max_work_factor) as dec:
        _copy_into(dec, _write_fully(dst), CHUNK_SIZE)
        return dec.bytes_out
