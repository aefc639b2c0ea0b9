"""Effects of the monitoring role, checked inside each container.

Scenario (vars/monitoring.yml): scrape and evaluation every 5 s, group_wait 5 s,
group_interval 10 s, ServiceDown for 20 s, NoRecentBackup for 10 s, BackupFailed
for 40 s. The receiver /usr/local/bin/alert-receiver.py on 127.0.0.1:8199 logs
every POST with its arrival time to /var/tmp/alerts.jsonl.

side_effect.yml moved the webhook to /hook/v2 (reload; PID and hash recorded in
/var/tmp/monitoring-reload.json), then stopped sample-py and wrote backup
metrics 50 h old (time in /var/tmp/monitoring-trigger.json).
"""

import json
import time
import warnings

import pytest

PROMETHEUS = 'http://127.0.0.1:9090'
ALERTMANAGER = 'http://127.0.0.1:9093'
SCRAPE, EVALUATION, GROUP_WAIT, GROUP_INTERVAL = 5, 5, 5, 10
SERVICE_DOWN_FOR = 20
WEBHOOK = '/hook/v2'
INSTALLED_GROUPS = {'meta', 'node', 'textfile', 'services', 'backup'}
ALL_GROUPS = INSTALLED_GROUPS | {'app', 'tls', 'containers', 'postgresql', 'redis', 'pgbouncer', 'backup_restore'}
DAEMONS = ['prometheus', 'prometheus-alertmanager', 'prometheus-node-exporter', 'prometheus-blackbox-exporter']
# Generous: the machine is shared; the bounds below are asserted on measured times.
WAIT = 300


def get_json(host, url):
    """GET url inside the container; the parsed JSON answer."""
    cmd = host.run("python3 -c 'import sys, urllib.request; "
                   "sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())' %s", url)
    assert cmd.rc == 0, cmd.stderr
    return json.loads(cmd.stdout)


def get_text(host, url):
    cmd = host.run("python3 -c 'import sys, urllib.request; "
                   "sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())' %s", url)
    assert cmd.rc == 0, cmd.stderr
    return cmd.stdout


def metric(text, name):
    for line in text.splitlines():
        if line.startswith(name + ' '):
            return float(line.split()[1])
    return None


def notifications(host):
    """Every alert notification received so far: (path, received, status, alertname, labels)."""
    content = host.run('cat /var/tmp/alerts.jsonl 2>/dev/null').stdout
    out = []
    for line in content.splitlines():
        record = json.loads(line)
        try:
            body = json.loads(record['body'])
        except ValueError:
            body = {}
        for alert in body.get('alerts', []):
            out.append((record['path'], record['received'], alert['status'], alert['labels'].get('alertname'),
                        alert['labels']))
        if record['path'].startswith(('/slack', '/bot')):
            out.append((record['path'], record['received'], None, None, record['body']))
    return out


def wait_for(what, check, timeout=WAIT, step=2):
    deadline = time.time() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.time() > deadline:
            pytest.fail('gave up after %d s waiting for %s' % (timeout, what))
        time.sleep(step)


def trigger_time(host):
    return json.loads(host.file('/var/tmp/monitoring-trigger.json').content_string)['stopped']


def test_daemons_listen_on_loopback_only_and_alertmanager_is_not_clustered(host):
    listening = host.check_output('ss -Hltn')
    for port in (9090, 9093, 9100, 9115):
        addresses = [line.split()[3] for line in listening.splitlines() if line.split()[3].endswith(':%d' % port)]
        assert addresses == ['127.0.0.1:%d' % port], (port, addresses)
    assert ':9094' not in listening, 'Alertmanager cluster port open'


def test_every_daemon_runs_sandboxed(host):
    for daemon in DAEMONS:
        assert host.service(daemon).is_running, daemon
        assert host.file('/etc/systemd/system/%s.service.d/60-prodready-sandbox.conf' % daemon).exists, daemon
        pid = host.check_output('systemctl show -P MainPID %s.service' % daemon)
        status = host.file('/proc/%s/status' % pid).content_string
        assert 'NoNewPrivs:\t1' in status, daemon
        assert 'CapEff:\t0000000000000000' in status, daemon
        # ProtectSystem=strict: the daemon cannot write to /etc.
        assert host.run('nsenter -t %s -m touch /etc/prodready-write-test' % pid).rc != 0, daemon


