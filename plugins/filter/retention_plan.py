# Copyright (c) 2026, prodready.vps contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""``prodready.vps.retention_plan``: dry-run a backup retention policy on the controller.

The decision logic lives in ``plugins/module_utils/retention.py`` and is the
same code the backup module runs on the hosts, so a dry run shows exactly
what a real run would delete. Documentation: ``retention_plan.yml`` beside
this file.
"""

from collections.abc import Mapping

from ansible.errors import AnsibleFilterError
from ansible_collections.prodready.vps.plugins.module_utils.retention import (
    RetentionError,
    plan,
)


def retention_plan(backups, policy=None, protect=None):
    """Return ``{'keep': [...], 'remove': [...], 'reasons': {...}}`` for ``backups`` under ``policy``.

    ``backups`` is a list of ISO 8601 timestamps (with ``Z`` or an offset) or of
    mappings with ``time`` and an optional ``name`` (or ``id``). Entries are
    reported by name, or by their time string when they have no name.
    ``protect`` lists names that must never be removed.
    """
    if backups is None or isinstance(backups, (str, bytes, Mapping)) or not hasattr(backups, '__iter__'):
        raise AnsibleFilterError(
            'retention_plan: the input must be a list of ISO timestamps or of mappings with "time", '
            f'got {type(backups).__name__}')
    if policy is None:
        raise AnsibleFilterError('retention_plan: a policy is required, e.g. retention_plan({"keep_daily": 7}); '
                                 'pass {} to keep everything')
    if protect is None:
        protect = []
    elif isinstance(protect, str):
        protect = [protect]
    elif isinstance(protect, Mapping) or not hasattr(protect, '__iter__'):
        raise AnsibleFilterError(f'retention_plan: protect must be a list of backup names, got {type(protect).__name__}')
    try:
        result = plan(list(backups), policy, protect=list(protect))
    except RetentionError as exc:
        raise AnsibleFilterError(f'retention_plan: {exc}') from exc
    return result.to_dict()


class FilterModule:
    """Retention planning filters."""

    def filters(self):
        return {'retention_plan': retention_plan}
