# Copyright (c) 2026, prodready.vps contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

import io
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ansible_collections.prodready.vps.plugins.module_utils import failure_hook
from ansible_collections.prodready.vps.plugins.module_utils.failure_hook import (
    describe_failure, format_message, load_config, main, metrics_filename, normalize_config)

NOW = 1767225600.5  # 2026-01-01T00:00:00Z
TOKEN = '123456:SECRET-bot-token'
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\} (\S+)$')
MODULE_DIR = os.path.dirname(failure_hook.__file__)


def show_output(**props):
    base = {'Id': 'api.service', 'Result': 'watchdog', 'ExecMainCode': '2', 'ExecMainStatus': '6',
            'NRestarts': '4', 'ActiveState': 'failed', 'SubState': 'failed',
            'InvocationID': 'abc123', 'ActiveEnterTimestamp': 'Thu 2026-01-01 00:00:00 UTC',
            'InactiveEnterTimestamp': 'Thu 2026-01-01 00:05:00 UTC'}
    base.update(props)
    return ''.join('%s=%s\n' % item for item in base.items())


class FakeRunner:
    """Fakes systemctl and journalctl, records every argv."""

    def __init__(self, show=None, journal=None, show_rc=0):
        self.show = show_output() if show is None else show
        self.journal = journal if journal is not None else [
            '2026-01-01T00:04:58+0000 web1 api[12]: handling request',
            '2026-01-01T00:05:00+0000 web1 systemd[1]: api.service: Watchdog timeout (limit 30s)!']
        self.show_rc = show_rc
        self.calls = []

    def __call__(self, argv):
        self.calls.append(list(argv))
        if argv[0] == 'systemctl':
            return self.show_rc, self.show, '' if self.show_rc == 0 else 'Unit api.service could not be found.'
        if argv[0] == 'journalctl':
            return 0, ''.join(line + '\n' for line in self.journal), ''
        raise AssertionError('unexpected command %r' % (argv,))


class Recorder(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get('Content-Length', 0)))
        self.server.requests.append({'path': self.path, 'content_type': self.headers.get('Content-Type'),
                                     'body': json.loads(body.decode('utf-8'))})
        if self.path.startswith('/fail'):
            status, location = 500, None
        elif self.path.startswith('/redirect'):
            status, location = 302, '/slack-redirected'
        else:
            status, location = 200, None
        self.send_response(status)
        if location:
            self.send_header('Location', location)
        self.send_header('Content-Length', '2')
        self.end_headers()
        self.wfile.write(b'ok')

    def log_message(self, *args):  # keep pytest output quiet
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(('127.0.0.1', 0), Recorder)
    httpd.requests = []
    httpd.base = 'http://127.0.0.1:%d' % httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