def test_rules_of_absent_components_are_not_installed(host):
    for group in ALL_GROUPS:
        installed = host.file('/etc/prometheus/rules/prodready-%s.yml' % group).exists
        assert installed == (group in INSTALLED_GROUPS), group


def test_prometheus_loaded_the_installed_rule_groups(host):
    groups = get_json(host, PROMETHEUS + '/api/v1/rules')['data']['groups']
    names = {group['name'] for group in groups}
    assert names == {'prodready-' + group for group in INSTALLED_GROUPS}
    service_down = [rule for group in groups for rule in group['rules'] if rule['name'] == 'ServiceDown'][0]
    assert service_down['duration'] == SERVICE_DOWN_FOR


def test_all_targets_up(host):
    def all_up():
        targets = get_json(host, PROMETHEUS + '/api/v1/targets')['data']['activeTargets']
        if targets and all(t['health'] == 'up' for t in targets):
            return targets
        return None
    targets = wait_for('every target up', all_up, timeout=120)
    jobs = {t['labels']['job'] for t in targets}
    assert jobs == {'prometheus', 'alertmanager', 'node', 'blackbox', 'probe_health', 'probe_ready'}
    probes = {t['labels']['instance'] for t in targets if t['labels']['job'].startswith('probe_')}
    assert probes == {'http://127.0.0.1:8101/health', 'http://127.0.0.1:8101/ready'}


def test_shipped_rule_tests_pass_with_this_hosts_promtool(host):
    # The role wrote every group (built-in thresholds) and every group's tests there, and ran them.
    rules = host.file('/var/lib/prodready/monitoring-rule-tests/all.rules.yml').content_string
    for group in ALL_GROUPS:
        assert 'name: prodready-%s' % group.replace('_', '-') in rules, group
    result = host.run('cd /var/lib/prodready/monitoring-rule-tests && promtool test rules all.test.yml')
    assert result.rc == 0, result.stdout + result.stderr
    assert 'SUCCESS' in result.stdout + result.stderr and 'FAILED' not in result.stdout + result.stderr


def test_a_broken_rule_file_is_refused(host):
    broken = host.run("printf 'groups:\\n  - name: x\\n    rules:\\n      - alert: X\\n        expr: up ==\\n' "
                      '> /tmp/broken.yml && promtool check rules /tmp/broken.yml')
    assert broken.rc != 0


def test_secrets_are_in_0600_files_where_alertmanager_reads_them(host):
    version = host.system_info.release.split('.')[0]
    config = host.file('/etc/prometheus/alertmanager.yml')
    assert config.mode == 0o640 and config.user == 'root' and config.group == 'prometheus'
    text = config.content_string
    assert 'smtp-secret-5' not in text
    assert 'smtp_auth_password_file: /etc/prometheus/alertmanager-secrets/smtp-auth-password' in text
    assert 'api_url_file:' in text  # slack
    secrets = host.file('/etc/prometheus/alertmanager-secrets')
    for path in host.check_output('find /etc/prometheus/alertmanager-secrets -type f').splitlines():
        secret = host.file(path)
        assert secret.mode == 0o600 and secret.user == 'prometheus', path
    assert secrets.mode == 0o750
    if version == '12':
        # Alertmanager 0.25 has no bot_token_file / url_file: inline, file 0640.
        assert 'test-token' in text
    else:
        assert 'test-token' not in text and 'bot_token_file:' in text and 'url_file:' in text


