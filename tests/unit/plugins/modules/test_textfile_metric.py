# Copyright (c) 2026, prodready.vps contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

import json

import pytest
from ansible.module_utils.testing import patch_module_args

from ansible_collections.prodready.vps.plugins.modules import textfile_metric


def run_module(capsys, args):
    with patch_module_args(args):
        with pytest.raises(SystemExit) as exit_info:
            textfile_metric.main()
    result = json.loads(capsys.readouterr().out)
    return exit_info.value.code, result


METRICS = [{'name': 'prodready_deploy_timestamp_seconds', 'value': 1767225600, 'labels': {'service': 'api'}}]


def test_writes_then_is_idempotent(tmp_path, capsys):
    args = {'name': 'deploy', 'directory': str(tmp_path / 'tf'), 'metrics': METRICS}
    code, result = run_module(capsys, args)
    assert code == 0 and result['changed'] is True
    path = tmp_path / 'tf' / 'deploy.prom'
    assert path.read_text() == ('# TYPE prodready_deploy_timestamp_seconds gauge\n'
                                'prodready_deploy_timestamp_seconds{service="api"} 1767225600\n')
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)
    code, result = run_module(capsys, args)
    assert code == 0 and result['changed'] is False
    assert [p.name for p in (tmp_path / 'tf').iterdir()] == ['deploy.prom']


def test_check_mode_and_diff_do_not_write(tmp_path, capsys):
    args = {'name': 'deploy', 'directory': str(tmp_path), 'metrics': METRICS, '_ansible_check_mode': True, '_ansible_diff': True}
    code, result = run_module(capsys, args)
    assert result['changed'] is True
    assert 'prodready_deploy_timestamp_seconds{service="api"}' in result['diff']['after']
    assert result['diff']['before'] == ''
    assert not (tmp_path / 'deploy.prom').exists()


def test_absent_removes(tmp_path, capsys):
    (tmp_path / 'old.prom').write_text('x 1\n')
    code, result = run_module(capsys, {'name': 'old', 'directory': str(tmp_path), 'state': 'absent'})
    assert result['changed'] is True and not (tmp_path / 'old.prom').exists()
    code, result = run_module(capsys, {'name': 'old', 'directory': str(tmp_path), 'state': 'absent'})
    assert result['changed'] is False


def test_bad_metric_fails_and_keeps_the_old_file(tmp_path, capsys):
    (tmp_path / 'keep.prom').write_text('good 1\n')
    code, result = run_module(capsys, {'name': 'keep', 'directory': str(tmp_path),
                                       'metrics': [{'name': 'bad name', 'value': 1}]})
    assert code == 1 and result['failed'] is True
    assert 'not a valid Prometheus metric name' in result['msg']
    assert (tmp_path / 'keep.prom').read_text() == 'good 1\n'


def test_bad_file_name_and_missing_metrics(tmp_path, capsys):
    code, result = run_module(capsys, {'name': '../etc/x', 'directory': str(tmp_path), 'metrics': METRICS})
    assert code == 1 and 'not a valid file name' in result['msg']
    code, result = run_module(capsys, {'name': 'x', 'directory': str(tmp_path)})
    assert code == 1 and 'metrics is required' in result['msg']
