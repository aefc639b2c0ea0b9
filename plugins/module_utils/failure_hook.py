# Copyright (c) 2026, prodready.vps contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Failure hook: record and report a failed systemd unit.

The ``hardening`` role installs this file and ``textfile.py`` side by side in
``/usr/local/lib/prodready/`` and runs it from a template unit that every
managed service names in ``OnFailure=``::

    ExecStart=/usr/bin/python3 -I /usr/local/lib/prodready/failure_hook.py \\
        --config /etc/prodready/failure-hook.json %i

For the failed unit (``%i``, e.g. ``api.service``) it

1. collects ``systemctl show`` properties (result, exit code/status, number of
   restarts, invocation ID, timestamps), the tail of the unit's journal and
   the tail of ``/var/log/<svc>/<svc>-error.log`` (the service's stderr, as
   written by the logrotate role) when that file exists;
2. writes the last failure record to ``<state_dir>/<unit>.json`` (with
   ``count``, the number of failures recorded for the unit so far) and
   appends a summary line (the record without the log tails) to
   ``<state_dir>/history.jsonl``, which keeps the last 1000 lines. Files are
   written atomically (temp file, fsync, rename);
3. writes ``prodready_unit_failures_<unit>.prom`` for node_exporter's
   textfile collector (``prodready_unit_failures_total`` and
   ``prodready_unit_last_failure_timestamp_seconds``), when the textfile
   directory exists;
4. logs one ``<3>`` line to stderr (the journal) and POSTs a message to each
   configured webhook (Slack, Telegram or a generic JSON receiver). A failed
   webhook is logged and does not stop the others. URLs are never logged
   (a Telegram URL contains the bot token): only kind, name and host.

Exit status: 0 when the local record was written (even if webhooks failed),
1 when it could not be written, 2 for an invalid unit name or usage error.

Configuration (JSON, root-owned, mode 0600; a missing file means defaults, a
broken file or key is logged and replaced by its default)::

    {
      "hostname": "web1",                                  # default: the host name
      "state_dir": "/var/lib/prodready/failures",
      "textfile_dir": "/var/lib/prometheus/node-exporter",  # null or "": no metrics
      "journal_lines": 20,
      "log_lines": 10,
      "webhooks": [
        {"kind": "slack", "url": "https://hooks.slack.com/services/...", "name": "ops"},
        {"kind": "telegram", "bot_token": "123:ABC", "chat_id": -100123,
         "api_url": "https://api.telegram.org", "timeout": 10},
        {"kind": "generic", "url": "https://alerts.example.com/hook"}
      ]
    }

Payloads: Slack ``{"text": MESSAGE}``; Telegram ``{"chat_id", "text",
"disable_web_page_preview": true}`` to ``<api_url>/bot<token>/sendMessage``;
generic: the full record plus ``"message"``. MESSAGE is plain text (at most
3500 characters): ``[host] unit failed: reason``, ``restarts: N, time: T``
and the last 5 journal and error log lines. Requests never use a proxy and
never follow redirects.

