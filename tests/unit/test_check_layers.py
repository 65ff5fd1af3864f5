"""The layer check of `make lint` fails on each breach of STYLE.md's layer table."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts.check_layers import KNOWN_BREACHES, check, main

ROOT = Path(__file__).resolve().parents[2]


def write(root: Path, relative: str, source: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source)


class TestBreaches:
    @pytest.mark.parametrize(
        ("module", "source", "layer"),
        [
            ("domain.py", "import sqlalchemy\n", "sqlalchemy"),
            ("domain.py", "from services.shop.store import Repo\n", "services.shop.store"),
            (
                "domain.py",
                "from services.shop.settings import ShopSettings\n",
                "services.shop.settings",
            ),
            ("handlers.py", "from fastapi import HTTPException\n", "fastapi"),
            ("handlers.py", "from aiokafka import AIOKafkaProducer\n", "aiokafka"),
            ("handlers.py", "from sqlalchemy.exc import IntegrityError\n", "sqlalchemy"),
            ("store.py", "from fastapi import Request\n", "fastapi"),
            ("store.py", "import aiokafka\n", "aiokafka"),
            ("api.py", "from sqlalchemy import select\n", "sqlalchemy"),
            ("api.py", "from shared.db import append_rows\n", "shared.db"),
            ("consumers.py", "from sqlalchemy import text\n", "sqlalchemy"),
        ],
    )
    def test_a_forbidden_import_fails_with_its_place_and_layer(
        self, tmp_path: Path, module: str, source: str, layer: str
    ) -> None:
        write(tmp_path, f"services/shop/{module}", "from __future__ import annotations\n" + source)

        problems = check(tmp_path, frozenset())

        assert len(problems) == 1
        assert problems[0].startswith(f"services/shop/{module}:2: {module} imports {layer} (")

    def test_an_area_package_is_held_to_the_same_table(self, tmp_path: Path) -> None:
        write(tmp_path, "services/shop/orders/handlers.py", "from sqlalchemy import select\n")

        assert check(tmp_path, frozenset()) == [
            "services/shop/orders/handlers.py:1: handlers.py imports sqlalchemy"
            " (handlers speak to a store Protocol, not to HTTP, the bus or the database)"
        ]

    def test_a_type_checking_import_counts(self, tmp_path: Path) -> None:
        write(
            tmp_path,
            "services/shop/handlers.py",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import sqlalchemy\n",
        )

        assert len(check(tmp_path, frozenset())) == 1

    def test_allowed_imports_pass(self, tmp_path: Path) -> None:
        write(tmp_path, "services/shop/store.py", "import sqlalchemy\nfrom shared.db import x\n")
        write(tmp_path, "services/shop/api.py", "from fastapi import APIRouter\n")
        write(tmp_path, "services/shop/handlers.py", "from services.shop import domain\n")
        write(tmp_path, "services/shop/models.py", "import sqlalchemy\n")

        assert check(tmp_path, frozenset()) == []


class TestAllowList:
    def test_a_known_breach_passes_and_a_fixed_one_must_leave_the_list(
        self, tmp_path: Path
    ) -> None:
        write(tmp_path, "services/shop/api.py", "from sqlalchemy import select\n")
        known = frozenset({("services/shop/api.py", "sqlalchemy")})

        assert check(tmp_path, known) == []

        write(tmp_path, "services/shop/api.py", "from fastapi import APIRouter\n")

        assert check(tmp_path, known) == [
            "services/shop/api.py: no longer imports sqlalchemy: remove it from KNOWN_BREACHES"
        ]


class TestRepository:
    def test_the_repository_keeps_to_its_layers(self) -> None:
        assert check(ROOT) == []
        assert main(ROOT) == 0

    def test_no_breach_is_allowed_any_more(self) -> None:
        # The allow-list only shrinks, and it is empty: every service keeps to the table.
        assert frozenset() == KNOWN_BREACHES
