"""Write the published event contracts: schemas/events/<type>.json and schemas/asyncapi.json.

`make schemas` after changing an event model; review the diff (add optional fields only).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from shared.events.catalog import asyncapi, event_schemas

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = ROOT / "schemas"


def rendered() -> dict[Path, str]:
    files = {
        SCHEMAS / "events" / f"{event_type}.json": schema
        for event_type, schema in event_schemas().items()
    }
    files[SCHEMAS / "asyncapi.json"] = asyncapi()
    return {path: json.dumps(doc, indent=2, sort_keys=True) + "\n" for path, doc in files.items()}


def main() -> int:
    for path, text in rendered().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    print(f"wrote {len(rendered())} files under {SCHEMAS.relative_to(ROOT)}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
