# Copyright (c) 2026, prodready.vps contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Tests for the age v1 implementation in plugins/module_utils/age.py."""

import ast
import fcntl
import hashlib
import io
import os
import pty
import random
import select
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
import tracemalloc
import zlib
from pathlib import Path

import pytest
from ansible_collections.prodready.vps.plugins.module_utils import age
from hypothesis import given, settings
from hypothesis import strategies as st

REPO_ROOT = Path(__file__).resolve().parents[4]
TESTDATA = Path(os.environ.get("PRODREADY_TESTDATA") or REPO_ROOT.parent / "shared" / "testdata")
AGE_VECTORS = TESTDATA / "age"
AGE_BIN = shutil.which("age")
AGE_KEYGEN_BIN = shutil.which("age-keygen")
CHUNK = age.CHUNK_SIZE

# Spec example key pair (c2sp.org/age, "The X25519 recipient type").
SPEC_IDENTITY = "AGE-SECRET-KEY-1GFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPQ4EGAEX"
SPEC_RECIPIENT = "age1zvkyg2lqzraa2lnjvqej32nkuu0ues2s82hzrye869xeexvn73equnujwj"

EXPECTED_ERRORS = {
    "header failure": age.AgeHeaderError,
    "HMAC failure": age.AgeHeaderMacError,
    "no match": age.NoIdentityMatchError,
    "payload failure": age.AgePayloadError,
    "armor failure": age.AgeError,
}


def payload_of(size, seed=0):
    """Deterministic, cheap, non-repeating test data."""
    rnd = random.Random(seed)
    return rnd.getrandbits(size * 8).to_bytes(size, "little") if size else b""


@pytest.fixture(scope="module")
def keypair():
    return age.generate_identity()


# ---------------------------------------------------------------------------
# Conformance vectors (C2SP CCTV age testkit)


def _vector_names():
    if not AGE_VECTORS.is_dir():
        return [pytest.param("<missing>", marks=pytest.mark.skip(
            reason=f"age test vectors not found at {AGE_VECTORS} (set PRODREADY_TESTDATA to the testdata directory)"))]
    return sorted(p.name for p in AGE_VECTORS.iterdir() if p.is_file() and p.name != "README.md")


def _load_vector(name):
    raw = (AGE_VECTORS / name).read_bytes()
    head, sep, body = raw.partition(b"\n\n")
    assert sep, f"{name}: no blank line after the vector header"
    meta = {}
    for line in head.decode("utf-8").splitlines():
        key, sep, value = line.partition(": ")
        assert sep, f"{name}: malformed vector header line {line!r}"
        meta.setdefault(key, []).append(value)
    if meta.get("compressed") == ["zlib"]:
        body = zlib.decompress(body)
    return meta, body


def _skip_reason(name, meta):
    if name.startswith("armor") or meta.get("armored") == ["yes"]:
        return "ASCII armor is out of scope"
    if name.startswith("hybrid") or any(i.startswith("AGE-SECRET-KEY-PQ-") for i in meta.get("identity", [])):
        return "post-quantum (hybrid) recipients are out of scope"
    return None


@pytest.mark.parametrize("name", _vector_names())
def test_conformance_vector(name):
    meta, body = _load_vector(name)
    reason = _skip_reason(name, meta)
    if reason:
        pytest.skip(reason)
    identities = [age.parse_identity(i) for i in meta.get("identity", [])]
    identities += [age.ScryptIdentity(p) for p in meta.get("passphrase", [])]
    if not identities:  # e.g. "empty": any identity will do, the header is what fails
        identities = [age.X25519Identity.generate()]
    expect = meta["expect"][0]
    if expect == "success":
        plaintext = age.decrypt_bytes(body, identities)
        assert hashlib.sha256(plaintext).hexdigest() == meta["payload"][0]
        # The streaming reader with awkward read sizes must agree.
        with age.Decryptor(io.BytesIO(body), identities) as dec:
            parts = []
            while True:
                part = dec.read(1000)
                if not part:
                    break
                parts.append(part)
        assert b"".join(parts) == plaintext
        return
    assert expect in EXPECTED_ERRORS, f"unknown expectation {expect!r}"
    with pytest.raises(EXPECTED_ERRORS[expect]):
        age.decrypt_bytes(body, identities)


def test_conformance_vector_count():
    if not AGE_VECTORS.is_dir():
        pytest.skip(f"age test vectors not found at {AGE_VECTORS}")
    names = _vector_names()
    runnable = [n for n in names if _skip_reason(n, _load_vector(n)[0]) is None]
    assert len(runnable) >= 90, "expected the full C2SP age testkit"


# ---------------------------------------------------------------------------
# Keys and encodings


