# Copyright (c) 2026, prodready.vps contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Production readiness checks of one host (seed 004's ``nself checklist``).

Plain Python (standard library only), no Ansible import: the
``prod_checklist`` module runs it on the managed host, and the unit tests run
it against fakes.

Every check is a small function ``check_<name>(ctx)`` that returns one result::

    {'name': 'firewall', 'title': 'firewall', 'status': 'FAIL',
     'reason': 'table inet prodready is not loaded: every port is open',
     'details': [...],                      # one line per finding when there are several
     'findings': [{'status', 'message', 'fix', 'roles', 'tags', 'units'}],
     'fix': 'ansible-playbook site.yml --tags hardening_firewall',
     'fix_roles': ['hardening'],            # roles of this collection that repair it
     'fix_tags': ['hardening_firewall'],    # the part of the role, for a manual run
     'fix_units': []}                       # units to start afterwards (a backup now...)

Statuses: ``PASS``, ``WARN``, ``FAIL``, and ``SKIP`` for checks that do not
apply to the host (no nginx, no database), always with the reason.

The checks only read: files, ``systemctl show``/``cat``, ``nft list``,
``openssl x509``, ``systemd-analyze security`` and HTTP GETs to loopback
endpoints. All of that goes through :class:`HostIO`, which the tests replace.
Secret values read from environment files are never part of a result: only
file and variable names are.
"""

from __future__ import (absolute_import, division, print_function)  # noqa: UP010, I001 (Ansible boilerplate)
__metaclass__ = type  # noqa: UP001

import calendar
import glob
import json
import os
import re
import shutil
import socket
import ssl
import stat
import subprocess
import time

try:  # Python 3
    from urllib import error as urlerror
    from urllib import parse as urlparse
    from urllib import request as urlrequest
except ImportError:  # pragma: no cover - Python 2 is not supported on hosts
    urlerror = urlparse = urlrequest = None

PASS = 'PASS'
WARN = 'WARN'
FAIL = 'FAIL'
SKIP = 'SKIP'
STATUSES = (PASS, WARN, FAIL, SKIP)
_RANK = {PASS: 0, SKIP: 0, WARN: 1, FAIL: 2}

# Roles of this collection in the order site.yml runs them (fixes run in this order).
ROLE_ORDER = ('hardening', 'logrotate', 'pgbouncer', 'backup', 'monitoring', 'console')
NAME_RE = re.compile(r'\A[a-z][a-z0-9_-]{0,63}\Z')
UNIT_RE = re.compile(r'\A[A-Za-z0-9:_.@\\-]+\Z')
SYSTEMD_UNSET = ('', '[not set]', 'infinity', '18446744073709551615')
DAY = 86400.0
HOUR = 3600.0

DEFAULT_SECRET_PATHS = [
    '/etc/prodready/failure-hook.json',
    '/etc/prodready/backup/offsite_ed25519',
    '/etc/pgbouncer/userlist.txt',
    '/etc/prometheus/alertmanager-secrets/*',
    '/etc/ssl/private/*.key',
    '/etc/ssl/private/*.pem',
]
DEFAULT_DAEMONS = [
    'pgbouncer', 'prometheus', 'prometheus-alertmanager', 'prometheus-node-exporter',
    'prometheus-postgres-exporter', 'prometheus-blackbox-exporter', 'prometheus-redis-exporter',
    'prometheus-pgbouncer-exporter',
]
# Values that are placeholders or well-known defaults, compared in lower case.
DEFAULT_WEAK_PASSWORDS = [
    'changeme', 'change-me', 'change_me', 'password', 'passw0rd', 'p@ssw0rd', 'secret', 'admin', 'administrator',
    'default', 'postgres', 'root', 'toor', 'test', 'testing', 'example', 'demo', 'guest', 'letmein', 'qwerty',
    '123456', '1234567', '12345678', '123456789', 'xxx', 'xxxx', 'todo', 'fixme', 'none', 'null', 'undefined',
    'hasura', 'mysecret', 'supersecret', 'secretkey', 'your-secret-key', 'your_secret_key',
]
# Fragments that mark a placeholder wherever they appear in a value.
PLACEHOLDER_FRAGMENTS = ('changeme', 'change-me', 'change_me', 'replace-me', 'replaceme', 'your-password',
                         'your_password', 'insert-', '<password>', '{{')
SECRET_KEY_RE = re.compile(r'(PASSW(OR)?D|(^|_)PASS($|_)|PASSPHRASE|SECRET|TOKEN|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY'
                           r'|(^|_)KEY$|CREDENTIALS?|(^|_)AUTH($|_))', re.IGNORECASE)
URL_CREDENTIALS_RE = re.compile(r'\A[a-zA-Z][a-zA-Z0-9+.-]*://[^/@:\s]*:([^@/\s]*)@')
DB_URL_RE = re.compile(r'\A(postgres|postgresql)(\+[a-z0-9]+)?://', re.IGNORECASE)
MIN_SECRET_LENGTH = 12

DEFAULTS = {
    'checks': None,                      # None: all
    'services': [],
    'daemons': list(DEFAULT_DAEMONS),
    'tls_certificates': [],
    'tls_warn_days': 30,
    'tls_fail_days': 7,
    'backup_config_dir': '/etc/prodready/backup',
    'backup_warn_hours': 26.0,
    'backup_fail_hours': 48.0,
    'restore_test_jobs': ['daily'],
    'restore_test_max_age_days': 8.0,
    'prometheus_url': 'http://127.0.0.1:9090',
    'alertmanager_url': 'http://127.0.0.1:9093',
    'node_exporter_url': 'http://127.0.0.1:9100',
    'secret_paths': list(DEFAULT_SECRET_PATHS),
    'secret_max_age_days': 90,
    'weak_passwords': list(DEFAULT_WEAK_PASSWORDS),
    'firewall_table': 'prodready',
    'health_timeout': 5.0,
    'pgbouncer_ini': '/etc/pgbouncer/pgbouncer.ini',
    'postgresql_max_connections': 100,
    'postgresql_reserved_connections': 8,
    'header_urls': ['http://127.0.0.1/'],
    'exposure_target': 2.0,
    'exposure_daemon_target': 2.5,
    'exposure_fail': 7.0,
    'min_nofile': 4096,
    'http_timeout': 5.0,
}


class ChecklistError(ValueError):
    """Invalid settings; the message names the setting."""


class HttpError(Exception):
    """No HTTP answer at all (connection refused, timeout, bad URL)."""


# ---------------------------------------------------------------------------
# Host access (the tests replace this class)


class _NoRedirect(urlrequest.HTTPRedirectHandler if urlrequest else object):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # pylint: disable=too-many-arguments
        return None


class HostIO:
    """Everything the checks read from the host. ``runner(argv) -> (rc, stdout, stderr)``."""

    SEARCH_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'

    def __init__(self, runner=None, clock=time.time):
        self._runner = runner or self._subprocess_runner
        self._clock = clock

    @staticmethod
    def _subprocess_runner(argv):
        env = dict(os.environ, LC_ALL='C', SYSTEMD_COLORS='0', SYSTEMD_PAGER='')
        try:
            done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, timeout=120,
                                  check=False)
        except OSError as exc:
            return 127, '', str(exc)
        except subprocess.TimeoutExpired:
            return 124, '', '%s timed out after 120 s' % argv[0]
        return (done.returncode, done.stdout.decode('utf-8', 'replace'), done.stderr.decode('utf-8', 'replace'))

    def which(self, program):
        if '/' in program:
            return program if os.access(program, os.X_OK) else None
        return shutil.which(program, path=os.environ.get('PATH', '') + ':' + self.SEARCH_PATH)

    def run(self, argv):
        path = self.which(argv[0])
        if path is None:
            return 127, '', '%s: command not found' % argv[0]
        return self._runner([path] + list(argv[1:]))

    def now(self):
        return self._clock()

    @staticmethod
    def read(path):
        with open(path, 'rb') as handle:
            return handle.read().decode('utf-8', 'replace')

    @staticmethod
    def stat(path):
        try:
            return os.stat(path)
        except OSError:
            return None

    @staticmethod
    def glob(pattern):
        return sorted(glob.glob(pattern))

    @staticmethod
    def http_get(url, timeout, follow=False):
        """GET ``url``; return ``(status, headers (lower-case names), body)``; raise HttpError without an answer."""
        handlers = [urlrequest.ProxyHandler({})]
        if not follow:
            handlers.append(_NoRedirect())
        if url.startswith('https:'):
            context = ssl.create_default_context()
            if urlparse.urlsplit(url).hostname in ('127.0.0.1', 'localhost', '::1'):
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE  # a local endpoint by address: only its headers matter
            handlers.append(urlrequest.HTTPSHandler(context=context))
        opener = urlrequest.build_opener(*handlers)
        try:
            response = opener.open(urlrequest.Request(url, headers={'User-Agent': 'prodready-checklist'}),
                                   timeout=timeout)
            status, headers, body = response.status, response.headers, response.read(4 * 1024 * 1024)
        except urlerror.HTTPError as exc:  # an answer, only not 2xx
            status, headers, body = exc.code, exc.headers, exc.read(64 * 1024) if exc.fp else b''
        except (urlerror.URLError, socket.timeout, OSError, ValueError) as exc:
            raise HttpError(_describe_url_error(exc))
        names = dict((k.lower(), v) for k, v in (headers.items() if headers else []))
        return status, names, body.decode('utf-8', 'replace')


def _describe_url_error(exc):
    reason = getattr(exc, 'reason', None) or exc
    if isinstance(reason, socket.timeout) or 'timed out' in str(reason):
        return 'no answer (timeout)'
    if isinstance(reason, ConnectionRefusedError) or 'refused' in str(reason):
        return 'connection refused'
    return str(reason)


# ---------------------------------------------------------------------------
# Settings


def _number(settings, key, minimum=0):
    value = settings[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise ChecklistError('%s must be a number, got %r' % (key, settings[key]))
    if value < minimum:
        raise ChecklistError('%s must be at least %s, got %r' % (key, minimum, value))
    return value


def normalize_services(services):
    """The shared service list (prodready_services) reduced to what the checks read."""
    if services is None:
        return []
    if not isinstance(services, list):
        raise ChecklistError('services must be a list of services (prodready_services), got %s'
                             % type(services).__name__)
    out = []
    for index, item in enumerate(services):
        if isinstance(item, str):
            item = {'name': item}
        if not isinstance(item, dict) or not isinstance(item.get('name'), str) or not NAME_RE.match(item['name']):
            raise ChecklistError('services[%d]: every service needs a name matching [a-z][a-z0-9_-]*, got %r'
                                 % (index, item.get('name') if isinstance(item, dict) else item))
        name = item['name']
        port = item.get('listen_port')
        health = item.get('health_url')
        if health is None and port not in (None, ''):
            health = 'http://127.0.0.1:%s/health' % port
        unit = item.get('unit') or name + '.service'
        if not UNIT_RE.match(unit):
            raise ChecklistError('services[%d]: unit %r is not a unit name' % (index, unit))
        out.append({
            'name': name,
            'unit': unit,
            'managed': bool(item.get('command')),
            'enabled': _truthy(item.get('enabled', True)),
            'environment_file': item.get('environment_file') or '/etc/prodready/%s.env' % name,
            'health_url': health or None,
            'log_dir': item.get('log_dir') or '/var/log/%s' % name,
        })
    names = [s['name'] for s in out]
    dupes = sorted(set(n for n in names if names.count(n) > 1))
    if dupes:
        raise ChecklistError('services: %s listed twice' % ', '.join(dupes))
    return out


def _truthy(value):
    if isinstance(value, str):
        return value.strip().lower() in ('1', 'yes', 'true', 'on', 'y')
    return bool(value)


def normalize_certificates(items):
    out = []
    for index, item in enumerate(items or []):
        if isinstance(item, str):
            item = {'path': item}
        if not isinstance(item, dict) or not isinstance(item.get('path'), str) or not item['path'].startswith('/'):
            raise ChecklistError('tls_certificates[%d]: give an absolute path to a PEM certificate, got %r'
                                 % (index, item))
        key = item.get('key') or None
        if key is not None and (not isinstance(key, str) or not key.startswith('/')):
            raise ChecklistError('tls_certificates[%d]: key must be an absolute path, got %r' % (index, key))
        out.append({'path': item['path'], 'key': key, 'name': item.get('name') or item['path']})
    return out


def normalize_settings(settings=None):
    """Fill in the defaults and check the types; raise ChecklistError naming the bad setting."""
    merged = dict(DEFAULTS)
    for key, value in (settings or {}).items():
        if key not in DEFAULTS:
            raise ChecklistError('unknown setting %r; known: %s' % (key, ', '.join(sorted(DEFAULTS))))
        if value is not None:
            merged[key] = value
    if merged['checks'] is not None:
        unknown = [c for c in merged['checks'] if c not in CHECK_NAMES]
        if unknown:
            raise ChecklistError('unknown check(s) %s; known: %s' % (', '.join(map(str, unknown)), ', '.join(CHECK_NAMES)))
    merged['services'] = normalize_services(merged['services'])
    merged['tls_certificates'] = normalize_certificates(merged['tls_certificates'])
    for key in ('tls_warn_days', 'tls_fail_days', 'backup_warn_hours', 'backup_fail_hours', 'restore_test_max_age_days',
                'secret_max_age_days', 'health_timeout', 'postgresql_max_connections',
                'postgresql_reserved_connections', 'exposure_target', 'exposure_daemon_target', 'exposure_fail',
                'min_nofile', 'http_timeout'):
        merged[key] = _number(merged, key)
    if merged['tls_fail_days'] > merged['tls_warn_days']:
        raise ChecklistError('tls_fail_days (%s) must not exceed tls_warn_days (%s)'
                             % (merged['tls_fail_days'], merged['tls_warn_days']))
    if merged['backup_fail_hours'] < merged['backup_warn_hours']:
        raise ChecklistError('backup_fail_hours (%s) must not be below backup_warn_hours (%s)'
                             % (merged['backup_fail_hours'], merged['backup_warn_hours']))
    for key in ('daemons', 'secret_paths', 'weak_passwords', 'header_urls', 'restore_test_jobs'):
        if not isinstance(merged[key], list) or not all(isinstance(v, str) for v in merged[key]):
            raise ChecklistError('%s must be a list of strings' % key)
    for key in ('prometheus_url', 'alertmanager_url', 'node_exporter_url'):
        if not re.match(r'\Ahttps?://', str(merged[key])):
            raise ChecklistError('%s must be an http(s) URL, got %r' % (key, merged[key]))
        merged[key] = str(merged[key]).rstrip('/')
    if not re.match(r'\A[A-Za-z0-9_-]+\Z', str(merged['firewall_table'])):
        raise ChecklistError('firewall_table %r is not an nftables table name' % merged['firewall_table'])
    merged['weak_passwords'] = [w.lower() for w in merged['weak_passwords']]
    return merged


# ---------------------------------------------------------------------------
# Results


class Findings:
    """What one check found; ``result()`` turns it into the check's result."""

    def __init__(self, name):
        self.name = name
        self.items = []
        self.notes = []

    def add(self, status, message, fix='', roles=(), tags=(), units=()):
        self.items.append({'status': status, 'message': message, 'fix': fix, 'roles': list(roles),
                           'tags': list(tags), 'units': list(units)})

    def note(self, text):
        """What was found fine (the PASS reason)."""
        self.notes.append(text)

    def result(self, empty_reason='nothing to check'):
        return make_result(self.name, self.items, '; '.join(self.notes) or empty_reason)


