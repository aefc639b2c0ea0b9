# Copyright (c) 2026, prodready.vps contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The checklist's checks against a fake converged host, broken one thing at a time."""

import http.server
import json
import socket
import threading

import pytest
from checklist_fakes import (ALERTMANAGER_CONFIG, DAY, NOW, STRONG, analyze, converged_host, openssl_dates)

from ansible_collections.prodready.vps.plugins.module_utils import checklist


def run(host, settings, only=None):
    settings = dict(settings)
    if only:
        settings['checks'] = [only]
    results = checklist.run_checks(settings, host)
    return results[0] if only else dict((r['name'], r) for r in results)


@pytest.fixture
def site():
    return converged_host()


def test_converged_host_passes_everything_and_skips_what_does_not_apply(site):
    host, settings = site
    results = run(host, settings)
    assert list(results) == list(checklist.CHECK_NAMES)
    statuses = dict((n, r['status']) for n, r in results.items())
    assert statuses == dict((n, 'PASS') for n in checklist.CHECK_NAMES if n != 'security_headers') \
        | {'security_headers': 'SKIP'}, [(r['name'], r['reason']) for r in results.values() if r['status'] != 'PASS']
    assert results['security_headers']['reason'] == 'nginx is not installed'
    assert 'daily: last backup 3.0 h ago, restore test 2.0 days ago' in results['backups']['reason']
    assert 'receivers: ops (webhook)' in results['monitoring']['reason']
    assert 'api: MemoryMax 512M, CPUQuota 150%, LimitNOFILE 65536' in results['resource_limits']['reason']
    assert results['unit_exposure']['reason'] == 'exposure api 1.2, pgbouncer 1.2, prometheus 1.3'
    summary = checklist.summary_line(list(results.values()))
    assert summary == 'Passed 10/11, warnings 0, failed 0, skipped 1: Ready for production: every check that applies passed.'


def test_nothing_is_written_or_restarted(site):
    host, settings = site
    run(host, settings)
    verbs = set((c[0], c[1]) for c in host.calls)
    assert verbs <= {('systemctl', 'show'), ('systemctl', 'cat'), ('nft', 'list'), ('openssl', 'x509'),
                     ('openssl', 'pkey'), ('runuser', '-u'), ('systemd-analyze', 'security')}


# ---- the four breakages of the acceptance test ------------------------------------------------


def test_world_readable_env_file_fails_secrets_with_the_path_and_mode(site):
    host, settings = site
    host.files['/etc/prodready/api.env']['mode'] = 0o644
    result = run(host, settings, 'secrets')
    assert result['status'] == 'FAIL'
    assert result['reason'] == '/etc/prodready/api.env is readable by every user (mode 0644)'
    assert result['fix_roles'] == ['hardening'] and result['fix_tags'] == ['hardening_units']
    assert '--tags hardening_units' in result['fix']


def test_firewall_table_gone_fails(site):
    host, settings = site
    host.commands[('nft', 'list', 'table', 'inet', 'prodready')] = (
        1, '', 'Error: No such file or directory\nlist table inet prodready\n                 ^^^^^^^^^\n')
    result = run(host, settings, 'firewall')
    assert result['status'] == 'FAIL'
    assert result['reason'] == 'table inet prodready is not loaded: every port is open'
    assert result['fix_roles'] == ['hardening'] and result['fix_tags'] == ['hardening_firewall']


def test_backup_three_days_old_fails_and_the_fix_runs_a_backup(site):
    host, settings = site
    state = json.loads(host.files['/var/lib/prodready/backup/daily.json']['text'])
    state['last_success'] = NOW - 3 * DAY
    host.files['/var/lib/prodready/backup/daily.json']['text'] = json.dumps(state)
    result = run(host, settings, 'backups')
    assert result['status'] == 'FAIL'
    assert result['reason'] == 'the last successful backup of job daily is 3.0 days old (limit 48 h)'
    assert result['fix_units'] == ['prodready-backup@daily.service']


def test_alertmanager_down_fails_monitoring(site):
    host, settings = site
    host.http['http://127.0.0.1:9093/api/v2/status'] = 'connection refused'
    result = run(host, settings, 'monitoring')
    assert result['status'] == 'FAIL'
    assert result['reason'] == ('Alertmanager does not answer at http://127.0.0.1:9093 (connection refused): '
                                'alerts go nowhere')
    assert result['fix_roles'] == ['monitoring']