The same file is the unit-tested library and the program installed on hosts.
Standard library only; Python 3.9+.
"""

from __future__ import (absolute_import, division, print_function)  # noqa: UP010, I001 (Ansible boilerplate)
__metaclass__ = type  # noqa: UP001

import argparse
import fcntl
import http.client
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from urllib.parse import urlsplit

try:
    from ansible_collections.prodready.vps.plugins.module_utils import textfile
except ImportError:  # host-side program: the files side by side
    # ``python3 -I`` on Python 3.11+ implies -P: the script's directory is not on sys.path.
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import textfile  # type: ignore[no-redef]  # pylint: disable=wrong-import-position


DEFAULT_CONFIG = '/etc/prodready/failure-hook.json'
DEFAULT_LOG_DIR = '/var/log'
DEFAULTS = {
    'hostname': None,
    'state_dir': '/var/lib/prodready/failures',
    'textfile_dir': '/var/lib/prometheus/node-exporter',
    'journal_lines': 20,
    'log_lines': 10,
    'webhooks': [],
}
MAX_TAIL_LINES = 1000
WEBHOOK_KINDS = ('slack', 'telegram', 'generic')
WEBHOOK_KEYS = ('kind', 'url', 'bot_token', 'chat_id', 'api_url', 'name', 'timeout')
TELEGRAM_API = 'https://api.telegram.org'
DEFAULT_TIMEOUT = 10.0
MAX_TIMEOUT = 120.0

UNIT_NAME = re.compile(r'^[A-Za-z0-9@._:\-]+$')
MAX_UNIT_LENGTH = 256
BOT_TOKEN = re.compile(r'^[A-Za-z0-9:_\-]+$')
SHOW_PROPERTIES = ('Id', 'Result', 'ExecMainCode', 'ExecMainStatus', 'NRestarts', 'ActiveState', 'SubState',
                   'InvocationID', 'ActiveEnterTimestamp', 'InactiveEnterTimestamp')
COMMAND_TIMEOUT = 30

HISTORY_NAME = 'history.jsonl'
HISTORY_KEEP = 1000
LOCK_NAME = '.lock'
TAIL_FIELDS = ('journal_tail', 'log_tail')
FILE_MODE = 0o644
DIR_MODE = 0o755
LOG_READ_BYTES = 65536
MAX_LINE_CHARS = 1000

MESSAGE_LIMIT = 3500
MESSAGE_TAIL_LINES = 5
TRUNCATED_MARK = '\n[truncated]'

# systemd's ExecMainCode: the si_code of the main process' exit (CLD_*).
EXIT_CODES = {1: 'exited', 2: 'killed', 3: 'dumped'}
RESULT_PHRASES = {
    'watchdog': 'watchdog timeout (the service hung)',
    'oom-kill': 'killed by the OOM killer (memory limit)',
    'start-limit-hit': 'restarted too often (start limit hit)',
    'timeout': 'timed out (start, stop or runtime limit)',
    'resources': 'could not set up its resources (user, directories, limits)',
    'protocol': 'broke the service protocol (e.g. no READY=1 or PID file)',
    'exec-condition': 'ExecCondition= check failed',
}
# Results whose phrase does not say how the last run ended: the exit detail is added.
RESULTS_WITH_DETAIL = ('start-limit-hit', 'timeout', 'resources', 'protocol')


# --- logging ---------------------------------------------------------------------

def log(priority, message, stream=None):
    """One stderr line with a journald priority prefix (``<3>`` error ... ``<6>`` info)."""
    stream = sys.stderr if stream is None else stream
    try:
        stream.write('<%d>%s\n' % (priority, message.replace('\n', ' ')))
        stream.flush()
    except (OSError, ValueError):
        pass


def redact(text, secrets):
    """``text`` with every non-empty secret replaced by ``***``."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, '***')
    return text


# --- configuration ---------------------------------------------------------------

def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _http_url(value):
    """True when ``value`` is an http(s) URL with a host name."""
    if not isinstance(value, str):
        return False
    try:
        parts = urlsplit(value)
        port = parts.port  # ValueError for a malformed port
    except ValueError:
        return False
    return parts.scheme in ('http', 'https') and bool(parts.hostname) and (port is None or port > 0)


def _check_setting(key, value):
    """An error text when ``value`` is not valid for ``key``, else None."""
    if key == 'hostname':
        ok = value is None or (isinstance(value, str) and value.strip() != '')
    elif key == 'state_dir':
        ok = isinstance(value, str) and os.path.isabs(value)
    elif key == 'textfile_dir':
        ok = value is None or value == '' or (isinstance(value, str) and os.path.isabs(value))
    elif key in ('journal_lines', 'log_lines'):
        ok = _is_int(value) and 0 <= value <= MAX_TAIL_LINES
    else:
        ok = isinstance(value, list)
    return None if ok else '%s: invalid value %r, using the default %r' % (
        key, value if key != 'webhooks' else type(value).__name__, DEFAULTS[key])


def _webhook_common_error(spec):
    """The error in the keys every webhook has, or None."""
    if not isinstance(spec, dict):
        return 'not a mapping'
    if spec.get('kind') not in WEBHOOK_KINDS:
        return 'kind must be one of %s' % ', '.join(WEBHOOK_KINDS)
    if spec.get('name') is not None and not isinstance(spec['name'], str):
        return 'name must be a string'
    timeout = spec.get('timeout', DEFAULT_TIMEOUT)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= MAX_TIMEOUT:
        return 'timeout must be a number of seconds in (0, %d]' % MAX_TIMEOUT
    return None


