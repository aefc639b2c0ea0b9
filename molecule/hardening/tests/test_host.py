"""Effects of the host hardening part of the hardening role (sshd, sysctl,
nftables, unattended upgrades, core dumps, umask, login.defs/PAM, kernel
modules, package audit tools, chkrootkit, sysstat, fail2ban).

The prepare installs ssh-audit and kmod (modprobe, as on any host with a
kernel) and gives root an ed25519 key pair whose public half is in
/root/.ssh/authorized_keys; the converge opens TCP 8443
(hardening_firewall_allowed_ports) and nothing else besides SSH.
"""

import os
import re
import time

import pytest
import testinfra

# The two platform containers (overridable to run the tests elsewhere).
HOSTS = tuple(os.environ.get('HARDENING_TEST_HOSTS', 'prodready-hardening-debian12,prodready-hardening-debian13').split(','))
OPEN_PORT = 8443
CLOSED_PORT = 8444
SSH = 'ssh -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o ConnectTimeout=10'


def run(host, command):
    result = host.run(command)
    assert result.rc == 0, 'command failed: %s\nstdout: %s\nstderr: %s' % (command, result.stdout, result.stderr)
    return result.stdout


def sshd_effective(host):
    settings = {}
    for line in run(host, '/usr/sbin/sshd -T').splitlines():
        key, value = (line.split(" ", 1) + [""])[:2]
        settings.setdefault(key, value)
    return settings


def fresh_sshd(host):
    """OpenSSH 10 penalises sources that connect without authenticating (as
    ssh-audit does): restart sshd so a login test starts from a clean slate."""
    run(host, 'systemctl restart ssh')
    time.sleep(1)


def test_sshd_config_passes_sshd_t(host):
    run(host, '/usr/sbin/sshd -t')
    dropin = host.file('/etc/ssh/sshd_config.d/50-prodready.conf')
    assert dropin.exists and dropin.user == 'root' and dropin.mode == 0o644
    # Debian's sshd_config includes the drop-ins before any setting of its own.
    first = [line for line in host.file('/etc/ssh/sshd_config').content_string.splitlines()
             if line.strip() and not line.lstrip().startswith('#')][0]
    assert first.startswith('Include /etc/ssh/sshd_config.d/')


def test_sshd_effective_settings(host):
    s = sshd_effective(host)
    assert s['passwordauthentication'] == 'no'
    assert s['kbdinteractiveauthentication'] == 'no'
    assert s['pubkeyauthentication'] == 'yes'
    assert s['permitrootlogin'] in ('prohibit-password', 'without-password', 'no')
    assert s['x11forwarding'] == 'no'
    assert int(s['maxauthtries']) <= 4
    assert s['subsystem'].startswith('sftp ')
    weak = re.compile(r'sha1|nistp|md5|cbc|3des|umac-64|group14|group1-|group-exchange-sha1')
    for key in ('kexalgorithms', 'ciphers', 'macs', 'hostkeyalgorithms'):
        assert not weak.search(s[key]), '%s: %s' % (key, s[key])
    assert all(m.endswith('-etm@openssh.com') for m in s['macs'].split(','))
    hostkeys = [line.split()[1] for line in run(host, '/usr/sbin/sshd -T').splitlines() if line.startswith('hostkey ')]
    assert sorted(hostkeys) == ['/etc/ssh/ssh_host_ed25519_key', '/etc/ssh/ssh_host_rsa_key']


def test_small_dh_moduli_removed(host):
    sizes = run(host, "awk '/^[0-9]/ {print $5}' /etc/ssh/moduli").split()
    assert sizes and min(int(s) for s in sizes) >= 3071


def test_ssh_audit_has_no_fail(host):
    # ssh-audit exits non-zero on warnings too; only [fail] lines count.
    result = host.run('ssh-audit -n 127.0.0.1')
    assert '(kex)' in result.stdout, result.stdout + result.stderr
    assert '[fail]' not in result.stdout, result.stdout
    assert 'ssh-ed25519' in result.stdout


