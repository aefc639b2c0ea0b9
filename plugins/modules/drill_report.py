#!/usr/bin/python
# -*- coding: utf-8 -*-

# Copyright (c) 2026, prodready.vps contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r'''
---
module: drill_report
short_description: Build and write the report of a disaster-recovery drill (RTO, RPO, verdicts)
version_added: 0.1.0
description:
  - Part of C(playbooks/drill.yml), run on the controller (delegated to V(localhost)).
  - Computes the recovery time (RTO, seconds from O(started) to O(healthy_at)) and the recovery point (RPO, the
    age of the restored data, O(healthy_at) minus the backup's creation time O(backup_created) from its
    manifest), judges the restore (healthy, and the rows of each database equal to the expected rows where they
    are known) and lists the chaos verdicts.
  - Writes the report as JSON into O(dir) (C(drill-<host>-<time>.json) and C(latest.json), mode 0600,
    atomically). A drill with a V(FAILED) check is reported in RV(failed_checks), not raised; the playbook fails after
    showing it.
author:
  - prodready.vps contributors (@prodready)
attributes:
  check_mode:
    description: The report is built and returned but not written.
    support: full
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in diff mode) when in diff mode.
    support: none
options:
  dir:
    description: Directory for the reports (created with mode 0700).
    type: path
    required: true
  source:
    description: The host whose backup was restored.
    type: str
    required: true
  host:
    description: The host the drill ran on.
    type: str
    required: true
  started:
    description: Unix time (controller clock) when the restore part started. Omit when it did not run.
    type: float
  healthy_at:
    description: Unix time (controller clock) when the restored service first answered healthy.
    type: float
  backup_created:
    description: Creation time of the restored backup, from its manifest (C(2026-11-22T02:00:00Z)).
    type: str
  restore:
    description:
      - What the restore part found; omit when it did not run. Keys used for the verdict - C(error) (the restore
        failed), C(health_status) (HTTP status of the health URL), C(databases) (list of C(name),
        C(restored_rows), C(expected_rows), C(expected_from)); the rest is copied into the report.
    type: dict
  chaos:
    description: Results of M(prodready.vps.drill_chaos), one per fault.
    type: list
    elements: dict
    default: []
seealso:
  - module: prodready.vps.drill_chaos
'''

EXAMPLES = r'''
- name: Write the drill report
  prodready.vps.drill_report:
    dir: /home/ops/drill-reports
    source: web1
    host: web1-dr
    started: 1795000000.0
    healthy_at: 1795000093.5
    backup_created: "2026-11-22T02:00:00Z"
    restore:
      health_status: 200
      databases:
        - {name: app, restored_rows: "public.items|500", expected_rows: "public.items|500", expected_from: source}
    chaos: "{{ [kill_result, hang_result, disk_result] }}"
  delegate_to: localhost
  become: false
'''

RETURN = r'''
report:
  description: The report as written.
  returned: always
  type: dict
path:
  description: The report file (not written in check mode).
  returned: always
  type: str
  sample: /home/ops/drill-reports/drill-web1-dr-20261123T071500Z.json
rto_seconds:
  description: Recovery time, seconds from the start of the drill to the first healthy answer.
  returned: when the restore part ran
  type: float
  sample: 93.5
rpo_seconds:
  description: Age of the restored data when the service came back.
  returned: when the restore part ran
  type: float
  sample: 18231.4
failed_checks:
  description: Names of the checks with verdict FAILED (empty when the drill passed).
  returned: always
  type: list
  elements: str
lines:
  description: The summary, one line per check.
  returned: always
  type: list
  elements: str
'''

import os
import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_native

from ansible_collections.prodready.vps.plugins.module_utils import drill

CHAOS_KEYS = ('fault', 'verdict', 'evidence', 'seconds', 'restart_seconds', 'old_pid', 'new_pid', 'bound',
              'restarts_before', 'restarts_after', 'watchdog_in_journal', 'note', 'unit', 'health_url', 'path',
              'size_mb', 'threshold', 'used_ratio', 'used_ratio_after', 'warning', 'cleared', 'cleaned_up',
              'bytes_written', 'detect_seconds', 'service_status_while_full', 'error')


def main():
    module = AnsibleModule(
        argument_spec=dict(
            dir=dict(type='path', required=True),
            source=dict(type='str', required=True),
            host=dict(type='str', required=True),
            started=dict(type='float'),
            healthy_at=dict(type='float'),
            backup_created=dict(type='str'),
            restore=dict(type='dict'),
            chaos=dict(type='list', elements='dict', default=[]),
        ),
        supports_check_mode=True,
    )
    params = module.params
    # Registered module results carry Ansible's own keys (invocation, changed...): keep the drill's.
    chaos = [dict((k, item[k]) for k in CHAOS_KEYS if k in item) for item in params['chaos']]
    now = time.time()
    try:
        report = drill.build_report(params['source'], params['host'], params['started'], params['healthy_at'],
                                    params['backup_created'], restore=params['restore'], chaos=chaos, now=now)
    except drill.DrillError as exc:
        module.fail_json(msg=to_native(exc))
    path = os.path.join(params['dir'], drill.report_name(report, now))
    if not module.check_mode:
        try:
            path = drill.write_report(params['dir'], report, now)
        except OSError as exc:
            module.fail_json(msg='cannot write the drill report into %s: %s' % (params['dir'], to_native(exc)))
    module.exit_json(changed=not module.check_mode, report=report, path=path, failed_checks=report['failed'],
                     lines=drill.summary_lines(report), rto_seconds=report.get('rto_seconds'),
                     rpo_seconds=report.get('rpo_seconds'))


if __name__ == '__main__':
    main()