def _webhook_target(spec):
    """(the kind's target keys, error text or None)."""
    if spec['kind'] != 'telegram':
        if not _http_url(spec.get('url')):
            return None, 'url must be an http(s) URL'
        return {'url': spec['url']}, None
    api_url = spec.get('api_url') or TELEGRAM_API
    chat_id = spec.get('chat_id')
    if not _http_url(api_url):
        return None, 'api_url must be an http(s) URL'
    if not isinstance(spec.get('bot_token'), str) or not BOT_TOKEN.match(spec['bot_token']):
        return None, 'bot_token is missing or malformed'
    if not (_is_int(chat_id) or (isinstance(chat_id, str) and chat_id.strip())):
        return None, 'chat_id is missing'
    return {'api_url': api_url.rstrip('/'), 'bot_token': spec['bot_token'], 'chat_id': chat_id}, None


def normalize_webhook(spec):
    """Check one webhook dict; return (hook, None), (hook, warning) or (None, error), texts without secrets."""
    error = _webhook_common_error(spec)
    target, error = (None, error) if error else _webhook_target(spec)
    if error:
        return None, error
    hook = {'kind': spec['kind'], 'name': spec.get('name') or '',
            'timeout': float(spec.get('timeout', DEFAULT_TIMEOUT))}
    hook.update(target)
    unknown = sorted(str(k) for k in spec if k not in WEBHOOK_KEYS)
    return hook, ('unknown keys ignored: %s' % ', '.join(unknown)) if unknown else None


def _webhook_problem(index, spec, error):
    kind = spec.get('kind') if isinstance(spec, dict) and isinstance(spec.get('kind'), str) else '?'
    return 'webhooks[%d] (%s): %s' % (index, kind, error)


def normalize_config(raw):
    """Return (config, problems): defaults for every missing or broken part."""
    config = dict(DEFAULTS)
    config['webhooks'] = []
    problems = []
    if not isinstance(raw, dict):
        return config, ['the top level must be a JSON object, using the defaults']
    for key, value in raw.items():
        if key not in DEFAULTS:
            problems.append('unknown key %r ignored' % (key,))
            continue
        error = _check_setting(key, value)
        if error:
            problems.append(error)
        elif key != 'webhooks':
            config[key] = value
    webhooks = raw.get('webhooks')
    for index, spec in enumerate(webhooks if isinstance(webhooks, list) else []):
        hook, error = normalize_webhook(spec)
        if hook is not None:
            config['webhooks'].append(hook)
        if error:
            problems.append(_webhook_problem(index, spec, error) + ('' if hook else ', webhook skipped'))
    if config['textfile_dir'] == '':
        config['textfile_dir'] = None
    return config, problems


def load_config(path):
    """Read and check the config file; (config, problems). A missing file means the defaults."""
    try:
        with open(path, encoding='utf-8') as handle:
            raw = json.load(handle)
    except FileNotFoundError:
        return normalize_config({})
    except (OSError, ValueError) as exc:
        config, problems = normalize_config({})
        return config, ['cannot read %s (%s), using the defaults' % (path, exc)] + problems
    return normalize_config(raw)


# --- facts about the unit --------------------------------------------------------

def valid_unit(unit):
    """True for a plausible systemd unit name (no path, no option look-alike)."""
    return (isinstance(unit, str) and 0 < len(unit) <= MAX_UNIT_LENGTH and bool(UNIT_NAME.match(unit))
            and not unit.startswith(('-', '.')))


def service_name(unit):
    """``api.service`` -> ``api`` (the log directory and file stem)."""
    return unit[:-len('.service')] if unit.endswith('.service') and len(unit) > len('.service') else unit


def run_command(argv):
    """The default runner: (returncode, stdout, stderr); never raises."""
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              timeout=COMMAND_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        return 124, '', '%s timed out after %ds' % (argv[0], COMMAND_TIMEOUT)
    except OSError as exc:
        return 127, '', '%s: %s' % (argv[0], exc)
    return (proc.returncode, proc.stdout.decode('utf-8', 'replace'), proc.stderr.decode('utf-8', 'replace'))


def parse_show(text):
    """``KEY=VALUE`` lines of ``systemctl show`` as a dict."""
    props = {}
    for line in text.splitlines():
        key, sep, value = line.partition('=')
        if sep and key:
            props[key.strip()] = value.strip()
    return props


