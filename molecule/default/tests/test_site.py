"""The whole site converged: effects of every role on one host."""

import time


def test_service_output_reaches_its_log_files(host):
    assert host.run('systemctl restart hello.service').rc == 0
    time.sleep(3)
    out = host.file('/var/log/hello/hello.log')
    err = host.file('/var/log/hello/hello-error.log')
    assert out.user == 'hello' and out.mode == 0o640
    assert 'hello 1' in out.content_string
    assert 'oops 1' in err.content_string and 'hello' not in err.content_string
    assert host.run('systemctl stop hello.service').rc == 0


def test_logrotate_config_for_the_service(host):
    conf = host.file('/etc/logrotate.d/prodready-hello')
    assert conf.exists
    assert host.run('/usr/local/lib/prodready/logrotate-validate /etc/logrotate.d/prodready-hello').rc == 0
    assert 'su hello hello' in conf.content_string


def test_disk_guard_metrics(host):
    assert 'prodready_filesystem_used_ratio{path="/var/log"' in \
        host.file('/var/lib/prometheus/node-exporter/prodready_diskguard.prom').content_string
