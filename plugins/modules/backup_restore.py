#!/usr/bin/python
# -*- coding: utf-8 -*-

# Copyright (c) 2026, prodready.vps contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r'''
---
module: backup_restore
short_description: Restore files (and a PostgreSQL dump) from a backup written by prodready.vps.backup
version_added: 0.1.0
description:
  - Extracts a backup (or the entries selected by O(only)) into O(target). Entries keep their archive paths,
    which are the original absolute paths without the leading C(/) (C(etc/app/app.env)), so restoring into
    V(/) puts files back where they were.
  - The archive is verified while it is extracted, in one streaming pass, into a private staging directory
    inside O(target); only when every entry and the archive checksum matched the manifest are the entries
    renamed into place. On any failure the staging directory is removed and O(target) is left as it was.
  - Refuses absolute paths, C(..), symlinks and hard links pointing outside O(target), devices and FIFOs, and
    writing through existing symlinks that lead outside O(target).
  - Existing files are never replaced unless O(overwrite=true); existing directories are reused. The conflict
    check runs before anything is decrypted.
  - Modes and modification times are restored; owners only with O(restore_owner=true) when running as root.
  - With O(database), the dump named by O(database.member) is restored into O(target) like any other file,
    then C(pg_restore) loads it into O(database.dbname). C(pg_restore) runs as the user the module runs as (use
    C(become_user) on the task) with an argument list, never through a shell.
author:
  - prodready.vps contributors (@prodready)
requirements:
  - cryptography (the Python package, on the managed host)
  - zstandard (the Python package, C(python3-zstandard)) for zstd-compressed backups
  - pg_restore, for O(database)
attributes:
  check_mode:
    description:
      - The archive is decrypted and verified and every check is made, but nothing is written, not even
        O(target); C(pg_restore) is not run. The result lists what would be written. Links that resolve
        outside O(target) only through other links of the same archive are refused by the real run alone.
    support: full
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in diff mode) when in diff mode.
    support: none
