# Copyright (c) 2026, prodready.vps contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Tests for plugins/modules/backup_restore.py (real backups, real age keys, fake pg_restore)."""

import datetime
import gzip
import hashlib
import io
import json
import os
import stat
import sys
import tarfile

import pytest
from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.testing import patch_module_args

from ansible_collections.prodready.vps.plugins.module_utils import age
from ansible_collections.prodready.vps.plugins.module_utils import backup_archive as ba
from ansible_collections.prodready.vps.plugins.modules import backup_restore

T0 = datetime.datetime(2026, 3, 1, 2, 0, 0, tzinfo=datetime.timezone.utc)
DUMP = b'PGDMP' + bytes(range(256)) * 400
DUMP_CODE = 'import sys; sys.stdout.buffer.write(b"PGDMP" + bytes(range(256)) * 400)'


def run_module(capsys, args):
    with patch_module_args(args):
        with pytest.raises(SystemExit) as exit_info:
            backup_restore.main()
    out = capsys.readouterr().out
    return exit_info.value.code, json.loads(out), out


@pytest.fixture(scope='module')
def keys():
    return age.generate_identity()


@pytest.fixture
def setup(tmp_path, keys):
    """A source tree, and two backups of it in dest (the newer one also holds a database dump)."""
    _secret, public = keys
    src = tmp_path / 'src'
    (src / 'app' / 'sub').mkdir(parents=True)
    (src / 'app' / 'app.env').write_bytes(b'SECRET=1\n')
    os.chmod(src / 'app' / 'app.env', 0o640)
    (src / 'app' / 'big.bin').write_bytes(os.urandom(150000))
    (src / 'app' / 'sub' / 'x.txt').write_bytes(b'x' * 1000)
    os.symlink('app.env', src / 'app' / 'link.env')
    dest = tmp_path / 'dest'
    dest.mkdir()
    old = ba.create(str(dest), [str(src / 'app' / 'app.env')], recipients=public, now=T0)
    new = ba.create(str(dest), [str(src)], recipients=public, now=T0 + datetime.timedelta(days=1),
                    commands=[{'name': 'db/app.dump', 'argv': [sys.executable, '-c', DUMP_CODE]}])
    return src, dest, old, new