def _unique(values):
    out = []
    for value in values:
        if value and value not in out:
            out.append(value)
    return out


def make_result(name, findings, pass_reason):
    title = CHECK_TITLES[name]
    problems = [f for f in findings if f['status'] in (WARN, FAIL)]
    if not problems:
        return {'name': name, 'title': title, 'status': PASS, 'reason': pass_reason, 'details': [],
                'findings': [], 'fix': '', 'fix_roles': [], 'fix_tags': [], 'fix_units': []}
    problems.sort(key=lambda f: -_RANK[f['status']])  # stable: worst first, then in the order found
    status = problems[0]['status']
    reason = problems[0]['message']
    if len(problems) > 1:
        reason = '%d problems found' % len(problems)
    roles = _unique(r for f in problems for r in f['roles'])
    roles.sort(key=lambda r: ROLE_ORDER.index(r) if r in ROLE_ORDER else len(ROLE_ORDER))
    return {
        'name': name, 'title': title, 'status': status, 'reason': reason,
        'details': ['%s: %s' % (f['status'], f['message']) for f in problems] if len(problems) > 1 else [],
        'findings': problems,
        'fix': '; '.join(_unique(f['fix'] for f in problems)),
        'fix_roles': roles,
        'fix_tags': _unique(t for f in problems for t in f['tags']),
        'fix_units': _unique(u for f in problems for u in f['units']),
    }


