# Copyright (c) 2026, prodready.vps contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Tests for the prodready.vps.retention_plan filter."""

import datetime
import json

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.prodready.vps.plugins.filter.retention_plan import (
    FilterModule,
    retention_plan,
)

BACKUPS = [
    '2024-05-01T03:00:00Z',
    '2024-05-03T03:00:00Z',
    '2024-05-02T03:00:00Z',
    '2024-05-02T15:00:00+02:00',
]


def test_filter_is_registered():
    assert FilterModule().filters() == {'retention_plan': retention_plan}


def test_plain_timestamps():
    result = retention_plan(BACKUPS, {'keep_daily': 2})
    assert result == {
        'keep': ['2024-05-03T03:00:00Z', '2024-05-02T15:00:00+02:00'],
        'remove': ['2024-05-02T03:00:00Z', '2024-05-01T03:00:00Z'],
        'reasons': {
            '2024-05-03T03:00:00Z': ['daily 2024-05-03'],
            '2024-05-02T15:00:00+02:00': ['daily 2024-05-02'],
            '2024-05-02T03:00:00Z': [],
            '2024-05-01T03:00:00Z': [],
        },
    }
    assert json.loads(json.dumps(result)) == result


def test_named_backups_and_protect():
    backups = [{'name': f'db-{i}', 'time': t, 'size': 1} for i, t in enumerate(BACKUPS)]
    result = retention_plan(backups, {'keep_last': 1}, protect=['db-0'])
    assert result['keep'] == ['db-1', 'db-0']
    assert result['remove'] == ['db-3', 'db-2']
    assert result['reasons']['db-0'] == ['protected']
    assert result['reasons']['db-1'] == ['last #1']
    assert retention_plan(backups, {'keep_last': 1}, protect='db-2')['keep'] == ['db-1', 'db-2']


def test_mixed_items_and_datetimes():
    when = datetime.datetime(2024, 5, 4, tzinfo=datetime.UTC)
    result = retention_plan([{'time': '2024-05-01T00:00:00Z'}, when, {'id': 'x', 'time': '2024-05-02T00:00:00Z'}],
                            {'keep_within': '3d'})  # 2024-05-01T00:00Z is exactly 3d old: not within
    assert result['keep'] == [when.isoformat(), 'x']
    assert result['remove'] == ['2024-05-01T00:00:00Z']


def test_empty_policy_keeps_everything():
    result = retention_plan(BACKUPS, {})
    assert result['remove'] == []
    assert len(result['keep']) == len(BACKUPS)
    assert {r for reasons in result['reasons'].values() for r in reasons} == {'policy is empty'}


def test_empty_input():
    assert retention_plan([], {'keep_daily': 1}) == {'keep': [], 'remove': [], 'reasons': {}}


def test_tuple_and_generator_input():
    assert retention_plan(tuple(BACKUPS), {'keep_last': 1})['keep'] == ['2024-05-03T03:00:00Z']
    assert retention_plan(iter(BACKUPS), {'keep_last': 1})['keep'] == ['2024-05-03T03:00:00Z']


@pytest.mark.parametrize('backups, policy, kwargs, needles', [
    ('2024-05-01T03:00:00Z', {'keep_last': 1}, {}, ['must be a list', 'str']),
    ({'time': '2024-05-01T03:00:00Z'}, {'keep_last': 1}, {}, ['must be a list', 'dict']),
    (None, {'keep_last': 1}, {}, ['must be a list', 'NoneType']),
    (42, {'keep_last': 1}, {}, ['must be a list', 'int']),
    (BACKUPS, None, {}, ['policy is required']),
    (BACKUPS, {'keep_dayly': 7}, {}, ['unknown key', 'keep_dayly']),
    (BACKUPS, {'keep_daily': 'seven'}, {}, ['keep_daily', "'seven'"]),
    (BACKUPS, {'keep_daily': -3}, {}, ['keep_daily', '-3']),
    (BACKUPS, {'keep_within': '2w'}, {}, ['keep_within', "'2w'"]),
    (BACKUPS, ['keep_daily'], {}, ['policy', 'mapping']),
    (['2024-05-01 03:00'], {'keep_last': 1}, {}, ['no time zone', 'Z']),
    (['last tuesday'], {'keep_last': 1}, {}, ['not an ISO 8601 timestamp']),
    ([{'name': 'db-1'}], {'keep_last': 1}, {}, ['"time"']),
    ([{'name': 5, 'time': '2024-05-01T03:00:00Z'}], {'keep_last': 1}, {}, ['must be a string']),
    ([3.5], {'keep_last': 1}, {}, ['3.5']),
    (BACKUPS, {'keep_last': 1}, {'protect': {'db-1': True}}, ['protect must be a list']),
    (BACKUPS, {'keep_last': 1}, {'protect': 7}, ['protect must be a list']),
    (BACKUPS, {'keep_last': 1}, {'protect': [7]}, ['protect entry 7']),
])
def test_errors(backups, policy, kwargs, needles):
    with pytest.raises(AnsibleFilterError) as excinfo:
        retention_plan(backups, policy, **kwargs)
    message = str(excinfo.value)
    assert message.startswith('retention_plan: ')
    for needle in needles:
        assert needle in message
