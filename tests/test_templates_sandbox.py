"""Templates are less trusted than the sysadmin: sandboxed, autoescaped, strict, and unable to read files.

A designer's mistake or mischief is reported as a problem naming the template
file and line; it never runs, never leaks a file, never injects a header.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from balancewatch.alerts.context import sample_alert_context
from balancewatch.core import shipped
from balancewatch.core.problems import ProblemsError
from balancewatch.render.templates import RenderError, TemplateSet, load_templates
from balancewatch.runtime.loadset import load_set

RULE = "alerts:\n  - id: a\n    exhausted: true\n    template: probe\n"


def template_set(tmp_path: Path, files: dict[str, str]) -> TemplateSet:
    """A templates directory holding ``files`` (relative path -> text), loaded and compiled."""
    root = tmp_path / "templates"
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return load_templates(root)


def render_error(tmp_path: Path, body: str, **extra: str) -> str:
    """The problem rendering a template whose body.txt is ``body`` reports, relative to the directory."""
    templates = template_set(tmp_path, {"probe/subject.txt": "Balance", "probe/body.txt": body, **extra})
    with pytest.raises(RenderError) as caught:
        templates.render("probe", sample_alert_context())
    return str(caught.value.problem).removeprefix(f"{tmp_path / 'templates'}/")


def context(**account: Any) -> dict[str, Any]:
    data = sample_alert_context()
    data["account"] = {**data["account"], **account}
    return data


# --- escaping ---------------------------------------------------------------------------------------


def test_a_name_with_markup_is_escaped_in_the_html_part_but_not_in_the_text_part() -> None:
    templates = load_templates(shipped.templates_dir())
    rendered = templates.render("low-balance", context(name='<script>alert("x")</script>'))
    assert 'Hello <script>alert("x")</script>,' in rendered.text
    assert rendered.html is not None
    # Inlining the CSS writes the document out again: quotes in text need no escaping there.
    assert 'Hello &lt;script&gt;alert("x")&lt;/script&gt;,' in rendered.html
    assert "<script>" not in rendered.html


def test_a_subject_is_one_line_whatever_the_data_holds() -> None:
    templates = load_templates(shipped.templates_dir())
    rendered = templates.render("low-balance", context(name="Acme\r\nBcc: victim@example.com"))
    assert rendered.subject == "Acme Bcc: victim@example.com: USD balance $84.12 is below $100.00"


# --- no files ---------------------------------------------------------------------------------------


def test_a_template_cannot_include_an_absolute_path(tmp_path: Path) -> None:
    assert render_error(tmp_path, 'Hello\n{% include "/etc/passwd" %}\n') == (
        "probe/body.txt:2: template '/etc/passwd' not found: a template may include or extend only files "
        "of the templates directory, named relative to it (shared files here: none)"
    )


def test_a_template_cannot_climb_out_of_the_templates_directory(tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text("the database password")
    assert render_error(tmp_path, '{% include "../secret.txt" %}', **{"_layout.txt": "shared"}) == (
        "probe/body.txt:1: template '../secret.txt' not found: a template may include or extend only files "
        "of the templates directory, named relative to it (shared files here: _layout.txt)"
    )


def test_a_template_cannot_import_macros_from_outside_either(tmp_path: Path) -> None:
    assert render_error(tmp_path, '{% from "/etc/hostname" import x %}{{ x() }}').startswith(
        "probe/body.txt:1: template '/etc/hostname' not found"
    )


def test_shared_files_of_the_directory_can_be_included(tmp_path: Path) -> None:
    templates = template_set(
        tmp_path,
        {
            "_footer.txt": "-- {{ account.id }}",
            "probe/subject.txt": "Balance",
            "probe/body.txt": 'Hello\n{% include "_footer.txt" %}',
        },
    )
    assert templates.render("probe", sample_alert_context()).text == "Hello\n-- acme-42\n"


def test_a_file_linked_from_outside_the_directory_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("the database password")
    root = tmp_path / "templates"
    (root / "probe").mkdir(parents=True)
    (root / "probe" / "subject.txt").write_text("x")
    (root / "probe" / "body.txt").write_text('{% include "_leak.txt" %}')
    (root / "_leak.txt").symlink_to(secret)
    with pytest.raises(ProblemsError) as caught:
        load_templates(root)
    assert str(caught.value) == (
        f"{root / '_leak.txt'}: links outside the templates directory; templates read only files in it"
    )


def test_what_is_rendered_is_what_was_loaded_whatever_happens_on_disk_later(tmp_path: Path) -> None:
    templates = template_set(tmp_path, {"probe/subject.txt": "Balance", "probe/body.txt": "first"})
    (tmp_path / "templates" / "probe" / "body.txt").write_text("{{ ''.__class__ }}")
    assert templates.render("probe", sample_alert_context()).text == "first\n"


# --- no Python --------------------------------------------------------------------------------------


def test_reaching_for_python_internals_is_a_security_error_with_file_and_line(tmp_path: Path) -> None:
    assert render_error(tmp_path, "Hello\n\n{{ ''.__class__.__mro__ }}\n") == (
        "probe/body.txt:3: access to attribute '__class__' of 'str' object is unsafe; "
        "templates run in a sandbox: no private attributes, no changing data"
    )


def test_a_template_cannot_change_the_data_it_is_given(tmp_path: Path) -> None:
    assert render_error(tmp_path, "{{ alert.crossed.append(1) }}") == (
        "probe/body.txt:1: access to attribute 'append' of 'list' object is unsafe; "
        "templates run in a sandbox: no private attributes, no changing data"
    )


def test_globals_of_functions_are_out_of_reach(tmp_path: Path) -> None:
    assert render_error(tmp_path, "{{ cycler.__init__.__globals__ }}") == (
        "probe/body.txt:1: access to attribute '__init__' of 'type' object is unsafe; "
        "templates run in a sandbox: no private attributes, no changing data"
    )


def test_a_huge_range_is_refused_instead_of_exhausting_the_daemon(tmp_path: Path) -> None:
    assert render_error(tmp_path, "{% for i in range(10**9) %}{% endfor %}") == (
        "probe/body.txt:1: OverflowError: Range too big. "
        "The sandbox blocks ranges larger than MAX_RANGE (100000)."
    )


def test_an_undefined_variable_is_an_error_not_an_empty_string(tmp_path: Path) -> None:
    assert render_error(tmp_path, "Dear {{ acount.name }}") == "probe/body.txt:1: 'acount' is undefined"


def test_an_error_in_a_shared_layout_is_reported_in_the_layout(tmp_path: Path) -> None:
    problem = render_error(
        tmp_path,
        "plain",
        **{
            "_base.html": "<html>\n<body>\n{{ account.id.__class__ }}\n"
            "{% block content %}{% endblock %}</body>",
            "probe/body.html": '{% extends "_base.html" %}{% block content %}hi{% endblock %}',
        },
    )
    assert problem == (
        "_base.html:3: access to attribute '__class__' of 'str' object is unsafe; "
        "templates run in a sandbox: no private attributes, no changing data"
    )


def test_check_reports_a_security_error_as_a_problem_with_file_and_line(tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    shutil.copytree(shipped.templates_dir(), templates)
    (templates / "probe").mkdir()
    (templates / "probe" / "subject.txt").write_text("Balance {{ balance | money }}")
    (templates / "probe" / "body.txt").write_text("Hello\n{{ ''.__class__.__mro__[1].__subclasses__() }}\n")
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "probe.yaml").write_text(RULE)
    with pytest.raises(ProblemsError) as caught:
        load_set(rules, templates)
    assert [str(p) for p in caught.value.problems] == [
        f"{templates / 'probe' / 'body.txt'}:2: access to attribute '__class__' of 'str' object is unsafe; "
        "templates run in a sandbox: no private attributes, no changing data"
    ]


def test_a_misspelled_variable_through_the_money_filter_is_reported_as_undefined(tmp_path: Path) -> None:
    templates = TemplateSet({"x/subject.txt": "{{ balanse | money }}", "x/body.txt": "hi"}, tmp_path)
    with pytest.raises(RenderError) as caught:
        templates.render("x", {"locale": "en_US"})
    assert str(caught.value.problem) == f"{tmp_path}/x/subject.txt:1: 'balanse' is undefined"


# --- macros -----------------------------------------------------------------------------------------


MACROS = """\
{% macro row(label, value="-") %}{{ label }}={{ value }}\
{% if varargs %} +{{ varargs | join(",") }}{% endif %}\
{% if kwargs %} {{ kwargs | dictsort | join(";") }}{% endif %}{% endmacro %}
{% macro boxed() %}[{{ caller(1) }}]{% endmacro %}
{% for n in [1, 2] %}{{ row("n", n) }} {{ row("extra", n, 7, 8) }} {{ row("k", flag=n) }} {{ row("bare") }}
{% call(x) boxed() %}inside {{ x }} of {{ n }}{% endcall %}.
{% endfor %}{{ row("safe", account.name) }}
"""


def test_macros_take_defaults_extra_arguments_and_a_caller_in_loops(tmp_path: Path) -> None:
    templates = template_set(tmp_path, {"probe/subject.txt": "Balance", "probe/body.txt": MACROS})
    text = templates.render("probe", context(name="Acme")).text
    assert text.splitlines() == [
        "n=1 extra=1 +7,8 k=- ('flag', 1) bare=-",
        "[inside 1 of 1].",
        "n=2 extra=2 +7,8 k=- ('flag', 2) bare=-",
        "[inside 1 of 2].",
        "safe=Acme",
    ]


def test_a_macro_given_an_argument_it_does_not_take_is_an_error_with_file_and_line(tmp_path: Path) -> None:
    problem = render_error(tmp_path, "{% macro one(a) %}{{ a }}{% endmacro %}\n{{ one(1, 2) }}\n")
    assert problem.startswith("probe/body.txt:2:")
    assert "macro 'one' takes not more than 1 argument(s)" in problem