def skip(name, reason):
    return {'name': name, 'title': CHECK_TITLES[name], 'status': SKIP, 'reason': reason, 'details': [],
            'findings': [], 'fix': '', 'fix_roles': [], 'fix_tags': [], 'fix_units': []}


def site_fix(*tags):
    return 'ansible-playbook site.yml --tags %s' % ','.join(tags)


# ---------------------------------------------------------------------------
# Small parsers (pure, unit-tested)


def parse_systemctl_show(text):
    """``systemctl show`` output of one or more units (blocks split by blank lines) -> {Id: {prop: value}}."""
    units = {}
    for block in re.split(r'\n\s*\n', text.strip()):
        props = {}
        for line in block.splitlines():
            key, sep, value = line.partition('=')
            if sep:
                props[key.strip()] = value.strip()
        if props.get('Id'):
            units[props['Id']] = props
    return units


def parse_systemctl_cat(text):
    """``systemctl cat`` output -> {unit name: text of the unit file and its drop-ins}."""
    units = {}
    current = None
    for line in text.splitlines():
        match = re.match(r'\A# (/\S+)\s*\Z', line)
        if match:
            path = match.group(1)
            parent = os.path.basename(os.path.dirname(path))
            current = parent[:-2] if parent.endswith('.d') else os.path.basename(path)
            units.setdefault(current, '')
            continue
        if current is not None:
            units[current] += line + '\n'
    return units


def unit_directives(text):
    """Directive names set (not commented) in a unit's text."""
    names = set()
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(('#', ';', '[')):
            continue
        key, sep, value = line.partition('=')
        if sep and value.strip():
            names.add(key.strip())
    return names


def parse_timespan_seconds(value):
    """systemd time span as printed by ``systemctl show`` ('1.500000s', '500ms', '1min 30s') -> seconds."""
    if value in SYSTEMD_UNSET:
        return None
    units = {'us': 1e-6, 'usec': 1e-6, 'ms': 1e-3, 'msec': 1e-3, 's': 1.0, 'sec': 1.0, 'min': 60.0, 'h': 3600.0,
             'd': 86400.0}
    total = 0.0
    found = False
    for number, unit in re.findall(r'([\d.]+)\s*([a-z]*)', value):
        try:
            total += float(number) * units.get(unit or 's', 1.0)
            found = True
        except ValueError:
            return None
    return total if found else None


def format_bytes(value):
    value = float(value)
    for unit in ('B', 'K', 'M', 'G', 'T'):
        if abs(value) < 1024 or unit == 'T':
            return ('%d%s' % (value, unit)) if unit == 'B' or value == int(value) else ('%.1f%s' % (value, unit))
        value /= 1024.0
    return str(value)  # pragma: no cover


