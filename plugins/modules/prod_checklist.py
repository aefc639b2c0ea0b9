#!/usr/bin/python
# -*- coding: utf-8 -*-

# Copyright (c) 2026, prodready.vps contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r'''
---
module: prod_checklist
short_description: Production readiness checklist of a host (PASS, WARN, FAIL or SKIP per check, with the fix)
version_added: 0.1.0
description:
  - Runs the production readiness checks on the host and returns one result per check with its reason, the fix,
    and the role of this collection (and its tag) that repairs it.
  - "Checks: C(tls) (certificates valid and not expiring soon), C(backups) (jobs configured, scheduled, recent, last
    run successful, restore test recent), C(monitoring) (Prometheus with alert rules and an Alertmanager,
    Alertmanager with receivers, node exporter), C(resource_limits) (MemoryMax, CPUQuota or CPUWeight, LimitNOFILE
    of every managed unit), C(secrets) (no default or empty passwords in environment files, no world-readable
    secrets, none older than the rotation age), C(firewall) (the nftables table loaded and enabled at boot),
    C(log_rotation), C(health) (health URLs answer 2xx), C(database) (PostgreSQL behind PgBouncer, pools within
    PostgreSQL's connections), C(security_headers) (when nginx is installed) and C(unit_exposure)
    (C(systemd-analyze security) scores within target)."
  - A check that does not apply to the host (no nginx, no database, no certificate) is C(SKIP) with the reason,
    never C(FAIL).
  - The module only reads (files, C(systemctl show), C(nft list), C(openssl x509), C(systemd-analyze security) and
    HTTP GETs to the loopback endpoints); it never reports changed, and runs the same in check mode. Secret values
    are never returned, only the names of the variables and files that hold them. Run it as root (C(become)).
  - It does not fail when a check fails; the C(prodready.vps.checklist) playbook does, and repairs with
    C(checklist_fix=true).
author:
  - prodready.vps contributors (@prodready)
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying the target.
    support: full
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing) when in diff mode.
    support: none
