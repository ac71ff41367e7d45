"""Fixtures of the storage tests."""

from __future__ import annotations

import pytest
from helpers.server import LENS_DB_KINDS, create_pg_database, drop_pg_database


@pytest.fixture(params=LENS_DB_KINDS)
def db_url(request, tmp_path):
    """A fresh Lens database URL on each database kind (PostgreSQL where configured)."""
    if request.param == "postgres":
        url = create_pg_database()
        yield url
        drop_pg_database(url)
    else:
        yield f"sqlite:///{tmp_path}/lens.db"