def format_age(seconds):
    seconds = max(0, float(seconds))
    if seconds < 120:
        return '%d s' % seconds
    if seconds < 2 * HOUR:
        return '%d min' % (seconds // 60)
    if seconds < 2 * DAY:
        return '%.1f h' % (seconds / HOUR)
    return '%.1f days' % (seconds / DAY)


_MONTHS = dict((m, i + 1) for i, m in enumerate(('Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct',
                                                 'Nov', 'Dec')))


def parse_openssl_date(text):
    """'Jan  5 12:00:00 2027 GMT' (openssl x509 -enddate) -> epoch seconds; None when unparseable."""
    match = re.match(r'\A\s*([A-Z][a-z]{2})\s+(\d{1,2})\s+(\d\d):(\d\d):(\d\d)(?:\.\d+)?\s+(\d{4})\s*(GMT|UTC)?\s*\Z',
                     text or '')
    if not match or match.group(1) not in _MONTHS:
        return None
    mon, day, hh, mm, ss, year = (_MONTHS[match.group(1)], int(match.group(2)), int(match.group(3)),
                                  int(match.group(4)), int(match.group(5)), int(match.group(6)))
    return calendar.timegm((year, mon, day, hh, mm, ss, 0, 0, 0))


def parse_iso_time(text):
    """'2026-11-20T02:00:05Z' / '...+00:00' / with fractions -> epoch seconds (UTC); None when unparseable."""
    match = re.match(r'\A(\d{4})-(\d\d)-(\d\d)[T ](\d\d):(\d\d):(\d\d)(?:\.\d+)?(Z|[+-]\d\d:?\d\d)?\Z',
                     str(text or '').strip())
    if not match:
        return None
    epoch = calendar.timegm(tuple(int(match.group(i)) for i in range(1, 7)) + (0, 0, 0))
    zone = match.group(7)
    if zone and zone != 'Z':
        sign = 1 if zone[0] == '+' else -1
        digits = zone[1:].replace(':', '')
        epoch -= sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
    return epoch


def parse_env_file(text):
    """systemd EnvironmentFile= text -> [(key, value)] (quotes and backslash escapes removed)."""
    pairs = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(('#', ';')):
            continue
        if line.startswith('export '):
            line = line[len('export '):].lstrip()
        key, sep, value = line.partition('=')
        if not sep:
            continue
        key = key.strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in '"\'':
            quote = value[0]
            value = value[1:-1]
            if quote == '"':
                value = re.sub(r'\\(.)', r'\1', value)
        pairs.append((key, value))
    return pairs


NOT_SECRET_SUFFIX_RE = re.compile(r'_(FILE|PATH|DIR|URL|URI|LENGTH|LEN|TTL|EXPIRY|EXPIRES|TIMEOUT|ALGORITHM|HEADER|NAME'
                                  r'|USER|USERNAME|ID|ENABLED|ROTATION|DAYS)\Z', re.IGNORECASE)


def is_secret_key(key):
    """Whether an environment variable name holds a secret (DB_PASSWORD, API_TOKEN...; not DB_PASSWORD_FILE)."""
    return bool(SECRET_KEY_RE.search(key)) and not NOT_SECRET_SUFFIX_RE.search(key) and 'PUBLIC' not in key.upper()


def weak_secret(value, weak_passwords):
    """Why ``value`` is not a real secret ('empty', 'a default password', ...), or None when it looks fine."""
    if value is None or value.strip() == '':
        return 'empty'
    lowered = value.strip().lower()
    if lowered in weak_passwords:
        return 'a well-known default password'
    if any(fragment in lowered for fragment in PLACEHOLDER_FRAGMENTS):
        return 'a placeholder'
    if len(set(lowered)) == 1:
        return 'one repeated character'
    return None


def parse_ini(text):
    """Minimal INI reader for pgbouncer.ini: {section: {key: value}}; section and key names in lower case,
    except the database names of [databases]."""
    sections = {}
    current = name = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith((';', '#')):
            continue
        match = re.match(r'\A\[([^\]]+)\]\Z', line)
        if match:
            name = match.group(1).strip().lower()
            current = sections.setdefault(name, {})
            continue
        key, sep, value = line.partition('=')
        if current is None or not sep:
            continue
        current[key.strip() if name == 'databases' else key.strip().lower()] = value.strip()
    return sections


def parse_userlist(text):
    """Names in PgBouncer's auth_file ('"name" "secret"' lines)."""
    return [m.group(1) for m in re.finditer(r'^\s*"((?:[^"]|"")*)"\s+"', text, re.MULTILINE)]


def alertmanager_receivers(config_yaml):
    """Receivers of an Alertmanager configuration (YAML as /api/v2/status returns it) -> {name: [kinds]}.

    Alertmanager re-marshals its configuration, so the layout is regular
    ('receivers:' at column 0, '- name: X' items, '<kind>_configs:' keys).
    """
    receivers = {}
    inside = False
    current = None
    for line in (config_yaml or '').splitlines():
        if not line.strip() or line.lstrip().startswith('#'):
            continue
        if not line[0].isspace() and not line.startswith('-'):
            inside = line.split(':', 1)[0].strip() == 'receivers'
            current = None
            continue
        if not inside:
            continue
        match = re.match(r'\A(\s*)-\s+name:\s*["\']?([^"\'#]+?)["\']?\s*\Z', line)
        if match and len(match.group(1)) <= 2:
            current = match.group(2)
            receivers.setdefault(current, [])
            continue
        match = re.match(r'\A\s+(\w+)_configs:', line)
        if match and current is not None:
            receivers[current].append(match.group(1))
    return receivers


def exposure_score(text):
    """'Overall exposure level for x.service: 1.2 OK' -> (1.2, 'OK'); None when absent."""
    match = re.search(r'Overall exposure level for \S+:\s*([\d.]+)\s+([A-Z]+)', text or '')
    if not match:
        return None
    return float(match.group(1)), match.group(2)


# ---------------------------------------------------------------------------
# Context: settings, host I/O and cached systemd queries


class Context:
    def __init__(self, settings, io):
        self.s = settings
        self.io = io
        self._show = {}
        self._cat = {}

    @property
    def services(self):
        return self.s['services']

    def show(self, units, props=('LoadState', 'ActiveState', 'SubState', 'UnitFileState')):
        """``systemctl show`` of several units at once -> {unit: props}; cached per (unit, props)."""
        props = tuple(sorted(set(('Id',) + tuple(props))))
        wanted = [u for u in units if (u, props) not in self._show]
        if wanted:
            argv = ['systemctl', 'show', '--no-pager']
            for prop in props:
                argv += ['-p', prop]
            rc, out, err = self.io.run(argv + ['--'] + wanted)
            parsed = parse_systemctl_show(out) if rc == 0 else {}
            for unit in wanted:
                self._show[(unit, props)] = parsed.get(unit, {'Id': unit, 'LoadState': 'unknown',
                                                              '_error': (err or out).strip()[:200]})
        return dict((u, self._show[(u, props)]) for u in units)

    def unit(self, unit, props=('LoadState', 'ActiveState', 'SubState', 'UnitFileState')):
        return self.show([unit], props)[unit]

    def loaded(self, unit):
        return self.unit(unit).get('LoadState') == 'loaded'

    def active(self, unit):
        return self.unit(unit).get('ActiveState') == 'active'

    def cat(self, units):
        wanted = [u for u in units if u not in self._cat]
        if wanted:
            _rc, out, _err = self.io.run(['systemctl', 'cat', '--no-pager', '--'] + wanted)
            parsed = parse_systemctl_cat(out)
            for unit in wanted:
                self._cat[unit] = parsed.get(unit, '')
        return dict((u, self._cat[u]) for u in units)

    def exists(self, path):
        return self.io.stat(path) is not None

    def nginx_present(self):
        return self.exists('/usr/sbin/nginx') or self.loaded('nginx.service')


# ---------------------------------------------------------------------------
# Checks


def check_tls(ctx):
    found = Findings('tls')
    certs = list(ctx.s['tls_certificates'])
    nginx = ctx.nginx_present()
    source = 'checklist_tls_certificates'
    if not certs and nginx:
        rc, out, _err = ctx.io.run(['nginx', '-T'])
        if rc == 0:
            paths = _unique(p for p in re.findall(r'^\s*ssl_certificate\s+["\']?([^;"\'\s]+)', out, re.MULTILINE)
                            if '$' not in p)
            certs = [{'path': p, 'key': None, 'name': p} for p in paths]
            source = 'nginx -T'
    if not certs:
        if nginx:
            found.add(WARN, 'nginx is installed but serves no certificate and none is listed in '
                            'checklist_tls_certificates: is the site plain HTTP?',
                      fix='add TLS to the nginx site (e.g. certbot --nginx) or list the certificates')
            return found.result()
        return skip('tls', 'no certificate listed (checklist_tls_certificates) and no nginx')
    now = ctx.io.now()
    soonest = None
    for cert in certs:
        path = cert['path']
        if not ctx.exists(path):
            found.add(FAIL, '%s does not exist' % path, fix='install the certificate or fix the path')
            continue
        rc, out, err = ctx.io.run(['openssl', 'x509', '-noout', '-enddate', '-startdate', '-in', path])
        if rc == 127:
            found.add(FAIL, 'openssl is not installed: cannot read %s' % path, fix='apt-get install openssl')
            continue
        fields = dict(line.split('=', 1) for line in out.splitlines() if '=' in line)
        not_after = parse_openssl_date(fields.get('notAfter'))
        not_before = parse_openssl_date(fields.get('notBefore'))
        if rc != 0 or not_after is None:
            found.add(FAIL, '%s is not a readable PEM certificate (%s)'
                      % (path, (err.strip().splitlines() or ['no notAfter'])[0][:120]),
                      fix='replace it with a PEM certificate')
            continue
        days = (not_after - now) / DAY
        expiry = time.strftime('%Y-%m-%d', time.gmtime(not_after))
        renew = 'renew it (certbot renew, or your CA) and reload the server'
        if not_before is not None and not_before > now:
            valid_from = time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(not_before))
            found.add(FAIL, '%s is not valid before %s' % (path, valid_from), fix='check the clock and the certificate')
        elif days < 0:
            found.add(FAIL, '%s expired on %s' % (path, expiry), fix=renew)
        elif days < ctx.s['tls_fail_days']:
            found.add(FAIL, '%s expires in %.0f days (%s)' % (path, days, expiry), fix=renew)
        elif days < ctx.s['tls_warn_days']:
            found.add(WARN, '%s expires in %.0f days (%s), within %d days'
                      % (path, days, expiry, ctx.s['tls_warn_days']), fix=renew)
        if soonest is None or not_after < soonest[0]:
            soonest = (not_after, path, days, expiry)
        if cert['key']:
            _check_key_matches(ctx, found, path, cert['key'])
    if soonest:
        found.note('%d certificate(s) valid (from %s); the first to expire: %s in %.0f days (%s)'
                   % (len(certs), source, soonest[1], soonest[2], soonest[3]))
    return found.result()


def _check_key_matches(ctx, found, cert, key):
    if not ctx.exists(key):
        found.add(FAIL, 'the key %s of %s does not exist' % (key, cert), fix='install the key or fix the path')
        return
    rc1, cert_pub, _e1 = ctx.io.run(['openssl', 'x509', '-noout', '-pubkey', '-in', cert])
    rc2, key_pub, err = ctx.io.run(['openssl', 'pkey', '-pubout', '-in', key])
    if rc2 != 0:
        found.add(FAIL, 'the key %s is not readable (%s)' % (key, (err.strip().splitlines() or [''])[0][:120]),
                  fix='replace the key')
    elif rc1 == 0 and cert_pub.strip() != key_pub.strip():
        found.add(FAIL, 'the key %s does not belong to %s' % (key, cert), fix='install the matching key')


def _backup_jobs(ctx):
    jobs = []
    for path in ctx.io.glob(os.path.join(ctx.s['backup_config_dir'], '*.json')):
        try:
            config = json.loads(ctx.io.read(path))
            if not isinstance(config, dict) or not NAME_RE.match(str(config.get('job', ''))):
                raise ValueError('no valid "job"')
        except (OSError, ValueError) as exc:
            jobs.append({'path': path, 'error': str(exc)})
            continue
        jobs.append({'path': path, 'job': config['job'], 'config': config})
    return jobs


def _read_json(ctx, path):
    try:
        data = json.loads(ctx.io.read(path))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _number_or_zero(value):
    try:
        return float(value or 0)
    except (TypeError, ValueError):
        return 0.0