def to_int(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _clip(line):
    return line if len(line) <= MAX_LINE_CHARS else line[:MAX_LINE_CHARS] + '...'


def unit_properties(runner, unit):
    """(properties, error text or None) from ``systemctl show``."""
    argv = ['systemctl', 'show', unit, '-p', ','.join(SHOW_PROPERTIES), '--no-pager']
    returncode, out, err = runner(argv)
    if returncode != 0:
        return parse_show(out), 'systemctl show failed (%d): %s' % (returncode, err.strip()[:200])
    return parse_show(out), None


def journal_tail(runner, unit, lines):
    """The last ``lines`` journal lines of the unit (no ``-- ... --`` markers)."""
    if lines <= 0:
        return [], None
    returncode, out, err = runner(['journalctl', '-u', unit, '-n', str(lines), '-o', 'short-iso', '--no-pager'])
    tail = [_clip(line) for line in out.splitlines()
            if line.strip() and not (line.startswith('-- ') and line.endswith(' --'))]
    error = None if returncode == 0 else 'journalctl failed (%d): %s' % (returncode, err.strip()[:200])
    return tail[-lines:], error


def error_log_path(log_dir, unit):
    svc = service_name(unit)
    return os.path.join(log_dir, svc, svc + '-error.log')


def _open_error_log(log_dir, unit):
    """A read fd on the error log, refusing symlinks (root reads a service-writable dir)."""
    svc = service_name(unit)
    dir_fd = os.open(os.path.join(log_dir, svc), os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        return os.open(svc + '-error.log', os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)


def read_log_tail(log_dir, unit, lines):
    """(last ``lines`` lines of the unit's error log or [], error text or None)."""
    if lines <= 0:
        return [], None
    try:
        fd = _open_error_log(log_dir, unit)
    except FileNotFoundError:
        return [], None
    except OSError as exc:
        return [], 'cannot open %s: %s' % (error_log_path(log_dir, unit), exc.strerror or exc)
    with os.fdopen(fd, 'rb') as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
            return [], '%s is not a plain file, not read' % error_log_path(log_dir, unit)
        start = max(0, info.st_size - LOG_READ_BYTES)
        handle.seek(start)
        data = handle.read(LOG_READ_BYTES)
    text_lines = data.decode('utf-8', 'replace').splitlines()
    if start > 0 and text_lines:
        text_lines = text_lines[1:]  # the first one is cut
    return [_clip(line) for line in text_lines if line.strip()][-lines:], None


# --- the failure record ----------------------------------------------------------

def signal_name(number):
    if number is None:
        return 'an unknown signal'
    try:
        return signal.Signals(number).name
    except ValueError:
        return 'signal %d' % number


def exit_detail(code, status):
    """How the main process ended, from ExecMainCode/ExecMainStatus; None when it did not fail."""
    if code == 1 and status:
        return 'main process exited with status %d' % status
    if code == 2:
        return 'killed by signal %s' % signal_name(status)
    if code == 3:
        return 'dumped core on signal %s' % signal_name(status)
    return None


def describe_failure(props):
    """A short human-readable reason from ``systemctl show`` properties."""
    result = props.get('Result', '')
    code, status = to_int(props.get('ExecMainCode')), to_int(props.get('ExecMainStatus'))
    detail = exit_detail(code, status)
    if result == 'exit-code':
        return detail or 'main process exited with a non-zero status'
    if result == 'signal':
        return 'killed by signal %s' % signal_name(status if code in (2, 3) else None)
    if result == 'core-dump':
        return 'dumped core on signal %s' % signal_name(status if code in (2, 3) else None)
    if result in RESULT_PHRASES:
        phrase = RESULT_PHRASES[result]
        return '%s, last run: %s' % (phrase, detail) if detail and result in RESULTS_WITH_DETAIL else phrase
    if result in ('', 'success'):
        return detail or 'failed (no error result reported by systemd)'
    return 'failed (result %s)' % result + (', last run: %s' % detail if detail else '')


def iso_time(timestamp):
    return time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(timestamp))


def build_record(unit, host, timestamp, props, journal, log_lines):
    """The failure record (``count`` is filled in by the caller)."""
    code, status = to_int(props.get('ExecMainCode')), to_int(props.get('ExecMainStatus'))
    return {
        'unit': unit,
        'host': host,
        'time': iso_time(timestamp),
        'timestamp': timestamp,
        'result': props.get('Result') or None,
        'reason': describe_failure(props),
        'exit_code': EXIT_CODES.get(code),
        'exit_status': status,
        'signal': signal_name(status) if code in (2, 3) else None,
        'restarts': to_int(props.get('NRestarts')),
        'invocation_id': props.get('InvocationID') or None,
        'active_state': props.get('ActiveState') or None,
        'sub_state': props.get('SubState') or None,
        'active_enter_timestamp': props.get('ActiveEnterTimestamp') or None,
        'inactive_enter_timestamp': props.get('InactiveEnterTimestamp') or None,
        'journal_tail': journal,
        'log_tail': log_lines,
        'count': None,
    }


# --- files -----------------------------------------------------------------------

def ensure_dir(path, mode=DIR_MODE):
    """Create ``path`` and missing parents with ``mode`` (existing ones are left alone)."""
    missing = []
    current = os.path.abspath(path)
    while not os.path.isdir(current):
        missing.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    for directory in reversed(missing):
        os.mkdir(directory, mode)
        os.chmod(directory, mode)


def fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path, text, mode=FILE_MODE):
    """Write ``text`` to ``path`` via a hidden ``.tmp`` file in the same directory, fsync and rename."""
    directory = os.path.dirname(path) or '.'
    fd, tmp = tempfile.mkstemp(prefix='.%s.' % os.path.basename(path), suffix='.tmp', dir=directory)
    try:
        with os.fdopen(fd, 'w', encoding='utf-8') as handle:
            handle.write(text)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(directory)