def test_receiver_change_was_applied_by_reload(host):
    state = json.loads(host.file('/var/tmp/monitoring-reload.json').content_string)
    assert state['before']['pid'] == state['after']['pid'], 'Alertmanager was restarted'
    assert state['before']['hash'] != state['after']['hash'], 'config hash did not change'
    running = get_json(host, ALERTMANAGER + '/api/v2/status')['config']['original']
    assert 'channel: \'#ops-v2\'' in running or 'channel: "#ops-v2"' in running, running
    url_files = [line.split(':', 1)[1].strip() for line in running.splitlines()
                 if line.strip().startswith('url_file:')]
    if url_files:
        # Debian 13: the URL lives in the receiver's secret file, which Alertmanager reads per notification.
        assert host.file(url_files[0]).content_string == 'http://127.0.0.1:8199/hook/v2'
    else:
        assert 'hook/v2' in running and 'hook/v1' not in running
    metrics = get_text(host, ALERTMANAGER + '/metrics')
    assert metric(metrics, 'alertmanager_config_last_reload_successful') == 1
    assert str(int(float(state['after']['hash']))) == str(int(metric(metrics, 'alertmanager_config_hash')))


def test_service_down_reaches_the_webhook_in_time_then_resolves(host):
    stopped = trigger_time(host)

    def firing():
        return [n for n in notifications(host)
                if n[0] == WEBHOOK and n[3] == 'ServiceDown' and n[2] == 'firing']
    received = wait_for('ServiceDown at %s' % WEBHOOK, firing)
    elapsed = received[0][1] - stopped
    bound = SERVICE_DOWN_FOR + SCRAPE + EVALUATION + GROUP_WAIT + 30
    assert elapsed <= bound, 'ServiceDown arrived after %.1f s (bound %d s)' % (elapsed, bound)
    warnings.warn('%s: ServiceDown delivered %.1f s after the stop (bound %d s)' % (host.backend.get_hostname(), elapsed, bound))
    labels = received[0][4]
    assert labels['service'] == 'sample-py' and labels['severity'] == 'critical'
    assert labels['instance'] == 'http://127.0.0.1:8101/health'
    # The same alert reached the Slack and Telegram receivers.
    others = {n[0].split('/')[1] for n in notifications(host) if n[2] is None and 'ServiceDown' in n[4]}
    assert {'slack', 'bot123456:test-token'} <= others, others
    # Nothing went to the old webhook path after the reload.
    assert not [n for n in notifications(host) if n[0] == '/hook/v1' and n[1] > stopped]

    started = time.time()
    host.run_test('systemctl start sample-py.service')

    def resolved():
        return [n for n in notifications(host)
                if n[0] == WEBHOOK and n[3] == 'ServiceDown' and n[2] == 'resolved' and n[1] > started]
    back = wait_for('ServiceDown resolved', resolved)
    elapsed = back[0][1] - started
    bound = SCRAPE + EVALUATION + GROUP_INTERVAL + 30
    assert elapsed <= bound, 'resolved notification after %.1f s (bound %d s)' % (elapsed, bound)
    warnings.warn('%s: ServiceDown resolved %.1f s after the start (bound %d s)' % (host.backend.get_hostname(), elapsed, bound))


def test_no_recent_backup_is_delivered_and_mutes_backup_failed(host):
    written = trigger_time(host)

    def delivered():
        return [n for n in notifications(host)
                if n[0] == WEBHOOK and n[3] == 'NoRecentBackup' and n[2] == 'firing']
    received = wait_for('NoRecentBackup at %s' % WEBHOOK, delivered)
    assert received[0][4]['backup_job'] == 'daily' and received[0][4]['severity'] == 'critical'
    elapsed = received[0][1] - written
    assert elapsed <= 10 + SCRAPE + EVALUATION + GROUP_WAIT + 30, 'NoRecentBackup after %.1f s' % elapsed
    warnings.warn('%s: NoRecentBackup delivered %.1f s after the metric was written' % (host.backend.get_hostname(), elapsed))

    # BackupFailed (warning, same instance) fires later and is inhibited, never sent.
    def suppressed():
        alerts = get_json(host, ALERTMANAGER + '/api/v2/alerts?inhibited=true&active=true')
        return [a for a in alerts if a['labels']['alertname'] == 'BackupFailed'
                and a['status']['state'] == 'suppressed' and a['status']['inhibitedBy']]
    wait_for('BackupFailed inhibited in Alertmanager', suppressed, timeout=180)
    time.sleep(GROUP_INTERVAL + 5)
    assert not [n for n in notifications(host) if n[3] == 'BackupFailed']
