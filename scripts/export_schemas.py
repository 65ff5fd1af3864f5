"""Write the published contracts: schemas/events/<type>.json, schemas/asyncapi.json and each
service's HTTP API, schemas/openapi/<service>.json.

`make schemas` after changing an event model or an API; review the diff (add optional fields
only).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from services.registry import SERVICES, spec
from shared.app import create_app
from shared.events.catalog import asyncapi, event_schemas

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = ROOT / "schemas"


def rendered() -> dict[Path, str]:
    files = {
        SCHEMAS / "events" / f"{event_type}.json": schema
        for event_type, schema in event_schemas().items()
    }
    files[SCHEMAS / "asyncapi.json"] = asyncapi()
    for name in SERVICES:
        files[SCHEMAS / "openapi" / f"{name}.json"] = service_openapi(name)
    return {path: json.dumps(doc, indent=2, sort_keys=True) + "\n" for path, doc in files.items()}


def service_openapi(name: str) -> dict[str, object]:
    """A service's OpenAPI document as its app serves it on `/openapi.json`."""
    return create_app(spec(name)).openapi()


def main() -> int:
    for path, text in rendered().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    print(f"wrote {len(rendered())} files under {SCHEMAS.relative_to(ROOT)}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