def test_spec_identity_to_recipient():
    assert age.identity_to_recipient(SPEC_IDENTITY) == SPEC_RECIPIENT
    assert str(age.X25519Identity.from_string(SPEC_IDENTITY)) == SPEC_IDENTITY
    assert str(age.X25519Recipient.from_string(SPEC_RECIPIENT)) == SPEC_RECIPIENT


def test_generate_identity_formats(keypair):
    secret, public = keypair
    assert secret.startswith("AGE-SECRET-KEY-1") and secret == secret.upper() and len(secret) == 74
    assert public.startswith("age1") and public == public.lower() and len(public) == 62
    assert age.identity_to_recipient(secret) == public
    assert age.generate_identity()[0] != secret


def test_bech32_roundtrip_and_errors():
    data = bytes(range(32))
    encoded = age.bech32_encode("age", data)
    assert age.bech32_decode(encoded) == ("age", data)
    assert age.bech32_decode(encoded.upper()) == ("age", data)
    with pytest.raises(ValueError, match="mixes"):
        age.bech32_decode(encoded[:10].upper() + encoded[10:])
    with pytest.raises(ValueError, match="checksum"):
        age.bech32_decode(encoded[:-1] + ("q" if encoded[-1] != "q" else "p"))


@pytest.mark.parametrize("text, message", [
    ("age1pq1x34nzsvr0rxjsgdn8zgyhfe8j7ceq5r9rdelkjuh3y235jzxshfg87pzf5zrqtzdxz95paef6caq5aapdmwjjqpjfdyxn", "post-quantum|invalid"),
    ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHkN", "SSH"),
    ("age1zvkyg2lqzraa2lnjvqej32nkuu0ues2s82hzrye869xeexvn73equnujwk", "checksum"),
    ("", "invalid"),
])
def test_bad_recipients(text, message):
    with pytest.raises(age.AgeKeyError, match=message):
        age.X25519Recipient.from_string(text)


def test_unsupported_key_messages():
    pq = age.bech32_encode("age1pq", b"\x01" * 40)
    with pytest.raises(age.AgeKeyError, match="post-quantum"):
        age.parse_recipient(pq)
    with pytest.raises(age.AgeKeyError, match="post-quantum"):
        age.parse_identity(age.bech32_encode("age-secret-key-pq-", b"\x01" * 32).upper())
    with pytest.raises(age.AgeKeyError, match="recipient .public key. was given where an identity"):
        age.parse_identity(SPEC_RECIPIENT)
    with pytest.raises(age.AgeKeyError, match="identity .secret key. was given where a recipient"):
        age.parse_recipient(SPEC_IDENTITY)
    with pytest.raises(age.AgeKeyError, match="plugin"):
        age.parse_recipient(age.bech32_encode("age1yubikey", b"\x02" * 33))
    with pytest.raises(age.AgeKeyError, match="SSH"):
        age.parse_recipient("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHkN user@host")


def test_identity_errors_do_not_leak_secret():
    bad = SPEC_IDENTITY[:-1] + "Q"
    with pytest.raises(age.AgeKeyError) as excinfo:
        age.parse_identity(bad)
    assert bad not in str(excinfo.value)
    assert SPEC_IDENTITY not in repr(age.X25519Identity.from_string(SPEC_IDENTITY))


def test_parse_identity_and_recipient_files(keypair):
    secret, public = keypair
    text = f"# created: now\n# public key: {public}\n{secret}\n\n"
    (identity,) = age.parse_identities(text)
    assert str(identity.recipient()) == public
    assert [str(r) for r in age.parse_recipients(f"# team\n{public}\n{SPEC_RECIPIENT}\n")] == [public, SPEC_RECIPIENT]
    with pytest.raises(age.AgeKeyError):
        age.parse_identities("# nothing\n")


def test_recipient_fingerprint(keypair):
    secret, public = keypair
    fingerprint = age.recipient_fingerprint(public)
    assert len(fingerprint) == 16 and int(fingerprint, 16) >= 0
    assert fingerprint == hashlib.sha256(public.encode()).hexdigest()[:16]
    assert age.recipient_fingerprint(public.upper()) == fingerprint
    assert age.recipient_fingerprint(secret) == fingerprint
    assert age.recipient_fingerprint(age.X25519Recipient.from_string(public)) == fingerprint
    assert age.recipient_fingerprint(SPEC_RECIPIENT) != fingerprint