# ---- TLS ---------------------------------------------------------------------------------------


@pytest.mark.parametrize('days, status, words', [
    (80, 'PASS', 'in 80 days'),
    (20, 'WARN', 'expires in 20 days'),
    (3, 'FAIL', 'expires in 3 days'),
    (-1, 'FAIL', 'expired on'),
])
def test_certificate_expiry(site, days, status, words):
    host, settings = site
    host.commands[('openssl', 'x509', '-noout', '-enddate', '-startdate', '-in', '/etc/ssl/site.pem')] = (
        0, openssl_dates(NOW + days * DAY), '')
    result = run(host, settings, 'tls')
    assert result['status'] == status and words in result['reason']


def test_certificate_not_yet_valid_missing_unreadable_and_wrong_key(site):
    host, settings = site
    settings['tls_certificates'] = [
        {'path': '/etc/ssl/site.pem', 'key': '/etc/ssl/private/site.key'}, '/etc/ssl/missing.pem', '/etc/ssl/junk.pem']
    host.add_file('/etc/ssl/junk.pem', 'junk')
    host.commands[('openssl', 'x509', '-noout', '-enddate', '-startdate', '-in', '/etc/ssl/junk.pem')] = (
        1, '', 'Could not read certificate from /etc/ssl/junk.pem\n')
    host.commands[('openssl', 'x509', '-noout', '-enddate', '-startdate', '-in', '/etc/ssl/site.pem')] = (
        0, openssl_dates(NOW + 80 * DAY, not_before=NOW + DAY), '')
    host.commands[('openssl', 'pkey', '-pubout', '-in', '/etc/ssl/private/site.key')] = (0, 'PUBKEY-B\n', '')
    result = run(host, settings, 'tls')
    assert result['status'] == 'FAIL'
    text = '\n'.join(result['details'])
    assert 'site.pem is not valid before' in text
    assert 'the key /etc/ssl/private/site.key does not belong to /etc/ssl/site.pem' in text
    assert '/etc/ssl/missing.pem does not exist' in text
    assert '/etc/ssl/junk.pem is not a readable PEM certificate (Could not read certificate' in text


def test_no_certificates_no_nginx_is_skipped(site):
    host, settings = site
    settings['tls_certificates'] = []
    result = run(host, settings, 'tls')
    assert result['status'] == 'SKIP' and 'no nginx' in result['reason']


def test_certificates_are_found_in_nginx_config(site):
    host, settings = site
    settings['tls_certificates'] = []
    host.add_file('/usr/sbin/nginx', '', 0o755)
    host.commands[('nginx', '-T')] = (0, 'server {\n  ssl_certificate /etc/ssl/site.pem;\n'
                                      '  ssl_certificate_key /etc/ssl/private/site.key;\n'
                                      '  ssl_certificate /etc/ssl/$ssl_server_name.pem;\n}\n', '')
    result = run(host, settings, 'tls')
    assert result['status'] == 'PASS' and 'from nginx -T' in result['reason']


def test_nginx_without_any_certificate_warns(site):
    host, settings = site
    settings['tls_certificates'] = []
    host.add_unit('nginx.service')
    host.commands[('nginx', '-T')] = (0, 'server { listen 80; }\n', '')
    assert run(host, settings, 'tls')['status'] == 'WARN'


# ---- backups -----------------------------------------------------------------------------------


def _state(host, **changes):
    state = json.loads(host.files['/var/lib/prodready/backup/daily.json']['text'])
    state.update(changes)
    host.files['/var/lib/prodready/backup/daily.json']['text'] = json.dumps(state)


def test_backup_older_than_a_day_warns(site):
    host, settings = site
    _state(host, last_success=NOW - 30 * 3600)
    result = run(host, settings, 'backups')
    assert result['status'] == 'WARN' and '30.0 h old (more than 26 h)' in result['reason']


def test_failed_last_run_fails_with_the_runners_error(site):
    host, settings = site
    _state(host, last_failure=NOW - 600, last_error='run: pg_dump exited with 1: connection refused')
    result = run(host, settings, 'backups')
    assert result['status'] == 'FAIL'
    assert result['reason'] == 'the last run of job daily failed: run: pg_dump exited with 1: connection refused'


