# Copyright (c) 2026, prodready.vps contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Backup retention planning with restic-``forget``-like semantics.

Pure stdlib, importable on Python 3.8+ (it runs inside modules on managed
hosts and inside the ``prodready.vps.retention_plan`` filter on the
controller).

Semantics (see also ``tests/unit/plugins/module_utils/test_retention.py`` and
the shared conformance data ``testdata/retention/policy_cases.json``):

* Snapshots are sorted newest first (by instant; ties by id, then UTC offset,
  so the result does not depend on input order).
* ``keep_last`` keeps the N newest snapshots.
* ``keep_hourly``/``daily``/``weekly``/``monthly``/``yearly`` keep, for each
  period (hour, calendar day, ISO week, calendar month, year -- evaluated in
  the snapshot's *own* time zone), the newest snapshot of a period not yet
  kept by that bucket, until N snapshots were kept by that bucket.
  ``-1`` means unlimited.
* Once all older snapshots have been looked at, the *oldest* snapshot is also
  kept by every count bucket that still has room (maximises the history kept).
* ``keep_within`` keeps everything newer than ``newest - duration``;
  ``keep_within_<period>`` applies the period bucket, unlimited, to the
  snapshots inside that window (the oldest-snapshot rule above applies too,
  when the overall oldest snapshot lies inside the window).  Durations look
  like ``1y2m3d4h`` (``m`` = months) and are subtracted from the newest
  snapshot's time with calendar arithmetic (years, months and days first,
  Go ``AddDate`` normalisation, then hours); "within" means strictly newer
  than that cutoff.
* A snapshot may be kept by several buckets at once; every reason is listed.

Safety rules applied on top (they never change what the policy buckets count):