def _newest_verified_marker(ctx, config):
    """Time of the newest ``.verified`` marker of the job (written by deep verifications, also from the controller)."""
    dest = config.get('dest')
    if not dest:
        return 0.0
    prefix = config.get('prefix') or config['job'] + '-'
    newest = 0.0
    for path in ctx.io.glob(os.path.join(glob.escape(dest), glob.escape(prefix) + '*.verified')):
        data = _read_json(ctx, path) or {}
        moment = parse_iso_time(data.get('verified'))
        if moment is None:
            st = ctx.io.stat(path)
            moment = st.st_mtime if st else 0.0
        newest = max(newest, moment)
    return newest


def check_backups(ctx):
    found = Findings('backups')
    role_fix = dict(roles=['backup'], tags=['backup'])
    jobs = _backup_jobs(ctx)
    if not jobs:
        found.add(FAIL, 'no backup job is configured (%s has no job file)' % ctx.s['backup_config_dir'],
                  fix='set backup_sources or backup_postgresql_databases and backup_generate_key/backup_recipients, '
                      'then ' + site_fix('backup'), **role_fix)
        return found.result()
    now = ctx.io.now()
    warn_h, fail_h = ctx.s['backup_warn_hours'], ctx.s['backup_fail_hours']
    for job in jobs:
        if 'error' in job:
            found.add(FAIL, 'cannot read the job file %s: %s' % (job['path'], job['error']),
                      fix=site_fix('backup'), **role_fix)
            continue
        name, config = job['job'], job['config']
        service = 'prodready-backup@%s.service' % name
        timer = 'prodready-backup-%s.timer' % name
        timer_state = ctx.unit(timer)
        if timer_state.get('LoadState') != 'loaded' or timer_state.get('ActiveState') != 'active':
            found.add(FAIL, '%s is %s: job %s is not scheduled' % (timer, timer_state.get('ActiveState', 'missing')
                                                                   if timer_state.get('LoadState') == 'loaded'
                                                                   else 'not installed', name),
                      fix=site_fix('backup'), **role_fix)
        state = _read_json(ctx, os.path.join(config.get('state_dir') or '/var/lib/prodready/backup',
                                             name + '.json')) or {}
        success = _number_or_zero(state.get('last_success'))
        failure = _number_or_zero(state.get('last_failure'))
        note = '%s: ' % name
        if success <= 0:
            found.add(FAIL, 'job %s has never completed a backup' % name,
                      fix='systemctl start %s (or playbooks/backup.yml)' % service, units=[service])
            note += 'never run'
        else:
            age = now - success
            note += 'last backup %s ago' % format_age(age)
            if age > fail_h * HOUR:
                found.add(FAIL, 'the last successful backup of job %s is %s old (limit %g h)'
                          % (name, format_age(age), fail_h),
                          fix='systemctl start %s, then find out why the timer did not run '
                              '(journalctl -u %s)' % (service, service), units=[service])
            elif age > warn_h * HOUR:
                found.add(WARN, 'the last successful backup of job %s is %s old (more than %g h)'
                          % (name, format_age(age), warn_h), fix='systemctl start %s' % service, units=[service])
        if failure > success:
            error = str(state.get('last_error') or 'see journalctl -u ' + service)[:300]
            found.add(FAIL, 'the last run of job %s failed: %s' % (name, error),
                      fix='journalctl -u %s; fix the cause, then systemctl start %s' % (service, service),
                      units=[service])
        if name in ctx.s['restore_test_jobs']:
            note += _check_restore_test(ctx, found, name, config, state, now)
        found.note(note)
    return found.result()


def _check_restore_test(ctx, found, name, config, state, now):
    verify_unit = 'prodready-backup-verify@%s.service' % name
    limit = ctx.s['restore_test_max_age_days']
    tested = max(_number_or_zero(state.get('last_verified_restore')), _newest_verified_marker(ctx, config))
    failed = _number_or_zero(state.get('last_verify_failure'))
    deep_on_host = bool(config.get('identity_file'))
    how = ('systemctl start %s' % verify_unit if deep_on_host else
           'deep-verify the newest backup with prodready.vps.backup_verify (identity from the controller, mark: '
           'true), or set backup_verify_identity_file for the weekly test')
    units = [verify_unit] if deep_on_host else []
    if failed > tested and failed > 0:
        found.add(FAIL, 'the last restore test of job %s failed: %s'
                  % (name, str(state.get('last_error') or 'see journalctl -u ' + verify_unit)[:300]),
                  fix='journalctl -u %s; then %s' % (verify_unit, how), units=units)
        return ', restore test failed'
    if tested <= 0:
        found.add(WARN, 'no restore test of job %s is recorded%s' % (
            name, '' if deep_on_host else ' (the weekly test only compares checksums: no key on the host)'),
            fix=how, units=units)
        return ', no restore test'
    age = now - tested
    if age > limit * DAY:
        found.add(WARN, 'the last restore test of job %s is %s old (limit %g days)' % (name, format_age(age), limit),
                  fix=how, units=units)
    return ', restore test %s ago' % format_age(age)


def check_monitoring(ctx):
    found = Findings('monitoring')
    fix = dict(fix=site_fix('monitoring'), roles=['monitoring'], tags=['monitoring'])
    timeout = ctx.s['http_timeout']
    prom = ctx.s['prometheus_url']
    try:
        _status, _h, body = ctx.io.http_get(prom + '/api/v1/rules', timeout)
        rules = json.loads(body)['data']['groups']
    except HttpError as exc:
        installed = ctx.loaded('prometheus.service')
        found.add(FAIL, 'Prometheus does not answer at %s (%s)%s' % (
            prom, exc, '' if installed else ': it is not installed'), **fix)
        rules = None
    except (ValueError, KeyError, TypeError):
        found.add(FAIL, 'Prometheus at %s returned no rule list' % prom, **fix)
        rules = None
    if rules is not None:
        alerting = [r for g in rules for r in g.get('rules', []) if r.get('type') == 'alerting']
        broken = [r for r in alerting if r.get('health') not in (None, 'ok', 'unknown')]
        if not alerting:
            found.add(FAIL, 'Prometheus has no alert rules loaded', **fix)
        else:
            found.note('Prometheus: %d alert rules in %d groups' % (len(alerting), len(rules)))
        for rule in broken[:5]:
            found.add(WARN, 'alert rule %s does not evaluate: %s' % (rule.get('name'),
                                                                     str(rule.get('lastError', ''))[:160]), **fix)
        try:
            _s, _h, body = ctx.io.http_get(prom + '/api/v1/alertmanagers', timeout)
            active = json.loads(body)['data']['activeAlertmanagers']
        except (HttpError, ValueError, KeyError, TypeError):
            active = []
        if not active:
            found.add(FAIL, 'Prometheus sends its alerts to no Alertmanager', **fix)
    am = ctx.s['alertmanager_url']
    try:
        _s, _h, body = ctx.io.http_get(am + '/api/v2/status', timeout)
        original = json.loads(body)['config']['original']
    except HttpError as exc:
        found.add(FAIL, 'Alertmanager does not answer at %s (%s): alerts go nowhere' % (am, exc), **fix)
    except (ValueError, KeyError, TypeError):
        found.add(FAIL, 'Alertmanager at %s returned no configuration' % am, **fix)
    else:
        receivers = alertmanager_receivers(original)
        useful = dict((n, k) for n, k in receivers.items() if k)
        if not useful:
            found.add(WARN, 'Alertmanager has no receiver with a destination: alerts reach nobody',
                      fix='set monitoring_receivers (Slack, email, Telegram or a webhook), then ' + site_fix('monitoring'),
                      roles=['monitoring'], tags=['monitoring'])
        else:
            found.note('receivers: %s' % ', '.join('%s (%s)' % (n, '+'.join(k)) for n, k in sorted(useful.items())))
    node = ctx.s['node_exporter_url']
    try:
        _s, _h, body = ctx.io.http_get(node + '/metrics', timeout)
    except HttpError as exc:
        found.add(FAIL, 'node exporter does not answer at %s (%s): no host or textfile metrics' % (node, exc), **fix)
    else:
        if re.search(r'^node_textfile_scrape_error(\{[^}]*\})?\s+1\b', body, re.MULTILINE):
            found.add(WARN, 'node exporter cannot parse a textfile metric file (node_textfile_scrape_error 1)',
                      fix='journalctl -u prometheus-node-exporter; fix the .prom file it names')
    return found.result()