def test_key_login_and_sftp_work_password_refused(host):
    fresh_sshd(host)
    assert run(host, '%s root@127.0.0.1 echo key-login-ok' % SSH).strip() == 'key-login-ok'
    listing = run(host, "echo 'ls /etc/ssh' | sftp -b - -o StrictHostKeyChecking=no "
                        "-o UserKnownHostsFile=/dev/null root@127.0.0.1")
    assert 'sshd_config' in listing
    refused = host.run('%s -o PubkeyAuthentication=no -o PreferredAuthentications=password,keyboard-interactive '
                       'root@127.0.0.1 true' % SSH)
    assert refused.rc != 0 and 'Permission denied (publickey)' in refused.stderr


def test_nft_ruleset_default_deny(host):
    ruleset = run(host, 'nft list table inet prodready')
    assert re.search(r'hook input priority filter; policy drop;', ruleset)
    assert 'ct state established,related accept' in ruleset
    assert re.search(r'tcp dport (22|\{ [^}]*\b22\b[^}]*\}) accept', ruleset)
    assert re.search(r'tcp dport %d accept' % OPEN_PORT, ruleset)
    assert str(CLOSED_PORT) not in ruleset
    assert host.service('nftables').is_enabled
    conf = host.file('/etc/nftables.conf').content_string
    rules = [line.strip() for line in conf.splitlines() if line.strip() and not line.lstrip().startswith('#')]
    assert rules == ['include "/etc/nftables.d/*.nft"'], rules
    run(host, 'nft -c -f /etc/nftables.conf')


@pytest.fixture
def listeners(host):
    units = []
    for port in (OPEN_PORT, CLOSED_PORT):
        unit = 'hh-test-listener-%d' % port
        host.run('systemctl stop %s' % unit)
        run(host, 'systemd-run --unit=%s python3 -m http.server %d --bind 0.0.0.0' % (unit, port))
        units.append(unit)
    for port in (OPEN_PORT, CLOSED_PORT):
        run(host, 'for i in $(seq 50); do ss -Hltn "sport = :%d" | grep -q . && exit 0; sleep 0.1; done; exit 1' % port)
    yield
    for unit in units:
        host.run('systemctl stop %s' % unit)


def test_firewall_effect_from_other_container(host, listeners):
    me = host.backend.get_hostname()
    others = [h for h in HOSTS if h != me]
    if me not in HOSTS:
        pytest.skip('not one of the scenario containers')
    other = testinfra.get_host('docker://%s' % others[0])
    address = run(host, "ip -4 -o addr show scope global | awk '{print $4}' | cut -d/ -f1 | head -1").strip()
    probe = ("python3 -c 'import socket,sys\n"
             "s = socket.socket(); s.settimeout(3)\n"
             "try:\n    s.connect((sys.argv[1], int(sys.argv[2]))); print(\"open\")\n"
             "except Exception as e:\n    print(type(e).__name__)' %s %d")
    assert other.run(probe % (address, OPEN_PORT)).stdout.strip() == 'open'
    assert other.run(probe % (address, 22)).stdout.strip() == 'open'
    # Listening, but not declared: dropped (no answer at all).
    assert other.run(probe % (address, CLOSED_PORT)).stdout.strip() in ('TimeoutError', 'timeout')
    # The listener itself works (loopback is always accepted).
    assert 'Directory listing' in run(host, 'python3 -c "import urllib.request;'
                                            'print(urllib.request.urlopen(\'http://127.0.0.1:%d/\').read().decode())"'
                                      % CLOSED_PORT)


def test_sysctl_settable_keys_in_effect_others_reported(host):
    conf = host.file('/etc/sysctl.d/60-prodready-hardening.conf').content_string
    applied = dict(re.findall(r'^([a-z0-9_.]+) = (.+)$', conf, re.M))
    skipped = re.findall(r'^# ([a-z0-9_.]+) = .*\((.+)\)$', conf, re.M)
    assert applied or skipped
    for key, value in applied.items():
        path = '/proc/sys/' + key.replace('.', '/')
        assert host.file(path).content_string.split() == value.split(), key
    for key, dummy in skipped:
        path = '/proc/sys/' + key.replace('.', '/')
        # Skipped means the host cannot set it: missing or read-only.
        assert host.run('test -w %s' % path).rc != 0, key
    wanted = {'net.ipv4.conf.all.rp_filter', 'net.ipv4.tcp_syncookies', 'kernel.kptr_restrict',
              'fs.protected_symlinks', 'net.ipv4.conf.all.accept_redirects'}
    assert wanted <= set(applied) | {k for k, dummy in skipped}


