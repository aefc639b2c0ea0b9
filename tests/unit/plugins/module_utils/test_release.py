# Copyright (c) 2026, prodready.vps contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Release layout, sources, snapshots, retention and the deploy/rollback flows with a fake systemd and fake gates."""

import io
import json
import os
import stat
import tarfile
import zipfile

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from ansible_collections.prodready.vps.plugins.module_utils import release as rel


# --- helpers -------------------------------------------------------------------------------------

def make_app(path, version, healthy=True, extra=None):
    """A source directory whose content says whether the fake gate passes."""
    os.makedirs(os.path.join(path, 'lib'), exist_ok=True)
    with open(os.path.join(path, 'app.py'), 'w') as handle:
        handle.write('VERSION = %r\n' % version)
    with open(os.path.join(path, 'health'), 'w') as handle:
        handle.write('ok\n' if healthy else 'broken\n')
    with open(os.path.join(path, 'lib', 'util.py'), 'w') as handle:
        handle.write('# util\n')
    os.chmod(os.path.join(path, 'app.py'), 0o755)
    for name, content in (extra or {}).items():
        with open(os.path.join(path, name), 'w') as handle:
            handle.write(content)
    return str(path)


class FakeHost(object):
    """systemctl/journalctl stand-in: records calls, knows one installed unit."""

    def __init__(self, installed=('app.service',)):
        self.calls = []
        self.installed = set(installed)
        self.pid = 100

    def check_unit(self, unit):
        self.calls.append(('check', unit))
        if unit not in self.installed:
            raise rel.ReleaseError('unit %s is not installed' % unit)
        return {'LoadState': 'loaded'}

    def daemon_reload(self):
        self.calls.append(('daemon-reload',))

    def restart(self, unit, mode):
        self.check_unit(unit)
        self.calls.append((mode, unit))
        self.pid += 1
        return self.pid - 1

    def wait_replaced(self, unit, old_pid, timeout):
        return True

    def starter(self, unit):
        return lambda: False

    def journal(self, unit, lines, until=None):
        self.calls.append(('journal', unit, lines))
        return ['line %d of %s' % (i, unit) for i in range(3)]

    def build(self, command, cwd, timeout, env):
        self.calls.append(('build', command, cwd))
        return rel.run_process(['/bin/sh', '-c', command], cwd=cwd, timeout=timeout, env=env)

    def names(self):
        return [c[0] for c in self.calls]


class FakeGate(object):
    """Passes when <root>/current/health says ok and the env file has no BROKEN=1 line."""

    runs = []

    def __init__(self, root, env_file):
        self.root = root
        self.env_file = env_file

    def run(self):
        try:
            with open(os.path.join(self.root, 'current', 'health')) as handle:
                ok = handle.read().strip() == 'ok'
        except IOError:
            ok = False
        if self.env_file and os.path.exists(self.env_file):
            with open(self.env_file) as handle:
                ok = ok and 'BROKEN="1"' not in handle.read()
        target = os.readlink(os.path.join(self.root, 'current'))
        FakeGate.runs.append((target, ok))
        return {'verdict': 'passed' if ok else 'failed', 'passed': ok,
                'reason': 'fake gate on %s' % target, 'rounds': 1, 'successes': int(ok), 'percent': 100.0 * ok,
                'seconds': 0.1, 'started_at': 2000.0, 'ended_at': 2000.1,
                'first_success_after': 0.05 if ok else None, 'settings': {},
                'last': [{'check': 'fake', 'ok': ok, 'status': 200 if ok else 500}], 'history': []}


@pytest.fixture
def env(tmp_path):
    root = tmp_path / 'srv' / 'app'
    etc = tmp_path / 'etc'
    (etc / 'app.service.d').mkdir(parents=True)
    (etc / 'app.service').write_text('[Service]\nExecStart=/bin/true\n')
    (etc / 'app.env').write_text('APP_PORT="8000"\n')
    os.chmod(str(etc / 'app.env'), 0o640)
    FakeGate.runs = []

    class Env(object):
        pass

    e = Env()
    e.tmp = tmp_path
    e.root = str(root)
    e.env_file = str(etc / 'app.env')
    e.unit = str(etc / 'app.service')
    e.dropins = str(etc / 'app.service.d')
    e.metrics = str(tmp_path / 'textfile')
    e.host = FakeHost()
    e.clock = [1700000000.0]

    def params(**extra):
        p = {'root': e.root, 'service': 'app.service', 'restart': 'restart', 'env_file': e.env_file,
             'unit_files': [e.unit, e.dropins], 'health': {'checks': [{'url': 'http://fake/'}], 'timeout': 5},
             'keep_releases': 3, 'keep_failed': 2, 'deployed_by': 'tester@ci', 'journal_lines': 50,
             'metrics_dir': e.metrics, 'check_mode': False}
        p.update(extra)
        return p

    def manager(**extra):
        p = params(**extra)

        def wall():
            e.clock[0] += 1
            return e.clock[0]

        return rel.Manager(p, e.host, lambda health, starting: FakeGate(e.root, p.get('env_file')), wall=wall)

    def source(name, healthy=True, extra=None):
        return make_app(str(tmp_path / 'src' / name), name, healthy, extra)

    e.params = params
    e.manager = manager
    e.source = source
    return e