def test_never_run_and_no_timer(site):
    host, settings = site
    host.files['/var/lib/prodready/backup/daily.json']['text'] = '{}'
    del host.units['prodready-backup-daily.timer']
    result = run(host, settings, 'backups')
    assert result['status'] == 'FAIL'
    assert 'FAIL: prodready-backup-daily.timer is not installed: job daily is not scheduled' in result['details']
    assert 'FAIL: job daily has never completed a backup' in result['details']
    # The backup runs first, then the restore test of the new backup.
    assert result['fix_roles'] == ['backup']
    assert result['fix_units'] == ['prodready-backup@daily.service', 'prodready-backup-verify@daily.service']


def test_no_backup_job_fails(site):
    host, settings = site
    del host.files['/etc/prodready/backup/daily.json']
    result = run(host, settings, 'backups')
    assert result['status'] == 'FAIL' and 'no backup job is configured' in result['reason']


def test_unreadable_job_file_fails(site):
    host, settings = site
    host.files['/etc/prodready/backup/daily.json']['text'] = '{not json'
    assert 'cannot read the job file' in run(host, settings, 'backups')['reason']


def test_old_restore_test_warns_and_the_fix_runs_the_verify_unit(site):
    host, settings = site
    _state(host, last_verified_restore=NOW - 12 * DAY)
    result = run(host, settings, 'backups')
    assert result['status'] == 'WARN' and 'restore test of job daily is 12.0 days old (limit 8 days)' in result['reason']
    assert result['fix_units'] == ['prodready-backup-verify@daily.service']


def test_failed_restore_test_fails(site):
    host, settings = site
    _state(host, last_verify_failure=NOW - 60, last_error='verify: entry etc/x: checksum mismatch')
    result = run(host, settings, 'backups')
    assert result['status'] == 'FAIL' and 'checksum mismatch' in result['reason']


def test_restore_test_without_key_on_host_counts_controller_markers(site):
    host, settings = site
    job = json.loads(host.files['/etc/prodready/backup/daily.json']['text'])
    job['identity_file'] = None
    host.files['/etc/prodready/backup/daily.json']['text'] = json.dumps(job)
    _state(host, last_verified_restore=0)
    result = run(host, settings, 'backups')
    assert result['status'] == 'WARN' and 'only compares checksums' in result['reason']
    assert result['fix_units'] == [] and 'backup_verify' in result['fix']
    host.add_file('/var/backups/prodready/daily-2027-01-14T020000Z.tar.zst.age.verified',
                  json.dumps({'verified': '2027-01-14T10:00:00Z'}), 0o600)
    host.clock = checklist.parse_iso_time('2027-01-15T10:00:00Z')
    _state(host, last_success=host.clock - 3600)
    assert run(host, settings, 'backups')['status'] == 'PASS'


# ---- monitoring --------------------------------------------------------------------------------


def test_no_receiver_warns(site):
    host, settings = site
    host.json_http('http://127.0.0.1:9093/api/v2/status', {'config': {'original': ALERTMANAGER_CONFIG.replace(
        '  webhook_configs:\n  - send_resolved: true\n    url: <secret>\n', '')}})
    result = run(host, settings, 'monitoring')
    assert result['status'] == 'WARN' and 'alerts reach nobody' in result['reason']
    assert 'monitoring_receivers' in result['fix']


def test_prometheus_not_installed_without_rules_or_alertmanager(site):
    host, settings = site
    del host.http['http://127.0.0.1:9090/api/v1/rules']
    del host.units['prometheus.service']
    result = run(host, settings, 'monitoring')
    assert result['status'] == 'FAIL'
    assert result['reason'] == 'Prometheus does not answer at http://127.0.0.1:9090 (connection refused): it is not installed'


def test_prometheus_without_rules_and_alertmanager(site):
    host, settings = site
    host.json_http('http://127.0.0.1:9090/api/v1/rules', {'data': {'groups': []}})
    host.json_http('http://127.0.0.1:9090/api/v1/alertmanagers', {'data': {'activeAlertmanagers': []}})
    result = run(host, settings, 'monitoring')
    assert 'FAIL: Prometheus has no alert rules loaded' in result['details']
    assert 'FAIL: Prometheus sends its alerts to no Alertmanager' in result['details']