class StateStore:
    """``<state_dir>/<unit>.json`` (last failure) and ``history.jsonl`` (last 1000 summaries)."""

    def __init__(self, state_dir):
        self.state_dir = state_dir

    def state_path(self, unit):
        return os.path.join(self.state_dir, unit + '.json')

    def previous_count(self, unit):
        """The count of the last record, 0 when there is none or it cannot be read."""
        try:
            with open(self.state_path(unit), encoding='utf-8') as handle:
                count = json.load(handle).get('count')
        except (OSError, ValueError, AttributeError):
            return 0
        return count if _is_int(count) and count > 0 else 0

    def save(self, record):
        """Write the state file and the history line; raises OSError."""
        ensure_dir(self.state_dir)
        with open(os.path.join(self.state_dir, LOCK_NAME), 'a', encoding='utf-8') as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            write_atomic(self.state_path(record['unit']), json.dumps(record, indent=2, sort_keys=True) + '\n')
            summary = dict((k, v) for k, v in record.items() if k not in TAIL_FIELDS)
            self.append_history(json.dumps(summary, sort_keys=True))
        return self.state_path(record['unit'])

    def append_history(self, line):
        path = os.path.join(self.state_dir, HISTORY_NAME)
        try:
            with open(path, encoding='utf-8', errors='replace') as handle:
                lines = [old.rstrip('\n') for old in handle if old.strip()]
        except FileNotFoundError:
            lines = []
        lines.append(line)
        write_atomic(path, ''.join(entry + '\n' for entry in lines[-HISTORY_KEEP:]))


# --- metrics ---------------------------------------------------------------------

def metrics_filename(unit):
    return 'prodready_unit_failures_%s.prom' % re.sub(r'[^a-zA-Z0-9_]', '_', unit)


def metrics_text(record):
    labels = {'unit': record['unit']}
    return textfile.render([
        {'name': 'prodready_unit_failures_total', 'type': 'counter', 'value': record['count'], 'labels': labels,
         'help': 'Failures of the systemd unit recorded by the prodready failure hook.'},
        {'name': 'prodready_unit_last_failure_timestamp_seconds', 'type': 'gauge', 'value': record['timestamp'],
         'labels': labels, 'help': 'Unix time of the last recorded failure of the systemd unit.'},
    ])


def write_metrics(textfile_dir, record):
    """Write the unit's ``.prom`` file; returns its path, or None when the directory does not exist."""
    if not textfile_dir or not os.path.isdir(textfile_dir):
        return None
    path = os.path.join(textfile_dir, metrics_filename(record['unit']))
    write_atomic(path, metrics_text(record))
    return path


# --- message and webhooks --------------------------------------------------------

