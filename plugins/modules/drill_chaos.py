#!/usr/bin/python
# -*- coding: utf-8 -*-

# Copyright (c) 2026, prodready.vps contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r'''
---
module: drill_chaos
short_description: Inflict one fault on a host and judge whether it was recovered or alerted
version_added: 0.1.0
description:
  - Part of the disaster-recovery drill (C(playbooks/drill.yml)). Each run inflicts one fault and returns a
    verdict with its evidence; a fault that was not recovered is reported (RV(verdict=FAILED)), not raised, so
    the playbook can run every fault and write its report first.
  - V(kill) sends SIGKILL to the service's main process; V(recovered) when systemd started a new main process
    and the health URL answers 200 within O(bound).
  - V(hang) sends SIGSTOP to the main process (it stays alive but does nothing); V(recovered) when the
    watchdog (C(WatchdogSec=)) had it killed, systemd started a new one and the health URL answers 200 within
    O(bound). A process still stopped at the end gets SIGCONT, so the service is never left frozen.
  - V(disk_fill) mounts a size-limited tmpfs at O(scratch_path) (never an existing mount point, never C(/)),
    fills it until C(ENOSPC), measures it with the disk guard's code (C(plugins/module_utils/diskguard.py), the
    one C(prodready-diskguard.timer) runs), removes the file, measures again, unmounts and removes the
    directory. V(alerted) when the disk guard warned at or above O(threshold), the use fell below it once the
    file was gone, and the scratch filesystem is gone.
author:
  - prodready.vps contributors (@prodready)
attributes:
  check_mode:
    description: Nothing is done in check mode; RV(verdict) is V(skipped).
    support: full
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in diff mode) when in diff mode.
    support: none
options:
  fault:
    description: The fault to inflict.
    type: str
    required: true
    choices: [kill, hang, disk_fill]
  service:
    description:
      - The systemd service (C(api) or C(api.service)). Required for V(kill) and V(hang); with V(disk_fill) its
        health URL is probed while the disk is full (evidence only).
    type: str
  health_url:
    description: URL that answers 200 when the service is healthy (fetched from the host, proxies ignored).
    type: str
  bound:
    description:
      - Seconds the recovery may take. Default from the unit, plus 20 seconds for a loaded machine
        (V(kill) C(RestartSec=); V(hang) C(WatchdogSec=) + C(TimeoutAbortSec=) + C(RestartSec=)).
    type: float
  scratch_path:
    description: Directory the scratch tmpfs is mounted on (created and removed; must not exist or be empty).
    type: path
    default: /mnt/prodready-drill-scratch
  scratch_size_mb:
    description: Size of the scratch tmpfs in MiB (1-1024).
    type: int
    default: 16
  threshold:
    description: The disk guard's warning threshold in percent (C(logrotate_diskguard_threshold)).
    type: int
    default: 85
seealso:
  - module: prodready.vps.drill_report
'''

EXAMPLES = r'''
- name: Kill the service's main process and wait for it to come back healthy
  prodready.vps.drill_chaos:
    fault: kill
    service: api
    health_url: http://127.0.0.1:8000/health
  register: kill_result

- name: Fill a 16 MiB scratch filesystem
  prodready.vps.drill_chaos:
    fault: disk_fill
    scratch_path: /mnt/prodready-drill-scratch
    threshold: 85
'''

RETURN = r'''
fault:
  description: The fault inflicted.
  returned: always
  type: str
  sample: kill
verdict:
  description: V(recovered), V(alerted) (disk_fill), V(FAILED), or V(skipped) in check mode.
  returned: always
  type: str
  sample: recovered
evidence:
  description: What was seen, in one sentence.
  returned: always
  type: str
  sample: "SIGKILL: PID 812 -> 845, systemd restarted it; http://127.0.0.1:8000/health answered 200 after 3.1 s (bound 21 s)"
seconds:
  description: Fault to the first healthy answer (kill, hang).
  returned: kill, hang
  type: float
  sample: 3.1
