#!/usr/bin/python
# -*- coding: utf-8 -*-

# Copyright (c) 2026, prodready.vps contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r'''
---
module: pgbouncer_userlist
short_description: Write PgBouncer's auth_file with SCRAM-SHA-256 (or md5) verifiers, never plaintext
version_added: 0.1.0
description:
  - Writes PgBouncer's C(auth_file) (C(userlist.txt)) from a list of users and passwords. Each password is
    stored as a SCRAM-SHA-256 verifier (the form PostgreSQL keeps in C(pg_authid)) or, when asked, as an md5
    hash; the plaintext never reaches the file.
  - An existing verifier is kept as long as it still matches the password, so a second run changes nothing
    (a fresh random salt would otherwise rewrite the file every time).
  - PgBouncer can log in to PostgreSQL with a verifier only when PostgreSQL stores the very same string; the
    P(prodready.vps.pgbouncer#role) role copies the verifiers from this file into C(pg_authid) for that reason.
  - The file is written atomically (temporary file in the same directory, then rename). C(--diff) names the
    users added, changed and removed; secrets are never shown.
author:
  - prodready.vps contributors (@prodready)
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying the target.
    support: full
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in diff mode) when in diff mode.
    support: full
options:
  path:
    description: The auth_file to write.
    type: path
    default: /etc/pgbouncer/userlist.txt
  users:
    description:
      - The users PgBouncer accepts.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: The user name (letters, digits, C(_ . @ -)).
        type: str
        required: true
      password:
        description:
          - The plaintext password, or a ready verifier (C(SCRAM-SHA-256$...) or C(md5...)) used as given.
        type: str
        required: true
      type:
        description:
          - The verifier to store for this user; defaults to O(auth_type).
        type: str
        choices: [scram-sha-256, md5]
  auth_type:
    description:
      - The verifier type for users without their own O(users[].type).
    type: str
    choices: [scram-sha-256, md5]
    default: scram-sha-256
  iterations:
    description: PBKDF2 iterations of new SCRAM verifiers (PostgreSQL's default is 4096).
    type: int
    default: 4096
  exclusive:
    description:
      - Remove users from the file that are not in O(users). With V(false) they are kept as they are.
    type: bool
    default: true
  owner:
    description: Owner of the file.
    type: str
    default: postgres
  group:
    description: Group of the file.
    type: str
    default: postgres
  mode:
    description: Mode of the file.
    type: raw
    default: '0640'
seealso:
  - name: PgBouncer authentication file format
    description: The format of C(auth_file).
    link: https://www.pgbouncer.org/config.html#authentication-file-format
'''

EXAMPLES = r'''
- name: Write the PgBouncer user list
  prodready.vps.pgbouncer_userlist:
    path: /etc/pgbouncer/userlist.txt
    users:
      - name: app
        password: "{{ vault_app_db_password }}"
      - name: pgbouncer_admin
        password: "{{ vault_pgbouncer_admin_password }}"
  no_log: false  # passwords are options with no_log already
'''

RETURN = r'''
users:
  description: What happened to each user (V(added), V(changed), V(kept) or V(removed)).
  returned: always
  type: dict
  sample: {"app": "kept", "reporting": "added"}
path:
  description: The file written.
  returned: always
  type: str
  sample: /etc/pgbouncer/userlist.txt
'''

import os
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_bytes, to_native

from ansible_collections.prodready.vps.plugins.module_utils import pg_auth

HEADER = '; Managed by prodready.vps (pgbouncer_userlist): verifiers only, edits are overwritten.'


class UserList:
    def __init__(self, module):
        self.module = module
        self.params = module.params
        self.path = self.params['path']

    def read(self):
        if not os.path.exists(self.path):
            return None, []
        try:
            with open(self.path, 'r', encoding='utf-8') as handle:
                text = handle.read()
        except (IOError, OSError) as exc:
            self.module.fail_json(msg='cannot read %s: %s' % (self.path, to_native(exc)), path=self.path)
        try:
            return text, pg_auth.parse_userlist(text)
        except pg_auth.AuthError as exc:
            self.module.fail_json(msg='%s: %s; fix or remove the file' % (self.path, to_native(exc)), path=self.path)

    def write(self, content):
        directory = os.path.dirname(self.path) or '.'
        if not os.path.isdir(directory):
            self.module.fail_json(msg='directory %s does not exist (is pgbouncer installed?)' % directory,
                                  path=self.path)
        fd, tmp = tempfile.mkstemp(prefix='.userlist.', dir=directory)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, 'wb') as handle:
                handle.write(to_bytes(content))
                handle.flush()
                os.fsync(handle.fileno())
        except Exception:
            os.unlink(tmp)
            raise
        self.module.atomic_move(tmp, self.path)

    def run(self):
        before_text, existing = self.read()
        try:
            entries, report = pg_auth.plan_userlist(
                existing, self.params['users'], default_type=self.params['auth_type'],
                iterations=self.params['iterations'], exclusive=self.params['exclusive'])
        except pg_auth.AuthError as exc:
            self.module.fail_json(msg=to_native(exc), path=self.path)
        content = pg_auth.render_userlist(entries, HEADER)
        changed = content != before_text
        result = dict(changed=changed, path=self.path, users=report)
        if self.module._diff:
            result['diff'] = dict(
                before_header=self.path, after_header=self.path,
                before=''.join('%s\n' % name for name, _secret in existing),
                after=''.join('%s%s\n' % (name, '' if report[name] == 'kept' else ' (%s)' % report[name])
                              for name, _secret in entries))
        if changed and not self.module.check_mode:
            self.write(content)
        if os.path.exists(self.path):
            file_args = self.module.load_file_common_arguments(dict(
                path=self.path, owner=self.params['owner'], group=self.params['group'], mode=self.params['mode']))
            result['changed'] = self.module.set_fs_attributes_if_different(file_args, result['changed'])
        return result


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type='path', default='/etc/pgbouncer/userlist.txt'),
            users=dict(type='list', elements='dict', required=True, options=dict(
                name=dict(type='str', required=True),
                password=dict(type='str', required=True, no_log=True),
                type=dict(type='str', choices=['scram-sha-256', 'md5']),
            )),
            auth_type=dict(type='str', default='scram-sha-256', choices=['scram-sha-256', 'md5']),
            iterations=dict(type='int', default=pg_auth.DEFAULT_ITERATIONS),
            exclusive=dict(type='bool', default=True),
            owner=dict(type='str', default='postgres'),
            group=dict(type='str', default='postgres'),
            mode=dict(type='raw', default='0640'),
        ),
        supports_check_mode=True,
    )
    module.exit_json(**UserList(module).run())


if __name__ == '__main__':
    main()
