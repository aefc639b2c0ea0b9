#!/usr/bin/python
# -*- coding: utf-8 -*-

# Copyright (c) 2026, prodready.vps contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r'''
---
module: textfile_metric
short_description: Write metrics for node_exporter's textfile collector
version_added: 0.1.0
description:
  - Writes one C(<name>.prom) file in node_exporter's textfile collector directory, atomically
    (temporary file in the same directory, then rename), so the collector never reads half a file.
  - Metric and label names are checked against Prometheus' rules; duplicate series and mixed
    types are refused with a message naming the metric.
  - The file is only rewritten when its content changes; C(--diff) shows the change.
  - Conventions for the metrics this collection writes are in C(docs/metrics.md).
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
  name:
    description:
      - File name without the C(.prom) suffix.
    type: str
    required: true
  directory:
    description:
      - The textfile collector directory. Created (mode 0755) when missing.
    type: path
    default: /var/lib/prometheus/node-exporter
  metrics:
    description:
      - The metrics to write. Series of the same metric name are grouped under one C(# TYPE) line.
      - Required when O(state=present).
    type: list
    elements: dict
    suboptions:
      name:
        description: Metric name, for example V(prodready_deploy_timestamp_seconds).
        type: str
        required: true
      value:
        description: The sample value (a number; booleans become 1 and 0).
        type: raw
        required: true
      labels:
        description: Label names and values.
        type: dict
      help:
        description: The C(# HELP) text.
        type: str
      type:
        description: The metric type.
        type: str
        choices: [gauge, counter, untyped]
        default: gauge
  state:
    description:
      - V(present) writes the file, V(absent) removes it.
    type: str
    choices: [present, absent]
    default: present
  mode:
    description:
      - Mode of the file. The collector runs as another user, so it must stay readable.
    type: raw
    default: '0644'
seealso:
  - name: node_exporter textfile collector
    description: How the collector reads these files.
    link: https://github.com/prometheus/node_exporter#textfile-collector
'''

EXAMPLES = r'''
- name: Record a deploy marker
  prodready.vps.textfile_metric:
    name: prodready_deploy
    metrics:
      - name: prodready_deploy_timestamp_seconds
        help: When the current release was deployed.
        value: "{{ now(utc=true).timestamp() | int }}"
        labels:
          service: api
          release: "{{ release_id }}"

- name: Remove the metrics of a retired service
  prodready.vps.textfile_metric:
    name: prodready_legacy
    state: absent
'''

RETURN = r'''
path:
  description: The file written or removed.
  returned: always
  type: str
  sample: /var/lib/prometheus/node-exporter/prodready_deploy.prom
content:
  description: The exposition text (empty when O(state=absent)).
  returned: always
  type: str
  sample: "# TYPE prodready_deploy_timestamp_seconds gauge\nprodready_deploy_timestamp_seconds{service=\"api\"} 1767225600\n"
'''

import os
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_bytes, to_native

from ansible_collections.prodready.vps.plugins.module_utils.textfile import FILE_STEM, MetricError, render


class TextfileMetric(object):
    def __init__(self, module):
        self.module = module
        self.params = module.params
        if not FILE_STEM.match(self.params['name']):
            module.fail_json(msg='name %r is not a valid file name (letters, digits, _ . -)' % self.params['name'])
        self.path = os.path.join(self.params['directory'], self.params['name'] + '.prom')

    def current(self):
        try:
            with open(self.path, 'rb') as handle:
                return handle.read().decode('utf-8', 'replace')
        except (IOError, OSError):
            return None

    def run(self):
        before = self.current()
        if self.params['state'] == 'absent':
            after = None
        else:
            if self.params['metrics'] is None:
                self.module.fail_json(msg='metrics is required when state is present', path=self.path)
            try:
                after = render(self.params['metrics'])
            except MetricError as exc:
                self.module.fail_json(msg=to_native(exc), path=self.path)
        changed = before != after
        result = dict(changed=changed, path=self.path, content=after or '')
        if self.module._diff:
            result['diff'] = dict(before=before or '', after=after or '',
                                  before_header=self.path, after_header=self.path)
        if changed and not self.module.check_mode:
            if after is None:
                os.unlink(self.path)
            else:
                self.write(after)
        if after is not None and not self.module.check_mode and os.path.exists(self.path):
            file_args = self.module.load_file_common_arguments(dict(path=self.path, mode=self.params['mode']))
            result['changed'] = self.module.set_fs_attributes_if_different(file_args, result['changed'])
        self.module.exit_json(**result)

    def write(self, text):
        directory = self.params['directory']
        if not os.path.isdir(directory):
            try:
                os.makedirs(directory, 0o755)
            except OSError as exc:
                self.module.fail_json(msg='cannot create %s: %s' % (directory, to_native(exc)), path=self.path)
        fd, tmp = tempfile.mkstemp(prefix='.%s.' % self.params['name'], dir=directory)
        try:
            os.write(fd, to_bytes(text))
            os.fsync(fd)
        finally:
            os.close(fd)
        self.module.atomic_move(tmp, self.path)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type='str', required=True),
            directory=dict(type='path', default='/var/lib/prometheus/node-exporter'),
            metrics=dict(type='list', elements='dict', options=dict(
                name=dict(type='str', required=True),
                value=dict(type='raw', required=True),
                labels=dict(type='dict'),
                help=dict(type='str'),
                type=dict(type='str', choices=['gauge', 'counter', 'untyped'], default='gauge'),
            )),
            state=dict(type='str', choices=['present', 'absent'], default='present'),
            mode=dict(type='raw', default='0644'),
        ),
        supports_check_mode=True,
    )
    TextfileMetric(module).run()


if __name__ == '__main__':
    main()
