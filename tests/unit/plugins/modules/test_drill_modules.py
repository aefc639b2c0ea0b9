# Copyright (c) 2026, prodready.vps contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The drill_chaos and drill_report modules: arguments, check mode, results (the logic is in test_drill.py)."""

import json
import os

import pytest
from ansible.module_utils.testing import patch_module_args

from ansible_collections.prodready.vps.plugins.modules import drill_chaos
from ansible_collections.prodready.vps.plugins.modules import drill_report


def run_module(module, capsys, args):
    with patch_module_args(args):
        with pytest.raises(SystemExit) as exit_info:
            module.main()
    return exit_info.value.code, json.loads(capsys.readouterr().out)


def test_chaos_check_mode_does_nothing(capsys, monkeypatch):
    monkeypatch.setattr(drill_chaos.drill, 'process_fault', lambda *a, **k: pytest.fail('ran in check mode'))
    code, result = run_module(drill_chaos, capsys, {'fault': 'kill', 'service': 'api', 'health_url': 'http://x/h',
                                                    '_ansible_check_mode': True})
    assert code == 0 and result['verdict'] == 'skipped' and result['changed'] is False


def test_chaos_kill_needs_a_service(capsys):
    code, result = run_module(drill_chaos, capsys, {'fault': 'kill'})
    assert code == 1 and 'service' in result['msg'] and 'health_url' in result['msg']


def test_chaos_passes_the_unit_name_and_returns_the_verdict(capsys, monkeypatch):
    seen = {}

    def fake(fault, unit, url, show, send, probe, bound=None, journal=None):
        seen.update(fault=fault, unit=unit, url=url, bound=bound)
        return {'fault': fault, 'verdict': 'FAILED', 'evidence': 'no new main process within 5 s'}
    monkeypatch.setattr(drill_chaos.drill, 'process_fault', fake)
    code, result = run_module(drill_chaos, capsys, {'fault': 'hang', 'service': 'api', 'health_url': 'http://x/h',
                                                    'bound': 5})
    # A FAILED verdict is a result, not a module failure: the playbook reports every fault.
    assert code == 0 and result['verdict'] == 'FAILED' and 'failed' not in result
    assert seen == {'fault': 'hang', 'unit': 'api.service', 'url': 'http://x/h', 'bound': 5.0}


def test_chaos_disk_fill_refusal_is_a_clear_failure(capsys, tmp_path):
    (tmp_path / 'busy').mkdir()
    (tmp_path / 'busy' / 'data').write_text('x')
    code, result = run_module(drill_chaos, capsys, {'fault': 'disk_fill', 'scratch_path': str(tmp_path / 'busy')})
    assert code == 1 and 'is not empty' in result['msg'] and result['fault'] == 'disk_fill'


def test_report_writes_and_returns_rto_rpo(capsys, tmp_path):
    registered = {'fault': 'kill', 'verdict': 'recovered', 'evidence': 'PID 1 -> 2', 'changed': True,
                  'invocation': {'module_args': {}}}
    args = {'dir': str(tmp_path / 'r'), 'source': 'web1', 'host': 'dr1', 'started': 1000.0, 'healthy_at': 1090.0,
            'backup_created': '1970-01-01T00:10:00Z',
            'restore': {'health_status': 200, 'restored_rows': {'app': '5'}, 'expected_rows': {'app': '5'},
                        'expected_from': 'source'},
            'chaos': [registered]}
    code, result = run_module(drill_report, capsys, args)
    assert code == 0 and result['rto_seconds'] == 90.0 and result['rpo_seconds'] == 490.0
    assert result['failed_checks'] == [] and 'failed' not in result
    written = json.loads(open(result['path']).read())
    assert written == result['report'] and 'invocation' not in written['chaos'][0]
    assert os.path.exists(str(tmp_path / 'r' / 'latest.json'))


def test_report_failed_check_is_returned_and_check_mode_writes_nothing(capsys, tmp_path):
    args = {'dir': str(tmp_path / 'r'), 'source': 'web1', 'host': 'dr1',
            'chaos': [{'fault': 'hang', 'verdict': 'FAILED', 'evidence': 'no new main process'}],
            '_ansible_check_mode': True}
    code, result = run_module(drill_report, capsys, args)
    assert code == 0 and result['failed_checks'] == ['chaos_hang'] and not (tmp_path / 'r').exists()
    assert any(line.startswith('FAILED    chaos_hang') for line in result['lines'])


def test_report_bad_time_is_a_clear_failure(capsys, tmp_path):
    code, result = run_module(drill_report, capsys, {'dir': str(tmp_path), 'source': 's', 'host': 'h', 'started': 1.0,
                                                     'healthy_at': 2.0, 'backup_created': 'yesterday',
                                                     'restore': {'health_status': 200}})
    assert code == 1 and "cannot read the time 'yesterday'" in result['msg']
