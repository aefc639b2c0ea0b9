# Copyright (c) 2026, prodready.vps contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Tests for plugins/modules/backup_key.py (real files, real keys)."""

import json
import os
import shutil
import subprocess

import pytest
from ansible.module_utils.testing import patch_module_args

from ansible_collections.prodready.vps.plugins.module_utils import age
from ansible_collections.prodready.vps.plugins.modules import backup_key


def run_module(capsys, args):
    with patch_module_args(args):
        with pytest.raises(SystemExit) as exit_info:
            backup_key.main()
    return exit_info.value.code, json.loads(capsys.readouterr().out)


def test_creates_a_key_once_and_keeps_it(tmp_path, capsys):
    path = tmp_path / 'backup.agekey'
    code, first = run_module(capsys, {'path': str(path)})
    assert code == 0 and first['changed'] and first['created']
    assert first['recipient'].startswith('age1')
    assert oct(os.stat(path).st_mode & 0o777) == '0o600'
    text = path.read_text()
    assert '# public key: ' + first['recipient'] in text
    secret = [line for line in text.splitlines() if line.startswith('AGE-SECRET-KEY-1')][0]
    assert age.identity_to_recipient(secret) == first['recipient']
    assert first['fingerprint'] == age.recipient_fingerprint(first['recipient'])
    assert os.listdir(tmp_path) == ['backup.agekey']

    code, second = run_module(capsys, {'path': str(path)})
    assert code == 0 and not second['changed'] and not second['created']
    assert second['recipient'] == first['recipient']
    assert path.read_text() == text


def test_encrypts_to_a_key_age_can_use(tmp_path, capsys):
    if not shutil.which('age'):
        pytest.skip('age CLI not installed')
    path = tmp_path / 'backup.agekey'
    _code, result = run_module(capsys, {'path': str(path)})
    encrypted = age.encrypt_bytes(b'hello', [result['recipient']])
    done = subprocess.run(['age', '-d', '-i', str(path)], input=encrypted, capture_output=True, check=True)
    assert done.stdout == b'hello'


def test_check_mode_writes_nothing(tmp_path, capsys):
    path = tmp_path / 'backup.agekey'
    code, result = run_module(capsys, {'path': str(path), '_ansible_check_mode': True})
    assert code == 0 and result['changed'] and result['created'] and result['recipient'] is None
    assert os.listdir(tmp_path) == []


def test_an_existing_key_keeps_its_content_and_gets_mode_0600(tmp_path, capsys):
    secret, public = age.generate_identity()
    path = tmp_path / 'mine.txt'
    path.write_text('# my key\n' + secret + '\n')
    os.chmod(path, 0o644)
    code, result = run_module(capsys, {'path': str(path), '_ansible_check_mode': True})
    assert code == 0 and result['changed'] and result['recipient'] == public
    assert oct(os.stat(path).st_mode & 0o777) == '0o644'
    code, result = run_module(capsys, {'path': str(path)})
    assert code == 0 and result['changed'] and not result['created'] and result['recipient'] == public
    assert oct(os.stat(path).st_mode & 0o777) == '0o600'
    assert path.read_text() == '# my key\n' + secret + '\n'


def test_a_file_without_a_key_is_left_alone(tmp_path, capsys):
    path = tmp_path / 'backup.agekey'
    path.write_text('AGE-SECRET-KEY-1NOTAKEY\n')
    code, result = run_module(capsys, {'path': str(path)})
    assert code == 1
    assert 'does not hold an age identity' in result['msg']
    assert 'NOTAKEY' not in result['msg']
    assert path.read_text() == 'AGE-SECRET-KEY-1NOTAKEY\n'


def test_missing_directory_fails(tmp_path, capsys):
    code, result = run_module(capsys, {'path': str(tmp_path / 'no' / 'key')})
    assert code == 1 and 'does not exist' in result['msg']


def test_check_mode_tolerates_a_directory_created_by_an_earlier_task(tmp_path, capsys):
    code, result = run_module(capsys, {'path': str(tmp_path / 'keys' / 'backup.agekey'), '_ansible_check_mode': True})
    assert code == 0 and result['changed'] and result['recipient'] is None
    assert os.listdir(tmp_path) == []