def tree_of(root):
    """Relative path -> (kind, mode, sha256 / link target)."""
    result = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            rel = os.path.relpath(path, root)
            if stat.S_ISLNK(st.st_mode):
                result[rel] = ('link', os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                result[rel] = ('dir', stat.S_IMODE(st.st_mode))
            else:
                with open(path, 'rb') as handle:
                    result[rel] = ('file', stat.S_IMODE(st.st_mode), hashlib.sha256(handle.read()).hexdigest())
    return result


class FakeRunCommand:
    def __init__(self, rc=0, out='', err=''):
        self.calls = []
        self.rc, self.out, self.err = rc, out, err

    def install(self, monkeypatch):
        def run_command(module, args, **kwargs):
            return self(module, args, **kwargs)
        monkeypatch.setattr(AnsibleModule, 'run_command', run_command)

    def __call__(self, module, args, **kwargs):
        self.calls.append((list(args), kwargs))
        dump = args[-1]
        with open(dump, 'rb') as handle:  # the dump is in place when pg_restore runs
            self.dump = handle.read()
        return self.rc, self.out, self.err


def test_restores_the_latest_backup_byte_identical(setup, keys, tmp_path, capsys):
    src, dest, _old, new = setup
    secret, _public = keys
    target = tmp_path / 'target'
    code, result, out = run_module(capsys, {'dest': str(dest), 'target': str(target), 'identity': secret})
    assert code == 0 and result['changed'] is True
    assert result['archive'] == new['archive'] and result['name'] == new['name']
    restored = target / str(src).lstrip('/')
    assert tree_of(restored) == tree_of(src)
    assert (target / 'db' / 'app.dump').read_bytes() == DUMP
    files = [p for p, v in tree_of(target).items() if v[0] == 'file']
    assert result['files'] == len(files) == new['files']
    assert result['bytes'] == sum(os.path.getsize(target / p) for p in files)
    assert result['links'] == 1 and result['members_total'] == len(result['members'])
    assert result['overwritten'] == [] and result['duration'] >= 0
    assert secret not in out and not [n for n in os.listdir(target) if n.startswith('.restore-')]


def test_members_are_listed_up_to_a_limit_and_counted_in_full(setup, keys, tmp_path, capsys, monkeypatch):
    """restore() keeps only the first names (memory); members_total still counts every entry, in check mode too."""
    _src, dest, _old, _new = setup
    secret, _public = keys
    target = tmp_path / 'target'
    args = {'dest': str(dest), 'target': str(target), 'identity': secret}
    code, full, _out = run_module(capsys, dict(args, _ansible_check_mode=True))
    assert code == 0 and full['members_total'] == len(full['members']) > 3
    monkeypatch.setattr(ba, 'MEMBERS_LISTED', 3)
    for check_mode in (True, False):
        code, result, _out = run_module(capsys, dict(args, _ansible_check_mode=check_mode))
        assert code == 0 and result['changed'] is True
        assert result['members'] == full['members'][:3] and result['members_total'] == full['members_total']


def test_check_mode_verifies_and_writes_nothing(setup, keys, tmp_path, capsys):
    _src, dest, old, _new = setup
    secret, _public = keys
    target = tmp_path / 'target'
    args = {'dest': str(dest), 'target': str(target), 'identity': secret}
    code, dry, _out = run_module(capsys, dict(args, _ansible_check_mode=True))
    assert code == 0 and dry['changed'] is True and not target.exists()
    code, real, _out = run_module(capsys, args)
    assert code == 0
    for key in ('files', 'dirs', 'links', 'bytes', 'members_total'):
        assert dry[key] == real[key], key
    assert sorted(dry['members']) == sorted(real['members'])
    # a damaged archive fails in check mode too
    with open(old['archive'], 'r+b') as handle:
        handle.seek(200)
        byte = handle.read(1)
        handle.seek(200)
        handle.write(bytes([byte[0] ^ 0x01]))
    code, result, _out = run_module(capsys, dict(args, archive=old['name'], target=str(tmp_path / 'other'),
                                                 _ansible_check_mode=True))
    assert code == 1 and 'backup %s: archive checksum mismatch' % old['name'] in result['msg']


def test_existing_files_are_not_overwritten_unless_asked(setup, keys, tmp_path, capsys):
    src, dest, _old, new = setup
    secret, _public = keys
    target = tmp_path / 'target'
    args = {'dest': str(dest), 'archive': new['name'], 'target': str(target), 'identity': secret}
    assert run_module(capsys, args)[0] == 0
    env = target / str(src).lstrip('/') / 'app' / 'app.env'
    env.write_bytes(b'changed since\n')
    code, result, _out = run_module(capsys, args)
    assert code == 1 and 'refusing to overwrite' in result['msg'] and 'use overwrite' in result['msg']
    assert str(env.relative_to(target)) in result['msg'] and 'Nothing was restored' in result['msg']
    assert env.read_bytes() == b'changed since\n'
    only = [str(env.relative_to(target))]
    code, result, _out = run_module(capsys, dict(args, overwrite=True, only=only))
    assert code == 0 and result['files'] == 1 and result['overwritten'] == only
    assert env.read_bytes() == b'SECRET=1\n'


def test_only_restores_matching_entries(setup, keys, tmp_path, capsys):
    src, dest, _old, _new = setup
    secret, _public = keys
    target = tmp_path / 'target'
    sub = str(src / 'app' / 'sub').lstrip('/')
    code, result, _out = run_module(capsys, {'dest': str(dest), 'target': str(target), 'identity': secret,
                                             'only': [sub, 'db/*.dump']})
    assert code == 0 and result['files'] == 2
    assert sorted(result['members']) == sorted([sub, sub + '/x.txt', 'db/app.dump'])
    assert not (target / str(src).lstrip('/') / 'app' / 'app.env').exists()
    code, result, _out = run_module(capsys, {'dest': str(dest), 'target': str(target), 'identity': secret,
                                             'only': ['nothing/here']})
    assert code == 1 and 'no entry matches nothing/here' in result['msg']


def test_flipped_byte_fails_and_restores_nothing(setup, keys, tmp_path, capsys):
    _src, dest, _old, new = setup
    secret, _public = keys
    size = os.path.getsize(new['archive'])
    with open(new['archive'], 'r+b') as handle:
        handle.seek(size - 1)
        byte = handle.read(1)
        handle.seek(size - 1)
        handle.write(bytes([byte[0] ^ 0x01]))
    target = tmp_path / 'target'
    code, result, _out = run_module(capsys, {'dest': str(dest), 'target': str(target), 'identity': secret})
    assert code == 1 and result['archive'] == new['archive']
    assert 'backup %s: archive checksum mismatch' % new['name'] in result['msg']
    assert os.listdir(target) == []


def test_wrong_identity_is_a_clear_error(setup, tmp_path, capsys):
    _src, dest, _old, new = setup
    other, _public = age.generate_identity()
    target = tmp_path / 'target'
    code, result, out = run_module(capsys, {'dest': str(dest), 'target': str(target), 'identity': other})
    assert code == 1 and 'backup %s: none of the given identities can decrypt it' % new['name'] in result['msg']
    assert 'matching one of the recipients' in result['msg'] and other not in out
    assert not target.exists() or os.listdir(target) == []


def crafted_backup(dest, members, public):
    """A valid, matching age archive + manifest around an arbitrary (malicious) tar."""
    raw = io.BytesIO()
    entries = []
    with tarfile.open(fileobj=raw, mode='w', format=tarfile.PAX_FORMAT) as tar:
        for name, kind, data, linkname in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.size = len(data)
            info.linkname = linkname
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
            entry = {'name': name, 'type': 'file' if kind == tarfile.REGTYPE else 'symlink'}
            if kind == tarfile.REGTYPE:
                entry.update(size=len(data), sha256=hashlib.sha256(data).hexdigest())
            entries.append(entry)
    ciphertext = age.encrypt_bytes(gzip.compress(raw.getvalue()), public)
    path = os.path.join(dest, '2027-01-01T000000Z.tar.gz.age')
    with open(path, 'wb') as handle:
        handle.write(ciphertext)
    manifest = {'format': ba.MANIFEST_FORMAT, 'version': 1, 'compression': 'gzip', 'entries': entries,
                'archive': {'size': len(ciphertext), 'sha256': hashlib.sha256(ciphertext).hexdigest()}}
    with open(path + '.manifest.json', 'w') as handle:
        json.dump(manifest, handle)
    return path


@pytest.mark.parametrize('members', [
    [('../escaped', tarfile.REGTYPE, b'evil', '')],
    [('ok', tarfile.REGTYPE, b'fine', ''), ('a/../../escaped', tarfile.REGTYPE, b'evil', '')],
    [('/tmp/escaped', tarfile.REGTYPE, b'evil', '')],
    [('link', tarfile.SYMTYPE, b'', '../../escaped')],
], ids=['dotdot', 'nested-dotdot', 'absolute', 'symlink-out'])
@pytest.mark.parametrize('check_mode', [False, True])
def test_path_traversal_is_refused(tmp_path, keys, capsys, members, check_mode):
    secret, public = keys
    dest = tmp_path / 'dest'
    dest.mkdir()
    path = crafted_backup(str(dest), members, public)
    target = tmp_path / 'deep' / 'target'
    code, result, _out = run_module(capsys, {'archive': path, 'target': str(target), 'identity': secret,
                                             '_ansible_check_mode': check_mode})
    assert code == 1 and 'refusing' in result['msg'] and os.path.basename(path) in result['msg']
    assert not (tmp_path / 'escaped').exists() and not (tmp_path / 'deep' / 'escaped').exists()
    assert not target.exists() or os.listdir(target) == []


def test_database_restore_runs_pg_restore_with_an_argument_list(setup, keys, tmp_path, capsys, monkeypatch):
    _src, dest, _old, _new = setup
    secret, _public = keys
    fake = FakeRunCommand(out='restored\n')
    fake.install(monkeypatch)
    target = tmp_path / 'target'
    code, result, _out = run_module(capsys, {
        'dest': str(dest), 'target': str(target), 'identity': secret, 'only': ['nothing-else/*'],
        'database': {'member': 'db/app.dump', 'dbname': 'app', 'executable': '/opt/pg/bin/pg_restore'}})
    assert code == 0 and result['changed'] is True
    dump = str(target / 'db' / 'app.dump')
    expected = ['/opt/pg/bin/pg_restore', '--clean', '--if-exists', '--no-owner', '--dbname', 'app', dump]
    assert [call[0] for call in fake.calls] == [expected]
    assert 'use_unsafe_shell' not in fake.calls[0][1]
    assert fake.dump == DUMP  # restored (and verified) before pg_restore ran
    assert result['members'] == ['db/app.dump']  # added to only
    assert result['database'] == {'command': expected, 'executed': True, 'rc': 0, 'stdout': 'restored\n', 'stderr': ''}


def test_database_restore_failure_and_check_mode(setup, keys, tmp_path, capsys, monkeypatch):
    _src, dest, _old, _new = setup
    secret, _public = keys
    fake = FakeRunCommand(rc=1, err='pg_restore: error: database "app" does not exist\n')
    fake.install(monkeypatch)
    target = tmp_path / 'target'
    database = {'member': '/db/app.dump', 'dbname': 'app', 'executable': '/usr/bin/pg_restore',
                'args': ['--no-owner', '--exit-on-error', '--jobs=2']}
    args = {'dest': str(dest), 'target': str(target), 'identity': secret, 'only': ['db/app.dump'],
            'database': database}
    code, result, _out = run_module(capsys, dict(args, _ansible_check_mode=True))
    assert code == 0 and fake.calls == [] and not target.exists()
    assert result['database']['executed'] is False
    assert result['database']['command'] == ['/usr/bin/pg_restore', '--no-owner', '--exit-on-error', '--jobs=2',
                                             '--dbname', 'app', str(target / 'db' / 'app.dump')]
    code, result, _out = run_module(capsys, args)
    assert code == 1 and len(fake.calls) == 1
    assert 'pg_restore into database app exited with status 1' in result['msg']
    assert 'database "app" does not exist' in result['msg'] and str(target / 'db' / 'app.dump') in result['msg']
    assert result['files'] == 1 and result['database']['rc'] == 1


def test_database_member_must_be_in_the_backup(setup, keys, tmp_path, capsys, monkeypatch):
    _src, dest, old, _new = setup
    secret, _public = keys
    fake = FakeRunCommand()
    fake.install(monkeypatch)
    target = tmp_path / 'target'
    code, result, _out = run_module(capsys, {
        'dest': str(dest), 'target': str(target), 'identity': secret,
        'database': {'member': 'db/other.dump', 'dbname': 'app', 'executable': '/usr/bin/pg_restore'}})
    assert code == 1 and 'has no file db/other.dump' in result['msg'] and 'db/app.dump' in result['msg']
    code, result, _out = run_module(capsys, {
        'dest': str(dest), 'archive': old['name'], 'target': str(target), 'identity': secret,
        'database': {'member': 'db/app.dump', 'dbname': 'app', 'executable': '/usr/bin/pg_restore'}})
    assert code == 1 and '(command outputs in it: none)' in result['msg']
    assert fake.calls == [] and not target.exists()


def test_missing_pg_restore_fails_before_writing(setup, keys, tmp_path, capsys, monkeypatch):
    _src, dest, _old, _new = setup
    secret, _public = keys
    monkeypatch.setattr(AnsibleModule, 'get_bin_path', lambda self, name, required=False, opt_dirs=None: (
        self.fail_json(msg='Failed to find required executable "%s"' % name) if required else None))
    target = tmp_path / 'target'
    code, result, _out = run_module(capsys, {'dest': str(dest), 'target': str(target), 'identity': secret,
                                             'database': {'member': 'db/app.dump', 'dbname': 'app'}})
    assert code == 1 and 'pg_restore' in result['msg'] and not target.exists()


@pytest.mark.parametrize('args,message', [
    ({'archive': 'latest', 'dest': None}, 'dest'),
    ({'prefix': 'web-'}, "no backup with the prefix 'web-'"),
    ({'archive': '2020-01-01T000000Z.tar.gz.age'}, 'does not exist'),
    ({'identity': ''}, 'restore needs an identity'),
    ({'identity': '', 'passphrase': ''}, 'restore needs an identity'),
    ({'identity': 'AGE-SECRET-KEY-1QQQQ'}, 'identity: invalid age identity'),
])
def test_usage_errors(setup, keys, tmp_path, capsys, args, message):
    _src, dest, _old, _new = setup
    secret, _public = keys
    target = tmp_path / 'target'
    code, result, _out = run_module(capsys, dict({'dest': str(dest), 'target': str(target), 'identity': secret}, **args))
    assert code == 1 and message in result['msg']
    assert not target.exists()
