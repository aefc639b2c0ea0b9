# Copyright (c) 2026, prodready.vps contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Encrypted backup archives: create, verify, restore, list and prune.

This is the single implementation used by the ``backup``, ``backup_verify``
and ``backup_restore`` modules and by the host-side runner started from
systemd timers (the runner copies ``age.py``, ``retention.py`` and this file
side by side into one directory; the sibling imports fall back to plain
``import age`` / ``import retention`` for that case).

Archive format (decryptable with standard tools only)::

    age -d -i key.txt NAME.tar.zst.age | zstd -d | tar x      # or gzip -d for .tar.gz.age

* a POSIX (pax) tar stream written with ``tarfile`` mode ``'w|'``;
* compressed with zstd (level 3) when the ``zstandard`` package is
  importable, gzip otherwise; the choice is recorded in the manifest and in
  the file name suffix (``.tar.zst.age`` / ``.tar.gz.age``);
* encrypted in the age v1 format to X25519 recipients or a passphrase.

Everything streams through fixed-size buffers: no file, command output or
archive is ever held in memory.

Beside each archive ``NAME.manifest.json`` records the creation time, host,
sources, every entry (type, size and SHA-256 of the plaintext, mode), the
archive's size and SHA-256, the compression, the tool version, the
recipients' fingerprints and the duration. A successful deep verification
may leave a ``NAME.verified`` marker (JSON) used by :func:`list_backups` and
:func:`apply_retention`.

Design choices:

* **Command output** (``pg_dump -Fc`` ...) must be known in size before its
  tar header is written, so stdout is spooled into a
  ``tempfile.SpooledTemporaryFile`` (in memory up to ``SPOOL_MEMORY`` bytes,
  then rolled over to an *anonymous* file in the destination directory --
  ``O_TMPFILE`` on Linux, so it has no name, is never visible and vanishes
  even on ``kill -9``), hashed while spooling, then copied into the tar
  entry. The spool needs free space for one uncompressed dump. A non-zero
  exit status, a timeout or a signal fails the whole backup with the tail of
  the command's stderr.
* **Atomicity**: archive and manifest are written to ``.NAME.*.tmp`` files in
  the destination directory, fsynced, renamed (manifest first, then the
  archive, which is what makes a backup exist) and the directory is fsynced.
  On any failure the temp files are removed and existing backups are never
  touched. Stale temp files left by a killed run are removed by the next run
  (while holding the lock).
* **Locking**: ``DEST/.backup.lock`` is locked with ``fcntl.flock``
  (released by the kernel when the process dies, so a ``kill -9`` never
  leaves a stale lock). ``lock_timeout=0`` fails at once with
  :class:`BackupLockedError`, a positive value waits that many seconds,
  ``None`` waits forever.
* **Retention** is never applied by :func:`create`: the caller runs
  :func:`apply_retention` only after a successful :func:`create` (never after
  a failed one), and the newest backup that passed verification is always
  protected.
* **Throughput** (bench/backup_throughput.py, docs/benchmarks.md): like
  ``tar | zstd | age``, a backup uses more than one core, with bounded
  queues between the stages: this thread reads, hashes and writes the tar
  stream (:class:`_TarWriter`, not ``tarfile``, whose stream buffer copies
  every byte several times), a zstd worker thread compresses
  (``ZSTD_THREADS``, ``ZSTD_JOB_SIZE``), and a :class:`_WriteBehind` thread
  encrypts, hashes and writes the archive. Verification and restore decrypt
  and decompress in a :class:`_ReadAhead` thread while this one parses the
  tar stream (:class:`_TarReader`), hashes and writes files. The bindings
  used (hashlib, zstandard, cryptography, file I/O) release the GIL while
  they work.
* **Memory** does not grow with the amount of data, and hardly with the
  number of entries (bench/backup_rss_files.py: 200,000 files, peak RSS
  37-40 MiB for backup, verification and restore; 34-35 MiB for 5,000). A
  backup keeps its entries in an unnamed file in the backup directory
  (:class:`_EntrySpool`) and only a 16-byte key per name for the duplicate
  check when sources overlap. Verification and restore read the manifest
  entry by entry (:class:`ManifestReader`) alongside the archive, whose
  members are in the same order, and keep 12 bytes per name for the
  duplicate and hard-link checks (:class:`_NameSet`); a restore keeps what
  it needs of each staged entry in an unnamed file in its staging directory
  (:class:`_RecordSpool`) and returns the first ``MEMBERS_LISTED`` names.
"""

from __future__ import (absolute_import, division, print_function)  # noqa: UP010, I001 (Ansible boilerplate)
__metaclass__ = type  # noqa: UP001

import array
import codecs
import datetime
import errno
import fnmatch
import gzip
import hashlib
import json
import os
import posixpath
import queue
import re
import shutil
import socket
import stat
import struct
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import traceback
import zlib

try:
    import fcntl
except ImportError:  # not POSIX
    fcntl = None

try:
    import zstandard
except ImportError:
    zstandard = None
    HAS_ZSTANDARD = False
    ZSTANDARD_IMPORT_ERROR = traceback.format_exc()
else:
    HAS_ZSTANDARD = True
    ZSTANDARD_IMPORT_ERROR = None


class _NoZstdError(Exception):
    pass


_ZstdError = zstandard.ZstdError if HAS_ZSTANDARD else _NoZstdError

try:
    from ansible_collections.prodready.vps.plugins.module_utils import age, retention
except ImportError:  # host-side runner: the three files side by side
    # ``python3 -I`` on Python 3.11+ implies -P: the script's directory is not on sys.path.
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import age  # type: ignore[no-redef]  # pylint: disable=wrong-import-position
    import retention  # type: ignore[no-redef]  # pylint: disable=wrong-import-position


VERSION = '1.0.0'
TOOL = 'prodready.vps backup_archive'
MANIFEST_FORMAT = 'prodready.vps/backup-manifest'
MANIFEST_VERSION = 1
MANIFEST_SUFFIX = '.manifest.json'
VERIFIED_SUFFIX = '.verified'
LOCK_NAME = '.backup.lock'
TMP_SUFFIX = '.tmp'
ZSTD_LEVEL = 3
GZIP_LEVEL = 6
LEVELS = {'zstd': (1, 22), 'gzip': (1, 9)}   # accepted compression_level ranges
COPY_SIZE = 64 * 1024          # command output, decompressor input and drain reads
READ_SIZE = 1024 * 1024        # file content copied per read (one reused buffer) and read-ahead chunk
READ_AHEAD = 4                 # decompressed chunks decoded ahead of the tar reader (verify, restore)
WRITE_BEHIND = 8               # compressed pieces queued for the encrypting thread...
WRITE_PIECE = 128 * 1024       # ...of at most this size (zstd writes up to 128 KiB at a time)
ZSTD_THREADS = 1               # zstd compresses in a worker thread while this one reads, hashes and encrypts
ZSTD_JOB_SIZE = 4 * 1024 * 1024  # zstd worker job size: bounds the worker's buffers (default at level 3: 8 MiB)
WRITEBACK_STEP = 16 * 1024 * 1024  # archive bytes after which the kernel is asked to start writing them back
SPOOL_MEMORY = 1024 * 1024     # command output kept in memory up to this size
STDERR_TAIL = 2000             # bytes of a failing command's stderr quoted in errors
LOCK_POLL = 0.1
STAMP_FORMAT = '%Y-%m-%dT%H%M%SZ'
SUFFIXES = {'zstd': '.tar.zst.age', 'gzip': '.tar.gz.age'}

_NAME_RE = re.compile(r'\A(?P<prefix>.*?)(?P<stamp>\d{4}-\d\d-\d\dT\d{6}Z)(?:-(?P<seq>\d+))?'
                      r'\.tar\.(?P<comp>zst|gz)\.age\Z')
_UTC = datetime.timezone(datetime.timedelta(0))


# ---------------------------------------------------------------------------
# Exceptions


class BackupError(Exception):
    """Base class of every error raised by this module."""


class BackupConfigError(BackupError, ValueError):
    """The requested sources, commands, keys or options are invalid."""


class BackupLockedError(BackupError):
    """Another run holds the destination's lock."""


class BackupCommandError(BackupError):
    """A command whose output goes into the archive failed."""


class BackupIntegrityError(BackupError):
    """A backup does not match its manifest, or its manifest is missing or unreadable."""


class BackupDecryptError(BackupError):
    """The backup cannot be decrypted with the given identities."""


class RestoreRefusedError(BackupError):
    """Restoring would be unsafe (path traversal, links escaping the target, devices) or overwrite files."""


# ---------------------------------------------------------------------------
# Small helpers


def utcnow():
    return datetime.datetime.now(_UTC)


def _iso(moment):
    return moment.astimezone(_UTC).strftime('%Y-%m-%dT%H:%M:%SZ')


def _fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, 'O_DIRECTORY', 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _unlink_quiet(path):
    try:
        os.unlink(path)
    except OSError:
        pass


def _describe_oserror(exc):
    if getattr(exc, 'errno', None) == errno.ENOSPC:
        return 'no space left on device (ENOSPC)'
    if getattr(exc, 'errno', None) == errno.EDQUOT:
        return 'disk quota exceeded (EDQUOT)'
    return str(exc)


def manifest_path(archive):
    """``NAME.manifest.json`` beside ``NAME`` (the archive path)."""
    return archive + MANIFEST_SUFFIX


def verified_path(archive):
    return archive + VERIFIED_SUFFIX


def _open_output(path):
    """Open a temp output file (unbuffered). Tests replace this to simulate a full disk."""
    return open(path, 'wb', buffering=0)


class _HashingWriter:
    """Write-through file wrapper counting bytes and computing their SHA-256.

    Every ``WRITEBACK_STEP`` bytes it asks the kernel to start writing the
    finished part of the file back to disk (``posix_fadvise(DONTNEED)``
    starts the writeback without waiting for it, and drops the pages once
    written: a backup does not need them in the page cache). The fsync at
    the end then waits for the last few MiB, not for the whole archive.
    """

    def __init__(self, fileobj):
        self._fileobj = fileobj
        self.sha256 = hashlib.sha256()
        self.size = 0
        self._written_back = 0
        try:
            self._fd = fileobj.fileno() if hasattr(os, 'posix_fadvise') else None
        except (AttributeError, OSError, ValueError):
            self._fd = None

    def write(self, data):
        view = memoryview(data)
        total = len(view)
        done = 0
        while done < total:
            written = self._fileobj.write(view[done:])
            if written is None:  # non-blocking raw file: nothing written
                written = 0
            done += written
        self.sha256.update(view)
        self.size += total
        if self._fd is not None and self.size - self._written_back >= WRITEBACK_STEP:
            self._write_back()
        return total

    def _write_back(self):
        try:
            os.posix_fadvise(self._fd, self._written_back, self.size - self._written_back, os.POSIX_FADV_DONTNEED)
        except OSError:  # a file system without it: the final fsync does it all
            self._fd = None
            return
        self._written_back = self.size

    def flush(self):
        if hasattr(self._fileobj, 'flush'):
            self._fileobj.flush()


