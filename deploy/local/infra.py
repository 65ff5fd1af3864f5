"""Run a real single-node Kafka broker and PostgreSQL server for local work and tests.

Stdlib only, so it works before the project venv exists. Used three ways:
- the CLI: ``python deploy/local/infra.py kafka|postgres start|stop|status|wait [--state DIR]``
  (``--socket``: PostgreSQL's URL over its Unix socket);
- the wrappers ``deploy/local/kafka.sh`` and ``deploy/local/postgres.sh``;
- tests, through ``tests/infra.py`` (``start_kafka``, ``start_postgres``, ``fetch_kafka_jars``).

Each server keeps everything in its state folder: config, data, log, and small files holding
the pid and the address (``bootstrap`` for Kafka, ``url`` for PostgreSQL). Nothing is deleted
on stop so a failed run can be inspected; a later start reuses the data and the same ports.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_STATE = REPO / ".leadwire" / "local"
READY_TIMEOUT = 90.0


# --------------------------------------------------------------------------- helpers


# Where `free_port` looks: above the well-known and registered services' usual ports, below
# the kernel's ephemeral range (read from Linux; 32768 is its default start).
PORTS_FROM = 20000
EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def free_port() -> int:
    """A free TCP port on 127.0.0.1 for a server we start, below the kernel's ephemeral range.

    The port the kernel gives a bind to port 0 comes from the range it also gives outgoing
    connections. A server restarted on its port (the fault suite kills and restarts the broker,
    the database and services) could then find the port taken by a client's connection made
    while it was down, and fail to start. No connection is ever given a port below the range.
    There is a tiny race until the server binds the port.
    """
    try:
        ephemeral_from = int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_from = 32768
    rng = random.Random()
    for _ in range(100):
        if ephemeral_from - PORTS_FROM < 1000:
            break  # an unusual range: leave the choice to the kernel
        port = rng.randrange(PORTS_FROM, ephemeral_from)
        if _port_free(port):
            return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        # Like the servers themselves: a port in TIME_WAIT from our last run counts as free.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _pid_alive(pid: int, marker: str) -> bool:
    """True if ``pid`` runs and its command line contains ``marker``.

    The marker guards against a recycled pid, and a zombie (empty cmdline) counts as dead.
    """
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:
        return marker in Path(f"/proc/{pid}/cmdline").read_text(errors="replace")
    except OSError:
        return True  # no /proc: trust the signal check


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return None


def _log_excerpt(path: Path, start: int = 0) -> str:
    """Errors and last lines of a log written since byte ``start`` (the real cause of a failed
    start is usually an ERROR / "Caused by" line buried above pages of shutdown noise)."""
    try:
        with path.open("rb") as f:
            f.seek(start)
            lines = f.read().decode(errors="replace").splitlines()
    except FileNotFoundError:
        return f"(no {path})"
    errors = [line for line in lines if " ERROR " in line or line.startswith("Caused by")]
    return "\n".join([*errors[-10:], "...", *lines[-15:]])


def _run(cmd: list[str], what: str) -> str:
    """Run a short command; raise with its output if it fails."""
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(
            f"{what} failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout}{proc.stderr}"
        )
    return proc.stdout


# --------------------------------------------------------------------------- Kafka


def _kafka_version(root: Path) -> str:
    pom = (root / "deploy" / "local" / "kafka-pom.xml").read_text()
    match = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", pom)
    if not match:
        raise RuntimeError("kafka.version property not found in deploy/local/kafka-pom.xml")
    return match.group(1).strip()


def fetch_kafka_jars(root: Path = REPO) -> Path:
    """Download the Kafka broker jars named by ``deploy/local/kafka-pom.xml``; return the folder.

    Idempotent: skipped when the folder already holds ``kafka_2.13-<version>.jar``. If it holds
    another version, it is emptied first, since two versions on one classpath break the broker.
    """
    libs = root / ".cache" / "kafka" / "libs"
    version = _kafka_version(root)
    if (libs / f"kafka_2.13-{version}.jar").exists():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise RuntimeError("mvn not found; run deploy/local/install-system-deps.sh")
    if libs.exists():
        shutil.rmtree(libs)
    cmd = [
        mvn,
        "-q",
        "-B",
        "-U",  # retry artifacts whose earlier miss Maven cached in ~/.m2 (else for a day)
        "-f",
        str(root / "deploy" / "local" / "kafka-pom.xml"),
        "dependency:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={libs}",
    ]
    _run(cmd, "fetching Kafka jars with Maven")
    if not (libs / f"kafka_2.13-{version}.jar").exists():
        raise RuntimeError(f"Maven finished but {libs} lacks kafka_2.13-{version}.jar")
    return libs


def kafka_answers(bootstrap: str, timeout: float = 2.0) -> bool:
    """True if the broker answers a Metadata request listing at least one live broker.

    An open port proves little (it may be a stale or foreign listener); a broker lists itself
    in metadata only once it is registered and unfenced, i.e. usable for produce and consume.
    Plain socket, Metadata v4 (Kafka 4 dropped v0-v3), so no client library is needed.
    """
    host, port = bootstrap.rsplit(":", 1)
    client = b"leadwire-probe"
    # Request header v1 (api_key=3 Metadata, version 4, correlation id 7, client id),
    # then body: topics=null (int32 -1) and allow_auto_topic_creation=false.
    body = struct.pack(">hhih", 3, 4, 7, len(client)) + client + struct.pack(">ib", -1, 0)
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as s:
            s.sendall(struct.pack(">i", len(body)) + body)
            size = struct.unpack(">i", _recv_exact(s, 4))[0]
            # Response: correlation id, throttle_time_ms, then the brokers array length.
            correlation, _throttle, brokers = struct.unpack(">iii", _recv_exact(s, 12))
            _recv_exact(s, size - 12)
    except (OSError, struct.error):
        return False
    return bool(correlation == 7 and brokers >= 1)


def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed")
        buf += chunk
    return buf


@dataclass
class KafkaServer:
    bootstrap: str
    pid: int
    state_dir: Path
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def sasl_bootstrap(self) -> str | None:
        """The SASL/PLAIN listener (user `KAFKA_SASL_USER`), when the broker has one."""
        props = (self.state_dir / "server.properties").read_text()
        found = re.search(r"^listeners=.*SASL_PLAINTEXT://([^,\s]+)", props, re.M)
        return found.group(1) if found else None

    def running(self) -> bool:
        if self._proc is not None and self._proc.poll() is not None:
            return False
        return _pid_alive(self.pid, "kafka.Kafka")

    def stop(self, timeout: float = 30.0, remove_data: bool = False) -> None:
        """SIGTERM the broker's process group (clean shutdown), SIGKILL if it hangs.

        Data, config and log stay for debugging unless ``remove_data``.
        """
        if self.running():
            _kill_group(self.pid, signal.SIGTERM)
            if not self._wait_exit(timeout):
                _kill_group(self.pid, signal.SIGKILL)
                self._wait_exit(10)
        (self.state_dir / "pid").unlink(missing_ok=True)
        if remove_data:
            shutil.rmtree(self.state_dir / "data", ignore_errors=True)

    def kill(self) -> None:
        """SIGKILL, as a crashed machine or an OOM kill looks to the broker (fault tests)."""
        _kill_group(self.pid, signal.SIGKILL)
        self._wait_exit(30)
        (self.state_dir / "pid").unlink(missing_ok=True)

    def _wait_exit(self, timeout: float) -> bool:
        if self._proc is not None:  # our child: wait() also reaps it
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                return False
            return True
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                return True
            time.sleep(0.1)
        return False


def _kill_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


def running_kafka(state_dir: Path) -> KafkaServer | None:
    """The broker recorded in ``state_dir`` if its process is alive, else None."""
    pid, bootstrap = _read(state_dir / "pid"), _read(state_dir / "bootstrap")
    if not pid or not bootstrap or not _pid_alive(int(pid), "kafka.Kafka"):
        return None
    return KafkaServer(bootstrap, int(pid), state_dir)


# The broker's SASL/PLAIN listener accepts this one user (local and test use only).
KAFKA_SASL_USER = "leadwire"
KAFKA_SASL_PASSWORD = "leadwire-local-only"


def _kafka_properties(state_dir: Path, port: int, controller_port: int, sasl_port: int) -> str:
    ports = f"PLAINTEXT://127.0.0.1:{port},SASL_PLAINTEXT://127.0.0.1:{sasl_port}"
    return f"""\