options:
  archive:
    description:
      - V(latest) (the newest backup in O(dest), with O(prefix) the newest with that prefix), a backup file
        name in O(dest), or a path (anything containing C(/)).
    type: str
    default: latest
  dest:
    description:
      - Directory holding the backups. Required unless O(archive) is a path.
    type: path
  prefix:
    description:
      - With O(archive=latest), only consider backups with this name prefix; V('') selects backups without
        prefix. All backups when unset.
    type: str
  target:
    description:
      - Directory to restore into, created when missing. Use a scratch directory to inspect a backup, V(/) to
        put files back in place.
    type: path
    required: true
  identity:
    description:
      - The age secret key (C(AGE-SECRET-KEY-1...)), the text of an identity file as written by C(age-keygen),
        or the path of such a file on the managed host.
      - One of O(identity) and O(passphrase) is required.
    type: str
  passphrase:
    description:
      - The passphrase of a passphrase-encrypted backup.
    type: str
  overwrite:
    description:
      - Replace existing files (and symlinks). When V(false), the task fails before writing anything if any
        selected entry already exists as a file, listing the paths.
    type: bool
    default: false
  only:
    description:
      - Restore only the entries matching one of these, given as archive paths (no leading C(/)). An entry
        matches when it equals an item, lies below it (V(etc/app) selects C(etc/app/app.env)) or matches it as
        a glob pattern (V(var/log/app/*.log)). Missing parent directories are created with default modes.
      - Fails when nothing matches.
    type: list
    elements: str
  restore_owner:
    description:
      - Restore the owners (uid and gid) recorded in the archive; only effective when running as root.
        Otherwise restored files belong to the user the module runs as.
    type: bool
    default: false
  database:
    description:
      - Load a C(pg_dump -Fc) dump from the backup into PostgreSQL after the files were restored.
      - The module runs C(EXECUTABLE ARGS... --dbname DBNAME TARGET/MEMBER). The dump stays at
        C(TARGET/MEMBER); remove it afterwards when it should not stay on disk.
      - When O(only) is set, the dump is added to it.
    type: dict
    suboptions:
      member:
        description:
          - Archive path of the dump, the O(prodready.vps.backup#module:commands[].name) it was written with,
            for example V(db/app.dump).
        type: str
        required: true
      dbname:
        description:
          - The database to restore into (passed as C(--dbname)). It must exist unless O(database.args)
            contains C(--create). Pass passwords through C(.pgpass) or C(PGPASSFILE), not in a connection string.
        type: str
        required: true
      args:
        description:
          - Further C(pg_restore) arguments, each item one argument.
        type: list
        elements: str
        default: ['--clean', '--if-exists', '--no-owner']
      executable:
        description:
          - Path of C(pg_restore). Looked up in C(PATH) when unset.
        type: path
seealso:
  - module: prodready.vps.backup
  - module: prodready.vps.backup_verify
'''

EXAMPLES = r'''
- name: Inspect the newest backup in a scratch directory
  prodready.vps.backup_restore:
    dest: /var/backups/prodready
    target: /root/restore-check
    identity: "{{ vault_backup_age_identity }}"

- name: Put the app configuration back in place, replacing the current files
  prodready.vps.backup_restore:
    dest: /var/backups/prodready
    archive: 2026-11-22T020000Z.tar.zst.age
    target: /
    only: [etc/app]
    overwrite: true
    restore_owner: true
    identity: /root/backup-identity.txt

- name: Restore the database dump as the postgres user
  prodready.vps.backup_restore:
    dest: /var/backups/prodready
    target: /var/lib/postgresql/restore
    only: [db/app.dump]
    overwrite: true
    identity: "{{ vault_backup_age_identity }}"
    database:
      member: db/app.dump
      dbname: app
      args: [--clean, --if-exists, --no-owner, --exit-on-error, --single-transaction]
  become: true
  become_user: postgres
'''

RETURN = r'''
archive:
  description: Path of the backup restored from.
  returned: when the backup was found
  type: str
  sample: /var/backups/prodready/2026-11-22T020000Z.tar.zst.age
name:
  description: File name of the backup.
  returned: when the backup was found
  type: str
  sample: 2026-11-22T020000Z.tar.zst.age
target:
  description: The directory restored into.
  returned: always
  type: str
  sample: /root/restore-check
files:
  description: Regular files restored (in check mode, that would be).
  returned: success
  type: int
  sample: 42
dirs:
  description: Directories restored (their modes and times are set).
  returned: success
  type: int
  sample: 7
links:
  description: Symlinks and hard links restored.
  returned: success
  type: int
  sample: 1
bytes:
  description: Total size of the files restored.
  returned: success
  type: int
  sample: 5242880
members:
  description: Archive paths restored (at most the first 1000, see RV(members_total)).
  returned: success
  type: list
  elements: str
  sample: [etc/app, etc/app/app.env]
members_total:
  description: Number of entries restored.
  returned: success
  type: int
  sample: 2
overwritten:
  description: Existing files replaced (with O(overwrite=true)).
  returned: success
  type: list
  elements: str
  sample: [etc/app/app.env]
duration:
  description: Seconds spent, C(pg_restore) included.
  returned: success
  type: float
  sample: 3.2
database:
  description: The C(pg_restore) run, when O(database) is set.
  returned: when O(database) is set
  type: dict
  contains:
    command:
      description: The argument list.
      type: list
      elements: str
    executed:
      description: V(false) in check mode.
      type: bool
    rc:
      description: Exit status.
      type: int
    stdout:
      description: Standard output.
      type: str
    stderr:
      description: Standard error.
      type: str
  sample:
    command: [/usr/bin/pg_restore, --clean, --if-exists, --no-owner, --dbname, app, /var/lib/postgresql/restore/db/app.dump]
    executed: true
    rc: 0
    stdout: ''
    stderr: ''
'''

import os
import time

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.common.text.converters import to_native

from ansible_collections.prodready.vps.plugins.module_utils import age
from ansible_collections.prodready.vps.plugins.module_utils import backup_archive as ba

MAX_MEMBERS = 1000
STDERR_TAIL = 2000
HINTS = {
    ba.BackupIntegrityError: 'The backup does not match its manifest; nothing was restored. Restore from another '
                             'backup (option archive) and check the disk.',
    ba.BackupDecryptError: 'Nothing was restored. Give the secret key matching one of the recipients the backup '
                           'was encrypted to (or its passphrase).',
    ba.RestoreRefusedError: 'Nothing was restored.',
}


def hint(exc):
    for cls, text in HINTS.items():
        if isinstance(exc, cls):
            return '. ' + text
    return ''


def dump_member(module, base, member):
    """The dump's normalised archive path, after checking the manifest lists it as a file."""
    archive = base['archive']
    wanted = member.strip('/')
    found = False
    dumps = []
    try:
        with ba.ManifestReader(archive, compact=False) as manifest:  # entry by entry: a manifest can be large
            for entry in manifest.entries():
                if not isinstance(entry, dict):
                    continue
                found = found or (entry.get('name') == wanted and entry.get('type') == 'file')
                if entry.get('command'):
                    dumps.append(entry.get('name'))
    except ba.BackupError as exc:
        module.fail_json(msg=to_native(exc), **base)
    if not found:
        module.fail_json(msg='backup %s has no file %s to give to pg_restore (command outputs in it: %s)'
                         % (os.path.basename(archive), member, ', '.join(dumps) or 'none'), **base)
    return wanted


def main():
    module = AnsibleModule(
        argument_spec=dict(
            archive=dict(type='str', default='latest'),
            dest=dict(type='path'),
            prefix=dict(type='str'),
            target=dict(type='path', required=True),
            identity=dict(type='str', no_log=True),
            passphrase=dict(type='str', no_log=True),
            overwrite=dict(type='bool', default=False),
            only=dict(type='list', elements='str'),
            restore_owner=dict(type='bool', default=False),
            database=dict(type='dict', options=dict(
                member=dict(type='str', required=True),
                dbname=dict(type='str', required=True),
                args=dict(type='list', elements='str', default=['--clean', '--if-exists', '--no-owner']),
                executable=dict(type='path'),
            )),
        ),
        required_one_of=[('identity', 'passphrase')],
        supports_check_mode=True,
    )
    params = module.params
    passphrase = params['passphrase'] or None
    started = time.monotonic()
    if not age.HAS_CRYPTOGRAPHY:
        module.fail_json(msg=missing_required_lib('cryptography'), exception=age.CRYPTOGRAPHY_IMPORT_ERROR)
    target = os.path.abspath(params['target'])
    try:
        archive = ba.find_archive(params['archive'], params['dest'], params['prefix'])
        identities = ba.parse_identities(params['identity'] or None, passphrase)
    except (ba.BackupError, OSError) as exc:
        module.fail_json(msg=to_native(exc), target=target)
    base = dict(archive=archive, name=os.path.basename(archive), target=target)

    only = list(params['only'] or [])
    database = params['database']
    command = None
    if database:
        member = dump_member(module, base, database['member'])
        if only and member not in only:
            only.append(member)
        executable = database['executable'] or module.get_bin_path('pg_restore', required=not module.check_mode)
        command = [executable or 'pg_restore'] + list(database['args'] or []) + [
            '--dbname', database['dbname'], os.path.join(target, member)]

    try:
        stats = ba.restore(archive, target, identity=identities or None, passphrase=passphrase,
                           overwrite=params['overwrite'], only=only or None, restore_owner=params['restore_owner'],
                           dry_run=module.check_mode)
    except (ba.BackupError, OSError) as exc:
        module.fail_json(msg=to_native(exc) + hint(exc), **base)

    # restore() lists the first ba.MEMBERS_LISTED names (1000) and counts them all.
    result = dict(base, files=stats['files'], dirs=stats['dirs'], links=stats['links'], bytes=stats['bytes'],
                  members=stats['members'][:MAX_MEMBERS], members_total=stats['members_total'],
                  overwritten=stats['overwritten'][:MAX_MEMBERS])
    result['changed'] = bool(stats['members_total'])

    if command:
        result['changed'] = True
        if module.check_mode:
            result['database'] = dict(command=command, executed=False)
        else:
            rc, out, err = module.run_command(command)
            result['database'] = dict(command=command, executed=True, rc=rc, stdout=out, stderr=err)
            if rc != 0:
                result['duration'] = round(time.monotonic() - started, 3)
                module.fail_json(
                    msg='pg_restore into database %s exited with status %d: %s. The files were restored; the dump is '
                        'at %s' % (database['dbname'], rc, (err or '').strip()[-STDERR_TAIL:] or '(no stderr output)',
                                   command[-1]), **result)
    result['duration'] = round(time.monotonic() - started, 3)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