def deploy(e, name, healthy=True, **extra):
    return e.manager(source=e.source(name, healthy), release_id=name, **extra).deploy()


def current(e):
    return os.readlink(os.path.join(e.root, 'current'))


def manifest(e, rid):
    with open(os.path.join(e.root, 'manifests', rid + '.json')) as handle:
        return json.load(handle)


# --- sources ---------------------------------------------------------------------------------------

def test_tree_checksum_is_stable_and_sees_content_mode_and_links(tmp_path):
    src = make_app(str(tmp_path / 'a'), 'v1')
    first = rel.tree_checksum(src)
    assert first == rel.tree_checksum(src)
    os.utime(os.path.join(src, 'app.py'), (1, 1))  # times are not content
    assert rel.tree_checksum(src) == first
    os.chmod(os.path.join(src, 'app.py'), 0o644)
    assert rel.tree_checksum(src) != first
    second = rel.tree_checksum(src)
    os.symlink('app.py', os.path.join(src, 'link'))
    assert rel.tree_checksum(src) != second
    assert rel.tree_checksum(src, exclude=('link',)) == second


def test_git_checkout_leaves_git_out_and_records_the_commit(tmp_path):
    src = make_app(str(tmp_path / 'checkout'), 'v1')
    plain = rel.tree_checksum(src)
    git = os.path.join(src, '.git')
    os.makedirs(os.path.join(git, 'refs', 'heads'))
    with open(os.path.join(git, 'HEAD'), 'w') as handle:
        handle.write('ref: refs/heads/main\n')
    with open(os.path.join(git, 'refs', 'heads', 'main'), 'w') as handle:
        handle.write('a' * 40 + '\n')
    kind, checksum, revision = rel.inspect_source(src)
    assert kind == 'git' and revision == 'a' * 40 and checksum == 'sha256:' + plain
    os.unlink(os.path.join(git, 'refs', 'heads', 'main'))
    with open(os.path.join(git, 'packed-refs'), 'w') as handle:
        handle.write('# pack-refs with: peeled\n%s refs/heads/main\n' % ('b' * 40))
    assert rel.git_revision(src) == 'b' * 40
    with open(os.path.join(git, 'HEAD'), 'w') as handle:
        handle.write('c' * 40 + '\n')  # detached
    assert rel.git_revision(src) == 'c' * 40


def test_copy_tree_keeps_modes_and_symlinks(tmp_path):
    src = make_app(str(tmp_path / 'a'), 'v1')
    os.symlink('lib/util.py', os.path.join(src, 'u'))
    dst = tmp_path / 'b'
    dst.mkdir()
    rel.copy_tree(src, str(dst))
    assert stat.S_IMODE(os.stat(str(dst / 'app.py')).st_mode) == 0o755
    assert os.readlink(str(dst / 'u')) == 'lib/util.py'
    assert rel.tree_checksum(str(dst)) == rel.tree_checksum(src)


def test_special_files_are_refused(tmp_path):
    src = make_app(str(tmp_path / 'a'), 'v1')
    os.mkfifo(os.path.join(src, 'fifo'))
    with pytest.raises(rel.ReleaseError, match='not a regular file'):
        rel.tree_checksum(src)


def tar_bytes(entries, mode='w:gz'):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:
        for entry in entries:
            info = tarfile.TarInfo(entry['name'])
            info.type = entry.get('type', tarfile.REGTYPE)
            info.mode = entry.get('mode', 0o644)
            info.uid = 4242
            data = entry.get('data', b'')
            if info.type in (tarfile.SYMTYPE, tarfile.LNKTYPE):
                info.linkname = entry['link']
                tar.addfile(info)
            elif info.type == tarfile.DIRTYPE:
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_tar_archive_extracts_with_modes_links_and_strip(tmp_path):
    archive = tmp_path / 'app.tar.gz'
    archive.write_bytes(tar_bytes([
        {'name': 'app-1.0', 'type': tarfile.DIRTYPE, 'mode': 0o755},
        {'name': 'app-1.0/run.sh', 'data': b'#!/bin/sh\n', 'mode': 0o755},
        {'name': 'app-1.0/lib/x.py', 'data': b'x = 1\n'},
        {'name': 'app-1.0/x-link', 'type': tarfile.SYMTYPE, 'link': 'lib/x.py'},
        {'name': 'app-1.0/x-hard', 'type': tarfile.LNKTYPE, 'link': 'app-1.0/lib/x.py'},
    ]))
    kind, checksum, _revision = rel.inspect_source(str(archive))
    assert kind == 'archive' and checksum == 'sha256:' + rel.sha256_file(str(archive))
    dst = tmp_path / 'out'
    dst.mkdir()
    rel.extract_archive(str(archive), str(dst), strip_components=1)
    assert (dst / 'run.sh').read_bytes() == b'#!/bin/sh\n'
    assert stat.S_IMODE((dst / 'run.sh').stat().st_mode) == 0o755
    assert (dst / 'lib' / 'x.py').stat().st_uid == os.getuid()  # archive owners are ignored
    assert os.readlink(str(dst / 'x-link')) == 'lib/x.py'
    assert (dst / 'x-hard').read_bytes() == b'x = 1\n'