options:
  checks:
    description: The checks to run (default all), by name.
    type: list
    elements: str
    choices: [tls, backups, monitoring, resource_limits, secrets, firewall, log_rotation, health, database,
              security_headers, unit_exposure]
  services:
    description:
      - The shared service list (C(prodready_services)). Keys read are C(name), C(command) (the unit is managed by
        the hardening role), C(enabled), C(listen_port), C(health_url), C(environment_file), C(log_dir) and C(unit).
      - Leave C(environment) out (the playbook strips it); the module reads the values from the environment files
        and must not receive secrets as arguments.
    type: list
    elements: dict
    default: []
  daemons:
    description: Third-party daemons whose exposure is checked when their unit is installed.
    type: list
    elements: str
    default: [pgbouncer, prometheus, prometheus-alertmanager, prometheus-node-exporter, prometheus-postgres-exporter,
              prometheus-blackbox-exporter, prometheus-redis-exporter, prometheus-pgbouncer-exporter]
  tls_certificates:
    description:
      - PEM certificates to check; each a path or a dict with C(path), optional C(key) (private key checked to match
        and to be private) and C(name). When empty and nginx is installed, the C(ssl_certificate) files of
        C(nginx -T) are checked.
    type: list
    elements: raw
    default: []
  tls_warn_days:
    description: WARN when a certificate expires within this many days.
    type: int
    default: 30
  tls_fail_days:
    description: FAIL when a certificate expires within this many days.
    type: int
    default: 7
  backup_config_dir:
    description: Job configurations of the backup role (one C(<job>.json) each).
    type: path
    default: /etc/prodready/backup
  backup_warn_hours:
    description: WARN when a job's last successful backup is older than this.
    type: float
    default: 26
  backup_fail_hours:
    description: FAIL when a job's last successful backup is older than this.
    type: float
    default: 48
  restore_test_jobs:
    description: Backup jobs whose restore test is checked.
    type: list
    elements: str
    default: [daily]
  restore_test_max_age_days:
    description: WARN when the last successful restore test (deep verification) is older than this.
    type: float
    default: 8
  prometheus_url:
    description: Prometheus' base URL.
    type: str
    default: http://127.0.0.1:9090
  alertmanager_url:
    description: Alertmanager's base URL.
    type: str
    default: http://127.0.0.1:9093
  node_exporter_url:
    description: The node exporter's base URL.
    type: str
    default: http://127.0.0.1:9100
  secret_paths:
    description:
      - Globs of secret files checked for permissions and age, besides the services' environment files and the
        certificates' keys. Files ending in C(.pub) are ignored.
    type: list
    elements: str
    default: [/etc/prodready/failure-hook.json, /etc/prodready/backup/offsite_ed25519, /etc/pgbouncer/userlist.txt,
              /etc/prometheus/alertmanager-secrets/*, /etc/ssl/private/*.key, /etc/ssl/private/*.pem]
  secret_max_age_days:
    description: WARN when a file holding secrets has not changed for longer (the rotation age); 0 turns it off.
    type: int
    default: 90
  weak_passwords:
    description: Values counted as default passwords (compared in lower case); placeholders such as C(changeme) are
      found inside longer values as well. Default a built-in list.
    type: list
    elements: str
  firewall_table:
    description: The nftables table of the hardening role (family C(inet)).
    type: str
    default: prodready
  health_timeout:
    description: Seconds to wait for each health URL.
    type: float
    default: 5
  http_timeout:
    description: Seconds to wait for the monitoring endpoints and nginx.
    type: float
    default: 5
  pgbouncer_ini:
    description: PgBouncer's configuration; PgBouncer counts as set up when it exists or its unit is installed.
    type: path
    default: /etc/pgbouncer/pgbouncer.ini
  postgresql_max_connections:
    description: PostgreSQL's C(max_connections) when no local server can be asked (C(SHOW max_connections)).
    type: int
    default: 100
  postgresql_reserved_connections:
    description: Connections kept for superusers and direct clients, not for PgBouncer's pools.
    type: int
    default: 8
  header_urls:
    description: URLs served by nginx whose responses must carry the security headers.
    type: list
    elements: str
    default: ['http://127.0.0.1/']
  exposure_target:
    description: Highest acceptable C(systemd-analyze security) score of the managed services (WARN above).
    type: float
    default: 2.0
  exposure_daemon_target:
    description: Highest acceptable score of the third-party daemons in O(daemons) (WARN above).
    type: float
    default: 2.5
  exposure_fail:
    description: FAIL above this score (an unsandboxed unit scores about 9).
    type: float
    default: 7.0
  min_nofile:
    description: WARN when a managed unit's open file limit is below this.
    type: int
    default: 4096
  verbose:
    description: Show the reason of passed checks in the table too.
    type: bool
    default: false
seealso:
  - name: The checklist playbook and its documentation
    description: docs/checklist.md in the collection.
    link: https://github.com/prodready/vps/blob/main/docs/checklist.md
'''

EXAMPLES = r'''
- name: Run the production checklist
  prodready.vps.prod_checklist:
    services: "{{ prodready_services | map('dict2items') | map('rejectattr', 'key', 'eq', 'environment')
                  | map('items2dict') | list }}"
    tls_certificates:
      - path: /etc/letsencrypt/live/example.com/fullchain.pem
        key: /etc/letsencrypt/live/example.com/privkey.pem
  become: true
  register: checklist

- name: Show the table
  ansible.builtin.debug:
    msg: "{{ checklist.table_lines }}"

- name: Only the firewall and the backups
  prodready.vps.prod_checklist:
    checks: [firewall, backups]
  become: true
'''

RETURN = r'''
checks:
  description: One result per check, in the order they ran.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: The check's name (as in O(checks)).
      type: str
      sample: firewall
    title:
      description: The check's title in the table.
      type: str
      sample: firewall
    status:
      description: V(PASS), V(WARN), V(FAIL) or V(SKIP).
      type: str
      sample: FAIL
    reason:
      description: Why; for a PASS what was found fine, for a SKIP why it does not apply.
      type: str
      sample: table inet prodready is not loaded, every port is open
    details:
      description: One line per problem when there are several.
      type: list
      elements: str
    findings:
      description: The problems with status, message, fix, roles, tags and units each.
      type: list
      elements: dict
    fix:
      description: What repairs it.
      type: str
      sample: ansible-playbook site.yml --tags hardening_firewall
    fix_roles:
      description: Roles of this collection that repair it (in site order); empty when only a person can.
      type: list
      elements: str
      sample: [hardening]
    fix_tags:
      description: The tags of those roles' parts.
      type: list
      elements: str
      sample: [hardening_firewall]
    fix_units:
      description: Units to start after the roles ran (a backup now, a restore test).
      type: list
      elements: str
      sample: [prodready-backup@daily.service]
counts:
  description: How many checks passed, warned, failed and were skipped.
  returned: always
  type: dict
  sample: {"pass": 7, "warn": 2, "fail": 1, "skip": 1, "total": 11}
summary:
  description: One line summary.
  returned: always
  type: str
  sample: "Passed 7/11, warnings 2, failed 1, skipped 1: 1 critical issue(s) found. Fix these before deploying!"
has_failures:
  description: Whether any check is V(FAIL).
  returned: always
  type: bool
table:
  description: The readable report (a PASS, WARN, FAIL or SKIP line per check, then the summary).
  returned: always
  type: str
table_lines:
  description: RV(table) split into lines (readable in the default callback).
  returned: always
  type: list
  elements: str
fix_plan:
  description: Roles (in site order), tags and units that repair the WARN and FAIL results.
  returned: always
  type: dict
  sample: {"roles": ["hardening", "backup"], "tags": ["hardening_units", "backup"], "units": []}
'''

import os
import socket

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_native

from ansible_collections.prodready.vps.plugins.module_utils import checklist


def _runner(module):
    def run(argv):
        try:
            return module.run_command(argv, handle_exceptions=False, expand_user_and_vars=False,
                                      environ_update={'LC_ALL': 'C', 'SYSTEMD_COLORS': '0', 'SYSTEMD_PAGER': ''})
        except OSError as exc:
            return 127, '', to_native(exc)
    return run


def main():
    defaults = checklist.DEFAULTS
    module = AnsibleModule(
        argument_spec=dict(
            checks=dict(type='list', elements='str', choices=list(checklist.CHECK_NAMES)),
            services=dict(type='list', elements='dict', default=[]),
            daemons=dict(type='list', elements='str', default=list(defaults['daemons'])),
            tls_certificates=dict(type='list', elements='raw', default=[]),
            tls_warn_days=dict(type='int', default=30),
            tls_fail_days=dict(type='int', default=7),
            backup_config_dir=dict(type='path', default=defaults['backup_config_dir']),
            backup_warn_hours=dict(type='float', default=26),
            backup_fail_hours=dict(type='float', default=48),
            restore_test_jobs=dict(type='list', elements='str', default=['daily']),
            restore_test_max_age_days=dict(type='float', default=8),
            prometheus_url=dict(type='str', default=defaults['prometheus_url']),
            alertmanager_url=dict(type='str', default=defaults['alertmanager_url']),
            node_exporter_url=dict(type='str', default=defaults['node_exporter_url']),
            secret_paths=dict(type='list', elements='str', default=list(defaults['secret_paths']), no_log=False),
            secret_max_age_days=dict(type='int', default=90, no_log=False),
            weak_passwords=dict(type='list', elements='str', no_log=False),
            firewall_table=dict(type='str', default='prodready'),
            health_timeout=dict(type='float', default=5),
            http_timeout=dict(type='float', default=5),
            pgbouncer_ini=dict(type='path', default=defaults['pgbouncer_ini']),
            postgresql_max_connections=dict(type='int', default=100),
            postgresql_reserved_connections=dict(type='int', default=8),
            header_urls=dict(type='list', elements='str', default=['http://127.0.0.1/']),
            exposure_target=dict(type='float', default=2.0),
            exposure_daemon_target=dict(type='float', default=2.5),
            exposure_fail=dict(type='float', default=7.0),
            min_nofile=dict(type='int', default=4096),
            verbose=dict(type='bool', default=False),
        ),
        supports_check_mode=True,
    )
    # Environment values are secrets: drop them whatever the caller passed, also from the
    # module_args echoed back in the result (the checks read the environment files instead).
    module.params['services'] = [dict((k, v) for k, v in s.items() if k != 'environment')
                                 for s in module.params['services']]
    settings = dict((k, v) for k, v in module.params.items() if k != 'verbose')
    try:
        results = checklist.run_checks(settings, checklist.HostIO(runner=_runner(module)))
    except checklist.ChecklistError as exc:
        module.fail_json(msg='invalid checklist settings: %s' % to_native(exc))
    host = os.uname()[1] if hasattr(os, 'uname') else socket.gethostname()
    table = checklist.render_table(results, host=host, verbose=module.params['verbose'])
    counts = checklist.count(results)
    module.exit_json(
        changed=False,
        checks=results,
        counts=counts,
        summary=checklist.summary_line(results),
        has_failures=counts['fail'] > 0,
        table=table,
        table_lines=table.splitlines(),
        fix_plan=checklist.fix_plan(results),
    )


if __name__ == '__main__':
    main()
