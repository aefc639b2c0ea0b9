# Copyright (c) 2026, prodready.vps contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Releases of a service on one host, switched by a symlink, with a health gate and automatic rollback.

The logic of the ``release`` module, in plain Python (standard library only):
the module is a thin wrapper, unit tests drive this file directly with fake
``systemctl`` runners and fake health gates.

Layout under ``root`` (compatible with ansistrano: its releases, shared paths
and ``current`` link are used as they are)::

    releases/<id>/          one directory per release (the code; never edited after the build)
    shared/<path>           persistent paths, linked into every release (relative symlinks)
    current -> releases/<id>    relative symlink, switched atomically (temporary link + rename)
    manifests/<id>.json     per release: id, seq, source, checksum, time, verdict, deployed_by, gate, evidence
    snapshots/<id>/         what a rollback from <id> restores: the environment and unit files as they
                            were just before <id> was deployed (index.json + the files)
    .release.lock           one deploy or rollback at a time (flock)
    .release-state.json     counters and timestamps behind the deploy metrics

Verdicts: ``passed`` (the gate passed), ``unchecked`` (no checks given),
``unknown`` (a release directory without a manifest, e.g. from ansistrano),
``failed`` (the gate failed: rolled back), ``build_failed``, and
``building``/``deploying`` while a run is under way (left behind only when a
run was interrupted). The first three are *good*.

Order is the manifests' ``seq`` (deploy order; a re-deploy of an existing
release moves it to the end, a rollback does not), releases without a
manifest come first in name order. Never file modification times.

Retention after every deploy: the newest ``keep`` good releases and the newest
``keep_failed`` other ones are kept; the current release, the release a
rollback would go back to, and the release being deployed are never removed.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import errno
import fcntl
import fnmatch
import getpass
import hashlib
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import tarfile
import tempfile
import time
import zipfile

from ansible_collections.prodready.vps.plugins.module_utils.failure_hook import fsync_dir
from ansible_collections.prodready.vps.plugins.module_utils.textfile import render

RELEASES = 'releases'
SHARED = 'shared'
CURRENT = 'current'
MANIFESTS = 'manifests'
SNAPSHOTS = 'snapshots'
LOCK = '.release.lock'
STATE = '.release-state.json'
FORMAT = 1
ID_PATTERN = re.compile(r'^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$')
GOOD = ('passed', 'unchecked', 'unknown')
VERDICTS = GOOD + ('failed', 'build_failed', 'building', 'deploying')
ACTIVATIONS_KEPT = 10
OUTPUT_LINES = 50


class ReleaseError(Exception):
    """Bad input or a state the module refuses to act on; nothing was changed (or it says what was)."""


# --- small helpers -----------------------------------------------------------------------

def now_iso(epoch):
    return time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(epoch))


def new_release_id(epoch):
    """Default release id: UTC time, sortable, e.g. ``20261123T101500Z``."""
    return time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(epoch))


def check_id(release_id, what='release id'):
    if not isinstance(release_id, str) or not ID_PATTERN.match(release_id) or release_id in ('.', '..'):
        raise ReleaseError('%s %r is not valid: letters, digits and . _ + - (at most 128, not starting with '
                           'a punctuation mark)' % (what, release_id))
    return release_id


def check_relative(path, what):
    """A clean relative path inside the release (no absolute path, no ``..``)."""
    if not isinstance(path, str) or not path.strip('/') or path.startswith('/'):
        raise ReleaseError('%s %r must be a relative path inside the release' % (what, path))
    parts = [p for p in path.split('/') if p not in ('', '.')]
    if not parts or '..' in parts:
        raise ReleaseError('%s %r must be a relative path inside the release (no "..")' % (what, path))
    return '/'.join(parts)


def tail(text, lines=OUTPUT_LINES):
    if isinstance(text, bytes):
        text = text.decode('utf-8', 'replace')
    return text.splitlines()[-lines:] if text else []


def write_atomic(path, data, mode=0o644, uid=None, gid=None):
    """Write ``data`` (bytes) to ``path``: temporary file in the same directory, fsync, rename."""
    directory = os.path.dirname(path) or '.'
    fd, tmp = tempfile.mkstemp(prefix='.%s.' % os.path.basename(path), suffix='.tmp', dir=directory)
    try:
        with os.fdopen(fd, 'wb') as handle:
            handle.write(data)
            handle.flush()
            if uid is not None or gid is not None:
                os.fchown(handle.fileno(), -1 if uid is None else uid, -1 if gid is None else gid)
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        os.rename(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise
    fsync_dir(directory)


def write_json(path, document):
    write_atomic(path, (json.dumps(document, indent=2, sort_keys=True) + '\n').encode('utf-8'))


def read_json(path):
    with open(path, 'rb') as handle:
        return json.loads(handle.read().decode('utf-8'))


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, 'rb') as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


# --- sources: directories, git checkouts, archives ---------------------------------------------

def _excluded(rel, patterns):
    base = rel.rsplit('/', 1)[-1]
    return any(fnmatch.fnmatchcase(rel, p) or fnmatch.fnmatchcase(base, p) for p in patterns)


def walk_tree(src, exclude=()):
    """Sorted (relative path, kind, mode, stat) of a directory tree; symlinks are not followed.

    Raises ReleaseError for special files (devices, FIFOs, sockets): a release holds code.
    """
    entries = []

    def visit(directory, rel_dir):
        try:
            names = sorted(os.listdir(directory))
        except OSError as exc:
            raise ReleaseError('cannot read %s: %s' % (directory, exc.strerror))
        for name in names:
            rel = name if not rel_dir else rel_dir + '/' + name
            if _excluded(rel, exclude):
                continue
            path = os.path.join(directory, name)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                entries.append((rel, 'link', 0, path))
            elif stat.S_ISDIR(st.st_mode):
                entries.append((rel, 'dir', stat.S_IMODE(st.st_mode), path))
                visit(path, rel)
            elif stat.S_ISREG(st.st_mode):
                entries.append((rel, 'file', stat.S_IMODE(st.st_mode), path))
            else:
                raise ReleaseError('%s is not a regular file, directory or symlink; a release cannot hold it' % path)

    visit(src, '')
    return entries


def tree_checksum(src, exclude=()):
    """sha256 over the paths, kinds, permission bits, contents and link targets of a tree."""
    digest = hashlib.sha256()
    for rel, kind, mode, path in walk_tree(src, exclude):
        if kind == 'file':
            detail = sha256_file(path)
        elif kind == 'link':
            detail = os.readlink(path)
        else:
            detail = ''
        digest.update(('%s\0%s\0%o\0%s\n' % (rel, kind, mode & 0o777, detail)).encode('utf-8', 'surrogateescape'))
    return digest.hexdigest()


def copy_tree(src, dst, exclude=()):
    """Copy a tree (files, directories, symlinks as symlinks) into the existing directory ``dst``."""
    for rel, kind, mode, path in walk_tree(src, exclude):
        target = os.path.join(dst, rel)
        if kind == 'dir':
            os.mkdir(target, 0o700)
            os.chmod(target, mode & 0o777)
        elif kind == 'link':
            os.symlink(os.readlink(path), target)
        else:
            shutil.copyfile(path, target)
            os.chmod(target, mode & 0o777)
    # Directories were created writable for the copy; set their modes again bottom-up is not needed:
    # chmod right after mkdir keeps the owner's write bit only when the source had it.