* an empty policy keeps everything (reason ``policy is empty``);
* snapshots whose id is in ``protect`` are never removed (reason ``protected``);
* the newest snapshot is never removed (reason ``newest``).
"""

from __future__ import (absolute_import, division, print_function)  # noqa: UP010, I001 (Ansible boilerplate)
__metaclass__ = type  # noqa: UP001

import datetime
import re
from collections import namedtuple
from collections.abc import Mapping

COUNT_KEYS = ('keep_last', 'keep_hourly', 'keep_daily', 'keep_weekly', 'keep_monthly', 'keep_yearly')
WITHIN_KEYS = ('keep_within', 'keep_within_hourly', 'keep_within_daily', 'keep_within_weekly',
               'keep_within_monthly', 'keep_within_yearly')
POLICY_KEYS = COUNT_KEYS + WITHIN_KEYS

REASON_EMPTY_POLICY = 'policy is empty'
REASON_PROTECTED = 'protected'
REASON_NEWEST = 'newest'

_UTC = datetime.timezone(datetime.timedelta(0))  # datetime.UTC is Python 3.11+
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=_UTC)


class RetentionError(ValueError):
    """Base class of every error raised by this module."""


class RetentionPolicyError(RetentionError):
    """The retention policy is malformed (unknown key or bad value)."""


class SnapshotError(RetentionError):
    """A snapshot (or a ``protect`` entry) cannot be interpreted."""


Snapshot = namedtuple('Snapshot', ['id', 'time'])
Snapshot.__doc__ = """A snapshot to plan over: an id (text) and a tz-aware ``datetime`` (or ISO string)."""

Duration = namedtuple('Duration', ['years', 'months', 'days', 'hours'])

Decision = namedtuple('Decision', ['snapshot', 'keep', 'reasons'])
Decision.__doc__ = """The verdict on one snapshot: ``keep`` (bool) and the tuple of reasons."""


# --------------------------------------------------------------------------
# Durations
# --------------------------------------------------------------------------

_DURATION_PART = re.compile(r'(\d+)([ymdh])')


def _bad_duration(key, value):
    return RetentionPolicyError(
        f'{key}: invalid duration {value!r}: expected a string like "1y2m3d4h" (y=years, m=months, d=days, h=hours)')


def parse_duration(value, key='duration'):
    """Parse ``'1y2m3d4h'`` (any order, each unit at most once, ``m`` = months)."""
    if isinstance(value, Duration):
        return value
    if not isinstance(value, str):
        raise _bad_duration(key, value)
    text = value.strip()
    pos = 0
    parts = {}
    while pos < len(text):
        match = _DURATION_PART.match(text, pos)
        if match is None:
            raise _bad_duration(key, value)
        unit = match.group(2)
        if unit in parts:
            raise RetentionPolicyError(f'{key}: invalid duration {value!r}: unit {unit!r} given more than once')
        parts[unit] = int(match.group(1))
        pos = match.end()
    if not parts:
        raise _bad_duration(key, value)
    return Duration(parts.get('y', 0), parts.get('m', 0), parts.get('d', 0), parts.get('h', 0))


def format_duration(duration):
    """Canonical text of a :class:`Duration` (``0h`` for a zero duration)."""
    text = ''.join(f'{num}{unit}' for num, unit in zip(duration, 'ymdh') if num)
    return text or '0h'


def _duration_is_zero(duration):
    return not any(duration)


def _add_date(moment, years, months, days):
    """Go's ``time.AddDate``: wall-clock calendar arithmetic with overflow normalisation.

    Returns ``None`` when the result falls outside what ``datetime`` can
    represent (it then lies before every possible snapshot).
    """
    year = moment.year + years
    month = moment.month + months
    year += (month - 1) // 12
    month = (month - 1) % 12 + 1
    try:
        day = datetime.date(year, month, 1) + datetime.timedelta(days=moment.day + days - 1)
    except (ValueError, OverflowError):
        return None
    return datetime.datetime.combine(day, moment.timetz())


def within_cutoff(newest, duration):
    """UTC instant strictly after which a snapshot is "within" ``duration`` of ``newest``.

    ``None`` means "no lower bound" (the duration reaches back before year 1).
    """
    moved = _add_date(newest, -duration.years, -duration.months, -duration.days)
    if moved is None:
        return None
    try:
        return moved.astimezone(_UTC) - datetime.timedelta(hours=duration.hours)
    except OverflowError:
        return None


# --------------------------------------------------------------------------
# Policy
# --------------------------------------------------------------------------

class RetentionPolicy(namedtuple('RetentionPolicy', POLICY_KEYS)):
    """A validated policy: counts are ints (0 = unset, -1 = unlimited), windows are
    :class:`Duration` or ``None``."""

    __slots__ = ()

    def is_empty(self):
        counts = any(getattr(self, key) != 0 for key in COUNT_KEYS)
        windows = any(getattr(self, key) is not None for key in WITHIN_KEYS)
        return not (counts or windows)

    def to_dict(self):
        """Only the keys that are set, windows in canonical text form."""
        result = {}
        for key in COUNT_KEYS:
            if getattr(self, key):
                result[key] = getattr(self, key)
        for key in WITHIN_KEYS:
            if getattr(self, key) is not None:
                result[key] = format_duration(getattr(self, key))
        return result


_INT_TEXT = re.compile(r'^[+-]?\d+$')


def _bad_count(key, value):
    return RetentionPolicyError(f'{key}: invalid value {value!r}: expected an integer >= -1 (-1 = unlimited)')


def _parse_count(key, value):
    if value is None:
        return 0
    if isinstance(value, bool):
        raise _bad_count(key, value)
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and _INT_TEXT.match(value.strip()):
        number = int(value.strip())
    else:
        raise _bad_count(key, value)
    if number < -1:
        raise _bad_count(key, value)
    return number


def _parse_window(key, value):
    if value is None:
        return None
    duration = parse_duration(value, key)
    if _duration_is_zero(duration):
        return None
    return duration


def parse_policy(policy):
    """Validate a policy mapping and return a :class:`RetentionPolicy`.

    ``None`` or ``{}`` give the empty policy.  Keys set to ``None`` count as
    unset (Ansible passes unset module options as ``None``).  Counts accept
    ints and integer strings; ``0`` and zero durations mean "unset".
    """
    if isinstance(policy, RetentionPolicy):
        return policy
    if policy is None:
        policy = {}
    if not isinstance(policy, Mapping):
        raise RetentionPolicyError(f'policy: expected a mapping, got {type(policy).__name__} {policy!r}')
    unknown = sorted(str(key) for key in policy if key not in POLICY_KEYS)
    if unknown:
        raise RetentionPolicyError(f"policy: unknown key(s) {', '.join(unknown)} (valid keys: {', '.join(POLICY_KEYS)})")
    values = {}
    for key in COUNT_KEYS:
        values[key] = _parse_count(key, policy.get(key))
    for key in WITHIN_KEYS:
        values[key] = _parse_window(key, policy.get(key))
    return RetentionPolicy(**values)


# --------------------------------------------------------------------------
# Snapshots
# --------------------------------------------------------------------------

_ISO_TIME = re.compile(
    r'^\s*(\d{4})-(\d{2})-(\d{2})'
    r'(?:[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?)?'
    r'\s*(?:([Zz])|([+-])(\d{2})(?::?(\d{2}))?)?\s*$'
)


def parse_time(value):
    """Return a tz-aware ``datetime`` from a tz-aware ``datetime`` or an ISO 8601 string.

    Strings need a ``Z`` or a numeric UTC offset; any number of fractional
    digits is accepted (truncated to microseconds).  Naive values are
    rejected: a host's local zone must not silently decide what gets deleted.
    """
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise SnapshotError(f'snapshot time {value.isoformat()!r} has no time zone (needs Z or a UTC offset such as +02:00)')
        return value
    if not isinstance(value, str):
        raise SnapshotError(f'snapshot time {value!r}: expected an ISO 8601 string or a datetime, got {type(value).__name__}')
    match = _ISO_TIME.match(value)
    if match is None:
        raise SnapshotError(f'snapshot time {value!r} is not an ISO 8601 timestamp (e.g. 2024-05-01T03:00:00Z)')
    year, month, day, hour, minute, second, fraction, zulu, sign, off_h, off_m = match.groups()
    if not zulu and not sign:
        raise SnapshotError(f'snapshot time {value!r} has no time zone (needs Z or a UTC offset such as +02:00)')
    if zulu:
        tzinfo = _UTC
    else:
        offset = datetime.timedelta(hours=int(off_h), minutes=int(off_m or 0))
        if offset >= datetime.timedelta(hours=24):
            raise SnapshotError(f'snapshot time {value!r} has an invalid UTC offset')
        tzinfo = datetime.timezone(-offset if sign == '-' else offset)
    micro = int((fraction or '0')[:6].ljust(6, '0'))
    try:
        return datetime.datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0),
                                 int(second or 0), micro, tzinfo=tzinfo)
    except ValueError as exc:
        raise SnapshotError(f'snapshot time {value!r} is not a valid date/time: {exc}') from exc


def _default_id(time_value):
    if isinstance(time_value, str):
        return time_value
    return time_value.isoformat()


def to_snapshot(item):
    """Coerce one input item to a :class:`Snapshot` with a parsed time.

    Accepted: :class:`Snapshot`; ISO string or aware ``datetime`` (the id is
    the string, or the datetime's ``isoformat()``); a mapping with ``time``
    and optionally ``id`` or ``name``; any object with a ``time`` attribute
    and optionally ``id`` or ``name`` attributes.
    """
    if isinstance(item, Snapshot):
        snap_id, time_value = item.id, item.time
    elif isinstance(item, (str, datetime.datetime)):
        snap_id, time_value = None, item
    elif isinstance(item, Mapping):
        if 'time' not in item:
            raise SnapshotError(f'snapshot {item!r} has no "time" key')
        time_value = item['time']
        snap_id = item.get('id')
        if snap_id is None:
            snap_id = item.get('name')
    elif hasattr(item, 'time'):
        time_value = item.time
        snap_id = getattr(item, 'id', None)
        if snap_id is None:
            snap_id = getattr(item, 'name', None)
    else:
        raise SnapshotError(f'snapshot {item!r}: expected an ISO timestamp, a datetime, or a mapping/object with "time"')
    moment = parse_time(time_value)
    if snap_id is None:
        snap_id = _default_id(time_value)
    if not isinstance(snap_id, str):
        raise SnapshotError(f'snapshot id {snap_id!r} must be a string')
    return Snapshot(snap_id, moment)


def _sort_key(snapshot):
    # Newest first; ties (same instant) by id, then by UTC offset: total and input-order independent.
    return (_EPOCH - snapshot.time, snapshot.id, snapshot.time.utcoffset())


def _protect_id(item):
    if isinstance(item, str):
        return item
    if isinstance(item, (Snapshot, Mapping, datetime.datetime)) or hasattr(item, 'time'):
        return to_snapshot(item).id
    raise SnapshotError(f'protect entry {item!r}: expected a snapshot id (string) or a snapshot')


# --------------------------------------------------------------------------
# Planning
# --------------------------------------------------------------------------

def _iso_year_week(moment):
    iso = moment.isocalendar()
    return iso[0], iso[1]


# name, period key of a moment, label of a period
_PERIODS = {
    'hourly': (lambda t: (t.year, t.month, t.day, t.hour),
               lambda p: '{:04d}-{:02d}-{:02d}T{:02d}'.format(*p)),
    'daily': (lambda t: (t.year, t.month, t.day),
              lambda p: '{:04d}-{:02d}-{:02d}'.format(*p)),
    'weekly': (_iso_year_week,
               lambda p: '{:04d}-W{:02d}'.format(*p)),
    'monthly': (lambda t: (t.year, t.month),
                lambda p: '{:04d}-{:02d}'.format(*p)),
    'yearly': (lambda t: (t.year,),
               lambda p: '{:04d}'.format(*p)),
}
_PERIOD_ORDER = ('hourly', 'daily', 'weekly', 'monthly', 'yearly')


class _Bucket:
    """One count bucket (``left`` -1 = unlimited) or one within-bucket (``cutoff``)."""

    def __init__(self, kind, left, within=None, cutoff=None):
        self.kind = kind
        self.left = left
        self.within = within
        self.cutoff = cutoff
        self.seen = set()

    def offer(self, index, snapshot, is_oldest):
        """Return the reason if the bucket keeps ``snapshot``, else ``None``."""
        if self.left == 0:
            return None
        if self.within is not None and self.cutoff is not None and snapshot.time <= self.cutoff:
            return None
        if self.kind == 'last':
            period, label = index, f'last #{index + 1}'
        else:
            key_of, label_of = _PERIODS[self.kind]
            period = key_of(snapshot.time)
            label = f'{self.kind} {label_of(period)}'
        if period in self.seen:
            if not is_oldest:
                return None
            label += ' (oldest)'
        self.seen.add(period)
        if self.left > 0:
            self.left -= 1
        if self.within is not None:
            label += f' within {format_duration(self.within)}'
        return label


class RetentionPlan:
    """Result of :func:`plan`.

    ``decisions``: one :class:`Decision` per input snapshot, newest first.
    ``keep`` / ``remove``: lists of :class:`Snapshot`, newest first.
    ``reasons``: ``{id: [reason, ...]}`` for every snapshot (``[]`` for removed
    ones; reasons of snapshots sharing an id are merged).
    """

    def __init__(self, decisions, policy):
        self.decisions = tuple(decisions)
        self.policy = policy

    @property
    def keep(self):
        return [d.snapshot for d in self.decisions if d.keep]

    @property
    def remove(self):
        return [d.snapshot for d in self.decisions if not d.keep]

    @property
    def keep_ids(self):
        return [s.id for s in self.keep]

    @property
    def remove_ids(self):
        return [s.id for s in self.remove]

    @property
    def reasons(self):
        result = {}
        for decision in self.decisions:
            merged = result.setdefault(decision.snapshot.id, [])
            for reason in decision.reasons:
                if reason not in merged:
                    merged.append(reason)
        return result

    def to_dict(self):
        """Plain, JSON-serialisable view: ids of kept/removed snapshots and the reasons."""
        return {'keep': self.keep_ids, 'remove': self.remove_ids, 'reasons': self.reasons}

    def __repr__(self):
        return f'RetentionPlan(keep={self.keep_ids!r}, remove={self.remove_ids!r})'


def plan(snapshots, policy=None, protect=()):
    """Decide which snapshots to keep under ``policy``.

    :param snapshots: iterable of ISO strings, aware datetimes, :class:`Snapshot`,
        mappings or objects carrying ``time`` (and ``id``/``name``); any order,
        duplicates allowed.
    :param policy: mapping (see :func:`parse_policy`) or :class:`RetentionPolicy`.
    :param protect: ids (or snapshot items) that must never be removed.
    :returns: :class:`RetentionPlan`.
    :raises RetentionPolicyError: bad policy.  :raises SnapshotError: bad snapshot.
    """
    parsed_policy = parse_policy(policy)
    if snapshots is None or isinstance(snapshots, (str, bytes, Mapping)) or not hasattr(snapshots, '__iter__'):
        raise SnapshotError(f'snapshots: expected a list of snapshots, got {type(snapshots).__name__}')
    if isinstance(protect, (str, bytes)):
        protect = [protect]
    protected = {_protect_id(item) for item in (protect or ())}
    ordered = sorted((to_snapshot(item) for item in snapshots), key=_sort_key)
    count = len(ordered)
    reasons = [[] for dummy in ordered]

    if parsed_policy.is_empty():
        for entry in reasons:
            entry.append(REASON_EMPTY_POLICY)
    elif ordered:
        newest = ordered[0].time
        buckets = []
        if parsed_policy.keep_last:
            buckets.append(_Bucket('last', parsed_policy.keep_last))
        for kind in _PERIOD_ORDER:
            number = getattr(parsed_policy, 'keep_' + kind)
            if number:
                buckets.append(_Bucket(kind, number))
        window = parsed_policy.keep_within
        window_cutoff = within_cutoff(newest, window) if window is not None else None
        for kind in _PERIOD_ORDER:
            duration = getattr(parsed_policy, 'keep_within_' + kind)
            if duration is not None:
                buckets.append(_Bucket(kind, -1, within=duration, cutoff=within_cutoff(newest, duration)))

        for index, snapshot in enumerate(ordered):
            is_oldest = index == count - 1
            for bucket in buckets:
                reason = bucket.offer(index, snapshot, is_oldest)
                if reason is not None:
                    reasons[index].append(reason)
            if window is not None and (window_cutoff is None or snapshot.time > window_cutoff):
                reasons[index].append(f'within {format_duration(window)}')

    decisions = []
    for index, snapshot in enumerate(ordered):
        entry = reasons[index]
        if snapshot.id in protected:
            entry.append(REASON_PROTECTED)
        if index == 0 and not entry:
            entry.append(REASON_NEWEST)
        decisions.append(Decision(snapshot, bool(entry), tuple(entry)))
    return RetentionPlan(decisions, parsed_policy)
