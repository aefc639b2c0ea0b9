"""Effects of the rollback role, read from what the release module left on each host.

side_effect.yml ran, after the converge's v1: v2 (archive, under load), bad-500,
bad-nolisten and bad-hang (each rolled back to v2), v3 (id from the role),
a rollback to the previous release (v2), one to v1 by name, a re-deploy of
v1 while current, v4, then playbooks/rollback.yml (v3) and playbooks/deploy.yml (v4).
"""

import json

import pytest
import testinfra

# Docker's exec is much faster than the ansible backend; the names are fixed by the shared config.
HOSTS = ['docker://prodready-rollback-debian12', 'docker://prodready-rollback-debian13']
testinfra_hosts = HOSTS

ROOT = '/srv/sample'
RESULTS = '/var/tmp/rollback-results'
BAD = ['bad-500', 'bad-nolisten', 'bad-hang']


def run(host, command):
    result = host.run(command)
    assert result.rc == 0, 'command failed: %s\nstdout: %s\nstderr: %s' % (command, result.stdout, result.stderr)
    return result.stdout


def read_json(host, path):
    return json.loads(host.file(path).content_string)


def manifests(host):
    out = {}
    for name in run(host, 'ls -1 %s/manifests' % ROOT).split():
        if name.endswith('.json'):
            data = read_json(host, '%s/manifests/%s' % (ROOT, name))
            out[data['id']] = data
    return out


def get(host, path):
    out = run(host, "python3 -c \"import urllib.request, json; "
                    "r = urllib.request.build_opener(urllib.request.ProxyHandler({})).open("
                    "'http://127.0.0.1:8201%s', timeout=10); print(r.status); print(r.read().decode())\"" % path)
    status, body = out.split('\n', 1)
    return int(status), json.loads(body)


def test_current_is_a_relative_link_to_v4_which_serves_through_the_passed_socket(host):
    link = host.file(ROOT + '/current')
    assert link.is_symlink and link.linked_to == ROOT + '/releases/v4'
    assert run(host, 'readlink %s/current' % ROOT).strip() == 'releases/v4'
    status, body = get(host, '/status')
    assert status == 200 and body['version'] == '4.0.0' and body['status'] == 'healthy'
    assert body['listen']['socket_activated'] is True
    assert host.service('sample.socket').is_running
    assert 'Requires=sample.socket' in host.file('/etc/systemd/system/sample.service').content_string


def test_every_bad_release_failed_rolled_back_to_v2_and_v2_served_again(host):
    for name in BAD:
        result = read_json(host, '%s/%s.json' % (RESULTS, name))
        assert result['failed'] and result['changed'] and result['verdict'] == 'failed'
        assert result['rolled_back'] and result['rollback_target'] == 'v2' and result['current'] == 'v2'
        assert 'release %s failed its health gate' % name in result['msg']
        assert 'rolled back to v2, which passes its health gate again' in result['msg']
        assert result['rollback_gate']['verdict'] == 'passed'
        # from the failing verdict to v2 answering healthy: a mechanism check, the bench measures the time
        assert 0 < result['recovery_seconds'] < 60
        health = read_json(host, '%s/health-after-%s.json' % (RESULTS, name))
        assert health['status'] == 'healthy' and health['version'] == '2.0.0'


def test_evidence_names_what_went_wrong(host):
    by_name = dict((n, read_json(host, '%s/%s.json' % (RESULTS, n))) for n in BAD)
    last_500 = by_name['bad-500']['evidence']['gate']['last'][0]
    assert last_500['status'] == 500 and 'unhealthy' in last_500['body']
    # never listening: with socket activation the kernel accepts and nobody answers
    assert 'timed out' in by_name['bad-nolisten']['evidence']['gate']['last'][0]['error']
    assert 'timed out' in by_name['bad-hang']['evidence']['gate']['last'][0]['error']
    for name, result in by_name.items():
        journal = result['evidence']['journal']
        # `journalctl -u sample.service -n 50`: the app's and systemd's lines about the unit
        assert 0 < len(journal) <= 50, name
        assert all('python3[' in line or 'systemd[' in line for line in journal), journal
    # read right after the verdict: the bad releases' own lines are there
    assert any('HTTP/1.1"' in line for line in by_name['bad-500']['evidence']['journal'])
    assert any('APP_NO_LISTEN=1' in line for line in by_name['bad-nolisten']['evidence']['journal'])
    assert any('sample 2.3.0 listening' in line for line in by_name['bad-hang']['evidence']['journal'])


def test_failed_releases_are_kept_with_their_verdict_and_evidence(host):
    ms = manifests(host)
    for name in BAD:
        assert ms[name]['verdict'] == 'failed' and ms[name]['evidence']['journal'], name
        assert host.file('%s/releases/%s/prodready_sample_app.py' % (ROOT, name)).exists


def test_the_environment_change_of_a_bad_release_was_undone(host):
    result = read_json(host, '%s/bad-nolisten.json' % RESULTS)
    assert '/etc/prodready/sample.env' in result['restored_files']
    env = host.file('/etc/prodready/sample.env').content_string
    assert 'APP_NO_LISTEN' not in env and 'APP_CONFIG_FILE="/srv/sample/current/app.conf"' in env


