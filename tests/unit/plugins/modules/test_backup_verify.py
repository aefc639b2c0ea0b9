# Copyright (c) 2026, prodready.vps contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Tests for plugins/modules/backup_verify.py (real backups, real age keys)."""

import datetime
import json
import os

import pytest
from ansible.module_utils.testing import patch_module_args

from ansible_collections.prodready.vps.plugins.module_utils import age
from ansible_collections.prodready.vps.plugins.module_utils import backup_archive as ba
from ansible_collections.prodready.vps.plugins.modules import backup_verify

T0 = datetime.datetime(2026, 3, 1, 2, 0, 0, tzinfo=datetime.timezone.utc)


def run_module(capsys, args):
    with patch_module_args(args):
        with pytest.raises(SystemExit) as exit_info:
            backup_verify.main()
    out = capsys.readouterr().out
    return exit_info.value.code, json.loads(out), out


@pytest.fixture(scope='module')
def keys():
    return age.generate_identity()


@pytest.fixture
def backups(tmp_path, keys):
    """Two backups in dest, oldest first."""
    _secret, public = keys
    src = tmp_path / 'src'
    src.mkdir()
    (src / 'a.txt').write_bytes(b'alpha\n' * 1000)
    (src / 'b.bin').write_bytes(os.urandom(100000))
    dest = tmp_path / 'dest'
    dest.mkdir()
    made = [ba.create(str(dest), [str(src)], recipients=public, now=T0 + datetime.timedelta(days=day))
            for day in range(2)]
    return dest, made


def flip_byte(path, offset=None):
    with open(path, 'r+b') as handle:
        size = os.fstat(handle.fileno()).st_size
        offset = size // 2 if offset is None else offset
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0x01]))


def markers(dest):
    return sorted(n for n in os.listdir(dest) if n.endswith('.verified'))


def test_shallow_verifies_every_backup_newest_first(backups, capsys):
    dest, made = backups
    code, result, _out = run_module(capsys, {'dest': str(dest)})
    assert code == 0 and result['changed'] is False
    assert [b['name'] for b in result['backups']] == [made[1]['name'], made[0]['name']]
    assert result['verified'] == 2 and {b['mode'] for b in result['backups']} == {'shallow'}
    assert [b['size'] for b in result['backups']] == [made[1]['size'], made[0]['size']]
    assert markers(dest) == []


def test_deep_with_mark_writes_the_marker(backups, keys, capsys):
    dest, made = backups
    secret, _public = keys
    code, result, out = run_module(capsys, {'dest': str(dest), 'archive': 'latest', 'mode': 'deep',
                                            'identity': secret, 'mark': True})
    assert code == 0 and result['changed'] is True
    assert [(b['name'], b['mode'], b['marked']) for b in result['backups']] == [(made[1]['name'], 'deep', True)]
    assert markers(dest) == [made[1]['name'] + '.verified']
    assert [b['verified'] for b in ba.list_backups(str(dest))] == [True, False]
    assert secret not in out


def test_check_mode_verifies_but_writes_no_marker(backups, keys, capsys):
    dest, made = backups
    secret, _public = keys
    args = {'dest': str(dest), 'mode': 'deep', 'identity': secret, 'mark': True, '_ansible_check_mode': True}
    code, result, _out = run_module(capsys, args)
    assert code == 0 and result['verified'] == 2 and result['changed'] is True
    assert [b['marked'] for b in result['backups']] == [False, False]
    assert markers(dest) == []
    flip_byte(made[0]['archive'])
    code, result, _out = run_module(capsys, args)
    assert code == 1 and made[0]['name'] in result['msg'] and markers(dest) == []


def test_deep_without_mark_is_not_changed(backups, keys, capsys):
    dest, made = backups
    secret, _public = keys
    code, result, _out = run_module(capsys, {'path': made[0]['archive'], 'mode': 'deep', 'identity': secret})
    assert code == 0 and result['changed'] is False and markers(dest) == []
    assert result['backups'][0]['entries'] == len(json.loads(open(made[0]['manifest']).read())['entries'])


@pytest.mark.parametrize('mode', ['shallow', 'deep'])
def test_flipped_byte_fails_naming_the_archive(backups, keys, capsys, mode):
    dest, made = backups
    secret, _public = keys
    flip_byte(made[1]['archive'])  # the newest: the older one is verified after the failure
    args = {'dest': str(dest), 'mode': mode}
    if mode == 'deep':
        args.update(identity=secret, mark=True)
    code, result, _out = run_module(capsys, args)
    assert code == 1 and result['failed'] is True
    assert result['msg'].startswith('1 of 2 backups failed %s verification' % mode)
    assert 'backup %s: archive checksum mismatch' % made[1]['name'] in result['msg']
    assert [(f['name'], f['error']) for f in result['failures']] == [(made[1]['name'], 'integrity')]
    assert [b['name'] for b in result['backups']] == [made[0]['name']]  # the others are still verified
    assert result['changed'] is (mode == 'deep')
    expected_markers = [made[0]['name'] + '.verified'] if mode == 'deep' else []
    assert markers(dest) == expected_markers