def git_revision(path):
    """The commit checked out in a git working tree (reading .git directly; None when unknown)."""
    git = os.path.join(path, '.git')
    try:
        if os.path.isfile(git):
            with open(git) as handle:
                line = handle.read().strip()
            if line.startswith('gitdir:'):
                git = os.path.normpath(os.path.join(path, line.split(':', 1)[1].strip()))
        with open(os.path.join(git, 'HEAD')) as handle:
            head = handle.read().strip()
        if not head.startswith('ref:'):
            return head or None
        ref = head.split(':', 1)[1].strip()
        ref_file = os.path.join(git, ref)
        if os.path.isfile(ref_file):
            with open(ref_file) as handle:
                return handle.read().strip() or None
        packed = os.path.join(git, 'packed-refs')
        if os.path.isfile(packed):
            with open(packed) as handle:
                for line in handle:
                    parts = line.strip().split(' ', 1)
                    if len(parts) == 2 and parts[1] == ref:
                        return parts[0]
    except (IOError, OSError):
        return None
    return None


def inspect_source(path, exclude=()):
    """(kind, checksum, revision) of a source: ``directory``, ``git`` (a checkout) or ``archive``."""
    if not isinstance(path, str) or not path.startswith('/'):
        raise ReleaseError('source %r must be an absolute path on the host' % (path,))
    if os.path.isdir(path):
        if os.path.exists(os.path.join(path, '.git')):
            return 'git', 'sha256:' + tree_checksum(path, tuple(exclude) + ('.git',)), git_revision(path)
        return 'directory', 'sha256:' + tree_checksum(path, exclude), None
    if os.path.isfile(path):
        if zipfile.is_zipfile(path) or tarfile.is_tarfile(path):
            return 'archive', 'sha256:' + sha256_file(path), None
        raise ReleaseError('source %s is neither a directory nor a tar or zip archive' % path)
    raise ReleaseError('source %s does not exist on the host' % path)


def _archive_rel(name, strip):
    parts = [p for p in name.replace('\\', '/').split('/') if p not in ('', '.')]
    if name.startswith('/') or '..' in parts:
        raise ReleaseError('archive entry %r leaves the release directory (absolute path or "..")' % name)
    parts = parts[strip:]
    return '/'.join(parts) if parts else None


def _link_inside(rel, linkname):
    if linkname.startswith('/'):
        return False
    joined = os.path.normpath(os.path.join(os.path.dirname(rel), linkname))
    return not (joined == '..' or joined.startswith('../'))


class _Extractor(object):
    def __init__(self, dst):
        self.dst = dst
        self.real_dst = os.path.realpath(dst)

    def target(self, rel):
        path = os.path.join(self.dst, rel)
        parent = os.path.dirname(path)
        if not os.path.isdir(parent):
            os.makedirs(parent, 0o755)
        real_parent = os.path.realpath(parent)
        if real_parent != self.real_dst and not real_parent.startswith(self.real_dst + os.sep):
            raise ReleaseError('archive entry %r would be written outside the release through a symlink' % rel)
        if os.path.lexists(path) and not os.path.isdir(path) or os.path.islink(path):
            os.unlink(path)
        return path

    def directory(self, rel, mode):
        path = self.target(rel)
        if not os.path.isdir(path):
            os.mkdir(path, 0o755)
        os.chmod(path, (mode & 0o777) | 0o700)

    def file(self, rel, mode, stream):
        path = self.target(rel)
        with open(path, 'wb') as handle:
            shutil.copyfileobj(stream, handle)
        os.chmod(path, mode & 0o777)

    def symlink(self, rel, linkname):
        if not _link_inside(rel, linkname):
            raise ReleaseError('archive entry %r links outside the release (%r)' % (rel, linkname))
        os.symlink(linkname, self.target(rel))


def extract_archive(path, dst, strip_components=0):
    """Extract a tar (any compression Python reads) or zip archive into the existing directory ``dst``.

    Entries that would land outside ``dst`` (absolute paths, ``..``, links pointing
    outside) and special files are refused; owners in the archive are ignored.
    """
    out = _Extractor(dst)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                rel = _archive_rel(info.filename, strip_components)
                if rel is None:
                    continue
                unix_mode = (info.external_attr >> 16) if info.create_system == 3 else 0
                if info.is_dir():
                    out.directory(rel, stat.S_IMODE(unix_mode) or 0o755)
                elif stat.S_ISLNK(unix_mode):
                    out.symlink(rel, archive.read(info).decode('utf-8', 'surrogateescape'))
                else:
                    with archive.open(info) as stream:
                        out.file(rel, stat.S_IMODE(unix_mode) or 0o644, stream)
        return
    try:
        archive = tarfile.open(path)
    except (tarfile.TarError, OSError) as exc:
        raise ReleaseError('cannot read archive %s: %s' % (path, exc))
    with archive:
        for member in archive:
            rel = _archive_rel(member.name, strip_components)
            if rel is None:
                continue
            if member.isdir():
                out.directory(rel, member.mode)
            elif member.isreg():
                out.file(rel, member.mode, archive.extractfile(member))
            elif member.issym():
                out.symlink(rel, member.linkname)
            elif member.islnk():
                source = _archive_rel(member.linkname, strip_components)
                if source is None or not os.path.isfile(os.path.join(dst, source)):
                    raise ReleaseError('archive entry %r is a hard link to %r, which is not a file extracted '
                                       'before it' % (member.name, member.linkname))
                with open(os.path.join(dst, source), 'rb') as stream:
                    out.file(rel, member.mode, stream)
            else:
                raise ReleaseError('archive entry %r is a device, FIFO or other special file; a release cannot '
                                   'hold it' % member.name)


# --- environment file ------------------------------------------------------------------------

ENV_KEY = re.compile(r'^[A-Za-z_][A-Za-z0-9_]*$')


def env_line(key, value):
    value = '' if value is None else str(value)
    if '\n' in value or '\r' in value:
        raise ReleaseError('environment variable %s has a multi-line value; EnvironmentFile= takes one line' % key)
    return '%s="%s"' % (key, value.replace('\\', '\\\\').replace('"', '\\"'))


def _env_key(line):
    text = line.strip()
    if not text or text[0] in '#;':
        return None
    if text.startswith('export '):
        text = text[len('export '):].lstrip()
    key, sep, _value = text.partition('=')
    return key.strip() if sep else None


def env_update(text, environment):
    """(new text, changed keys): set the variables of ``environment`` in an EnvironmentFile text.

    The first line of each key is replaced (later duplicates are dropped), missing
    keys are appended in name order, every other line is kept.
    """
    for key in environment:
        if not ENV_KEY.match(str(key)):
            raise ReleaseError('environment variable name %r is not valid ([A-Za-z_][A-Za-z0-9_]*)' % (key,))
    wanted = dict((k, env_line(k, v)) for k, v in environment.items())
    out, seen, changed = [], set(), []
    for line in text.splitlines():
        key = _env_key(line)
        if key in wanted:
            if key in seen:
                changed.append(key)
                continue
            seen.add(key)
            if line != wanted[key]:
                changed.append(key)
            out.append(wanted[key])
        else:
            out.append(line)
    for key in sorted(wanted):
        if key not in seen:
            out.append(wanted[key])
            changed.append(key)
    return ('\n'.join(out) + '\n') if out else '', sorted(set(changed))