class _WriteBehind:
    """File-like writer handing the data to ``fileobj.write`` in a background thread (a bounded queue).

    :func:`create` puts it between the compressor and the age encryptor, so
    encrypting, hashing and writing the archive overlap with reading,
    hashing and compressing the sources, as the processes of
    ``tar | zstd | age`` do. An error in the thread (a full disk) is raised
    by the next :meth:`write` or by :meth:`close`. Call :meth:`close` (all
    written) or :meth:`abort` (stop) before touching ``fileobj`` again.
    """

    def __init__(self, fileobj):
        self._fileobj = fileobj
        self._queue = queue.Queue(WRITE_BEHIND)
        self._stop = threading.Event()
        self._error = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name='backup-write-behind')
        self._thread.daemon = True
        self._thread.start()

    def _run(self):
        try:
            while not self._stop.is_set():
                data = self._queue.get()
                if data is None:
                    return
                self._fileobj.write(data)
        except BaseException as exc:  # pylint: disable=broad-except  # handed to the writing thread
            self._error = exc

    def _raise(self):
        error, self._error = self._error, None
        self._closed = True
        self._stop.set()
        raise error

    def write(self, data):
        if self._closed:
            raise ValueError('write to a closed backup writer')
        size = len(data)
        if size <= WRITE_PIECE and isinstance(data, bytes):
            self._put(data)
        else:  # bounded pieces, copied: the caller may reuse its buffer
            with memoryview(data) as view:
                for start in range(0, size, WRITE_PIECE):
                    self._put(bytes(view[start:start + WRITE_PIECE]))
        return size

    def _put(self, data):
        if not data:
            return
        while True:
            if self._error is not None or not self._thread.is_alive():
                self._thread.join()
                if self._error is not None:
                    self._raise()
                raise ValueError('the backup writer thread has stopped')
            try:
                self._queue.put(data, timeout=0.1)
                return
            except queue.Full:
                continue

    def flush(self):
        """Nothing to do: :meth:`close` waits until everything is written."""

    def close(self):
        """Wait until everything queued is written; raise the thread's error."""
        if not self._closed:
            self._closed = True
            while self._thread.is_alive():
                try:
                    self._queue.put(None, timeout=0.1)
                    break
                except queue.Full:
                    continue
            self._thread.join()
        if self._error is not None:
            self._raise()

    def abort(self):
        """Stop the thread, dropping what is queued."""
        self._closed = True
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=0.1)
            except queue.Empty:
                pass
            try:
                self._queue.put_nowait(None)
            except queue.Full:
                pass
        self._thread.join()


class _ReadAhead:
    """Reads ``fileobj`` in ``READ_SIZE`` chunks in a background thread, up to ``READ_AHEAD`` chunks ahead.

    Verification and restore decrypt and decompress here while the calling
    thread parses the tar stream, hashes and writes files: the cryptography
    and zstandard bindings, hashlib and file I/O release the GIL, so the two
    run on two cores. Memory stays bounded by the queue. An exception in the
    thread is raised again, unchanged, by :meth:`read`. Call :meth:`close`
    before touching ``fileobj`` or what it reads from.
    """

    def __init__(self, fileobj):
        self._queue = queue.Queue(READ_AHEAD)
        self._stop = threading.Event()
        self._done = False
        self._thread = threading.Thread(target=self._run, args=(fileobj,), name='backup-read-ahead')
        self._thread.daemon = True
        self._thread.start()

    def _run(self, fileobj):
        try:
            while not self._stop.is_set():
                data = fileobj.read(READ_SIZE)
                self._put((data, None))
                if not data:
                    return
        except BaseException as exc:  # pylint: disable=broad-except  # handed to the reading thread
            self._put((b'', exc))

    def _put(self, item):
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def read(self):
        """The next chunk (bytes), b'' at the end; raises what reading raised."""
        if self._done:
            return b''
        data, error = self._queue.get()
        if error is not None or not data:
            self._done = True
        if error is not None:
            raise error
        return data

    def close(self):
        """Stop the thread and wait for it."""
        self._stop.set()
        self._done = True
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=0.1)
            except queue.Empty:
                pass
        self._thread.join()


_TAR_REGULAR = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE)
_TAR_PAX = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE)
_TAR_GNU_LONG = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK)
_TAR_END = tarfile.NUL * tarfile.BLOCKSIZE


def _parse_pax(data):
    """Records ``LENGTH KEY=VALUE\\n`` of a pax extended header, as a dict of str."""
    headers = {}
    pos = 0
    size = len(data)
    while pos < size and data[pos] != 0:
        space = data.find(b' ', pos, pos + 20)
        try:
            length = int(data[pos:space]) if space > pos else 0
        except ValueError:
            length = 0
        if length < 5 or pos + length > size or data[pos + length - 1] != 0x0A:
            raise tarfile.ReadError('invalid pax extended header')
        key, sep, value = data[space + 1:pos + length - 1].partition(b'=')
        if not sep or not key:
            raise tarfile.ReadError('invalid pax extended header')
        headers[key.decode('utf-8', 'surrogateescape')] = value.decode('utf-8', 'surrogateescape')
        pos += length
    return headers


def _pax_number(headers, key, kind):
    try:
        return kind(headers[key])
    except ValueError:
        raise tarfile.ReadError(f'invalid pax {key} {headers[key]!r}')


class _TarReader:
    """Streaming tar reader (ustar, pax and GNU long names), the read side of :class:`_TarWriter`.

    ``read_chunk()`` returns the next chunk of the tar stream (b'' at the
    end). Iterating yields ``tarfile.TarInfo`` objects parsed by the public
    ``TarInfo.frombuf()``, with pax and GNU long-name headers applied as
    tarfile applies them; the member's content is then read with
    :meth:`read`, which returns memoryviews of the chunks (no copies).
    Unread content is skipped by the next iteration. Iteration ends at the
    first zero block or at the end of the stream; a truncated member, an
    invalid header or GNU sparse entries raise ``tarfile.ReadError`` (a
    header error inside the archive is an error here, where tarfile's stream
    mode quietly ends the iteration).
    """

    def __init__(self, read_chunk):
        self._read_chunk = read_chunk
        self._chunk = memoryview(b'')
        self._eof = False
        self._ended = False
        self._left = 0       # content of the current member not read yet
        self._padding = 0    # NUL padding after it
        self._global = {}

    def _take(self, size):
        """Up to ``size`` bytes as a memoryview: fewer at a chunk boundary, empty at the end of the stream."""
        if not len(self._chunk):
            if self._eof:
                return self._chunk
            data = self._read_chunk()
            if not data:
                self._eof = True
                return memoryview(b'')
            self._chunk = memoryview(data)
        piece = self._chunk[:size]
        self._chunk = self._chunk[size:]
        return piece

    def _exact(self, size):
        parts = []
        have = 0
        while have < size:
            piece = self._take(size - have)
            if not piece:
                break
            parts.append(piece)
            have += len(piece)
        return b''.join(parts)

    def _skip(self, size):
        while size > 0:
            piece = self._take(min(size, READ_SIZE))
            if not piece:
                raise tarfile.ReadError('unexpected end of data')
            size -= len(piece)

    def _data(self, info):
        """The content of a header member (pax, GNU long name) and its padding."""
        if info.size > 1024 * 1024:
            raise tarfile.ReadError(f'tar header member of {info.size} bytes')
        data = self._exact(info.size)
        if len(data) < info.size:
            raise tarfile.ReadError('unexpected end of data')
        self._skip(-info.size % tarfile.BLOCKSIZE)
        return data

    def __iter__(self):
        return self

    def __next__(self):
        if self._ended:
            raise StopIteration
        self._skip(self._left + self._padding)
        self._left = self._padding = 0
        local = {}
        long_name = long_link = None
        while True:
            block = self._exact(tarfile.BLOCKSIZE)
            if not block or block == _TAR_END:
                self._ended = True
                raise StopIteration
            if len(block) < tarfile.BLOCKSIZE:
                raise tarfile.ReadError('truncated header')
            info = tarfile.TarInfo.frombuf(block, tarfile.ENCODING, 'surrogateescape')
            if info.type in _TAR_PAX:
                headers = _parse_pax(self._data(info))
                (self._global if info.type == tarfile.XGLTYPE else local).update(headers)
            elif info.type in _TAR_GNU_LONG:
                value = self._data(info).split(tarfile.NUL, 1)[0].decode(tarfile.ENCODING, 'surrogateescape')
                if info.type == tarfile.GNUTYPE_LONGNAME:
                    long_name = value
                else:
                    long_link = value
            else:
                break
        headers = dict(self._global)
        headers.update(local)
        if info.type == tarfile.GNUTYPE_SPARSE or any(k.startswith('GNU.sparse.') for k in headers):
            raise tarfile.ReadError(f'{info.name}: sparse tar entries are not supported')
        if long_name is not None:
            info.name = long_name
        if long_link is not None:
            info.linkname = long_link
        if 'path' in headers:
            info.name = headers['path'].rstrip('/')
        if 'linkpath' in headers:
            info.linkname = headers['linkpath']
        for key, kind in (('size', int), ('uid', int), ('gid', int), ('mtime', float)):
            if key in headers:
                setattr(info, key, _pax_number(headers, key, kind))
        for key in ('uname', 'gname'):
            if key in headers:
                setattr(info, key, headers[key])
        if info.isdir():
            info.name = info.name.rstrip('/')
        info.pax_headers = headers
        if info.size < 0:
            raise tarfile.ReadError(f'{info.name}: negative size')
        # Like tarfile: only regular files and unknown types have content.
        self._left = info.size if info.type in _TAR_REGULAR or info.type not in tarfile.SUPPORTED_TYPES else 0
        self._padding = -self._left % tarfile.BLOCKSIZE
        return info

    def read(self, size):
        """Up to ``size`` bytes of the current member's content (a memoryview); empty at its end."""
        if self._left <= 0:
            return memoryview(b'')
        piece = self._take(min(size, self._left))
        if not piece:
            raise tarfile.ReadError('unexpected end of data')
        self._left -= len(piece)
        return piece

    def drain(self):
        """Read the rest of the stream (after the end of the archive: padding, compression trailer checks)."""
        self._chunk = memoryview(b'')
        while self._read_chunk():
            pass
        self._eof = True


class _MemberReader:
    """Reads one member's content from a :class:`_TarReader`, hashing it."""

    def __init__(self, tar):
        self._tar = tar
        self.sha256 = hashlib.sha256()

    def read(self, size=READ_SIZE):
        data = self._tar.read(size)
        self.sha256.update(data)
        return data


class _CountingReader:
    """Read-through wrapper hashing everything read (the ciphertext during verification)."""

    def __init__(self, fileobj):
        self._fileobj = fileobj
        self.sha256 = hashlib.sha256()
        self.size = 0

    def read(self, size=-1):
        data = self._fileobj.read(size)
        self.sha256.update(data)
        self.size += len(data)
        return data

    def readinto(self, buffer):
        count = self._fileobj.readinto(buffer)
        if count:
            self.sha256.update(memoryview(buffer)[:count])
            self.size += count
        return count

    def drain(self):
        while True:
            if not self.read(COPY_SIZE):
                return


# ---------------------------------------------------------------------------
# Locking


class BackupLock:
    """Exclusive ``flock`` on ``DEST/.backup.lock``; a context manager.

    ``timeout``: 0 fails at once, a positive number waits that many seconds,
    None waits forever. Raises :class:`BackupLockedError` naming the holder's
    pid (written into the lock file) when it gives up.
    """

    def __init__(self, dest, timeout=0):
        self.path = os.path.join(dest, LOCK_NAME)
        self.timeout = timeout
        self._fd = None

    def acquire(self):
        if fcntl is None:
            raise BackupError('locking needs fcntl (a POSIX system)')
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = None if self.timeout is None else time.monotonic() + max(0, self.timeout)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                        raise
                if deadline is not None and time.monotonic() >= deadline:
                    holder = ''
                    try:
                        holder = os.pread(fd, 64, 0).decode('ascii', 'replace').strip()
                    except OSError:
                        pass
                    waited = '' if not self.timeout else f' after waiting {self.timeout:g}s'
                    raise BackupLockedError(
                        'another backup run holds the lock {}{}{}; not starting a second one'.format(self.path, f' (pid {holder})' if holder else '', waited))
                time.sleep(LOCK_POLL)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f'{os.getpid()}\n'.encode('ascii'), 0)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return self

    def release(self):
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.ftruncate(fd, 0)
            except OSError:
                pass
            os.close(fd)  # closing the only descriptor releases the flock

    def __enter__(self):
        return self.acquire()

    def __exit__(self, exc_type, exc_value, tb):
        self.release()


class _NoLock:
    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc_value, tb):
        return None