def test_core_dumps_off(host):
    fresh_sshd(host)
    assert run(host, '%s root@127.0.0.1 ulimit -Hc' % SSH).strip() == '0'
    # A login shell that did not pass through pam_limits still gets soft 0.
    assert run(host, "bash -lc 'ulimit -Sc'").strip() == '0'
    assert run(host, 'systemctl show -p DefaultLimitCORE --value').strip() == '0'
    coredump = host.file('/etc/systemd/coredump.conf.d/60-prodready.conf').content_string
    assert 'Storage=none' in coredump and 'ProcessSizeMax=0' in coredump
    limits = host.file('/etc/security/limits.d/60-prodready-coredumps.conf').content_string
    assert re.search(r'^\*\s+hard\s+core\s+0$', limits, re.M) and re.search(r'^root\s+hard\s+core\s+0$', limits, re.M)
    conf = host.file('/etc/sysctl.d/60-prodready-coredumps.conf').content_string
    if re.search(r'^fs.suid_dumpable = 0$', conf, re.M):
        assert host.file('/proc/sys/fs/suid_dumpable').content_string.strip() == '0'
    else:
        assert '# fs.suid_dumpable = 0' in conf


def test_umask_of_login_shells(host):
    assert run(host, 'bash -lc umask').strip() == '0027'
    host.run('id hh-umask || useradd -m -s /bin/bash hh-umask')
    assert run(host, 'su - hh-umask -c umask').strip() == '0027'
    assert re.search(r'^UMASK\s+027$', host.file('/etc/login.defs').content_string, re.M)


def test_unattended_upgrades_security_only(host):
    assert host.package('unattended-upgrades').is_installed
    auto = host.file('/etc/apt/apt.conf.d/20auto-upgrades').content_string
    assert 'APT::Periodic::Unattended-Upgrade "1";' in auto
    origins = run(host, 'apt-config dump Unattended-Upgrade::Origins-Pattern')
    patterns = re.findall(r'^Unattended-Upgrade::Origins-Pattern:: "(.+)";$', origins, re.M)
    assert patterns and all('label=Debian-Security' in p for p in patterns), patterns
    assert run(host, 'apt-config dump Unattended-Upgrade::Automatic-Reboot').strip().endswith('"false";')
    result = run(host, 'unattended-upgrade --dry-run -d 2>&1')
    assert re.search(r'Allowed origins are: .*security', result), result[-2000:]
    assert host.service('apt-daily-upgrade.timer').is_enabled


def test_login_defs_and_pam(host):
    defs = host.file('/etc/login.defs').content_string
    for key, value in (('PASS_MIN_DAYS', '1'), ('PASS_WARN_AGE', '14'), ('ENCRYPT_METHOD', 'YESCRYPT'),
                       ('SHA_CRYPT_MIN_ROUNDS', '65536')):
        assert re.search(r'^%s\s+%s$' % (key, value), defs, re.M), key
    assert re.search(r'^password\s+requisite\s+pam_pwquality[.]so', host.file('/etc/pam.d/common-password').content_string,
                     re.M)
    quality = run(host, "grep -h '^minlen' /etc/security/pwquality.conf.d/*.conf")
    assert quality.strip() == 'minlen = 12'
    # pam_pwquality judges a short password (root is only warned, users are refused).
    host.run('id hh-pwq || useradd -m -s /bin/bash hh-pwq')
    short = host.run("printf 'Ab1x\\nAb1x\\n' | passwd hh-pwq 2>&1")
    assert 'shorter than 12 characters' in short.stdout + short.stderr, short.stdout + short.stderr
    assert 'session\toptional\t\t\tpam_tmpdir.so' in host.file('/etc/pam.d/common-session').content_string or \
        re.search(r'pam_tmpdir[.]so', host.file('/etc/pam.d/common-session').content_string)
    assert 'Authorised access only' in host.file('/etc/issue.net').content_string


