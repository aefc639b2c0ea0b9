# Copyright (c) 2026, prodready.vps contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A fake host for the checklist tests: files, systemd units, commands and HTTP endpoints in memory.

``converged_host()`` is a host the whole site converged on (every check PASS,
no nginx so the headers check is SKIP); tests break one thing at a time.
"""

import fnmatch
import json
import stat
import time

from ansible_collections.prodready.vps.plugins.module_utils import checklist

NOW = 1_800_000_000.0
DAY = 86400.0

NFT_TABLE = ('table inet prodready {\n\tchain input {\n\t\ttype filter hook input priority filter; policy drop;\n'
             '\t\tct state established,related accept\n\t\tiifname "lo" accept\n'
             '\t\ttcp dport { 22 } accept comment "ssh"\n\t\ttcp dport 443 accept\n\t}\n}\n')
ALERTMANAGER_CONFIG = '''global:
  resolve_timeout: 5m
  http_config:
    follow_redirects: true
route:
  receiver: ops
  group_by:
  - alertname
receivers:
- name: ops
  webhook_configs:
  - send_resolved: true
    url: <secret>
- name: blackhole
templates: []
'''
PGBOUNCER_INI = ''';; Managed by Ansible
[databases]
app = host=127.0.0.1 port=5432 dbname=app

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = 6432
auth_file = /etc/pgbouncer/userlist.txt
admin_users = pgbouncer_admin
stats_users = pgbouncer_stats
pool_mode = transaction
default_pool_size = 5
reserve_pool_size = 2
max_client_conn = 100
'''
USERLIST = '''; Managed by prodready.vps
"app" "SCRAM-SHA-256$4096:abc$def:ghi"
"pgbouncer_admin" "SCRAM-SHA-256$4096:abc$def:ghi"
"pgbouncer_stats" "SCRAM-SHA-256$4096:abc$def:ghi"
'''
STRONG = 'q7Vd-91kXz-PLm2-88aa'


def openssl_dates(not_after, not_before=NOW - 30 * DAY):
    fmt = '%b %d %H:%M:%S %Y GMT'
    return 'notAfter=%s\nnotBefore=%s\n' % (
        time.strftime(fmt, time.gmtime(not_after)), time.strftime(fmt, time.gmtime(not_before)))


def analyze(unit, score, word='OK'):
    return ('  NAME  DESCRIPTION  EXPOSURE\n✓ PrivateTmp=  Service has no access to other software\'s temporary files\n'
            '\n→ Overall exposure level for %s: %.1f %s :-)\n' % (unit, score, word))


class FakeStat:
    def __init__(self, mode, mtime, kind=stat.S_IFREG):
        self.st_mode = kind | mode
        self.st_mtime = mtime


class FakeHost:
    """Stands in for checklist.HostIO."""

    def __init__(self, now=NOW):
        self.clock = now
        self.files = {}       # path -> {'text', 'mode', 'mtime'}
        self.units = {}       # unit -> {prop: value}
        self.unit_texts = {}  # unit -> text (systemctl cat)
        self.http = {}        # url -> (status, headers, body) or an error message (str)
        self.commands = {}    # tuple(argv) -> (rc, out, err)
        self.missing_programs = set()
        self.calls = []
        self.urls = []

    # -- builders
    def add_file(self, path, text='', mode=0o644, age_days=1.0):
        self.files[path] = {'text': text, 'mode': mode, 'mtime': self.clock - age_days * DAY}

    def add_unit(self, unit, **props):
        base = {'Id': unit, 'LoadState': 'loaded', 'ActiveState': 'active', 'SubState': 'running',
                'UnitFileState': 'enabled', 'Result': 'success'}
        base.update(props)
        self.units[unit] = base

    def json_http(self, url, data, status=200):
        self.http[url] = (status, {'content-type': 'application/json'}, json.dumps(data))

    # -- HostIO interface
    def now(self):
        return self.clock

    def read(self, path):
        if path not in self.files:
            raise FileNotFoundError(2, 'No such file or directory', path)
        return self.files[path]['text']

    def stat(self, path):
        if path in self.files:
            return FakeStat(self.files[path]['mode'], self.files[path]['mtime'])
        return None

    def glob(self, pattern):
        return sorted(p for p in self.files if fnmatch.fnmatchcase(p, pattern))

    def http_get(self, url, timeout, follow=False):
        self.urls.append(url)
        answer = self.http.get(url, 'connection refused')
        if isinstance(answer, str):
            raise checklist.HttpError(answer)
        return answer

    def run(self, argv):
        argv = list(argv)
        self.calls.append(argv)
        if argv[0] in self.missing_programs:
            return 127, '', '%s: command not found' % argv[0]
        if argv[:2] == ['systemctl', 'show']:
            props = [argv[i + 1] for i, a in enumerate(argv) if a == '-p']
            units = argv[argv.index('--') + 1:]
            blocks = []
            for unit in units:
                known = self.units.get(unit, {'Id': unit, 'LoadState': 'not-found', 'ActiveState': 'inactive',
                                              'UnitFileState': '', 'Result': 'success'})
                blocks.append('\n'.join('%s=%s' % (p, known.get(p, '[not set]')) for p in props))
            return 0, '\n\n'.join(blocks) + '\n', ''
        if argv[:2] == ['systemctl', 'cat']:
            units = argv[argv.index('--') + 1:]
            out = ''.join('# /etc/systemd/system/%s\n%s\n' % (u, self.unit_texts[u]) for u in units
                          if u in self.unit_texts)
            return (0 if all(u in self.unit_texts for u in units) else 1), out, ''
        return self.commands.get(tuple(argv), (127, '', 'unexpected command %s' % ' '.join(argv)))


def converged_host():
    """A host the whole site converged on, with one service ``api``; returns (host, settings)."""
    host = FakeHost()
    settings = {
        'services': [{'name': 'api', 'command': '/srv/api/run', 'listen_port': 8000}],
        'tls_certificates': [{'path': '/etc/ssl/site.pem', 'key': '/etc/ssl/private/site.key'}],
    }
    # TLS
    host.add_file('/etc/ssl/site.pem', 'CERT', 0o644)
    host.add_file('/etc/ssl/private/site.key', 'KEY', 0o600)
    host.commands[('openssl', 'x509', '-noout', '-enddate', '-startdate', '-in', '/etc/ssl/site.pem')] = (
        0, openssl_dates(NOW + 80 * DAY), '')
    host.commands[('openssl', 'x509', '-noout', '-pubkey', '-in', '/etc/ssl/site.pem')] = (0, 'PUBKEY-A\n', '')
    host.commands[('openssl', 'pkey', '-pubout', '-in', '/etc/ssl/private/site.key')] = (0, 'PUBKEY-A\n', '')
    # The service and its unit
    host.add_file('/etc/prodready/api.env', 'DB_PASSWORD="%s"\nDATABASE_URL="postgresql://app:%s@127.0.0.1:6432/app"\n'
                  % (STRONG, STRONG), 0o640, age_days=10)
    host.add_unit('api.service', MemoryMax=str(512 * 1024 * 1024), CPUQuotaPerSecUSec='1.500000s', CPUWeight='100',
                  LimitNOFILESoft='65536')
    host.unit_texts['api.service'] = '[Service]\nMemoryMax=512M\nCPUQuota=150%\nLimitNOFILE=65536\n'
    host.http['http://127.0.0.1:8000/health'] = (200, {}, '{"status": "ok"}')
    # Backups
    host.add_file('/etc/prodready/backup/daily.json', json.dumps({
        'job': 'daily', 'dest': '/var/backups/prodready', 'state_dir': '/var/lib/prodready/backup',
        'identity_file': '/etc/prodready/backup/identity.age'}), 0o600)
    host.add_file('/var/lib/prodready/backup/daily.json', json.dumps({
        'last_run': NOW - 3600, 'last_success': NOW - 3 * 3600, 'last_failure': 0,
        'last_verified_restore': NOW - 2 * DAY, 'last_verify_failure': 0}), 0o600)
    host.add_unit('prodready-backup-daily.timer', SubState='waiting')
    # Monitoring
    host.json_http('http://127.0.0.1:9090/api/v1/rules', {'status': 'success', 'data': {'groups': [
        {'name': 'node', 'rules': [{'type': 'alerting', 'name': 'HostDown', 'health': 'ok'},
                                   {'type': 'recording', 'name': 'x', 'health': 'ok'}]},
        {'name': 'backup', 'rules': [{'type': 'alerting', 'name': 'NoRecentBackup', 'health': 'ok'}]}]}})
    host.json_http('http://127.0.0.1:9090/api/v1/alertmanagers', {'status': 'success', 'data': {
        'activeAlertmanagers': [{'url': 'http://127.0.0.1:9093/api/v2/alerts'}], 'droppedAlertmanagers': []}})
    host.json_http('http://127.0.0.1:9093/api/v2/status', {'cluster': {'status': 'disabled'},
                                                           'config': {'original': ALERTMANAGER_CONFIG}})
    host.http['http://127.0.0.1:9100/metrics'] = (200, {}, 'node_load1 0.1\nnode_textfile_scrape_error 0\n')
    host.add_unit('prometheus.service')
    # Firewall
    host.commands[('nft', 'list', 'table', 'inet', 'prodready')] = (0, NFT_TABLE, '')
    host.add_unit('nftables.service', SubState='exited')
    host.add_unit('fail2ban.service')
    # Log rotation
    host.add_file('/usr/sbin/logrotate', '', 0o755)
    host.add_file('/etc/logrotate.d/prodready-api', 'rotate', 0o644)
    host.add_unit('logrotate.timer', SubState='waiting')
    host.add_unit('logrotate.service', ActiveState='inactive', SubState='dead')
    # Database
    host.add_file('/etc/pgbouncer/pgbouncer.ini', PGBOUNCER_INI, 0o640)
    host.add_file('/etc/pgbouncer/userlist.txt', USERLIST, 0o640)
    host.add_unit('pgbouncer.service', LimitNOFILESoft='4096')
    host.add_unit('postgresql.service', SubState='exited')
    host.commands[('runuser', '-u', 'postgres', '--', 'psql', '-XAtqc', 'SHOW max_connections')] = (0, '100\n', '')
    # Exposure
    host.commands[('systemd-analyze', 'security', '--no-pager', 'api.service')] = (0, analyze('api.service', 1.2), '')
    host.commands[('systemd-analyze', 'security', '--no-pager', 'pgbouncer.service')] = (
        0, analyze('pgbouncer.service', 1.2), '')
    host.commands[('systemd-analyze', 'security', '--no-pager', 'prometheus.service')] = (
        0, analyze('prometheus.service', 1.3), '')
    return host, settings