def test_no_request_failed_during_a_deploy_and_an_automatic_rollback_behind_the_socket(host):
    deploy = read_json(host, '%s/load-v2.json' % RESULTS)
    assert deploy['failed'] == 0 and deploy['requests'] > 30
    assert deploy['timeline'][0] == '1.0.0' and deploy['timeline'][-1] == '2.0.0'
    rollback = read_json(host, '%s/load-bad-500.json' % RESULTS)
    assert rollback['failed'] == 0 and rollback['requests'] > 30
    # v2, the bad release (its / still answers), v2 again
    assert rollback['timeline'][0] == '2.0.0' and '2.1.0' in rollback['timeline'] and rollback['timeline'][-1] == '2.0.0'


def test_manual_rollbacks_to_previous_and_named(host):
    previous = read_json(host, '%s/rollback-previous.json' % RESULTS)
    assert previous['changed'] and previous['previous'] != 'v2' and previous['current'] == 'v2'
    assert previous['gate']['verdict'] == 'passed'
    listed = read_json(host, '%s/listed.json' % RESULTS)
    v1_id = [r['id'] for r in listed['releases'] if r['source'] == '/opt/sample-src/v1'][0]
    named = read_json(host, '%s/rollback-named.json' % RESULTS)
    assert named['changed'] and named['previous'] == 'v2' and named['current'] == v1_id
    assert [r['verdict'] for r in listed['releases'] if r['id'] in BAD] == ['failed'] * 3


def test_deploying_the_current_content_changed_nothing(host):
    again = read_json(host, '%s/redeploy-current.json' % RESULTS)
    assert again['changed'] is False and 'nothing to do' in again['msg']
    assert not host.file('%s/releases/v1-again' % ROOT).exists


def test_retention_kept_three_healthy_and_never_the_current_or_the_rollback_target(host):
    listed = read_json(host, '%s/listed.json' % RESULTS)
    v1_id = [r['id'] for r in listed['releases'] if r['source'] == '/opt/sample-src/v1'][0]
    v4 = read_json(host, '%s/v4.json' % RESULTS)
    assert v4['removed'] == [v1_id]
    releases = sorted(run(host, 'ls -1 %s/releases' % ROOT).split())
    v3_id = read_json(host, '%s/v3.json' % RESULTS)['release']
    assert releases == sorted(BAD + ['v2', 'v4', v3_id])
    assert not host.file('%s/manifests/%s.json' % (ROOT, v1_id)).exists
    assert not host.file('%s/snapshots/%s' % (ROOT, v1_id)).exists


def test_one_release_id_for_every_host_of_a_run():
    ids = set()
    for spec in HOSTS:
        other = testinfra.get_host(spec)
        ids.add(json.loads(other.file('%s/v3.json' % RESULTS).content_string)['release'])
    assert len(ids) == 1
    (release_id,) = ids
    assert len(release_id) == len('20261123T101500Z') and release_id.endswith('Z')


def test_manifests_record_source_checksum_time_verdict_and_deployer(host):
    ms = manifests(host)
    v2 = ms['v2']
    assert v2['source'] == '/opt/sample-src/v2.tar.gz' and v2['source_type'] == 'archive'
    assert v2['checksum'] == 'sha256:' + run(host, 'sha256sum /opt/sample-src/v2.tar.gz').split()[0]
    assert v2['verdict'] == 'passed' and v2['created'].endswith('Z') and v2['deployed_by'].endswith('via ansible')
    kinds = [a['kind'] for a in v2['activations']]
    assert kinds[0] == 'deploy' and kinds.count('automatic-rollback') == 3 and 'rollback' in kinds
    assert ms['v4']['activations'][-1]['kind'] == 'redeploy'


def test_deploy_metrics(host):
    prom = host.file('/var/lib/prometheus/node-exporter/prodready_deploy_sample.prom').content_string
    assert 'prodready_deploy_release_info{release="v4",service="sample"} 1' in prom
    assert 'prodready_deploy_rollbacks_total{kind="automatic",service="sample"} 3' in prom
    assert 'prodready_deploy_rollbacks_total{kind="manual",service="sample"} 3' in prom
    assert 'prodready_deploy_failures_total{service="sample"} 3' in prom
    assert 'prodready_deploy_healthy{service="sample"} 1' in prom
    recovery = [line for line in prom.splitlines() if line.startswith('prodready_deploy_recovery_seconds')]
    assert len(recovery) == 1 and 0 < float(recovery[0].split()[-1]) < 60


@pytest.mark.parametrize('name', ['v2', 'v3'])
def test_good_releases_passed_their_gate(host, name):
    result = read_json(host, '%s/%s.json' % (RESULTS, name))
    assert result['changed'] and result['verdict'] == 'passed'
    assert result['gate']['consecutive'] >= 2 and result['gate']['percent'] >= 80