def _managed_units(ctx):
    return [s['unit'] for s in ctx.services if s['managed']]


def check_resource_limits(ctx):
    found = Findings('resource_limits')
    units = _managed_units(ctx)
    if not units:
        return skip('resource_limits', 'no service with a command in prodready_services (no unit managed here)')
    fix = dict(fix=site_fix('hardening_units'), roles=['hardening'], tags=['hardening_units'])
    shown = ctx.show(units, ('LoadState', 'MemoryMax', 'CPUQuotaPerSecUSec', 'CPUWeight', 'LimitNOFILESoft'))
    texts = ctx.cat(units)
    for unit in units:
        props = shown[unit]
        if props.get('LoadState') != 'loaded':
            found.add(FAIL, '%s is not installed' % unit, **fix)
            continue
        directives = unit_directives(texts.get(unit, ''))
        parts = []
        memory = props.get('MemoryMax', '')
        if memory in SYSTEMD_UNSET:
            found.add(FAIL, '%s has no MemoryMax: one leak can take the whole host down' % unit, **fix)
        else:
            parts.append('MemoryMax %s' % (format_bytes(memory) if memory.isdigit() else memory))
        quota = parse_timespan_seconds(props.get('CPUQuotaPerSecUSec', ''))
        weight = props.get('CPUWeight', '')
        if quota is None and weight in SYSTEMD_UNSET:
            found.add(WARN, '%s has neither CPUQuota nor CPUWeight: it competes for CPU unchecked' % unit, **fix)
        elif quota is not None:
            parts.append('CPUQuota %g%%' % round(quota * 100, 1))
        else:
            parts.append('CPUWeight %s' % weight)
        nofile = props.get('LimitNOFILESoft', '')
        if 'LimitNOFILE' not in directives:
            found.add(WARN, '%s does not set LimitNOFILE (inherits %s)' % (unit, nofile or 'the default'), **fix)
        elif nofile.isdigit() and int(nofile) < ctx.s['min_nofile']:
            found.add(WARN, '%s allows only %s open files (LimitNOFILE below %d)' % (unit, nofile,
                                                                                     ctx.s['min_nofile']), **fix)
        else:
            parts.append('LimitNOFILE %s' % nofile)
        found.note('%s: %s' % (unit[:-len('.service')] if unit.endswith('.service') else unit, ', '.join(parts)))
    return found.result()


def _secret_file_owner_fix(ctx, path):
    """The role that writes ``path`` (so that re-running it repairs mode and owner)."""
    env_files = dict((s['environment_file'], s) for s in ctx.services)
    if path in env_files and env_files[path]['managed']:
        return dict(fix=site_fix('hardening_units'), roles=['hardening'], tags=['hardening_units'])
    for prefix, role, tag in (('/etc/prodready/backup/', 'backup', 'backup'), ('/etc/pgbouncer/', 'pgbouncer', 'pgbouncer'),
                              ('/etc/prometheus/', 'monitoring', 'monitoring'),
                              ('/etc/prodready/failure-hook.json', 'hardening', 'hardening_units')):
        if path.startswith(prefix):
            return dict(fix=site_fix(tag), roles=[role], tags=[tag])
    return dict(fix='chmod o-rwx %s' % path)


def check_secrets(ctx):
    found = Findings('secrets')
    now = ctx.io.now()
    max_age = ctx.s['secret_max_age_days']
    weak = ctx.s['weak_passwords']
    files = []   # (path, kind)
    for svc in ctx.services:
        files.append((svc['environment_file'], 'env'))
    for cert in ctx.s['tls_certificates']:
        if cert['key']:
            files.append((cert['key'], 'key'))
    for pattern in ctx.s['secret_paths']:
        for path in ctx.io.glob(pattern):
            if not path.endswith('.pub'):
                files.append((path, 'file'))
    seen = set()
    checked = secrets_total = 0
    for path, kind in files:
        if path in seen:
            continue
        seen.add(path)
        st = ctx.io.stat(path)
        if st is None or not stat.S_ISREG(st.st_mode):
            continue
        checked += 1
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o007:
            found.add(FAIL, '%s is %s by every user (mode %04o)' % (
                path, 'writable' if mode & 0o002 else 'readable', mode), **_secret_file_owner_fix(ctx, path))
        elif mode & 0o020:
            found.add(WARN, '%s is writable by its group (mode %04o)' % (path, mode), **_secret_file_owner_fix(ctx, path))
        has_secret = kind != 'env'
        if kind == 'env':
            try:
                pairs = parse_env_file(ctx.io.read(path))
            except OSError as exc:
                found.add(WARN, 'cannot read %s: %s' % (path, exc.strerror or exc))
                continue
            for key, value in pairs:
                candidates = []
                if is_secret_key(key):
                    candidates.append((value, '%s in %s' % (key, path)))
                match = URL_CREDENTIALS_RE.match(value)
                if match:
                    candidates.append((urlparse.unquote(match.group(1)), 'the password in %s (%s)' % (key, path)))
                for candidate, where in candidates:
                    has_secret = True
                    secrets_total += 1
                    why = weak_secret(candidate, weak)
                    if why:
                        found.add(FAIL, '%s is %s' % (where, why),
                                  fix='put a strong random value (from the vault) in prodready_services[].environment')
                    elif len(candidate) < MIN_SECRET_LENGTH:
                        found.add(WARN, '%s is shorter than %d characters' % (where, MIN_SECRET_LENGTH),
                                  fix='use a longer random value')
        if has_secret and max_age > 0:
            age = now - st.st_mtime
            if age > max_age * DAY:
                found.add(WARN, '%s has not changed for %.0f days (rotation age %g days)' % (path, age / DAY, max_age),
                          fix='rotate the secrets in it (new values in the vault, then run the role that writes it)')
    if checked == 0:
        return skip('secrets', 'no environment file or secret file found')
    found.note('%d file(s) private, %d secret value(s) without defaults, none older than %g days'
               % (checked, secrets_total, max_age))
    return found.result()


def check_firewall(ctx):
    found = Findings('firewall')
    table = ctx.s['firewall_table']
    fix = dict(fix=site_fix('hardening_firewall'), roles=['hardening'], tags=['hardening_firewall'])
    rc, out, err = ctx.io.run(['nft', 'list', 'table', 'inet', table])
    if rc == 127:
        found.add(FAIL, 'nftables is not installed: no firewall', **fix)
    elif rc != 0:
        message = (err or out).strip().splitlines()[-1:] or ['']
        if 'Operation not permitted' in message[0] or 'Permission denied' in message[0]:
            found.add(FAIL, 'cannot read the ruleset (%s): run the checklist as root' % message[0][:120])
        else:
            found.add(FAIL, 'table inet %s is not loaded: every port is open' % table, **fix)
    else:
        if not re.search(r'hook input[^;]*;\s*policy drop', out):
            found.add(WARN, 'the input chain of table inet %s does not drop by default' % table, **fix)
        accepts = len(re.findall(r'dport .* accept', out))
        found.note('table inet %s loaded, input policy drop, %d port rule(s)' % (table, accepts))
        enabled = ctx.unit('nftables.service').get('UnitFileState', '')
        if enabled != 'enabled':
            found.add(WARN, 'nftables.service is not enabled (%s): the rules are gone after a reboot'
                      % (enabled or 'not installed'), **fix)
    fail2ban = ctx.unit('fail2ban.service')
    if fail2ban.get('LoadState') == 'loaded' and fail2ban.get('ActiveState') != 'active':
        found.add(WARN, 'fail2ban is installed but %s' % fail2ban.get('ActiveState'),
                  fix=site_fix('hardening_fail2ban'), roles=['hardening'], tags=['hardening_fail2ban'])
    return found.result()