# --- snapshots of the environment and unit files ------------------------------------------------

def expand_files(paths):
    """The files a snapshot covers: each path, and for a directory each regular file in it."""
    files = []
    for path in paths:
        if os.path.isdir(path):
            files.extend(os.path.join(path, n) for n in sorted(os.listdir(path))
                         if os.path.isfile(os.path.join(path, n)) and not os.path.islink(os.path.join(path, n)))
        else:
            files.append(path)
    return files


def take_snapshot(directory, paths):
    """Copy the listed files (and the files of listed directories) into ``directory`` with index.json."""
    if os.path.isdir(directory):
        shutil.rmtree(directory)
    os.makedirs(os.path.join(directory, 'files'), 0o700)
    index = {'paths': list(paths), 'dirs': [p for p in paths if os.path.isdir(p)], 'files': []}
    for number, path in enumerate(expand_files(paths)):
        if not os.path.isfile(path):
            index['files'].append({'path': path, 'present': False})
            continue
        st = os.stat(path)
        stored = 'files/%d' % number
        shutil.copyfile(path, os.path.join(directory, stored))
        os.chmod(os.path.join(directory, stored), 0o600)
        index['files'].append({'path': path, 'present': True, 'stored': stored, 'sha256': sha256_file(path),
                               'mode': stat.S_IMODE(st.st_mode), 'uid': st.st_uid, 'gid': st.st_gid})
    write_json(os.path.join(directory, 'index.json'), index)
    return index


def snapshot_drift(directory):
    """Paths whose content differs from the snapshot now (changed, added to a directory, or removed)."""
    index = read_json(os.path.join(directory, 'index.json'))
    known = dict((f['path'], f) for f in index['files'])
    drift = []
    for path, entry in sorted(known.items()):
        present = os.path.isfile(path)
        if entry['present'] != present or (present and sha256_file(path) != entry['sha256']):
            drift.append(path)
    for path in expand_files(index['dirs']):
        if path not in known:
            drift.append(path)
    return drift


def restore_snapshot(directory):
    """Put the snapshot's files back (and remove files added since to a snapshot directory); changed paths."""
    index = read_json(os.path.join(directory, 'index.json'))
    drift = snapshot_drift(directory)
    known = dict((f['path'], f) for f in index['files'])
    for path in drift:
        entry = known.get(path)
        if entry is None or not entry['present']:
            if os.path.lexists(path):
                os.unlink(path)
            continue
        parent = os.path.dirname(path)
        if not os.path.isdir(parent):
            os.makedirs(parent, 0o755)
        with open(os.path.join(directory, entry['stored']), 'rb') as handle:
            write_atomic(path, handle.read(), entry['mode'], entry['uid'], entry['gid'])
    return drift


# --- the store: layout, manifests, the current link ---------------------------------------------

def order_key(manifest):
    """Deploy order: releases without a manifest first (by name), then by ``seq``."""
    seq = manifest.get('seq')
    return (0, 0, manifest['id']) if seq is None else (1, seq, manifest['id'])


def is_good(manifest):
    return manifest.get('verdict') in GOOD


def ordered(manifests):
    return sorted(manifests.values(), key=order_key)


def previous_release(manifests, current):
    """The newest good release deployed before ``current`` (by manifest order), or None."""
    candidates = [m for m in ordered(manifests) if is_good(m) and m['id'] != current]
    if current in manifests:
        limit = order_key(manifests[current])
        candidates = [m for m in candidates if order_key(m) < limit]
    return candidates[-1]['id'] if candidates else None


def automatic_target(manifests, failed, before):
    """Where an automatic rollback from ``failed`` goes.

    The release that was current before the deploy, when it is not a failed one
    (it was serving; after a manual rollback it is the operator's choice, not the
    newer release rolled away from), else the newest release that passed its gate.
    """
    if before and before != failed and before in manifests and manifests[before].get('verdict') in GOOD + ('deploying',):
        return before
    good = [m for m in ordered(manifests) if is_good(m) and m['id'] != failed]
    return good[-1]['id'] if good else None


def plan_prune(manifests, keep, keep_failed, protect=()):
    """Release ids to remove: all but the newest ``keep`` good and ``keep_failed`` other releases.

    Ids in ``protect`` (the current release, the rollback target, the release
    being deployed) are never returned; they count against the limits, so
    ``keep`` is the number of good releases left whenever at most ``keep`` of
    them are protected.
    """
    if keep < 1:
        raise ReleaseError('keep_releases must be at least 1, got %r' % (keep,))
    if keep_failed < 0:
        raise ReleaseError('keep_failed must be at least 0, got %r' % (keep_failed,))
    protect = set(p for p in protect if p)
    newest_first = list(reversed(ordered(manifests)))
    good = [m['id'] for m in newest_first if is_good(m) and m['id'] not in protect]
    other = [m['id'] for m in newest_first if not is_good(m) and m['id'] not in protect]
    kept_good = max(0, keep - len([p for p in protect if p in manifests and is_good(manifests[p])]))
    kept_other = max(0, keep_failed - len([p for p in protect if p in manifests and not is_good(manifests[p])]))
    return sorted(good[kept_good:] + other[kept_other:], key=lambda rid: order_key(manifests[rid]))