def test_broken_rule_and_textfile_error_warn(site):
    host, settings = site
    host.json_http('http://127.0.0.1:9090/api/v1/rules', {'data': {'groups': [{'name': 'x', 'rules': [
        {'type': 'alerting', 'name': 'Broken', 'health': 'err', 'lastError': 'many-to-many matching'}]}]}})
    host.http['http://127.0.0.1:9100/metrics'] = (200, {}, 'node_textfile_scrape_error 1\n')
    result = run(host, settings, 'monitoring')
    assert result['status'] == 'WARN'
    assert 'WARN: alert rule Broken does not evaluate: many-to-many matching' in result['details']
    assert any('node_textfile_scrape_error 1' in d for d in result['details'])


def test_node_exporter_down_fails(site):
    host, settings = site
    host.http['http://127.0.0.1:9100/metrics'] = 'no answer (timeout)'
    assert 'node exporter does not answer' in run(host, settings, 'monitoring')['reason']


# ---- resource limits ---------------------------------------------------------------------------


def test_missing_limits(site):
    host, settings = site
    host.units['api.service'].update(MemoryMax='infinity', CPUQuotaPerSecUSec='infinity', CPUWeight='[not set]',
                                     LimitNOFILESoft='1024')
    host.unit_texts['api.service'] = '[Service]\nExecStart=/srv/api/run\n# LimitNOFILE=65536\n'
    result = run(host, settings, 'resource_limits')
    assert result['status'] == 'FAIL'
    assert result['details'] == [
        'FAIL: api.service has no MemoryMax: one leak can take the whole host down',
        'WARN: api.service has neither CPUQuota nor CPUWeight: it competes for CPU unchecked',
        'WARN: api.service does not set LimitNOFILE (inherits 1024)']
    assert result['fix_tags'] == ['hardening_units']


def test_low_nofile_and_weight_only(site):
    host, settings = site
    host.units['api.service'].update(CPUQuotaPerSecUSec='infinity', CPUWeight='200', LimitNOFILESoft='1024')
    result = run(host, settings, 'resource_limits')
    assert result['status'] == 'WARN' and result['reason'] == 'api.service allows only 1024 open files (LimitNOFILE below 4096)'


def test_unit_not_installed_and_no_managed_service(site):
    host, settings = site
    del host.units['api.service']
    assert run(host, settings, 'resource_limits')['reason'] == 'api.service is not installed'
    settings['services'] = [{'name': 'nginx'}]
    assert run(host, settings, 'resource_limits')['status'] == 'SKIP'


# ---- secrets -----------------------------------------------------------------------------------


@pytest.mark.parametrize('line, message', [
    ('DB_PASSWORD=""', 'DB_PASSWORD in /etc/prodready/api.env is empty'),
    ('DB_PASSWORD="changeme"', 'DB_PASSWORD in /etc/prodready/api.env is a well-known default password'),
    ('HASURA_GRAPHQL_ADMIN_SECRET=hasura', 'HASURA_GRAPHQL_ADMIN_SECRET in /etc/prodready/api.env is a well-known '
                                           'default password'),
    ("API_TOKEN='demo-password-change-me'", 'API_TOKEN in /etc/prodready/api.env is a placeholder'),
    ('DATABASE_URL=postgres://app:postgres@127.0.0.1:6432/app',
     'the password in DATABASE_URL (/etc/prodready/api.env) is a well-known default password'),
])
def test_default_and_empty_passwords_fail_without_showing_them(site, line, message):
    host, settings = site
    host.files['/etc/prodready/api.env']['text'] = line + '\n'
    result = run(host, settings, 'secrets')
    assert result['status'] == 'FAIL' and result['reason'] == message
    secret = line.split('=', 1)[1].strip('"\'')
    if secret:
        assert secret not in json.dumps(result).replace('DATABASE_URL', '').replace('hasura_graphql', '')


def test_short_secret_warns_and_non_secrets_are_ignored(site):
    host, settings = site
    host.files['/etc/prodready/api.env']['text'] = (
        'SECRET_KEY=abc123XYZ\nPASSWORD_FILE=/run/secrets/db\nPUBLIC_KEY=\nLOG_LEVEL=info\nDB_PASSWORD_MIN_LENGTH=8\n')
    result = run(host, settings, 'secrets')
    assert result['status'] == 'WARN'
    assert result['reason'] == 'SECRET_KEY in /etc/prodready/api.env is shorter than 12 characters'