restart_seconds:
  description: Fault to a new main process (kill, hang).
  returned: kill, hang
  type: float
  sample: 2.2
old_pid:
  description: Main PID before the fault.
  returned: kill, hang
  type: int
new_pid:
  description: Main PID after the restart (null when none).
  returned: kill, hang
  type: int
bound:
  description: Seconds allowed.
  returned: kill, hang
  type: float
watchdog_in_journal:
  description: The unit's recent journal mentions the watchdog (hang evidence).
  returned: kill, hang
  type: bool
used_ratio:
  description: Used fraction of the scratch filesystem while full, as the disk guard measured it.
  returned: disk_fill
  type: float
  sample: 1.0
warning:
  description: The disk guard's warning line (null when it gave none).
  returned: disk_fill
  type: str
cleared:
  description: Use fell below the threshold once the fill file was removed.
  returned: disk_fill
  type: bool
cleaned_up:
  description: The scratch filesystem was unmounted and its directory removed.
  returned: disk_fill
  type: bool
'''

import os
import subprocess

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_native
from ansible.module_utils.urls import open_url

from ansible_collections.prodready.vps.plugins.module_utils import diskguard
from ansible_collections.prodready.vps.plugins.module_utils import drill

PROPS = ['MainPID', 'ActiveState', 'SubState', 'NRestarts', 'Result', 'RestartUSec', 'WatchdogUSec',
         'TimeoutAbortUSec', 'TimeoutStopUSec']


def make_show(module):
    def show(unit):
        rc, out, err = module.run_command(['systemctl', 'show', unit, '--no-pager'] + ['-p' + p for p in PROPS])
        if rc != 0:
            module.fail_json(msg='systemctl show %s failed: %s' % (unit, err.strip()))
        return dict(line.split('=', 1) for line in out.splitlines() if '=' in line)
    return show


def make_journal(module):
    def journal(unit):
        rc, out, _err = module.run_command(['journalctl', '-u', unit, '--no-pager', '-n', '50', '-o', 'cat'])
        return out if rc == 0 else ''
    return journal


def probe(url):
    """HTTP status of a GET from the host, or None when nothing answered in time."""
    try:
        response = open_url(url, timeout=3, use_proxy=False, validate_certs=False)
        return response.getcode()
    except Exception as exc:  # HTTPError carries a status; anything else: no answer
        return getattr(exc, 'code', None)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            fault=dict(type='str', required=True, choices=['kill', 'hang', 'disk_fill']),
            service=dict(type='str'),
            health_url=dict(type='str'),
            bound=dict(type='float'),
            scratch_path=dict(type='path', default='/mnt/prodready-drill-scratch'),
            scratch_size_mb=dict(type='int', default=16),
            threshold=dict(type='int', default=85),
        ),
        required_if=[('fault', 'kill', ('service', 'health_url')), ('fault', 'hang', ('service', 'health_url'))],
        supports_check_mode=True,
    )
    params = module.params
    fault = params['fault']
    if module.check_mode:
        module.exit_json(changed=False, fault=fault, verdict=drill.SKIPPED, evidence='not run in check mode')
    service = params['service']
    if service and not service.endswith('.service'):
        service += '.service'
    try:
        if fault in ('kill', 'hang'):
            result = drill.process_fault(fault, service, params['health_url'], make_show(module), os.kill, probe,
                                         bound=params['bound'], journal=make_journal(module))
        else:
            result = drill.disk_fill(params['scratch_path'], params['scratch_size_mb'], params['threshold'],
                                     drill.ScratchFS(module.run_command), diskguard.check,
                                     probe=probe if params['health_url'] else None, health_url=params['health_url'])
    except drill.DrillError as exc:
        module.fail_json(msg=to_native(exc), fault=fault)
    except (OSError, subprocess.SubprocessError) as exc:
        module.fail_json(msg='%s: %s' % (fault, to_native(exc)), fault=fault)
    module.exit_json(changed=True, **result)


if __name__ == '__main__':
    main()
