# Copyright (c) 2026, prodready.vps contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Tests for the streaming pieces of backup_archive.py: tar writer and reader, write-behind and read-ahead threads."""

import errno
import hashlib
import io
import json
import os
import random
import tarfile
import threading

import pytest
from ansible_collections.prodready.vps.plugins.module_utils import age
from ansible_collections.prodready.vps.plugins.module_utils import backup_archive as ba

LONG_DIR = 'd' * 120
NAMES = ['etc', 'etc/app.env', 'etc/empty', 'etc/block512', 'etc/big.bin', f'{LONG_DIR}/{"f" * 150}.log',
         'srv/Grüße/ünïcode.txt', 'srv/link', f'srv/{"l" * 110}']


def entries():
    """(TarInfo, content or None) of every kind create() writes, long and non-ASCII names included."""
    rng = random.Random(3)
    result = []
    for name in NAMES:
        info = tarfile.TarInfo(name)
        info.mtime = 1795132800
        info.mode = 0o640
        info.uid = info.gid = 1000
        data = None
        if name == 'etc':
            info.type = tarfile.DIRTYPE
            info.mode = 0o750
        elif name.startswith('srv/l'):
            info.type = tarfile.SYMTYPE
            info.linkname = '../etc/app.env' if name == 'srv/link' else 'x' * 200
        else:
            size = {'etc/empty': 0, 'etc/block512': 1024, 'etc/big.bin': 3 * ba.READ_SIZE + 17}.get(name, 1000)
            data = rng.randbytes(size)
            info.size = size
        result.append((info, data))
    return result


def tarfile_bytes(items):
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode='w|', format=tarfile.PAX_FORMAT) as tar:
        for info, data in items:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def writer_bytes(items):
    out = io.BytesIO()
    tar = ba._TarWriter(out)
    digests = []
    for info, data in items:
        sha, short = tar.addfile(info, io.BytesIO(data) if data is not None else None)
        assert not short
        digests.append(sha.hexdigest() if sha else None)
    tar.close()
    return out.getvalue(), digests


def test_tar_writer_writes_what_tarfile_writes():
    items = entries()
    data, digests = writer_bytes(items)
    assert data == tarfile_bytes(items)
    assert digests == [hashlib.sha256(d).hexdigest() if d is not None else None for d in (d for _i, d in items)]


def test_tar_writer_pads_a_file_that_shrank():
    info = tarfile.TarInfo('shrunk')
    info.size = 5000
    out = io.BytesIO()
    tar = ba._TarWriter(out)
    sha, short = tar.addfile(info, io.BytesIO(b'a' * 1000))
    tar.close()
    assert short
    assert sha.hexdigest() == hashlib.sha256(b'a' * 1000 + bytes(4000)).hexdigest()
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as check:
        assert check.extractfile('shrunk').read() == b'a' * 1000 + bytes(4000)


def chunked(data, sizes):
    """A read_chunk() callable returning ``data`` in pieces of the given sizes (cycled)."""
    pieces = []
    pos = 0
    index = 0
    while pos < len(data):
        size = sizes[index % len(sizes)]
        pieces.append(data[pos:pos + size])
        pos += size
        index += 1
    feed = iter(pieces)
    return lambda: next(feed, b'')


def read_all(read_chunk):
    reader = ba._TarReader(read_chunk)
    result = []
    for member in reader:
        parts = []
        while True:
            piece = reader.read(7000)
            if not piece:
                break
            parts.append(bytes(piece))
        result.append((member.name, member.type, member.linkname, member.size, member.mode, member.mtime,
                       b''.join(parts) if member.isfile() else None))
    reader.drain()
    return result


def expected_members(data):
    result = []
    with tarfile.open(fileobj=io.BytesIO(data), mode='r:') as tar:
        for member in tar:
            content = tar.extractfile(member).read() if member.isfile() else None
            result.append((member.name, member.type, member.linkname, member.size, member.mode, member.mtime, content))
    return result


@pytest.mark.parametrize('fmt', [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
@pytest.mark.parametrize('sizes', [[ba.READ_SIZE], [1, 3, 1000], [511, 513, 7, 100000], [512]])
def test_tar_reader_reads_what_tarfile_reads(fmt, sizes):
    items = entries()
    if fmt == tarfile.USTAR_FORMAT:  # no long or non-ASCII names
        items = [(i, d) for i, d in items if len(i.name) < 100 and len(i.linkname) < 100 and i.name.isascii()]
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode='w', format=fmt, encoding='utf-8') as tar:
        for info, data in items:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    data = out.getvalue()
    got = read_all(chunked(data, sizes))
    assert got == expected_members(data)
    assert len(got) == len(items)


def test_tar_reader_skips_unread_content_and_applies_global_pax_headers():
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode='w', format=tarfile.PAX_FORMAT, pax_headers={'comment': 'global'}) as tar:
        for name in ('a', 'b'):
            info = tarfile.TarInfo(name)
            info.size = 3000
            tar.addfile(info, io.BytesIO(name.encode() * 3000))
    reader = ba._TarReader(chunked(out.getvalue(), [1000]))
    first = next(reader)
    assert bytes(reader.read(10)) == b'a' * 10
    second = next(reader)
    assert (first.name, second.name) == ('a', 'b')
    assert second.pax_headers['comment'] == 'global'
    content = b''
    while True:
        piece = reader.read(5000)  # up to 5000 bytes: fewer at the end of a chunk
        if not piece:
            break
        content += piece
    assert content == b'b' * 3000
    assert list(reader) == []


