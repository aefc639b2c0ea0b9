# Copyright (c) 2026, prodready.vps contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Tests for plugins/module_utils/backup_archive.py (real files in tmp_path)."""

import datetime
import errno
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tarfile
import time
import tracemalloc
from pathlib import Path

import pytest
from ansible_collections.prodready.vps.plugins.module_utils import age
from ansible_collections.prodready.vps.plugins.module_utils import backup_archive as ba

UTC = datetime.UTC
T0 = datetime.datetime(2026, 11, 22, 2, 0, 0, tzinfo=UTC)


@pytest.fixture(scope='module')
def keys():
    secret, public = age.generate_identity()
    return secret, public


@pytest.fixture
def tree(tmp_path):
    src = tmp_path / 'src'
    (src / 'etc' / 'app').mkdir(parents=True)
    (src / 'etc' / 'app' / 'app.env').write_bytes(b'SECRET=1\n')
    os.chmod(src / 'etc' / 'app' / 'app.env', 0o600)
    (src / 'etc' / 'app' / 'run.sh').write_bytes(b'#!/bin/sh\necho hi\n')
    os.chmod(src / 'etc' / 'app' / 'run.sh', 0o755)
    (src / 'etc' / 'app' / 'empty').write_bytes(b'')
    (src / 'etc' / 'app' / 'big.bin').write_bytes(os.urandom(300000))
    (src / 'etc' / 'app' / 'sub').mkdir()
    os.chmod(src / 'etc' / 'app' / 'sub', 0o750)
    (src / 'etc' / 'app' / 'sub' / 'x.txt').write_bytes(b'x' * 1000)
    os.symlink('app.env', src / 'etc' / 'app' / 'link.env')
    dest = tmp_path / 'dest'
    dest.mkdir()
    return src, dest


def read_json(path):
    with open(path) as handle:
        return json.load(handle)


