# Copyright (c) 2026, prodready.vps contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Tests for plugins/modules/backup.py (real files, real age encryption)."""

import datetime
import hashlib
import json
import os
import sys
import threading
import time

import pytest
from ansible.module_utils.testing import patch_module_args

from ansible_collections.prodready.vps.plugins.module_utils import age
from ansible_collections.prodready.vps.plugins.module_utils import backup_archive as ba
from ansible_collections.prodready.vps.plugins.modules import backup

T0 = datetime.datetime(2026, 3, 1, 2, 0, 0, tzinfo=datetime.timezone.utc)


def run_module(capsys, args):
    with patch_module_args(args):
        with pytest.raises(SystemExit) as exit_info:
            backup.main()
    out = capsys.readouterr().out
    return exit_info.value.code, json.loads(out), out


@pytest.fixture(scope='module')
def keys():
    return age.generate_identity()


@pytest.fixture
def tree(tmp_path):
    src = tmp_path / 'src'
    (src / 'app' / 'sub').mkdir(parents=True)
    (src / 'app' / 'app.env').write_bytes(b'SECRET=1\n')
    (src / 'app' / 'big.bin').write_bytes(os.urandom(200000))
    (src / 'app' / 'sub' / 'x.txt').write_bytes(b'x' * 1000)
    (src / 'app' / 'cache.tmp').write_bytes(b'tmp')
    os.symlink('app.env', src / 'app' / 'link.env')
    logs = src / 'logs'
    logs.mkdir()
    for name, days in (('new.log', 1), ('old.log', 40), ('new.txt', 1)):
        (logs / name).write_bytes(name.encode() * 10)
        stamp = time.time() - days * 86400
        os.utime(logs / name, (stamp, stamp))
    dest = tmp_path / 'dest'
    dest.mkdir()
    return src, dest


def listing(path):
    return sorted(os.listdir(path)) if os.path.isdir(path) else None


def archives(dest):
    return sorted(n for n in os.listdir(dest) if n.endswith('.age'))


def manifest_entries(result):
    with open(result['manifest']) as handle:
        return {e['name']: e for e in json.load(handle)['entries']}


def sources_of(src):
    return [
        {'path': str(src / 'app'), 'exclude': ['*.tmp']},
        {'path': str(src / 'logs'), 'include': ['*.log'], 'newer_than_days': 7},
        {'path': str(src / 'gone'), 'missing_ok': True},
    ]


def test_writes_an_encrypted_backup_and_reports_it(tree, keys, tmp_path, capsys):
    src, dest = tree
    secret, public = keys
    code, result, _out = run_module(capsys, {'dest': str(dest), 'recipients': [public], 'sources': sources_of(src)})
    assert code == 0 and result['changed'] is True
    assert archives(dest) == [result['name']] and os.path.dirname(result['archive']) == str(dest)
    with open(result['archive'], 'rb') as handle:
        data = handle.read()
    assert data.startswith(b'age-encryption.org/v1\n') and b'SECRET=1' not in data
    assert result['size'] == len(data) and result['sha256'] == hashlib.sha256(data).hexdigest()
    entries = manifest_entries(result)
    files = sorted(os.path.basename(n) for n, e in entries.items() if e['type'] == 'file')
    assert files == ['app.env', 'big.bin', 'new.log', 'x.txt']  # *.tmp excluded, old.log and new.txt not selected
    assert result['files'] == len(files) and result['entries'] == len(entries)
    assert result['duration'] >= 0 and result['pruned'] == [] and 'retention' not in result
    assert result['compression'] == ('zstd' if ba.HAS_ZSTANDARD else 'gzip')
    ba.verify(result['archive'], identity=secret)
    target = tmp_path / 'restored'
    ba.restore(result['archive'], str(target), identity=secret)
    assert (target / str(src).lstrip('/') / 'app' / 'big.bin').read_bytes() == (src / 'app' / 'big.bin').read_bytes()


def test_command_output_is_an_entry(tree, keys, tmp_path, capsys):
    _src, dest = tree
    secret, public = keys
    code_text = 'import sys; sys.stdout.buffer.write(b"PGDMP" + bytes(range(256)) * 5000)'
    code, result, _out = run_module(capsys, {
        'dest': str(dest), 'recipients': [public],
        'commands': [{'name': 'db/app.dump', 'argv': [sys.executable, '-c', code_text], 'timeout': 60},
                     {'name': 'db/env.txt', 'shell': 'printf "%s" "$DUMP_LABEL"', 'env': {'DUMP_LABEL': 'nightly'}}]})
    assert code == 0 and result['files'] == 2
    target = tmp_path / 'r'
    ba.restore(result['archive'], str(target), identity=secret)
    assert (target / 'db' / 'app.dump').read_bytes() == b'PGDMP' + bytes(range(256)) * 5000
    assert (target / 'db' / 'env.txt').read_bytes() == b'nightly'