def truncate(text, limit=MESSAGE_LIMIT):
    if len(text) <= limit:
        return text
    return text[:limit - len(TRUNCATED_MARK)] + TRUNCATED_MARK


def format_message(record, limit=MESSAGE_LIMIT):
    """The plain-text notification, at most ``limit`` characters."""
    restarts = record.get('restarts')
    lines = ['[%s] %s failed: %s' % (record['host'], record['unit'], record['reason']),
             'restarts: %s, time: %s' % ('?' if restarts is None else restarts, record['time'])]
    for title, field in (('journal:', 'journal_tail'), ('error log:', 'log_tail')):
        tail = (record.get(field) or [])[-MESSAGE_TAIL_LINES:]
        if tail:
            lines.append(title)
            lines.extend(tail)
    return truncate('\n'.join(lines), limit)


class Webhook:
    """One configured webhook (a dict from :func:`normalize_webhook`)."""

    def __init__(self, spec):
        self.spec = spec
        self.kind = spec['kind']

    def target(self):
        if self.kind == 'telegram':
            return '%s/bot%s/sendMessage' % (self.spec['api_url'], self.spec['bot_token'])
        return self.spec['url']

    def label(self):
        """kind, name and host only: never the path or query (secrets live there)."""
        try:
            parts = urlsplit(self.target())
            host = parts.hostname or '?'
            host = '%s:%d' % (host, parts.port) if parts.port else host
        except ValueError:
            host = '?'
        name = ' "%s"' % self.spec['name'] if self.spec.get('name') else ''
        return '%s%s (%s)' % (self.kind, name, host)

    def secrets(self):
        """Texts that must not be logged: the URLs, their path and query parts, the bot token."""
        found = [self.spec.get('bot_token')]
        for url in (self.target(), self.spec.get('url')):
            if url:
                parts = urlsplit(url)
                path_query = parts.path + ('?' + parts.query if parts.query else '')
                found.extend([url, path_query, parts.path, parts.query, parts.fragment])
        return [text for text in found if text and len(text) > 1]

    def payload(self, record, message):
        if self.kind == 'slack':
            return {'text': message}
        if self.kind == 'telegram':
            return {'chat_id': self.spec['chat_id'], 'text': message, 'disable_web_page_preview': True}
        body = dict(record)
        body['message'] = message
        return body