def test_entry_mismatch_names_the_member(backups, keys, capsys):
    dest, made = backups
    secret, _public = keys
    manifest = json.loads(open(made[1]['manifest']).read())
    victim = next(e for e in manifest['entries'] if e['name'].endswith('/a.txt'))
    victim['sha256'] = '0' * 64
    with open(made[1]['manifest'], 'w') as handle:
        json.dump(manifest, handle)
    code, result, _out = run_module(capsys, {'dest': str(dest), 'archive': made[1]['name']})
    assert code == 0  # the archive itself still matches its checksum
    code, result, _out = run_module(capsys, {'dest': str(dest), 'archive': made[1]['name'], 'mode': 'deep',
                                             'identity': secret})
    assert code == 1
    assert 'backup %s: entry %s does not match the manifest' % (made[1]['name'], victim['name']) in result['msg']
    assert 'do not rely on it' in result['msg']


def test_missing_manifest_is_an_integrity_failure(backups, capsys):
    dest, made = backups
    os.unlink(made[0]['manifest'])
    code, result, _out = run_module(capsys, {'dest': str(dest)})
    assert code == 1 and 'manifest %s.manifest.json is missing' % made[0]['name'] in result['msg']
    assert result['failures'][0]['error'] == 'integrity'


def test_wrong_identity_is_a_clear_error(backups, keys, capsys):
    dest, made = backups
    other_secret, _other_public = age.generate_identity()
    code, result, out = run_module(capsys, {'dest': str(dest), 'archive': 'latest', 'mode': 'deep',
                                            'identity': other_secret})
    assert code == 1
    assert 'backup %s: none of the given identities can decrypt it' % made[1]['name'] in result['msg']
    assert age.recipient_fingerprint(keys[1]) in result['msg']
    assert result['failures'][0]['error'] == 'decrypt' and other_secret not in out


def test_identity_file_and_bad_identities(backups, keys, tmp_path, capsys):
    dest, made = backups
    secret, public = keys
    keyfile = tmp_path / 'identity.txt'
    keyfile.write_text('# created: 2026-01-01\n# public key: %s\n%s\n' % (public, secret))
    code, result, _out = run_module(capsys, {'dest': str(dest), 'mode': 'deep', 'identity': str(keyfile)})
    assert code == 0 and result['verified'] == 2
    code, result, _out = run_module(capsys, {'dest': str(dest), 'mode': 'deep', 'identity': keyfile.read_text()})
    assert code == 0 and result['verified'] == 2
    code, result, _out = run_module(capsys, {'dest': str(dest), 'mode': 'deep', 'identity': str(tmp_path / 'nope')})
    assert code == 1 and 'neither an existing identity file nor an age secret key' in result['msg']
    code, result, _out = run_module(capsys, {'dest': str(dest), 'mode': 'deep', 'identity': public})
    assert code == 1 and 'recipient (public key) was given where an identity' in result['msg']


@pytest.mark.parametrize('args,message', [
    ({'mark': True}, 'mark needs mode=deep'),
    ({'mode': 'deep'}, 'identity'),
    ({'mode': 'deep', 'identity': '', 'passphrase': ''}, 'mode=deep needs identity'),
    ({'archive': 'latest', 'dest': None}, 'dest'),
    ({'archive': '2020-01-01T000000Z.tar.gz.age'}, 'does not exist'),
    ({'prefix': 'db-'}, "no backup with the prefix 'db-'"),
])
def test_usage_errors(backups, capsys, args, message):
    dest, _made = backups
    code, result, _out = run_module(capsys, dict({'dest': str(dest)}, **args))
    assert code == 1 and message in result['msg']
    assert markers(dest) == []


def test_empty_directory_fails(tmp_path, capsys):
    code, result, _out = run_module(capsys, {'dest': str(tmp_path)})
    assert code == 1 and 'there is no backup in %s' % tmp_path in result['msg']


def test_passphrase_backup(tmp_path, capsys):
    src = tmp_path / 'f.txt'
    src.write_bytes(b'hello')
    made = ba.create(str(tmp_path), [str(src)], passphrase='open sesame', work_factor=10)
    code, result, out = run_module(capsys, {'path': made['archive'], 'mode': 'deep', 'passphrase': 'open sesame'})
    assert code == 0 and result['backups'][0]['mode'] == 'deep' and 'open sesame' not in out
    code, result, _out = run_module(capsys, {'path': made['archive'], 'mode': 'deep', 'passphrase': 'wrong'})
    assert code == 1 and result['failures'][0]['error'] == 'decrypt'
