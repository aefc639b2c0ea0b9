# Copyright (c) 2026, prodready.vps contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Tests for plugins/module_utils/retention.py.

The conformance cases come from ``<testdata>/retention/policy_cases.json``,
where ``<testdata>`` is ``$PRODREADY_TESTDATA`` or ``<repo>/../shared/testdata``.
"""

import datetime
import json
import os
import random
from collections import Counter, namedtuple
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from ansible_collections.prodready.vps.plugins.module_utils import retention
from hypothesis import given, settings
from hypothesis import strategies as st

UTC = datetime.UTC
REPO_ROOT = Path(__file__).resolve().parents[4]
TESTDATA = Path(os.environ.get('PRODREADY_TESTDATA') or REPO_ROOT.parent / 'shared' / 'testdata')
CASES_FILE = TESTDATA / 'retention' / 'policy_cases.json'

# Case data that contradicts the file's own "about" text, mapped to why. These
# cases are checked against the documented rule instead, and a strict xfail keeps
# the literal expectation visible (it turns into a failure once the data is fixed).
CONTRADICTIONS = {
    (): 'expected_keep is [] for the empty policy, but "about" says "An empty policy keeps everything" '
        '(and so does the upstream golden file policy_keep_snapshots_0, which keeps all 103)',
}


def _load_cases():
    if not CASES_FILE.is_file():
        return None, []
    with CASES_FILE.open(encoding='utf-8') as handle:
        data = json.load(handle)
    return data['snapshots'], data['cases']


SNAPSHOTS, CASES = _load_cases()
MISSING = f'conformance data not found at {CASES_FILE} (set PRODREADY_TESTDATA to the testdata directory)'


def _case_id(index, case):
    policy = ','.join(f'{key}={value}' for key, value in sorted(case['policy'].items())) or 'empty'
    return f'case{index:02d}-{policy}'


def _contradiction(case):
    return CONTRADICTIONS.get(tuple(sorted(case['policy'].items())))


def _case_params(strict_literal):
    if not CASES:
        return [pytest.param(None, marks=pytest.mark.skip(reason=MISSING), id='no-data')]
    params = []
    for index, case in enumerate(CASES):
        marks = ()
        why = _contradiction(case)
        if why and strict_literal:
            marks = pytest.mark.xfail(strict=True, reason='data contradicts its "about": ' + why)
        params.append(pytest.param(case, marks=marks, id=_case_id(index, case)))
    return params


def _plan(snapshots, policy=None, protect=()):
    return retention.plan(snapshots, policy, protect)


# ---------------------------------------------------------------------------
# Conformance
# ---------------------------------------------------------------------------

@pytest.mark.parametrize('case', _case_params(strict_literal=False))
def test_conformance(case):
    result = _plan(SNAPSHOTS, case['policy'])
    assert Counter(result.keep_ids + result.remove_ids) == Counter(SNAPSHOTS)
    if _contradiction(case):
        # Documented rule (about text + safety rules): an empty policy keeps everything.
        assert result.keep_ids == [d.snapshot.id for d in result.decisions]
        assert result.remove_ids == []
    else:
        assert result.keep_ids == case['expected_keep']


@pytest.mark.parametrize('case', [p for p in _case_params(strict_literal=True) if p.marks])
def test_conformance_literal_contradictions(case):
    assert _plan(SNAPSHOTS, case['policy']).keep_ids == case['expected_keep']


@pytest.mark.skipif(not CASES, reason=MISSING)
def test_conformance_input_order_does_not_matter():
    shuffled = list(SNAPSHOTS)
    random.Random(1234).shuffle(shuffled)
    for case in CASES:
        assert _plan(shuffled, case['policy']).to_dict() == _plan(SNAPSHOTS, case['policy']).to_dict()


@pytest.mark.skipif(not CASES, reason=MISSING)
def test_conformance_reasons_name_the_bucket():
    result = _plan(SNAPSHOTS, {'keep_daily': 3, 'keep_yearly': 10, 'keep_within': '7d', 'keep_within_weekly': '1m'})
    reasons = result.reasons
    assert reasons['2016-01-18T12:02:03Z'] == ['daily 2016-01-18', 'yearly 2016', 'weekly 2016-W03 within 1m', 'within 7d']
    assert reasons['2016-01-12T21:08:03Z'] == ['daily 2016-01-12', 'weekly 2016-W02 within 1m', 'within 7d']
    assert reasons['2015-11-22T10:20:30Z'] == ['yearly 2015']
    # The oldest snapshot is kept for the yearly bucket that still had room, though 2014 was already kept.
    assert reasons['2014-08-08T10:20:30Z'] == ['yearly 2014 (oldest)']
    assert reasons['2016-01-04T12:30:03Z'] == []
    assert set(reasons) == set(SNAPSHOTS)


# ---------------------------------------------------------------------------
# Policy validation
# ---------------------------------------------------------------------------

def test_parse_policy_empty_and_none():
    assert retention.parse_policy(None).is_empty()
    assert retention.parse_policy({}).is_empty()
    assert retention.parse_policy({'keep_daily': 0, 'keep_within': '0d', 'keep_last': None}).is_empty()


def test_parse_policy_values():
    policy = retention.parse_policy({'keep_last': '3', 'keep_daily': -1, 'keep_within': '1y1d1m',
                                     'keep_within_weekly': '2h3d'})
    assert policy.keep_last == 3
    assert policy.keep_daily == -1
    assert policy.keep_within == retention.Duration(1, 1, 1, 0)
    assert policy.keep_within_weekly == retention.Duration(0, 0, 3, 2)
    assert policy.to_dict() == {'keep_last': 3, 'keep_daily': -1, 'keep_within': '1y1m1d', 'keep_within_weekly': '3d2h'}
    assert retention.parse_policy(policy) is policy
    assert retention.parse_policy(policy.to_dict()) == policy


@pytest.mark.parametrize('policy, needles', [
    ({'keep_dayly': 3}, ['keep_dayly']),
    ({'keep_daily': -2}, ['keep_daily', '-2']),
    ({'keep_daily': 'seven'}, ['keep_daily', "'seven'"]),
    ({'keep_daily': 1.5}, ['keep_daily', '1.5']),
    ({'keep_daily': True}, ['keep_daily', 'True']),
    ({'keep_last': [1]}, ['keep_last', '[1]']),
    ({'keep_within': '1w'}, ['keep_within', "'1w'"]),
    ({'keep_within': '5'}, ['keep_within', "'5'"]),
    ({'keep_within': 5}, ['keep_within', '5']),
    ({'keep_within': ''}, ['keep_within', "''"]),
    ({'keep_within': '1d1d'}, ['keep_within', "'1d1d'", 'more than once']),
    ({'keep_within_daily': '1M'}, ['keep_within_daily', "'1M'"]),
    ({'keep_within_hourly': '-1d'}, ['keep_within_hourly', "'-1d'"]),
    (['keep_daily', 3], ['policy', 'mapping']),
    ('keep_daily=3', ['policy', 'mapping']),
])
def test_parse_policy_errors(policy, needles):
    with pytest.raises(retention.RetentionPolicyError) as excinfo:
        retention.parse_policy(policy)
    for needle in needles:
        assert needle in str(excinfo.value)
    assert isinstance(excinfo.value, ValueError)


def test_plan_validates_policy():
    with pytest.raises(retention.RetentionPolicyError, match='keep_hourly'):
        _plan(['2016-01-01T00:00:00Z'], {'keep_hourly': -5})


# ---------------------------------------------------------------------------
# Snapshot input
# ---------------------------------------------------------------------------

def test_time_formats():
    parse = retention.parse_time
    assert parse('2016-01-01T01:00:00+01:00') == datetime.datetime(2016, 1, 1, tzinfo=UTC)
    assert parse('2016-01-01 01:00:00+0100') == datetime.datetime(2016, 1, 1, tzinfo=UTC)
    assert parse('2015-12-31T19:00:00-05:00') == datetime.datetime(2016, 1, 1, tzinfo=UTC)
    assert parse('2016-01-01T00:00:00.1Z').microsecond == 100000
    assert parse('2016-01-01T00:00:00.123456789Z').microsecond == 123456
    assert parse('2016-01-01T00:00Z') == datetime.datetime(2016, 1, 1, tzinfo=UTC)
    assert parse('2016-01-01T00:00:00+05:30').utcoffset() == datetime.timedelta(hours=5, minutes=30)
    aware = datetime.datetime(2016, 1, 1, tzinfo=ZoneInfo('Europe/Berlin'))
    assert parse(aware) is aware


@pytest.mark.parametrize('value, needle', [
    ('2016-01-01T00:00:00', 'no time zone'),
    (datetime.datetime(2016, 1, 1), 'no time zone'),
    ('2016-02-30T00:00:00Z', 'not a valid date'),
    ('2016-01-01T00:00:00+25:00', 'offset'),
    ('yesterday', 'not an ISO 8601'),
    (1451606400, 'expected an ISO 8601 string'),
])
def test_time_errors(value, needle):
    with pytest.raises(retention.SnapshotError, match=needle):
        retention.parse_time(value)


ArchiveObject = namedtuple('ArchiveObject', ['name', 'time', 'size'])


def test_snapshot_item_kinds():
    when = datetime.datetime(2016, 1, 2, 3, 4, 5, tzinfo=UTC)
    snapshots = [
        '2016-01-01T00:00:00Z',
        when,
        retention.Snapshot('snap-a', '2016-01-03T00:00:00Z'),
        {'id': 'snap-b', 'time': '2016-01-04T00:00:00Z'},
        {'name': 'snap-c', 'time': '2016-01-05T00:00:00+02:00'},
        {'time': '2016-01-06T00:00:00Z'},
        ArchiveObject('snap-d', datetime.datetime(2016, 1, 7, tzinfo=UTC), 42),
    ]
    result = _plan(snapshots, {'keep_last': -1})
    assert result.keep_ids == ['snap-d', '2016-01-06T00:00:00Z', 'snap-c', 'snap-b', 'snap-a',
                               when.isoformat(), '2016-01-01T00:00:00Z']
    assert all(isinstance(s, retention.Snapshot) for s in result.keep)
    assert all(isinstance(s.time, datetime.datetime) for s in result.keep)
    assert result.keep[2].time.utcoffset() == datetime.timedelta(hours=2)


@pytest.mark.parametrize('snapshots, needle', [
    ('2016-01-01T00:00:00Z', 'expected a list'),
    ({'time': '2016-01-01T00:00:00Z'}, 'expected a list'),
    (None, 'expected a list'),
    (42, 'expected a list'),
    ([{'name': 'x'}], 'no "time" key'),
    ([42], 'expected an ISO timestamp'),
    ([{'id': 7, 'time': '2016-01-01T00:00:00Z'}], 'must be a string'),
    (['2016-01-01T00:00:00'], 'no time zone'),
    ([{'id': None, 'name': 'n', 'time': datetime.datetime(2016, 1, 1)}], "'2016-01-01T00:00:00' has no time zone"),
])
def test_snapshot_errors(snapshots, needle):
    with pytest.raises(retention.SnapshotError, match=needle):
        _plan(snapshots, {'keep_last': 1})


def test_protect_errors():
    with pytest.raises(retention.SnapshotError, match='protect entry 5'):
        _plan(['2016-01-01T00:00:00Z'], {'keep_last': 1}, protect=[5])


def test_no_snapshots():
    assert _plan([], {'keep_last': 1}).to_dict() == {'keep': [], 'remove': [], 'reasons': {}}
    assert _plan([], {}).to_dict() == {'keep': [], 'remove': [], 'reasons': {}}


def test_duplicates_are_planned_individually():
    snapshots = ['2016-01-02T00:00:00Z'] * 3 + ['2016-01-01T00:00:00Z']
    result = _plan(snapshots, {'keep_daily': 5})
    assert result.keep_ids == ['2016-01-02T00:00:00Z', '2016-01-01T00:00:00Z']
    assert result.remove_ids == ['2016-01-02T00:00:00Z', '2016-01-02T00:00:00Z']
    assert result.reasons['2016-01-02T00:00:00Z'] == ['daily 2016-01-02']


# ---------------------------------------------------------------------------
# Safety rules
# ---------------------------------------------------------------------------

DAYS = [f'2016-01-{day:02d}T12:00:00Z' for day in range(1, 11)]


def test_empty_policy_keeps_everything():
    result = _plan(DAYS, {})
    assert result.keep_ids == sorted(DAYS, reverse=True)
    assert result.remove == []
    assert all(result.reasons[d] == ['policy is empty'] for d in DAYS)
    assert _plan(DAYS, None).keep_ids == result.keep_ids
    assert _plan(DAYS, {'keep_daily': 0, 'keep_within': None}).keep_ids == result.keep_ids


def test_protect_keeps_snapshot_without_using_bucket_room():
    result = _plan(DAYS, {'keep_last': 2}, protect=['2016-01-03T12:00:00Z'])
    assert result.keep_ids == ['2016-01-10T12:00:00Z', '2016-01-09T12:00:00Z', '2016-01-03T12:00:00Z']
    assert result.reasons['2016-01-03T12:00:00Z'] == ['protected']
    assert result.reasons['2016-01-09T12:00:00Z'] == ['last #2']


def test_protect_accepts_items_single_ids_and_unknown_ids():
    archives = [{'name': f'a{i}', 'time': day} for i, day in enumerate(DAYS)]
    result = _plan(archives, {'keep_last': 1}, protect=[archives[0], 'no-such-archive'])
    assert result.keep_ids == ['a9', 'a0']
    assert _plan(archives, {'keep_last': 1}, protect='a4').keep_ids == ['a9', 'a4']
    assert _plan(archives, {'keep_last': 1}, protect=None).keep_ids == ['a9']


def test_protected_snapshot_keeps_bucket_reasons_too():
    result = _plan(DAYS, {'keep_last': 1}, protect=['2016-01-10T12:00:00Z'])
    assert result.reasons['2016-01-10T12:00:00Z'] == ['last #1', 'protected']


def test_newest_is_never_removed_even_if_no_bucket_keeps_it(monkeypatch):
    monkeypatch.setattr(retention._Bucket, 'offer', lambda self, index, snapshot, is_oldest: None)
    result = _plan(DAYS, {'keep_daily': 3})
    assert result.keep_ids == ['2016-01-10T12:00:00Z']
    assert result.reasons['2016-01-10T12:00:00Z'] == ['newest']


def test_newest_is_kept_by_within_policy():
    result = _plan(DAYS, {'keep_within': '1h'})
    assert result.keep_ids == ['2016-01-10T12:00:00Z']
    assert result.reasons['2016-01-10T12:00:00Z'] == ['within 1h']


# ---------------------------------------------------------------------------
# Semantics details
# ---------------------------------------------------------------------------

def test_oldest_snapshot_kept_while_bucket_has_room():
    snapshots = ['2016-01-01T10:00:00Z', '2016-01-01T09:00:00Z', '2016-01-01T08:00:00Z']
    assert _plan(snapshots, {'keep_daily': 2}).keep_ids == ['2016-01-01T10:00:00Z', '2016-01-01T08:00:00Z']
    assert _plan(snapshots, {'keep_daily': 1}).keep_ids == ['2016-01-01T10:00:00Z']
    assert _plan(snapshots, {'keep_daily': -1}).keep_ids == ['2016-01-01T10:00:00Z', '2016-01-01T08:00:00Z']


def test_periods_use_each_snapshots_own_offset():
    snapshots = [
        '2016-01-01T00:30:00+01:00',  # 2015-12-31T23:30Z, but 1 January where it was taken
        '2015-12-31T23:00:00Z',
        '2015-12-31T22:00:00Z',
        '2015-12-30T12:00:00Z',
    ]
    result = _plan(snapshots, {'keep_daily': 10})
    assert result.keep_ids == ['2016-01-01T00:30:00+01:00', '2015-12-31T23:00:00Z', '2015-12-30T12:00:00Z']
    assert result.reasons['2016-01-01T00:30:00+01:00'] == ['daily 2016-01-01']
    utc_only = [retention.parse_time(s).astimezone(UTC) for s in snapshots]
    assert len(_plan(utc_only, {'keep_daily': 10}).keep) == 2


def test_zoneinfo_datetimes():
    berlin = ZoneInfo('Europe/Berlin')
    snapshots = [
        datetime.datetime(2016, 7, 2, 0, 30, tzinfo=berlin),   # 2016-07-01T22:30Z
        datetime.datetime(2016, 7, 1, 23, 0, tzinfo=berlin),
        datetime.datetime(2016, 7, 1, 1, 0, tzinfo=berlin),    # 2016-06-30T23:00Z
        datetime.datetime(2016, 6, 30, 12, 0, tzinfo=berlin),
    ]
    result = _plan(snapshots, {'keep_daily': 2})
    assert [s.time for s in result.keep] == [snapshots[0], snapshots[1]]
    assert result.reasons[snapshots[1].isoformat()] == ['daily 2016-07-01']


def test_ordering_is_by_instant_not_text():
    snapshots = ['2016-01-01T10:00:00+09:00', '2016-01-01T02:00:00Z']  # 01:00Z vs 02:00Z
    assert _plan(snapshots, {'keep_last': 1}).keep_ids == ['2016-01-01T02:00:00Z']


def test_same_instant_ties_are_deterministic():
    snapshots = [{'id': 'b', 'time': '2016-01-01T00:00:00Z'}, {'id': 'a', 'time': '2016-01-01T01:00:00+01:00'}]
    assert _plan(snapshots, {'keep_last': 1}).keep_ids == ['a']
    assert _plan(snapshots[::-1], {'keep_last': 1}).keep_ids == ['a']


def test_week_buckets_use_iso_weeks():
    # 2016-01-03 is a Sunday in ISO week 2015-W53; 2016-01-04 starts 2016-W01.
    snapshots = ['2016-01-04T08:00:00Z', '2016-01-03T08:00:00Z', '2016-01-01T08:00:00Z', '2015-12-27T08:00:00Z']
    result = _plan(snapshots, {'keep_weekly': 3})
    assert result.keep_ids == ['2016-01-04T08:00:00Z', '2016-01-03T08:00:00Z', '2015-12-27T08:00:00Z']
    assert result.reasons['2016-01-03T08:00:00Z'] == ['weekly 2015-W53']


def test_within_uses_calendar_arithmetic_like_go_adddate():
    # 2016-03-31 minus one month is "2016-02-31", normalised to 2016-03-02.
    newest = '2016-03-31T12:00:00Z'
    cutoff = retention.within_cutoff(retention.parse_time(newest), retention.parse_duration('1m'))
    assert cutoff == datetime.datetime(2016, 3, 2, 12, 0, tzinfo=UTC)
    snapshots = [newest, '2016-03-02T12:00:01Z', '2016-03-02T12:00:00Z', '2016-03-01T13:00:00Z']
    assert _plan(snapshots, {'keep_within': '1m'}).keep_ids == snapshots[:2]


def test_within_hours_are_subtracted_after_the_calendar_part():
    newest = retention.parse_time('2016-01-01T01:00:00Z')
    cutoff = retention.within_cutoff(newest, retention.parse_duration('1d2h'))
    assert cutoff == datetime.datetime(2015, 12, 30, 23, 0, tzinfo=UTC)


def test_within_reaching_before_year_one_keeps_everything():
    assert retention.within_cutoff(retention.parse_time('2016-01-01T00:00:00Z'), retention.parse_duration('9999y')) is None
    assert len(_plan(DAYS, {'keep_within': '9999y'}).keep) == len(DAYS)


def test_within_buckets_are_unlimited_inside_the_window():
    snapshots = [f'2016-01-10T{hour:02d}:00:00Z' for hour in (12, 11, 10)] + ['2016-01-09T12:00:00Z', '2016-01-05T12:00:00Z']
    result = _plan(snapshots, {'keep_within_daily': '2d'})
    assert result.keep_ids == ['2016-01-10T12:00:00Z', '2016-01-09T12:00:00Z']
    assert result.reasons['2016-01-09T12:00:00Z'] == ['daily 2016-01-09 within 2d']
    assert result.reasons['2016-01-05T12:00:00Z'] == []  # oldest, but outside the window


def test_within_buckets_keep_the_oldest_snapshot_when_it_is_inside_the_window():
    snapshots = [f'2016-01-10T{hour:02d}:00:00Z' for hour in (12, 11, 10)]
    result = _plan(snapshots, {'keep_within_daily': '2d'})
    assert result.keep_ids == ['2016-01-10T12:00:00Z', '2016-01-10T10:00:00Z']
    assert result.reasons['2016-01-10T10:00:00Z'] == ['daily 2016-01-10 (oldest) within 2d']


def test_plan_repr_and_dict():
    result = _plan(DAYS[:2], {'keep_last': 1})
    assert result.to_dict() == {
        'keep': ['2016-01-02T12:00:00Z'],
        'remove': ['2016-01-01T12:00:00Z'],
        'reasons': {'2016-01-02T12:00:00Z': ['last #1'], '2016-01-01T12:00:00Z': []},
    }
    assert json.loads(json.dumps(result.to_dict())) == result.to_dict()
    assert 'keep' in repr(result)
    assert result.policy.keep_last == 1
    assert [d.keep for d in result.decisions] == [True, False]


# ---------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------

OFFSETS = st.sampled_from([0, 60, -300, 330, 540, -600, 840, -720]).map(
    lambda minutes: datetime.timezone(datetime.timedelta(minutes=minutes)))
MOMENTS = st.builds(
    lambda base, offset: base.replace(tzinfo=UTC).astimezone(offset),
    st.datetimes(min_value=datetime.datetime(2014, 1, 1), max_value=datetime.datetime(2016, 12, 31)),
    OFFSETS,
)
# Snapshots with unique ids; a few share instants so the tie-breaking is exercised.
SNAPSHOT_LISTS = st.lists(MOMENTS, max_size=40).flatmap(
    lambda moments: st.lists(st.sampled_from(moments), max_size=8).map(
        lambda extra: [retention.Snapshot(f's{i:03d}', t) for i, t in enumerate(moments + extra)])
    if moments else st.just([]))
COUNT = st.one_of(st.none(), st.just(-1), st.integers(min_value=0, max_value=12))
DURATION = st.one_of(
    st.none(),
    st.builds(lambda y, m, d, h: f'{y}y{m}m{d}d{h}h',
              st.integers(0, 2), st.integers(0, 14), st.integers(0, 40), st.integers(0, 100)),
)
POLICIES = st.fixed_dictionaries({}, optional=dict(
    [(key, COUNT) for key in retention.COUNT_KEYS] + [(key, DURATION) for key in retention.WITHIN_KEYS]))
COUNT_POLICIES = st.fixed_dictionaries({}, optional={key: st.integers(1, 12) for key in retention.COUNT_KEYS})


@st.composite
def planning_inputs(draw, policies=POLICIES):
    snapshots = draw(SNAPSHOT_LISTS)
    policy = draw(policies)
    ids = [s.id for s in snapshots]
    protect = draw(st.lists(st.sampled_from(ids), max_size=3)) if ids else []
    return snapshots, policy, protect


@settings(max_examples=300, deadline=None)
@given(planning_inputs())
def test_property_partition(data):
    snapshots, policy, protect = data
    result = _plan(snapshots, policy, protect)
    keep, remove = result.keep_ids, result.remove_ids
    assert sorted(keep + remove) == sorted(s.id for s in snapshots)
    assert not set(keep) & set(remove)
    assert set(result.reasons) == {s.id for s in snapshots}
    assert all(result.reasons[i] for i in keep)
    assert not any(result.reasons[i] for i in remove)
    assert [s.time for s in result.keep] == sorted((s.time for s in result.keep), reverse=True)


@settings(max_examples=300, deadline=None)
@given(planning_inputs())
def test_property_newest_and_protected_kept(data):
    snapshots, policy, protect = data
    result = _plan(snapshots, policy, protect)
    if snapshots:
        newest = max(s.time for s in snapshots)
        assert result.keep and result.keep[0].time == newest
    assert set(protect) <= set(result.keep_ids)


@settings(max_examples=300, deadline=None)
@given(planning_inputs(), st.randoms(use_true_random=False))
def test_property_input_order_irrelevant(data, rnd):
    snapshots, policy, protect = data
    shuffled = list(snapshots)
    rnd.shuffle(shuffled)
    first, second = _plan(snapshots, policy, protect), _plan(shuffled, policy, protect[::-1])
    assert first.to_dict() == second.to_dict()
    assert first.decisions == second.decisions


@settings(max_examples=200, deadline=None)
@given(planning_inputs(COUNT_POLICIES))
def test_property_counts_bound_the_kept_set(data):
    snapshots, policy, protect = data
    result = _plan(snapshots, policy, protect)
    assert len(result.keep) <= sum(policy.values()) + len(set(protect)) or not policy
    if 'keep_last' in policy:
        assert result.keep_ids[:policy['keep_last']] == [d.snapshot.id for d in result.decisions][:policy['keep_last']]


@settings(max_examples=200, deadline=None)
@given(SNAPSHOT_LISTS, st.sampled_from(retention.COUNT_KEYS), st.integers(1, 10))
def test_property_raising_a_count_never_drops_a_kept_snapshot(snapshots, key, count):
    smaller = set(_plan(snapshots, {key: count}).keep_ids)
    assert smaller <= set(_plan(snapshots, {key: count + 1}).keep_ids)
    assert smaller <= set(_plan(snapshots, {key: -1}).keep_ids)


@settings(max_examples=100, deadline=None)
@given(SNAPSHOT_LISTS)
def test_property_iso_strings_and_datetimes_agree(snapshots):
    as_text = [{'id': s.id, 'time': s.time.isoformat()} for s in snapshots]
    policy = {'keep_daily': 3, 'keep_weekly': 2, 'keep_within': '3d'}
    assert _plan(as_text, policy).to_dict() == _plan(snapshots, policy).to_dict()