# Single-node KRaft: this process is both broker and the only controller (tests, local dev).
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:{controller_port}
listeners={ports},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners={ports},CONTROLLER://127.0.0.1:{controller_port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT
# A second listener with SASL/PLAIN, so clients' authentication is tested against a real broker.
sasl.enabled.mechanisms=PLAIN
listener.name.sasl_plaintext.plain.sasl.jaas.config=\
org.apache.kafka.common.security.plain.PlainLoginModule required \
user_{KAFKA_SASL_USER}="{KAFKA_SASL_PASSWORD}";
log.dirs={state_dir / "data"}
num.partitions=4
auto.create.topics.enable=true
# Consumer groups start at once instead of waiting 3 s for more members.
group.initial.rebalance.delay.ms=0
# After a SIGKILL the restarted broker registers a new incarnation, which the controller
# accepts only once the old one's session has expired: 9 s by default, here 2 s (heartbeats
# every 0.5 s). A multi-broker production cluster keeps the defaults; there the other
# brokers lead the partitions meanwhile.
broker.session.timeout.ms=2000
broker.heartbeat.interval.ms=500
# One broker: every internal topic has one replica.
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# Fewer internal partitions and small segments: faster start, less disk for throwaway data.
offsets.topic.num.partitions=4
transaction.state.log.num.partitions=4
log.segment.bytes=8388608
"""


def start_kafka(state_dir: Path, libs: Path) -> KafkaServer:
    """Start a single-node KRaft broker with its state in ``state_dir``; wait until ready.

    A fresh folder gets free ports and freshly formatted storage; a folder from an earlier run
    keeps its data and ports (the controller's address is written into the formatted storage).
    """
    state_dir = state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    if running_kafka(state_dir):
        raise RuntimeError(f"Kafka already runs from {state_dir}")
    java = shutil.which("java")
    if java is None:
        raise RuntimeError("java not found; run deploy/local/install-system-deps.sh")
    classpath = f"{libs.resolve()}/*"
    props = state_dir / "server.properties"
    if not (state_dir / "data" / "meta.properties").exists():
        port, controller_port, sasl_port = free_port(), free_port(), free_port()
        while len({port, controller_port, sasl_port}) < 3:
            controller_port, sasl_port = free_port(), free_port()
        props.write_text(_kafka_properties(state_dir, port, controller_port, sasl_port))
        storage = [java, "-cp", classpath, "kafka.tools.StorageTool"]
        cluster_id = _run([*storage, "random-uuid"], "kafka-storage random-uuid").strip()
        _run(
            [*storage, "format", "--standalone", "-t", cluster_id, "-c", str(props)],
            "kafka-storage format",
        )
    listeners = re.search(r"^listeners=PLAINTEXT://([^,\s]+)", props.read_text(), re.M)
    if listeners is None:
        raise RuntimeError(f"no PLAINTEXT listener in {props}")
    bootstrap = listeners.group(1)

    log_path = state_dir / "kafka.log"
    with log_path.open("ab") as log:
        log_start = log.tell()
        proc = subprocess.Popen(
            [
                java,
                "-Xmx768m",
                "-Xms256m",
                "-XX:+UseG1GC",
                "-Djava.awt.headless=true",
                "-Dorg.slf4j.simpleLogger.showDateTime=true",
                "-cp",
                classpath,
                "kafka.Kafka",
                str(props),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=state_dir,
            start_new_session=True,  # own process group: stop() signals the whole tree
        )
    server = KafkaServer(bootstrap, proc.pid, state_dir, proc)
    (state_dir / "pid").write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + READY_TIMEOUT
    while not kafka_answers(bootstrap):
        if proc.poll() is not None or time.monotonic() > deadline:
            reason = f"exited with {proc.returncode}" if proc.poll() is not None else "timed out"
            server.stop()
            raise RuntimeError(
                f"Kafka {reason} before answering on {bootstrap}; "
                f"from {log_path}:\n{_log_excerpt(log_path, log_start)}"
            )
        time.sleep(0.2)
    (state_dir / "bootstrap").write_text(f"{bootstrap}\n")
    return server


# --------------------------------------------------------------------------- PostgreSQL


def _pg_bin() -> Path:
    """Server binaries folder: initdb's from PATH first, else the newest Debian install.

    Symlinks are resolved because pg_ctl and createdb are looked up next to initdb, and a
    PATH entry may hold only links to some of them.
    """
    initdb = shutil.which("initdb")
    if initdb:
        folder = Path(initdb).resolve().parent
        if all((folder / name).exists() for name in ("pg_ctl", "createdb")):
            return folder
    found = [p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/initdb")]
    if not found:
        raise RuntimeError("PostgreSQL server not found; run deploy/local/install-system-deps.sh")
    return max(found, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)


def _as_postgres(cmd: list[str]) -> list[str]:
    # initdb, pg_ctl and postgres refuse to run as root.
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def _pg_home(state_dir: Path) -> Path:
    """Folder for data, log and socket: ``state_dir`` if the server's user can use it.

    As root the server runs as ``postgres``, which cannot enter private folders such as
    pytest's /tmp/pytest-of-root (mode 700); then, or if the path is too long for a Unix
    socket, a new folder under /tmp is used. The choice is kept in ``state_dir/home``.
    """
    recorded = _read(state_dir / "home")
    if recorded:
        return Path(recorded)
    root = os.geteuid() == 0
    if root:
        shutil.chown(state_dir, "postgres", "postgres")
    usable = subprocess.run(_as_postgres(["test", "-w", str(state_dir)]), check=False)
    # The socket path (home/.s.PGSQL.NNNNN) must fit in 107 bytes.
    if usable.returncode == 0 and len(str(state_dir)) <= 80:
        home = state_dir
    else:
        home = Path(tempfile.mkdtemp(prefix="leadwire-pg-"))
        if root:
            shutil.chown(home, "postgres", "postgres")
    (state_dir / "home").write_text(f"{home}\n")
    return home


@dataclass
class PostgresServer:
    url: str
    port: int
    state_dir: Path
    home: Path

    @property
    def socket_url(self) -> str:
        """The same database over the server's Unix socket, for clients on this machine: a
        message there costs its sender less CPU than over loopback TCP (deploy/README.md,
        "A PostgreSQL on the same machine")."""
        return f"postgresql+asyncpg://postgres@/leadwire?host={self.home}&port={self.port}"

    def running(self) -> bool:
        pg_ctl = str(_pg_bin() / "pg_ctl")
        cmd = _as_postgres([pg_ctl, "status", "-D", str(self.home / "data")])
        return subprocess.run(cmd, capture_output=True, check=False).returncode == 0

    def crash(self) -> None:
        """Immediate shutdown, as a power loss looks to PostgreSQL: no checkpoint, the next
        start replays the WAL (fault tests)."""
        pg_ctl = str(_pg_bin() / "pg_ctl")
        _run(
            _as_postgres([pg_ctl, "stop", "-w", "-m", "immediate", "-D", str(self.home / "data")]),
            "pg_ctl stop -m immediate",
        )

    def stop(self, remove_data: bool = False) -> None:
        """Fast shutdown (rolls back open transactions); keeps the data unless ``remove_data``."""
        if self.running():
            pg_ctl = str(_pg_bin() / "pg_ctl")
            _run(
                _as_postgres([pg_ctl, "stop", "-w", "-m", "fast", "-D", str(self.home / "data")]),
                "pg_ctl stop",
            )
        if remove_data:
            shutil.rmtree(self.home / "data", ignore_errors=True)
            if self.home != self.state_dir:  # a /tmp fallback folder of our own
                shutil.rmtree(self.home, ignore_errors=True)
                (self.state_dir / "home").unlink(missing_ok=True)


def running_postgres(state_dir: Path) -> PostgresServer | None:
    """The server recorded in ``state_dir`` if it is running, else None."""
    url, port, home = (_read(state_dir / n) for n in ("url", "port", "home"))
    if not url or not port or not home:
        return None
    server = PostgresServer(url, int(port), state_dir, Path(home))
    return server if server.running() else None


# What the test session trades for speed, and the only place it does (tests/conftest.py asks
# for it): without fsync, synchronous commit and full-page writes a crash of the server or the
# machine may lose acknowledged commits or corrupt the cluster. Fine for throwaway test data;
# never for `make stack` or the fault suite, which crash PostgreSQL on purpose and count leads.
FAST_UNSAFE_SETTINGS = "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"


def start_postgres(state_dir: Path, durable: bool = True) -> PostgresServer:
    """Start a throwaway PostgreSQL cluster with database ``leadwire``; wait until it accepts.

    Trust authentication, listening on 127.0.0.1 and a private Unix socket only. A folder
    from an earlier run keeps its data and, if still free, its port. ``durable`` keeps
    PostgreSQL's own crash safety (its defaults); ``durable=False`` adds FAST_UNSAFE_SETTINGS.
    """
    state_dir = state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    if running_postgres(state_dir):
        raise RuntimeError(f"PostgreSQL already runs from {state_dir}")
    bin_dir = _pg_bin()
    home = _pg_home(state_dir)
    data = home / "data"
    if not (data / "PG_VERSION").exists():
        _run(
            _as_postgres(
                [
                    str(bin_dir / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--locale=C.UTF-8",
                    "--no-sync",
                    "--no-instructions",
                ]
            ),
            "initdb",
        )
        # Only the private socket and loopback TCP, no password: a local test cluster.
        (data / "pg_hba.conf").write_text("local all all trust\nhost all all 127.0.0.1/32 trust\n")

    previous = _read(state_dir / "port")
    port = int(previous) if previous and _port_free(int(previous)) else free_port()
    options = f"-p {port} -k {home} -c listen_addresses=127.0.0.1 -c max_connections=200"
    if not durable:
        options += " " + FAST_UNSAFE_SETTINGS
    _run(
        _as_postgres(
            [
                str(bin_dir / "pg_ctl"),
                "start",
                "-w",
                "-t",
                str(int(READY_TIMEOUT)),
                "-D",
                str(data),
                "-l",
                str(home / "postgres.log"),
                "-o",
                options,
            ]
        ),
        f"pg_ctl start (log: {home / 'postgres.log'})",
    )

    created = subprocess.run(
        [str(bin_dir / "createdb"), "-h", str(home), "-p", str(port), "-U", "postgres", "leadwire"],
        capture_output=True,
        text=True,
        check=False,
    )
    if created.returncode != 0 and "already exists" not in created.stderr:
        raise RuntimeError(f"createdb leadwire failed: {created.stderr}")

    url = f"postgresql+asyncpg://postgres@127.0.0.1:{port}/leadwire"
    (state_dir / "port").write_text(f"{port}\n")
    (state_dir / "url").write_text(f"{url}\n")
    return PostgresServer(url, port, state_dir, home)


# --------------------------------------------------------------------------- CLI


def _wait_for(check: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.5)
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Local Kafka and PostgreSQL for Leadwire.")
    parser.add_argument("service", choices=["kafka", "postgres"])
    parser.add_argument("action", choices=["start", "stop", "status", "wait"])
    parser.add_argument("--state", type=Path, help="state folder (default .leadwire/local/X)")
    parser.add_argument("--timeout", type=float, default=READY_TIMEOUT, help="for wait")
    parser.add_argument(
        "--socket", action="store_true", help="postgres: print the URL over its Unix socket"
    )
    args = parser.parse_args(argv)
    state: Path = (args.state or DEFAULT_STATE / args.service).resolve()

    if args.service == "kafka":
        kafka = running_kafka(state)
        if args.action == "start":
            if kafka is None:
                kafka = start_kafka(state, fetch_kafka_jars(REPO))
            print(kafka.bootstrap)
        elif args.action == "stop":
            if kafka is not None:
                kafka.stop()
            print("kafka stopped")
        elif args.action == "status":
            if kafka is None or not kafka_answers(kafka.bootstrap):
                print("kafka not running", file=sys.stderr)
                return 1
            print(kafka.bootstrap)
        else:  # wait: until a broker started elsewhere answers

            def ready() -> bool:
                found = running_kafka(state)
                return found is not None and kafka_answers(found.bootstrap)

            if not _wait_for(ready, args.timeout):
                print("kafka not ready", file=sys.stderr)
                return 1
            print(_read(state / "bootstrap"))
        return 0

    def address(server: PostgresServer) -> str:
        return server.socket_url if args.socket else server.url

    pg = running_postgres(state)
    if args.action == "start":
        if pg is None:
            pg = start_postgres(state)
        print(address(pg))
    elif args.action == "stop":
        if pg is not None:
            pg.stop()
        print("postgres stopped")
    elif args.action == "status":
        if pg is None:
            print("postgres not running", file=sys.stderr)
            return 1
        print(address(pg))
    else:
        if not _wait_for(lambda: running_postgres(state) is not None, args.timeout):
            print("postgres not ready", file=sys.stderr)
            return 1
        found = running_postgres(state)
        print(address(found) if found else _read(state / "url"))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except RuntimeError as error:  # expected failures: no traceback, just the reason
        print(f"infra.py: {error}", file=sys.stderr)
        sys.exit(1)
