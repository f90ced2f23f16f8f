"""Reading the docs pages (docs/*.md) the way the doc tests need: marked code blocks, setting headings.

The pages are written to be parsed (see the HTML comment at the top of docs/configuration.md and the
`<!-- quickstart: ... -->` markers in docs/getting-started.md), so a test can hold them to the code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCS = REPO_ROOT / "docs"

# `<!-- quickstart: NAME -->`, a blank line or none, then a fenced block. NAME is a file path relative
# to the dbt project, or `run` for commands to type in the project directory.
_MARKED_BLOCK = re.compile(r"<!-- quickstart: (\S+) -->[ \t]*\n\s*```[\w-]*\n(.*?)^```[ \t]*$", re.S | re.M)
_SETTING_HEADING = re.compile(r"^### `([^`]+)`[ \t]*$", re.M)


@dataclass(frozen=True)
class Block:
    name: str  # a path relative to the project, or "run"
    text: str  # the block's lines, ending with a newline


def quickstart_blocks(markdown: str) -> list[Block]:
    """The marked code blocks of a page, in page order."""
    return [Block(m.group(1), m.group(2)) for m in _MARKED_BLOCK.finditer(markdown)]


@dataclass(frozen=True)
class DocumentedSetting:
    name: str
    default: str | None  # the text after "- default:", None when the line is missing
    example: str | None  # the YAML inside the backticks after "- example:", None when missing


def documented_settings(markdown: str) -> list[DocumentedSetting]:
    """Every `### \\`name\\`` heading of the configuration reference with its default and example lines."""
    headings = list(_SETTING_HEADING.finditer(markdown))
    found = []
    for i, heading in enumerate(headings):
        end = headings[i + 1].start() if i + 1 < len(headings) else len(markdown)
        section = markdown[heading.end():end]
        section = section.split("\n## ", 1)[0]  # a setting's section ends at the next heading of any level
        default = re.search(r"^- default: (.+)$", section, re.M)
        example = re.search(r"^- example: `(.+)`[ \t]*$", section, re.M)
        found.append(DocumentedSetting(heading.group(1), default and default.group(1).strip(),
                                       example and example.group(1)))
    return found


def read(page: str) -> str:
    return (DOCS / page).read_text(encoding="utf-8")
