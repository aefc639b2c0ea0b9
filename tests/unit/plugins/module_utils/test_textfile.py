# Copyright (c) 2026, prodready.vps contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

import pytest

from ansible_collections.prodready.vps.plugins.module_utils.textfile import MetricError, format_value, render


def test_render_groups_series_and_escapes_labels():
    text = render([
        {'name': 'm_seconds', 'value': 3, 'labels': {'svc': 'a"b'}, 'help': 'Some help.'},
        {'name': 'other', 'value': 0.5, 'type': 'counter'},
        {'name': 'm_seconds', 'value': 4, 'labels': {'svc': 'c'}},
    ])
    assert text == ('# HELP m_seconds Some help.\n# TYPE m_seconds gauge\n'
                    'm_seconds{svc="a\\"b"} 3\nm_seconds{svc="c"} 4\n'
                    '# TYPE other counter\nother 0.5\n')


def test_labels_are_sorted_for_a_stable_file():
    assert render([{'name': 'm', 'value': 1, 'labels': {'b': '2', 'a': '1'}}]).endswith('m{a="1",b="2"} 1\n')


@pytest.mark.parametrize('value, text', [(True, '1'), (False, '0'), (2.0, '2'), ('1.5', '1.5'),
                                         (float('inf'), '+Inf'), (float('nan'), 'NaN'), (1e20, '1e+20')])
def test_format_value(value, text):
    if isinstance(value, str):
        value = float(value)
    assert format_value(value) == text


@pytest.mark.parametrize('metric, message', [
    ({'name': '1bad', 'value': 1}, 'not a valid Prometheus metric name'),
    ({'name': 'm', 'value': 'abc'}, 'value .abc. is not a number'),
    ({'name': 'm', 'value': None}, 'is not a number'),
    ({'name': 'm', 'value': 1, 'labels': {'bad-label': 'x'}}, 'label name'),
    ({'name': 'm', 'value': 1, 'labels': {'__reserved': 'x'}}, 'label name'),
    ({'name': 'm', 'value': 1, 'type': 'histogram'}, 'type .histogram. is not one of'),
    ({'name': 'm', 'value': 1, 'labels': ['x']}, 'labels must be a mapping'),
])
def test_invalid_metrics_are_refused_with_the_reason(metric, message):
    with pytest.raises(MetricError, match=message):
        render([metric])


def test_duplicates_and_mixed_types_are_refused():
    with pytest.raises(MetricError, match='twice with the same labels'):
        render([{'name': 'm', 'value': 1, 'labels': {'a': '1'}}, {'name': 'm', 'value': 2, 'labels': {'a': '1'}}])
    with pytest.raises(MetricError, match='different types'):
        render([{'name': 'm', 'value': 1}, {'name': 'm', 'value': 2, 'type': 'counter', 'labels': {'a': '1'}}])


def test_empty_list_renders_empty_file():
    assert render([]) == ''
