"""Each service answers what its OpenAPI document says, as a client generated from it expects:
schemathesis drives every operation (fixed seed, bounded examples) and checks each answer's
status, content type, headers and body against the document.

Every check of schemathesis runs on every service. The documents state every constraint the
handlers enforce that JSON Schema can say; for the few it cannot (a cursor this API gave out, a
signing secret's strength, a workflow's steps referring to each other), the service's file in
`conformance/` lets that one operation answer a schema-valid request with 422 as well, the
reason written beside it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from services.registry import SERVICES
from shared.auth import issue_token
from tests.conftest import ROOT
from tests.helpers import SECRET
from tests.infra import free_port

SEED = 20261128
MAX_EXAMPLES = 5
CONFIGS = Path(__file__).parent / "conformance"


@pytest.fixture
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """One service in its own process, embedded (SQLite, in-process bus); its base URL."""
    name: str = request.param
    port = free_port()
    env = os.environ | {
        "LEADWIRE_BUS": "memory",
        "LEADWIRE_DATA_DIR": str(tmp_path),
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/{{service}}.db",
        "LEADWIRE_AUTH_SECRET": SECRET,
    }
    log = (tmp_path / "server.log").open("wb")
    child = subprocess.Popen(
        [sys.executable, "-m", "services", "serve", name, "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if child.poll() is not None:
                pytest.fail((tmp_path / "server.log").read_text())
            time.sleep(0.1)
        yield base
    finally:
        child.terminate()
        child.wait(timeout=30)
        log.close()


@pytest.mark.parametrize(
    "served",
    list(SERVICES),
    indirect=True,
)
def test_the_service_answers_what_its_openapi_document_says(
    served: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    name = request.node.callspec.params["served"]
    # access's operators register workspaces; its keys operations work in a registered one.
    token = issue_token(
        SECRET, "conformance", ["admin", "operator"] if name == "access" else ["admin"]
    )
    if name == "access":
        registered = httpx.post(
            f"{served}/v1/workspaces",
            json={"id": "conformance", "name": "Conformance"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert registered.status_code == 201, registered.text
    config = CONFIGS / f"{name}.toml"
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "schemathesis"),
            *(["--config-file", str(config)] if config.exists() else []),
            "run",
            f"{served}/openapi.json",
            "--checks",
            "all",
            "--seed",
            str(SEED),
            "--max-examples",
            str(MAX_EXAMPLES),
            "--generation-deterministic",
            "--header",
            f"Authorization: Bearer {token}",
            "--no-color",
            "--report-dir",
            str(tmp_path / "report"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-5000:]