def _cleanup_stale(dest):
    """Remove temp files of interrupted runs and manifests without archive. Call with the lock held."""
    removed = []
    for entry in os.listdir(dest):
        path = os.path.join(dest, entry)
        stem = entry[1:].split('.tmp-')[0]
        if stem.endswith(MANIFEST_SUFFIX):  # noqa: FURB188 (str.removesuffix is Python 3.9+)
            stem = stem[:-len(MANIFEST_SUFFIX)]
        if entry.startswith('.') and entry.endswith(TMP_SUFFIX) and _NAME_RE.match(stem):
            _unlink_quiet(path)
            removed.append(entry)
        elif entry.endswith(MANIFEST_SUFFIX):
            archive = entry[:-len(MANIFEST_SUFFIX)]
            if _NAME_RE.match(archive) and not os.path.exists(os.path.join(dest, archive)):
                _unlink_quiet(path)
                _unlink_quiet(verified_path(os.path.join(dest, archive)))
                removed.append(entry)
    return removed


# ---------------------------------------------------------------------------
# Sources


def _as_list(value):
    if value is None:
        return []
    if isinstance(value, (str, bytes)):
        return [value]
    return list(value)


def normalize_sources(sources):
    """Return sources as a list of dicts ``{path, include, exclude, max_age_days, missing_ok}``.

    A source is a path string or a mapping with those keys. ``include`` and
    ``exclude`` are glob lists matched against the path relative to the
    source and against the base name (a pattern containing ``/`` only against
    the relative path); ``include`` filters files only, ``exclude`` prunes
    files and directories. ``max_age_days`` keeps only files modified within
    that many days (for logs); ``newer_than_days`` is accepted as another
    name for it.
    """
    result = []
    for item in _as_list(sources):
        if isinstance(item, str):
            item = {'path': item}
        if not isinstance(item, dict) or not item.get('path'):
            raise BackupConfigError(f'source {item!r}: expected a path or a mapping with "path"')
        unknown = set(item) - {'path', 'include', 'exclude', 'max_age_days', 'newer_than_days', 'missing_ok'}
        if unknown:
            raise BackupConfigError('source {!r}: unknown keys {}'.format(item['path'], ', '.join(sorted(unknown))))
        if item.get('newer_than_days') is not None:
            if item.get('max_age_days') is not None:
                raise BackupConfigError('source {!r}: give max_age_days or newer_than_days, not both'.format(item['path']))
            item = dict(item, max_age_days=item['newer_than_days'])
        max_age = item.get('max_age_days')
        if max_age is not None:
            try:
                max_age = float(max_age)
            except (TypeError, ValueError):
                raise BackupConfigError('source {!r}: max_age_days must be a number'.format(item['path']))
            if max_age < 0:
                raise BackupConfigError('source {!r}: max_age_days must not be negative'.format(item['path']))
        result.append({
            'path': os.path.abspath(str(item['path'])),
            'include': [str(p) for p in _as_list(item.get('include'))],
            'exclude': [str(p) for p in _as_list(item.get('exclude'))],
            'max_age_days': max_age,
            'missing_ok': bool(item.get('missing_ok', False)),
        })
    return result


def _safe_member_name(name):
    """Normalise a relative archive name or return None when it is unsafe."""
    if not name or '\0' in name or name.startswith('/'):
        return None
    parts = [p for p in name.split('/') if p not in ('', '.')]
    if not parts or '..' in parts:
        return None
    joined = '/'.join(parts)
    return name if joined == name else joined  # the same string object: large backups hold many names


def normalize_commands(commands):
    """Return commands as a list of dicts ``{name, argv, shell, timeout}``.

    ``name`` is the archive entry (relative, e.g. ``db/app.dump``); ``argv``
    a list run without a shell, or ``shell`` a string run with ``/bin/sh -c``;
    ``timeout`` seconds (optional); ``env`` extra environment (not recorded).
    """
    result = []
    for item in _as_list(commands):
        if not isinstance(item, dict):
            raise BackupConfigError(f'command {item!r}: expected a mapping with "name" and "argv" or "shell"')
        name = _safe_member_name(str(item.get('name') or ''))
        if name is None:
            raise BackupConfigError('command {!r}: "name" must be a relative path without ".."'.format(item.get('name')))
        argv, shell = item.get('argv'), item.get('shell')
        if bool(argv) == bool(shell):
            raise BackupConfigError(f'command {name}: give exactly one of "argv" (list) or "shell" (string)')
        if argv is not None and (isinstance(argv, str) or not all(isinstance(a, str) for a in argv)):
            raise BackupConfigError(f'command {name}: "argv" must be a list of strings')
        result.append({'name': name, 'argv': list(argv) if argv else None, 'shell': shell,
                       'timeout': item.get('timeout'), 'env': dict(item.get('env') or {})})
    return result


def _matches(rel, base, patterns):
    for pattern in patterns:
        if '/' in pattern:
            if fnmatch.fnmatchcase(rel, pattern.strip('/')):
                return True
        elif fnmatch.fnmatchcase(base, pattern) or fnmatch.fnmatchcase(rel, pattern):
            return True
    return False


def _walk_source(source, now_ts):
    """Yield ``(abs_path, arcname, lstat)`` of what a source selects (directories before their content)."""
    root = source['path']
    try:
        root_st = os.lstat(root)
    except FileNotFoundError:
        if source['missing_ok']:
            return
        raise BackupConfigError(f'source {root} does not exist')
    cutoff = None if source['max_age_days'] is None else now_ts - source['max_age_days'] * 86400
    include, exclude = source['include'], source['exclude']
    root_arc = root.lstrip('/')

    def arc(rel):
        return posixpath.join(root_arc, rel) if root_arc else rel

    def selected_file(rel, st):
        base = posixpath.basename(rel)
        if exclude and _matches(rel, base, exclude):
            return False
        if include and not _matches(rel, base, include):
            return False
        return not (cutoff is not None and st.st_mtime < cutoff)

    if not stat.S_ISDIR(root_st.st_mode):
        if selected_file(posixpath.basename(root), root_st):
            yield root, root_arc, root_st
        return
    if root_arc:
        yield root, root_arc, root_st
    stack = [('', root)]
    while stack:
        rel_dir, abs_dir = stack.pop()
        try:
            names = sorted(os.listdir(abs_dir))
        except OSError as exc:
            raise BackupError(f'cannot list {abs_dir}: {exc}')
        subdirs = []
        for name in names:
            abs_path = os.path.join(abs_dir, name)
            rel = posixpath.join(rel_dir, name) if rel_dir else name
            try:
                st = os.lstat(abs_path)
            except FileNotFoundError:
                continue  # vanished while walking
            if stat.S_ISDIR(st.st_mode):
                if exclude and _matches(rel, name, exclude):
                    continue
                yield abs_path, arc(rel), st
                subdirs.append((rel, abs_path))
            elif selected_file(rel, st):
                yield abs_path, arc(rel), st
        stack.extend(reversed(subdirs))


def estimate_sources(sources, commands=(), now=None):
    """Describe what :func:`create` would archive, writing nothing and reading no file content.

    Walks the sources with the same rules as :func:`create` (include,
    exclude, max_age_days, missing_ok; symlinks are not followed; other file
    types are skipped) using ``lstat`` only, so it costs a directory listing.

    :returns: dict ``sources`` (one dict per source: ``path, exists, files,
        dirs, links, bytes``), ``commands`` (entry names: the size of their
        output is unknown until they run), and the totals ``files``, ``dirs``,
        ``links`` and ``bytes`` (file contents only, command output excluded,
        before compression).
    :raises BackupConfigError: bad definitions, a missing source without ``missing_ok``.
    """
    norm_sources = normalize_sources(sources)
    norm_commands = normalize_commands(commands)
    now = now or utcnow()
    seen = set()
    for command in norm_commands:
        if command['name'] in seen:
            raise BackupConfigError('two entries are named {}'.format(command['name']))
        seen.add(command['name'])
    totals = {'files': 0, 'dirs': 0, 'links': 0, 'bytes': 0}
    described = []
    for source in norm_sources:
        item = {'path': source['path'], 'exists': os.path.lexists(source['path']),
                'files': 0, 'dirs': 0, 'links': 0, 'bytes': 0}
        for _abs_path, arcname, st in _walk_source(source, now.timestamp()):
            if arcname in seen:
                continue
            if stat.S_ISDIR(st.st_mode):
                item['dirs'] += 1
            elif stat.S_ISLNK(st.st_mode):
                item['links'] += 1
            elif stat.S_ISREG(st.st_mode):
                item['files'] += 1
                item['bytes'] += st.st_size
            else:
                continue
            seen.add(arcname)
        for key in totals:
            totals[key] += item[key]
        described.append(item)
    result = {'sources': described, 'commands': [c['name'] for c in norm_commands]}
    result.update(totals)
    return result


# ---------------------------------------------------------------------------
# Create


def _zstd_compressor(level):
    """A zstd compressor at ``level`` with one worker thread and bounded job size, when zstandard allows it.

    The worker compresses while the calling thread reads, hashes and encrypts
    (the Python bindings release the GIL), so a backup uses two cores like
    ``tar | zstd | age``. ``ZSTD_JOB_SIZE`` keeps the worker's buffers to a
    few MiB. The frames are ordinary zstd frames.
    """
    try:
        params = zstandard.ZstdCompressionParameters.from_level(level, threads=ZSTD_THREADS, job_size=ZSTD_JOB_SIZE)
        return zstandard.ZstdCompressor(compression_params=params)
    except (TypeError, ValueError, AttributeError, _ZstdError):  # old zstandard or libzstd without threads
        return zstandard.ZstdCompressor(level=level)


def _compressor(compression, fileobj, level):
    if compression == 'zstd':
        cctx = _zstd_compressor(level)
        try:
            return cctx.stream_writer(fileobj, closefd=False)
        except TypeError:  # zstandard < 0.15
            return cctx.stream_writer(fileobj)
    return gzip.GzipFile(filename='', mode='wb', fileobj=fileobj, compresslevel=level, mtime=0)


def _decompressor(compression, fileobj):
    if compression == 'zstd':
        if not HAS_ZSTANDARD:
            raise BackupError('this backup is zstd-compressed and the Python "zstandard" package is missing '
                              '(install python3-zstandard, or use: age -d -i KEY FILE | zstd -d | tar x)')
        dctx = zstandard.ZstdDecompressor()
        try:
            return dctx.stream_reader(fileobj, read_size=COPY_SIZE, closefd=False)
        except TypeError:  # zstandard < 0.15
            return dctx.stream_reader(fileobj, read_size=COPY_SIZE)
    if compression == 'gzip':
        return gzip.GzipFile(filename='', mode='rb', fileobj=fileobj)
    raise BackupIntegrityError(f'unknown compression {compression!r} in manifest')


def _write_all(fileobj, data):
    """Write all of ``data`` to an unbuffered file (``write`` may write less)."""
    with memoryview(data) as view:
        done = 0
        while done < len(view):
            done += fileobj.write(view[done:]) or 0


def _readinto(source, view):
    """``source.readinto(view)``, or ``read`` + copy for file objects without ``readinto``."""
    readinto = getattr(source, 'readinto', None)
    if readinto is not None:
        return readinto(view) or 0
    data = source.read(len(view))
    view[:len(data)] = data
    return len(data)


