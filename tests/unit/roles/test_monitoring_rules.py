# Copyright (c) 2026, prodready.vps contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Alert rules of the monitoring role: rendered like Ansible renders them, then
checked and unit-tested with promtool (``promtool check rules`` and
``promtool test rules`` with the role's files/rule-tests/*.test.yml).

promtool comes from Debian's ``prometheus`` package: ``scripts/gate-unit.sh``
unpacks it into ``.build/tools`` and sets ``PROMTOOL``; without it the promtool
tests are skipped (``PRODREADY_REQUIRE_PROMTOOL=1`` turns the skip into a
failure). The structural tests (every alert has a firing and a silent case)
need no promtool.
"""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template

ROLE = Path(__file__).resolve().parents[3] / 'roles' / 'monitoring'
TEMPLATES = ROLE / 'templates' / 'rules'
RULE_TESTS = ROLE / 'files' / 'rule-tests'
DEFAULTS = yaml.safe_load((ROLE / 'defaults' / 'main.yml').read_text())
ROLE_VARS = yaml.safe_load((ROLE / 'vars' / 'main.yml').read_text())
GROUPS = ROLE_VARS['__monitoring_rule_groups']


def _templar(overrides=None):
    variables = dict(DEFAULTS)
    variables.update(overrides or {})
    variables['ansible_managed'] = 'Ansible managed: test'
    return Templar(loader=DataLoader(), variables=variables)


def _rule_vars(overrides=None):
    """__monitoring_rule_vars of vars/main.yml, evaluated over the defaults."""
    templar = _templar(overrides)
    return {key: templar.template(trust_as_template(value)) if isinstance(value, str) else value
            for key, value in ROLE_VARS['__monitoring_rule_vars'].items()}


def render(group, overrides=None):
    templar = _templar(overrides)
    templar.available_variables = dict(templar.available_variables,
                                       __monitoring_rule_vars=_rule_vars(overrides))
    return templar.template(trust_as_template((TEMPLATES / (group + '.yml.j2')).read_text()))


def alerts_of(text):
    return [rule['alert'] for group in yaml.safe_load(text)['groups'] for rule in group['rules']]


def _promtool():
    path = os.environ.get('PROMTOOL') or shutil.which('promtool')
    local = ROLE.parents[1] / '.build' / 'tools' / 'usr' / 'bin' / 'promtool'
    if not path and local.exists():
        path = str(local)
    if path:
        return path
    if os.environ.get('PRODREADY_REQUIRE_PROMTOOL') == '1':
        pytest.fail('promtool not found (PROMTOOL, PATH or .build/tools/usr/bin/promtool)')
    pytest.skip('promtool not found: run scripts/gate-unit.sh (it unpacks Debian\'s prometheus package)')
    return None


@pytest.fixture(scope='module')
def rendered(tmp_path_factory):
    out = tmp_path_factory.mktemp('rules')
    for group in GROUPS:
        (out / (group + '.rules.yml')).write_text(render(group))
        shutil.copy(RULE_TESTS / (group + '.test.yml'), out)
    return out


def test_groups_match_templates_and_tests():
    assert sorted(GROUPS) == sorted(p.name[:-len('.yml.j2')] for p in TEMPLATES.glob('*.yml.j2'))
    assert sorted(GROUPS) == sorted(p.name[:-len('.test.yml')] for p in RULE_TESTS.glob('*.test.yml'))


def test_test_files_can_be_merged_into_one_suite():
    # On hosts the role runs all groups' tests as one suite against all groups in
    # one file (rule_tests.yml): every file must use the same evaluation interval.
    for group in GROUPS:
        suite = yaml.safe_load((RULE_TESTS / (group + '.test.yml')).read_text())
        assert suite['rule_files'] == [group + '.rules.yml'], group
        assert suite['evaluation_interval'] == '1m', group
        assert set(suite) == {'rule_files', 'evaluation_interval', 'tests'}, group


def test_every_configured_alert_has_exactly_one_rule():
    defined = [name for group in GROUPS for name in alerts_of(render(group))]
    assert sorted(defined) == sorted(DEFAULTS['monitoring_alerts']), 'rules and monitoring_alerts differ'
    assert len(defined) == len(set(defined))


@pytest.mark.parametrize('group', GROUPS)
def test_every_alert_has_a_firing_and_a_silent_case(group):
    alerts = alerts_of(render(group))
    cases = [case for test in yaml.safe_load((RULE_TESTS / (group + '.test.yml')).read_text())['tests']
             for case in test.get('alert_rule_test', [])]
    for alert in alerts:
        own = [case for case in cases if case['alertname'] == alert]
        assert any(case.get('exp_alerts') for case in own), '%s: no test where it fires' % alert
        assert any(not case.get('exp_alerts') for case in own), '%s: no test where it stays silent' % alert
    unknown = {case['alertname'] for case in cases} - set(alerts)
    assert not unknown, 'tests for alerts the group does not define: %s' % unknown


def test_thresholds_and_durations_come_from_the_variables():
    text = render('node', {'monitoring_alert_overrides': {'HighCPUUsage': {'threshold': 93, 'for': '17m'}}})
    rule = [r for g in yaml.safe_load(text)['groups'] for r in g['rules'] if r['alert'] == 'HighCPUUsage'][0]
    assert re.search(r'>\s*93\b', rule['expr'])
    assert rule['for'] == '17m'
    assert rule['labels']['severity'] == 'critical'


def test_an_alert_can_be_switched_off():
    text = render('redis', {'monitoring_alert_overrides': {'RedisTooManyConnections': {'enabled': False}}})
    assert alerts_of(text) == ['RedisDown', 'RedisHighMemoryUsage']


def test_prometheus_templates_are_escaped():
    # Alert annotations keep Prometheus' own {{ $labels.x }} for Prometheus to fill in.
    assert '{{ $labels.service }}' in render('services')


@pytest.mark.parametrize('group', GROUPS)
def test_promtool_check_rules(rendered, group):
    promtool = _promtool()
    result = subprocess.run([promtool, 'check', 'rules', str(rendered / (group + '.rules.yml'))],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize('group', GROUPS)
def test_promtool_test_rules(rendered, group):
    promtool = _promtool()
    result = subprocess.run([promtool, 'test', 'rules', group + '.test.yml'], cwd=rendered,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'SUCCESS' in result.stdout + result.stderr


def test_promtool_merged_suite_as_run_on_hosts(tmp_path):
    # rule_tests.yml puts every group into all.rules.yml and every test into all.test.yml.
    promtool = _promtool()
    groups, tests = [], []
    for group in GROUPS:
        groups += yaml.safe_load(render(group))['groups']
        tests += yaml.safe_load((RULE_TESTS / (group + '.test.yml')).read_text())['tests']
    (tmp_path / 'all.rules.yml').write_text(yaml.safe_dump({'groups': groups}, sort_keys=False, width=1000))
    (tmp_path / 'all.test.yml').write_text(yaml.safe_dump(
        {'rule_files': ['all.rules.yml'], 'evaluation_interval': '1m', 'tests': tests}, sort_keys=False, width=1000))
    result = subprocess.run([promtool, 'test', 'rules', 'all.test.yml'], cwd=tmp_path,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