@pytest.mark.parametrize('entries, message', [
    ([{'name': '../evil', 'data': b'x'}], 'leaves the release'),
    ([{'name': '/etc/evil', 'data': b'x'}], 'leaves the release'),
    ([{'name': 'link', 'type': tarfile.SYMTYPE, 'link': '/etc/passwd'}], 'links outside'),
    ([{'name': 'a/link', 'type': tarfile.SYMTYPE, 'link': '../../x'}], 'links outside'),
    ([{'name': 'dev', 'type': tarfile.CHRTYPE}], 'special file'),
    ([{'name': 'h', 'type': tarfile.LNKTYPE, 'link': 'nothing'}], 'hard link'),
])
def test_tar_archive_escapes_are_refused(tmp_path, entries, message):
    archive = tmp_path / 'bad.tar'
    archive.write_bytes(tar_bytes(entries, 'w'))
    dst = tmp_path / 'out'
    dst.mkdir()
    with pytest.raises(rel.ReleaseError, match=message):
        rel.extract_archive(str(archive), str(dst))
    assert not (tmp_path / 'evil').exists()


def test_file_through_a_symlink_to_a_sibling_directory_stays_inside(tmp_path):
    # a -> b (inside), then a/f: written to b/f, inside the release
    archive = tmp_path / 'ok.tar'
    archive.write_bytes(tar_bytes([{'name': 'b', 'type': tarfile.DIRTYPE, 'mode': 0o755},
                                   {'name': 'a', 'type': tarfile.SYMTYPE, 'link': 'b'},
                                   {'name': 'a/f', 'data': b'inside'}], 'w'))
    dst = tmp_path / 'out'
    dst.mkdir()
    rel.extract_archive(str(archive), str(dst))
    assert (dst / 'b' / 'f').read_bytes() == b'inside'


def test_zip_archive_extracts_and_refuses_escapes(tmp_path):
    good = tmp_path / 'app.zip'
    with zipfile.ZipFile(str(good), 'w') as archive:
        info = zipfile.ZipInfo('bin/run')
        info.create_system = 3
        info.external_attr = (stat.S_IFREG | 0o750) << 16
        archive.writestr(info, '#!/bin/sh\n')
        archive.writestr('README', 'hello')
        link = zipfile.ZipInfo('readme-link')
        link.create_system = 3
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, 'README')
    dst = tmp_path / 'out'
    dst.mkdir()
    rel.extract_archive(str(good), str(dst))
    assert stat.S_IMODE((dst / 'bin' / 'run').stat().st_mode) == 0o750
    assert (dst / 'README').read_text() == 'hello' and os.readlink(str(dst / 'readme-link')) == 'README'
    bad = tmp_path / 'bad.zip'
    with zipfile.ZipFile(str(bad), 'w') as archive:
        archive.writestr('../../evil', 'x')
    with pytest.raises(rel.ReleaseError, match='leaves the release'):
        rel.extract_archive(str(bad), str(tmp_path / 'out'))


def test_unknown_sources_are_refused(tmp_path):
    (tmp_path / 'notes.txt').write_text('hello')
    with pytest.raises(rel.ReleaseError, match='neither a directory nor'):
        rel.inspect_source(str(tmp_path / 'notes.txt'))
    with pytest.raises(rel.ReleaseError, match='does not exist'):
        rel.inspect_source(str(tmp_path / 'missing'))
    with pytest.raises(rel.ReleaseError, match='absolute path'):
        rel.inspect_source('relative/dir')


# --- environment files and snapshots -------------------------------------------------------------------

def test_env_update_replaces_appends_and_keeps_other_lines():
    text = '# comment\nAPP_PORT="8000"\nexport APP_VERSION=1\nAPP_VERSION=dup\n'
    new, changed = rel.env_update(text, {'APP_VERSION': '2', 'NEW': 'a "b" \\c'})
    assert new == '# comment\nAPP_PORT="8000"\nAPP_VERSION="2"\nNEW="a \\"b\\" \\\\c"\n'
    assert changed == ['APP_VERSION', 'NEW']
    again, changed = rel.env_update(new, {'APP_VERSION': '2'})
    assert again == new and changed == []
    with pytest.raises(rel.ReleaseError, match='multi-line'):
        rel.env_update('', {'A': 'x\ny'})
    with pytest.raises(rel.ReleaseError, match='not valid'):
        rel.env_update('', {'1A': 'x'})


def test_snapshot_restores_changed_removed_and_added_files(tmp_path):
    env_file = tmp_path / 'app.env'
    env_file.write_text('A="1"\n')
    os.chmod(str(env_file), 0o640)
    dropins = tmp_path / 'app.service.d'
    dropins.mkdir()
    (dropins / '10-a.conf').write_text('[Service]\n')
    missing = tmp_path / 'app.socket'
    snap = str(tmp_path / 'snap')
    rel.take_snapshot(snap, [str(env_file), str(dropins), str(missing)])
    assert rel.snapshot_drift(snap) == []
    env_file.write_text('A="2"\n')
    (dropins / '10-a.conf').unlink()
    (dropins / '20-new.conf').write_text('[Service]\nX=1\n')
    missing.write_text('[Socket]\n')
    drift = rel.snapshot_drift(snap)
    assert sorted(drift) == sorted([str(env_file), str(dropins / '10-a.conf'), str(dropins / '20-new.conf'),
                                    str(missing)])
    restored = rel.restore_snapshot(snap)
    assert sorted(restored) == sorted(drift)
    assert env_file.read_text() == 'A="1"\n' and stat.S_IMODE(env_file.stat().st_mode) == 0o640
    assert sorted(os.listdir(str(dropins))) == ['10-a.conf'] and not missing.exists()
    assert rel.snapshot_drift(snap) == []