class _TarWriter:
    """The part of ``tarfile.open(mode='w|', format=PAX_FORMAT)`` that :func:`create` needs, without its copies.

    Headers are ``TarInfo.tobuf()`` exactly as tarfile writes them, and the
    end of the archive is padded the same way, so the stream is byte for byte
    what tarfile would write. File content goes from ``readinto`` into one
    reused ``READ_SIZE`` buffer, is hashed there and handed to ``fileobj`` as
    a memoryview (the compressor copies what it keeps): tarfile's stream
    buffer copies every byte four times, which cost more CPU than zstd's
    compression of the text in it.
    """

    def __init__(self, fileobj):
        self._out = fileobj
        self.offset = 0
        self._buffer = bytearray(READ_SIZE)

    def _write(self, data):
        self._out.write(data)
        self.offset += len(data)

    def addfile(self, info, source=None, digest=True):
        """Write ``info``'s header and, when ``source`` is given, ``info.size`` bytes read from it.

        Returns ``(sha256, short)`` of the content (``sha256`` is None when
        ``digest`` is false): a source that ends early is padded with NUL
        bytes, which the hash covers, and ``short`` is then true.
        """
        self._write(info.tobuf(tarfile.PAX_FORMAT, tarfile.ENCODING, 'surrogateescape'))
        if source is None:
            return None, False
        sha = hashlib.sha256() if digest else None
        short = False
        left = info.size
        with memoryview(self._buffer) as view:
            while left > 0:
                want = min(left, READ_SIZE)
                count = 0 if short else _readinto(source, view[:want])
                if not count:
                    short = True
                    view[:want] = bytes(want)
                    count = want
                chunk = view[:count]
                if sha is not None:
                    sha.update(chunk)
                # Pieces of WRITE_PIECE: what a compressor returns per write (gzip
                # returns all of it at once) stays small.
                for start in range(0, count, WRITE_PIECE):
                    self._write(chunk[start:start + WRITE_PIECE])
                chunk.release()
                left -= count
        remainder = info.size % tarfile.BLOCKSIZE
        if remainder:
            self._write(tarfile.NUL * (tarfile.BLOCKSIZE - remainder))
        return sha, short

    def close(self):
        """End-of-archive blocks and the padding to a full record, as tarfile writes them."""
        self._write(tarfile.NUL * (tarfile.BLOCKSIZE * 2))
        remainder = self.offset % tarfile.RECORDSIZE
        if remainder:
            self._write(tarfile.NUL * (tarfile.RECORDSIZE - remainder))


def _tarinfo(name, st, kind, size=0, linkname=''):
    info = tarfile.TarInfo(name)
    info.mode = stat.S_IMODE(st.st_mode) if st is not None else 0o600
    info.mtime = int(st.st_mtime) if st is not None else int(time.time())
    if st is not None:
        info.uid, info.gid = st.st_uid, st.st_gid
    info.type = kind
    info.size = size
    info.linkname = linkname
    return info


def _spool_command(command, dest):
    """Run a command, spooling stdout (hashed) into a bounded SpooledTemporaryFile in ``dest``."""
    # Closed explicitly: the spool is handed to the caller.
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY, dir=dest)  # noqa: SIM115
    errfile = tempfile.TemporaryFile(dir=dest)  # noqa: SIM115
    sha = hashlib.sha256()
    size = 0
    env = None
    if command['env']:
        env = dict(os.environ)
        env.update({str(k): str(v) for k, v in command['env'].items()})
    args = command['argv'] if command['argv'] else ['/bin/sh', '-c', command['shell']]
    try:
        try:
            proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errfile, env=env)
        except OSError as exc:
            raise BackupCommandError('command for {} ({}) could not start: {}'.format(command['name'], args[0], exc))
        deadline = None if not command['timeout'] else time.monotonic() + float(command['timeout'])
        timed_out = False
        try:
            while True:
                chunk = proc.stdout.read(COPY_SIZE)
                if not chunk:
                    break
                spool.write(chunk)
                sha.update(chunk)
                size += len(chunk)
                if deadline is not None and time.monotonic() > deadline:
                    timed_out = True
                    break
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            proc.stdout.close()
        if timed_out:
            proc.kill()
        try:
            remaining = None if deadline is None else max(0.1, deadline - time.monotonic())
            status = proc.wait(timeout=remaining)
        except subprocess.TimeoutExpired:
            proc.kill()
            status = proc.wait()
            timed_out = True
        if timed_out or status != 0:
            errfile.seek(0, os.SEEK_END)
            errfile.seek(max(0, errfile.tell() - STDERR_TAIL))
            tail = errfile.read().decode('utf-8', 'replace').strip()
            what = 'timed out after {}s'.format(command['timeout']) if timed_out else (
                f'was killed by signal {-status}' if status < 0 else f'exited with status {status}')
            raise BackupCommandError('command for {} ({}) {}{}'.format(
                command['name'], ' '.join(args)[:200], what, ': ' + tail if tail else ' (no stderr output)'))
    except BaseException:
        spool.close()
        raise
    finally:
        errfile.close()
    spool.seek(0)
    return spool, size, sha.hexdigest()


def backup_name(now, compression, prefix='', seq=0):
    stamp = now.astimezone(_UTC).strftime(STAMP_FORMAT)
    return prefix + stamp + (f'-{seq}' if seq else '') + SUFFIXES[compression]


def next_backup_name(dest, now, compression, prefix=''):
    """The name :func:`create` gives a backup made at ``now``: ``-1``, ``-2``... is added when taken."""
    seq = 0
    name = backup_name(now, compression, prefix)
    while os.path.lexists(os.path.join(dest, name)) or os.path.lexists(os.path.join(dest, name + MANIFEST_SUFFIX)):
        seq += 1
        name = backup_name(now, compression, prefix, seq)
    return name


def parse_recipients(recipients, passphrase=None):
    """Validate the keys :func:`create` encrypts to; return the recipient objects ([] for a passphrase).

    :raises BackupConfigError: no key, a passphrase together with recipients,
        or a malformed recipient (secret keys given by mistake are never echoed).
    """
    return _parse_keys(recipients, passphrase)


def _parse_keys(recipients, passphrase):
    recips = []
    for recipient in _as_list(recipients):
        if isinstance(recipient, str) and recipient.strip().upper().startswith('AGE-SECRET-KEY-'):
            # Never echo secret key material, even a malformed one.
            raise BackupConfigError('recipient: a secret key (AGE-SECRET-KEY-1...) was given where a public key '
                                    '(age1...) is required')
        try:
            recips.append(age.parse_recipient(recipient))
        except age.AgeKeyError as exc:
            raise BackupConfigError(f'recipient: {exc}')
    if not recips and passphrase is None:
        raise BackupConfigError('backups need at least one age recipient (age1...) or a passphrase')
    if recips and passphrase is not None:
        raise BackupConfigError('a passphrase cannot be combined with recipients (age allows only one scrypt recipient)')
    return recips


def create(dest, sources=(), recipients=None, passphrase=None, commands=(), prefix='', lock_timeout=0,
           lock=True, compression=None, compression_level=None, work_factor=age.DEFAULT_WORK_FACTOR,
           now=None, host=None):
    """Write one encrypted backup into ``dest``; return its description (a dict).

    :param sources: see :func:`normalize_sources`.
    :param commands: see :func:`normalize_commands`; their stdout becomes entries.
    :param recipients: ``age1...`` public keys (or a list); or ``passphrase`` for scrypt.
    :param lock_timeout: seconds to wait for another run (0: fail at once, None: forever).
    :param lock: False when the caller already holds :class:`BackupLock` on ``dest``.
    :param compression: ``'zstd'``/``'gzip'``; default zstd when available.
    :param now: creation time (aware datetime) for the name and manifest; default now.
    :returns: dict with ``archive``, ``manifest``, ``name``, ``created``, ``size``, ``sha256``,
        ``entries`` (count), ``files`` (count of regular files, command output included),
        ``plaintext_size``, ``duration``, ``compression``, ``warnings``.
    :raises BackupLockedError, BackupCommandError, BackupConfigError, BackupError:
        nothing was written then (temp files removed, older backups untouched).
    """
    started = time.monotonic()
    if not age.HAS_CRYPTOGRAPHY:
        raise BackupError('the Python "cryptography" package is required for encrypted backups')
    dest = os.path.abspath(dest)
    if not os.path.isdir(dest):
        raise BackupConfigError(f'backup destination {dest} is not a directory')
    if compression is None:
        compression = 'zstd' if HAS_ZSTANDARD else 'gzip'
    if compression not in SUFFIXES:
        raise BackupConfigError(f'compression must be zstd or gzip, not {compression!r}')
    if compression == 'zstd' and not HAS_ZSTANDARD:
        raise BackupConfigError('zstd compression needs the Python "zstandard" package')
    if compression_level is None:
        compression_level = ZSTD_LEVEL if compression == 'zstd' else GZIP_LEVEL
    low, high = LEVELS[compression]
    if isinstance(compression_level, bool) or not isinstance(compression_level, int) \
            or not low <= compression_level <= high:
        raise BackupConfigError(f'{compression} compression level must be an integer from {low} to {high}, '
                                f'not {compression_level!r}')
    recips = _parse_keys(recipients, passphrase)
    norm_sources = normalize_sources(sources)
    norm_commands = normalize_commands(commands)
    if not norm_sources and not norm_commands:
        raise BackupConfigError('nothing to back up: give sources and/or commands')
    now = now or utcnow()
    if now.tzinfo is None:
        raise BackupConfigError('now must be timezone-aware')
    host = host or socket.gethostname()

    guard = BackupLock(dest, lock_timeout) if lock else _NoLock()
    with guard:
        _cleanup_stale(dest)
        name = next_backup_name(dest, now, compression, prefix)
        archive = os.path.join(dest, name)
        tmp_archive = tmp_manifest = entries = None
        try:
            fd, tmp_archive = tempfile.mkstemp(prefix=f'.{name}.tmp-', suffix=TMP_SUFFIX, dir=dest)
            os.close(fd)
            fd, tmp_manifest = tempfile.mkstemp(prefix='.%s.tmp-' % (name + MANIFEST_SUFFIX), suffix=TMP_SUFFIX, dir=dest)
            os.close(fd)
            try:
                entries, warnings, hashing = _write_archive(
                    tmp_archive, dest, norm_sources, norm_commands, recips, passphrase, work_factor,
                    compression, compression_level, now)
            except OSError as exc:
                raise BackupError(f'backup {name}: writing {dest} failed: {_describe_oserror(exc)}')
            manifest = {
                'format': MANIFEST_FORMAT,
                'version': MANIFEST_VERSION,
                'name': name,
                'created': _iso(now),
                'host': host,
                'tool': TOOL,
                'tool_version': VERSION,
                'compression': compression,
                'compression_level': compression_level,
                'encryption': 'age-v1',
                'passphrase': passphrase is not None,
                'recipients': [age.recipient_fingerprint(r) for r in recips],
                'sources': [dict(s) for s in norm_sources],
                'commands': [{'name': c['name'], 'argv': c['argv'], 'shell': c['shell']} for c in norm_commands],
                'entries': entries,
                'plaintext_size': entries.plaintext_size,
                'archive': {'size': hashing.size, 'sha256': hashing.sha256.hexdigest()},
                'warnings': warnings,
                'duration': round(time.monotonic() - started, 3),
            }
            try:
                with _open_output(tmp_manifest) as handle:
                    writer = _HashingWriter(handle)
                    _write_manifest(writer, manifest)
                    os.fsync(handle.fileno())
                os.chmod(tmp_manifest, 0o600)
                os.rename(tmp_manifest, manifest_path(archive))
                tmp_manifest = None
                os.rename(tmp_archive, archive)
                tmp_archive = None
                _fsync_dir(dest)
            except OSError as exc:
                _unlink_quiet(manifest_path(archive))
                raise BackupError(f'backup {name}: writing the manifest in {dest} failed: {_describe_oserror(exc)}')
        finally:
            if entries is not None:
                entries.close()
            for path in (tmp_archive, tmp_manifest):
                if path is not None:
                    _unlink_quiet(path)
    return {
        'name': name,
        'archive': archive,
        'manifest': manifest_path(archive),
        'created': manifest['created'],
        'size': manifest['archive']['size'],
        'sha256': manifest['archive']['sha256'],
        'entries': len(entries),
        'files': entries.files,
        'plaintext_size': manifest['plaintext_size'],
        'compression': compression,
        'warnings': warnings,
        'duration': round(time.monotonic() - started, 3),
    }


_ENTRIES_PLACEHOLDER = '\0prodready entries\0'
MANIFEST_WRITE_SIZE = 256 * 1024