def check_log_rotation(ctx):
    found = Findings('log_rotation')
    fix = dict(fix=site_fix('logrotate'), roles=['logrotate'], tags=['logrotate'])
    if not ctx.exists('/usr/sbin/logrotate'):
        found.add(FAIL, 'logrotate is not installed: logs grow until the disk is full', **fix)
        return found.result()
    timer = ctx.unit('logrotate.timer')
    if timer.get('ActiveState') != 'active':
        found.add(FAIL, 'logrotate.timer is %s: logrotate never runs' % (
            timer.get('ActiveState') if timer.get('LoadState') == 'loaded' else 'not installed'), **fix)
    last = ctx.unit('logrotate.service', ('LoadState', 'Result', 'ActiveState'))
    if last.get('Result') not in (None, '', 'success'):
        found.add(WARN, 'the last logrotate run failed (%s)' % last.get('Result'),
                  fix='journalctl -u logrotate.service; fix the configuration it names')
    missing = []
    for svc in ctx.services:
        conf = '/etc/logrotate.d/prodready-%s' % svc['name']
        if not ctx.exists(conf):
            missing.append(svc['name'])
            found.add(FAIL, 'the logs of %s are not rotated (no %s)' % (svc['name'], conf), **fix)
    covered = len(ctx.services) - len(missing)
    found.note('logrotate.timer active, %d service(s) rotated' % covered)
    return found.result()


def check_health(ctx):
    found = Findings('health')
    targets = [s for s in ctx.services if s['health_url'] and s['enabled']]
    if not targets:
        return skip('health', 'no enabled service has a health URL (listen_port or health_url)')
    states = ctx.show([s['unit'] for s in targets], ('LoadState', 'ActiveState', 'SubState'))
    for svc in targets:
        url = svc['health_url']
        started = time.time()
        try:
            status, _headers, _body = ctx.io.http_get(url, ctx.s['health_timeout'], follow=True)
            error = None
        except HttpError as exc:
            status, error = None, str(exc)
        elapsed_ms = (time.time() - started) * 1000
        if status is not None and 200 <= status < 300:
            found.note('%s %d in %.0f ms' % (svc['name'], status, elapsed_ms))
            continue
        state = states[svc['unit']]
        answer = 'answered HTTP %d' % status if status is not None else error
        if state.get('ActiveState') != 'active':
            unit_state = state.get('ActiveState', 'unknown') if state.get('LoadState') == 'loaded' else 'not installed'
            found.add(FAIL, '%s: %s %s; %s is %s' % (svc['name'], url, answer, svc['unit'], unit_state),
                      fix='prodready-ctl troubleshoot %s; %s' % (svc['name'], site_fix('hardening_units')),
                      roles=['hardening'] if svc['managed'] else [], tags=['hardening_units'] if svc['managed'] else [])
        else:
            found.add(FAIL, '%s: %s %s although %s is active' % (svc['name'], url, answer, svc['unit']),
                      fix='prodready-ctl troubleshoot %s (the app itself is unhealthy)' % svc['name'])
    return found.result()


def _database_urls(ctx):
    """(service, key, port) of every PostgreSQL URL or PGPORT in the services' environment files."""
    out = []
    for svc in ctx.services:
        try:
            pairs = parse_env_file(ctx.io.read(svc['environment_file']))
        except OSError:
            continue
        for key, value in pairs:
            if DB_URL_RE.match(value):
                try:
                    port = urlparse.urlsplit(value).port or 5432
                except ValueError:
                    continue
                out.append((svc['name'], key, port))
            elif key.upper() == 'PGPORT' and value.isdigit():
                out.append((svc['name'], key, int(value)))
    return out


def _int_setting(section, key, default):
    try:
        return int(str(section.get(key, default)).strip())
    except ValueError:
        return default


def check_database(ctx):
    found = Findings('database')
    fix = dict(fix=site_fix('pgbouncer'), roles=['pgbouncer'], tags=['pgbouncer'])
    ini_path = ctx.s['pgbouncer_ini']
    pgbouncer = ctx.exists(ini_path) or ctx.loaded('pgbouncer.service')
    postgres = ctx.loaded('postgresql.service')
    urls = _database_urls(ctx)
    if not pgbouncer:
        if postgres or urls:
            found.add(WARN, 'PgBouncer is not set up (recommended in front of PostgreSQL in production)',
                      fix='set pgbouncer_databases and pgbouncer_users, then ' + site_fix('pgbouncer'),
                      roles=['pgbouncer'], tags=['pgbouncer'])
            return found.result()
        return skip('database', 'no database here (no PostgreSQL, no PgBouncer, no database URL in the services)')
    if not ctx.active('pgbouncer.service'):
        found.add(FAIL, 'pgbouncer.service is %s' % ctx.unit('pgbouncer.service').get('ActiveState', 'not installed'),
                  **fix)
    try:
        ini = parse_ini(ctx.io.read(ini_path))
    except OSError as exc:
        found.add(FAIL, 'cannot read %s: %s' % (ini_path, exc.strerror or exc), **fix)
        return found.result()
    main = ini.get('pgbouncer', {})
    databases = [d for d in ini.get('databases', {}) if d != '*']
    pool_mode = main.get('pool_mode', 'session')
    pool = _int_setting(main, 'default_pool_size', 20)
    reserve = _int_setting(main, 'reserve_pool_size', 0)
    max_client = _int_setting(main, 'max_client_conn', 100)
    max_db = _int_setting(main, 'max_db_connections', 0)
    listen_port = _int_setting(main, 'listen_port', 6432)
    special = set(re.split(r'[,\s]+', main.get('admin_users', '') + ',' + main.get('stats_users', ''))) - {''}
    users = 1
    auth_file = main.get('auth_file')
    if auth_file:
        try:
            users = max(1, len([u for u in parse_userlist(ctx.io.read(auth_file)) if u not in special]))
        except OSError:
            pass
    if not databases:
        found.add(WARN, '%s lists no database' % ini_path, **fix)
    if pool_mode == 'statement':
        found.add(WARN, 'pool_mode statement breaks multi-statement transactions', **fix)
    per_db = (pool + reserve) * users
    if max_db > 0:
        per_db = min(per_db, max_db)
    total = per_db * max(1, len(databases))
    max_connections, how = _postgresql_max_connections(ctx, postgres)
    budget = max_connections - int(ctx.s['postgresql_reserved_connections'])
    if total > budget:
        found.add(WARN, 'the pools can open %d server connections (%d database(s) x %d user(s) x (pool %d + reserve %d)'
                        '), PostgreSQL allows %d (max_connections %d %s, %d reserved)'
                  % (total, max(1, len(databases)), users, pool, reserve, budget, max_connections, how,
                     int(ctx.s['postgresql_reserved_connections'])),
                  fix='lower pgbouncer_pool_overrides or raise max_connections; ' + site_fix('pgbouncer'),
                  roles=['pgbouncer'], tags=['pgbouncer'])
    if max_client < pool:
        found.add(WARN, 'max_client_conn %d is below default_pool_size %d' % (max_client, pool), **fix)
    nofile = ctx.unit('pgbouncer.service', ('LoadState', 'LimitNOFILESoft')).get('LimitNOFILESoft', '')
    if nofile.isdigit() and int(nofile) < max_client + total + 50:
        found.add(WARN, 'pgbouncer.service allows %s open files, max_client_conn %d + %d server connections need more'
                  % (nofile, max_client, total), **fix)
    for service, key, port in urls:
        if port != listen_port:
            found.add(WARN, '%s connects to PostgreSQL on port %d (%s), not through PgBouncer on %d'
                      % (service, port, key, listen_port),
                      fix='point %s of %s at 127.0.0.1:%d' % (key, service, listen_port))
    found.note('PgBouncer active, pool_mode %s, %d database(s) x %d user(s) x (pool %d + reserve %d) = %d server '
               'connections of %d; %d app connection setting(s) through port %d'
               % (pool_mode, max(1, len(databases)), users, pool, reserve, total, budget,
                  len([u for u in urls if u[2] == listen_port]), listen_port))
    return found.result()