# --- layout ------------------------------------------------------------------------------------------

def test_switch_makes_a_relative_link_and_refuses_foreign_current(tmp_path):
    store = rel.Store(str(tmp_path / 'app'))
    store.ensure()
    os.mkdir(store.release_path('r1'))
    os.mkdir(store.release_path('r2'))
    store.switch('r1')
    assert os.readlink(store.link) == 'releases/r1' and store.current() == 'r1'
    store.switch('r2')
    assert store.current() == 'r2' and not [n for n in os.listdir(store.root) if '.tmp' in n]
    with pytest.raises(rel.ReleaseError, match='does not exist'):
        store.switch('r3')
    os.unlink(store.link)
    os.symlink('/etc', store.link)
    with pytest.raises(rel.ReleaseError, match='outside'):
        store.current()
    os.unlink(store.link)
    os.mkdir(store.link)
    with pytest.raises(rel.ReleaseError, match='not a symlink'):
        store.switch('r1')


@pytest.mark.parametrize('root', ['/', 'relative', '', None])
def test_bad_roots_are_refused(root):
    with pytest.raises(rel.ReleaseError, match='absolute path other than /'):
        rel.Store(root)


@pytest.mark.parametrize('rid', ['../x', 'a/b', '.hidden', '', 'x' * 129, 'a b'])
def test_bad_release_ids_are_refused(rid):
    with pytest.raises(rel.ReleaseError, match='not valid'):
        rel.check_id(rid)


def test_shared_paths_become_relative_links(env):
    e = env
    src = e.source('v1', extra={'config.ini': 'from source'})
    os.makedirs(os.path.join(src, 'media'))
    e.manager(source=src, release_id='v1', shared_paths=['media', 'var/log', 'config.ini']).deploy()
    release = os.path.join(e.root, 'releases', 'v1')
    assert os.readlink(os.path.join(release, 'media')) == '../../shared/media'
    assert os.readlink(os.path.join(release, 'var', 'log')) == '../../../shared/var/log'
    assert os.path.isdir(os.path.join(e.root, 'shared', 'var', 'log'))
    with pytest.raises(rel.ReleaseError, match='relative path'):
        e.manager(source=src, shared_paths=['../escape'])


# --- selection and retention -----------------------------------------------------------------------------

def manifests_of(*specs):
    out = {}
    for seq, (rid, verdict) in enumerate(specs, 1):
        out[rid] = {'id': rid, 'seq': seq, 'verdict': verdict}
    return out


def test_previous_release_follows_manifest_order_and_verdicts():
    ms = manifests_of(('a', 'passed'), ('b', 'failed'), ('c', 'passed'), ('d', 'passed'))
    assert rel.previous_release(ms, 'd') == 'c'
    assert rel.previous_release(ms, 'c') == 'a'  # b failed
    assert rel.previous_release(ms, 'a') is None
    assert rel.previous_release(ms, None) == 'd'
    ms['old'] = {'id': 'old', 'seq': None, 'verdict': 'unknown'}  # an ansistrano release: oldest
    assert rel.previous_release(ms, 'a') == 'old'


def test_automatic_target_prefers_the_release_that_was_serving():
    ms = manifests_of(('a', 'passed'), ('b', 'passed'), ('c', 'deploying'))
    assert rel.automatic_target(ms, 'c', 'a') == 'a'  # after a manual rollback from b to a
    assert rel.automatic_target(ms, 'c', 'b') == 'b'
    ms['a']['verdict'] = 'failed'
    assert rel.automatic_target(ms, 'c', 'a') == 'b'
    assert rel.automatic_target(ms, 'c', None) == 'b'
    assert rel.automatic_target(manifests_of(('c', 'deploying')), 'c', None) is None


def test_plan_prune_keeps_newest_and_protected():
    ms = manifests_of(('a', 'passed'), ('b', 'failed'), ('c', 'passed'), ('d', 'build_failed'), ('e', 'passed'),
                      ('f', 'failed'), ('g', 'passed'))
    assert rel.plan_prune(ms, 2, 1, protect={'g'}) == ['a', 'b', 'c', 'd']
    # protected releases count: current g and rollback target a are the two kept
    assert rel.plan_prune(ms, 2, 1, protect={'g', 'a'}) == ['b', 'c', 'd', 'e']
    assert rel.plan_prune(ms, 1, 0, protect={'g', 'a', 'f'}) == ['b', 'c', 'd', 'e']
    assert rel.plan_prune(ms, 5, 5) == []
    with pytest.raises(rel.ReleaseError):
        rel.plan_prune(ms, 0, 1)


# --- deploy flows ----------------------------------------------------------------------------------

