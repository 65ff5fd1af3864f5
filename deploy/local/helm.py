"""Build helm from source through the Go module proxy into ``.cache/helm/`` (no other download).

Stdlib only. ``python deploy/local/helm.py`` prints the binary's path, building it first if
needed; the test session calls ``fetch_helm()`` the same way it fetches the Kafka jars.

The Go toolchain is the machine's ``go`` when it is new enough to fetch the toolchain helm's
``go.mod`` asks for (Go 1.21+, ``GOTOOLCHAIN=auto``, itself through the module proxy). Where
``go`` is missing or older (Debian 12 ships 1.19), the toolchain is fetched as the Go module
``golang.org/toolchain`` from the same proxy, which is how ``go`` itself upgrades.
"""

from __future__ import annotations

import io
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HELM_VERSION = "3.22.0"
# The toolchain fetched when the machine has no usable `go` (any release new enough for helm).
GO_TOOLCHAIN = "1.26.8"
# The Kubernetes version helm assumes without a cluster (`helm template`, `helm lint`): helm's
# release build sets it from its client-go module (v0.37 → 1.37), and so do we.
KUBE_MAJOR, KUBE_MINOR = "1", "37"
LDFLAGS = " ".join(
    [
        "-s -w",
        f"-X helm.sh/helm/v3/internal/version.version=v{HELM_VERSION}",
        *(
            f"-X helm.sh/helm/v3/pkg/{package}.k8sVersion{part}={value}"
            for package in ("lint/rules", "chartutil")
            for part, value in (("Major", KUBE_MAJOR), ("Minor", KUBE_MINOR))
        ),
    ]
)
BUILD_TIMEOUT_S = 3600


def _go_version(go: str) -> tuple[int, int]:
    out = subprocess.run([go, "version"], capture_output=True, text=True, check=False).stdout
    match = re.search(r"go(\d+)\.(\d+)", out)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def _proxy() -> str:
    for entry in re.split(r"[,|]", os.environ.get("GOPROXY", "")):
        if entry.startswith("http"):
            return entry.rstrip("/")
    return "https://proxy.golang.org"


def _fetch_toolchain(cache: Path) -> str:
    """The `golang.org/toolchain` module for this platform, unpacked; returns its `go`."""
    arch = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64"}[platform.machine()]
    module = f"v0.0.1-go{GO_TOOLCHAIN}.{sys.platform}-{arch}"
    home = cache / "go" / module
    go = home / "bin" / "go"
    if not go.exists():
        url = f"{_proxy()}/golang.org/toolchain/@v/{module}.zip"
        with urllib.request.urlopen(url, timeout=600) as response:
            archive = zipfile.ZipFile(io.BytesIO(response.read()))
        prefix = f"golang.org/toolchain@{module}/"
        staging = Path(tempfile.mkdtemp(dir=cache))
        for info in archive.infolist():
            if info.is_dir() or not info.filename.startswith(prefix):
                continue
            target = staging / info.filename[len(prefix) :]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(archive.read(info))
            # Zip entries keep their Unix mode in the high bits (executables under bin, pkg/tool).
            target.chmod((info.external_attr >> 16) & 0o777 or 0o644)
        home.parent.mkdir(parents=True, exist_ok=True)
        staging.rename(home)
    return str(go)


def fetch_helm(root: Path = REPO) -> Path:
    """The helm binary under ``.cache/helm/<version>/``; built with ``go install`` if absent."""
    cache = root / ".cache"
    helm = cache / "helm" / HELM_VERSION / "helm"
    if helm.exists():
        return helm
    cache.mkdir(parents=True, exist_ok=True)
    go = shutil.which("go")
    if go is None or _go_version(go) < (1, 21):
        go = _fetch_toolchain(cache)
    with tempfile.TemporaryDirectory(dir=cache) as gobin:
        env = os.environ | {"GOBIN": gobin, "GOTOOLCHAIN": "auto", "CGO_ENABLED": "0"}
        proc = subprocess.run(
            [go, "install", f"-ldflags={LDFLAGS}", f"helm.sh/helm/v3/cmd/helm@v{HELM_VERSION}"],
            env=env,
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT_S,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"building helm {HELM_VERSION} failed:\n{proc.stderr[-4000:]}")
        helm.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(Path(gobin) / "helm"), helm)
    return helm


if __name__ == "__main__":
    print(fetch_helm())