@pytest.fixture
def closed_port():
    sock = socket.socket()
    sock.bind(('127.0.0.1', 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


@pytest.fixture(autouse=True)
def no_proxy_env(monkeypatch):
    for name in ('no_proxy', 'NO_PROXY', 'http_proxy', 'HTTP_PROXY', 'https_proxy', 'HTTPS_PROXY'):
        monkeypatch.delenv(name, raising=False)


class Env:
    def __init__(self, tmp_path):
        self.tmp = tmp_path
        self.state = tmp_path / 'lib' / 'prodready' / 'failures'
        self.textfile = tmp_path / 'textfile'
        self.textfile.mkdir()
        self.logs = tmp_path / 'log'
        self.config = tmp_path / 'failure-hook.json'

    def write_config(self, config):
        self.config.write_text(config if isinstance(config, str) else json.dumps(config))

    def run(self, unit='api.service', runner=None, extra=(), clock=lambda: NOW):
        stream = io.StringIO()
        argv = ['--config', str(self.config), '--state-dir', str(self.state), '--textfile-dir', str(self.textfile),
                '--log-dir', str(self.logs)] + list(extra) + [unit]
        code = main(argv, runner=runner or FakeRunner(), clock=clock, stream=stream)
        return code, stream.getvalue()

    def state_record(self, unit='api.service'):
        return json.loads((self.state / (unit + '.json')).read_text())

    def history(self):
        return (self.state / 'history.jsonl').read_text().splitlines()


@pytest.fixture
def env(tmp_path):
    return Env(tmp_path)


def test_records_state_history_and_counts_across_runs(env):
    env.write_config({'hostname': 'web1'})
    (env.logs / 'api').mkdir(parents=True)
    (env.logs / 'api' / 'api-error.log').write_text(''.join('err %d\n' % i for i in range(15)))

    code, err = env.run()
    assert code == 0
    record = env.state_record()
    assert record['unit'] == 'api.service'
    assert record['host'] == 'web1'
    assert record['time'] == '2026-01-01T00:00:00Z'
    assert record['timestamp'] == NOW
    assert record['result'] == 'watchdog'
    assert record['reason'] == 'watchdog timeout (the service hung)'
    assert (record['exit_code'], record['exit_status'], record['signal']) == ('killed', 6, 'SIGABRT')
    assert record['restarts'] == 4
    assert record['invocation_id'] == 'abc123'
    assert record['journal_tail'][-1].endswith('Watchdog timeout (limit 30s)!')
    assert record['log_tail'] == ['err %d' % i for i in range(5, 15)]  # log_lines defaults to 10
    assert record['count'] == 1
    path = env.state / 'api.service.json'
    assert '<3>api.service failed: watchdog timeout (the service hung); restarts 4; recorded in %s\n' % path in err
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    for directory in (env.state, env.state.parent):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o755

    code, err = env.run(clock=lambda: NOW + 60)
    assert code == 0
    assert env.state_record()['count'] == 2
    assert env.state_record()['time'] == '2026-01-01T00:01:00Z'
    history = [json.loads(line) for line in env.history()]
    assert [(h['count'], h['timestamp']) for h in history] == [(1, NOW), (2, NOW + 60)]
    assert 'journal_tail' not in history[0] and history[0]['reason'] == record['reason']
    assert not [name for name in os.listdir(str(env.state)) if name.endswith('.tmp')]


def test_commands_run(env):
    runner = FakeRunner()
    env.write_config({'journal_lines': 7})
    assert env.run(runner=runner)[0] == 0
    assert runner.calls == [
        ['systemctl', 'show', 'api.service', '-p', 'Id,Result,ExecMainCode,ExecMainStatus,NRestarts,ActiveState,'
         'SubState,InvocationID,ActiveEnterTimestamp,InactiveEnterTimestamp', '--no-pager'],
        ['journalctl', '-u', 'api.service', '-n', '7', '-o', 'short-iso', '--no-pager'],
    ]


@pytest.mark.parametrize('props, reason', [
    ({'Result': 'exit-code', 'ExecMainCode': '1', 'ExecMainStatus': '3'}, 'main process exited with status 3'),
    ({'Result': 'signal', 'ExecMainCode': '2', 'ExecMainStatus': '9'}, 'killed by signal SIGKILL'),
    ({'Result': 'core-dump', 'ExecMainCode': '3', 'ExecMainStatus': '11'}, 'dumped core on signal SIGSEGV'),
    ({'Result': 'watchdog', 'ExecMainCode': '2', 'ExecMainStatus': '6'}, 'watchdog timeout (the service hung)'),
    ({'Result': 'oom-kill', 'ExecMainCode': '2', 'ExecMainStatus': '9'}, 'killed by the OOM killer (memory limit)'),
    ({'Result': 'start-limit-hit', 'ExecMainCode': '0', 'ExecMainStatus': '0'},
     'restarted too often (start limit hit)'),
    ({'Result': 'start-limit-hit', 'ExecMainCode': '1', 'ExecMainStatus': '1'},
     'restarted too often (start limit hit), last run: main process exited with status 1'),
    ({'Result': 'timeout', 'ExecMainCode': '0', 'ExecMainStatus': '0'}, 'timed out (start, stop or runtime limit)'),
    ({'Result': 'something-new', 'ExecMainCode': '0'}, 'failed (result something-new)'),
    ({}, 'failed (no error result reported by systemd)'),
])
def test_reason_phrases(props, reason):
    assert describe_failure(props) == reason


def test_reason_reaches_state_and_journal_line(env):
    runner = FakeRunner(show=show_output(Result='exit-code', ExecMainCode='1', ExecMainStatus='3', NRestarts='0'))
    code, err = env.run(runner=runner)
    assert code == 0
    record = env.state_record()
    assert record['reason'] == 'main process exited with status 3'
    assert (record['exit_code'], record['exit_status'], record['signal']) == ('exited', 3, None)
    assert '<3>api.service failed: main process exited with status 3; restarts 0;' in err


def test_history_is_trimmed_to_1000_lines(env):
    env.state.mkdir(parents=True)
    (env.state / 'history.jsonl').write_text(''.join('{"n": %d}\n' % i for i in range(1000)))
    assert env.run()[0] == 0
    lines = env.history()
    assert len(lines) == 1000
    assert json.loads(lines[0]) == {'n': 1}
    assert json.loads(lines[-2]) == {'n': 999}
    assert json.loads(lines[-1])['unit'] == 'api.service'


def parse_prom(text):
    samples, helps, types = {}, set(), {}
    for line in text.splitlines():
        if line.startswith('# HELP '):
            helps.add(line.split()[2])
        elif line.startswith('# TYPE '):
            types[line.split()[2]] = line.split()[3]
        else:
            match = SAMPLE.match(line)
            assert match, 'not a sample line: %r' % line
            samples[(match.group(1), match.group(2))] = float(match.group(3))
    return samples, helps, types


def test_metrics_file(env):
    assert env.run()[0] == 0
    assert env.run(clock=lambda: NOW + 10)[0] == 0
    assert os.listdir(str(env.textfile)) == ['prodready_unit_failures_api_service.prom']
    prom = env.textfile / 'prodready_unit_failures_api_service.prom'
    assert stat.S_IMODE(prom.stat().st_mode) == 0o644
    samples, helps, types = parse_prom(prom.read_text())
    assert samples == {('prodready_unit_failures_total', 'unit="api.service"'): 2.0,
                       ('prodready_unit_last_failure_timestamp_seconds', 'unit="api.service"'): NOW + 10}
    assert helps == {'prodready_unit_failures_total', 'prodready_unit_last_failure_timestamp_seconds'}
    assert types == {'prodready_unit_failures_total': 'counter',
                     'prodready_unit_last_failure_timestamp_seconds': 'gauge'}


def test_metrics_filename_sanitizes_the_unit():
    assert metrics_filename('worker@queue-1.service') == 'prodready_unit_failures_worker_queue_1_service.prom'


def test_no_metrics_when_textfile_dir_is_missing_or_disabled(env, tmp_path):
    missing = tmp_path / 'no-such-dir'
    code, err = env.run(extra=['--textfile-dir', str(missing)])
    assert code == 0 and not missing.exists()
    assert 'does not exist, no metrics written' in err
    code, err = env.run(extra=['--textfile-dir', ''])
    assert code == 0 and os.listdir(str(env.textfile)) == []
    assert env.state_record()['count'] == 2


def test_malformed_config_still_records_locally(env):
    env.write_config('{"webhooks": [ this is not json')
    code, err = env.run()
    assert code == 0
    assert env.state_record()['count'] == 1
    assert re.search(r'^<4>config .*cannot read', err, re.M)


def test_broken_config_parts_fall_back_to_defaults(env, server):
    env.write_config({'journal_lines': 'many', 'log_lines': 3, 'colour': 'blue',
                      'webhooks': [{'kind': 'bogus', 'url': server.base + '/x'},
                                   {'kind': 'slack', 'url': 'ftp://example.invalid/secret-path'},
                                   {'kind': 'slack', 'url': server.base + '/slack'}]})
    runner = FakeRunner()
    code, err = env.run(runner=runner)
    assert code == 0
    assert runner.calls[1][4] == '20'  # journal_lines default
    assert [r['path'] for r in server.requests] == ['/slack']
    assert 'webhooks[0] (bogus): kind must be one of' in err
    assert 'webhooks[1] (slack): url must be an http(s) URL, webhook skipped' in err
    assert "unknown key 'colour' ignored" in err
    assert 'secret-path' not in err


def test_config_defaults_and_values(tmp_path):
    config, problems = load_config(str(tmp_path / 'missing.json'))
    assert problems == []
    assert config == failure_hook.DEFAULTS
    config, problems = normalize_config({'textfile_dir': '', 'state_dir': 'relative', 'hostname': 'h',
                                         'webhooks': [{'kind': 'telegram', 'bot_token': TOKEN, 'chat_id': 5}]})
    assert config['textfile_dir'] is None and config['hostname'] == 'h'
    assert config['state_dir'] == '/var/lib/prodready/failures'
    assert config['webhooks'] == [{'kind': 'telegram', 'name': '', 'timeout': 10.0, 'chat_id': 5,
                                   'api_url': 'https://api.telegram.org', 'bot_token': TOKEN}]
    assert len(problems) == 1 and problems[0].startswith('state_dir: invalid value')
    assert normalize_config([1, 2])[1] == ['the top level must be a JSON object, using the defaults']


@pytest.mark.parametrize('unit', ['../etc/passwd', 'a/b', 'a b.service', '.hidden', 'x;rm', 'a' * 300, ''])
def test_invalid_unit_name(env, unit):
    runner = FakeRunner()
    code, err = env.run(unit=unit, runner=runner)
    assert code == 2
    assert err.startswith('<3>invalid unit name')
    assert runner.calls == []
    assert not env.state.exists() and os.listdir(str(env.textfile)) == []


def test_option_like_unit_name_is_a_usage_error(env, capsys):
    runner = FakeRunner()
    assert env.run(unit='--evil', runner=runner)[0] == 2
    assert runner.calls == [] and not env.state.exists()
    assert 'failure_hook.py: error:' in capsys.readouterr().err


def test_valid_unit_names():
    for unit in ('api.service', 'worker@queue-1.service', 'a:b_c.timer', 'api'):
        assert failure_hook.valid_unit(unit)


def test_all_webhook_kinds_and_failures(env, server, closed_port):
    env.write_config({'hostname': 'web1', 'webhooks': [
        {'kind': 'slack', 'name': 'ops', 'url': server.base + '/slack-path?key=s3cr3t'},
        {'kind': 'telegram', 'bot_token': TOKEN, 'chat_id': -100123, 'api_url': server.base + '/'},
        {'kind': 'generic', 'url': 'http://127.0.0.1:%d/refused' % closed_port, 'timeout': 3},
        {'kind': 'generic', 'name': 'broken', 'url': server.base + '/fail-path/here'},
        {'kind': 'generic', 'url': server.base + '/generic-path'},
    ]})
    code, err = env.run()
    assert code == 0
    by_path = dict((r['path'], r) for r in server.requests)
    assert sorted(by_path) == ['/bot%s/sendMessage' % TOKEN, '/fail-path/here', '/generic-path',
                               '/slack-path?key=s3cr3t']
    assert all(r['content_type'] == 'application/json' for r in server.requests)
    message = by_path['/slack-path?key=s3cr3t']['body']['text']
    assert by_path['/slack-path?key=s3cr3t']['body'] == {'text': message}
    assert message.startswith('[web1] api.service failed: watchdog timeout (the service hung)\n'
                              'restarts: 4, time: 2026-01-01T00:00:00Z\n')
    assert by_path['/bot%s/sendMessage' % TOKEN]['body'] == {
        'chat_id': -100123, 'text': message, 'disable_web_page_preview': True}
    generic = by_path['/generic-path']['body']
    assert generic.pop('message') == message
    assert generic == env.state_record()

    port = server.server_address[1]
    assert '<6>webhook slack "ops" (127.0.0.1:%d): sent (HTTP 200)' % port in err
    assert '<6>webhook telegram (127.0.0.1:%d): sent (HTTP 200)' % port in err
    assert '<4>webhook generic "broken" (127.0.0.1:%d): failed: HTTP 500' % port in err
    refused = [line for line in err.splitlines() if '(127.0.0.1:%d)' % closed_port in line]
    assert len(refused) == 1 and refused[0].startswith('<4>webhook generic') and 'refused' in refused[0]
    for secret in (TOKEN, 'SECRET', 's3cr3t', 'slack-path', 'fail-path', 'generic-path', 'sendMessage', '/bot'):
        assert secret not in err


def test_proxy_environment_is_ignored(env, server, closed_port, monkeypatch):
    monkeypatch.setenv('http_proxy', 'http://127.0.0.1:%d' % closed_port)
    monkeypatch.setenv('HTTP_PROXY', 'http://127.0.0.1:%d' % closed_port)
    env.write_config({'webhooks': [{'kind': 'slack', 'url': server.base + '/slack'}]})
    code, err = env.run()
    assert code == 0
    assert [r['path'] for r in server.requests] == ['/slack']
    assert '<6>webhook slack' in err


def test_redirect_is_not_followed(env, server):
    env.write_config({'webhooks': [{'kind': 'generic', 'url': server.base + '/redirect'}]})
    code, err = env.run()
    assert code == 0
    assert [r['path'] for r in server.requests] == ['/redirect']
    assert 'failed: HTTP 302' in err


def test_record_failure_exits_1_but_still_notifies(env, server):
    env.state.parent.mkdir(parents=True)
    env.state.write_text('not a directory')
    env.write_config({'webhooks': [{'kind': 'slack', 'url': server.base + '/slack'}]})
    code, err = env.run()
    assert code == 1
    assert [r['path'] for r in server.requests] == ['/slack']
    assert '<3>api.service failed: watchdog timeout (the service hung); restarts 4; NOT recorded:' in err
    assert env.state.read_text() == 'not a directory'


def test_systemctl_failure_still_records(env):
    code, err = env.run(runner=FakeRunner(show='', show_rc=1))
    assert code == 0
    record = env.state_record()
    assert record['result'] is None and record['restarts'] is None
    assert record['reason'] == 'failed (no error result reported by systemd)'
    assert '<4>api.service: systemctl show failed (1): Unit api.service could not be found.' in err
    assert 'restarts ?;' in err


def test_unexpected_error_is_reported_not_raised(env):
    def exploding_runner(argv):
        raise RuntimeError('boom')
    code, err = env.run(runner=exploding_runner)
    assert code == 1
    assert err == '<3>failure hook crashed: RuntimeError: boom\n'


def test_error_log_symlink_is_not_followed(env, tmp_path):
    secret = tmp_path / 'shadow'
    secret.write_text('root:secret-hash\n')
    (env.logs / 'api').mkdir(parents=True)
    os.symlink(str(secret), str(env.logs / 'api' / 'api-error.log'))
    code, err = env.run()
    assert code == 0
    assert env.state_record()['log_tail'] == []
    assert 'secret-hash' not in json.dumps(env.state_record())
    assert re.search(r'^<4>api\.service: cannot open .*api-error\.log', err, re.M)


def test_error_log_tail_of_a_big_file(env):
    (env.logs / 'api').mkdir(parents=True)
    (env.logs / 'api' / 'api-error.log').write_text(''.join('line %06d\n' % i for i in range(20000)))
    env.write_config({'log_lines': 3})
    assert env.run()[0] == 0
    assert env.state_record()['log_tail'] == ['line 019997', 'line 019998', 'line 019999']


def record_for_message(**changes):
    record = {'host': 'web1', 'unit': 'api.service', 'reason': 'killed by signal SIGKILL', 'restarts': 2,
              'time': '2026-01-01T00:00:00Z', 'journal_tail': ['j%d' % i for i in range(20)],
              'log_tail': ['e%d' % i for i in range(8)]}
    record.update(changes)
    return record


def test_message_format():
    assert format_message(record_for_message()) == (
        '[web1] api.service failed: killed by signal SIGKILL\nrestarts: 2, time: 2026-01-01T00:00:00Z\n'
        'journal:\nj15\nj16\nj17\nj18\nj19\nerror log:\ne3\ne4\ne5\ne6\ne7')
    assert format_message(record_for_message(journal_tail=[], log_tail=[], restarts=None)) == (
        '[web1] api.service failed: killed by signal SIGKILL\nrestarts: ?, time: 2026-01-01T00:00:00Z')


def test_message_truncation():
    message = format_message(record_for_message(journal_tail=['x' * 1000] * 10))
    assert len(message) == 3500
    assert message.startswith('[web1] api.service failed: killed by signal SIGKILL\n')
    assert message.endswith('\n[truncated]')
    assert format_message(record_for_message(), limit=60).endswith('\n[truncated]')
    assert len(format_message(record_for_message(), limit=60)) == 60


def test_runs_as_a_host_side_program(tmp_path, server):
    lib = tmp_path / 'lib'
    lib.mkdir()
    for name in ('failure_hook.py', 'textfile.py'):
        shutil.copy(os.path.join(MODULE_DIR, name), str(lib / name))
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    calls = tmp_path / 'calls.txt'
    scripts = {
        'systemctl': 'echo "systemctl $*" >> %s\nprintf "Id=api.service\\nResult=oom-kill\\nExecMainCode=2\\n'
                     'ExecMainStatus=9\\nNRestarts=7\\nInvocationID=feed\\n"\n' % calls,
        'journalctl': 'echo "journalctl $*" >> %s\necho "2026-01-01T00:00:00+0000 web1 kernel: Out of memory"\n'
                      % calls,
    }
    for name, body in scripts.items():
        (bin_dir / name).write_text('#!/bin/sh\n' + body)
        (bin_dir / name).chmod(0o755)
    state = tmp_path / 'state'
    textdir = tmp_path / 'textfile'
    textdir.mkdir()
    config = tmp_path / 'hook.json'
    config.write_text(json.dumps({'hostname': 'web1', 'state_dir': str(state), 'textfile_dir': str(textdir),
                                  'webhooks': [{'kind': 'telegram', 'bot_token': TOKEN, 'chat_id': '@ops',
                                                'api_url': server.base}]}))
    env = {'PATH': '%s:/usr/bin:/bin' % bin_dir, 'LANG': 'C.UTF-8'}
    proc = subprocess.run([sys.executable, '-I', str(lib / 'failure_hook.py'), '--config', str(config),
                           '--log-dir', str(tmp_path / 'log'), 'api.service'],
                          env=env, cwd=str(tmp_path), capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ''
    assert proc.stderr.startswith('<3>api.service failed: killed by the OOM killer (memory limit); restarts 7; '
                                  'recorded in %s\n' % (state / 'api.service.json'))
    assert TOKEN not in proc.stderr
    record = json.loads((state / 'api.service.json').read_text())
    assert (record['result'], record['restarts'], record['invocation_id'], record['count']) == (
        'oom-kill', 7, 'feed', 1)
    assert record['journal_tail'] == ['2026-01-01T00:00:00+0000 web1 kernel: Out of memory']
    assert os.listdir(str(textdir)) == ['prodready_unit_failures_api_service.prom']
    assert [r['path'] for r in server.requests] == ['/bot%s/sendMessage' % TOKEN]
    assert server.requests[0]['body']['chat_id'] == '@ops'
    assert calls.read_text().splitlines()[0].startswith('systemctl show api.service -p Id,Result,')


def test_metrics_temp_file_is_invisible_to_node_exporter(env, monkeypatch):
    renames = []
    real_replace = os.replace

    def recording_replace(src, dst):
        renames.append((os.path.basename(src), os.path.dirname(src), os.path.basename(dst)))
        return real_replace(src, dst)
    monkeypatch.setattr(failure_hook.os, 'replace', recording_replace)
    assert env.run()[0] == 0
    prom = [(src, where) for src, where, dst in renames if dst.endswith('.prom')]
    assert len(prom) == 1
    src, where = prom[0]
    assert where == str(env.textfile) and not src.endswith('.prom') and src.startswith('.')


def test_error_details_never_contain_the_url(env, server):
    # http.client quotes the offending URL path in its error: it must be redacted.
    env.write_config({'webhooks': [{'kind': 'slack', 'url': server.base + '/hooks/se cret'}]})
    code, err = env.run()
    assert code == 0 and server.requests == []
    line = [line for line in err.splitlines() if line.startswith('<4>webhook slack')][0]
    assert 'failed: InvalidURL' in line and '***' in line
    assert 'cret' not in err and 'hooks' not in err


def test_an_unexpected_webhook_error_does_not_stop_the_others(env, server, monkeypatch):
    real_post = failure_hook.post_json

    def flaky_post(opener, url, payload, timeout):
        if url.endswith('/first'):
            raise RuntimeError('unexpected in %s' % url)
        return real_post(opener, url, payload, timeout)
    monkeypatch.setattr(failure_hook, 'post_json', flaky_post)
    env.write_config({'webhooks': [{'kind': 'generic', 'url': server.base + '/first'},
                                   {'kind': 'generic', 'url': server.base + '/second'}]})
    code, err = env.run()
    assert code == 0
    assert [r['path'] for r in server.requests] == ['/second']
    assert 'failed: RuntimeError: unexpected in ***' in err