def test_good_deploy_switches_restarts_gates_records_and_writes_metrics(env):
    e = env
    result = deploy(e, 'v1')
    assert result['changed'] and result['verdict'] == 'passed' and result['current'] == 'v1'
    assert current(e) == 'releases/v1'
    assert e.host.names() == ['check', 'check', 'restart']
    m = manifest(e, 'v1')
    assert m['verdict'] == 'passed' and m['seq'] == 1 and m['deployed_by'] == 'tester@ci'
    assert m['checksum'].startswith('sha256:') and m['source_type'] == 'directory' and m['previous'] is None
    assert m['created'].endswith('Z') and m['activations'][0]['kind'] == 'deploy'
    prom = open(os.path.join(e.metrics, 'prodready_deploy_app.prom')).read()
    assert 'prodready_deploy_release_info{release="v1",service="app"} 1' in prom
    assert 'prodready_deploy_total{service="app"} 1' in prom and 'prodready_deploy_healthy{service="app"} 1' in prom
    assert 'prodready_deploy_last_success_timestamp_seconds{service="app"} 17' in prom


def test_same_content_again_changes_nothing_whatever_the_id(env):
    e = env
    deploy(e, 'v1')
    calls = list(e.host.calls)
    before = open(os.path.join(e.metrics, 'prodready_deploy_app.prom')).read()
    again = e.manager(source=e.source('v1'), release_id='20991231T000000Z').deploy()
    assert not again['changed'] and again['current'] == 'v1' and 'nothing to do' in again['msg']
    assert sorted(os.listdir(os.path.join(e.root, 'releases'))) == ['v1']
    assert [c for c in e.host.calls if c[0] != 'check'] == [c for c in calls if c[0] != 'check']
    assert open(os.path.join(e.metrics, 'prodready_deploy_app.prom')).read() == before
    forced = e.manager(source=e.source('v1'), release_id='v1', force=True).deploy()
    assert forced['changed'] and forced['verdict'] == 'passed'


def test_environment_is_part_of_the_release(env):
    e = env
    deploy(e, 'v1', environment={'APP_VERSION': '1'})
    assert 'APP_VERSION="1"' in open(e.env_file).read() and 'APP_PORT="8000"' in open(e.env_file).read()
    assert stat.S_IMODE(os.stat(e.env_file).st_mode) == 0o640
    same = e.manager(source=e.source('v1'), environment={'APP_VERSION': '1'}).deploy()
    assert not same['changed']
    changed = e.manager(source=e.source('v1'), environment={'APP_VERSION': '2'}).deploy()
    assert changed['changed'] and changed['release'] != 'v1' and 'APP_VERSION="2"' in open(e.env_file).read()
    with pytest.raises(rel.ReleaseError, match='other content'):
        e.manager(source=e.source('v1'), release_id='v1', environment={'APP_VERSION': '3'}).deploy()


def test_failed_gate_rolls_back_restores_files_and_fails_with_evidence(env):
    e = env
    deploy(e, 'v1')
    env_before = open(e.env_file).read()
    unit_before = open(e.unit).read()
    e.host.calls = []
    # the bad release also brings a config change and a new drop-in (made by its build)
    build = 'printf "[Service]\\nX=1\\n" > %s/50-new.conf && echo built' % e.dropins
    with pytest.raises(rel.Failure) as failure:
        e.manager(source=e.source('v2', healthy=False), release_id='v2', build=build,
                  environment={'BROKEN': '1'}).deploy()
    msg = failure.value.msg
    result = failure.value.result
    assert 'release v2 failed its health gate' in msg and 'rolled back to v1, which passes' in msg
    assert result['rolled_back'] and result['current'] == 'v1' and result['rollback_target'] == 'v1'
    assert current(e) == 'releases/v1'
    assert open(e.env_file).read() == env_before and open(e.unit).read() == unit_before
    assert os.listdir(e.dropins) == []
    assert sorted(result['restored_files']) == sorted([e.env_file, os.path.join(e.dropins, '50-new.conf')])
    names = e.host.names()
    # the new unit drop-in was loaded before the switch and unloaded after the restore
    assert names.count('daemon-reload') == 2 and names.count('restart') == 2
    # the journal (up to the verdict) is read once the rollback's restart is queued
    assert names.index('journal') == len(names) - 1 - names[::-1].index('restart') + 1
    assert [run[0] for run in FakeGate.runs] == ['releases/v1', 'releases/v2', 'releases/v1']
    evidence = result['evidence']
    assert evidence['journal'] == ['line 0 of app.service', 'line 1 of app.service', 'line 2 of app.service']
    assert evidence['gate']['last'][0]['status'] == 500
    m2 = manifest(e, 'v2')
    assert m2['verdict'] == 'failed' and m2['evidence']['journal'] and m2['build_output'] == ['built']
    m1 = manifest(e, 'v1')
    assert m1['verdict'] == 'passed' and m1['last_check']['verdict'] == 'passed'
    assert m1['activations'][-1]['kind'] == 'automatic-rollback'
    assert result['recovery_seconds'] == pytest.approx(-0.05)  # fake gate times: 2000.05 - 2000.1
    prom = open(os.path.join(e.metrics, 'prodready_deploy_app.prom')).read()
    assert 'prodready_deploy_rollbacks_total{kind="automatic",service="app"} 1' in prom
    assert 'prodready_deploy_failures_total{service="app"} 1' in prom
    assert 'prodready_deploy_release_info{release="v1",service="app"} 1' in prom