def snapshot(root):
    """Map relative path -> (type, mode, content hash or link target)."""
    result = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                result[rel] = ('link', os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                result[rel] = ('dir', stat.S_IMODE(st.st_mode))
            else:
                with open(path, 'rb') as handle:
                    result[rel] = ('file', stat.S_IMODE(st.st_mode), hashlib.sha256(handle.read()).hexdigest(),
                                   int(st.st_mtime))
    return result


def backup_files(dest):
    return sorted(os.listdir(dest))


def test_round_trip_byte_identical(tree, keys, tmp_path):
    src, dest = tree
    secret, public = keys
    result = ba.create(str(dest), [str(src / 'etc')], recipients=[public], now=T0)
    assert result['name'] == '2026-11-22T020000Z.tar.gz.age' or result['name'].endswith('.tar.zst.age')
    assert os.path.exists(result['archive']) and os.path.exists(result['manifest'])
    manifest = read_json(result['manifest'])
    assert manifest['created'] == '2026-11-22T02:00:00Z'
    assert manifest['recipients'] == [age.recipient_fingerprint(public)]
    assert manifest['archive']['size'] == os.path.getsize(result['archive'])
    names = {e['name']: e for e in manifest['entries']}
    base = str(src / 'etc').lstrip('/')
    assert names[base + '/app/app.env']['sha256'] == hashlib.sha256(b'SECRET=1\n').hexdigest()
    assert names[base + '/app/link.env']['type'] == 'symlink'
    assert not [n for n in os.listdir(dest) if n.endswith('.tmp')]

    assert ba.verify(result['archive'])['mode'] == 'shallow'
    assert ba.verify(result['archive'], identity=secret, mark=True)['mode'] == 'deep'
    listed = ba.list_backups(str(dest))
    assert listed[0]['name'] == result['name'] and listed[0]['verified']

    target = tmp_path / 'restore'
    stats = ba.restore(result['archive'], str(target), identity=secret)
    assert stats['files'] == 5 and stats['links'] == 1
    assert snapshot(target / base) == snapshot(src / 'etc')


def test_include_exclude_and_max_age(tree, keys, tmp_path):
    src, dest = tree
    _secret, public = keys
    logs = src / 'logs'
    logs.mkdir()
    for name, age_days in (('new.log', 1), ('old.log', 30), ('new.txt', 1), ('skip.log', 0)):
        path = logs / name
        path.write_bytes(name.encode())
        stamp = time.time() - age_days * 86400
        os.utime(path, (stamp, stamp))
    source = {'path': str(logs), 'include': ['*.log'], 'exclude': ['skip.*'], 'max_age_days': 7}
    result = ba.create(str(dest), [source], recipients=public)
    manifest = read_json(result['manifest'])
    files = sorted(os.path.basename(e['name']) for e in manifest['entries'] if e['type'] == 'file')
    assert files == ['new.log']


def test_command_entry_streamed(tree, keys, tmp_path):
    _src, dest = tree
    secret, public = keys
    payload_code = 'import sys; sys.stdout.buffer.write(bytes(range(256)) * 8192)'  # 2 MiB: spills to disk
    commands = [{'name': 'db/app.dump', 'argv': [sys.executable, '-c', payload_code]},
                {'name': 'db/small.sql', 'shell': 'printf "select 1;"'}]
    result = ba.create(str(dest), [], recipients=public, commands=commands)
    manifest = read_json(result['manifest'])
    entries = {e['name']: e for e in manifest['entries']}
    expected = bytes(range(256)) * 8192
    assert entries['db/app.dump']['size'] == len(expected)
    assert entries['db/app.dump']['sha256'] == hashlib.sha256(expected).hexdigest()
    ba.verify(result['archive'], identity=secret)
    target = tmp_path / 'r'
    ba.restore(result['archive'], str(target), identity=secret)
    assert (target / 'db' / 'app.dump').read_bytes() == expected
    assert (target / 'db' / 'small.sql').read_bytes() == b'select 1;'
    assert backup_files(dest) == sorted([result['name'], result['name'] + '.manifest.json', '.backup.lock'])


def test_failing_command_leaves_nothing(tree, keys):
    src, dest = tree
    secret, public = keys
    old = ba.create(str(dest), [str(src)], recipients=public, now=T0)
    before = backup_files(dest)
    code = 'import sys; sys.stdout.write("partial"); sys.stderr.write("pg_dump: error: connection refused"); sys.exit(3)'
    with pytest.raises(ba.BackupCommandError, match='db/app.dump.*status 3.*connection refused'):
        ba.create(str(dest), [str(src)], recipients=public, commands=[{'name': 'db/app.dump', 'argv': [sys.executable, '-c', code]}])
    assert backup_files(dest) == before
    ba.verify(old['archive'], identity=secret)


class FullDisk:
    """File wrapper raising ENOSPC once more than ``limit`` bytes were written."""

    def __init__(self, fileobj, limit):
        self._f = fileobj
        self.limit = limit
        self.written = 0

    def write(self, data):
        if self.written + len(data) > self.limit:
            raise OSError(errno.ENOSPC, 'No space left on device')
        self.written += len(data)
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *args):
        self._f.close()


def test_disk_full(tree, keys, monkeypatch):
    src, dest = tree
    secret, public = keys
    old = ba.create(str(dest), [str(src)], recipients=public, now=T0)
    before = {n: (dest / n).read_bytes() for n in backup_files(dest)}
    real_open = ba._open_output
    monkeypatch.setattr(ba, '_open_output', lambda path: FullDisk(real_open(path), 100000))
    with pytest.raises(ba.BackupError, match='no space left on device'):
        ba.create(str(dest), [str(src)], recipients=public)
    assert {n: (dest / n).read_bytes() for n in backup_files(dest)} == before
    ba.verify(old['archive'], identity=secret)


