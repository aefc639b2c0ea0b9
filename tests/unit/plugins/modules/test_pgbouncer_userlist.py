# Copyright (c) 2026, prodready.vps contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

import grp
import json
import os
import pwd

import pytest
from ansible.module_utils.testing import patch_module_args

from ansible_collections.prodready.vps.plugins.module_utils import pg_auth
from ansible_collections.prodready.vps.plugins.modules import pgbouncer_userlist


def run_module(capsys, args):
    with patch_module_args(args):
        with pytest.raises(SystemExit) as exit_info:
            pgbouncer_userlist.main()
    return exit_info.value.code, json.loads(capsys.readouterr().out)


def base_args(path, **extra):
    args = {'path': str(path), 'owner': pwd.getpwuid(os.getuid()).pw_name,
            'group': grp.getgrgid(os.getgid()).gr_name,
            'users': [{'name': 'app', 'password': 'app-pass'}, {'name': 'admin', 'password': 'admin-pass'}]}
    args.update(extra)
    return args


def test_writes_verifiers_only_then_is_idempotent(tmp_path, capsys):
    path = tmp_path / 'userlist.txt'
    code, result = run_module(capsys, base_args(path))
    assert code == 0 and result['changed'] and result['users'] == {'app': 'added', 'admin': 'added'}
    text = path.read_text()
    assert 'app-pass' not in text and 'admin-pass' not in text
    # PgBouncer's parser takes only ';' comments and '"user" "secret"' lines ("broken auth file" otherwise).
    assert all(line.startswith(';') or line.startswith('"') for line in text.splitlines())
    entries = dict(pg_auth.parse_userlist(text))
    assert pg_auth.verifier_matches('app', 'app-pass', entries['app'])
    assert oct(path.stat().st_mode & 0o777) == oct(0o640)
    code, result = run_module(capsys, base_args(path))
    assert code == 0 and not result['changed'] and path.read_text() == text


def test_check_mode_writes_nothing_and_diff_hides_secrets(tmp_path, capsys):
    path = tmp_path / 'userlist.txt'
    run_module(capsys, base_args(path))
    before = path.read_text()
    args = base_args(path, _ansible_check_mode=True, _ansible_diff=True)
    args['users'][0]['password'] = 'new-pass'
    code, result = run_module(capsys, args)
    assert code == 0 and result['changed'] and result['users']['app'] == 'changed'
    assert path.read_text() == before
    assert 'app (changed)' in result['diff']['after'] and 'SCRAM' not in json.dumps(result['diff'])
    assert 'new-pass' not in json.dumps(result)


def test_mode_change_alone_is_a_change(tmp_path, capsys):
    path = tmp_path / 'userlist.txt'
    run_module(capsys, base_args(path))
    code, result = run_module(capsys, base_args(path, mode='0600'))
    assert result['changed'] and oct(path.stat().st_mode & 0o777) == oct(0o600)


def test_broken_file_is_refused_and_left_alone(tmp_path, capsys):
    path = tmp_path / 'userlist.txt'
    path.write_text('app plain-password\n')
    code, result = run_module(capsys, base_args(path))
    assert code == 1 and 'line 1' in result['msg'] and str(path) in result['msg']
    assert path.read_text() == 'app plain-password\n'


def test_missing_directory_names_it(tmp_path, capsys):
    code, result = run_module(capsys, base_args(tmp_path / 'nope' / 'userlist.txt'))
    assert code == 1 and 'is pgbouncer installed' in result['msg']
