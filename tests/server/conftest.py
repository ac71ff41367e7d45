"""Every test here runs against both databases (PostgreSQL only when configured).

``srv`` is one server per module and database kind, for tests that only need
their own workload ids; ``lens_server`` (helpers.server) gives a fresh one.
"""

import os
import uuid

import pytest
from helpers.server import LENS_DB_KINDS, PG_DSN_ENV, LensServer, create_pg_database, drop_pg_database


def pytest_generate_tests(metafunc):
    if "lens_db_kind" in metafunc.fixturenames and not any(
            m.name == "parametrize" and "lens_db_kind" in str(m.args[0]) for m in metafunc.definition.iter_markers()):
        metafunc.parametrize("lens_db_kind", LENS_DB_KINDS, indirect=True)


@pytest.fixture(scope="module", params=LENS_DB_KINDS)
def srv(request, tmp_path_factory):
    """A started server shared by the tests of one module (one per database kind)."""
    tmp = tmp_path_factory.mktemp("srv")
    if request.param == "postgres":
        if not os.environ.get(PG_DSN_ENV):
            pytest.skip(f"{PG_DSN_ENV} is not set")
        url = create_pg_database()
    else:
        url = f"sqlite:///{tmp}/lens-{uuid.uuid4().hex[:8]}.db"
    server = LensServer(url, tmp / "server.log").start()
    yield server
    server.stop()
    if request.param == "postgres":
        drop_pg_database(url)


@pytest.fixture
def uid(request):
    """A workload id unique to the test."""
    return f"wl-{request.node.name[:40]}-{uuid.uuid4().hex[:6]}".replace("[", "-").replace("]", "")