def _manifest_chunks(manifest):
    """``json.dumps(manifest, indent=1, sort_keys=True) + '\\n'`` in pieces, one entry at a time.

    The manifest of a backup of many files is large (about 200 bytes per
    entry); json.dumps would hold it several times over (its pieces, the
    joined text, the encoded bytes), so only the entries are dumped one by
    one and spliced into the rest, which gives the same text.
    """
    entries = manifest['entries']
    head, tail = json.dumps(dict(manifest, entries=_ENTRIES_PLACEHOLDER), indent=1, sort_keys=True).split(
        json.dumps(_ENTRIES_PLACEHOLDER), 1)
    yield head
    if not entries:
        yield '[]'
    else:
        separator = '[\n  '
        for entry in entries:
            yield separator
            yield json.dumps(entry, indent=1, sort_keys=True).replace('\n', '\n  ')
            separator = ',\n  '
        yield '\n ]'
    yield tail + '\n'


def _write_manifest(writer, manifest):
    batch = []
    size = 0
    for chunk in _manifest_chunks(manifest):
        batch.append(chunk)
        size += len(chunk)
        if size >= MANIFEST_WRITE_SIZE:
            writer.write(''.join(batch).encode('utf-8'))
            batch = []
            size = 0
    if batch:
        writer.write(''.join(batch).encode('utf-8'))


class _RecordSpool:
    """Small JSON records in an unnamed temporary file, read back in order or in reverse order.

    Keeps on disk rather than in memory what grows with the number of
    entries: a backup's manifest entries (:class:`_EntrySpool`) and what
    :func:`restore` keeps of each staged entry until it is moved into place.
    The file has no name, and is gone when closed or when the process dies.
    Each record is framed by its length on both sides.
    """

    _LENGTH = struct.Struct('<I')

    def __init__(self, directory):
        self._file = tempfile.TemporaryFile(mode='w+b', dir=directory)
        self._end = 0
        self._reading = False

    def append(self, record):
        """Add a record (not while iterating over this spool)."""
        if self._reading:
            self._file.seek(self._end)
            self._reading = False
        # ensure_ascii (the default) keeps the lone surrogates of names that are not UTF-8
        data = json.dumps(record, separators=(',', ':')).encode('ascii')
        length = self._LENGTH.pack(len(data))
        self._file.write(length + data + length)
        self._end += len(data) + 2 * self._LENGTH.size

    def __iter__(self):
        size = self._LENGTH.size
        self._reading = True
        self._file.seek(0)
        position = 0
        while position < self._end:
            length = self._LENGTH.unpack(self._file.read(size))[0]
            data = self._file.read(length + size)[:length]
            position += length + 2 * size
            yield json.loads(data)

    def __reversed__(self):
        size = self._LENGTH.size
        self._reading = True
        position = self._end
        while position > 0:
            self._file.seek(position - size)
            length = self._LENGTH.unpack(self._file.read(size))[0]
            position -= length + 2 * size
            self._file.seek(position + size)
            yield json.loads(self._file.read(length))

    def close(self):
        self._file.close()


class _EntrySpool(_RecordSpool):
    """The manifest entries of the backup being written, on disk rather than in memory.

    In an unnamed temporary file in the backup directory, read back once
    for the manifest, so a backup's memory does not grow with its number of
    files. The totals the result reports are kept as entries arrive.
    """

    def __init__(self, directory):
        super().__init__(directory)
        self.count = 0
        self.files = 0
        self.plaintext_size = 0

    def append(self, record):
        super().append(record)
        self.count += 1
        self.files += record.get('type') == 'file'
        self.plaintext_size += record.get('size', 0)

    def __len__(self):
        return self.count


def _seen_key(name):
    """A short fixed-size stand-in for an archive name in the duplicate check (16 bytes, not the path)."""
    return hashlib.blake2b(name.encode('utf-8', 'surrogateescape'), digest_size=16).digest()


def _sources_overlap(sources):
    """Whether one source lies inside another (or is the same): only then can two walks yield one name."""
    roots = sorted(posixpath.normpath(s['path']) for s in sources)
    for i, first in enumerate(roots):
        for other in roots[i + 1:]:
            if first == '/' or first == other or other.startswith(first + '/'):
                return True
    return False


def _write_archive(path, dest, sources, commands, recips, passphrase, work_factor, compression, level, now):
    entries = _EntrySpool(dest)
    warnings = []
    seen = set()  # command names, and keys of the walked names when sources overlap
    track_walked = _sources_overlap(sources)
    now_ts = now.timestamp()
    with _open_output(path) as raw:
        hashing = _HashingWriter(raw)
        encryptor = age.Encryptor(hashing, recips or None, passphrase=passphrase, work_factor=work_factor)
        behind = _WriteBehind(encryptor)
        compressor = None
        try:
            compressor = _compressor(compression, behind, level)
            tar = _TarWriter(compressor)
            for command in commands:
                if _seen_key(command['name']) in seen:
                    raise BackupConfigError('two entries are named {}'.format(command['name']))
                seen.add(_seen_key(command['name']))
                spool, size, digest = _spool_command(command, dest)
                with spool:
                    info = _tarinfo(command['name'], None, tarfile.REGTYPE, size)
                    info.mode = 0o600
                    tar.addfile(info, spool, digest=False)  # hashed while spooling
                entries.append({'name': command['name'], 'type': 'file', 'size': size,
                                'sha256': digest, 'mode': '0600', 'command': True})
            for source in sources:
                for abs_path, arcname, st in _walk_source(source, now_ts):
                    key = _seen_key(arcname)
                    if key in seen:
                        continue
                    entry = _add_path(tar, abs_path, arcname, st, warnings)
                    if entry is not None:
                        if track_walked:
                            seen.add(key)
                        entries.append(entry)
            tar.close()
            compressor.close()
            behind.close()
        except BaseException:
            # Abort first: nothing written afterwards reaches the file, which
            # is deleted anyway; then silence the half-closed stream objects.
            entries.close()
            behind.abort()
            encryptor.abort()
            if compressor is not None:
                try:
                    compressor.close()
                except Exception:  # noqa: BLE001, S110  # pylint: disable=broad-except
                    pass  # the original error matters, not the half-closed stream's
            raise
        encryptor.close()
        raw.flush()
        os.fsync(raw.fileno())
    return entries, warnings, hashing


def _add_path(tar, abs_path, arcname, st, warnings):
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISDIR(st.st_mode):
        tar.addfile(_tarinfo(arcname, st, tarfile.DIRTYPE))
        return {'name': arcname, 'type': 'dir', 'mode': f'{mode:04o}'}
    if stat.S_ISLNK(st.st_mode):
        try:
            target = os.readlink(abs_path)
        except OSError as exc:
            warnings.append(f'skipped {abs_path}: {exc}')
            return None
        tar.addfile(_tarinfo(arcname, st, tarfile.SYMTYPE, linkname=target))
        return {'name': arcname, 'type': 'symlink', 'linkname': target, 'mode': f'{mode:04o}'}
    if not stat.S_ISREG(st.st_mode):
        warnings.append(f'skipped {abs_path}: not a regular file, directory or symlink')
        return None
    try:
        handle = open(abs_path, 'rb', buffering=0)  # noqa: SIM115 (closed by the with below)
    except FileNotFoundError:
        warnings.append(f'skipped {abs_path}: vanished before it was read')
        return None
    except OSError as exc:
        raise BackupError(f'cannot read {abs_path}: {exc}')
    with handle:
        fst = os.fstat(handle.fileno())
        if not stat.S_ISREG(fst.st_mode):
            warnings.append(f'skipped {abs_path}: replaced while reading')
            return None
        sha, short = tar.addfile(_tarinfo(arcname, fst, tarfile.REGTYPE, fst.st_size), handle)
        if short:
            warnings.append(f'{abs_path} shrank while it was read; the entry is padded with NUL bytes')
    return {'name': arcname, 'type': 'file', 'size': fst.st_size, 'sha256': sha.hexdigest(),
            'mode': sys.intern(f'{stat.S_IMODE(fst.st_mode):04o}')}


# ---------------------------------------------------------------------------
# Verify


class _Entry(tuple):
    """A manifest entry as verification and restore need it: a tuple with the ``get`` of a dict.

    A backup of many files has a large manifest; as tuples with shared type
    strings its entries take less than half the memory of dicts.
    """

    __slots__ = ()
    FIELDS = ('name', 'type', 'size', 'sha256', 'linkname')

    def get(self, key, default=None):
        try:
            value = self[self.FIELDS.index(key)]
        except ValueError:
            return default
        return default if value is None else value


def _compact_entry(pairs):
    """``object_pairs_hook``: objects with a name and a type (the entries) become :class:`_Entry` tuples."""
    obj = dict(pairs)
    if 'name' not in obj or 'type' not in obj or not isinstance(obj['type'], str):
        return obj
    return _Entry((obj['name'], sys.intern(obj['type']), obj.get('size'), obj.get('sha256'), obj.get('linkname')))


MANIFEST_READ_SIZE = 64 * 1024           # manifest bytes read at a time, and text kept ahead of the decoder
MANIFEST_ENTRY_MAX = 1024 * 1024         # longest manifest entry accepted, in characters (ours: a few KiB at most)
MANIFEST_VALUE_MAX = 256 * 1024 * 1024   # longest other top-level value (sources, warnings...)
_JSON_SPACE = re.compile(r'[ \t\n\r]*')
_PLAIN_JSON = json.JSONDecoder()
_COMPACT_JSON = json.JSONDecoder(object_pairs_hook=_compact_entry)


class _JsonStream:
    """A JSON text read from a file descriptor in bounded pieces, one complete value at a time.

    The caller walks the structure around the values (:meth:`peek`,
    :meth:`expect`) and decodes each value with :meth:`value`
    (``json.JSONDecoder.raw_decode``): only that value and about
    ``MANIFEST_READ_SIZE`` characters ahead of it are in memory. Reads use
    ``os.pread`` from ``offset``, so several streams can share one
    descriptor. Any JSON whitespace is accepted between the tokens. Errors
    raise ValueError naming the byte offset in the file.
    """

    def __init__(self, fd, offset):
        self._fd = fd
        self._next = offset          # file offset of the next read
        self._utf8 = codecs.getincrementaldecoder('utf-8')()
        self._buf = ''
        self._pos = 0
        self._eof = False

    def _fill(self, want):
        """Buffer at least ``want`` characters from the current position, fewer only at the end of the file."""
        if self._pos:
            self._buf = self._buf[self._pos:]
            self._pos = 0
        parts = [self._buf]
        have = len(self._buf)
        while have < want and not self._eof:
            data = os.pread(self._fd, max(MANIFEST_READ_SIZE, want - have), self._next)
            try:
                text = self._utf8.decode(data, final=not data)
            except UnicodeDecodeError as exc:
                raise ValueError(f'not UTF-8 text (byte {self._next + exc.start})')
            self._next += len(data)
            self._eof = not data
            parts.append(text)
            have += len(text)
        self._buf = ''.join(parts)

    def offset(self, pos=None):
        """Byte offset in the file of the character at ``pos`` of the buffer (default: the current position)."""
        pos = self._pos if pos is None else pos
        pending = len(self._utf8.getstate()[0])  # bytes of a character split by a read
        return self._next - pending - len(self._buf[pos:].encode('utf-8'))

    def peek(self):
        """The next character that is not whitespace ('' at the end of the file); it is not consumed."""
        while True:
            self._pos = _JSON_SPACE.match(self._buf, self._pos).end()
            if self._pos < len(self._buf):
                return self._buf[self._pos]
            if self._eof:
                return ''
            self._fill(MANIFEST_READ_SIZE)

    def expect(self, chars):
        """Consume the next character, which must be one of ``chars``; return it."""
        char = self.peek()
        if not char or char not in chars:
            found = repr(char) if char else 'the end of the file'
            wanted = ' or '.join(repr(c) for c in chars)
            raise ValueError(f'expecting {wanted} at byte {self.offset()}, found {found}')
        self._pos += 1
        return char

    def value(self, limit, decoder=_PLAIN_JSON):
        """Decode and consume the complete JSON value that starts at the next character.

        The decoder fails on a value cut by the end of the buffer as on a
        malformed one: more is read only when the error could come from the
        cut (at the end of the buffer, or in a string not closed before it),
        and at most about ``limit`` characters: a longer value is an error.
        """
        if not self.peek():
            raise ValueError(f'expecting a value at byte {self.offset()}, found the end of the file')
        if len(self._buf) - self._pos < MANIFEST_READ_SIZE:
            self._fill(MANIFEST_READ_SIZE)
        while True:
            have = len(self._buf) - self._pos
            try:
                value, end = decoder.raw_decode(self._buf, self._pos)
            except json.JSONDecodeError as exc:
                cut = exc.pos >= len(self._buf) - 16 or exc.msg.startswith('Unterminated string')
                if have > limit:
                    raise ValueError(f'a value longer than {limit} characters at byte {self.offset()}')
                if self._eof or not cut:
                    raise ValueError(f'{exc.msg} at byte {self.offset(exc.pos)}')
                self._fill(min(2 * have, limit + 1))
                continue
            if end == len(self._buf) and not self._eof:  # a number may go on after the buffer
                self._fill(have + MANIFEST_READ_SIZE)
                continue
            self._pos = end
            return value