def _postgresql_max_connections(ctx, local):
    if local:
        rc, out, _err = ctx.io.run(['runuser', '-u', 'postgres', '--', 'psql', '-XAtqc', 'SHOW max_connections'])
        if rc == 0 and out.strip().isdigit():
            return int(out.strip()), 'from the local server'
    return int(ctx.s['postgresql_max_connections']), 'as configured'


REQUIRED_HEADERS = (
    ('x-content-type-options', 'X-Content-Type-Options: nosniff'),
    ('x-frame-options', 'X-Frame-Options: DENY (or CSP frame-ancestors)'),
    ('referrer-policy', 'Referrer-Policy: strict-origin-when-cross-origin'),
)


def check_security_headers(ctx):
    found = Findings('security_headers')
    if not ctx.nginx_present():
        return skip('security_headers', 'nginx is not installed')
    fix = ('add_header X-Content-Type-Options nosniff always; add_header X-Frame-Options DENY always; '
           'add_header Referrer-Policy strict-origin-when-cross-origin always; (and HSTS on HTTPS) in the server block')
    checked = []
    for url in ctx.s['header_urls']:
        try:
            status, headers, _body = ctx.io.http_get(url, ctx.s['http_timeout'])
        except HttpError as exc:
            found.add(WARN, 'nginx does not answer at %s (%s)' % (url, exc), fix='systemctl status nginx')
            continue
        if status in (301, 302, 307, 308) and headers.get('location', '').startswith('https://'):
            location = headers['location']
            parts = urlparse.urlsplit(location)
            if parts.hostname in ('127.0.0.1', 'localhost'):
                try:
                    status, headers, _body = ctx.io.http_get(location, ctx.s['http_timeout'])
                    url = location
                except HttpError as exc:
                    found.add(WARN, '%s redirects to %s, which does not answer (%s)' % (url, location, exc))
                    continue
        missing = [label for name, label in REQUIRED_HEADERS if name not in headers and not (
            name == 'x-frame-options' and 'frame-ancestors' in headers.get('content-security-policy', ''))]
        if url.startswith('https://') and 'strict-transport-security' not in headers:
            missing.append('Strict-Transport-Security')
        if missing:
            found.add(WARN, '%s lacks %s' % (url, ', '.join(m.split(':')[0] for m in missing)), fix=fix)
        if re.search(r'nginx/\d', headers.get('server', '')):
            found.add(WARN, '%s tells its nginx version (Server: %s)' % (url, headers['server']),
                      fix='server_tokens off; in the http block')
        checked.append(url)
    if checked:
        found.note('%s: X-Content-Type-Options, X-Frame-Options, Referrer-Policy present' % ', '.join(checked))
    return found.result()


def check_unit_exposure(ctx):
    found = Findings('unit_exposure')
    units = [(u, ctx.s['exposure_target'], 'hardening_units') for u in _managed_units(ctx)]
    units += [(d if d.endswith('.service') else d + '.service', ctx.s['exposure_daemon_target'], 'hardening_daemons')
              for d in ctx.s['daemons']]
    states = ctx.show([u[0] for u in units])
    units = [u for u in units if states[u[0]].get('LoadState') == 'loaded']
    if not units:
        return skip('unit_exposure', 'no managed service or daemon unit is installed')
    scores = []
    for unit, target, tag in units:
        rc, out, err = ctx.io.run(['systemd-analyze', 'security', '--no-pager', unit])
        if rc == 127:
            return skip('unit_exposure', 'systemd-analyze is not available')
        score = exposure_score(out)
        if score is None:
            found.add(WARN, 'no exposure score for %s (%s)' % (unit, (err or out).strip()[:120]))
            continue
        fix = dict(fix=site_fix(tag), roles=['hardening'], tags=[tag])
        if score[0] > ctx.s['exposure_fail']:
            found.add(FAIL, '%s exposure %.1f %s (target %.1f): it runs almost unsandboxed' % (
                unit, score[0], score[1], target), **fix)
        elif score[0] > target:
            found.add(WARN, '%s exposure %.1f %s is above the target %.1f' % (unit, score[0], score[1], target), **fix)
        scores.append('%s %.1f' % (unit[:-8] if unit.endswith('.service') else unit, score[0]))
    found.note('exposure ' + ', '.join(scores))
    return found.result()


# name, title (the seed's wording), function
CHECKS = (
    ('tls', 'ssl certificates', check_tls),
    ('backups', 'backups', check_backups),
    ('monitoring', 'monitoring', check_monitoring),
    ('resource_limits', 'resource limits', check_resource_limits),
    ('secrets', 'secrets', check_secrets),
    ('firewall', 'firewall', check_firewall),
    ('log_rotation', 'log rotation', check_log_rotation),
    ('health', 'health endpoints', check_health),
    ('database', 'database pooling', check_database),
    ('security_headers', 'security headers', check_security_headers),
    ('unit_exposure', 'unit exposure', check_unit_exposure),
)
CHECK_NAMES = tuple(c[0] for c in CHECKS)
CHECK_TITLES = dict((c[0], c[1]) for c in CHECKS)


# ---------------------------------------------------------------------------
# Running and reporting


def run_checks(settings=None, io=None):
    """Run the selected checks; return the list of results. A crashing check is reported, not raised."""
    settings = normalize_settings(settings)
    ctx = Context(settings, io or HostIO())
    wanted = settings['checks']
    results = []
    for name, _title, function in CHECKS:
        if wanted is not None and name not in wanted:
            continue
        try:
            results.append(function(ctx))
        except Exception as exc:  # pylint: disable=broad-except  # one broken check must not hide the others
            results.append(make_result(name, [{'status': FAIL, 'message': 'the check itself failed: %s: %s'
                                               % (type(exc).__name__, exc), 'fix': 'report this as a bug',
                                               'roles': [], 'tags': [], 'units': []}], ''))
    return results


def count(results):
    counts = {'pass': 0, 'warn': 0, 'fail': 0, 'skip': 0, 'total': len(results)}
    for result in results:
        counts[result['status'].lower()] += 1
    return counts


def verdict(counts):
    if counts['fail']:
        return '%d critical issue(s) found. Fix these before deploying!' % counts['fail']
    if counts['warn']:
        return 'No critical issue; %d warning(s) to review.' % counts['warn']
    if counts['skip']:
        return 'Ready for production: every check that applies passed.'
    return 'Ready for production: every check passed.'


def summary_line(results):
    counts = count(results)
    return 'Passed %d/%d, warnings %d, failed %d, skipped %d: %s' % (
        counts['pass'], counts['total'], counts['warn'], counts['fail'], counts['skip'], verdict(counts))


def render_table(results, host=None, verbose=False):
    """The readable report (seed 004's layout); PASS reasons only when ``verbose``."""
    lines = ['Production Readiness Checklist' + (' (%s)' % host if host else ''), '']
    for result in results:
        lines.append('[%s]  %s' % (result['status'], result['title']))
        if result['status'] == PASS and not verbose:
            continue
        lines.append('         ' + result['reason'])
        for detail in result['details']:
            lines.append('           - ' + detail)
        if result['status'] in (WARN, FAIL) and result['fix']:
            lines.append('         fix: ' + result['fix'])
    counts = count(results)
    lines += ['', 'Summary', '',
              '  Passed:   %d / %d' % (counts['pass'], counts['total']),
              '  Warnings: %d' % counts['warn'],
              '  Failed:   %d' % counts['fail']]
    if counts['skip']:
        skipped = ', '.join(r['title'] for r in results if r['status'] == SKIP)
        lines.append('  Skipped:  %d (%s)' % (counts['skip'], skipped))
    lines += ['', verdict(counts)]
    return '\n'.join(lines)


def fix_plan(results):
    """Roles (in site order), tags and units that repair the WARN/FAIL results."""
    problems = [r for r in results if r['status'] in (WARN, FAIL)]
    roles = _unique(role for r in problems for role in r['fix_roles'])
    roles.sort(key=lambda r: ROLE_ORDER.index(r) if r in ROLE_ORDER else len(ROLE_ORDER))
    return {'roles': roles, 'tags': _unique(t for r in problems for t in r['fix_tags']),
            'units': _unique(u for r in problems for u in r['fix_units'])}
