#!/usr/bin/python
# -*- coding: utf-8 -*-

# Copyright (c) 2026, prodready.vps contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r'''
---
module: release
short_description: Health-gated deploys with automatic rollback, in an ansistrano-compatible release layout
version_added: 0.1.0
description:
  - Manages the releases of one service under O(root), in the layout ansistrano uses
    (C(releases/<id>/), C(shared/), C(current) as a relative symlink), so an existing ansistrano tree is taken
    over as it is. Each release has a manifest in C(manifests/<id>.json) (id, deploy order, source, checksum,
    time, health verdict, who deployed it, the gate's result and, for a failed release, the evidence).
  - O(state=deployed) builds a new release from O(source) (a directory, a git checkout already fetched, or a tar
    or zip archive on the host), links the O(shared_paths), runs the optional O(build) command, snapshots what
    a rollback needs (the release that was current, the environment file and the unit files), sets
    O(environment) in the environment file, switches C(current) atomically (a temporary link renamed over the
    old one), restarts or reloads O(service) and runs the health gate (O(health)).
  - When the gate fails the module switches back to the release that was current (or, when that one had failed
    or was never healthy, the newest release that passed its gate), restores the snapshot's environment and
    unit files (C(systemctl daemon-reload) when a unit file changed), restarts the service, runs the gate again
    on the old release, marks the new release V(failed) and fails with the evidence - the last responses of
    every check and the last O(journal_lines) lines of C(journalctl -u <unit>). If the old release fails its
    gate too, the message says so plainly and the service stays on the old release.
  - O(state=rolled_back) goes back to the previous healthy release (by deploy order and verdict, never by file
    times) or to the named O(target), restarts the service and runs the gate. O(state=listed) returns the
    releases with their verdicts.
  - Deploying content that is already current (same source checksum, build, shared paths and environment)
    changes nothing, whatever O(release_id) says.
  - After every deploy the newest O(keep_releases) healthy releases and the newest O(keep_failed) failed ones
    are kept. The current release, the release a rollback would go back to and the release being deployed are
    never removed.
  - Writes the deploy marker metrics C(prodready_deploy_*) for node_exporter's textfile collector
    (see C(docs/metrics.md)).
  - One deploy or rollback at a time per O(root) (a lock on C(<root>/.release.lock)).
author:
  - prodready.vps contributors (@prodready)
attributes:
  check_mode:
    description:
      - Nothing is written. The result holds C(plan), the steps a real run would take (and the releases
        retention would remove after a pass); a missing O(source) or unit only gives a warning.
    support: full
  diff_mode:
    description: Shows the C(current) release before and after.
    support: full
options:
  root:
    description:
      - The service's deploy directory, for example V(/srv/api); created when missing.
    type: path
    required: true
  state:
    description:
      - V(deployed) deploys O(source), V(rolled_back) goes back to an earlier release, V(listed) only reports.
    type: str
    choices: [deployed, rolled_back, listed]
    default: deployed
  source:
    description:
      - Absolute path on the host of what to deploy - a directory, a git working tree (its C(.git) is left out
        and the commit is recorded), or a tar (plain, gzip, bzip2, xz) or zip archive. Required for
        O(state=deployed).
      - Archive entries that would land outside the release (absolute paths, C(..), links pointing outside) and
        special files are refused; owners in the archive are ignored (files belong to the user the module runs
        as, modes are kept).
    type: path
  release_id:
    description:
      - The new release's id (letters, digits, C(. _ + -)). Default - the UTC time, for example
        V(20261123T101500Z). Give every host of a run the same id (the P(prodready.vps.rollback#role) role
        does).
      - An existing id may be deployed again only with the same content (it is switched to and gated again).
    type: str
  exclude:
    description:
      - Glob patterns of paths (relative, or a bare file name) left out when copying a directory source.
    type: list
    elements: str
    default: []
  strip_components:
    description:
      - Leading path components removed from archive entries (V(1) for archives with one top directory).
    type: int
    default: 0
  shared_paths:
    description:
      - Paths relative to the release replaced by relative symlinks to C(<root>/shared/<path>), which are
        created as directories when missing. Make them writable for the service with the hardening role's
        C(writable_paths).
    type: list
    elements: str
    default: []
  build:
    description:
      - Command run with C(/bin/sh -c) in the new release's directory before anything is switched (for example
        V(python3 -m venv .venv && .venv/bin/pip install -r requirements.txt)), with C(RELEASE_ID),
        C(RELEASE_DIR) and C(RELEASE_ROOT) set. When it fails, the release is kept as V(build_failed) with its
        output and nothing else changes.
    type: str
  build_timeout:
    description: Seconds before the build is killed (and fails).
    type: float
    default: 1800
  service:
    description:
      - The systemd unit to restart or reload, for example V(api) or V(api.service). Without it nothing is
        restarted and no journal is collected.
    type: str
  restart:
    description:
      - How the new release is started - V(restart) (C(systemctl restart --no-block), the gate then waits for
        the old process to go), V(reload) (C(systemctl reload-or-restart --no-block), for servers that re-exec
        on SIGHUP) or V(none).
    type: str
    choices: [restart, reload, none]
    default: restart
  env_file:
    description:
      - The service's environment file, snapshotted before each deploy and restored on a rollback; O(environment)
        is written into it. Default C(/etc/prodready/<service>.env) (the hardening role's) when O(service) is set;
        an empty string for none.
    type: path
  unit_files:
    description:
      - Unit files (and drop-in directories, whose files are all covered) snapshotted before each deploy and
        restored on a rollback. Default the service's C(.service) and C(.socket) in C(/etc/systemd/system) and
        its C(.service.d) directory, when O(service) is set.
    type: list
    elements: path
  environment:
    description:
      - Variables set in O(env_file) for the new release (added or replaced; other lines are kept). They are
        part of what the release is - a changed value is a new deploy, and a rollback restores the old file.
      - The hardening role rewrites the whole file when its service has C(environment); give the variables in
        one of the two places.
      - The values show in the task's invocation like every module option; keep secrets in the hardening role's
        C(environment), which stays out of logs.
    type: dict
  health:
    description:
      - The health gate. Without O(health.checks) there is no gate and a deploy's verdict is V(unchecked).
    type: dict
    suboptions:
      checks:
        description:
          - Checks run in every round; a round passes when all pass.
        type: list
        elements: dict
        default: []
        suboptions:
          type:
            description:
              - The kind of check; default from the keys given (O(health.checks[].url), O(health.checks[].command),
                O(health.checks[].port)).
            type: str
            choices: [http, tcp, command]
          name:
            description: Name in the evidence.
            type: str
          url:
            description: HTTP(S) URL requested (no proxy, no redirects followed).
            type: str
          status:
            description: Status codes accepted.
            type: list
            elements: int
            default: [200]
          json:
            description:
              - 'Dotted paths into the JSON body and the values they must hold, for example C(status: healthy) or
                C(checks.database.status: pass).'
              - The same checks judge the old release after an automatic rollback, so do not match the new
                release's version here.
            type: dict
          method:
            description: HTTP method.
            type: str
            default: GET
          headers:
            description: Request headers.
            type: dict
          validate_certs:
            description: Verify TLS certificates.
            type: bool
            default: true
          host:
            description: Host of a TCP check.
            type: str
            default: 127.0.0.1
          port:
            description:
              - Port of a TCP check. Behind systemd socket activation the kernel accepts connections even when
                the app never answers; use an HTTP check there.
            type: int
          command:
            description: Command of a command check (a string split like a shell would, or a list; no shell).
            type: raw
          rc:
            description: Exit status a command check expects.
            type: int
            default: 0
          timeout:
            description: Seconds for this check; default O(health.probe_timeout).
            type: float
      interval:
        description: Seconds between the starts of two rounds.
        type: float
        default: 5
      timeout:
        description: Seconds of rounds after the settle delay before the gate fails.
        type: float
        default: 120
      required_percent:
        description: Share of rounds that must pass (over all rounds so far).
        type: float
        default: 80
      consecutive:
        description: Rounds in a row that must pass before the gate passes.
        type: int
        default: 3
      settle:
        description: Seconds to wait after the restart (once the old process is gone) before the first round.
        type: float
        default: 5
      probe_timeout:
        description: Default timeout of each check.
        type: float
        default: 5
  keep_releases:
    description: Healthy releases kept (the current one included).
    type: int
    default: 3
  keep_failed:
    description: Failed releases kept for inspection, besides the healthy ones.
    type: int
    default: 2
  target:
    description:
      - Release to go back to with O(state=rolled_back); default the newest healthy release deployed before the
        current one.
    type: str
  force:
    description:
      - With O(state=deployed), deploy even when the content is already current (restart and gate again). With
        O(state=rolled_back), allow a O(target) whose verdict is not healthy.
    type: bool
    default: false
  deployed_by:
    description: Who or what deploys, recorded in the manifest; default C(<sudo user or user>@<host>).
    type: str
  journal_lines:
    description: Lines of the unit's journal kept as evidence when a gate fails.
    type: int
    default: 50
  evidence_files:
    description:
      - Log files whose last 20 lines join the evidence when they exist. Default
        C(/var/log/<service>/<service>-error.log) (the logrotate role's error log) when O(service) is set.
    type: list
    elements: path
  metrics_dir:
    description:
      - node_exporter textfile directory for C(prodready_deploy_<service>.prom); empty for none.
    type: path
    default: /var/lib/prometheus/node-exporter
  lock_timeout:
    description: Seconds to wait for another deploy or rollback under the same O(root).
    type: float
    default: 300
notes:
  - The module restarts with C(--no-block) and relies on the gate, so a release that never becomes ready (a
    C(Type=notify) unit without C(READY=1)) fails after the gate's timeout instead of blocking for
    C(TimeoutStartSec=).
  - With systemd socket activation (the hardening role's C(socket_activation)) the listening socket stays open
    across the restart, so requests wait for the new process instead of failing.
seealso:
  - name: ansistrano
    description: The layout this module is compatible with.
    link: https://github.com/ansistrano/deploy
  - module: prodready.vps.textfile_metric
'''

EXAMPLES = r'''
- name: Deploy a release from a fetched git checkout, with a health gate
  prodready.vps.release:
    root: /srv/api
    source: /var/cache/prodready/api-checkout
    release_id: "{{ release_id }}"
    service: api
    shared_paths: [media, log]
    build: python3 -m venv .venv && .venv/bin/pip install -q -r requirements.txt
    environment:
      APP_VERSION: "{{ app_version }}"
    health:
      checks:
        - url: http://127.0.0.1:8000/health
          json: {status: healthy}
      interval: 5
      timeout: 120
      required_percent: 80
      consecutive: 3
      settle: 5

- name: Deploy an archive (one top directory), check a port and a smoke test
  prodready.vps.release:
    root: /srv/bot
    source: /var/cache/prodready/bot-1.4.2.tar.gz
    strip_components: 1
    service: bot
    health:
      checks:
        - {type: tcp, port: 3000}
        - {type: command, command: /usr/local/bin/bot-smoke-test --quick, timeout: 20}

- name: Roll back to the previous healthy release
  prodready.vps.release:
    root: /srv/api
    state: rolled_back
    service: api
    health:
      checks:
        - url: http://127.0.0.1:8000/health

- name: Roll back to a named release
  prodready.vps.release:
    root: /srv/api
    state: rolled_back
    target: 20261120T091500Z
    service: api

- name: List the releases
  prodready.vps.release:
    root: /srv/api
    state: listed
  register: releases
'''

RETURN = r'''
release:
  description: The release deployed (or gone back to with O(state=rolled_back)).
  returned: success and failure of deployed and rolled_back
  type: str
  sample: 20261123T101500Z
current:
  description: The release C(current) points to at the end.
  returned: always
  type: str
  sample: 20261120T091500Z
previous:
  description:
    - With O(state=deployed) and O(state=rolled_back), the release that was current before; with O(state=listed),
      the release a rollback would go back to.
  returned: always
  type: str
  sample: 20261120T091500Z
verdict:
  description: The new release's verdict - V(passed), V(unchecked), V(failed) or V(build_failed).
  returned: state is deployed
  type: str
  sample: failed
rolled_back:
  description: Whether the service was switched back (automatically, or by O(state=rolled_back)).
  returned: state is deployed or rolled_back
  type: bool
rollback_target:
  description: Where an automatic rollback went (or would have gone).
  returned: a gate failed
  type: str
gate:
  description:
    - The health gate's result - C(verdict), C(reason), C(rounds), C(successes), C(percent), C(seconds),
      C(first_success_after), C(started_at) and C(ended_at) (epoch), C(settings), C(last) (the last result of every
      check - status, body excerpt or error, duration) and C(history) (the last rounds).
  returned: a gate ran
  type: dict
rollback_gate:
  description: The gate's result on the old release after an automatic rollback.
  returned: after an automatic rollback with checks
  type: dict
recovery_seconds:
  description: From the failing verdict to the old release's first passing round after an automatic rollback.
  returned: after an automatic rollback with checks
  type: float
  sample: 1.4
evidence:
  description:
    - Why the release failed - C(gate) (as above), C(journal) (the unit's last O(journal_lines) lines, read right
      after the failing verdict), C(files) (tails of O(evidence_files)). Also stored in the failed release's
      manifest.
  returned: a gate failed
  type: dict
restored_files:
  description: Environment and unit files put back from the snapshot.
  returned: after a rollback
  type: list
  elements: str
removed:
  description: Releases removed by retention.
  returned: after a deploy
  type: list
  elements: str
build_output:
  description: The last 50 lines of the build's output.
  returned: the build failed
  type: list
  elements: str
plan:
  description: What a real run would do (check mode).
  returned: check mode, when something would change
  type: list
  elements: str
releases:
  description:
    - The releases, newest first - C(id), C(seq), C(verdict), C(current), C(rollback_target), C(source),
      C(source_type), C(revision), C(checksum), C(created), C(deployed_by), C(verdict_at), C(last_check), C(path).
  returned: state is listed, and a deploy that changed nothing
  type: list
  elements: dict
root:
  description: The deploy directory.
  returned: always
  type: str
'''

import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_native

from ansible_collections.prodready.vps.plugins.module_utils import health_gate
from ansible_collections.prodready.vps.plugins.module_utils import release as rel

CHECK_OPTIONS = dict(
    type=dict(type='str', choices=['http', 'tcp', 'command']),
    name=dict(type='str'),
    url=dict(type='str'),
    status=dict(type='list', elements='int', default=[200]),
    json=dict(type='dict'),
    method=dict(type='str', default='GET'),
    headers=dict(type='dict'),
    validate_certs=dict(type='bool', default=True),
    host=dict(type='str', default='127.0.0.1'),
    port=dict(type='int'),
    command=dict(type='raw'),
    rc=dict(type='int', default=0),
    timeout=dict(type='float'),
)

ARGUMENT_SPEC = dict(
    root=dict(type='path', required=True),
    state=dict(type='str', choices=['deployed', 'rolled_back', 'listed'], default='deployed'),
    source=dict(type='path'),
    release_id=dict(type='str'),
    exclude=dict(type='list', elements='str', default=[]),
    strip_components=dict(type='int', default=0),
    shared_paths=dict(type='list', elements='str', default=[]),
    build=dict(type='str'),
    build_timeout=dict(type='float', default=1800),
    service=dict(type='str'),
    restart=dict(type='str', choices=['restart', 'reload', 'none'], default='restart'),
    env_file=dict(type='path'),
    unit_files=dict(type='list', elements='path'),
    environment=dict(type='dict'),
    health=dict(type='dict', options=dict(
        checks=dict(type='list', elements='dict', default=[], options=CHECK_OPTIONS),
        interval=dict(type='float', default=5),
        timeout=dict(type='float', default=120),
        required_percent=dict(type='float', default=80),
        consecutive=dict(type='int', default=3),
        settle=dict(type='float', default=5),
        probe_timeout=dict(type='float', default=5),
    )),
    keep_releases=dict(type='int', default=3),
    keep_failed=dict(type='int', default=2),
    target=dict(type='str'),
    force=dict(type='bool', default=False),
    deployed_by=dict(type='str'),
    journal_lines=dict(type='int', default=50),
    evidence_files=dict(type='list', elements='path'),
    metrics_dir=dict(type='path', default='/var/lib/prometheus/node-exporter'),
    lock_timeout=dict(type='float', default=300),
)


def unit_name(service):
    if not service:
        return None
    return service if '.' in service else service + '.service'


def build_params(module):
    p = dict(module.params)
    unit = unit_name(p['service'])
    stem = unit.rsplit('.', 1)[0] if unit else None
    p['service'] = unit
    if p['env_file'] is None:
        p['env_file'] = '/etc/prodready/%s.env' % stem if stem else None
    if p['unit_files'] is None:
        p['unit_files'] = (['/etc/systemd/system/%s.service' % stem, '/etc/systemd/system/%s.socket' % stem,
                            '/etc/systemd/system/%s.service.d' % stem] if stem else [])
    if p['evidence_files'] is None:
        p['evidence_files'] = ['/var/log/%s/%s-error.log' % (stem, stem)] if stem else []
    if p['health']:
        health = dict(p['health'])
        health['checks'] = [dict((k, v) for k, v in check.items() if v is not None) for check in health['checks'] or []]
        p['health'] = health
    p['check_mode'] = module.check_mode
    return p


def make_gate(health, starting=None):
    return health_gate.Gate(health['checks'], interval=health['interval'], timeout=health['timeout'],
                            required_percent=health['required_percent'], consecutive=health['consecutive'],
                            settle=health['settle'], probe_timeout=health['probe_timeout'], starting=starting)


def main():
    module = AnsibleModule(
        argument_spec=ARGUMENT_SPEC,
        required_if=[('state', 'deployed', ('source',))],
        supports_check_mode=True,
    )
    params = build_params(module)
    host = rel.Host(systemctl=module.get_bin_path('systemctl') or 'systemctl',
                    journalctl=module.get_bin_path('journalctl') or 'journalctl')
    manager = None
    try:
        if params['health'] and params['health']['checks']:
            make_gate(params['health'])  # refuse bad checks before anything changes
        manager = rel.Manager(params, host, make_gate)
        state = params['state']
        if state == 'listed':
            result = manager.list_releases()
        elif state == 'rolled_back':
            result = manager.rollback()
        else:
            result = manager.deploy()
    except (rel.ReleaseError, health_gate.GateError) as exc:
        module.fail_json(msg=to_native(exc), root=params['root'])
    except rel.Failure as exc:
        for warning in manager.warnings if manager else []:
            module.warn(warning)
        module.fail_json(msg=exc.msg, **exc.result)
    for warning in manager.warnings:
        module.warn(warning)
    if module._diff and params['state'] != 'listed':
        before = result.get('previous') if result.get('changed') else result.get('current')
        after = result.get('release') if module.check_mode and result.get('changed') else result.get('current')
        result['diff'] = dict(before_header=os.path.join(params['root'], 'current'),
                              after_header=os.path.join(params['root'], 'current'),
                              before='%s\n' % (before or ''), after='%s\n' % (after or ''))
    module.exit_json(**result)


if __name__ == '__main__':
    main()