# ---------------------------------------------------------------------------
# Round trips


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 3 * CHUNK + 12345])
def test_roundtrip_sizes(keypair, size):
    secret, public = keypair
    data = payload_of(size, size)
    encrypted = age.encrypt_bytes(data, public)
    chunks = max(1, -(-size // CHUNK))
    header = encrypted.index(b"\n---") + len(b"\n--- ") + 43 + 1
    assert len(encrypted) == header + age.NONCE_SIZE + size + chunks * age.TAG_SIZE
    assert age.decrypt_bytes(encrypted, secret) == data


def test_roundtrip_several_recipients():
    pairs = [age.generate_identity() for dummy in range(3)]
    data = payload_of(100000, 3)
    encrypted = age.encrypt_bytes(data, [pair[1] for pair in pairs])
    for pair in pairs:
        assert age.decrypt_bytes(encrypted, pair[0]) == data
    other = age.generate_identity()[0]
    assert age.decrypt_bytes(encrypted, [other, pairs[2][0]]) == data


def test_roundtrip_passphrase():
    data = payload_of(70000, 4)
    encrypted = age.encrypt_bytes(data, passphrase="correct horse battery staple", work_factor=10)
    assert b"\n-> scrypt " in encrypted and b"-grease" not in encrypted
    assert age.decrypt_bytes(encrypted, passphrase="correct horse battery staple") == data
    assert age.decrypt_bytes(encrypted, passphrase=b"correct horse battery staple") == data
    with pytest.raises(age.NoIdentityMatchError, match="passphrase"):
        age.decrypt_bytes(encrypted, passphrase="wrong")
    with pytest.raises(age.NoIdentityMatchError, match="no passphrase"):
        age.decrypt_bytes(encrypted, age.generate_identity()[0])
    with pytest.raises(age.AgeHeaderError, match="work factor"):
        age.decrypt_bytes(encrypted, passphrase="correct horse battery staple", max_work_factor=9)


def test_work_factor_limits():
    assert age.DEFAULT_WORK_FACTOR == 18 and age.MAX_WORK_FACTOR == 22
    assert age.ScryptRecipient("pw").work_factor == 18
    for bad in (0, 23, True, "18", 18.0):
        with pytest.raises(age.AgeKeyError, match="work factor"):
            age.ScryptRecipient("pw", bad)
    with pytest.raises(age.AgeKeyError, match="empty"):
        age.ScryptRecipient("")


def test_passphrase_cannot_be_mixed(keypair):
    with pytest.raises(age.AgeKeyError, match="combined"):
        age.encrypt_bytes(b"x", keypair[1], passphrase="pw", work_factor=10)
    with pytest.raises(age.AgeKeyError, match="at least one"):
        age.encrypt_bytes(b"x")
    with pytest.raises(age.AgeKeyError, match="at least one"):
        age.Decryptor(io.BytesIO(b""), [])


def test_grease(keypair):
    with_grease = age.encrypt_bytes(b"data", keypair[1])
    without = age.encrypt_bytes(b"data", keypair[1], grease=False)
    assert b"-grease" in with_grease and b"-grease" not in without
    with age.Decryptor(io.BytesIO(with_grease), keypair[0]) as dec:
        types = [s.type for s in dec.stanzas]
        assert len(types) == 2 and "X25519" in types and any(t.endswith("-grease") for t in types)
        assert dec.read() == b"data"


def test_streaming_small_writes_and_reads(keypair):
    secret, public = keypair
    data = payload_of(3 * CHUNK + 999, 5)
    out = io.BytesIO()
    rnd = random.Random(7)
    with age.Encryptor(out, public) as enc:
        pos = 0
        while pos < len(data):
            step = rnd.choice([1, 7, 512, 4096, CHUNK - 1, CHUNK, CHUNK + 1])
            assert enc.write(memoryview(data)[pos:pos + step]) == len(data[pos:pos + step])
            pos += step
    assert enc.bytes_in == len(data)
    assert enc.bytes_out == len(out.getvalue())
    dec = age.Decryptor(io.BytesIO(out.getvalue()), secret)
    got = bytearray()
    while True:
        buf = bytearray(rnd.choice([1, 100, 5000, CHUNK + 3]))
        count = dec.readinto(buf)
        if not count:
            break
        got += buf[:count]
    assert bytes(got) == data
    assert dec.read() == b"" and dec.read(10) == b""


def test_byte_at_a_time_writes(keypair):
    secret, public = keypair
    data = payload_of(CHUNK + 10, 6)
    out = io.BytesIO()
    with age.Encryptor(out, public) as enc:
        for i in range(len(data)):
            enc.write(data[i:i + 1])
    assert age.decrypt_bytes(out.getvalue(), secret) == data


def test_stream_helpers(keypair, tmp_path):
    secret, public = keypair
    data = payload_of(2 * CHUNK + 5, 8)
    src = tmp_path / "plain"
    src.write_bytes(data)
    with src.open("rb") as fin, (tmp_path / "enc").open("wb") as fout:
        assert age.encrypt_stream(fin, fout, public) == len(data)
    with (tmp_path / "enc").open("rb") as fin, (tmp_path / "dec").open("wb") as fout:
        assert age.decrypt_stream(fin, fout, secret) == len(data)
    assert (tmp_path / "dec").read_bytes() == data


def test_tarfile_stream_roundtrip(keypair):
    secret, public = keypair
    files = {"a.txt": b"hello\n", "big.bin": payload_of(200000, 9), "empty": b""}
    out = io.BytesIO()
    with age.Encryptor(out, public) as enc, tarfile.open(fileobj=enc, mode="w|") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    dec = age.Decryptor(io.BytesIO(out.getvalue()), secret)
    with tarfile.open(fileobj=dec, mode="r|") as tar:
        got = {m.name: tar.extractfile(m).read() for m in tar}
    dec.finish()  # authenticates whatever tarfile left unread (padding records)
    assert dec.read() == b""
    dec.close()
    assert got == files


def test_without_into_apis(keypair):
    """cryptography < 45 has no encrypt_into / decrypt_into: the fallback paths must agree."""
    data = payload_of(3 * CHUNK + 5, 15)
    out = io.BytesIO()
    with age.Encryptor(out, keypair[1]) as enc:
        enc._seal_into = None  # pylint: disable=protected-access
        enc.write(data)
    dec = age.Decryptor(io.BytesIO(out.getvalue()), keypair[0])
    dec._open_into = None  # pylint: disable=protected-access
    sink = io.BytesIO()
    age._copy_into(dec, sink.write, CHUNK)  # pylint: disable=protected-access
    assert sink.getvalue() == data


def test_readinto_fast_path_clears_buffer_on_failure(keypair, sample):
    data, encrypted = sample
    tampered = bytearray(encrypted)
    tampered[-5] ^= 0x01
    dec = age.Decryptor(io.BytesIO(bytes(tampered)), keypair[0])
    buf = bytearray(CHUNK)
    assert dec.readinto(buf) == CHUNK and bytes(buf) == data[:CHUNK]
    assert dec.readinto(buf) == CHUNK
    buf[:] = b"\xff" * CHUNK
    with pytest.raises(age.AgePayloadError, match="chunk 2"):
        dec.readinto(buf)
    if dec._open_into is not None:  # pylint: disable=protected-access
        # decrypt_into wrote into buf before the tag failed: it must be wiped.
        assert buf[:100] == bytes(100)  # no unauthenticated plaintext left behind
    else:
        # Without decrypt_into (cryptography 38 on Debian 12) buf is never written.
        assert buf == b"\xff" * CHUNK


def test_closed_decryptor(keypair, sample):
    dec = age.Decryptor(io.BytesIO(sample[1]), keypair[0])
    dec.close()
    for call in (lambda: dec.read(1), dec.readall, dec.finish, lambda: dec.readinto(bytearray(CHUNK))):
        with pytest.raises(ValueError):
            call()


def test_failed_decryptor_closes_owned_fileobj(keypair):
    src = io.BytesIO(b"not age\n")
    with pytest.raises(age.AgeHeaderError):
        age.Decryptor(src, keypair[0], close_fileobj=True)
    assert src.closed


def test_enlarge_pipe_buffer():
    assert age.enlarge_pipe_buffer(io.BytesIO()) is False
    read_fd, write_fd = os.pipe()
    with os.fdopen(read_fd, "rb") as reader, os.fdopen(write_fd, "wb") as writer:
        enlarged = age.enlarge_pipe_buffer(reader)
        if sys.platform.startswith("linux"):
            assert enlarged
            assert fcntl.fcntl(reader.fileno(), 1032) >= age.PIPE_BUFFER_SIZE  # F_GETPIPE_SZ
        assert writer.fileno() >= 0


def test_stream_through_pipes(keypair):
    """encrypt_stream / decrypt_stream from buffered pipe readers (readinto1 path)."""
    data = payload_of(5 * CHUNK + 77, 16)
    producer = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdout.buffer.write(sys.stdin.buffer.read())"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    feeder = threading.Thread(target=lambda: (producer.stdin.write(data), producer.stdin.close()))
    feeder.start()
    out = io.BytesIO()
    assert age.encrypt_stream(producer.stdout, out, keypair[1]) == len(data)
    feeder.join()
    assert producer.wait(timeout=60) == 0
    producer.stdout.close()
    read_fd, write_fd = os.pipe()
    encrypted = out.getvalue()
    with os.fdopen(read_fd, "rb") as reader, os.fdopen(write_fd, "wb") as writer:
        writer_thread = threading.Thread(target=lambda: (writer.write(encrypted), writer.close()))
        writer_thread.start()
        sink = io.BytesIO()
        assert age.decrypt_stream(reader, sink, keypair[0]) == len(data)
        writer_thread.join()
    assert sink.getvalue() == data


def test_closed_encryptor_rejects_writes(keypair):
    enc = age.Encryptor(io.BytesIO(), keypair[1])
    enc.close()
    enc.close()
    with pytest.raises(ValueError):
        enc.write(b"x")


def test_close_fileobj_option(keypair):
    out = io.BytesIO()
    age.Encryptor(out, keypair[1]).close()
    assert not out.closed
    enc = age.Encryptor(out, keypair[1], close_fileobj=True)
    enc.close()
    assert out.closed


# ---------------------------------------------------------------------------
# Failures: tampering, truncation, wrong keys


@pytest.fixture(scope="module")
def sample(keypair):
    data = payload_of(2 * CHUNK + 100, 10)
    return data, age.encrypt_bytes(data, keypair[1], grease=False)


def _header_length(encrypted):
    return encrypted.index(b"\n--- ") + len(b"\n--- ") + 43 + 1


def test_tamper_header(keypair, sample):
    encrypted = sample[1]
    header_len = _header_length(encrypted)
    # Flip one bit in every header byte position of the stanza body/args region and the MAC.
    for pos in range(len(age.VERSION_LINE), header_len - 1):
        tampered = bytearray(encrypted)
        tampered[pos] ^= 0x01
        with pytest.raises((age.AgeHeaderError, age.AgeIntegrityError, age.NoIdentityMatchError)):
            age.decrypt_bytes(bytes(tampered), keypair[0])


def test_tamper_mac_only_is_integrity_error(keypair, sample):
    encrypted = sample[1]
    mac_start = encrypted.index(b"\n--- ") + len(b"\n--- ")
    tampered = bytearray(encrypted)
    # Change the first MAC character to another base64 character keeping it canonical.
    tampered[mac_start] = ord("A") if tampered[mac_start] != ord("A") else ord("B")
    with pytest.raises(age.AgeHeaderMacError, match="MAC"):
        age.decrypt_bytes(bytes(tampered), keypair[0])


@pytest.mark.parametrize("offset, chunk", [(0, 0), (100, 0), (CHUNK + 15, 0), (CHUNK + 16, 1), (2 * CHUNK + 40, 2), (-1, 2)])
def test_tamper_payload(keypair, sample, offset, chunk):
    encrypted = sample[1]
    tampered = bytearray(encrypted)
    pos = (_header_length(encrypted) + age.NONCE_SIZE + offset) if offset >= 0 else len(encrypted) + offset
    tampered[pos] ^= 0x80
    with pytest.raises(age.AgeIntegrityError, match=f"chunk {chunk}"):
        age.decrypt_bytes(bytes(tampered), keypair[0])


def test_tamper_nonce(keypair, sample):
    encrypted = sample[1]
    tampered = bytearray(encrypted)
    tampered[_header_length(encrypted)] ^= 0x01
    with pytest.raises(age.AgePayloadError, match="chunk 0"):
        age.decrypt_bytes(bytes(tampered), keypair[0])


def test_streaming_reader_releases_authenticated_chunks_then_fails(keypair, sample):
    data, encrypted = sample
    tampered = bytearray(encrypted)
    tampered[-1] ^= 0x01
    dec = age.Decryptor(io.BytesIO(bytes(tampered)), keypair[0])
    assert dec.read(CHUNK) == data[:CHUNK]
    assert dec.read(CHUNK) == data[CHUNK:2 * CHUNK]
    with pytest.raises(age.AgePayloadError, match="chunk 2"):
        dec.read(CHUNK)
    with pytest.raises(age.AgePayloadError):  # errors are sticky
        dec.read(1)


def test_truncation_everywhere(keypair, sample):
    encrypted = sample[1]
    header_len = _header_length(encrypted)
    cuts = sorted({0, 5, header_len - 1, header_len, header_len + 8, header_len + 16, header_len + 17,
                   header_len + 16 + age.ENCRYPTED_CHUNK_SIZE, header_len + 16 + 2 * age.ENCRYPTED_CHUNK_SIZE,
                   len(encrypted) - 1})
    for cut in cuts:
        with pytest.raises(age.AgeError):
            age.decrypt_bytes(encrypted[:cut], keypair[0])
    with pytest.raises(age.AgeTruncatedError, match="truncated"):
        age.decrypt_bytes(encrypted[:header_len + 16 + age.ENCRYPTED_CHUNK_SIZE], keypair[0])
    with pytest.raises(age.AgeHeaderError, match="nonce"):
        age.decrypt_bytes(encrypted[:header_len + 8], keypair[0])
    with pytest.raises(age.AgeHeaderError, match="empty"):
        age.decrypt_bytes(b"", keypair[0])


def test_truncation_at_full_chunk_boundary(keypair):
    data = payload_of(2 * CHUNK, 11)
    encrypted = age.encrypt_bytes(data, keypair[1])
    assert age.decrypt_bytes(encrypted, keypair[0]) == data
    with pytest.raises(age.AgeTruncatedError, match="without a final chunk"):
        age.decrypt_bytes(encrypted[:-age.ENCRYPTED_CHUNK_SIZE], keypair[0])


@pytest.mark.parametrize("extra", [b"\x00", b"garbage" * 10, bytes(age.ENCRYPTED_CHUNK_SIZE)])
def test_trailing_data(keypair, extra):
    for size in (10, CHUNK):
        encrypted = age.encrypt_bytes(payload_of(size), keypair[1])
        with pytest.raises(age.AgePayloadError):
            age.decrypt_bytes(encrypted + extra, keypair[0])


def test_finish_detects_truncation_after_partial_read(keypair, sample):
    data, encrypted = sample
    dec = age.Decryptor(io.BytesIO(encrypted[:-1]), keypair[0])
    assert dec.read(10) == data[:10]
    with pytest.raises(age.AgePayloadError):
        dec.finish()
    dec = age.Decryptor(io.BytesIO(encrypted), keypair[0])
    assert dec.read(10) == data[:10]
    assert dec.finish() == len(data) - 10


def test_wrong_identity(sample):
    encrypted = sample[1]
    with pytest.raises(age.NoIdentityMatchError, match="no identity matched any of the file's recipients"):
        age.decrypt_bytes(encrypted, age.generate_identity()[0])


def test_not_an_age_file(keypair):
    with pytest.raises(age.AgeHeaderError, match="not an age file"):
        age.decrypt_bytes(b"hello world\n" * 10, keypair[0])
    with pytest.raises(age.AgeHeaderError, match="armor"):
        age.decrypt_bytes(b"-----BEGIN AGE ENCRYPTED FILE-----\nYWdl\n-----END AGE ENCRYPTED FILE-----\n", keypair[0])
    with pytest.raises(age.AgeHeaderError, match="version"):
        age.decrypt_bytes(b"age-encryption.org/v2\n", keypair[0])
    with pytest.raises(age.AgeHeaderError, match="larger than"):
        age.decrypt_bytes(b"age-encryption.org/v1\n" + b"x" * (age.MAX_HEADER_SIZE + 10), keypair[0])


def test_aborted_encryptor_output_is_rejected(keypair):
    out = io.BytesIO()
    with pytest.raises(RuntimeError), age.Encryptor(out, keypair[1]) as enc:
        enc.write(payload_of(CHUNK + 5))
        raise RuntimeError("producer failed")
    with pytest.raises(age.AgeTruncatedError):
        age.decrypt_bytes(out.getvalue(), keypair[0])


def test_garbage_collected_encryptor_does_not_finalize(keypair):
    out = io.BytesIO()
    enc = age.Encryptor(out, keypair[1])
    enc.write(b"partial")
    size = len(out.getvalue())
    del enc
    assert len(out.getvalue()) == size
    with pytest.raises(age.AgeTruncatedError):
        age.decrypt_bytes(out.getvalue(), keypair[0])


class _FailingWriter(io.RawIOBase):
    def __init__(self, limit):
        super().__init__()
        self.limit = limit
        self.data = bytearray()

    def writable(self):
        return True

    def write(self, b):
        if len(self.data) + len(b) > self.limit:
            raise OSError("disk full")
        self.data += b
        return len(b)


def test_write_error_poisons_encryptor(keypair):
    sink = _FailingWriter(CHUNK + 1000)
    enc = age.Encryptor(sink, keypair[1])
    with pytest.raises(OSError):
        enc.write(payload_of(3 * CHUNK))
    with pytest.raises(ValueError):
        enc.write(b"more")
    before = bytes(sink.data)
    enc.close()
    assert bytes(sink.data) == before  # no final chunk after a gap


class _ShortWriter(io.RawIOBase):
    """Accepts at most 1000 bytes per write call, like a raw pipe may."""

    def __init__(self):
        super().__init__()
        self.data = bytearray()

    def writable(self):
        return True

    def write(self, b):
        part = bytes(b[:1000])
        self.data += part
        return len(part)


class _ShortReader(io.RawIOBase):
    """Returns at most 777 bytes per call and has no readinto fast path."""

    def __init__(self, data):
        super().__init__()
        self._data = data
        self._pos = 0

    def readable(self):
        return True

    def read(self, size=-1):
        size = 777 if size is None or size < 0 else min(size, 777)
        part = self._data[self._pos:self._pos + size]
        self._pos += len(part)
        return part

    readinto = None


def test_short_writes_and_reads(keypair):
    data = payload_of(2 * CHUNK + 3, 12)
    sink = _ShortWriter()
    with age.Encryptor(sink, keypair[1]) as enc:
        enc.write(data)
    with age.Decryptor(_ShortReader(bytes(sink.data)), keypair[0]) as dec:
        assert dec.read() == data


def test_bounded_memory(keypair):
    """Encrypting and decrypting 32 MiB must not hold more than a few chunks."""
    total = 32 * 1024 * 1024
    block = payload_of(CHUNK + 123, 13)

    class Source(io.RawIOBase):
        def __init__(self):
            super().__init__()
            self.left = total

        def readable(self):
            return True

        def read(self, size=-1):
            size = min(size if size and size > 0 else len(block), len(block), self.left)
            self.left -= size
            return block[:size]

    class Sink(io.RawIOBase):
        def __init__(self):
            super().__init__()
            self.count = 0
            self.hash = hashlib.sha256()

        def writable(self):
            return True

        def write(self, b):
            self.count += len(b)
            self.hash.update(b)
            return len(b)

    tmp = io.BytesIO()  # keep the ciphertext for the decryption half, outside the measurement
    tracemalloc.start()
    try:
        sink = Sink()
        age.encrypt_stream(Source(), sink, keypair[1])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert sink.count > total
    assert peak < 640 * 1024, f"encryption peak {peak} bytes"

    with age.Encryptor(tmp, keypair[1]) as enc:
        enc.write(payload_of(4 * CHUNK, 14))
    source = io.BytesIO(tmp.getvalue())  # the input is not the decryptor's memory
    tracemalloc.start()
    try:
        sink = Sink()
        age.decrypt_stream(source, sink, keypair[0])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert sink.count == 4 * CHUNK
    assert peak < 640 * 1024, f"decryption peak {peak} bytes"


# ---------------------------------------------------------------------------
# Properties


@settings(max_examples=60, deadline=None)
@given(
    chunks=st.integers(min_value=0, max_value=3),
    delta=st.integers(min_value=-17, max_value=17),
    split_seed=st.integers(min_value=0, max_value=2 ** 32),
)
def test_property_roundtrip_around_chunk_boundaries(keypair, chunks, delta, split_seed):
    size = max(0, chunks * CHUNK + delta)
    data = payload_of(size, split_seed)
    rnd = random.Random(split_seed)
    out = io.BytesIO()
    with age.Encryptor(out, keypair[1], grease=bool(split_seed & 1)) as enc:
        pos = 0
        while pos < size:
            step = rnd.randint(1, 2 * CHUNK + 2)
            enc.write(data[pos:pos + step])
            pos += step
    encrypted = out.getvalue()
    assert age.decrypt_bytes(encrypted, keypair[0]) == data
    dec = age.Decryptor(io.BytesIO(encrypted), keypair[0])
    got = []
    while True:
        part = dec.read(rnd.randint(1, 2 * CHUNK))
        if not part:
            break
        got.append(part)
    assert b"".join(got) == data


# ---------------------------------------------------------------------------
# Packaging constraints (Ansible module_utils)


def test_module_parses_as_python38():
    source = Path(age.__file__).read_text(encoding="utf-8")
    ast.parse(source, feature_version=(3, 8))
    assert source.startswith("# Copyright (c) 2026, prodready.vps contributors\n")


def test_imports_without_cryptography():
    code = (
        "import sys, importlib.abc, importlib.util\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'cryptography' or name.startswith('cryptography.'):\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        f"spec = importlib.util.spec_from_file_location('agemod', {age.__file__!r})\n"
        "mod = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(mod)\n"
        "assert mod.HAS_CRYPTOGRAPHY is False and 'blocked' in mod.CRYPTOGRAPHY_IMPORT_ERROR\n"
        "try:\n"
        "    mod.generate_identity()\n"
        "except mod.AgeError as exc:\n"
        "    assert 'cryptography' in str(exc)\n"
        "else:\n"
        "    raise SystemExit('no error')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# ---------------------------------------------------------------------------
# Interoperability with the reference age binary

needs_age = pytest.mark.skipif(not (AGE_BIN and AGE_KEYGEN_BIN), reason="the age / age-keygen binaries are not installed")


def _run(argv, **kwargs):
    return subprocess.run(argv, check=True, capture_output=True, timeout=120, **kwargs)


@needs_age
@pytest.mark.parametrize("size", [0, 1, CHUNK, CHUNK + 1, 3 * CHUNK + 7])
def test_interop_we_encrypt_age_decrypts(tmp_path, keypair, size):
    secret, public = keypair
    data = payload_of(size, 20 + size)
    key_file = tmp_path / "key.txt"
    key_file.write_text(secret + "\n")
    enc_file = tmp_path / "data.age"
    enc_file.write_bytes(age.encrypt_bytes(data, [public, age.generate_identity()[1]]))
    result = _run([AGE_BIN, "-d", "-i", str(key_file), str(enc_file)])
    assert result.stdout == data


@needs_age
@pytest.mark.parametrize("size", [0, 1, CHUNK, CHUNK + 1, 3 * CHUNK + 7])
def test_interop_age_encrypts_we_decrypt(tmp_path, size):
    key_file = tmp_path / "key.txt"
    _run([AGE_KEYGEN_BIN, "-o", str(key_file)])
    public = _run([AGE_KEYGEN_BIN, "-y", str(key_file)]).stdout.decode().strip()
    identities = age.parse_identities(key_file.read_text())
    assert str(identities[0].recipient()) == public
    other = age.generate_identity()
    recipients_file = tmp_path / "recipients.txt"
    recipients_file.write_text(f"# two recipients\n{other[1]}\n{public}\n")
    data = payload_of(size, 40 + size)
    plain = tmp_path / "plain"
    plain.write_bytes(data)
    encrypted = _run([AGE_BIN, "-R", str(recipients_file), str(plain)]).stdout
    assert age.decrypt_bytes(encrypted, identities) == data
    assert age.decrypt_bytes(encrypted, other[0]) == data


def _run_with_tty(argv, passphrase, timeout=60):
    """Run argv on a pseudo-terminal, answering each passphrase prompt."""
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover (child)
        try:
            os.execv(argv[0], argv)
        finally:
            os._exit(127)
    output = b""
    answered = 0
    deadline = time.monotonic() + timeout
    try:
        while True:
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                pytest.fail(f"{argv[0]} did not finish within {timeout}s: {output!r}")
            ready = select.select([fd], [], [], 0.5)[0]
            if not ready:
                continue
            try:
                data = os.read(fd, 1024)
            except OSError:
                data = b""
            if not data:
                break
            output += data
            prompts = output.count(b"passphrase")
            if prompts > answered:
                answered = prompts
                os.write(fd, passphrase + b"\n")
    finally:
        status = os.waitpid(pid, 0)[1]
        os.close(fd)
    return os.waitstatus_to_exitcode(status) if hasattr(os, "waitstatus_to_exitcode") else status, output


@needs_age
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pty passphrase entry is only exercised on Linux")
def test_interop_scrypt_both_directions(tmp_path):
    passphrase = b"interop pass 1"
    data = payload_of(CHUNK + 99, 60)
    ours = tmp_path / "ours.age"
    ours.write_bytes(age.encrypt_bytes(data, passphrase=passphrase, work_factor=12))
    out = tmp_path / "ours.out"
    status, output = _run_with_tty([AGE_BIN, "-d", "-o", str(out), str(ours)], passphrase)
    assert status == 0, output
    assert out.read_bytes() == data

    plain = tmp_path / "plain"
    plain.write_bytes(data)
    theirs = tmp_path / "theirs.age"
    status, output = _run_with_tty([AGE_BIN, "-p", "-o", str(theirs), str(plain)], passphrase)
    assert status == 0, output
    assert age.decrypt_bytes(theirs.read_bytes(), passphrase=passphrase) == data


def test_bytes_only_aead_of_older_cryptography(monkeypatch):
    """cryptography < 42 (38 on Debian 12) refuses memoryviews in encrypt/decrypt."""
    real = age.ChaCha20Poly1305

    class BytesOnly:
        def __init__(self, key):
            self._aead = real(key)

        def encrypt(self, nonce, data, associated_data):
            if not isinstance(data, bytes):
                raise TypeError("data must be bytes")
            return self._aead.encrypt(nonce, data, associated_data)

        def decrypt(self, nonce, data, associated_data):
            if not isinstance(data, bytes):
                raise TypeError("data must be bytes")
            return self._aead.decrypt(nonce, data, associated_data)

    monkeypatch.setattr(age, "ChaCha20Poly1305", BytesOnly)
    monkeypatch.setattr(age, "_AEAD_TAKES_BUFFERS", None)
    secret, public = age.generate_identity()
    data = os.urandom(3 * age.CHUNK_SIZE + 17)
    encrypted = age.encrypt_bytes(data, [public])
    assert age._AEAD_TAKES_BUFFERS is False
    assert age.decrypt_bytes(encrypted, [secret]) == data
    monkeypatch.setattr(age, "ChaCha20Poly1305", real)
    assert age.decrypt_bytes(encrypted, [secret]) == data
