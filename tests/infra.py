"""Re-export of deploy/local/infra.py (``deploy`` is not a package) for the test session."""

import importlib.util
import sys
from pathlib import Path

_PATH = Path(__file__).resolve().parents[1] / "deploy" / "local" / "infra.py"
_spec = importlib.util.spec_from_file_location("leadwire_local_infra", _PATH)
assert _spec is not None
assert _spec.loader is not None
_infra = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = _infra  # dataclasses look their module up in sys.modules
_spec.loader.exec_module(_infra)

KAFKA_SASL_USER: str = _infra.KAFKA_SASL_USER
KAFKA_SASL_PASSWORD: str = _infra.KAFKA_SASL_PASSWORD
KafkaServer = _infra.KafkaServer
PostgresServer = _infra.PostgresServer
fetch_kafka_jars = _infra.fetch_kafka_jars
free_port = _infra.free_port
start_kafka = _infra.start_kafka
start_postgres = _infra.start_postgres

__all__ = [
    "KAFKA_SASL_PASSWORD",
    "KAFKA_SASL_USER",
    "KafkaServer",
    "PostgresServer",
    "fetch_kafka_jars",
    "free_port",
    "start_kafka",
    "start_postgres",
]