class NoRedirectHandler(urllib.request.HTTPRedirectHandler):
    """A redirect is reported as an HTTP error instead of re-sending the payload elsewhere."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


def build_opener():
    """An opener that ignores proxy settings from the environment and follows no redirect."""
    return urllib.request.build_opener(urllib.request.ProxyHandler({}), NoRedirectHandler())


def post_json(opener, url, payload, timeout):
    """POST ``payload`` as JSON; (ok, detail). Never raises for network or HTTP errors."""
    request = urllib.request.Request(url, data=json.dumps(payload).encode('utf-8'), method='POST',
                                     headers={'Content-Type': 'application/json',
                                              'User-Agent': 'prodready-failure-hook'})
    try:
        with opener.open(request, timeout=timeout) as response:
            status = response.status
            response.read(65536)
    except urllib.error.HTTPError as exc:
        exc.close()
        return False, 'HTTP %d' % exc.code
    except urllib.error.URLError as exc:
        return False, str(exc.reason)
    except (OSError, ValueError, http.client.HTTPException) as exc:
        return False, '%s: %s' % (type(exc).__name__, exc)
    return 200 <= status < 300, 'HTTP %d' % status


def notify(webhooks, record, message, opener, stream=None):
    """Send to every webhook, log each result; returns the number of failures."""
    failures = 0
    for hook in webhooks:
        try:
            ok, detail = post_json(opener, hook.target(), hook.payload(record, message), hook.spec['timeout'])
        except Exception as exc:  # pylint: disable=broad-except  # one broken hook must not stop the others
            ok, detail = False, '%s: %s' % (type(exc).__name__, exc)
        detail = redact(detail, hook.secrets())
        if ok:
            log(6, 'webhook %s: sent (%s)' % (hook.label(), detail), stream)
        else:
            failures += 1
            log(4, 'webhook %s: failed: %s' % (hook.label(), detail), stream)
    return failures


# --- the program -----------------------------------------------------------------

class FailureHook:
    """Collect, record and report one unit failure."""

    def __init__(self, config, runner=run_command, clock=time.time, opener=None, log_dir=DEFAULT_LOG_DIR,
                 stream=None):
        self.config = config
        self.runner = runner
        self.clock = clock
        self.opener = opener if opener is not None else build_opener()
        self.log_dir = log_dir
        self.stream = stream

    def log(self, priority, message):
        log(priority, message, self.stream)

    def collect(self, unit):
        props, error = unit_properties(self.runner, unit)
        if error:
            self.log(4, '%s: %s' % (unit, error))
        journal, error = journal_tail(self.runner, unit, self.config['journal_lines'])
        if error:
            self.log(4, '%s: %s' % (unit, error))
        log_lines, error = read_log_tail(self.log_dir, unit, self.config['log_lines'])
        if error:
            self.log(4, '%s: %s' % (unit, error))
        host = self.config['hostname'] or socket.gethostname()
        return build_record(unit, host, self.clock(), props, journal, log_lines)

    def record(self, record):
        """Write the state; returns (path, None) or (None, error text)."""
        store = StateStore(self.config['state_dir'])
        record['count'] = store.previous_count(record['unit']) + 1
        try:
            return store.save(record), None
        except OSError as exc:
            return None, 'cannot write the failure record in %s: %s' % (self.config['state_dir'], exc)

    def export_metrics(self, record):
        try:
            path = write_metrics(self.config['textfile_dir'], record)
        except (OSError, textfile.MetricError) as exc:
            self.log(4, 'cannot write the metrics in %s: %s' % (self.config['textfile_dir'], exc))
            return
        if path is None and self.config['textfile_dir']:
            self.log(5, 'textfile directory %s does not exist, no metrics written' % self.config['textfile_dir'])

    def run(self, unit):
        record = self.collect(unit)
        path, error = self.record(record)
        self.export_metrics(record)
        summary = '%s failed: %s; restarts %s' % (
            unit, record['reason'], '?' if record['restarts'] is None else record['restarts'])
        if path:
            self.log(3, '%s; recorded in %s' % (summary, path))
        else:
            self.log(3, '%s; NOT recorded: %s' % (summary, error))
        hooks = [Webhook(spec) for spec in self.config['webhooks']]
        notify(hooks, record, format_message(record), self.opener, self.stream)
        return 0 if path else 1


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog='failure_hook.py',
        description='Record a failed systemd unit (state file, history, metrics) and notify webhooks.')
    parser.add_argument('--config', default=DEFAULT_CONFIG, help='JSON config file (default: %(default)s)')
    parser.add_argument('--state-dir', help='override the config state_dir')
    parser.add_argument('--textfile-dir', help='override the config textfile_dir ("" for no metrics)')
    parser.add_argument('--log-dir', default=DEFAULT_LOG_DIR, help='root of the services\' log dirs')
    parser.add_argument('unit', help='the failed unit, e.g. api.service')
    return parser.parse_args(argv)


def apply_overrides(config, args):
    if args.state_dir is not None:
        config['state_dir'] = args.state_dir
    if args.textfile_dir is not None:
        config['textfile_dir'] = args.textfile_dir or None
    return config


def run_main(argv, runner=run_command, opener=None, clock=time.time, stream=None):
    try:
        args = parse_args(argv)
    except SystemExit as exc:  # argparse has printed the message
        return exc.code if isinstance(exc.code, int) else 2
    if not valid_unit(args.unit):
        log(3, 'invalid unit name %r: expected letters, digits and @._:- only' % (args.unit[:300],), stream)
        return 2
    config, problems = load_config(args.config)
    for problem in problems:
        log(4, 'config %s: %s' % (args.config, problem), stream)
    hook = FailureHook(apply_overrides(config, args), runner=runner, clock=clock, opener=opener,
                       log_dir=args.log_dir, stream=stream)
    return hook.run(args.unit)


def main(argv=None, runner=run_command, opener=None, clock=time.time, stream=None):
    """The program; returns the exit status (0 recorded, 1 not recorded, 2 usage)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        return run_main(argv, runner=runner, opener=opener, clock=clock, stream=stream)
    except Exception as exc:  # pylint: disable=broad-except  # last resort: always leave a message
        log(3, 'failure hook crashed: %s: %s' % (type(exc).__name__, exc), stream)
        return 1


if __name__ == '__main__':
    raise SystemExit(main())