def test_flipped_byte_refused(tree, keys, tmp_path):
    src, dest = tree
    secret, public = keys
    result = ba.create(str(dest), [str(src)], recipients=public, now=T0)
    size = os.path.getsize(result['archive'])
    expected = re.escape(f"backup {result['name']}: archive checksum mismatch")
    for offset in (10, size // 2, size - 1):  # header, payload, last tag byte
        data = bytearray(Path(result['archive']).read_bytes())
        data[offset] ^= 0x01
        bad = tmp_path / f'bad{offset}'
        bad.mkdir()
        path = str(bad / result['name'])
        Path(path).write_bytes(bytes(data))
        shutil.copy(result['manifest'], path + '.manifest.json')
        with pytest.raises(ba.BackupIntegrityError, match=expected):
            ba.verify(path)
        with pytest.raises(ba.BackupIntegrityError, match=expected):
            ba.verify(path, identity=secret)
        with pytest.raises(ba.BackupIntegrityError, match=expected):
            ba.restore(path, str(tmp_path / 'out'), identity=secret)
        assert not os.listdir(tmp_path / 'out')


def test_missing_manifest(tree, keys):
    src, dest = tree
    _secret, public = keys
    result = ba.create(str(dest), [str(src)], recipients=public, now=T0)
    os.unlink(result['manifest'])
    with pytest.raises(ba.BackupIntegrityError, match='manifest .* is missing'):
        ba.verify(result['archive'])


def test_wrong_identity(tree, keys, tmp_path):
    src, dest = tree
    _secret, public = keys
    result = ba.create(str(dest), [str(src)], recipients=public)
    other, _dummy = age.generate_identity()
    with pytest.raises(ba.BackupDecryptError, match='none of the given identities can decrypt'):
        ba.verify(result['archive'], identity=other)
    with pytest.raises(ba.BackupDecryptError):
        ba.restore(result['archive'], str(tmp_path / 'r'), identity=other)


def craft_backup(dest, members, secret_public, compression='gzip'):
    """A valid age archive with a matching manifest around an arbitrary (malicious) tar."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode='w', format=tarfile.PAX_FORMAT) as tar:
        entries = []
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
            kind = {tarfile.REGTYPE: 'file', tarfile.DIRTYPE: 'dir', tarfile.SYMTYPE: 'symlink',
                    tarfile.LNKTYPE: 'hardlink'}.get(info.type, 'other')
            entry = {'name': info.name.strip('/') if not info.name.startswith('/') else info.name, 'type': kind}
            if kind == 'file':
                entry.update(size=len(data), sha256=hashlib.sha256(data).hexdigest())
            entries.append(entry)
    ciphertext = age.encrypt_bytes(gzip.compress(raw.getvalue()), secret_public)
    name = '2026-01-01T000000Z.tar.gz.age'
    path = os.path.join(dest, name)
    with open(path, 'wb') as handle:
        handle.write(ciphertext)
    manifest = {'format': ba.MANIFEST_FORMAT, 'version': 1, 'compression': compression, 'entries': entries,
                'archive': {'size': len(ciphertext), 'sha256': hashlib.sha256(ciphertext).hexdigest()}}
    with open(path + '.manifest.json', 'w') as handle:
        json.dump(manifest, handle)
    return path


def member(name, kind=tarfile.REGTYPE, data=b'evil', linkname=''):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    info.linkname = linkname
    info.mode = 0o644
    return info, data if kind == tarfile.REGTYPE else None


@pytest.mark.parametrize('members', [
    [member('../evil')],
    [member('a/../../evil')],
    [member('/etc/evil')],
    [member('ok'), member('link', tarfile.SYMTYPE, linkname='../../etc/passwd')],
    [member('link', tarfile.SYMTYPE, linkname='/etc/passwd')],
    [member('hard', tarfile.LNKTYPE, linkname='/etc/passwd')],
    [member('dev', tarfile.CHRTYPE)],
], ids=['dotdot', 'nested-dotdot', 'absolute', 'symlink-out', 'symlink-abs', 'hardlink-out', 'device'])
def test_path_traversal_refused(tmp_path, keys, members):
    secret, public = keys
    dest = tmp_path / 'dest'
    dest.mkdir()
    path = craft_backup(str(dest), members, public)
    target = tmp_path / 'target'
    with pytest.raises(ba.RestoreRefusedError, match='refusing'):
        ba.restore(path, str(target), identity=secret)
    assert not os.listdir(target)
    assert not (tmp_path / 'evil').exists()


def test_write_through_existing_symlink_refused(tmp_path, keys):
    secret, public = keys
    dest = tmp_path / 'dest'
    dest.mkdir()
    outside = tmp_path / 'outside'
    outside.mkdir()
    path = craft_backup(str(dest), [member('escape/file')], public)
    target = tmp_path / 'target'
    target.mkdir()
    os.symlink(str(outside), target / 'escape')
    with pytest.raises(ba.RestoreRefusedError):
        ba.restore(path, str(target), identity=secret, overwrite=True)
    assert not os.listdir(outside)


def test_overwrite_refusal_and_only(tree, keys, tmp_path):
    src, dest = tree
    secret, public = keys
    result = ba.create(str(dest), [str(src)], recipients=public)
    target = tmp_path / 'r'
    ba.restore(result['archive'], str(target), identity=secret)
    env = target / str(src).lstrip('/') / 'etc' / 'app' / 'app.env'
    env.write_bytes(b'changed')
    with pytest.raises(ba.RestoreRefusedError, match='refusing to overwrite .*app.env'):
        ba.restore(result['archive'], str(target), identity=secret)
    assert env.read_bytes() == b'changed'
    ba.restore(result['archive'], str(target), identity=secret, overwrite=True,
               only=[str(src).lstrip('/') + '/etc/app/app.env'])
    assert env.read_bytes() == b'SECRET=1\n'
    with pytest.raises(ba.RestoreRefusedError, match='no entry matches'):
        ba.restore(result['archive'], str(target), identity=secret, only=['nope'])


def test_lock_contention(tree, keys):
    src, dest = tree
    _secret, public = keys
    with ba.BackupLock(str(dest), 0):
        with pytest.raises(ba.BackupLockedError, match=f'another backup run holds the lock .*pid {os.getpid()}'):
            ba.create(str(dest), [str(src)], recipients=public, lock_timeout=0)
        started = time.monotonic()
        with pytest.raises(ba.BackupLockedError, match='after waiting'):
            ba.create(str(dest), [str(src)], recipients=public, lock_timeout=0.3)
        assert time.monotonic() - started >= 0.3
    assert [n for n in backup_files(dest) if n.endswith('.age')] == []
    ba.create(str(dest), [str(src)], recipients=public, lock_timeout=0)


def test_stale_temp_files_removed(tree, keys):
    src, dest = tree
    _secret, public = keys
    stale = dest / '.2026-01-01T000000Z.tar.gz.age.tmp-abc.tmp'
    stale.write_bytes(b'half a backup')
    ba.create(str(dest), [str(src)], recipients=public)
    assert not stale.exists()


def test_retention_with_protect(tree, keys):
    src, dest = tree
    secret, public = keys
    made = []
    for day in range(6):
        made.append(ba.create(str(dest), [str(src / 'etc' / 'app' / 'app.env')], recipients=public,
                              now=T0 + datetime.timedelta(days=day)))
    # The oldest one is the only deep-verified backup: it must survive keep_last=2.
    ba.verify(made[0]['archive'], identity=secret, mark=True)
    dry = ba.apply_retention(str(dest), {'keep_last': 2}, dry_run=True)
    assert dry['protected'] == made[0]['name']
    assert sorted(dry['prune']) == sorted(m['name'] for m in made[1:4])
    assert len(backup_files(dest)) == 6 * 2 + 1 + 1  # nothing deleted by the dry run
    real = ba.apply_retention(str(dest), {'keep_last': 2})
    assert real['prune'] == dry['prune']
    listed = [b['name'] for b in ba.list_backups(str(dest))]
    assert listed == [made[5]['name'], made[4]['name'], made[0]['name']]
    for name in real['prune']:
        assert not (dest / (name + '.manifest.json')).exists()


def test_gzip_fallback(tree, keys, monkeypatch, tmp_path):
    src, dest = tree
    secret, public = keys
    monkeypatch.setattr(ba, 'HAS_ZSTANDARD', False)
    result = ba.create(str(dest), [str(src)], recipients=public, now=T0)
    assert result['name'] == '2026-11-22T020000Z.tar.gz.age'
    assert read_json(result['manifest'])['compression'] == 'gzip'
    ba.restore(result['archive'], str(tmp_path / 'r'), identity=secret)


@pytest.mark.skipif(not ba.HAS_ZSTANDARD, reason='zstandard not installed')
def test_zstd_default(tree, keys, tmp_path):
    src, dest = tree
    secret, public = keys
    result = ba.create(str(dest), [str(src)], recipients=public, now=T0)
    assert result['name'].endswith('.tar.zst.age') and result['compression'] == 'zstd'
    ba.restore(result['archive'], str(tmp_path / 'r'), identity=secret)


def test_passphrase_mode(tree, tmp_path):
    src, dest = tree
    result = ba.create(str(dest), [str(src)], passphrase='correct horse', work_factor=10)
    manifest = read_json(result['manifest'])
    assert manifest['passphrase'] is True and manifest['recipients'] == []
    ba.verify(result['archive'], passphrase='correct horse')
    with pytest.raises(ba.BackupDecryptError):
        ba.verify(result['archive'], passphrase='wrong')
    ba.restore(result['archive'], str(tmp_path / 'r'), passphrase='correct horse')
    assert snapshot(tmp_path / 'r' / str(src).lstrip('/')) == snapshot(src)


def test_config_errors(tree, keys):
    src, dest = tree
    _secret, public = keys
    with pytest.raises(ba.BackupConfigError, match='recipient'):
        ba.create(str(dest), [str(src)])
    with pytest.raises(ba.BackupConfigError, match='does not exist'):
        ba.create(str(dest), [str(src / 'missing')], recipients=public)
    with pytest.raises(ba.BackupConfigError, match='relative path'):
        ba.create(str(dest), [], recipients=public, commands=[{'name': '../x', 'argv': ['true']}])
    assert [n for n in backup_files(dest) if n != '.backup.lock'] == []


@pytest.mark.parametrize('compression', ['gzip', 'zstd'])
def test_memory_bound(tmp_path, keys, compression):
    if compression == 'zstd' and not ba.HAS_ZSTANDARD:
        pytest.skip('zstandard not installed')
    _secret, public = keys
    src = tmp_path / 'data'
    src.mkdir()
    block = os.urandom(1024 * 1024)
    with open(src / 'big.bin', 'wb') as handle:
        handle.writelines(block if index % 2 else (b'log line %06d\n' % index) * (1024 * 1024 // 16) for index in range(64))
    dest = tmp_path / 'dest'
    dest.mkdir()
    tracemalloc.start()
    try:
        result = ba.create(str(dest), [str(src)], recipients=public, compression=compression,
                           compression_level=1 if compression == 'gzip' else 3)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result['plaintext_size'] == 64 * 1024 * 1024
    print(f'tracemalloc peak while archiving 64 MiB ({compression}): {peak} bytes')
    assert peak < 4 * 1024 * 1024, peak


@pytest.mark.skipif(not shutil.which('age'), reason='age CLI not installed')
def test_standard_tools_can_read_it(tree, keys, tmp_path):
    src, dest = tree
    secret, public = keys
    result = ba.create(str(dest), [str(src)], recipients=public)
    keyfile = tmp_path / 'key.txt'
    keyfile.write_text(secret + '\n')
    decompress = 'zstd -d' if result['compression'] == 'zstd' else 'gzip -d'
    if result['compression'] == 'zstd' and not shutil.which('zstd'):
        pytest.skip('zstd CLI not installed')
    listing = subprocess.run('age -d -i {} {} | {} | tar t'.format(keyfile, result['archive'], decompress),
                             shell=True, check=True, capture_output=True, text=True).stdout.split()
    manifest = read_json(result['manifest'])
    assert sorted(n.rstrip('/') for n in listing) == sorted(e['name'] for e in manifest['entries'])


def test_kill_9_mid_backup_side_by_side_copy(tree, keys, tmp_path):
    """The host runner layout (three files in one directory) works; kill -9 leaves no visible archive."""
    src, dest = tree
    secret, public = keys
    old = ba.create(str(dest), [str(src)], recipients=public, now=T0)
    lib = tmp_path / 'lib'
    lib.mkdir()
    for name in ('age.py', 'retention.py', 'backup_archive.py'):
        shutil.copy(os.path.join(os.path.dirname(ba.__file__), name), lib / name)
    slow = 'import sys, time; sys.stdout.write("x" * 1000); sys.stdout.flush(); time.sleep(60)'
    script = (
        'import sys; sys.path.insert(0, sys.argv[1]); import backup_archive as ba\n'
        'ba.create(sys.argv[2], [sys.argv[3]], recipients=sys.argv[4],\n'
        '          commands=[{"name": "db/slow.dump", "argv": [sys.executable, "-c", sys.argv[5]]}])\n'
    )
    child = subprocess.Popen([sys.executable, '-c', script, str(lib), str(dest), str(src), public, slow],
                             start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while not [n for n in os.listdir(dest) if n.endswith('.tmp')]:
            assert child.poll() is None and time.monotonic() < deadline, 'the child never started its backup'
            time.sleep(0.02)
        time.sleep(0.2)
        with pytest.raises(ba.BackupLockedError):
            ba.create(str(dest), [str(src)], recipients=public, lock_timeout=0)
    finally:
        os.killpg(child.pid, 9)
        child.wait()
    visible = [n for n in os.listdir(dest) if not n.startswith('.')]
    assert sorted(visible) == sorted([old['name'], old['name'] + '.manifest.json'])
    new = ba.create(str(dest), [str(src)], recipients=public, lock_timeout=0)
    assert not [n for n in os.listdir(dest) if n.endswith('.tmp')]
    assert [b['name'] for b in ba.list_backups(str(dest))] == [new['name'], old['name']]
    ba.verify(old['archive'], identity=secret)
    ba.verify(new['archive'], identity=secret)


def test_host_side_copy_imports_its_siblings_under_python_isolated_mode(tmp_path):
    """On hosts the three files lie side by side and run under ``python3 -I``
    (which on Python 3.11+ leaves the script's directory off sys.path)."""
    module_dir = Path(ba.__file__).parent
    for name in ('backup_archive.py', 'age.py', 'retention.py'):
        shutil.copy(module_dir / name, tmp_path / name)
    probe = ('import runpy, sys; ns = runpy.run_path(sys.argv[1]); '
             'print(ns["age"].__name__, ns["retention"].__name__)')
    done = subprocess.run([sys.executable, '-I', '-c', probe, str(tmp_path / 'backup_archive.py')],
                          capture_output=True, text=True, cwd='/', timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ['age', 'retention']


# ---------------------------------------------------------------------------
# Additions used by the backup, backup_verify and backup_restore modules


def test_newer_than_days_is_max_age_days(tree, keys):
    src, dest = tree
    _secret, public = keys
    logs = src / 'logs'
    logs.mkdir()
    for name, age_days in (('new.log', 1), ('old.log', 30)):
        (logs / name).write_bytes(name.encode())
        stamp = time.time() - age_days * 86400
        os.utime(logs / name, (stamp, stamp))
    assert ba.normalize_sources([{'path': str(logs), 'newer_than_days': 7}])[0]['max_age_days'] == 7
    result = ba.create(str(dest), [{'path': str(logs), 'newer_than_days': 7}], recipients=public)
    files = [os.path.basename(e['name']) for e in read_json(result['manifest'])['entries'] if e['type'] == 'file']
    assert files == ['new.log']
    with pytest.raises(ba.BackupConfigError, match='not both'):
        ba.normalize_sources([{'path': str(logs), 'newer_than_days': 7, 'max_age_days': 3}])


def test_estimate_matches_what_create_writes(tree, keys):
    src, dest = tree
    _secret, public = keys
    sources = [{'path': str(src / 'etc'), 'exclude': ['sub']}, str(src / 'etc' / 'app' / 'app.env'),
               {'path': str(src / 'nope'), 'missing_ok': True}]
    commands = [{'name': 'db/app.dump', 'shell': 'printf 12345'}]
    before = backup_files(dest)
    estimate = ba.estimate_sources(sources, commands)
    assert backup_files(dest) == before  # nothing written
    assert estimate['commands'] == ['db/app.dump']
    assert [s['exists'] for s in estimate['sources']] == [True, True, False]
    assert estimate['sources'][1]['files'] == 0  # already selected by the first source
    result = ba.create(str(dest), sources, recipients=public, commands=commands)
    entries = read_json(result['manifest'])['entries']
    files = [e for e in entries if e['type'] == 'file' and not e.get('command')]
    assert estimate['files'] == len(files) and result['files'] == len(files) + 1
    assert estimate['bytes'] == sum(e['size'] for e in files)
    assert estimate['dirs'] == len([e for e in entries if e['type'] == 'dir'])
    assert estimate['links'] == len([e for e in entries if e['type'] == 'symlink'])
    with pytest.raises(ba.BackupConfigError, match='does not exist'):
        ba.estimate_sources([str(src / 'nope')])
    with pytest.raises(ba.BackupConfigError, match='two entries'):
        ba.estimate_sources([], commands * 2)


@pytest.mark.parametrize('compression,level', [('gzip', 0), ('gzip', 10), ('gzip', '3'), ('zstd', 23), ('zstd', True)])
def test_compression_level_checked(tree, keys, compression, level):
    if compression == 'zstd' and not ba.HAS_ZSTANDARD:
        pytest.skip('zstandard not installed')
    src, dest = tree
    _secret, public = keys
    with pytest.raises(ba.BackupConfigError, match=f'{compression} compression level must be an integer'):
        ba.create(str(dest), [str(src)], recipients=public, compression=compression, compression_level=level)
    assert not [n for n in backup_files(dest) if n != '.backup.lock']


def test_identity_parsing_errors_never_echo_secrets(tmp_path, keys):
    secret, public = keys
    keyfile = tmp_path / 'key.txt'
    keyfile.write_text(f'# created: now\n# public key: {public}\n{secret}\n')
    assert [str(i) for i in ba.parse_identities(str(keyfile))] == [secret]
    assert [str(i) for i in ba.parse_identities(keyfile.read_text())] == [secret]
    assert ba.parse_identities(None) is None and ba.parse_identities(None, 'pw') == []
    with pytest.raises(ba.BackupConfigError, match='neither an existing identity file'):
        ba.parse_identities(str(tmp_path / 'missing.txt'))
    broken = secret[:-3] + ('QQQ' if not secret.endswith('QQQ') else 'PPP')
    with pytest.raises(ba.BackupConfigError) as info:
        ba.parse_identities(broken)
    assert broken not in str(info.value) and secret[15:40] not in str(info.value)
    with pytest.raises(ba.BackupConfigError, match='public key') as info:
        ba.create(str(tmp_path), [str(keyfile)], recipients=[broken])
    assert broken not in str(info.value)
    with pytest.raises(ba.BackupConfigError, match='recipient'):
        ba.create(str(tmp_path), [str(keyfile)], recipients=['age1nothing'])


def test_restore_dry_run_writes_nothing_and_predicts_the_real_run(tree, keys, tmp_path):
    src, dest = tree
    secret, public = keys
    result = ba.create(str(dest), [str(src)], recipients=public)
    target = tmp_path / 'r'
    dry = ba.restore(result['archive'], str(target), identity=secret, dry_run=True)
    assert not target.exists()
    real = ba.restore(result['archive'], str(target), identity=secret)
    assert dry['dry_run'] is True and real['dry_run'] is False
    for key in ('files', 'dirs', 'links', 'bytes'):
        assert dry[key] == real[key]
    assert sorted(dry['members']) == sorted(real['members'])
    assert real['files'] == len([m for m in real['members'] if (target / m).is_file() and not (target / m).is_symlink()])
    with pytest.raises(ba.RestoreRefusedError, match='refusing to overwrite'):
        ba.restore(result['archive'], str(target), identity=secret, dry_run=True)
    again = ba.restore(result['archive'], str(target), identity=secret, dry_run=True, overwrite=True)
    assert sorted(again['overwritten']) == sorted(m for m in real['members']
                                                  if not (target / m).is_dir() or (target / m).is_symlink())


def test_restore_dry_run_refuses_what_the_real_run_refuses(tmp_path, keys, tree):
    secret, public = keys
    src, dest = tree
    result = ba.create(str(dest), [str(src)], recipients=public, now=T0)
    data = bytearray(Path(result['archive']).read_bytes())
    data[len(data) // 2] ^= 0x01
    Path(result['archive']).write_bytes(bytes(data))
    with pytest.raises(ba.BackupIntegrityError, match=re.escape(f"backup {result['name']}: archive checksum mismatch")):
        ba.restore(result['archive'], str(tmp_path / 'out'), identity=secret, dry_run=True)
    bad = tmp_path / 'bad'
    bad.mkdir()
    path = craft_backup(str(bad), [member('ok'), member('link', tarfile.SYMTYPE, linkname='../../etc/passwd')], public)
    with pytest.raises(ba.RestoreRefusedError, match='refusing symlink link'):
        ba.restore(path, str(tmp_path / 'out'), identity=secret, dry_run=True)
    path = craft_backup(str(bad), [member('escape/file')], public)
    target = tmp_path / 'target'
    target.mkdir()
    os.symlink(str(tmp_path), target / 'escape')
    with pytest.raises(ba.RestoreRefusedError, match='resolves outside'):
        ba.restore(path, str(target), identity=secret, dry_run=True)
    assert not (tmp_path / 'out').exists()


def test_find_archive(tree, keys, tmp_path):
    src, dest = tree
    _secret, public = keys
    with pytest.raises(ba.BackupConfigError, match='no backup'):
        ba.find_archive('latest', str(dest))
    old = ba.create(str(dest), [str(src)], recipients=public, now=T0)
    new = ba.create(str(dest), [str(src)], recipients=public, now=T0 + datetime.timedelta(hours=1), prefix='db-')
    assert ba.find_archive('latest', str(dest)) == new['archive']
    assert ba.find_archive(None, str(dest), prefix='') == old['archive']
    assert ba.find_archive(old['name'], str(dest)) == old['archive']
    assert ba.find_archive(old['archive']) == old['archive']
    with pytest.raises(ba.BackupConfigError, match='does not exist'):
        ba.find_archive('2020-01-01T000000Z.tar.gz.age', str(dest))
    with pytest.raises(ba.BackupConfigError, match='dest'):
        ba.find_archive('latest')
    with pytest.raises(ba.BackupConfigError, match="prefix 'web-'"):
        ba.find_archive('latest', str(dest), prefix='web-')
    with pytest.raises(ba.BackupConfigError, match='does not exist'):
        ba.find_archive('latest', str(tmp_path / 'nowhere'))


def test_retention_dry_run_with_pending_backup(tree, keys):
    src, dest = tree
    _secret, public = keys
    for day in range(4):
        ba.create(str(dest), [str(src / 'etc' / 'app' / 'app.env')], recipients=public,
                  now=T0 + datetime.timedelta(days=day))
    later = T0 + datetime.timedelta(days=10)
    pending = ba.backup_name(later, 'gzip')
    dry = ba.apply_retention(str(dest), {'keep_last': 2}, dry_run=True, pending=pending, prefix='')
    assert dry['keep'][0] == pending and dry['protected'] == pending
    made = ba.create(str(dest), [str(src / 'etc' / 'app' / 'app.env')], recipients=public, now=later,
                     compression='gzip')
    assert made['name'] == pending
    real = ba.apply_retention(str(dest), {'keep_last': 2}, prefix='')
    assert (real['prune'], real['keep'], real['protected']) == (dry['prune'], dry['keep'], dry['protected'])
    assert len(real['prune']) == 3
    with pytest.raises(ba.BackupConfigError, match='dry run'):
        ba.apply_retention(str(dest), {'keep_last': 2}, pending=pending)


def test_damaged_recipient_stanza_is_an_integrity_error_not_a_wrong_key(tree, keys):
    src, dest = tree
    secret, public = keys
    result = ba.create(str(dest), [str(src)], recipients=public, now=T0)
    data = bytearray(Path(result['archive']).read_bytes())
    start = data.index(b'-> X25519 ') + len(b'-> X25519 ') + 10
    data[start] = ord('B') if data[start] != ord('B') else ord('C')  # still valid base64: the key no longer unwraps
    Path(result['archive']).write_bytes(bytes(data))
    with pytest.raises(ba.BackupIntegrityError, match=re.escape(f"backup {result['name']}: archive checksum mismatch")):
        ba.verify(result['archive'], identity=secret)
    other, _public = age.generate_identity()
    with pytest.raises(ba.BackupIntegrityError):  # the damage is reported whatever the key
        ba.verify(result['archive'], identity=other)


@pytest.mark.parametrize('extra', ['inner', 'same', 'disjoint'])
def test_overlapping_sources_store_each_path_once(tree, keys, extra):
    src, dest = tree
    secret, public = keys
    (src / 'other').mkdir()
    (src / 'other' / 'note.txt').write_bytes(b'note\n')
    second = {'inner': src / 'etc' / 'app', 'same': src / 'etc', 'disjoint': src / 'other'}[extra]
    sources = [str(src / 'etc'), str(second)]
    assert ba._sources_overlap(ba.normalize_sources(sources)) is (extra != 'disjoint')  # pylint: disable=protected-access
    result = ba.create(str(dest), sources, recipients=public,
                       commands=[{'name': (src / 'etc' / 'app' / 'run.sh').as_posix().lstrip('/'), 'shell': 'printf x'}])
    names = [e['name'] for e in read_json(result['manifest'])['entries']]
    assert len(names) == len(set(names)) == result['entries']
    assert ba.verify(result['archive'], identity=secret)['entries'] == result['entries']  # archive and manifest agree
    # The command's output won over the file of the same name; the entries' spool left nothing behind.
    run_sh = [e for e in read_json(result['manifest'])['entries'] if e['name'].endswith('etc/app/run.sh')]
    assert len(run_sh) == 1 and run_sh[0].get('command') is True
    assert [n for n in backup_files(dest) if n != '.backup.lock'] == sorted([result['name'], os.path.basename(result['manifest'])])