def test_unneeded_kernel_modules_refused(host):
    conf = host.file('/etc/modprobe.d/prodready-disabled.conf').content_string
    for module in ('usb-storage', 'firewire-core', 'dccp', 'sctp', 'rds', 'tipc', 'cramfs', 'freevxfs', 'hfs',
                   'hfsplus', 'jffs2'):
        assert re.search(r'^blacklist %s$' % module, conf, re.M), module
        # What modprobe would do (dry run): run /bin/false instead of loading the module.
        assert run(host, 'modprobe -n -v %s' % module).split() == ['install', '/bin/false'], module


@pytest.fixture
def tampered_package_file(host):
    """A file of the debsums package, changed for the test and restored afterwards."""
    path = '/usr/share/doc/debsums/README'
    run(host, 'cp -p %s /var/tmp/hh-debsums-README' % path)
    run(host, 'echo tampered >> %s' % path)
    yield path
    run(host, 'cp -p /var/tmp/hh-debsums-README %s && rm -f /var/tmp/hh-debsums-README' % path)


def test_debsums_clean_and_periodic_job(host):
    assert run(host, 'debsums -s debsums sysstat openssh-server coreutils').strip() == ''
    assert re.search(r'^CRON_CHECK=weekly$', host.file('/etc/default/debsums').content_string, re.M)
    assert host.service('prodready-debsums.timer').is_enabled
    assert host.service('prodready-debsums.timer').is_running
    run(host, 'systemd-analyze verify --man=no /etc/systemd/system/prodready-debsums.service')


def test_debsums_job_reports_a_changed_file(host, tampered_package_file):
    changed = host.run('debsums -s debsums')
    assert changed.rc != 0 and tampered_package_file in changed.stdout + changed.stderr
    # The job the timer runs (Debian's cron script) logs the changed file to the journal.
    since = run(host, "date '+%Y-%m-%d %H:%M:%S'").strip()
    run(host, 'systemctl start prodready-debsums.service')
    assert run(host, 'systemctl show -p Result --value prodready-debsums.service').strip() == 'success'
    logged = run(host, "journalctl -t debsums --since '%s' --no-pager -o cat" % since)
    assert tampered_package_file in logged, logged


def test_apt_show_versions_and_listchanges(host):
    listing = run(host, 'apt-show-versions sysstat openssh-server')
    for package in ('sysstat', 'openssh-server'):
        assert re.search(r'^%s:\S+/\S+ \S+ (uptodate|upgradeable)' % package, listing, re.M), listing
    assert host.package('apt-listchanges').is_installed
    hooks = run(host, 'apt-config dump DPkg::Pre-Install-Pkgs')
    assert 'apt-listchanges' in hooks, hooks
    assert re.search(r'^which=news$', host.file('/etc/apt/listchanges.conf').content_string, re.M)


def test_sysstat_collects(host):
    assert re.search(r'^ENABLED="true"$', host.file('/etc/default/sysstat').content_string, re.M)
    assert re.search(r'^HISTORY=28$', host.file('/etc/sysstat/sysstat').content_string, re.M)
    for unit in ('sysstat.service', 'sysstat-collect.timer', 'sysstat-summary.timer'):
        assert host.service(unit).is_enabled, unit
    assert host.service('sysstat-collect.timer').is_running
    # Two samples by the unit the timer starts: sar can then compute a CPU average.
    for dummy in range(2):
        run(host, 'systemctl start sysstat-collect.service')
        time.sleep(1.1)
    today = run(host, 'ls -t /var/log/sysstat/sa[0-9]* | head -1').strip()
    assert re.search(r'/sa%s$' % run(host, 'date +%d').strip(), today), today
    assert re.search(r'^Average:\s+all\s', run(host, 'LC_ALL=C sar -u -f %s' % today), re.M)


def test_chkrootkit_installed_without_recommends_and_daily(host):
    assert host.package('chkrootkit').is_installed
    # Installed without recommends: no MTA.
    assert not host.run('dpkg -l exim4-base postfix 2>/dev/null | grep -q ^ii').rc == 0
    assert host.service('chkrootkit.timer').is_enabled and host.service('chkrootkit.timer').is_running
    assert re.search(r'^RUN_DAILY="true"$', host.file('/etc/chkrootkit/chkrootkit.conf').content_string, re.M)