def test_old_secrets_warn(site):
    host, settings = site
    host.files['/etc/prodready/api.env']['mtime'] = NOW - 120 * DAY
    result = run(host, settings, 'secrets')
    assert result['status'] == 'WARN'
    assert result['reason'] == '/etc/prodready/api.env has not changed for 120 days (rotation age 90 days)'


def test_env_file_without_secrets_is_not_aged(site):
    host, settings = site
    host.files['/etc/prodready/api.env'].update(text='LOG_LEVEL=info\n', mtime=NOW - 400 * DAY)
    assert run(host, settings, 'secrets')['status'] == 'PASS'


def test_readable_key_and_group_writable_userlist(site):
    host, settings = site
    host.files['/etc/ssl/private/site.key']['mode'] = 0o644
    host.files['/etc/pgbouncer/userlist.txt']['mode'] = 0o660
    result = run(host, settings, 'secrets')
    assert result['details'] == ['FAIL: /etc/ssl/private/site.key is readable by every user (mode 0644)',
                                 'WARN: /etc/pgbouncer/userlist.txt is writable by its group (mode 0660)']
    assert result['fix_roles'] == ['pgbouncer'] and 'chmod o-rwx /etc/ssl/private/site.key' in result['fix']


# ---- firewall ----------------------------------------------------------------------------------


def test_firewall_not_enabled_at_boot_and_fail2ban_down_warn(site):
    host, settings = site
    host.units['nftables.service']['UnitFileState'] = 'disabled'
    host.units['fail2ban.service']['ActiveState'] = 'failed'
    result = run(host, settings, 'firewall')
    assert result['status'] == 'WARN'
    assert result['details'] == [
        'WARN: nftables.service is not enabled (disabled): the rules are gone after a reboot',
        'WARN: fail2ban is installed but failed']


def test_nft_missing_or_not_permitted(site):
    host, settings = site
    host.missing_programs.add('nft')
    assert run(host, settings, 'firewall')['reason'] == 'nftables is not installed: no firewall'
    host.missing_programs.clear()
    host.commands[('nft', 'list', 'table', 'inet', 'prodready')] = (1, '', 'Error: Operation not permitted\n')
    result = run(host, settings, 'firewall')
    assert 'run the checklist as root' in result['reason'] and result['fix_roles'] == []


def test_accept_policy_warns(site):
    host, settings = site
    host.commands[('nft', 'list', 'table', 'inet', 'prodready')] = (
        0, 'table inet prodready {\n chain input {\n  type filter hook input priority filter; policy accept;\n }\n}\n', '')
    assert 'does not drop by default' in run(host, settings, 'firewall')['reason']


# ---- log rotation, health ---------------------------------------------------------------------


def test_log_rotation_problems(site):
    host, settings = site
    del host.files['/etc/logrotate.d/prodready-api']
    host.units['logrotate.timer']['ActiveState'] = 'inactive'
    host.units['logrotate.service']['Result'] = 'exit-code'
    result = run(host, settings, 'log_rotation')
    assert result['details'] == [
        'FAIL: logrotate.timer is inactive: logrotate never runs',
        'FAIL: the logs of api are not rotated (no /etc/logrotate.d/prodready-api)',
        'WARN: the last logrotate run failed (exit-code)']
    assert result['fix_roles'] == ['logrotate']
    del host.files['/usr/sbin/logrotate']
    assert 'logrotate is not installed' in run(host, settings, 'log_rotation')['reason']


def test_health_of_a_stopped_service_is_fixed_by_the_role(site):
    host, settings = site
    host.http['http://127.0.0.1:8000/health'] = 'connection refused'
    host.units['api.service']['ActiveState'] = 'failed'
    result = run(host, settings, 'health')
    assert result['status'] == 'FAIL'
    assert result['reason'] == 'api: http://127.0.0.1:8000/health connection refused; api.service is failed'
    assert result['fix_roles'] == ['hardening']