class ManifestReader:
    """The manifest of a backup read in bounded memory: its header, then its entries one at a time.

    The manifest of a backup of many files is large (about 200 bytes of JSON
    per entry); verification and restore read its entries as they go, in the
    order of the archive's members, instead of holding them all. Opening
    reads the file once (every top-level value except ``entries``, and the
    number of entries) and validates it as :func:`load_manifest` does:

    * ``header``: the manifest without ``entries``;
    * ``count``: the number of entries;
    * :meth:`entries`: iterates over the entries, from the file, on every
      call (several iterations may run at once); as :class:`_Entry` tuples
      when ``compact``, as dicts otherwise.

    Any JSON layout is accepted, not only the one :func:`create` writes.
    Raises :class:`BackupIntegrityError` naming the file (missing, not JSON,
    not a manifest, a single entry longer than ``MANIFEST_ENTRY_MAX``).
    ``validate=False`` only requires a JSON object. Close it (or use it as a
    context manager): it keeps the file open, so that all iterations read
    the same file.
    """

    def __init__(self, archive, compact=True, validate=True):
        self.archive = archive
        self.name = os.path.basename(archive)
        self.path = manifest_path(archive)
        self._decoder = _COMPACT_JSON if compact else _PLAIN_JSON
        self._entries_at = None
        self._fd = None
        self.count = 0
        self.header = {}
        try:
            self._fd = os.open(self.path, os.O_RDONLY | getattr(os, 'O_CLOEXEC', 0))
        except FileNotFoundError:
            raise BackupIntegrityError(f'backup {self.name}: manifest {os.path.basename(self.path)} is missing')
        except OSError as exc:
            raise self._unreadable(exc)
        try:
            self._read_header(validate)
        except BaseException:
            self.close()
            raise

    def _unreadable(self, exc):
        return BackupIntegrityError(f'backup {self.name}: manifest {os.path.basename(self.path)} is unreadable: {exc}')

    def _not_manifest(self):
        return BackupIntegrityError(f'backup {self.name}: {os.path.basename(self.path)} is not a backup manifest')

    def _read_header(self, validate):
        stream = _JsonStream(self._fd, 0)
        header = self.header
        try:
            if stream.peek() != '{':
                stream.value(MANIFEST_VALUE_MAX)
                if stream.peek():
                    raise ValueError(f'extra data at byte {stream.offset()}')
                raise self._not_manifest()
            stream.expect('{')
            if stream.peek() == '}':
                stream.expect('}')
            else:
                while True:
                    if stream.peek() != '"':
                        raise ValueError(f'expecting a property name in double quotes at byte {stream.offset()}')
                    key = stream.value(MANIFEST_VALUE_MAX)
                    stream.expect(':')
                    if key == 'entries' and stream.peek() == '[':
                        self._entries_at = stream.offset()  # the last "entries" counts, as for json.loads
                        self.count = 0
                        stream.expect('[')
                        for _entry in self._array(stream):
                            self.count += 1
                    elif key == 'entries':  # not a list: invalid
                        self._entries_at = None
                        self.count = 0
                        stream.value(MANIFEST_VALUE_MAX)
                    else:
                        header[key] = stream.value(MANIFEST_VALUE_MAX)
                    if stream.expect(',}') == '}':
                        break
            if stream.peek():
                raise ValueError(f'extra data at byte {stream.offset()}')
        except (OSError, ValueError) as exc:
            raise self._unreadable(exc)
        if not validate:
            return
        if header.get('format') != MANIFEST_FORMAT:
            raise self._not_manifest()
        arch = header.get('archive')
        if not isinstance(arch, dict) or not isinstance(arch.get('size'), int) or not isinstance(arch.get('sha256'), str) \
                or self._entries_at is None:
            raise BackupIntegrityError(f'backup {self.name}: manifest {os.path.basename(self.path)} '
                                       'lacks the archive checksum or entry list')

    def _array(self, stream, decoder=_PLAIN_JSON):
        """The values of the array whose ``[`` was just consumed."""
        if stream.peek() == ']':
            stream.expect(']')
            return
        while True:
            yield stream.value(MANIFEST_ENTRY_MAX, decoder)
            if stream.expect(',]') == ']':
                return

    def entries(self):
        """Iterate over the manifest entries (:class:`_Entry` tuples when ``compact``, else dicts)."""
        if self._entries_at is None:
            return
        stream = _JsonStream(self._fd, self._entries_at)
        try:
            stream.expect('[')
            yield from self._array(stream, self._decoder)
        except (OSError, ValueError) as exc:
            raise self._unreadable(exc)

    def close(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc_value, tb):
        self.close()


def load_manifest(archive, compact=False):
    """Read and minimally validate the manifest of ``archive``; raise BackupIntegrityError.

    The whole manifest, entries included, as one dict. ``compact`` returns
    the entries as tuples with a dict-like ``get`` for ``name``, ``type``,
    ``size``, ``sha256`` and ``linkname`` only. Verification and restore do
    not use this: :class:`ManifestReader` reads the entries one at a time.
    """
    with ManifestReader(archive, compact=compact) as reader:
        manifest = dict(reader.header)
        manifest['entries'] = list(reader.entries())
    return manifest


def parse_identities(identity, passphrase=None):
    """Turn ``identity`` into age identity objects, as :func:`verify` and :func:`restore` do.

    ``identity`` is an ``AGE-SECRET-KEY-1...`` string, the text of an
    identity file (several lines, ``#`` comments), the path of an identity
    file, identity objects, or a list of those. Returns None when neither
    ``identity`` nor ``passphrase`` is given (shallow verification), ``[]``
    for a passphrase alone.

    :raises BackupConfigError: unreadable file or malformed key; the message
        never contains secret key material.
    """
    if identity is None and passphrase is None:
        return None
    if identity is None:
        return []
    if isinstance(identity, str) and '\n' in identity.strip():
        try:
            return age.parse_identities(identity)
        except age.AgeKeyError as exc:
            raise BackupConfigError(f'identity: {exc}')
    result = []
    for item in _as_list(identity):
        if isinstance(item, str) and os.path.isfile(item):
            try:
                with open(item) as handle:
                    result.extend(age.parse_identities(handle.read()))
            except (OSError, UnicodeDecodeError) as exc:
                raise BackupConfigError(f'cannot read the identity file {item}: {exc}')
            except age.AgeKeyError as exc:
                raise BackupConfigError(f'identity file {item}: {exc}')
            continue
        looks_like_key = not isinstance(item, str) or item.strip().lower().startswith('age')
        try:
            result.append(age.parse_identity(item))
        except age.AgeKeyError as exc:
            if looks_like_key:
                raise BackupConfigError(f'identity: {exc}')
            raise BackupConfigError(f'identity {item!r} is neither an existing identity file '
                                    'nor an age secret key (AGE-SECRET-KEY-1...)')
    return result


_parse_identities = parse_identities