def test_when_the_old_release_fails_too_it_says_so_and_stays_there(env):
    e = env
    deploy(e, 'v1')
    # something outside the releases breaks v1 as well (the env file keeps BROKEN after the restore)
    with open(e.env_file, 'a') as handle:
        handle.write('BROKEN="1"\n')
    with pytest.raises(rel.Failure) as failure:
        deploy(e, 'v2', healthy=False)
    assert 'BUT v1 FAILS ITS HEALTH GATE TOO' in failure.value.msg and 'stays on v1' in failure.value.msg
    assert current(e) == 'releases/v1'
    assert manifest(e, 'v1')['last_check']['verdict'] == 'failed'
    prom = open(os.path.join(e.metrics, 'prodready_deploy_app.prom')).read()
    assert 'prodready_deploy_healthy{service="app"} 0' in prom


def test_first_deploy_failing_has_nothing_to_roll_back_to(env):
    e = env
    with pytest.raises(rel.Failure) as failure:
        deploy(e, 'v1', healthy=False)
    assert 'nothing to roll back to' in failure.value.msg and failure.value.result['current'] == 'v1'
    assert manifest(e, 'v1')['verdict'] == 'failed'


def test_build_failure_switches_nothing(env):
    e = env
    deploy(e, 'v1')
    with pytest.raises(rel.Failure) as failure:
        e.manager(source=e.source('v2'), release_id='v2', build='echo compiling; echo oops >&2; exit 4').deploy()
    assert 'build of release v2 failed (exit status 4)' in failure.value.msg
    assert failure.value.result['build_output'] == ['compiling', 'oops']
    assert current(e) == 'releases/v1' and manifest(e, 'v2')['verdict'] == 'build_failed'
    assert 'restart' not in [c[0] for c in e.host.calls[-2:]]


def test_build_runs_in_the_final_release_directory(env):
    e = env
    deploy(e, 'v1', build='pwd > built-in && echo "$RELEASE_ID" >> built-in')
    with open(os.path.join(e.root, 'releases', 'v1', 'built-in')) as handle:
        assert handle.read().split() == [os.path.join(e.root, 'releases', 'v1'), 'v1']


def test_missing_unit_is_refused_before_anything_changes(env):
    e = env
    e.host.installed = set()
    with pytest.raises(rel.ReleaseError, match='not installed'):
        deploy(e, 'v1')
    assert not os.path.exists(os.path.join(e.root, 'releases'))


def test_check_mode_writes_nothing_and_reports_the_plan(env):
    e = env
    result = e.manager(source=e.source('v1'), release_id='v1', check_mode=True).deploy()
    assert result['changed'] and not os.path.exists(e.root)
    assert any('switch' in step and 'v1' in step for step in result['plan'])
    assert e.host.names() == ['check']  # no restart
    deploy(e, 'v1')
    plan = e.manager(source=e.source('v2'), release_id='v2', check_mode=True,
                     environment={'APP_VERSION': '2'}).deploy()
    assert any('on failure: roll back to v1' in step for step in plan['plan'])
    assert any('set APP_VERSION in' in step for step in plan['plan'])
    assert sorted(os.listdir(os.path.join(e.root, 'releases'))) == ['v1'] and 'APP_VERSION' not in open(e.env_file).read()
    # check mode on a fresh host whose source does not exist yet
    fresh = e.manager(root=str(e.tmp / 'fresh'), source=str(e.tmp / 'nowhere'), check_mode=True).deploy()
    assert fresh['changed'] and fresh['plan']


def test_manual_rollback_to_previous_and_named(env):
    e = env
    for name in ('v1', 'v2', 'v3'):
        deploy(e, name, environment={'APP_VERSION': name})
    result = e.manager(state='rolled_back').rollback()
    assert result['changed'] and result['current'] == 'v2' and current(e) == 'releases/v2'
    # v3 was deployed right after v2: its snapshot (v2's environment) comes back
    assert 'APP_VERSION="v2"' in open(e.env_file).read()
    assert result['restored_files'] == [e.env_file]
    named = e.manager(target='v1').rollback()
    assert named['current'] == 'v1' and current(e) == 'releases/v1'
    assert 'APP_VERSION="v1"' in open(e.env_file).read()  # v2 was deployed right after v1: its snapshot
    assert e.manager(target='v1').rollback()['changed'] is False
    with pytest.raises(rel.ReleaseError, match='no healthy release was deployed before v1'):
        e.manager().rollback()
    with pytest.raises(rel.ReleaseError, match='does not exist'):
        e.manager(target='v9').rollback()
    plan = e.manager(target='v3', check_mode=True).rollback()
    assert plan['changed'] and current(e) == 'releases/v1'
    assert manifest(e, 'v2')['rolled_back_at'] > 0
    # forward to v3: v1 was not deployed right before v3, so the files stay as they are (with a warning)
    forward = e.manager(target='v3')
    assert forward.rollback()['current'] == 'v3' and 'APP_VERSION="v1"' in open(e.env_file).read()
    assert 'kept as they are' in forward.warnings[0]