class Store(object):
    """The files under ``root``; every write is atomic, every read tolerant of foreign releases."""

    def __init__(self, root):
        if not isinstance(root, str) or not root.startswith('/') or os.path.normpath(root) == '/':
            raise ReleaseError('root %r must be an absolute path other than /' % (root,))
        self.root = os.path.normpath(root)
        self.releases = os.path.join(self.root, RELEASES)
        self.shared = os.path.join(self.root, SHARED)
        self.manifest_dir = os.path.join(self.root, MANIFESTS)
        self.snapshot_dir = os.path.join(self.root, SNAPSHOTS)
        self.link = os.path.join(self.root, CURRENT)
        self._lock_fd = None

    def exists(self):
        return os.path.isdir(self.root)

    def ensure(self):
        for path in (self.root, self.releases, self.shared, self.manifest_dir, self.snapshot_dir):
            if not os.path.isdir(path):
                os.makedirs(path, 0o755)
        os.chmod(self.snapshot_dir, 0o700)

    def release_path(self, rid):
        return os.path.join(self.releases, rid)

    def manifest_path(self, rid):
        return os.path.join(self.manifest_dir, rid + '.json')

    def snapshot_path(self, rid):
        return os.path.join(self.snapshot_dir, rid)

    # locking ----------------------------------------------------------------------------------
    def lock(self, timeout=300.0, clock=time.monotonic, sleep=time.sleep):
        fd = os.open(os.path.join(self.root, LOCK), os.O_RDWR | os.O_CREAT, 0o600)
        deadline = clock() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except (IOError, OSError) as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES) or clock() >= deadline:
                    os.close(fd)
                    raise ReleaseError('another deploy or rollback holds %s (waited %gs)'
                                       % (os.path.join(self.root, LOCK), timeout))
                sleep(0.2)
        self._lock_fd = fd

    def unlock(self):
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    # reading ----------------------------------------------------------------------------------
    def manifests(self):
        """id -> manifest for every release directory (a synthesized ``unknown`` one when it has none)."""
        found = {}
        if not os.path.isdir(self.releases):
            return found
        for name in sorted(os.listdir(self.releases)):
            path = os.path.join(self.releases, name)
            if not ID_PATTERN.match(name) or not os.path.isdir(path) or os.path.islink(path):
                continue
            manifest = None
            if os.path.isfile(self.manifest_path(name)):
                try:
                    manifest = read_json(self.manifest_path(name))
                except (IOError, OSError, ValueError):
                    manifest = None
            if not isinstance(manifest, dict) or manifest.get('id') != name:
                manifest = {'id': name, 'seq': None, 'verdict': 'unknown', 'source': None, 'checksum': None}
            found[name] = manifest
        return found

    def current(self):
        """The id ``current`` points to, or None; refuses a ``current`` that is not a link into releases/."""
        if not os.path.lexists(self.link):
            return None
        if not os.path.islink(self.link):
            raise ReleaseError('%s exists and is not a symlink; move it away before deploying here' % self.link)
        target = os.readlink(self.link)
        resolved = os.path.normpath(os.path.join(self.root, target))
        if os.path.dirname(resolved) != self.releases:
            raise ReleaseError('%s points to %s, outside %s' % (self.link, target, self.releases))
        return os.path.basename(resolved)

    def state(self):
        try:
            value = read_json(os.path.join(self.root, STATE))
            return value if isinstance(value, dict) else {}
        except (IOError, OSError, ValueError):
            return {}

    # writing ----------------------------------------------------------------------------------
    def write_manifest(self, manifest):
        write_json(self.manifest_path(manifest['id']), manifest)

    def write_state(self, value):
        write_json(os.path.join(self.root, STATE), value)

    def switch(self, rid):
        """Point ``current`` at releases/<rid>: a new relative link renamed over the old one (atomic)."""
        if not os.path.isdir(self.release_path(rid)):
            raise ReleaseError('release %s does not exist in %s' % (rid, self.releases))
        self.current()  # refuses a directory or a foreign link before replacing it
        tmp = os.path.join(self.root, '.%s.tmp-%d' % (CURRENT, os.getpid()))
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(os.path.join(RELEASES, rid), tmp)
        os.rename(tmp, self.link)
        fsync_dir(self.root)

    def remove(self, rid):
        path = self.release_path(rid)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)  # does not follow the symlinks to shared/
        for extra in (self.manifest_path(rid),):
            if os.path.lexists(extra):
                os.unlink(extra)
        if os.path.isdir(self.snapshot_path(rid)):
            shutil.rmtree(self.snapshot_path(rid))

    def link_shared(self, rid, shared_paths):
        """Replace each shared path in the release by a relative link to shared/<path> (created as a directory)."""
        base = self.release_path(rid)
        for rel in shared_paths:
            shared = os.path.join(self.shared, rel)
            if not os.path.lexists(shared):
                os.makedirs(shared, 0o755)
            link = os.path.join(base, rel)
            if os.path.islink(link) or os.path.isfile(link):
                os.unlink(link)
            elif os.path.isdir(link):
                shutil.rmtree(link)
            parent = os.path.dirname(link)
            if not os.path.isdir(parent):
                os.makedirs(parent, 0o755)
            os.symlink(os.path.relpath(shared, parent), link)

    def populate(self, rid, source, kind, exclude=(), strip_components=0):
        path = self.release_path(rid)
        os.mkdir(path, 0o755)
        if kind == 'archive':
            extract_archive(source, path, strip_components)
        else:
            copy_tree(source, path, tuple(exclude) + (('.git',) if kind == 'git' else ()))


def next_seq(manifests):
    return max([m.get('seq') or 0 for m in manifests.values()] + [0]) + 1


def fingerprint(checksum, build, shared_paths, strip_components, exclude, environment):
    """What makes two deploys the same: source checksum, build, layout options, the environment set."""
    env = sorted((str(k), str(v)) for k, v in (environment or {}).items())
    document = json.dumps([checksum, build or '', list(shared_paths), strip_components, sorted(exclude), env])
    return 'sha256:' + hashlib.sha256(document.encode('utf-8')).hexdigest()


# --- the host: systemctl, journalctl, commands ---------------------------------------------------

def run_process(argv, cwd=None, timeout=None, env=None):
    """(rc, stdout, stderr) of a command; rc None when it timed out or could not start."""
    try:
        proc = subprocess.run(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        return None, (exc.stdout or b'').decode('utf-8', 'replace'), 'timed out after %gs' % timeout
    except OSError as exc:
        return None, '', '%s: %s' % (argv[0], exc.strerror or exc)
    return proc.returncode, proc.stdout.decode('utf-8', 'replace'), proc.stderr.decode('utf-8', 'replace')


class Host(object):
    """systemd and commands on the host; ``runner(argv, cwd=None, timeout=None, env=None)`` is injectable."""

    def __init__(self, systemctl='systemctl', journalctl='journalctl', runner=run_process,
                 clock=time.monotonic, sleep=time.sleep):
        self.systemctl = systemctl
        self.journalctl = journalctl
        self.runner = runner
        self.clock = clock
        self.sleep = sleep

    def show(self, unit, properties=('LoadState', 'ActiveState', 'SubState', 'MainPID')):
        rc, out, err = self.runner([self.systemctl, 'show', '--property=' + ','.join(properties), '--', unit])
        if rc != 0:
            raise ReleaseError('systemctl show %s failed: %s' % (unit, (err or out).strip()))
        values = {}
        for line in out.splitlines():
            key, sep, value = line.partition('=')
            if sep:
                values[key] = value
        return values

    def check_unit(self, unit):
        state = self.show(unit)
        if state.get('LoadState') != 'loaded':
            raise ReleaseError('unit %s is not installed (LoadState=%s): write it first (the hardening role: '
                               'allow_missing_command: true, enabled: false until the first deploy)'
                               % (unit, state.get('LoadState', '?')))
        return state

    def daemon_reload(self):
        rc, out, err = self.runner([self.systemctl, 'daemon-reload'])
        if rc != 0:
            raise ReleaseError('systemctl daemon-reload failed: %s' % (err or out).strip())

    def restart(self, unit, mode):
        """Queue a restart (or reload) without waiting for it; returns the main PID before it."""
        state = self.check_unit(unit)
        try:
            pid = int(state.get('MainPID') or 0)
        except ValueError:
            pid = 0
        verb = 'reload-or-restart' if mode == 'reload' else 'restart'
        # A deploy is an operator's action: it must not hit StartLimitBurst= left by earlier
        # deploys or a crash loop (reset-failed flushes the unit's start rate counter).
        self.runner([self.systemctl, 'reset-failed', '--', unit])
        rc, out, err = self.runner([self.systemctl, verb, '--no-block', '--', unit])
        if rc != 0:
            raise ReleaseError('systemctl %s %s failed: %s' % (verb, unit, (err or out).strip()))
        return pid if mode != 'reload' else 0

    def wait_replaced(self, unit, old_pid, timeout):
        """Wait until the old main process is gone (the stop half of a restart), at most ``timeout``."""
        if not old_pid:
            return True
        deadline = self.clock() + timeout
        while True:
            try:
                pid = int(self.show(unit, ('MainPID',)).get('MainPID') or 0)
            except (ReleaseError, ValueError):
                pid = -1
            if pid != old_pid:
                return True
            if self.clock() >= deadline:
                return False
            self.sleep(0.1)

    def starter(self, unit):
        """A function telling whether the unit is still starting (or reloading), for the gate."""
        def starting():
            return self.show(unit, ('ActiveState',)).get('ActiveState') in ('activating', 'reloading')
        return starting

    def journal(self, unit, lines, until=None):
        """The last ``lines`` lines of the unit's journal (``journalctl -u UNIT -n LINES``), up to ``until`` (epoch).

        With ``until`` the journal can be read after the service was restarted and still show
        the failed release's end (``-n`` with ``--until`` needs ``--reverse`` in journalctl).
        """
        if lines <= 0:
            return []
        argv = [self.journalctl, '--no-pager', '-o', 'short-iso', '-u', unit, '-n', str(lines)]
        if until is not None:
            argv += ['--reverse', '--until', '@%.3f' % until]
        rc, out, err = self.runner(argv)
        if rc != 0:
            return ['(journalctl failed: %s)' % (err or out).strip()]
        found = tail(out, lines) if until is None else list(reversed(out.splitlines()[:lines]))
        return [line for line in found if line != '-- No entries --']

    def build(self, command, cwd, timeout, env):
        return self.runner(['/bin/sh', '-c', command], cwd=cwd, timeout=timeout, env=env)


def file_tail(path, lines):
    try:
        with open(path, 'rb') as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 65536))
            return tail(handle.read(), lines)
    except (IOError, OSError):
        return None