class _NameSet:
    """The entry names met so far in an archive, 8 bytes each, with a flag for the regular files.

    Deep verification and restore check that no name appears twice and that
    a hard link points to a regular file met before it; a set of the names
    would cost about 100 bytes per entry, this table costs 12 (an
    open-addressing table of 64-bit keyed BLAKE2b digests, at most 2/3
    full, in an ``array``). The key is random per table, so names cannot be
    crafted to collide; between honest names a collision has a probability
    of about n**2 / 2**64 (1e-8 for a million entries), and would only
    report a name twice or accept a hard link that restore's own check of
    the staged target then refuses.
    """

    def __init__(self, capacity):
        self._key = os.urandom(16)
        self._used = 0
        self._slots = array.array('Q', [0]) * max(16, capacity * 3 // 2 + 1)

    def _digest(self, name):
        value = int.from_bytes(hashlib.blake2b(name.encode('utf-8', 'surrogateescape'), digest_size=8,
                                               key=self._key).digest(), 'little')
        return (value & ~1) or 2  # bit 0 is the regular-file flag; 0 marks a free slot

    def _find(self, digest):
        slots = self._slots
        size = len(slots)
        index = (digest >> 1) % size
        while slots[index] and slots[index] & ~1 != digest:
            index = (index + 1) % size
        return index

    def add(self, name, regular):
        """Record ``name``; False (and nothing recorded) when it was there already."""
        if 3 * (self._used + 1) > 2 * len(self._slots):
            self._grow()
        digest = self._digest(name)
        index = self._find(digest)
        if self._slots[index]:
            return False
        self._slots[index] = digest | bool(regular)
        self._used += 1
        return True

    def is_regular(self, name):
        """Whether ``name`` was recorded as a regular file."""
        return bool(self._slots[self._find(self._digest(name))] & 1)

    def _grow(self):
        old = self._slots
        self._slots = array.array('Q', [0]) * (2 * len(old))
        for value in old:
            if value:
                self._slots[self._find(value & ~1)] = value

    def __len__(self):
        return self._used


def _check_member_safe(member, name, seen):
    """Raise RestoreRefusedError for entries that must never be extracted (``seen``: a :class:`_NameSet`)."""
    safe = _safe_member_name(member.name)
    if safe is None:
        raise RestoreRefusedError(f'backup {name}: refusing entry {member.name!r}: absolute path, ".." component or empty name')
    if member.isdev() or member.isfifo() or not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        raise RestoreRefusedError(f'backup {name}: refusing entry {safe}: device, FIFO or unsupported file type')
    if member.issym():
        target = member.linkname
        if not target or target.startswith('/'):
            raise RestoreRefusedError(f'backup {name}: refusing symlink {safe} -> {target}: absolute or empty link target')
        joined = posixpath.normpath(posixpath.join(posixpath.dirname(safe), target))
        if joined == '..' or joined.startswith(('../', '/')):
            raise RestoreRefusedError(f'backup {name}: refusing symlink {safe} -> {target}: it points outside the target')
    if member.islnk():
        target = _safe_member_name(member.linkname)
        if target is None or not seen.is_regular(target):
            raise RestoreRefusedError(f'backup {name}: refusing hard link {safe} -> {member.linkname}: the target is not a file of this archive')
    return safe


def _entry_name(entry, name):
    """The name of a manifest entry; BackupIntegrityError when the entry is malformed."""
    if not isinstance(entry, (dict, _Entry)) or not isinstance(entry.get('name'), str):
        text = repr(entry)
        raise BackupIntegrityError('backup {}: malformed manifest entry {}'.format(
            name, text if len(text) <= 200 else text[:200] + '...'))
    return entry.get('name')


def _scan(archive, manifest, identities, passphrase, max_work_factor, visit=None):
    """One streaming pass: decrypt, decompress, check each entry and the archive checksum.

    ``manifest`` is a :class:`ManifestReader`. ``visit(member, safe_name,
    reader_or_None)`` is called for each entry; for regular files it must
    read the data through ``reader`` (a hashing reader: ``read(size)``
    returns up to ``size`` bytes, an empty buffer at the end of the entry)
    or leave it to this function. Returns the number of entries.

    Member *i* of the archive must be entry *i* of the manifest:
    :func:`create` appends each entry to the manifest as it writes the
    member (command outputs, then each source's walk, skipping the names
    already written; it writes no hard links), as every earlier version
    did. So the entries are read from the manifest alongside the members,
    and memory does not grow with their number: duplicates and hard-link
    targets are checked against a :class:`_NameSet` (12 bytes per name).

    Decryption and decompression run in a :class:`_ReadAhead` thread; the
    tar stream is parsed by :class:`_TarReader` in this one.
    """
    name = os.path.basename(archive)
    header = manifest.header
    expected = manifest.entries()
    seen = _NameSet(min(manifest.count, 1 << 20))  # it grows past that: sized by the members found, not by the manifest
    position = 0
    with open(archive, 'rb') as raw:
        counter = _CountingReader(raw)

        def checksum_error():
            counter.drain()
            digest = counter.sha256.hexdigest()
            if digest != header['archive']['sha256'] or counter.size != header['archive']['size']:
                return BackupIntegrityError('backup {}: archive checksum mismatch (manifest {}, file {})'.format(name, header['archive']['sha256'], digest))
            return None

        try:
            decryptor = age.Decryptor(counter, identities, passphrase=passphrase, max_work_factor=max_work_factor)
        except age.NoIdentityMatchError:
            # A damaged recipient stanza looks like a wrong key: tell them apart by the checksum.
            err = checksum_error()
            if err is not None:
                raise err
            to = ', '.join(header.get('recipients') or []) or 'a passphrase'
            raise BackupDecryptError(f'backup {name}: none of the given identities can decrypt it (it was encrypted to {to})')
        except age.AgeKeyError as exc:
            raise BackupDecryptError(f'backup {name}: {exc}')
        except age.AgeError as exc:
            raise checksum_error() or BackupIntegrityError(f'backup {name}: corrupt age header: {exc}')
        try:
            stream = _decompressor(header.get('compression'), decryptor)
            ahead = _ReadAhead(stream)
            try:
                tar = _TarReader(ahead.read)
                for member in tar:
                    safe = _check_member_safe(member, name, seen)
                    kind = 'file' if member.isfile() else 'dir' if member.isdir() else \
                        'symlink' if member.issym() else 'hardlink'
                    if not seen.add(safe, kind == 'file'):
                        raise BackupIntegrityError(f'backup {name}: entry {safe} appears twice')
                    entry = next(expected, None)
                    if entry is None:
                        raise BackupIntegrityError(f'backup {name}: entry {safe} is not in the manifest '
                                                   f'(it lists {manifest.count} entries, the archive has more)')
                    listed = _entry_name(entry, name)
                    if listed != safe:
                        raise BackupIntegrityError(f'backup {name}: entry {safe} is not in the manifest where the '
                                                   f'archive has it: manifest entry {position + 1} is {listed} (the '
                                                   'manifest lists the entries in the order of the archive)')
                    position += 1
                    if entry.get('type') != kind:
                        raise BackupIntegrityError('backup {}: entry {} is a {}, the manifest says {}'.format(name, safe, kind, entry.get('type')))
                    if kind in ('symlink', 'hardlink') and entry.get('linkname') not in (None, member.linkname):
                        raise BackupIntegrityError(f'backup {name}: link {safe} target differs from the manifest')
                    if kind == 'file':
                        reader = _MemberReader(tar)
                        if visit is not None:
                            visit(member, safe, reader)
                        while reader.read(READ_SIZE):
                            pass
                        if member.size != entry.get('size') or reader.sha256.hexdigest() != entry.get('sha256'):
                            raise BackupIntegrityError(f'backup {name}: entry {safe} does not match the manifest '
                                                       f'(size {member.size}, sha256 {reader.sha256.hexdigest()})')
                    elif visit is not None:
                        visit(member, safe, None)
                missing = [_entry_name(entry, name) for _index, entry in zip(range(5), expected)]
                if missing:
                    raise BackupIntegrityError(f'backup {name}: {manifest.count - position} manifest entries are missing '
                                               f'from the archive: {", ".join(missing)}')
                tar.drain()  # gzip/zstd trailer checks
            finally:
                ahead.close()  # the thread has stopped: counter, decryptor and stream are this thread's again
                stream.close()
            decryptor.finish()
        except age.AgeIntegrityError as exc:
            raise checksum_error() or BackupIntegrityError(f'backup {name}: decryption failed, the archive is damaged: {exc}')
        except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error, _ZstdError) as exc:
            raise checksum_error() or BackupIntegrityError(f'backup {name}: corrupt archive content: {exc}')
        except BackupIntegrityError:
            err = checksum_error()
            if err is not None:
                raise err
            raise
        counter.drain()
    digest = counter.sha256.hexdigest()
    if digest != header['archive']['sha256'] or counter.size != header['archive']['size']:
        raise BackupIntegrityError('backup {}: archive checksum mismatch (manifest {}, file {})'.format(name, header['archive']['sha256'], digest))
    return position


def _shallow(archive, manifest):
    name = os.path.basename(archive)
    try:
        size = os.path.getsize(archive)
    except OSError as exc:
        raise BackupIntegrityError(f'backup {name}: archive unreadable: {exc}')
    if size != manifest['archive']['size']:
        raise BackupIntegrityError(f'backup {name}: archive size mismatch '
                                   f'(manifest {manifest["archive"]["size"]} bytes, file {size} bytes)')
    sha = hashlib.sha256()
    with open(archive, 'rb') as handle:
        while True:
            chunk = handle.read(1024 * 1024)
            if not chunk:
                break
            sha.update(chunk)
    if sha.hexdigest() != manifest['archive']['sha256']:
        raise BackupIntegrityError('backup {}: archive checksum mismatch (manifest {}, file {})'.format(name, manifest['archive']['sha256'], sha.hexdigest()))


def verify(archive, identity=None, passphrase=None, mark=False, max_work_factor=age.MAX_WORK_FACTOR):
    """Verify a backup; deep when ``identity`` (or ``passphrase``) is given, shallow otherwise.

    Shallow: manifest present and readable, archive size and SHA-256 match.
    Deep (one streaming pass): additionally decrypt, decompress and check every
    entry's type, size and SHA-256 against the manifest, with no entry missing
    or extra, and every entry safe to restore. ``mark`` writes the
    ``NAME.verified`` marker after a successful deep verification.

    :returns: dict ``name, archive, mode ('shallow'|'deep'), size, entries``.
    :raises BackupIntegrityError, BackupDecryptError, RestoreRefusedError.
    """
    archive = os.path.abspath(archive)
    with ManifestReader(archive) as manifest:
        identities = _parse_identities(identity, passphrase)
        if identities is None:
            _shallow(archive, manifest.header)
            mode = 'shallow'
        else:
            _scan(archive, manifest, identities or None, passphrase, max_work_factor)
            mode = 'deep'
            if mark:
                _write_marker(archive)
        return {'name': os.path.basename(archive), 'archive': archive, 'mode': mode,
                'size': manifest.header['archive']['size'], 'entries': manifest.count,
                'created': manifest.header.get('created')}