def test_tar_reader_errors():
    info = tarfile.TarInfo('file')
    info.size = 5000
    good = tarfile_bytes([(info, os.urandom(5000))])
    with pytest.raises(tarfile.ReadError, match='unexpected end of data'):
        read_all(chunked(good[:3000], [1000]))
    with pytest.raises(tarfile.ReadError, match='truncated header'):
        read_all(chunked(good[:300], [1000]))
    damaged = bytearray(good)
    damaged[100] ^= 0xFF  # the mode field: the header checksum no longer matches
    with pytest.raises(tarfile.HeaderError):
        read_all(chunked(bytes(damaged), [1000]))
    second = bytearray(tarfile_bytes([(info, bytes(5000)), (info, bytes(5000))]))
    second[512 + 5120 + 100] ^= 0xFF  # the second header: an error, not a quiet end of the archive
    with pytest.raises(tarfile.HeaderError):
        read_all(chunked(bytes(second), [1000]))
    sparse = tarfile.TarInfo('sparse')
    sparse.type = tarfile.GNUTYPE_SPARSE
    out = io.BytesIO()
    out.write(sparse.tobuf(tarfile.GNU_FORMAT, 'utf-8', 'surrogateescape'))
    out.write(bytes(1024))
    with pytest.raises(tarfile.ReadError, match='sparse'):
        read_all(chunked(out.getvalue(), [1000]))
    pax = tarfile.TarInfo('x')
    pax.type = tarfile.XHDTYPE
    pax.size = 12
    bad = pax.tobuf(tarfile.USTAR_FORMAT, 'utf-8', 'surrogateescape') + b'99 path=x\n\n'.ljust(512, b'\0') + bytes(1024)
    with pytest.raises(tarfile.ReadError, match='invalid pax'):
        read_all(chunked(bad, [1000]))


class Sink:
    def __init__(self, fail_after=None, block=None):
        self.data = bytearray()
        self.fail_after = fail_after
        self.block = block

    def write(self, data):
        if self.block is not None:
            self.block.wait()
        if self.fail_after is not None and len(self.data) + len(data) > self.fail_after:
            raise OSError(errno.ENOSPC, 'No space left on device')
        self.data += data
        return len(data)


def test_write_behind_passes_everything_in_order():
    sink = Sink()
    behind = ba._WriteBehind(sink)
    expected = bytearray()
    buffer = bytearray(ba.WRITE_PIECE * 3 + 5)
    for index in range(50):
        buffer[:] = bytes([index]) * len(buffer)  # reused by the caller: the writer must copy it
        behind.write(memoryview(buffer))
        expected += buffer
        behind.write(b'%d' % index)
        expected += b'%d' % index
    behind.close()
    assert sink.data == expected
    with pytest.raises(ValueError):
        behind.write(b'more')


def test_write_behind_raises_the_writers_error():
    behind = ba._WriteBehind(Sink(fail_after=ba.WRITE_PIECE * 4))
    with pytest.raises(OSError) as caught:
        for _dummy in range(100):
            behind.write(bytes(ba.WRITE_PIECE))
        behind.close()
    assert caught.value.errno == errno.ENOSPC
    behind.abort()
    behind = ba._WriteBehind(Sink(fail_after=10))
    behind.write(bytes(100))
    with pytest.raises(OSError):
        behind.close()


def test_write_behind_abort_stops_a_blocked_writer():
    release = threading.Event()
    sink = Sink(block=release)
    behind = ba._WriteBehind(sink)
    for _dummy in range(ba.WRITE_BEHIND):
        behind.write(bytes(10))
    release.set()
    behind.abort()
    assert len(sink.data) <= 10 * (ba.WRITE_BEHIND + 1)
    with pytest.raises(ValueError):
        behind.write(b'x')


class Source:
    def __init__(self, chunks, error=None):
        self.chunks = list(chunks)
        self.error = error
        self.reads = 0

    def read(self, size):
        self.reads += 1
        if self.chunks:
            return self.chunks.pop(0)
        if self.error is not None:
            raise self.error
        return b''


def test_read_ahead_returns_the_chunks_then_raises_the_readers_error():
    error = age.AgePayloadError('payload authentication failed at chunk 3')
    ahead = ba._ReadAhead(Source([b'a', b'b'], error))
    try:
        assert ahead.read() == b'a'
        assert ahead.read() == b'b'
        with pytest.raises(age.AgePayloadError) as caught:
            ahead.read()
        assert caught.value is error
        assert ahead.read() == b''
    finally:
        ahead.close()