def test_health_of_a_running_but_sick_service_needs_a_person(site):
    host, settings = site
    host.http['http://127.0.0.1:8000/health'] = (503, {}, 'db down')
    result = run(host, settings, 'health')
    assert result['reason'] == 'api: http://127.0.0.1:8000/health answered HTTP 503 although api.service is active'
    assert result['fix_roles'] == [] and 'prodready-ctl troubleshoot api' in result['fix']


def test_health_skipped_without_urls(site):
    host, settings = site
    settings['services'] = [{'name': 'worker', 'command': '/srv/worker'}, {'name': 'api', 'listen_port': 8000,
                                                                           'enabled': False}]
    assert run(host, settings, 'health')['status'] == 'SKIP'


# ---- database ----------------------------------------------------------------------------------


def test_postgres_without_pgbouncer_warns_like_the_seed(site):
    host, settings = site
    del host.files['/etc/pgbouncer/pgbouncer.ini']
    del host.units['pgbouncer.service']
    result = run(host, settings, 'database')
    assert result['status'] == 'WARN' and 'PgBouncer is not set up' in result['reason']
    assert result['fix_roles'] == ['pgbouncer']


def test_no_database_at_all_is_skipped(site):
    host, settings = site
    del host.files['/etc/pgbouncer/pgbouncer.ini']
    del host.units['pgbouncer.service']
    del host.units['postgresql.service']
    host.files['/etc/prodready/api.env']['text'] = 'SECRET_KEY=%s\n' % STRONG
    assert run(host, settings, 'database')['status'] == 'SKIP'


def test_pools_beyond_postgres_and_app_bypassing_pgbouncer(site):
    host, settings = site
    host.files['/etc/pgbouncer/pgbouncer.ini']['text'] = host.files['/etc/pgbouncer/pgbouncer.ini']['text'].replace(
        'default_pool_size = 5', 'default_pool_size = 60').replace('max_client_conn = 100', 'max_client_conn = 4000')
    host.files['/etc/prodready/api.env']['text'] = 'DATABASE_URL="postgresql://app:%s@127.0.0.1/app"\n' % STRONG
    result = run(host, settings, 'database')
    assert result['details'] == [
        'WARN: pgbouncer.service allows 4096 open files, max_client_conn 4000 + 62 server connections need more',
        'WARN: api connects to PostgreSQL on port 5432 (DATABASE_URL), not through PgBouncer on 6432']
    # max_connections comes from the local server when it answers
    host.commands[('runuser', '-u', 'postgres', '--', 'psql', '-XAtqc', 'SHOW max_connections')] = (0, '50\n', '')
    result = run(host, settings, 'database')
    assert result['details'][0] == (
        'WARN: the pools can open 62 server connections (1 database(s) x 1 user(s) x (pool 60 + reserve 2)), '
        'PostgreSQL allows 42 (max_connections 50 from the local server, 8 reserved)')
    host.commands.pop(('runuser', '-u', 'postgres', '--', 'psql', '-XAtqc', 'SHOW max_connections'))
    settings['postgresql_max_connections'] = 60
    assert 'max_connections 60 as configured' in run(host, settings, 'database')['details'][0]


def test_pgbouncer_down_fails(site):
    host, settings = site
    host.units['pgbouncer.service']['ActiveState'] = 'failed'
    result = run(host, settings, 'database')
    assert result['status'] == 'FAIL' and result['reason'] == 'pgbouncer.service is failed'


# ---- security headers, exposure ---------------------------------------------------------------


def test_security_headers_when_nginx_is_present(site):
    host, settings = site
    host.add_unit('nginx.service')
    host.http['http://127.0.0.1/'] = (200, {'server': 'nginx/1.22.1', 'x-content-type-options': 'nosniff'}, '')
    result = run(host, settings, 'security_headers')
    assert result['details'] == ['WARN: http://127.0.0.1/ lacks X-Frame-Options, Referrer-Policy',
                                 'WARN: http://127.0.0.1/ tells its nginx version (Server: nginx/1.22.1)']
    host.http['http://127.0.0.1/'] = (301, {'location': 'https://127.0.0.1/'}, '')
    host.http['https://127.0.0.1/'] = (200, {'server': 'nginx', 'x-content-type-options': 'nosniff',
                                             'content-security-policy': "frame-ancestors 'none'",
                                             'referrer-policy': 'no-referrer',
                                             'strict-transport-security': 'max-age=63072000'}, '')
    result = run(host, settings, 'security_headers')
    assert result['status'] == 'PASS' and 'https://127.0.0.1/' in result['reason']


