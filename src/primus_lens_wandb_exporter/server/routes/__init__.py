"""The API's routes, one ``APIRouter`` per concern: :mod:`.ingest`, :mod:`.query`, :mod:`.ops`.

A route reaches the app's shared state as ``request.app.state.runtime``
(:class:`..runtime.Runtime`); none keeps any of its own.
"""

from . import ingest, ops, query

ROUTERS = (ingest.router, query.router, ops.router)
