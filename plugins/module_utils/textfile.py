# Copyright (c) 2026, prodready.vps contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Prometheus text exposition for node_exporter's textfile collector.

Validation and rendering only (no I/O), shared by the ``textfile_metric``
module and the host-side writers.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import math
import re

METRIC_NAME = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*$')
LABEL_NAME = re.compile(r'^[a-zA-Z_][a-zA-Z0-9_]*$')
FILE_STEM = re.compile(r'^[a-zA-Z0-9_][a-zA-Z0-9_.-]*$')
TYPES = ('gauge', 'counter', 'untyped')


class MetricError(ValueError):
    pass


def escape_label_value(value):
    return value.replace('\\', '\\\\').replace('"', '\\"').replace('\n', '\\n')


def format_value(value):
    if isinstance(value, bool):
        return '1' if value else '0'
    number = float(value)
    if math.isnan(number):
        return 'NaN'
    if math.isinf(number):
        return '+Inf' if number > 0 else '-Inf'
    if number == int(number) and abs(number) < 2 ** 53:
        return str(int(number))
    return repr(number)


def normalize(metric):
    """Check one metric dict and return it with defaults filled in."""
    name = metric.get('name')
    if not isinstance(name, str) or not METRIC_NAME.match(name):
        raise MetricError('metric name %r is not a valid Prometheus metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)' % (name,))
    mtype = metric.get('type') or 'gauge'
    if mtype not in TYPES:
        raise MetricError('metric %s: type %r is not one of %s' % (name, mtype, ', '.join(TYPES)))
    value = metric.get('value')
    try:
        if isinstance(value, str):
            value = float(value)
        format_value(value)
    except (TypeError, ValueError):
        raise MetricError('metric %s: value %r is not a number' % (name, value))
    labels = metric.get('labels') or {}
    if not isinstance(labels, dict):
        raise MetricError('metric %s: labels must be a mapping, got %r' % (name, labels))
    for key in labels:
        if not LABEL_NAME.match(str(key)) or str(key).startswith('__'):
            raise MetricError('metric %s: label name %r is not valid' % (name, key))
    return {
        'name': name,
        'type': mtype,
        'help': metric.get('help') or '',
        'value': value,
        'labels': dict((str(k), str(v)) for k, v in labels.items()),
    }


def render(metrics):
    """Render metrics (list of dicts) grouped by name, in a stable order."""
    normalized = [normalize(m) for m in metrics]
    order = []
    groups = {}
    for metric in normalized:
        if metric['name'] not in groups:
            order.append(metric['name'])
            groups[metric['name']] = []
        groups[metric['name']].append(metric)
    lines = []
    for name in order:
        group = groups[name]
        kinds = set(m['type'] for m in group)
        if len(kinds) > 1:
            raise MetricError('metric %s is given with different types: %s' % (name, ', '.join(sorted(kinds))))
        seen = set()
        help_text = next((m['help'] for m in group if m['help']), '')
        if help_text:
            lines.append('# HELP %s %s' % (name, help_text.replace('\\', '\\\\').replace('\n', '\\n')))
        lines.append('# TYPE %s %s' % (name, group[0]['type']))
        for metric in group:
            key = tuple(sorted(metric['labels'].items()))
            if key in seen:
                raise MetricError('metric %s is given twice with the same labels %s' % (name, dict(key)))
            seen.add(key)
            label_text = ','.join('%s="%s"' % (k, escape_label_value(v)) for k, v in key)
            lines.append('%s%s %s' % (name, '{%s}' % label_text if label_text else '', format_value(metric['value'])))
    return '\n'.join(lines) + '\n' if lines else ''