def _write_marker(archive):
    path = verified_path(archive)
    tmp = f'{path}.tmp-{os.getpid()}'
    try:
        with open(tmp, 'w') as handle:
            json.dump({'verified': _iso(utcnow()), 'mode': 'deep', 'tool_version': VERSION}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.rename(tmp, path)
    except OSError as exc:
        _unlink_quiet(tmp)
        raise BackupError(f'backup {os.path.basename(archive)}: cannot write the verification marker: {exc}')


# ---------------------------------------------------------------------------
# Restore


MEMBERS_LISTED = 1000    # entry names restore() returns in members (and overwritten); the totals count them all
PARENT_CACHE = 4096      # directories restore() remembers as created and checked (a cache: cleared when full)


def _list_member(stats, key, safe):
    stats[key + '_total'] += 1
    if len(stats[key]) < MEMBERS_LISTED:
        stats[key].append(safe)


def _selected(name, only):
    if not only:
        return True
    for pattern in only:
        pattern = pattern.strip('/')
        if name == pattern or name.startswith(pattern + '/') or fnmatch.fnmatchcase(name, pattern):
            return True
    return False


def _inside(path, root):
    return path == root or path.startswith(root.rstrip('/') + '/')


def _remember(cache, item):
    if len(cache) >= PARENT_CACHE:
        cache.clear()
    cache.add(item)


def restore(archive, target, identity=None, passphrase=None, overwrite=False, only=None, restore_owner=False,
            max_work_factor=age.MAX_WORK_FACTOR, dry_run=False):
    """Deep-verify ``archive`` and extract it (or the entries matching ``only``) into ``target``.

    One streaming pass: entries are checked (absolute paths, ``..``, symlinks
    or hard links escaping the target, devices: :class:`RestoreRefusedError`)
    and written into a private staging directory ``target/.restore-*``
    while every entry's SHA-256 and the archive checksum are verified. Only
    when the whole archive verified are the entries renamed into place (each
    rename is atomic); on any failure the staging directory is removed and
    ``target`` is left as it was. Existing non-directories are refused
    (before decrypting, from the manifest) unless ``overwrite``. Parents that
    resolve outside ``target`` (pre-existing symlinks) are refused. Modes and
    mtimes are restored; owners only when ``restore_owner`` and running as root.

    ``dry_run`` deep-verifies the archive and runs the same checks (unsafe
    entries, existing files, parents resolving outside ``target``) but writes
    nothing, not even ``target``; links that resolve outside the target only
    through other links of the archive are caught by the real run alone.

    Memory does not grow with the number of entries: the manifest is read as
    the archive is (:class:`ManifestReader`), and what is kept of each staged
    entry until the renames is in an unnamed file in the staging directory
    (:class:`_RecordSpool`).

    :returns: dict ``name, target, files, dirs, links, bytes``, ``members``
        (the first ``MEMBERS_LISTED`` entry names written, in archive order)
        and ``members_total`` (their number), ``overwritten`` (the first
        ``MEMBERS_LISTED`` existing non-directories replaced) and
        ``overwritten_total``, and ``dry_run``.
    """
    archive = os.path.abspath(archive)
    if identity is None and passphrase is None:
        raise BackupConfigError('restore needs an identity (AGE-SECRET-KEY-1...) or the passphrase')
    with ManifestReader(archive) as manifest:
        return _restore(archive, manifest, target, identity, passphrase, overwrite, only, restore_owner,
                        max_work_factor, dry_run)


def _restore(archive, manifest, target, identity, passphrase, overwrite, only, restore_owner, max_work_factor, dry_run):
    name = os.path.basename(archive)
    identities = _parse_identities(identity, passphrase) or None
    only = _as_list(only)
    target = os.path.abspath(target)
    if not dry_run:
        os.makedirs(target, exist_ok=True)
    real_target = os.path.realpath(target)

    stats = {'name': name, 'target': target, 'files': 0, 'dirs': 0, 'links': 0, 'bytes': 0,
             'members': [], 'members_total': 0, 'overwritten': [], 'overwritten_total': 0,
             'dry_run': bool(dry_run)}
    selected = 0
    conflicts = []
    conflicts_total = 0
    for entry in manifest.entries():
        if not isinstance(entry, (dict, _Entry)):
            continue  # malformed: _scan refuses it
        safe = _safe_member_name(str(entry.get('name', '')))
        if safe is None or not _selected(safe, only):
            continue
        selected += 1
        path = os.path.join(real_target, safe)
        if not os.path.lexists(path):
            continue
        conflict = None
        if entry.get('type') == 'dir':
            if not os.path.isdir(path):
                conflict = safe + ' (exists and is not a directory)'
        elif os.path.isdir(path) and not os.path.islink(path):
            conflict = safe + ' (is a directory)'
        elif not overwrite:
            conflict = safe
        else:
            _list_member(stats, 'overwritten', safe)
        if conflict is not None:
            conflicts_total += 1
            if len(conflicts) < 10:
                conflicts.append(conflict)
    if only and not selected:
        raise RestoreRefusedError(f'backup {name}: no entry matches {", ".join(only)}')
    if conflicts_total:
        raise RestoreRefusedError(f'backup {name}: refusing to overwrite {conflicts_total} existing path(s) in {target} '
                                  f'(use overwrite): {", ".join(conflicts)}')

    if dry_run:
        _restore_dry_run(archive, manifest, identities, passphrase, max_work_factor, only, real_target, stats)
        return stats
    staging = tempfile.mkdtemp(prefix='.restore-', dir=real_target)
    as_root = restore_owner and hasattr(os, 'geteuid') and os.geteuid() == 0
    mode_mask = 0o7777 if as_root else 0o1777
    # Parent directories already created and checked (realpath costs an lstat per
    # path component, per file). Emptied whenever a symlink appears, since a link
    # can change where a path leads; files and directories cannot.
    staged_parents = set()
    final_parents = set()
    staged = dirs = None

    def staged_parent(safe):
        parent = os.path.join(staging, posixpath.dirname(safe))
        if parent in staged_parents:
            return parent
        os.makedirs(parent, mode=0o700, exist_ok=True)
        if not _inside(os.path.realpath(parent), staging):
            raise RestoreRefusedError(f'backup {name}: refusing {safe}: its directory resolves outside the target')
        _remember(staged_parents, parent)
        return parent

    def stage(member, safe, reader):
        if not _selected(safe, only):
            return
        path = os.path.join(staged_parent(safe), posixpath.basename(safe))
        if member.isdir():
            if not os.path.isdir(path):
                os.mkdir(path, 0o700)
        elif member.issym():
            staged_parents.clear()
            os.symlink(member.linkname, path)
            if not _inside(os.path.realpath(path), staging):
                raise RestoreRefusedError(f'backup {name}: refusing symlink {safe} -> {member.linkname}: '
                                          'it resolves outside the target')
        elif member.islnk():
            source = os.path.join(staging, _safe_member_name(member.linkname))
            if not os.path.isfile(source) or os.path.islink(source):
                raise RestoreRefusedError(f'backup {name}: refusing hard link {safe}: target {member.linkname} '
                                          'was not restored')
            os.link(source, path)
        else:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, 'O_NOFOLLOW', 0), 0o600)
            with open(fd, 'wb', buffering=0) as out:
                while True:
                    chunk = reader.read(READ_SIZE)
                    if not chunk:
                        break
                    _write_all(out, chunk)
                if as_root:
                    os.fchown(fd, member.uid, member.gid)
                os.fchmod(fd, member.mode & mode_mask)
                if os.utime in os.supports_fd:
                    os.utime(fd, (member.mtime, member.mtime))
                else:
                    os.utime(path, (member.mtime, member.mtime))
        kind = 'dir' if member.isdir() else 'symlink' if member.issym() else 'hardlink' if member.islnk() else 'file'
        staged.append([safe, kind, member.mode, member.mtime, member.uid, member.gid, member.size])

    try:
        staged = _RecordSpool(staging)
        _scan(archive, manifest, identities, passphrase, max_work_factor, visit=stage)
        dirs = _RecordSpool(staging)
        for safe, kind, mode, mtime, uid, gid, size in staged:
            final_parent = os.path.join(real_target, posixpath.dirname(safe))
            if final_parent not in final_parents:
                os.makedirs(final_parent, exist_ok=True)
                if not _inside(os.path.realpath(final_parent), real_target):
                    raise RestoreRefusedError(f'backup {name}: refusing {safe}: its directory resolves outside {target}')
                _remember(final_parents, final_parent)
            final = os.path.join(final_parent, posixpath.basename(safe))
            if kind == 'dir':
                if not os.path.isdir(final):
                    os.mkdir(final, 0o700)
                if not _inside(os.path.realpath(final), real_target):
                    raise RestoreRefusedError(f'backup {name}: refusing {safe}: it resolves outside {target}')
                dirs.append([final, mode, mtime, uid, gid])
                stats['dirs'] += 1
                _list_member(stats, 'members', safe)
                continue
            if os.path.lexists(final) and not overwrite:  # appeared since the check above
                raise RestoreRefusedError(f'backup {name}: refusing to overwrite {final}')
            if kind == 'symlink':
                final_parents.clear()
            os.rename(os.path.join(staging, safe), final)
            _list_member(stats, 'members', safe)
            if kind == 'file':
                stats['files'] += 1
                stats['bytes'] += size
            else:
                stats['links'] += 1
                if as_root and kind == 'symlink':
                    os.lchown(final, uid, gid)
        for final, mode, mtime, uid, gid in reversed(dirs):
            if as_root:
                os.chown(final, uid, gid)
            os.chmod(final, mode & mode_mask)
            os.utime(final, (mtime, mtime))
    finally:
        for spool in (staged, dirs):
            if spool is not None:
                spool.close()
        shutil.rmtree(staging, ignore_errors=True)
    _fsync_dir(real_target)
    return stats


def _restore_dry_run(archive, manifest, identities, passphrase, max_work_factor, only, real_target, stats):
    """The checks of :func:`restore` in one verifying pass, writing nothing; fills ``stats``."""
    name = stats['name']

    def check(member, safe, reader):
        if not _selected(safe, only):
            return
        parent = os.path.realpath(os.path.join(real_target, posixpath.dirname(safe)))
        if not _inside(parent, real_target):
            raise RestoreRefusedError(f'backup {name}: refusing {safe}: its directory resolves outside {stats["target"]}')
        if member.isdir():
            stats['dirs'] += 1
            if not _inside(os.path.realpath(os.path.join(real_target, safe)), real_target):
                raise RestoreRefusedError(f'backup {name}: refusing {safe}: it resolves outside {stats["target"]}')
        elif member.islnk():
            # _scan checked (_check_member_safe) that the target is a regular file met before the link: the real
            # run restored it if it is selected.
            if not _selected(_safe_member_name(member.linkname), only):
                raise RestoreRefusedError(f'backup {name}: refusing hard link {safe}: target {member.linkname} '
                                          'was not restored')
            stats['links'] += 1
        elif member.issym():
            stats['links'] += 1
        else:
            stats['files'] += 1
            stats['bytes'] += member.size
        _list_member(stats, 'members', safe)

    _scan(archive, manifest, identities, passphrase, max_work_factor, visit=check)


def find_archive(archive='latest', dest=None, prefix=None):
    """Resolve ``archive`` to the path of an existing backup (its manifest is not checked here).

    ``archive`` is ``'latest'`` (the newest backup in ``dest``, optionally
    with the name ``prefix``), a backup file name in ``dest``, or a path
    (anything containing ``/``).

    :raises BackupConfigError: no such backup, or ``dest`` needed but missing.
    """
    archive = archive or 'latest'
    if '/' in archive:
        path = os.path.abspath(archive)
    else:
        if not dest:
            raise BackupConfigError(f'archive {archive!r} is not a path, so the backup directory (dest) is needed')
        dest = os.path.abspath(dest)
        if not os.path.isdir(dest):
            raise BackupConfigError(f'backup directory {dest} does not exist')
        if archive == 'latest':
            backups = list_backups(dest, prefix)
            if not backups:
                what = f' with the prefix {prefix!r}' if prefix else ''
                raise BackupConfigError(f'there is no backup{what} in {dest}')
            return backups[0]['archive']
        path = os.path.join(dest, archive)
    if not os.path.isfile(path):
        raise BackupConfigError(f'backup {path} does not exist')
    return path


# ---------------------------------------------------------------------------
# Listing and retention


def parse_backup_name(name):
    """Return ``(prefix, time, compression)`` of a backup file name, or None."""
    match = _NAME_RE.match(name)
    if match is None:
        return None
    moment = datetime.datetime.strptime(match.group('stamp'), STAMP_FORMAT).replace(tzinfo=_UTC)
    return match.group('prefix'), moment, 'zstd' if match.group('comp') == 'zst' else 'gzip'


def list_backups(dest, prefix=None):
    """Backups in ``dest`` (optionally with the name ``prefix``), newest first.

    Each is a dict ``name, archive, manifest (path or None), time (ISO),
    size, compression, verified (bool), verified_at``. ``verified`` comes
    from the ``NAME.verified`` marker written by a deep verification (or a
    ``verified`` field in the manifest).
    """
    dest = os.path.abspath(dest)
    result = []
    for entry in os.listdir(dest):
        parsed = parse_backup_name(entry)
        if parsed is None or (prefix is not None and parsed[0] != prefix):
            continue
        path = os.path.join(dest, entry)
        try:
            size = os.path.getsize(path)
        except OSError:
            continue
        moment = parsed[1]
        manifest = None
        verified_at = None
        if os.path.exists(manifest_path(path)):
            manifest = manifest_path(path)
            try:
                with ManifestReader(path, validate=False) as reader:  # the header; entries only counted
                    data = reader.header
                moment = retention.parse_time(data.get('created')) if data.get('created') else moment
                verified_at = data.get('verified') or None
            except (BackupError, OSError, ValueError):
                pass
        try:
            with open(verified_path(path)) as handle:
                verified_at = json.load(handle).get('verified') or verified_at or 'unknown'
        except (OSError, ValueError):
            pass
        result.append({'name': entry, 'archive': path, 'manifest': manifest, 'time': _iso(moment),
                       'size': size, 'compression': parsed[2], 'verified': verified_at is not None,
                       'verified_at': verified_at, '_moment': moment})
    result.sort(key=lambda b: (b['_moment'], b['name']), reverse=True)
    for item in result:
        del item['_moment']
    return result


def apply_retention(dest, policy, dry_run=False, prefix=None, lock_timeout=0, lock=True, pending=None):
    """Prune backups in ``dest`` with :func:`retention.plan`; return what was (or would be) deleted.

    Call it only after a *successful* :func:`create` (never after a failed
    one: the caller decides). The newest backup with a verification marker
    is protected; when none is marked, the newest one that passes shallow
    verification is. Archive, manifest and marker are deleted together.

    ``pending`` (dry runs only) is the name of a backup about to be written
    (see :func:`backup_name`): it is planned as if it existed and had passed
    shallow verification, which is what a check-mode run needs to report.

    :returns: dict ``prune`` (names), ``keep`` (names), ``protected`` (name or
        None), ``reasons`` and ``dry_run``.
    """
    dest = os.path.abspath(dest)
    if pending is not None:
        parsed = parse_backup_name(pending)
        if not dry_run or parsed is None:
            raise BackupConfigError(f'pending {pending!r}: only a backup name, and only in a dry run')
    guard = BackupLock(dest, lock_timeout) if lock and not dry_run else _NoLock()
    with guard:
        backups = list_backups(dest, prefix) if os.path.isdir(dest) else []
        if pending is not None and (prefix is None or parsed[0] == prefix):
            backups = [b for b in backups if b['name'] != pending]
            backups.insert(0, {'name': pending, 'archive': None, 'time': _iso(parsed[1]), 'verified': False})
            backups.sort(key=lambda b: (retention.parse_time(b['time']), b['name']), reverse=True)
        protected = None
        for item in backups:
            if item['verified']:
                protected = item['name']
                break
        if protected is None:
            for item in backups:
                if item['archive'] is None:  # pending: shallow verification passes once written
                    protected = item['name']
                    break
                try:
                    verify(item['archive'])
                except BackupError:
                    continue
                protected = item['name']
                break
        snapshots = [{'id': b['name'], 'time': b['time']} for b in backups]
        result = retention.plan(snapshots, policy, protect=[protected] if protected else [])
        prune = result.remove_ids
        if not dry_run:
            for item in prune:
                path = os.path.join(dest, item)
                for victim in (path, manifest_path(path), verified_path(path)):
                    _unlink_quiet(victim)
            if prune:
                _fsync_dir(dest)
    return {'prune': prune, 'keep': result.keep_ids, 'protected': protected, 'reasons': result.reasons,
            'dry_run': bool(dry_run)}