def test_rollback_to_a_failed_release_needs_force(env):
    e = env
    deploy(e, 'v1')
    with pytest.raises(rel.Failure):
        deploy(e, 'v2', healthy=False)
    with pytest.raises(rel.ReleaseError, match='verdict failed'):
        e.manager(target='v2').rollback()


def test_deploy_after_a_manual_rollback_rolls_back_to_the_chosen_release(env):
    e = env
    deploy(e, 'v1')
    deploy(e, 'v2')
    e.manager(target='v1').rollback()
    with pytest.raises(rel.Failure) as failure:
        deploy(e, 'v3', healthy=False)
    assert failure.value.result['rollback_target'] == 'v1' and current(e) == 'releases/v1'


def test_retention_keeps_n_healthy_and_failed_up_to_their_limit(env):
    e = env
    for name in ('v1', 'v2', 'v3', 'v4'):
        deploy(e, name, keep_releases=2, keep_failed=1)
    assert sorted(os.listdir(os.path.join(e.root, 'releases'))) == ['v3', 'v4']
    assert not os.path.exists(os.path.join(e.root, 'manifests', 'v1.json'))
    assert not os.path.exists(os.path.join(e.root, 'snapshots', 'v1'))
    for name in ('b1', 'b2'):
        with pytest.raises(rel.Failure):
            deploy(e, name, healthy=False, keep_releases=2, keep_failed=1)
    assert sorted(os.listdir(os.path.join(e.root, 'releases'))) == ['b2', 'v3', 'v4']


def test_redeploying_an_old_release_moves_it_to_the_end(env):
    e = env
    deploy(e, 'v1')
    deploy(e, 'v2')
    again = deploy(e, 'v1')
    assert again['changed'] and again['current'] == 'v1' and manifest(e, 'v1')['seq'] == 3
    assert e.manager().list_releases()['previous'] == 'v2'


def test_ansistrano_tree_is_taken_over(env):
    e = env
    old = os.path.join(e.root, 'releases', '20250101000000Z')
    make_app(old, 'ansistrano')
    os.makedirs(os.path.join(e.root, 'shared'))
    os.symlink(old, os.path.join(e.root, 'current'))  # ansistrano's absolute link
    listing = e.manager().list_releases()
    assert listing['current'] == '20250101000000Z' and listing['releases'][0]['verdict'] == 'unknown'
    with pytest.raises(rel.Failure) as failure:
        deploy(e, 'v1', healthy=False)
    assert failure.value.result['rollback_target'] == '20250101000000Z'
    assert current(e) == 'releases/20250101000000Z'


def test_listed_reports_newest_first_with_flags(env):
    e = env
    deploy(e, 'v1')
    deploy(e, 'v2')
    listing = e.manager().list_releases()
    assert [(r['id'], r['current'], r['rollback_target']) for r in listing['releases']] == [
        ('v2', True, False), ('v1', False, True)]
    assert listing['current'] == 'v2' and listing['previous'] == 'v1'
    assert e.manager(root=str(e.tmp / 'none')).list_releases()['releases'] == []


def test_lock_keeps_a_second_run_out(env):
    e = env
    deploy(e, 'v1')
    holder = rel.Store(e.root)
    holder.lock()
    try:
        with pytest.raises(rel.ReleaseError, match='another deploy or rollback'):
            e.manager(source=e.source('v2'), lock_timeout=0.3).deploy()
    finally:
        holder.unlock()


def test_no_service_and_no_checks_means_unchecked(env):
    e = env
    result = e.manager(source=e.source('v1'), service=None, health=None, env_file=None, unit_files=[]).deploy()
    assert result['verdict'] == 'unchecked' and e.host.calls == []
    assert manifest(e, result['release'])['verdict'] == 'unchecked'


# --- property: retention never removes what a rollback needs ------------------------------------------------