def test_failing_command_writes_nothing_and_prunes_nothing(tree, keys, capsys):
    src, dest = tree
    _secret, public = keys
    for day in range(3):
        ba.create(str(dest), [str(src / 'app' / 'app.env')], recipients=public, now=T0 + datetime.timedelta(days=day))
    before = listing(dest)
    failing = 'import sys; sys.stderr.write("pg_dump: connection refused"); sys.exit(2)'
    code, result, _out = run_module(capsys, {
        'dest': str(dest), 'recipients': [public], 'sources': [str(src / 'app')],
        'commands': [{'name': 'db/app.dump', 'argv': [sys.executable, '-c', failing]}],
        'retention': {'keep_last': 1}})
    assert code == 1 and result['failed'] is True
    assert 'db/app.dump' in result['msg'] and 'connection refused' in result['msg']
    assert 'Nothing was written' in result['msg']
    assert listing(dest) == before


def test_check_mode_writes_nothing_and_predicts_the_run(tree, keys, capsys, monkeypatch):
    src, dest = tree
    _secret, public = keys
    made = [ba.create(str(dest), [str(src / 'app' / 'app.env')], recipients=public,
                      now=T0 + datetime.timedelta(days=day)) for day in range(4)]
    monkeypatch.setattr(ba, 'utcnow', lambda: T0 + datetime.timedelta(days=10))
    before = {n: (dest / n).read_bytes() for n in os.listdir(dest)}
    args = {'dest': str(dest), 'recipients': [public], 'sources': sources_of(src),
            'commands': [{'name': 'db/x.sql', 'shell': 'printf "select 1;"'}], 'retention': {'keep_last': 2}}
    code, dry, _out = run_module(capsys, dict(args, _ansible_check_mode=True))
    assert code == 0 and dry['changed'] is True
    assert {n: (dest / n).read_bytes() for n in os.listdir(dest)} == before
    assert dry['retention']['applied'] is False
    assert sorted(dry['pruned']) == sorted(m['name'] for m in made[:3])

    code, real, _out = run_module(capsys, args)
    assert code == 0
    assert (real['archive'], real['manifest'], real['name']) == (dry['archive'], dry['manifest'], dry['name'])
    assert real['pruned'] == dry['pruned'] and real['retention']['kept'] == dry['retention']['kept']
    assert archives(dest) == sorted([made[3]['name'], real['name']])
    assert real['files'] == dry['files']
    entries = manifest_entries(real)
    file_bytes = sum(e['size'] for e in entries.values() if e['type'] == 'file' and not e.get('command'))
    assert dry['estimate']['bytes'] == file_bytes
    assert dry['estimate']['sources'][2] == {'path': str(src / 'gone'), 'exists': False, 'files': 0, 'dirs': 0,
                                             'links': 0, 'bytes': 0}
    assert dry['estimate']['commands'] == ['db/x.sql']


def test_check_mode_does_not_create_dest(tree, keys, tmp_path, capsys):
    src, _dest = tree
    _secret, public = keys
    dest = tmp_path / 'new' / 'backups'
    code, result, _out = run_module(capsys, {'dest': str(dest), 'recipients': [public], 'sources': [str(src)],
                                             'retention': {'keep_daily': 3}, '_ansible_check_mode': True})
    assert code == 0 and result['changed'] is True and result['pruned'] == []
    assert not (tmp_path / 'new').exists()
    code, result, _out = run_module(capsys, {'dest': str(dest), 'recipients': [public], 'sources': [str(src)]})
    assert code == 0 and archives(dest) == [result['name']]
    assert oct(os.stat(dest).st_mode & 0o777) == oct(0o700)


def test_retention_protects_the_newest_verified_backup(tree, keys, capsys, monkeypatch):
    src, dest = tree
    secret, public = keys
    made = [ba.create(str(dest), [str(src / 'app' / 'app.env')], recipients=public,
                      now=T0 + datetime.timedelta(days=day)) for day in range(5)]
    ba.verify(made[1]['archive'], identity=secret, mark=True)  # the only verified one: must survive
    monkeypatch.setattr(ba, 'utcnow', lambda: T0 + datetime.timedelta(days=7))
    code, result, _out = run_module(capsys, {'dest': str(dest), 'recipients': [public],
                                             'sources': [str(src / 'app')], 'retention': {'keep_last': 2}})
    assert code == 0
    assert result['retention']['protected'] == made[1]['name']
    assert 'protected' in result['retention']['reasons'][made[1]['name']]
    expected_pruned = {made[0]['name'], made[2]['name'], made[3]['name']}
    assert set(result['pruned']) == expected_pruned
    assert archives(dest) == sorted([made[1]['name'], made[4]['name'], result['name']])
    for name in expected_pruned:
        assert not (dest / (name + '.manifest.json')).exists()
    assert (dest / (made[1]['name'] + '.verified')).exists()
    assert result['retention']['kept'][0] == result['name']


