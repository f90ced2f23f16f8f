"""Extract the response schemas the emulator contract tests validate against.

Source: the OpenAPI 3.1 description of the Anthropic API as published in the third-party,
MIT-licensed repository tryAGI/Anthropic (file src/libs/Anthropic/openapi.yaml), copied as
/work/shared/reference/anthropic-openapi.json. This script keeps only the schemas below and
everything they reference (transitively), so a fresh clone can run the tests without that copy.

    python tests/data/extract_openapi_subset.py [SOURCE_JSON] [OUTPUT_JSON]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOTS = [
    "MessageBatch",
    "ListResponse_MessageBatch_",
    "DeleteMessageBatchResponse",
    "MessageBatchIndividualResponse",
    "Message",
    "ErrorResponse",
    "CountMessageTokensResponse",
    "ModelInfo",
    "ListResponse_ModelInfo_",
    "BetaFileMetadataSchema",
    "BetaFileListResponse",
    "BetaFileDeleteResponse",
]
DEFAULT_SOURCE = "/work/shared/reference/anthropic-openapi.json"
DEFAULT_OUTPUT = Path(__file__).with_name("openapi-subset.json")
PREFIX = "#/components/schemas/"


def refs(node: object):
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(PREFIX):
            yield ref[len(PREFIX):]
        for value in node.values():
            yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def extract(spec: dict) -> dict:
    schemas = spec["components"]["schemas"]
    keep: dict[str, object] = {}
    todo = list(ROOTS)
    while todo:
        name = todo.pop()
        if name in keep:
            continue
        keep[name] = schemas[name]
        todo.extend(r for r in refs(schemas[name]) if r not in keep)
    return {
        "x-source": "tryAGI/Anthropic, src/libs/Anthropic/openapi.yaml (OpenAPI 3.1 description of the "
                    "Anthropic API), via /work/shared/reference/anthropic-openapi.json",
        "x-license": "MIT (third-party repository tryAGI/Anthropic)",
        "x-roots": ROOTS,
        "openapi": spec.get("openapi"),
        "components": {"schemas": dict(sorted(keep.items()))},
    }


def main(argv: list[str]) -> int:
    source = argv[1] if len(argv) > 1 else DEFAULT_SOURCE
    output = Path(argv[2]) if len(argv) > 2 else DEFAULT_OUTPUT
    subset = extract(json.loads(Path(source).read_text("utf-8")))
    output.write_text(json.dumps(subset, indent=1, sort_keys=False) + "\n", "utf-8")
    print(f"{output}: {len(subset['components']['schemas'])} schemas")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
