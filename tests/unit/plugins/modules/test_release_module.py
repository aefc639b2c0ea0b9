# Copyright (c) 2026, prodready.vps contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The release module end to end (test_release_module: module_utils has test_release), with fake systemctl/journalctl
   programs on PATH and command health checks."""

import json
import os

import pytest
from ansible.module_utils.testing import patch_module_args

from ansible_collections.prodready.vps.plugins.modules import release

FAKE_SYSTEMCTL = '''#!/bin/sh
echo "$*" >> "$FAKE_SYSTEMD_LOG"
case "$1" in
  show) printf 'LoadState=%s\\nActiveState=active\\nSubState=running\\nMainPID=0\\n' "${FAKE_LOAD_STATE:-loaded}" ;;
esac
exit 0
'''
FAKE_JOURNALCTL = '''#!/bin/sh
echo "journalctl $*" >> "$FAKE_SYSTEMD_LOG"
first="2026-11-23T10:00:00+0000 host app[42]: Traceback (most recent call last):"
last="2026-11-23T10:00:01+0000 host app[42]: RuntimeError: health is broken"
case " $* " in
  *" --reverse "*) printf '%s\\n%s\\n' "$last" "$first" ;;
  *) printf '%s\\n%s\\n' "$first" "$last" ;;
esac
'''


@pytest.fixture
def host(tmp_path, monkeypatch):
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    for name, text in (('systemctl', FAKE_SYSTEMCTL), ('journalctl', FAKE_JOURNALCTL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    log = tmp_path / 'systemd.log'
    log.write_text('')
    monkeypatch.setenv('PATH', '%s:%s' % (bin_dir, os.environ['PATH']))
    monkeypatch.setenv('FAKE_SYSTEMD_LOG', str(log))
    (tmp_path / 'app.env').write_text('APP_PORT="8000"\n')

    class Host(object):
        root = str(tmp_path / 'srv' / 'app')
        env_file = str(tmp_path / 'app.env')
        metrics = str(tmp_path / 'textfile')

        @staticmethod
        def calls():
            return log.read_text().splitlines()

        @staticmethod
        def source(name, healthy=True):
            path = tmp_path / 'src' / name
            path.mkdir(parents=True)
            (path / 'app.py').write_text('VERSION = %r\n' % name)
            (path / 'health').write_text('ok\n' if healthy else 'broken\n')
            return str(path)

    return Host


def run_module(capsys, args):
    with patch_module_args(args):
        with pytest.raises(SystemExit) as exit_info:
            release.main()
    return exit_info.value.code, json.loads(capsys.readouterr().out)


def args(host, **extra):
    base = {
        'root': host.root, 'service': 'app', 'env_file': host.env_file, 'unit_files': [],
        'metrics_dir': host.metrics, 'deployed_by': 'unit-test',
        'health': {'checks': [{'command': ['sh', '-c', 'grep -qx ok %s/current/health' % host.root]}],
                   'interval': 0.02, 'timeout': 1, 'consecutive': 2, 'settle': 0, 'required_percent': 100},
    }
    base.update(extra)
    return base


def test_deploy_passes_then_same_content_changes_nothing(host, capsys):
    code, result = run_module(capsys, args(host, source=host.source('v1'), release_id='v1'))
    assert code == 0 and result['changed'] and result['verdict'] == 'passed' and result['current'] == 'v1'
    assert result['gate']['rounds'] == 2 and result['gate']['last'][0]['rc'] == 0
    assert 'restart --no-block -- app.service' in host.calls()
    assert os.readlink(os.path.join(host.root, 'current')) == 'releases/v1'
    assert os.path.exists(os.path.join(host.metrics, 'prodready_deploy_app.prom'))
    calls = len(host.calls())
    code, again = run_module(capsys, args(host, source=os.path.join(os.path.dirname(host.root), '..', 'src', 'v1'),
                                          release_id='v9'))
    assert code == 0 and not again['changed'] and again['current'] == 'v1'
    assert not [c for c in host.calls()[calls:] if 'restart' in c]


def test_failed_gate_rolls_back_and_fails_with_evidence(host, capsys):
    run_module(capsys, args(host, source=host.source('v1'), release_id='v1'))
    code, result = run_module(capsys, args(host, source=host.source('v2', healthy=False), release_id='v2',
                                           environment={'APP_VERSION': '2'}))
    assert code == 1 and result['failed'] and result['changed']
    assert 'release v2 failed its health gate' in result['msg'] and 'rolled back to v1' in result['msg']
    assert result['current'] == 'v1' and result['rolled_back'] and result['rollback_gate']['verdict'] == 'passed'
    assert result['evidence']['journal'][-1].endswith('RuntimeError: health is broken')
    assert result['evidence']['gate']['last'][0]['error'] == 'exit status 1, expected 0'
    assert result['restored_files'] == [host.env_file]
    assert open(host.env_file).read() == 'APP_PORT="8000"\n'
    assert os.readlink(os.path.join(host.root, 'current')) == 'releases/v1'
    journal = [c for c in host.calls() if c.startswith('journalctl')]
    assert len(journal) == 1 and journal[0].startswith('journalctl --no-pager -o short-iso -u app.service -n 50 '
                                                       '--reverse --until @')
    # read right after the rollback's restart was queued
    calls = host.calls()
    assert calls[calls.index(journal[0]) - 1] == 'restart --no-block -- app.service'
    assert [c for c in host.calls() if c.startswith('restart')] == ['restart --no-block -- app.service'] * 3


def test_check_mode_and_diff_show_the_plan_only(host, capsys):
    code, result = run_module(capsys, args(host, source=host.source('v1'), release_id='v1',
                                           _ansible_check_mode=True, _ansible_diff=True))
    assert code == 0 and result['changed'] and result['plan'] and not os.path.exists(host.root)
    assert result['diff']['before'] == '\n' and result['diff']['after'] == 'v1\n'
    assert not [c for c in host.calls() if 'restart' in c]


def test_listed_and_rolled_back(host, capsys):
    run_module(capsys, args(host, source=host.source('v1'), release_id='v1'))
    run_module(capsys, args(host, source=host.source('v2'), release_id='v2'))
    code, listing = run_module(capsys, {'root': host.root, 'state': 'listed'})
    assert code == 0 and not listing['changed'] and [r['id'] for r in listing['releases']] == ['v2', 'v1']
    assert listing['previous'] == 'v1'
    code, result = run_module(capsys, args(host, state='rolled_back', _ansible_diff=True))
    assert code == 0 and result['changed'] and result['current'] == 'v1' and result['gate']['verdict'] == 'passed'
    assert result['diff']['before'] == 'v2\n' and result['diff']['after'] == 'v1\n'
    code, result = run_module(capsys, args(host, state='rolled_back', target='v2'))
    assert code == 0 and result['current'] == 'v2'


@pytest.mark.parametrize('extra, message', [
    ({'health': {'checks': [{'url': 'ftp://example'}]}}, 'url must start with http'),
    ({'release_id': '../x'}, 'is not valid'),
    ({'keep_releases': 0}, 'keep_releases must be at least 1'),
    ({'shared_paths': ['/abs']}, 'relative path'),
])
def test_bad_input_fails_before_anything_changes(host, capsys, extra, message):
    code, result = run_module(capsys, args(host, source=host.source('v1'), **extra))
    assert code == 1 and message in result['msg']
    assert not os.path.exists(os.path.join(host.root, 'releases')) or not os.listdir(os.path.join(host.root, 'releases'))


def test_missing_source_and_missing_unit_are_named(host, capsys, monkeypatch):
    code, result = run_module(capsys, args(host, source='/nonexistent/src'))
    assert code == 1 and 'source /nonexistent/src does not exist' in result['msg']
    monkeypatch.setenv('FAKE_LOAD_STATE', 'not-found')
    code, result = run_module(capsys, args(host, source=host.source('v1')))
    assert code == 1 and 'unit app.service is not installed' in result['msg'] and 'hardening' in result['msg']


def test_default_paths_follow_the_service_name():
    class Fake(object):
        params = dict((k, None) for k in release.ARGUMENT_SPEC)
        check_mode = False
    Fake.params.update(service='api', health=None)
    params = release.build_params(Fake)
    assert params['service'] == 'api.service' and params['env_file'] == '/etc/prodready/api.env'
    assert params['unit_files'] == ['/etc/systemd/system/api.service', '/etc/systemd/system/api.socket',
                                    '/etc/systemd/system/api.service.d']
    assert params['evidence_files'] == ['/var/log/api/api-error.log']
