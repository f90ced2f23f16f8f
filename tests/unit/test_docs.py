"""The docs cannot drift from the code: the configuration reference against `Settings`, the README against
the docs pages. (The getting-started page is run against the emulator in tests/integration/test_quickstart.py.)"""

from __future__ import annotations

import dataclasses
import re

import pytest
import yaml

from dbt_claude_batch.base.settings import Settings
from docs_pages import REPO_ROOT, documented_settings, quickstart_blocks, read

# What an example needs besides itself to pass validation (every other setting at its default).
_BASE = {"key": "id", "prompt_template": "prompts/p.j2", "model": "claude-haiku-4-5", "system": "Answer briefly."}
_NEEDS = {
    "prompt_column": {"prompt_template": None},
    "output_columns": {"output_schema": {"type": "object"}},
}


def _documented() -> dict:
    settings = documented_settings(read("configuration.md"))
    names = [s.name for s in settings]
    assert len(names) == len(set(names)), f"settings documented twice: {sorted({n for n in names if names.count(n) > 1})}"
    return {s.name: s for s in settings}


def test_the_reference_documents_exactly_the_settings_the_code_accepts():
    accepted, documented = set(Settings.names()), set(_documented())
    undocumented = sorted(accepted - documented)
    not_in_code = sorted(documented - accepted)
    assert not undocumented, (f"setting(s) {', '.join(undocumented)} accepted by Settings but not documented in "
                              "docs/configuration.md: add a '### `name`' section with its default and an example")
    assert not not_in_code, (f"setting(s) {', '.join(not_in_code)} documented in docs/configuration.md but not "
                             "accepted by Settings: remove them from the page")


def test_every_documented_setting_has_a_default_and_an_example_the_code_accepts():
    for name, doc in _documented().items():
        assert doc.default, f"setting {name}: no '- default: ...' line under its heading in docs/configuration.md"
        assert doc.example, f"setting {name}: no '- example: `{name}: ...`' line under its heading"
        example = yaml.safe_load(doc.example)
        assert isinstance(example, dict) and list(example) == [name], (
            f"setting {name}: its example `{doc.example}` must set {name} and nothing else")
        config = {**_BASE, **_NEEDS.get(name, {}), **example}
        try:
            Settings.build({k: v for k, v in config.items() if v is not None}, {})
        except Exception as exc:  # noqa: BLE001 - the message names the setting, the failure shows the error
            pytest.fail(f"setting {name}: its example `{doc.example}` is refused: {str(exc).splitlines()[0]}")


def test_documented_defaults_are_the_code_defaults():
    documented = _documented()
    for field in dataclasses.fields(Settings):
        default = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
        if field.name not in documented or default is dataclasses.MISSING or default is None \
                or not isinstance(default, (bool, int, float, str, dict)):
            continue  # an undocumented setting fails the first test, by name
        shown = documented[field.name].default
        code = re.match(r"`([^`]*)`", shown)
        assert code, f"setting {field.name}: its default is {default!r}; write it in backticks: '- default: `...`'"
        assert yaml.safe_load(code.group(1)) == default, (
            f"setting {field.name}: docs/configuration.md says the default is {code.group(1)}, the code says {default!r}")


def test_the_readme_quickstart_is_the_getting_started_page():
    readme = quickstart_blocks((REPO_ROOT / "README.md").read_text(encoding="utf-8"))
    page = quickstart_blocks(read("getting-started.md"))
    assert page, "docs/getting-started.md has no <!-- quickstart: ... --> blocks"
    assert [b.name for b in readme] == [b.name for b in page], "README.md and docs/getting-started.md mark different blocks"
    for mine, theirs in zip(readme, page):
        assert mine.text == theirs.text, f"the README's {mine.name} block differs from docs/getting-started.md's"


def test_the_readme_links_to_pages_that_exist():
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme)
    local = [link for link in links if "://" not in link]
    assert any(link.startswith("docs/") for link in local), "the README links to no docs page"
    missing = [link for link in local if not (REPO_ROOT / link).exists()]
    assert not missing, f"README.md links to missing file(s): {missing}"