class ReleaseMachine(RuleBasedStateMachine):
    """Random deploys (good and bad), manual rollbacks and retention limits against the real files."""

    def __init__(self):
        super(ReleaseMachine, self).__init__()
        import tempfile
        self.tmp = tempfile.mkdtemp(prefix='release-prop-')
        self.root = os.path.join(self.tmp, 'app')
        self.number = 0
        self.host = FakeHost()
        FakeGate.runs = []

    def teardown(self):
        import shutil
        shutil.rmtree(self.tmp, ignore_errors=True)

    def manager(self, **extra):
        p = {'root': self.root, 'service': 'app.service', 'health': {'checks': [{'url': 'http://fake/'}]},
             'keep_releases': self.keep, 'keep_failed': self.keep_failed, 'metrics_dir': '', 'check_mode': False}
        p.update(extra)
        return rel.Manager(p, self.host, lambda health, starting: FakeGate(self.root, None))

    def store(self):
        return rel.Store(self.root)

    @initialize(keep=st.integers(1, 3), keep_failed=st.integers(0, 2))
    def setup(self, keep, keep_failed):
        self.keep = keep
        self.keep_failed = keep_failed
        self.expected_current = None

    @rule(healthy=st.booleans())
    def deploy(self, healthy):
        self.number += 1
        rid = 'r%03d' % self.number
        src = make_app(os.path.join(self.tmp, 'src', rid), rid, healthy)
        before = self.store().current() if os.path.isdir(self.root) else None
        manifests = self.store().manifests() if os.path.isdir(self.root) else {}
        target = rel.automatic_target(dict(manifests, **{rid: {'id': rid, 'seq': 10 ** 6, 'verdict': 'deploying'}}),
                                      rid, before)
        try:
            self.manager(source=src, release_id=rid).deploy()
            assert healthy
            self.expected_current = rid
        except rel.Failure as failure:
            assert not healthy
            # back on the release a rollback goes to; still there after retention
            self.expected_current = target or rid
            assert failure.result['current'] == self.expected_current
            assert os.path.isdir(self.store().release_path(self.expected_current))
            # the failed release survives its own deploy (the release being deployed), with its evidence
            assert os.path.isdir(self.store().release_path(rid))
            assert self.store().manifests()[rid]['verdict'] == 'failed'

    @rule()
    def rollback_previous(self):
        if not os.path.isdir(self.root):
            return
        store = self.store()
        target = rel.previous_release(store.manifests(), store.current())
        if target is None:
            return
        self.manager().rollback()
        self.expected_current = target

    @rule(pick=st.integers(0, 50))
    def rollback_named(self, pick):
        if not os.path.isdir(self.root):
            return
        store = self.store()
        good = [m['id'] for m in rel.ordered(store.manifests()) if rel.is_good(m)]
        if not good:
            return
        target = good[pick % len(good)]
        self.manager(target=target).rollback()
        self.expected_current = target

    @invariant()
    def current_and_rollback_target_exist(self):
        if not os.path.isdir(self.root):
            return
        store = self.store()
        cur = store.current()
        assert cur == self.expected_current
        manifests = store.manifests()
        assert cur in manifests and os.path.isdir(store.release_path(cur))
        target = rel.previous_release(manifests, cur)
        if target is not None:
            assert os.path.isdir(store.release_path(target))
        # retention bounds (protected releases come on top)
        good = [m for m in manifests.values() if rel.is_good(m)]
        bad = [m for m in manifests.values() if not rel.is_good(m)]
        assert len(good) <= self.keep + 2
        assert len(bad) <= self.keep_failed + 2

    @invariant()
    def current_link_is_relative_into_releases(self):
        if os.path.lexists(os.path.join(self.root, 'current')):
            assert os.readlink(os.path.join(self.root, 'current')).startswith('releases/')


TestReleaseMachine = ReleaseMachine.TestCase
TestReleaseMachine.settings = settings(max_examples=60, stateful_step_count=25, deadline=None,
                                       suppress_health_check=[HealthCheck.too_slow])


# --- the systemd side, with a fake runner ------------------------------------------------------------

class Runner(object):
    def __init__(self, answers):
        self.answers = answers
        self.calls = []

    def __call__(self, argv, cwd=None, timeout=None, env=None):
        self.calls.append(argv)
        for prefix, answer in self.answers:
            if argv[1:1 + len(prefix)] == prefix:
                return answer
        return 0, '', ''


def test_host_restart_resets_the_start_limit_and_does_not_block():
    runner = Runner([(['show'], (0, 'LoadState=loaded\nActiveState=active\nSubState=running\nMainPID=4242\n', ''))])
    host = rel.Host(systemctl='systemctl', runner=runner)
    assert host.restart('api.service', 'restart') == 4242
    assert runner.calls[1:] == [['systemctl', 'reset-failed', '--', 'api.service'],
                                ['systemctl', 'restart', '--no-block', '--', 'api.service']]
    assert host.restart('api.service', 'reload') == 0
    assert runner.calls[-1] == ['systemctl', 'reload-or-restart', '--no-block', '--', 'api.service']


def test_host_refuses_a_unit_that_is_not_installed():
    runner = Runner([(['show'], (0, 'LoadState=not-found\nActiveState=inactive\nMainPID=0\n', ''))])
    with pytest.raises(rel.ReleaseError, match='not installed'):
        rel.Host(runner=runner).restart('api.service', 'restart')


def test_host_journal_up_to_the_verdict_comes_back_in_order():
    runner = Runner([([], (0, 'line 3\nline 2\nline 1\n', ''))])
    host = rel.Host(journalctl='journalctl', runner=runner)
    assert host.journal('api.service', 50, until=1700000000.5) == ['line 1', 'line 2', 'line 3']
    assert runner.calls[-1] == ['journalctl', '--no-pager', '-o', 'short-iso', '-u', 'api.service', '-n', '50',
                                '--reverse', '--until', '@1700000000.500']
    runner.answers = [([], (0, '-- No entries --\n', ''))]
    assert host.journal('api.service', 50, until=1.0) == []
    runner.answers = [([], (1, '', 'Failed to open journal'))]
    assert host.journal('api.service', 5) == ['(journalctl failed: Failed to open journal)']


def test_host_waits_for_the_old_process_and_reports_startup():
    pids = iter(['MainPID=10\n', 'MainPID=10\n', 'MainPID=11\n'])

    def run(argv, cwd=None, timeout=None, env=None):
        if '--property=MainPID' in argv:
            return 0, next(pids), ''
        return 0, 'ActiveState=activating\n', ''

    slept = []
    host = rel.Host(runner=run, sleep=slept.append, clock=lambda: 0.0)
    assert host.wait_replaced('api.service', 10, 30) is True and len(slept) == 2
    assert host.starter('api.service')() is True