def test_exposure_above_target_warns_and_unsandboxed_fails(site):
    host, settings = site
    host.commands[('systemd-analyze', 'security', '--no-pager', 'api.service')] = (
        0, analyze('api.service', 9.2, 'UNSAFE'), '')
    host.commands[('systemd-analyze', 'security', '--no-pager', 'pgbouncer.service')] = (
        0, analyze('pgbouncer.service', 3.1), '')
    result = run(host, settings, 'unit_exposure')
    assert result['details'] == [
        'FAIL: api.service exposure 9.2 UNSAFE (target 2.0): it runs almost unsandboxed',
        'WARN: pgbouncer.service exposure 3.1 OK is above the target 2.5']
    assert result['fix_tags'] == ['hardening_units', 'hardening_daemons']


def test_exposure_skipped_without_systemd_analyze(site):
    host, settings = site
    host.missing_programs.add('systemd-analyze')
    assert run(host, settings, 'unit_exposure')['status'] == 'SKIP'


# ---- running, rendering, settings ---------------------------------------------------------------


def test_a_crashing_check_is_reported_not_raised(site, monkeypatch):
    host, settings = site

    def boom(ctx):
        raise RuntimeError('bug')
    monkeypatch.setattr(checklist, 'CHECKS', (('firewall', 'firewall', boom),) + checklist.CHECKS[1:])
    results = checklist.run_checks(settings, host)
    assert results[0]['status'] == 'FAIL' and results[0]['reason'] == 'the check itself failed: RuntimeError: bug'


def test_table_and_fix_plan(site):
    host, settings = site
    host.files['/etc/prodready/api.env']['mode'] = 0o644
    _state(host, last_success=NOW - 3 * DAY)
    host.commands[('nft', 'list', 'table', 'inet', 'prodready')] = (1, '', 'Error: No such file or directory\n')
    results = checklist.run_checks(settings, host)
    table = checklist.render_table(results, host='web1')
    lines = table.splitlines()
    assert lines[0] == 'Production Readiness Checklist (web1)'
    assert '[PASS]  ssl certificates' in lines and '[FAIL]  secrets' in lines and '[SKIP]  security headers' in lines
    assert lines[lines.index('[FAIL]  firewall') + 1] == '         table inet prodready is not loaded: every port is open'
    assert lines[-6:] == ['  Passed:   7 / 11', '  Warnings: 0', '  Failed:   3', '  Skipped:  1 (security headers)', '',
                          '3 critical issue(s) found. Fix these before deploying!']
    assert 'MemoryMax 512M' not in table and 'MemoryMax 512M' in checklist.render_table(results, verbose=True)
    # A stale backup needs no role, only a backup now.
    assert checklist.fix_plan(results) == {'roles': ['hardening'], 'tags': ['hardening_units', 'hardening_firewall'],
                                           'units': ['prodready-backup@daily.service']}


def test_only_selected_checks_run(site):
    host, settings = site
    settings['checks'] = ['firewall', 'health']
    assert [r['name'] for r in checklist.run_checks(settings, host)] == ['firewall', 'health']


@pytest.mark.parametrize('settings, words', [
    ({'checks': ['firewal']}, 'unknown check(s) firewal'),
    ({'services': [{'name': 'Bad Name'}]}, 'services[0]: every service needs a name'),
    ({'services': [{'name': 'a'}, {'name': 'a'}]}, 'a listed twice'),
    ({'tls_fail_days': 40}, 'tls_fail_days (40) must not exceed tls_warn_days (30)'),
    ({'tls_certificates': ['relative.pem']}, 'tls_certificates[0]: give an absolute path'),
    ({'prometheus_url': '127.0.0.1:9090'}, 'prometheus_url must be an http(s) URL'),
    ({'firewall_table': 'x; flush ruleset'}, 'is not an nftables table name'),
    ({'backup_warn_hours': 'soon'}, 'backup_warn_hours must be a number'),
    ({'colour': 'red'}, "unknown setting 'colour'"),
])
def test_bad_settings_are_named(settings, words):
    with pytest.raises(checklist.ChecklistError) as info:
        checklist.normalize_settings(settings)
    assert words in str(info.value)


