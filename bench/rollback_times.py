# Copyright (c) 2026, prodready.vps contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Rollback speed and requests lost during deploys, on a fresh container.

    python3 bench/rollback_times.py [--debian 12|13] [--repeats 5] [--rate 50] [--keep]

Starts a container of the Molecule base image (local/prodready-debian:<v>,
the Molecule flags, like bench/lynis_index.sh), installs two units of the
sample Python app with the hardening role (units only): ``sock`` behind
systemd socket activation and ``plain`` binding its port itself, and deploys
releases with the ``prodready.vps.release`` module (gate: settle 1 s, every
1 s, 2 in a row, 80 %, probes 5 s; the sample app drains in 2 s). Measures:

1. recovery: a release whose /health answers 500 is deployed; from the
   failing verdict (the gate's end) to the old release answering /health
   200 again, seen by a poller hitting /health 20 times a second
   (``external``), and as the module reports it (``module``: the rollback
   gate's first passing round, after its settle delay);
2. failed requests under a steady 50 requests/s on / (each on a new
   connection, 10 s timeout) during a good deploy, a manual rollback and an
   automatic rollback, for both units.

Prints Markdown tables (paste them into docs/benchmarks.md). Needs Docker, the
base image (scripts/build-base-image.sh), the venv in .venv. Run it on an
idle machine; a busy one mostly adds Python start-up time.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PORTS = {'sock': 8301, 'plain': 8302}
GATE = {'interval': 1, 'timeout': 30, 'required_percent': 80, 'consecutive': 2, 'settle': 1, 'probe_timeout': 5}

SETUP = '''
- name: Units of the sample app, with and without socket activation
  hosts: all
  become: true
  vars:
    hardening_daemons_enabled: false
    hardening_sshd_enabled: false
    hardening_sysctl_enabled: false
    hardening_firewall_enabled: false
    hardening_updates_enabled: false
    hardening_coredumps_disabled: false
    hardening_umask_enabled: false
    hardening_login_enabled: false
    hardening_packages_enabled: false
    hardening_sysstat_enabled: false
    hardening_fail2ban_enabled: false
    hardening_aide_enabled: false
    prodready_services:
      - name: sock
        command: /usr/bin/python3 /srv/sock/current/prodready_sample_app.py
        runtime: python
        sd_notify: true
        listen_port: 8301
        socket_activation: true
        allow_missing_command: true
        enabled: false
      - name: plain
        command: /usr/bin/python3 /srv/plain/current/prodready_sample_app.py
        runtime: python
        sd_notify: true
        listen_port: 8302
        allow_missing_command: true
        enabled: false
  roles:
    - role: prodready.vps.hardening
  tasks:
    - name: Release source directories
      ansible.builtin.file:
        path: /opt/src/{{ item }}
        state: directory
        mode: "0755"
      loop: [v1, v2, bad]
    - name: Release sources
      ansible.builtin.copy:
        src: "{{ repo }}/sample-apps/python/prodready_sample_app.py"
        dest: /opt/src/{{ item }}/prodready_sample_app.py
        mode: "0644"
      loop: [v1, v2, bad]
    - name: Their app.conf
      ansible.builtin.copy:
        content: "APP_VERSION={{ item.version }}\\n{{ item.extra }}\\n"
        dest: /opt/src/{{ item.name }}/app.conf
        mode: "0644"
      loop:
        - {name: v1, version: 1.0.0, extra: ""}
        - {name: v2, version: 2.0.0, extra: ""}
        - {name: bad, version: 9.9.9, extra: "APP_HEALTH_STATUS=500"}
    - name: The load generator
      ansible.builtin.copy:
        src: "{{ repo }}/molecule/resources/http-load.py"
        dest: /usr/local/bin/http-load.py
        mode: "0755"
    - name: Results directory
      ansible.builtin.file:
        path: /var/tmp/bench
        state: directory
        mode: "0755"
'''

STEP = '''
- name: One release step
  hosts: all
  become: true
  gather_facts: false
  tasks:
    - name: Release
      prodready.vps.release:
        root: /srv/{{ svc }}
        state: "{{ state }}"
        source: "{{ '/opt/src/' ~ src if state == 'deployed' else omit }}"
        release_id: "{{ rid | default(omit) }}"
        target: "{{ target | default(omit) }}"
        service: "{{ svc }}"
        environment:
          APP_CONFIG_FILE: /srv/{{ svc }}/current/app.conf
          APP_PORT: "{{ port }}"
          APP_DRAIN_TIMEOUT: "2"
        health:
          checks: [{url: "http://127.0.0.1:{{ port }}/health"}]
          interval: "{{ gate.interval }}"
          timeout: "{{ gate.timeout }}"
          required_percent: "{{ gate.required_percent }}"
          consecutive: "{{ gate.consecutive }}"
          settle: "{{ gate.settle }}"
          probe_timeout: "{{ gate.probe_timeout }}"
        keep_releases: 3
        keep_failed: 1
      register: result
      ignore_errors: true
    - name: Keep the result
      ansible.builtin.copy:
        content: "{{ result | to_json }}"
        dest: /var/tmp/bench/{{ out }}.json
        mode: "0644"
'''


class Bench(object):
    def __init__(self, args):
        self.args = args
        self.name = 'prodready-bench-rollback-%s-%d' % (args.debian, os.getpid())
        self.work = tempfile.mkdtemp(prefix='prodready-rollback-bench.')
        self.count = 0
        env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(REPO, '.collections'),
                   ANSIBLE_CONFIG=os.path.join(REPO, 'ansible.cfg'), ANSIBLE_FORCE_COLOR='0')
        env['PATH'] = os.path.join(REPO, '.venv', 'bin') + ':' + env['PATH']
        self.env = env

    def docker(self, *argv, **kwargs):
        return subprocess.run(['docker'] + list(argv), check=kwargs.get('check', True), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, universal_newlines=True)

    def sh(self, command):
        return self.docker('exec', self.name, 'bash', '-c', command).stdout

    def start(self):
        image = 'local/prodready-debian:%s' % self.args.debian
        self.docker('run', '-d', '--name', self.name, '--cap-add', 'SYS_ADMIN', '--cap-add', 'NET_ADMIN',
                    '--cgroupns', 'host', '-v', '/sys/fs/cgroup:/sys/fs/cgroup:rw', '--tmpfs', '/run',
                    '--tmpfs', '/run/lock', '--tmpfs', '/tmp', '--security-opt', 'seccomp=unconfined',
                    '--security-opt', 'apparmor=unconfined', image, '/lib/systemd/systemd')
        for _attempt in range(60):
            state = self.docker('exec', self.name, 'systemctl', 'is-system-running', check=False).stdout.strip()
            if state in ('running', 'degraded'):
                break
            time.sleep(1)
        with open(os.path.join(self.work, 'inventory.yml'), 'w') as handle:
            handle.write('all:\n  hosts:\n    %s:\n      ansible_connection: community.docker.docker\n' % self.name)

    def stop(self):
        if not self.args.keep:
            self.docker('rm', '-f', self.name, check=False)

    def playbook(self, text, extra):
        path = os.path.join(self.work, 'play-%d.yml' % self.count)
        self.count += 1
        with open(path, 'w') as handle:
            handle.write(text)
        proc = subprocess.run(['ansible-playbook', '-i', os.path.join(self.work, 'inventory.yml'), path,
                               '-e', json.dumps(extra)], env=self.env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, universal_newlines=True, check=False)
        if proc.returncode != 0:
            sys.stderr.write(proc.stdout[-4000:])
            raise SystemExit('playbook failed')

    def step(self, svc, state, out, **extra):
        variables = dict(svc=svc, state=state, out=out, port=PORTS[svc], gate=GATE)
        variables.update(extra)
        self.playbook(STEP, variables)
        return json.loads(self.sh('cat /var/tmp/bench/%s.json' % out))

    def load(self, name, action, url, rate):
        if action == 'start':
            self.sh('systemd-run --quiet --unit=bench-load-%s /usr/bin/python3 /usr/local/bin/http-load.py --url %s '
                    '--rate %s --timeout 10 --out /var/tmp/bench/load-%s.json --log /var/tmp/bench/load-%s.jsonl'
                    % (name, url, rate, name, name))
            time.sleep(2)
            return None
        time.sleep(2)
        self.sh('systemctl stop bench-load-%s.service' % name)
        summary = json.loads(self.sh('cat /var/tmp/bench/load-%s.json' % name))
        rows = [json.loads(line) for line in self.sh('cat /var/tmp/bench/load-%s.jsonl' % name).splitlines()]
        return summary, rows

    def recovery(self, svc, number):
        name = 'poll-%s-%d' % (svc, number)
        self.load(name, 'start', 'http://127.0.0.1:%d/health' % PORTS[svc], 20)
        result = self.step(svc, 'deployed', 'bad-%s-%d' % (svc, number), src='bad', rid='bad-%d' % number)
        _summary, rows = self.load(name, 'stop', None, None)
        assert result.get('rolled_back'), result.get('msg')
        verdict = result['gate']['ended_at']
        healthy = [r['start'] + r['latency'] for r in rows
                   if r['start'] >= verdict and r['status'] == 200 and r['version'] == '1.0.0']
        external = min(healthy) - verdict if healthy else None
        return external, result.get('recovery_seconds')

    def traffic(self, svc, label, action):
        name = '%s-%s-%d' % (svc, label, self.count)
        self.load(name, 'start', 'http://127.0.0.1:%d/' % PORTS[svc], self.args.rate)
        result = action()
        summary, _rows = self.load(name, 'stop', None, None)
        return summary, result


def fmt(values):
    values = [v for v in values if v is not None]
    if not values:
        return '-'
    return '%.2f / %.2f / %.2f' % (min(values), statistics.median(values), max(values))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n', maxsplit=1)[0])
    parser.add_argument('--debian', default='12', choices=['12', '13'])
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--rate', type=float, default=50)
    parser.add_argument('--keep', action='store_true', help='keep the container')
    args = parser.parse_args()
    bench = Bench(args)
    started = time.time()
    try:
        bench.start()
        print('== container %s, setting up' % bench.name, flush=True)
        bench.playbook(SETUP, {'repo': REPO})
        for svc in PORTS:
            first = bench.step(svc, 'deployed', 'first-%s' % svc, src='v1', rid='v1')
            assert first.get('verdict') == 'passed', first
        print('== recovery after a failing verdict (%d x per unit)' % args.repeats, flush=True)
        recovery = {}
        for svc in PORTS:
            recovery[svc] = [bench.recovery(svc, i) for i in range(args.repeats)]
        print('== requests at %g/s during deploys and rollbacks' % args.rate, flush=True)
        traffic = {}
        for svc in PORTS:
            rows = []
            for i in range(args.repeats):
                rows.append(('good deploy',) + bench.traffic(svc, 'deploy', lambda: bench.step(
                    svc, 'deployed', 'v2-%s-%d' % (svc, i), src='v2', rid='v2')))
                rows.append(('manual rollback',) + bench.traffic(svc, 'rollback', lambda: bench.step(
                    svc, 'rolled_back', 'back-%s-%d' % (svc, i), target='v1')))
                rows.append(('automatic rollback (/health 500)',) + bench.traffic(svc, 'auto', lambda: bench.step(
                    svc, 'deployed', 'auto-%s-%d' % (svc, i), src='bad', rid='auto-%d' % i)))
            traffic[svc] = rows
        versions = bench.sh('systemctl --version | head -1; python3 --version').replace('\n', ', ').strip(', ')
    finally:
        bench.stop()

    print()
    print('Debian %s (%s), %s, %d repeats, %.0f s in all.'
          % (args.debian, versions, time.strftime('%Y-%m-%d'), args.repeats, time.time() - started))
    print()
    print('| unit | failing verdict to old release healthy, external poller (min / median / max s) '
          '| as the module reports it (after the 1 s settle) |')
    print('|---|---|---|')
    for svc, values in recovery.items():
        print('| %s | %s | %s |' % ('socket activation' if svc == 'sock' else 'binds its port',
                                    fmt([v[0] for v in values]), fmt([v[1] for v in values])))
    print()
    print('| unit | operation | runs | requests | failed | p99 latency s | max latency s | errors |')
    print('|---|---|---|---|---|---|---|---|')
    for svc, rows in traffic.items():
        for operation in ('good deploy', 'manual rollback', 'automatic rollback (/health 500)'):
            picked = [r for r in rows if r[0] == operation]
            errors = {}
            for row in picked:
                for kind, count in row[1]['errors'].items():
                    errors[kind] = errors.get(kind, 0) + count
            print('| %s | %s | %d | %d | %d | %.3f | %.3f | %s |' % (
                'socket activation' if svc == 'sock' else 'binds its port', operation, len(picked),
                sum(r[1]['requests'] for r in picked), sum(r[1]['failed'] for r in picked),
                max(r[1]['latency']['p99'] or 0 for r in picked), max(r[1]['latency']['max'] or 0 for r in picked),
                ', '.join('%s %d' % kv for kv in sorted(errors.items())) or '-'))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