@pytest.fixture
def other_container(host):
    me = host.backend.get_hostname()
    if me not in HOSTS:
        pytest.skip('not one of the scenario containers')
    other = testinfra.get_host('docker://%s' % [h for h in HOSTS if h != me][0])
    other_address = run(other, "ip -4 -o addr show scope global | awk '{print $4}' | cut -d/ -f1 | head -1").strip()
    yield other, other_address
    host.run('fail2ban-client set sshd unbanip %s' % other_address)


def test_assembler_root_only_without_compiler(host):
    # binutils comes with needrestart (Debian 12) or chkrootkit (Debian 13).
    assembler = run(host, 'p=$(command -v as) && readlink -f "$p" || true').strip()
    assert assembler, 'expected binutils on a converged host'
    assert host.run('command -v cc gcc clang').rc != 0
    assert host.file(assembler).mode == 0o750 and host.file(assembler).user == 'root'
    assert assembler in run(host, 'dpkg-statoverride --list %s' % assembler)
    # A user cannot assemble; root can.
    assert host.run("runuser -u nobody -- %s --version" % assembler).rc != 0
    run(host, '%s --version' % assembler)


def test_fail2ban_bans_repeated_ssh_failures_from_another_host(host, other_container):
    other, other_address = other_container
    jail = run(host, 'fail2ban-client status sshd')
    assert 'ssh.service' in jail and 'sshd-session' in jail, jail
    assert host.file('/etc/fail2ban/jail.local').contains('^maxretry = 5$')
    # Start from no ban of the other host (an earlier probe may have left one),
    # so the ban below really runs fail2ban's nftables action.
    host.run('fail2ban-client set sshd unbanip %s' % other_address)
    fresh_sshd(host)
    address = run(host, "ip -4 -o addr show scope global | awk '{print $4}' | cut -d/ -f1 | head -1").strip()
    # Failed logins by an unknown user from the other container until the ban
    # (maxretry 5; OpenSSH 10 may drop some attempts early as a penalty, so
    # the count of tries is not fixed).
    for dummy in range(20):
        if other_address in run(host, 'fail2ban-client status sshd'):
            break
        other.run('%s nosuchuser@%s true' % (SSH, address))
        time.sleep(1)
    status = run(host, 'fail2ban-client status sshd')
    assert other_address in status, status
    # The ban is an nftables set element in fail2ban's own table: the other
    # host's packets to SSH are now refused, the prodready table untouched.
    # fail2ban lists the ban before its action thread has run the nft command.
    for dummy in range(30):
        table = host.run('nft list table inet f2b-table')
        if table.rc == 0 and other_address in table.stdout:
            break
        time.sleep(1)
    assert table.rc == 0 and other_address in table.stdout, (
        table.stdout + table.stderr + run(host, 'fail2ban-client get sshd actions; tail -n 40 /var/log/fail2ban.log'))
    assert run(host, 'nft list table inet prodready')
    refused = other.run("python3 -c 'import socket,sys\n"
                        "s = socket.socket(); s.settimeout(3)\n"
                        "try:\n    s.connect((sys.argv[1], 22)); print(\"open\")\n"
                        "except Exception as e:\n    print(type(e).__name__)' %s" % address).stdout.strip()
    assert refused != 'open', refused
    # Loopback and the host's own addresses are never banned.
    for dummy in range(6):
        host.run('%s nosuchuser@127.0.0.1 true' % SSH)
    time.sleep(2)
    assert '127.0.0.1' not in run(host, 'fail2ban-client status sshd')


def test_aide_reports_a_new_system_file_but_not_app_data(host):
    database = host.file('/var/lib/aide/aide.db')
    assert database.exists and database.size > 0
    timer = host.service('dailyaidecheck.timer')
    assert timer.is_enabled and timer.is_running
    assert host.file('/etc/aide/aide.conf.d/70_prodready_excludes').contains('^!/srv$')
    probes = ('/usr/local/sbin/prodready-aide-probe', '/srv/prodready-aide-probe')
    try:
        for path in probes:
            run(host, 'echo probe > %s' % path)
        # aide's exit status is a bit mask of what it found (1: added files).
        check = host.run('aide --check --config /etc/aide/aide.conf')
        assert check.rc & 1, check.stdout + check.stderr
        assert probes[0] in check.stdout
        assert probes[1] not in check.stdout
    finally:
        host.run('rm -f %s %s' % probes)
