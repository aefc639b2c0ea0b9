#!/usr/bin/python
# -*- coding: utf-8 -*-

# Copyright (c) 2026, prodready.vps contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r'''
---
module: backup
short_description: Write one encrypted, verifiable backup archive and apply retention
version_added: 0.1.0
description:
  - Writes one backup into O(dest) as C(PREFIXYYYY-MM-DDTHHMMSSZ.tar.zst.age) (or C(.tar.gz.age)) with a
    C(NAME.manifest.json) beside it. The archive is a POSIX tar stream, compressed with zstd or gzip and encrypted
    in the age v1 format, so it can be read with standard tools alone
    (C(age -d -i key.txt NAME.tar.zst.age | zstd -d | tar x)). The format is described in C(docs/backup-format.md).
  - The manifest records the creation time, host, sources, commands, every entry (type, size, SHA-256, mode), the
    archive's size and SHA-256 and the recipients' fingerprints; M(prodready.vps.backup_verify) checks against it.
  - Archive and manifest are written to temporary files in O(dest), fsynced and renamed; on any failure they are
    removed and existing backups are not touched. Files, command output and the archive are streamed, never held
    in memory.
  - An exclusive lock on C(DEST/.backup.lock) keeps two runs (this module, a systemd timer) from overlapping. A
    second run waits O(lock_timeout) seconds, then fails without writing anything. The lock is held until
    retention was applied.
  - Retention (O(retention)) is applied only after the backup was written successfully, never after a failed
    one. The newest backup with a verification marker (see O(prodready.vps.backup_verify#module:mark)) is never
    deleted; when no backup is marked, the newest one that passes shallow verification is protected instead.
    The newest backup (the one just written) is never deleted either.
  - Always reports C(changed) when a backup was written.
author:
  - prodready.vps contributors (@prodready)
requirements:
  - cryptography (the Python package, on the managed host)
  - zstandard (the Python package, C(python3-zstandard)) for zstd compression; without it gzip is used
attributes:
  check_mode:
    description:
      - Nothing is written, not even the lock file or O(dest). The result names the archive that would be
        written, what the sources select (counts and sizes from C(lstat), no file is read) and what retention
        would prune after the backup. Commands are not run.
    support: full
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in diff mode) when in diff mode.
    support: none
options:
  dest:
    description:
      - Directory the backup is written to. Created with mode C(0700) when missing.
    type: path
    required: true
  sources:
    description:
      - Files and directories to archive. Each item is a path, or a dictionary with the keys below.
      - C(path) (required) - file or directory. Entries are stored under the absolute path without the leading
        C(/) (V(/etc/app/app.env) becomes C(etc/app/app.env)). Directories are walked recursively; symlinks are
        stored as symlinks and never followed; sockets, devices and FIFOs are skipped with a warning.
      - C(include) - list of glob patterns (C(fnmatch), case-sensitive). Only B(files) matching one of them are
        archived; directories are still walked. A pattern without C(/) is matched against the file name and the
        path relative to C(path); a pattern containing C(/) only against the relative path
        (V(app/*.log) matches C(PATH/app/x.log)).
      - C(exclude) - list of glob patterns matched the same way; matching files are skipped and matching
        directories are not descended into. Exclusion wins over inclusion.
      - C(max_age_days) - a number; only files whose modification time is less than that many days (of 86400
        seconds) before the start of the backup are archived, for example the logs of the last 7 days. Applies
        to files only, not to directories or symlinks. C(newer_than_days) is accepted as another name for it.
      - C(missing_ok) - boolean, default V(false). When V(true) a missing C(path) is skipped instead of failing.
      - A path selected by two sources is stored once.
      - At least one of O(sources) and O(commands) is required.
    type: list
    elements: raw
  commands:
    description:
      - Commands whose standard output becomes an archive entry, for example C(pg_dump -Fc). They run before
        the files are read, one after another, as the user the module runs as, with no standard input.
      - The output is spooled (in memory up to 1 MiB, then into an unnamed temporary file in O(dest), so O(dest)
        needs room for the largest dump) and hashed, then copied into the archive.
      - A command that exits non-zero, is killed or times out fails the whole backup with the end of its
        standard error; nothing is written.
    type: list
    elements: dict
    suboptions:
      name:
        description:
          - The entry's path in the archive, relative, without C(..), for example V(db/app.dump).
        type: str
        required: true
      argv:
        description:
          - The command as a list of arguments, run without a shell. Give exactly one of O(commands[].argv) and
            O(commands[].shell).
        type: list
        elements: str
      shell:
        description:
          - The command as a string run with C(/bin/sh -c), for pipelines.
        type: str
      timeout:
        description:
          - Seconds after which the command is killed and the backup fails. No limit when unset.
        type: float
      env:
        description:
          - Extra environment variables for the command. They are not recorded in the manifest, but like every
            module option they appear in the task's invocation; pass passwords through a C(.pgpass) file or
            C(PGPASSFILE) instead.
        type: dict
  recipients:
    description:
      - age X25519 public keys (C(age1...)) the backup is encrypted to. Any of the matching secret keys can
        decrypt it. Mutually exclusive with O(passphrase).
    type: list
    elements: str
  passphrase:
    description:
      - Encrypt with a passphrase instead (age scrypt mode). Mutually exclusive with O(recipients).
    type: str
  work_factor:
    description:
      - scrypt work factor (log2 of N) when O(passphrase) is used. Each step doubles the time and memory needed
        to try a passphrase; 18 takes about a second and 256 MiB. Decryption accepts up to 22.
    type: int
    default: 18
  prefix:
    description:
      - Prepended to the backup name, for example V(db-). Letters, digits, C(_), C(.) and C(-); it must not start
        with a dot. Retention only considers backups with the same prefix.
    type: str
    default: ''
  compression:
    description:
      - V(auto) uses zstd when the Python C(zstandard) package is importable, gzip otherwise.
      - V(zstd) fails when C(zstandard) is missing.
    type: str
    choices: [auto, zstd, gzip]
    default: auto
  level:
    description:
      - Compression level, 1-22 for zstd (default 3) and 1-9 for gzip (default 6).
    type: int
  lock_timeout:
    description:
      - Seconds to wait for another backup run holding the lock on O(dest); V(0) fails at once.
    type: float
    default: 60
  retention:
    description:
      - Which backups (with the same O(prefix)) to keep after this one was written, with restic C(forget)
        semantics; backups kept by no rule are deleted (archive, manifest and marker together).
      - Counts are integers, V(-1) means unlimited, V(0) or unset means the rule is off. Periods are evaluated
        in UTC. When all rules are off nothing is deleted.
      - Durations look like V(1y2m3d4h) (C(m) is months).
    type: dict
    suboptions:
      keep_last:
        description: Keep the N newest backups.
        type: int
      keep_hourly:
        description: Keep the newest backup of each of the last N hours that have one.
        type: int
      keep_daily:
        description: Keep the newest backup of each of the last N days that have one.
        type: int
      keep_weekly:
        description: Keep the newest backup of each of the last N ISO weeks that have one.
        type: int
      keep_monthly:
        description: Keep the newest backup of each of the last N months that have one.
        type: int
      keep_yearly:
        description: Keep the newest backup of each of the last N years that have one.
        type: int
      keep_within:
        description: Keep every backup newer than the newest one minus this duration.
        type: str
      keep_within_hourly:
        description: Within this duration of the newest backup, keep the newest backup of each hour.
        type: str
      keep_within_daily:
        description: Within this duration of the newest backup, keep the newest backup of each day.
        type: str
      keep_within_weekly:
        description: Within this duration of the newest backup, keep the newest backup of each week.
        type: str
      keep_within_monthly:
        description: Within this duration of the newest backup, keep the newest backup of each month.
        type: str
      keep_within_yearly:
        description: Within this duration of the newest backup, keep the newest backup of each year.
        type: str
  apply_retention:
    description:
      - Apply O(retention) after a successful backup. V(false) writes the backup and deletes nothing.
    type: bool
    default: true
notes:
  - The archive, manifest and lock file are created with mode C(0600), readable by the user the module runs as.
  - Only keep the public keys on the host; the secret key belongs off the host (for restores and deep
    verification, see M(prodready.vps.backup_verify) and M(prodready.vps.backup_restore)).
seealso:
  - module: prodready.vps.backup_verify
  - module: prodready.vps.backup_restore
  - name: age file encryption format
    description: The specification of the encryption format.
    link: https://c2sp.org/age
'''

EXAMPLES = r'''
- name: Back up the app configuration, the last week of logs and a database dump
  prodready.vps.backup:
    dest: /var/backups/prodready
    recipients:
      - age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p
    sources:
      - /etc/app
      - path: /var/log/app
        include: ['*.log', '*.log.gz']
        max_age_days: 7
      - path: /srv/app/uploads
        exclude: [cache, '*.tmp']
        missing_ok: true
    commands:
      - name: db/app.dump
        argv: [runuser, -u, postgres, --, pg_dump, -Fc, app]
        timeout: 3600
    retention:
      keep_daily: 7
      keep_weekly: 4
      keep_monthly: 6
  register: backup

- name: Show what was written and pruned
  ansible.builtin.debug:
    msg: "{{ backup.archive }} ({{ backup.size }} bytes), pruned {{ backup.pruned }}"

- name: Passphrase-encrypted backup with gzip, no pruning
  prodready.vps.backup:
    dest: /var/backups/config
    prefix: config-
    sources: [/etc]
    passphrase: "{{ vault_backup_passphrase }}"
    compression: gzip
    apply_retention: false
'''

RETURN = r'''
archive:
  description: Path of the archive written (in check mode, that would be written).
  returned: success
  type: str
  sample: /var/backups/prodready/2026-11-22T020000Z.tar.zst.age
manifest:
  description: Path of its manifest.
  returned: success
  type: str
  sample: /var/backups/prodready/2026-11-22T020000Z.tar.zst.age.manifest.json
name:
  description: File name of the archive.
  returned: success
  type: str
  sample: 2026-11-22T020000Z.tar.zst.age
compression:
  description: The compression used, V(zstd) or V(gzip).
  returned: success
  type: str
  sample: zstd
created:
  description: Creation time recorded in the manifest (UTC, ISO 8601).
  returned: success
  type: str
  sample: '2026-11-22T02:00:00Z'
size:
  description: Size of the encrypted archive in bytes.
  returned: success and not check mode
  type: int
  sample: 1048576
sha256:
  description: SHA-256 of the encrypted archive.
  returned: success and not check mode
  type: str
  sample: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
duration:
  description: Seconds spent writing the backup (retention excluded).
  returned: success and not check mode
  type: float
  sample: 12.5
files:
  description:
    - Number of regular files in the archive, command outputs included.
    - In check mode, the number that would be archived.
  returned: success
  type: int
  sample: 42
entries:
  description: Number of archive entries (files, directories, symlinks).
  returned: success and not check mode
  type: int
  sample: 57
plaintext_size:
  description: Total size of the archived files and command outputs before compression, in bytes.
  returned: success and not check mode
  type: int
  sample: 5242880
warnings:
  description: Files skipped or that changed while being read (also shown as task warnings).
  returned: success and not check mode
  type: list
  elements: str
  sample: ['/var/log/app/x.log shrank while it was read; the entry is padded with NUL bytes']
estimate:
  description:
    - What the sources select, from C(lstat) alone (no file is read). C(bytes) is the uncompressed size of the
      files; the size of command output is unknown before the commands run.
  returned: check mode
  type: dict
  contains:
    sources:
      description: Per source C(path), C(exists), C(files), C(dirs), C(links) and C(bytes).
      type: list
      elements: dict
    commands:
      description: Entry names of the commands.
      type: list
      elements: str
    files:
      description: Regular files selected (command outputs excluded).
      type: int
    dirs:
      description: Directories selected.
      type: int
    links:
      description: Symlinks selected.
      type: int
    bytes:
      description: Total size of the selected files.
      type: int
  sample:
    sources: [{path: /etc/app, exists: true, files: 3, dirs: 1, links: 0, bytes: 2048}]
    commands: [db/app.dump]
    files: 3
    dirs: 1
    links: 0
    bytes: 2048
pruned:
  description: Backups deleted by retention (in check mode, that would be deleted), newest first.
  returned: success
  type: list
  elements: str
  sample: ['2026-11-01T020000Z.tar.zst.age']
retention:
  description: The retention decision, when O(retention) has a rule and O(apply_retention=true).
  returned: when retention was applied or planned
  type: dict
  contains:
    applied:
      description: V(false) in check mode (nothing was deleted).
      type: bool
    pruned:
      description: Names deleted (or that would be), newest first.
      type: list
      elements: str
    kept:
      description: Names kept, newest first.
      type: list
      elements: str
    protected:
      description: The newest verified backup (or newest that passed shallow verification), never deleted.
      type: str
    reasons:
      description: For each backup, the rules that keep it (empty for pruned ones).
      type: dict
  sample:
    applied: true
    pruned: ['2026-11-01T020000Z.tar.zst.age']
    kept: ['2026-11-22T020000Z.tar.zst.age', '2026-11-21T020000Z.tar.zst.age']
    protected: '2026-11-21T020000Z.tar.zst.age'
    reasons:
      2026-11-22T020000Z.tar.zst.age: ['last snapshot #1', 'daily snapshot']
      2026-11-21T020000Z.tar.zst.age: ['protected']
      2026-11-01T020000Z.tar.zst.age: []
'''

import os
import re

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.common.text.converters import to_native

from ansible_collections.prodready.vps.plugins.module_utils import age, retention
from ansible_collections.prodready.vps.plugins.module_utils import backup_archive as ba

PREFIX_RE = re.compile(r'\A(?:[A-Za-z0-9_-][A-Za-z0-9_.-]*)?\Z')
NOTHING_WRITTEN = 'Nothing was written and existing backups were not touched.'


def retention_result(plan, applied):
    return dict(applied=applied, pruned=plan['prune'], kept=plan['keep'], protected=plan['protected'],
                reasons=plan['reasons'])


def fail(module, exc, **extra):
    msg = to_native(exc)
    if isinstance(exc, ba.BackupLockedError):
        msg += ('. Another backup run (the backup timer or a second play) is still writing to this directory; '
                'retry when it has finished or raise lock_timeout')
    if not isinstance(exc, ba.BackupConfigError):
        msg += '. ' + NOTHING_WRITTEN
    module.fail_json(msg=msg, **extra)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            dest=dict(type='path', required=True),
            sources=dict(type='list', elements='raw'),
            commands=dict(type='list', elements='dict', options=dict(
                name=dict(type='str', required=True),
                argv=dict(type='list', elements='str'),
                shell=dict(type='str'),
                timeout=dict(type='float'),
                env=dict(type='dict'),
            )),
            recipients=dict(type='list', elements='str'),
            passphrase=dict(type='str', no_log=True),
            work_factor=dict(type='int', default=18),
            prefix=dict(type='str', default=''),
            compression=dict(type='str', choices=['auto', 'zstd', 'gzip'], default='auto'),
            level=dict(type='int'),
            lock_timeout=dict(type='float', default=60),
            retention=dict(type='dict', options=dict(
                (key, dict(type='int' if key in retention.COUNT_KEYS else 'str')) for key in retention.POLICY_KEYS)),
            apply_retention=dict(type='bool', default=True),
        ),
        required_one_of=[('sources', 'commands'), ('recipients', 'passphrase')],
        mutually_exclusive=[('recipients', 'passphrase')],
        supports_check_mode=True,
    )
    params = module.params
    dest = params['dest']
    if not age.HAS_CRYPTOGRAPHY:
        module.fail_json(msg=missing_required_lib('cryptography'), exception=age.CRYPTOGRAPHY_IMPORT_ERROR)
    compression = params['compression']
    if compression == 'auto':
        compression = 'zstd' if ba.HAS_ZSTANDARD else 'gzip'
    if compression == 'zstd' and not ba.HAS_ZSTANDARD:
        module.fail_json(msg=missing_required_lib('zstandard', reason='for compression=zstd (or use compression=gzip)'),
                         exception=ba.ZSTANDARD_IMPORT_ERROR)
    prefix = params['prefix']
    if not PREFIX_RE.match(prefix):
        module.fail_json(msg='prefix %r may only contain letters, digits, _ . - and must not start with a dot' % prefix)
    if not 10 <= params['work_factor'] <= age.MAX_WORK_FACTOR:
        module.fail_json(msg='work_factor must be from 10 to %d, not %d' % (age.MAX_WORK_FACTOR, params['work_factor']))
    if params['passphrase'] == '':
        module.fail_json(msg='passphrase is empty: give a real passphrase or use recipients')
    if params['lock_timeout'] < 0:
        module.fail_json(msg='lock_timeout must not be negative')
    try:
        policy = retention.parse_policy(params['retention'])
    except retention.RetentionError as exc:
        module.fail_json(msg='retention: %s' % to_native(exc))
    prune = params['apply_retention'] and not policy.is_empty()
    sources = params['sources'] or []
    commands = params['commands'] or []
    now = ba.utcnow()

    try:
        ba.parse_recipients(params['recipients'], params['passphrase'])
        estimate = ba.estimate_sources(sources, commands, now=now) if module.check_mode else None
        ba.normalize_sources(sources)
        ba.normalize_commands(commands)
        if params['level'] is not None:
            low, high = ba.LEVELS[compression]
            if not low <= params['level'] <= high:
                raise ba.BackupConfigError('level must be from %d to %d for %s, not %d' % (low, high, compression, params['level']))
    except ba.BackupError as exc:
        fail(module, exc, dest=dest)

    if module.check_mode:
        exists = os.path.isdir(dest)
        name = ba.next_backup_name(dest, now, compression, prefix) if exists else ba.backup_name(now, compression, prefix)
        archive = os.path.join(os.path.abspath(dest), name)
        result = dict(changed=True, archive=archive, manifest=ba.manifest_path(archive), name=name,
                      compression=compression, created=now.strftime('%Y-%m-%dT%H:%M:%SZ'),
                      files=estimate['files'] + len(estimate['commands']), estimate=estimate, pruned=[])
        if prune:
            try:
                plan = ba.apply_retention(dest, policy, dry_run=True, prefix=prefix, pending=name)
            except (ba.BackupError, OSError) as exc:
                module.fail_json(msg='cannot plan retention in %s: %s' % (dest, to_native(exc)), **result)
            result['retention'] = retention_result(plan, applied=False)
            result['pruned'] = plan['prune']
        module.exit_json(**result)

    try:
        if not os.path.isdir(dest):
            os.makedirs(dest, 0o700)
    except OSError as exc:
        module.fail_json(msg='cannot create the backup directory %s: %s' % (dest, to_native(exc)), dest=dest)

    result = None
    try:
        with ba.BackupLock(dest, params['lock_timeout']):
            made = ba.create(dest, sources, recipients=params['recipients'], passphrase=params['passphrase'],
                             commands=commands, prefix=prefix, lock=False, compression=compression,
                             compression_level=params['level'], work_factor=params['work_factor'],
                             now=ba.utcnow())  # after waiting for the lock
            result = dict(changed=True, pruned=[], **made)
            if prune:
                plan = ba.apply_retention(dest, policy, prefix=prefix, lock=False)
                result['retention'] = retention_result(plan, applied=True)
                result['pruned'] = plan['prune']
    except (ba.BackupError, retention.RetentionError, OSError) as exc:
        if result is None:
            fail(module, exc, dest=dest)
        result['msg'] = ('backup %s was written, but applying retention failed: %s. Nothing was pruned; fix the '
                         'cause and run again (or set apply_retention=false)' % (result['name'], to_native(exc)))
        module.fail_json(**result)
    for warning in result['warnings']:
        module.warn(warning)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
