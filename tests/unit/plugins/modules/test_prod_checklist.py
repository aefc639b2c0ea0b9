# Copyright (c) 2026, prodready.vps contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The prod_checklist module: arguments, results, check mode, and its command runner with fake programs."""

import json
import os

import pytest
from ansible.module_utils.testing import patch_module_args
from checklist_fakes import NFT_TABLE, converged_host

from ansible_collections.prodready.vps.plugins.module_utils import checklist
from ansible_collections.prodready.vps.plugins.modules import prod_checklist


def run_module(capsys, args):
    with patch_module_args(args):
        with pytest.raises(SystemExit) as exit_info:
            prod_checklist.main()
    return exit_info.value.code, json.loads(capsys.readouterr().out)


@pytest.fixture
def fake(monkeypatch):
    host, settings = converged_host()
    monkeypatch.setattr(prod_checklist.checklist, 'HostIO', lambda runner=None: host)
    return host, settings


def test_converged_host(fake, capsys):
    _host, settings = fake
    code, result = run_module(capsys, settings)
    assert code == 0 and result['changed'] is False and result['has_failures'] is False
    assert result['counts'] == {'pass': 10, 'warn': 0, 'fail': 0, 'skip': 1, 'total': 11}
    assert result['summary'] == 'Passed 10/11, warnings 0, failed 0, skipped 1: Ready for production: every check that applies passed.'
    assert result['table_lines'][0].startswith('Production Readiness Checklist (')
    assert result['table'] == '\n'.join(result['table_lines'])
    assert [c['name'] for c in result['checks']] == list(checklist.CHECK_NAMES)
    assert result['fix_plan'] == {'roles': [], 'tags': [], 'units': []}


def test_failures_are_returned_not_raised_and_check_mode_is_the_same(fake, capsys):
    host, settings = fake
    host.files['/etc/prodready/api.env']['mode'] = 0o644
    host.http['http://127.0.0.1:9093/api/v2/status'] = 'connection refused'
    code, result = run_module(capsys, dict(settings, _ansible_check_mode=True, verbose=True))
    assert code == 0 and result['has_failures'] is True and 'failed' not in result
    assert result['fix_plan']['roles'] == ['hardening', 'monitoring']
    assert '[FAIL]  secrets' in result['table_lines'] and '[FAIL]  monitoring' in result['table_lines']
    assert any('MemoryMax 512M' in line for line in result['table_lines'])  # verbose: PASS reasons too


def test_environment_values_never_reach_the_checks_or_the_result(fake, capsys, monkeypatch):
    _host, settings = fake
    seen = {}
    real = checklist.run_checks

    def spy(settings, io):
        seen['services'] = settings['services']
        return real(settings, io)
    monkeypatch.setattr(prod_checklist.checklist, 'run_checks', spy)
    settings['services'][0]['environment'] = {'DB_PASSWORD': 'top-secret-value'}
    code, result = run_module(capsys, settings)
    assert code == 0 and 'environment' not in seen['services'][0]
    assert 'top-secret-value' not in json.dumps(result)


def test_subset_and_bad_settings(fake, capsys):
    _host, settings = fake
    code, result = run_module(capsys, dict(settings, checks=['firewall']))
    assert code == 0 and [c['name'] for c in result['checks']] == ['firewall']
    code, result = run_module(capsys, {'services': [{'name': 'Not A Name'}]})
    assert code == 1 and result['msg'].startswith('invalid checklist settings: services[0]: every service needs a name')
    code, result = run_module(capsys, {'checks': ['nope']})
    assert code == 1 and 'nope' in result['msg']


FAKE_NFT = '''#!/bin/sh
echo "nft $*" >> "$FAKE_LOG"
[ "$FAKE_NFT_LOADED" = 1 ] || { echo "Error: No such file or directory" >&2; exit 1; }
cat "$FAKE_NFT_TABLE"
'''
FAKE_SYSTEMCTL = '''#!/bin/sh
echo "systemctl $*" >> "$FAKE_LOG"
for unit in "$@"; do :; done
printf 'Id=%s\\nLoadState=loaded\\nActiveState=active\\nSubState=exited\\nUnitFileState=enabled\\n' "$unit"
'''


def test_real_runner_with_fake_programs(tmp_path, monkeypatch, capsys):
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    for name, text in (('nft', FAKE_NFT), ('systemctl', FAKE_SYSTEMCTL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    (tmp_path / 'table').write_text(NFT_TABLE)
    monkeypatch.setenv('PATH', '%s:%s' % (bin_dir, os.environ['PATH']))
    monkeypatch.setenv('FAKE_LOG', str(tmp_path / 'log'))
    monkeypatch.setenv('FAKE_NFT_TABLE', str(tmp_path / 'table'))
    monkeypatch.setenv('FAKE_NFT_LOADED', '1')
    code, result = run_module(capsys, {'checks': ['firewall']})
    assert code == 0 and result['checks'][0]['status'] == 'PASS', result['checks']
    assert 'nft list table inet prodready' in (tmp_path / 'log').read_text()
    monkeypatch.setenv('FAKE_NFT_LOADED', '0')
    code, result = run_module(capsys, {'checks': ['firewall']})
    assert result['checks'][0]['reason'] == 'table inet prodready is not loaded: every port is open'