def test_read_ahead_close_stops_the_thread_early():
    source = Source([b'x'] * 10000)
    ahead = ba._ReadAhead(source)
    assert ahead.read() == b'x'
    ahead.close()
    assert source.reads < 100
    assert ahead.read() == b''


def test_many_entries_round_trip(tmp_path):
    """Thousands of entries in nested directories (the manifest checks used to be quadratic)."""
    secret, public = age.generate_identity()
    src = tmp_path / 'src'
    for index in range(1000):
        directory = src / f'd{index // 100:02d}'
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f'f{index}').write_bytes(b'%d\n' % index * (index % 7))
    dest = tmp_path / 'dest'
    dest.mkdir()
    made = ba.create(str(dest), [str(src)], recipients=public)
    assert ba.verify(made['archive'], identity=secret)['entries'] == made['entries']
    stats = ba.restore(made['archive'], str(tmp_path / 'out'), identity=secret)
    assert stats['files'] == 1000
    restored = tmp_path / 'out' / str(src).lstrip('/')
    assert (restored / 'd09' / 'f999').read_bytes() == b'999\n' * (999 % 7)


@pytest.mark.parametrize('entries', [[], [{'name': 'etc', 'type': 'dir', 'mode': '0755'}],
                                     [{'name': 'ü/x"y', 'type': 'file', 'size': 3, 'sha256': 'ab' * 32, 'mode': '0644',
                                       'command': True},
                                      {'name': 'l', 'type': 'symlink', 'linkname': '../\u2603', 'mode': '0777'}]])
def test_manifest_is_written_as_json_dumps_writes_it(entries):
    manifest = {'format': ba.MANIFEST_FORMAT, 'version': 1, 'name': 'x', 'entries': entries, 'warnings': ['w'],
                'sources': [{'path': '/etc', 'exclude': []}], 'archive': {'size': 1, 'sha256': 'cd' * 32},
                'zzz': None}
    out = io.BytesIO()
    ba._write_manifest(out, manifest)
    assert out.getvalue() == json.dumps(manifest, indent=1, sort_keys=True).encode('utf-8') + b'\n'


def test_compact_manifest_entries(tmp_path):
    secret, public = age.generate_identity()
    src = tmp_path / 'src'
    src.mkdir()
    (src / 'f').write_bytes(b'data')
    os.symlink('f', src / 'l')
    dest = tmp_path / 'dest'
    dest.mkdir()
    made = ba.create(str(dest), [str(src)], recipients=public,
                     commands=[{'name': 'db/dump', 'argv': ['printf', 'x']}])
    full = ba.load_manifest(made['archive'])
    compact = ba.load_manifest(made['archive'], compact=True)
    assert len(compact['entries']) == len(full['entries'])
    for small, big in zip(compact['entries'], full['entries']):
        for key in ('name', 'type', 'size', 'sha256', 'linkname'):
            assert small.get(key) == big.get(key)
        assert small.get('mode', 'absent') == 'absent'
    assert compact['archive'] == full['archive'] and compact['commands'] == full['commands']
    assert ba.verify(made['archive'], identity=secret)['entries'] == len(full['entries'])


def test_hashing_writer_starts_writeback_every_step(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(ba, 'WRITEBACK_STEP', 1000)
    monkeypatch.setattr(os, 'posix_fadvise', lambda fd, offset, length, advice: calls.append((offset, length, advice)))
    data = os.urandom(4500)
    with open(tmp_path / 'out', 'wb', buffering=0) as raw:
        writer = ba._HashingWriter(raw)
        for start in range(0, len(data), 700):
            writer.write(data[start:start + 700])
    assert (tmp_path / 'out').read_bytes() == data
    assert writer.size == len(data) and writer.sha256.hexdigest() == hashlib.sha256(data).hexdigest()
    # Contiguous ranges from 0, each at least a step, never past what was written.
    assert [c[2] for c in calls] == [os.POSIX_FADV_DONTNEED] * len(calls)
    assert [c[0] for c in calls] == [0] + [sum(c[1] for c in calls[:i]) for i in range(1, len(calls))]
    assert all(c[1] >= 1000 for c in calls) and len(calls) == 3
    assert calls[-1][0] + calls[-1][1] <= len(data)


def test_hashing_writer_without_writeback(tmp_path, monkeypatch):
    """A file system that refuses the advice, and a file object without a descriptor: writes go on."""
    monkeypatch.setattr(ba, 'WRITEBACK_STEP', 10)
    calls = []

    def refuse(*args):
        calls.append(args)
        raise OSError(errno.EINVAL, 'not supported')

    monkeypatch.setattr(os, 'posix_fadvise', refuse)
    with open(tmp_path / 'out', 'wb', buffering=0) as raw:
        writer = ba._HashingWriter(raw)
        for dummy in range(5):
            writer.write(b'x' * 30)
    assert len(calls) == 1 and (tmp_path / 'out').read_bytes() == b'x' * 150
    buffer = io.BytesIO()
    writer = ba._HashingWriter(buffer)
    writer.write(b'y' * 50)
    assert buffer.getvalue() == b'y' * 50 and writer.size == 50