# --- metrics ---------------------------------------------------------------------------------

METRIC_HELP = {
    'prodready_deploy_last_run_timestamp_seconds': 'When the release module last deployed or rolled back (any outcome).',
    'prodready_deploy_last_success_timestamp_seconds': 'When a deployed release last passed its health gate (0 = never).',
    'prodready_deploy_last_failure_timestamp_seconds': 'When a deploy last failed its build or health gate (0 = never).',
    'prodready_deploy_last_rollback_timestamp_seconds': 'When the service was last rolled back (0 = never).',
    'prodready_deploy_last_duration_seconds': 'Duration of the last deploy or rollback, health gates included.',
    'prodready_deploy_recovery_seconds': 'Last automatic rollback: from the failing verdict to the old release '
                                         'answering healthy.',
    'prodready_deploy_total': 'Deploys that switched the current release.',
    'prodready_deploy_failures_total': 'Deploys that failed their build or health gate.',
    'prodready_deploy_rollbacks_total': 'Rollbacks, automatic (after a failed gate) or manual.',
    'prodready_deploy_healthy': '1 when the current release passed its latest health gate (or has none), else 0.',
    'prodready_deploy_release_info': 'The current release (label release), always 1.',
}


def render_metrics(service, state, current, healthy):
    labels = {'service': service}
    metrics = []
    for key, name in (('last_run', 'prodready_deploy_last_run_timestamp_seconds'),
                      ('last_success', 'prodready_deploy_last_success_timestamp_seconds'),
                      ('last_failure', 'prodready_deploy_last_failure_timestamp_seconds'),
                      ('last_rollback', 'prodready_deploy_last_rollback_timestamp_seconds'),
                      ('last_duration', 'prodready_deploy_last_duration_seconds')):
        metrics.append({'name': name, 'value': state.get(key, 0), 'labels': labels, 'help': METRIC_HELP[name]})
    if state.get('recovery_seconds') is not None:
        metrics.append({'name': 'prodready_deploy_recovery_seconds', 'value': state['recovery_seconds'],
                        'labels': labels, 'help': METRIC_HELP['prodready_deploy_recovery_seconds']})
    metrics.append({'name': 'prodready_deploy_total', 'type': 'counter', 'value': state.get('deploys', 0),
                    'labels': labels, 'help': METRIC_HELP['prodready_deploy_total']})
    metrics.append({'name': 'prodready_deploy_failures_total', 'type': 'counter', 'value': state.get('failures', 0),
                    'labels': labels, 'help': METRIC_HELP['prodready_deploy_failures_total']})
    for kind in ('automatic', 'manual'):
        metrics.append({'name': 'prodready_deploy_rollbacks_total', 'type': 'counter',
                        'value': state.get('rollbacks_' + kind, 0), 'labels': dict(labels, kind=kind),
                        'help': METRIC_HELP['prodready_deploy_rollbacks_total']})
    metrics.append({'name': 'prodready_deploy_healthy', 'value': 1 if healthy else 0, 'labels': labels,
                    'help': METRIC_HELP['prodready_deploy_healthy']})
    if current:
        metrics.append({'name': 'prodready_deploy_release_info', 'value': 1,
                        'labels': dict(labels, release=current), 'help': METRIC_HELP['prodready_deploy_release_info']})
    return render(metrics)


def write_metrics(directory, service, state, current, healthy):
    """``prodready_deploy_<service>.prom`` in the textfile collector directory (created when missing)."""
    stem = re.sub(r'[^A-Za-z0-9_.-]', '_', service)
    if not os.path.isdir(directory):
        os.makedirs(directory, 0o755)
    path = os.path.join(directory, 'prodready_deploy_%s.prom' % stem)
    write_atomic(path, render_metrics(service, state, current, healthy).encode('utf-8'), 0o644)
    return path


# --- the operations ---------------------------------------------------------------------------

class Failure(Exception):
    """A deploy or rollback that ran and failed; ``result`` holds the evidence (the module fails with it)."""

    def __init__(self, msg, result):
        Exception.__init__(self, msg)
        self.msg = msg
        self.result = result


def default_deployed_by():
    user = os.environ.get('SUDO_USER') or ''
    if not user:
        try:
            user = getpass.getuser()
        except Exception:  # pylint: disable=broad-except  # no passwd entry: still deploy
            user = str(os.getuid())
    return '%s@%s' % (user, socket.gethostname())