# ---- parsers -----------------------------------------------------------------------------------


def test_parsers():
    shown = checklist.parse_systemctl_show('MemoryMax=infinity\nId=a.service\n\nId=b.service\nLoadState=not-found\n')
    assert shown == {'a.service': {'Id': 'a.service', 'MemoryMax': 'infinity'},
                     'b.service': {'Id': 'b.service', 'LoadState': 'not-found'}}
    cat = checklist.parse_systemctl_cat('# /etc/systemd/system/a.service\n[Service]\nLimitNOFILE=1\n'
                                        '# /etc/systemd/system/a.service.d/50-x.conf\n[Service]\nMemoryMax=1G\n')
    assert checklist.unit_directives(cat['a.service']) == {'LimitNOFILE', 'MemoryMax'}
    assert checklist.parse_timespan_seconds('1.500000s') == 1.5
    assert checklist.parse_timespan_seconds('500ms') == 0.5
    assert checklist.parse_timespan_seconds('1min 30s') == 90
    assert checklist.parse_timespan_seconds('infinity') is None
    assert checklist.parse_openssl_date('Jan  5 12:00:00 2027 GMT') == checklist.parse_iso_time('2027-01-05T12:00:00Z')
    assert checklist.parse_openssl_date('garbage') is None
    assert checklist.parse_iso_time('2027-01-05T13:00:00+01:00') == checklist.parse_iso_time('2027-01-05T12:00:00Z')
    assert checklist.parse_env_file('# c\nexport A=1\nB="x \\"y\\""\nC=\'z\'\nnoequals\n') == [
        ('A', '1'), ('B', 'x "y"'), ('C', 'z')]
    assert checklist.alertmanager_receivers(ALERTMANAGER_CONFIG) == {'ops': ['webhook'], 'blackhole': []}
    assert checklist.exposure_score(analyze('x.service', 1.2)) == (1.2, 'OK')
    assert checklist.format_bytes(536870912) == '512M' and checklist.format_bytes(1536) == '1.5K'
    assert checklist.format_age(90) == '90 s' and checklist.format_age(3 * DAY) == '3.0 days'
    ini = checklist.parse_ini('[databases]\nMyDB = host=x\n[PgBouncer]\nPool_Mode = session\n')
    assert ini == {'databases': {'MyDB': 'host=x'}, 'pgbouncer': {'pool_mode': 'session'}}


# ---- the real HostIO ---------------------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        code = 503 if self.path == '/sick' else 200
        self.send_response(code)
        self.send_header('X-Content-Type-Options', 'nosniff')
        self.end_headers()
        self.wfile.write(b'ok' if code == 200 else b'sick')

    def log_message(self, *args):
        pass


def test_host_io_http_and_commands(tmp_path):
    server = http.server.HTTPServer(('127.0.0.1', 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        io = checklist.HostIO()
        port = server.server_address[1]
        status, headers, body = io.http_get('http://127.0.0.1:%d/' % port, 5)
        assert (status, headers['x-content-type-options'], body) == (200, 'nosniff', 'ok')
        assert io.http_get('http://127.0.0.1:%d/sick' % port, 5)[0] == 503
    finally:
        server.shutdown()
    sock = socket.socket()
    sock.bind(('127.0.0.1', 0))
    free = sock.getsockname()[1]
    sock.close()
    with pytest.raises(checklist.HttpError) as info:
        io.http_get('http://127.0.0.1:%d/' % free, 2)
    assert str(info.value) == 'connection refused'
    assert io.run(['definitely-not-a-program-xyz'])[0] == 127
    rc, out, _err = io.run(['sh', '-c', 'echo $LC_ALL'])
    assert (rc, out) == (0, 'C\n')
    (tmp_path / 'f').write_text('x')
    assert io.read(str(tmp_path / 'f')) == 'x' and io.stat(str(tmp_path / 'nope')) is None
    assert io.glob(str(tmp_path / '*')) == [str(tmp_path / 'f')]


def test_verdicts():
    assert checklist.verdict({'fail': 0, 'warn': 0, 'skip': 0}) == 'Ready for production: every check passed.'
    assert checklist.verdict({'fail': 0, 'warn': 2, 'skip': 1}) == 'No critical issue; 2 warning(s) to review.'