def test_retention_only_touches_the_same_prefix_and_can_be_off(tree, keys, capsys, monkeypatch):
    src, dest = tree
    _secret, public = keys
    other = [ba.create(str(dest), [str(src / 'app' / 'app.env')], recipients=public, prefix='db-',
                       now=T0 + datetime.timedelta(days=day)) for day in range(3)]
    monkeypatch.setattr(ba, 'utcnow', lambda: T0 + datetime.timedelta(days=5))
    args = {'dest': str(dest), 'recipients': [public], 'sources': [str(src / 'app')], 'prefix': 'etc-',
            'retention': {'keep_last': 1}}
    code, result, _out = run_module(capsys, dict(args, apply_retention=False))
    assert code == 0 and result['name'].startswith('etc-') and result['pruned'] == []
    monkeypatch.setattr(ba, 'utcnow', lambda: T0 + datetime.timedelta(days=6))
    code, second, _out = run_module(capsys, args)
    assert code == 0 and second['pruned'] == [result['name']]
    assert archives(dest) == sorted([m['name'] for m in other] + [second['name']])


def test_second_run_waits_for_the_lock_then_fails_cleanly(tree, keys, capsys):
    src, dest = tree
    _secret, public = keys
    args = {'dest': str(dest), 'recipients': [public], 'sources': [str(src / 'app')], 'lock_timeout': 0.3}
    with ba.BackupLock(str(dest), 0):
        started = time.monotonic()
        code, result, _out = run_module(capsys, args)
        assert time.monotonic() - started >= 0.3
    assert code == 1 and result['failed'] is True
    assert 'another backup run holds the lock' in result['msg'] and str(os.getpid()) in result['msg']
    assert 'lock_timeout' in result['msg'] and 'Nothing was written' in result['msg']
    assert archives(dest) == []
    code, result, _out = run_module(capsys, args)
    assert code == 0 and archives(dest) == [result['name']]


def test_run_that_waits_gets_the_lock_when_it_is_released(tree, keys, capsys):
    src, dest = tree
    _secret, public = keys
    lock = ba.BackupLock(str(dest), 0).acquire()
    timer = threading.Timer(0.3, lock.release)
    timer.start()
    try:
        code, result, _out = run_module(capsys, {'dest': str(dest), 'recipients': [public],
                                                 'sources': [str(src / 'app')], 'lock_timeout': 10})
    finally:
        timer.join()
    assert code == 0 and archives(dest) == [result['name']]


def test_passphrase_is_never_in_the_output(tree, capsys):
    src, dest = tree
    passphrase = 'correct horse battery staple'
    code, result, out = run_module(capsys, {'dest': str(dest), 'passphrase': passphrase, 'work_factor': 10,
                                            'sources': [str(src / 'app')], 'compression': 'gzip'})
    assert code == 0 and result['name'].endswith('.tar.gz.age')
    assert passphrase not in out
    ba.verify(result['archive'], passphrase=passphrase)
    with pytest.raises(ba.BackupDecryptError):
        ba.verify(result['archive'], passphrase='wrong')


def test_zstd_without_zstandard_fails_and_auto_falls_back(tree, keys, capsys, monkeypatch):
    src, dest = tree
    _secret, public = keys
    monkeypatch.setattr(ba, 'HAS_ZSTANDARD', False)
    args = {'dest': str(dest), 'recipients': [public], 'sources': [str(src / 'app')]}
    code, result, _out = run_module(capsys, dict(args, compression='zstd'))
    assert code == 1 and 'zstandard' in result['msg'] and archives(dest) == []
    code, result, _out = run_module(capsys, args)
    assert code == 0 and result['compression'] == 'gzip' and result['name'].endswith('.tar.gz.age')


@pytest.mark.parametrize('extra,message', [
    ({'sources': ['/nonexistent/path']}, 'does not exist'),
    ({'prefix': '../x'}, 'prefix'),
    ({'retention': {'keep_within': 'soon'}}, 'retention: keep_within'),
    ({'retention': {'keep_last': -2}}, 'retention: keep_last'),
    ({'compression': 'gzip', 'level': 12}, 'level must be from 1 to 9'),
    ({'commands': [{'name': '../etc/passwd', 'argv': ['true']}]}, 'relative path'),
    ({'commands': [{'name': 'x', 'argv': ['true'], 'shell': 'true'}]}, 'exactly one'),
    ({'sources': [{'path': '/tmp', 'newer_than_days': 'a week'}]}, 'must be a number'),
    ({'passphrase': 'pw'}, 'mutually exclusive'),
    ({'passphrase': '', 'recipients': None}, 'passphrase is empty'),
    ({'recipients': ['age1notakey']}, 'recipient'),
])
def test_bad_options_fail_before_writing(tree, keys, capsys, extra, message):
    src, dest = tree
    _secret, public = keys
    args = dict({'dest': str(dest), 'recipients': [public], 'sources': [str(src / 'app')]}, **extra)
    args = {key: value for key, value in args.items() if value is not None}
    code, result, _out = run_module(capsys, args)
    assert code == 1 and message in result['msg']
    assert archives(dest) == []


def test_secret_key_given_as_recipient_is_not_echoed(tree, keys, capsys):
    src, dest = tree
    secret, _public = keys
    code, result, _out = run_module(capsys, {'dest': str(dest), 'recipients': [secret], 'sources': [str(src)]})
    assert code == 1 and 'public key' in result['msg']
    assert secret not in result['msg'] and secret.lower() not in result['msg'].lower()
    assert archives(dest) == []