class Manager(object):
    """Deploy, roll back and list the releases of one service under ``root``.

    ``params``: root, source, release_id, build, build_timeout, shared_paths,
    exclude, strip_components, service (unit name), restart (restart | reload |
    none), env_file, unit_files, environment, health (dict for Gate or None),
    keep_releases, keep_failed, deployed_by, force, journal_lines,
    evidence_files, metrics_dir, target, lock_timeout, check_mode.
    ``gate_factory(health, starting)`` returns an object with ``run()`` (``starting``: a function telling
    whether the restarted unit still starts, or None); ``host`` is a Host.
    """

    def __init__(self, params, host, gate_factory, wall=time.time, clock=time.monotonic):
        self.p = params
        self.host = host
        self.gate_factory = gate_factory
        self.wall = wall
        self.clock = clock
        self.store = Store(params['root'])
        self.unit = params.get('service') or None
        self.check_mode = bool(params.get('check_mode'))
        self.warnings = []
        self.keep = int(params.get('keep_releases', 3))
        self.keep_failed = int(params.get('keep_failed', 2))
        if self.keep < 1:
            raise ReleaseError('keep_releases must be at least 1, got %d' % self.keep)
        if self.keep_failed < 0:
            raise ReleaseError('keep_failed must be at least 0, got %d' % self.keep_failed)
        self.shared_paths = [check_relative(p, 'shared path') for p in (params.get('shared_paths') or [])]
        self.exclude = list(params.get('exclude') or [])
        self.env_file = params.get('env_file') or None
        self.environment = params.get('environment') or None
        self.unit_files = list(params.get('unit_files') or [])

    # helpers ----------------------------------------------------------------------------------
    def service_label(self):
        if self.unit:
            return re.sub(r'\.service$', '', self.unit)
        return os.path.basename(self.store.root)

    def snapshot_paths(self):
        return ([self.env_file] if self.env_file else []) + self.unit_files

    def env_changes(self):
        if not self.environment:
            return None, []
        if not self.env_file:
            raise ReleaseError('environment is set but there is no env_file to write it to')
        try:
            with open(self.env_file, 'rb') as handle:
                text = handle.read().decode('utf-8', 'replace')
        except (IOError, OSError):
            text = ''
        new_text, changed = env_update(text, self.environment)
        return new_text, changed

    def apply_env(self, new_text):
        if os.path.exists(self.env_file):
            st = os.stat(self.env_file)
            write_atomic(self.env_file, new_text.encode('utf-8'), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
        else:
            parent = os.path.dirname(self.env_file)
            if not os.path.isdir(parent):
                os.makedirs(parent, 0o755)
            write_atomic(self.env_file, new_text.encode('utf-8'), 0o600)

    def gate(self, starting=None):
        health = self.p.get('health')
        if not health or not health.get('checks'):
            return None
        return self.gate_factory(health, starting)

    def restart_and_gate(self, after_restart=None):
        """Restart (or reload) the service, wait for the old process to go, run the gate; the gate's result.

        ``after_restart`` runs right after the restart was queued, while the service restarts.
        """
        restarting = self.unit and self.p.get('restart', 'restart') != 'none'
        gate = self.gate(self.host.starter(self.unit) if restarting else None)
        if restarting:
            old_pid = self.host.restart(self.unit, self.p.get('restart', 'restart'))
            if after_restart is not None:
                after_restart()
            health = self.p.get('health') or {}
            wait = float(health.get('timeout') or 120) + float(health.get('settle') or 0)
            if not self.host.wait_replaced(self.unit, old_pid, wait):
                self.warnings.append('the old main process (PID %d) of %s had not stopped after %gs; the health gate '
                                     'ran anyway' % (old_pid, self.unit, wait))
        if gate is None:
            return None
        return gate.run()

    def evidence(self, gate_result, journal=True):
        evidence = {'gate': gate_result}
        if self.unit and journal:
            evidence['journal'] = self.host.journal(self.unit, int(self.p.get('journal_lines', 50)))
        files = {}
        for path in self.p.get('evidence_files') or []:
            lines = file_tail(path, 20)
            if lines is not None:
                files[path] = lines
        if files:
            evidence['files'] = files
        return evidence

    def prune(self, protect):
        manifests = self.store.manifests()
        current = self.store.current()
        protect = set(protect) | {current, previous_release(manifests, current)}
        removed = []
        for rid in plan_prune(manifests, self.keep, self.keep_failed, protect):
            try:
                self.store.remove(rid)
                removed.append(rid)
            except (IOError, OSError) as exc:
                self.warnings.append('could not remove release %s: %s' % (rid, exc))
        return removed

    def record(self, updates, healthy, current):
        state = self.store.state()
        for key, value in updates.items():
            if key.startswith('+'):
                state[key[1:]] = state.get(key[1:], 0) + value
            else:
                state[key] = value
        self.store.write_state(state)
        if self.p.get('metrics_dir'):
            try:
                write_metrics(self.p['metrics_dir'], self.service_label(), state, current, healthy)
            except (IOError, OSError) as exc:
                self.warnings.append('could not write the deploy metrics: %s' % exc)

    def listing(self, manifests, current):
        target = previous_release(manifests, current)
        out = []
        for m in reversed(ordered(manifests)):
            out.append({'id': m['id'], 'seq': m.get('seq'), 'verdict': m.get('verdict'),
                        'current': m['id'] == current, 'rollback_target': m['id'] == target,
                        'source': m.get('source'), 'source_type': m.get('source_type'),
                        'revision': m.get('revision'), 'checksum': m.get('checksum'),
                        'created': m.get('created'), 'deployed_by': m.get('deployed_by'),
                        'verdict_at': m.get('verdict_at'), 'last_check': m.get('last_check'),
                        'path': self.store.release_path(m['id'])})
        return out

    def activate(self, manifest, kind, at):
        history = list(manifest.get('activations') or [])
        history.append({'at': round(at, 3), 'time': now_iso(at), 'kind': kind,
                        'by': self.p.get('deployed_by') or default_deployed_by()})
        manifest['activations'] = history[-ACTIVATIONS_KEPT:]

    # listed -------------------------------------------------------------------------------------
    def list_releases(self):
        if not self.store.exists():
            return {'changed': False, 'releases': [], 'current': None, 'previous': None, 'root': self.store.root}
        manifests = self.store.manifests()
        current = self.store.current()
        return {'changed': False, 'releases': self.listing(manifests, current), 'current': current,
                'previous': previous_release(manifests, current), 'root': self.store.root}

    # deployed -----------------------------------------------------------------------------------
    def deploy(self):
        p = self.p
        if p.get('release_id'):
            check_id(p['release_id'])
        build = p.get('build') or None
        strip = int(p.get('strip_components') or 0)
        if strip < 0:
            raise ReleaseError('strip_components must be 0 or more, got %d' % strip)
        source = p.get('source')
        if self.check_mode and isinstance(source, str) and source.startswith('/') and not os.path.exists(source):
            kind, checksum, revision = None, None, None
            self.warnings.append('source %s does not exist (yet); the plan assumes it will' % source)
        else:
            kind, checksum, revision = inspect_source(source, self.exclude)
        fp = fingerprint(checksum, build, self.shared_paths, strip, self.exclude, self.environment)
        if self.unit and p.get('restart', 'restart') != 'none':
            try:
                self.host.check_unit(self.unit)
            except ReleaseError:
                if not self.check_mode:
                    raise
                self.warnings.append('unit %s is not installed (yet); the plan assumes it will be' % self.unit)
        if not self.check_mode:  # check mode only reads, without the lock
            self.store.ensure()
            self.store.lock(float(p.get('lock_timeout') or 300))
        try:
            return self._deploy(source, kind, checksum, revision, fp, build, strip)
        finally:
            self.store.unlock()

    def _deploy(self, source, kind, checksum, revision, fp, build, strip):
        p = self.p
        started = self.clock()
        manifests = self.store.manifests()
        before = self.store.current()
        new_env, env_changed = self.env_changes()
        current_m = manifests.get(before)
        base = {'root': self.store.root, 'previous': before, 'service': self.unit}
        if (not p.get('force') and current_m is not None and current_m.get('fingerprint') == fp
                and not env_changed and checksum is not None):
            if p.get('release_id') and p['release_id'] != before and p['release_id'] in manifests:
                raise ReleaseError('release %s already exists; its content is current as release %s'
                                   % (p['release_id'], before))
            return dict(base, changed=False, release=before, current=before, verdict=current_m.get('verdict'),
                        msg='release %s is current with the same content (%s); nothing to do' % (before, checksum),
                        releases=self.listing(manifests, before))
        rid = p.get('release_id') or self.free_id(manifests)
        reuse = rid in manifests
        if reuse:
            if manifests[rid].get('fingerprint') != fp:
                raise ReleaseError('release %s exists with other content (%s, build %r); deploy under a new release '
                                   'id' % (rid, manifests[rid].get('checksum'), manifests[rid].get('build')))
        if rid == before and not env_changed and not p.get('force'):
            return dict(base, changed=False, release=rid, current=rid, verdict=manifests[rid].get('verdict'),
                        msg='release %s is already current' % rid, releases=self.listing(manifests, before))
        target_if_failed = automatic_target(manifests, rid, before)
        plan = self.deploy_plan(rid, reuse, kind, source, build, before, env_changed, target_if_failed, manifests)
        if self.check_mode:
            return dict(base, changed=True, release=rid, current=before, plan=plan, verdict=None,
                        msg='would deploy release %s' % rid)

        at = self.wall()
        # 1. Snapshot what a rollback restores, before anything on the host changes.
        self.store.ensure()
        take_snapshot(self.store.snapshot_path(rid), self.snapshot_paths())
        # 2. The release directory: copy or extract, shared links, build.
        if reuse:
            manifest = manifests[rid]
        else:
            manifest = {'format': FORMAT, 'id': rid, 'seq': None, 'source': source, 'source_type': kind,
                        'revision': revision, 'checksum': checksum, 'fingerprint': fp, 'build': build,
                        'shared_paths': self.shared_paths, 'created_at': round(at, 3), 'created': now_iso(at),
                        'deployed_by': p.get('deployed_by') or default_deployed_by(), 'service': self.unit,
                        'verdict': 'building', 'verdict_at': round(at, 3)}
            self.store.write_manifest(manifest)
            try:
                self.store.populate(rid, source, kind, self.exclude, strip)
                self.store.link_shared(rid, self.shared_paths)
            except (IOError, OSError, ReleaseError) as exc:
                self.store.remove(rid)
                if isinstance(exc, ReleaseError):
                    raise
                raise ReleaseError('cannot create release %s from %s: %s' % (rid, source, exc))
            if build:
                env = dict(os.environ, RELEASE_ID=rid, RELEASE_DIR=self.store.release_path(rid),
                           RELEASE_ROOT=self.store.root)
                rc, out, err = self.host.build(build, self.store.release_path(rid), p.get('build_timeout'), env)
                manifest['build_output'] = (tail(out) + tail(err))[-OUTPUT_LINES:]
                if rc != 0:
                    manifest.update(verdict='build_failed', verdict_at=round(self.wall(), 3), seq=next_seq(manifests))
                    self.store.write_manifest(manifest)
                    self.record({'+failures': 1, 'last_failure': round(self.wall(), 3), 'last_run': round(self.wall(), 3)},
                                self.healthy(before), before)
                    removed = self.prune({rid, before})
                    raise Failure('build of release %s failed (%s); nothing was switched, %s stays current'
                                  % (rid, 'exit status %s' % rc if rc is not None else err, before),
                                  dict(base, changed=True, release=rid, current=before, verdict='build_failed',
                                       build_output=manifest['build_output'], removed=removed))
        manifest.update(seq=next_seq(manifests), previous=before, verdict='deploying', verdict_at=round(self.wall(), 3))
        manifest.pop('evidence', None)
        self.activate(manifest, 'redeploy' if reuse else 'deploy', self.wall())
        self.store.write_manifest(manifest)

        # 3. Environment, units, switch, restart, gate.
        if new_env is not None and env_changed:
            self.apply_env(new_env)
        self.reload_if_units_changed(rid)
        self.store.switch(rid)
        gate_result = self.restart_and_gate()
        if gate_result is None or gate_result['passed']:
            verdict = 'unchecked' if gate_result is None else 'passed'
            manifest.update(verdict=verdict, verdict_at=round(self.wall(), 3), gate=self.gate_summary(gate_result),
                            last_check={'verdict': verdict, 'at': round(self.wall(), 3)})
            self.store.write_manifest(manifest)
            removed = self.prune({rid})
            done = self.wall()
            self.record({'+deploys': 1, 'last_success': round(done, 3), 'last_run': round(done, 3),
                         'last_duration': round(self.clock() - started, 3)}, True, rid)
            return dict(base, changed=True, release=rid, current=rid, verdict=verdict, gate=gate_result,
                        removed=removed, rolled_back=False,
                        msg='release %s deployed%s' % (rid, '' if gate_result is None else
                                                       ' and passed its health gate (%s)' % gate_result['reason']))
        return self.roll_back_failed(manifest, gate_result, before, started, base)

    def free_id(self, manifests):
        rid = new_release_id(self.wall())
        candidate, number = rid, 1
        while candidate in manifests or os.path.lexists(self.store.release_path(candidate)):
            number += 1
            candidate = '%s-%d' % (rid, number)
        return candidate

    def healthy(self, rid):
        if rid is None:
            return False
        manifests = self.store.manifests()
        m = manifests.get(rid) or {}
        last = (m.get('last_check') or {}).get('verdict') or m.get('verdict')
        return last in GOOD

    @staticmethod
    def gate_summary(result):
        if result is None:
            return None
        return dict((k, result[k]) for k in ('verdict', 'reason', 'rounds', 'successes', 'percent', 'seconds',
                                             'started_at', 'ended_at', 'settings', 'last') if k in result)

    def reload_if_units_changed(self, rid):
        if not self.unit_files or not self.unit:
            return False
        drift = [path for path in snapshot_drift(self.store.snapshot_path(rid)) if path != self.env_file]
        if drift:
            self.host.daemon_reload()
        return bool(drift)

    def deploy_plan(self, rid, reuse, kind, source, build, before, env_changed, target_if_failed, manifests):
        plan = []
        if reuse:
            plan.append('re-deploy the existing release %s' % rid)
        else:
            plan.append('create %s from the %s %s' % (self.store.release_path(rid), kind or 'source', source))
            if self.shared_paths:
                plan.append('link shared paths: %s' % ', '.join(self.shared_paths))
            if build:
                plan.append('run the build: %s' % build)
        if self.snapshot_paths():
            plan.append('snapshot %s' % ', '.join(self.snapshot_paths()))
        if env_changed:
            plan.append('set %s in %s' % (', '.join(env_changed), self.env_file))
        plan.append('switch %s from %s to releases/%s' % (self.store.link, before or '(nothing)', rid))
        if self.unit and self.p.get('restart', 'restart') != 'none':
            plan.append('%s %s' % (self.p.get('restart', 'restart'), self.unit))
        health = self.p.get('health') or {}
        if health.get('checks'):
            plan.append('health gate: %d check(s), every %ss for at most %ss, %s%% and %s consecutive to pass'
                        % (len(health['checks']), health.get('interval'), health.get('timeout'),
                           health.get('required_percent'), health.get('consecutive')))
            plan.append('on failure: roll back to %s' % (target_if_failed or '(no healthy release: stay on %s)' % rid))
        hypothetical = dict(manifests)
        hypothetical[rid] = dict(manifests.get(rid) or {'id': rid}, seq=next_seq(manifests), verdict='passed')
        prune = plan_prune(hypothetical, self.keep, self.keep_failed,
                           {rid, before, previous_release(hypothetical, rid)})
        if prune:
            plan.append('after a pass, remove releases %s (keep %d healthy, %d failed)'
                        % (', '.join(prune), self.keep, self.keep_failed))
        return plan

    def roll_back_failed(self, manifest, gate_result, before, started, base):
        rid = manifest['id']
        failed_at = gate_result['ended_at']
        manifests = self.store.manifests()
        target = automatic_target(manifests, rid, before)
        # The journal is read once the rollback's restart is under way (up to the verdict): a faster recovery.
        evidence = self.evidence(gate_result, journal=target is None)
        manifest.update(verdict='failed', verdict_at=round(self.wall(), 3), gate=self.gate_summary(gate_result),
                        evidence=evidence, last_check={'verdict': 'failed', 'at': round(self.wall(), 3)})
        self.store.write_manifest(manifest)
        result = dict(base, changed=True, release=rid, verdict='failed', gate=gate_result, evidence=evidence,
                      rollback_target=target)
        reason = gate_result['reason']
        if target is None:
            self.record({'+failures': 1, 'last_failure': round(self.wall(), 3), 'last_run': round(self.wall(), 3),
                         'last_duration': round(self.clock() - started, 3)}, False, rid)
            result.update(current=rid, rolled_back=False, removed=self.prune({rid}))
            raise Failure('release %s failed its health gate (%s) and no earlier release passed one: there is nothing '
                          'to roll back to, %s stays current' % (rid, reason, rid), result)
        restored = restore_snapshot(self.store.snapshot_path(rid))
        if self.unit and any(path != self.env_file for path in restored):
            self.host.daemon_reload()
        if target != rid:
            self.store.switch(target)

        def read_journal():
            evidence['journal'] = self.host.journal(self.unit, int(self.p.get('journal_lines', 50)), until=failed_at)

        old_gate = self.restart_and_gate(after_restart=read_journal if self.unit else None)
        if self.unit and 'journal' not in evidence:  # no restart (restart: none)
            read_journal()
        self.store.write_manifest(manifest)
        now = self.wall()
        target_m = self.store.manifests()[target]
        self.activate(target_m, 'automatic-rollback', now)
        old_ok = old_gate is None or old_gate['passed']
        recovery = None
        if old_gate is not None and old_gate.get('first_success_after') is not None:
            recovery = round(old_gate['started_at'] + old_gate['first_success_after'] - failed_at, 3)
        if old_gate is not None:
            target_m['last_check'] = {'verdict': old_gate['verdict'], 'at': round(now, 3),
                                      'reason': old_gate['reason'], 'after': 'automatic rollback from %s' % rid}
        self.store.write_manifest(target_m)
        removed = self.prune({rid, target})
        updates = {'+failures': 1, '+rollbacks_automatic': 1, 'last_failure': round(failed_at, 3),
                   'last_rollback': round(now, 3), 'last_run': round(now, 3),
                   'last_duration': round(self.clock() - started, 3)}
        if recovery is not None:
            updates['recovery_seconds'] = recovery
        self.record(updates, old_ok, target)
        result.update(current=target, rolled_back=True, restored_files=restored, rollback_gate=old_gate,
                      recovery_seconds=recovery, removed=removed)
        if old_ok:
            raise Failure('release %s failed its health gate (%s); rolled back to %s, which passes its health gate '
                          'again%s' % (rid, reason, target, '' if recovery is None else
                                       ' (healthy %.1fs after the failing verdict)' % recovery), result)
        raise Failure('release %s failed its health gate (%s); rolled back to %s, BUT %s FAILS ITS HEALTH GATE TOO (%s). '
                      'The service is unhealthy; it stays on %s. Look at the evidence and the journal.'
                      % (rid, reason, target, target, old_gate['reason'], target), result)

    # rolled_back --------------------------------------------------------------------------------
    def rollback(self):
        if not self.store.exists():
            raise ReleaseError('nothing is deployed under %s' % self.store.root)
        if not self.check_mode:
            self.store.lock(float(self.p.get('lock_timeout') or 300))
        try:
            return self._rollback()
        finally:
            self.store.unlock()

    def _rollback(self):
        started = self.clock()
        manifests = self.store.manifests()
        current = self.store.current()
        if current is None:
            raise ReleaseError('%s has no current release to roll back from' % self.store.root)
        target = self.p.get('target')
        if target:
            check_id(target, 'target')
            if target not in manifests:
                raise ReleaseError('release %s does not exist under %s; releases: %s' % (
                    target, self.store.releases, ', '.join(m['id'] for m in ordered(manifests)) or 'none'))
            if not is_good(manifests[target]) and not self.p.get('force'):
                raise ReleaseError('release %s has the verdict %s; set force to roll back to it anyway'
                                   % (target, manifests[target].get('verdict')))
        else:
            target = previous_release(manifests, current)
            if target is None:
                raise ReleaseError('no healthy release was deployed before %s; name a target' % current)
        base = {'root': self.store.root, 'previous': current, 'service': self.unit, 'release': target}
        if target == current:
            return dict(base, changed=False, current=current, msg='release %s is already current' % current,
                        rolled_back=False)
        restore = manifests[current].get('previous') == target and os.path.isfile(
            os.path.join(self.store.snapshot_path(current), 'index.json'))
        if self.check_mode:
            plan = []
            if restore:
                plan.append('restore %s as they were before %s was deployed'
                            % (', '.join(self.snapshot_paths()) or 'nothing', current))
            plan.append('switch %s from %s to releases/%s' % (self.store.link, current, target))
            if self.unit and self.p.get('restart', 'restart') != 'none':
                plan.append('%s %s' % (self.p.get('restart', 'restart'), self.unit))
            if (self.p.get('health') or {}).get('checks'):
                plan.append('health gate on %s' % target)
            return dict(base, changed=True, current=current, plan=plan, msg='would roll back to %s' % target)
        restored = []
        if restore:
            restored = restore_snapshot(self.store.snapshot_path(current))
            if self.unit and any(path != self.env_file for path in restored):
                self.host.daemon_reload()
        elif self.snapshot_paths():
            self.warnings.append('%s was not deployed right after %s, so the environment and unit files are kept as '
                                 'they are' % (current, target))
        self.store.switch(target)
        gate_result = self.restart_and_gate()
        now = self.wall()
        manifests = self.store.manifests()
        target_m = manifests[target]
        self.activate(target_m, 'rollback', now)
        ok = gate_result is None or gate_result['passed']
        if gate_result is not None:
            target_m['last_check'] = {'verdict': gate_result['verdict'], 'at': round(now, 3),
                                      'reason': gate_result['reason'], 'after': 'rollback from %s' % current}
        self.store.write_manifest(target_m)
        current_m = manifests[current]
        if current_m.get('seq') is not None or os.path.isfile(self.store.manifest_path(current)):
            current_m['rolled_back_at'] = round(now, 3)
            self.store.write_manifest(current_m)
        self.record({'+rollbacks_manual': 1, 'last_rollback': round(now, 3), 'last_run': round(now, 3),
                     'last_duration': round(self.clock() - started, 3)}, ok, target)
        result = dict(base, changed=True, current=target, rolled_back=True, restored_files=restored, gate=gate_result)
        if not ok:
            result['evidence'] = self.evidence(gate_result)
            raise Failure('rolled back from %s to %s, BUT %s FAILS ITS HEALTH GATE (%s); it stays current'
                          % (current, target, target, gate_result['reason']), result)
        result['msg'] = 'rolled back from %s to %s%s' % (current, target, '' if gate_result is None else
                                                         ', which passes its health gate')
        return result
