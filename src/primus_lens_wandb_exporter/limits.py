"""The wire limits, defined once: the server enforces them, the exporter checks them before sending.

Pure Python, imports nothing: the exporter (``core/``) and the server (``server/``) both read it, so
a limit can never differ between the side that filters and the side that refuses.
"""

#: Points in one ``/wandb/metrics`` request (and in all metrics parts of one ``/wandb/batch``).
MAX_POINTS_PER_REQUEST = 100_000
#: Bytes of one request body, on every endpoint.
MAX_BODY_BYTES = 64 * 1024 * 1024
#: Characters of a metric name.
MAX_NAME_LEN = 512
#: Characters of a workload uid.
MAX_UID_LEN = 256
#: Characters of any other string field (pod name, run id, project ...).
MAX_TEXT_LEN = 1024
#: Ranks are 0 .. MAX_RANK.
MAX_RANK = 2**31 - 1
#: W&B history row indexes (``_step``) are 0 .. MAX_ROW.
MAX_ROW = 2**63 - 1
#: Nesting depth of a request body (``{}`` or ``[]`` inside each other, the body itself
#: counting 1).  Refused above it with a 400: a deeper value (orjson writes at most 255
#: levels) could be stored but never served back.
MAX_JSON_DEPTH = 64
#: Depth of one config/summary/evidence value the exporter sends; deeper parts travel as
#: strings.  Leaves MAX_JSON_DEPTH room for the envelope (batch -> run list -> run -> config).
MAX_VALUE_DEPTH = 16
#: A point's chart step (the ``define_metric`` step metric's value, or the row) is a finite
#: number with ``abs(step) <= MAX_ABS_STEP``.
MAX_ABS_STEP = float(2**63 - 1)
#: The exporter health counters (the ``exporter`` object of a metrics body) the server keeps:
#: each an int 0 .. MAX_COUNTER.  Their sums are shown without a token (``/health``,
#: ``/metrics``), so a name outside this list is ignored: free names would let any client put
#: text (a credential, a million names) on those open pages.
EXPORTER_COUNTERS = frozenset({
    "queue_dropped", "filtered_points", "stale_step_dropped", "worker_errors",  # the recorder's
    "rejected_points", "rejected_batches", "auth_rejected_batches", "spooled_points",  # the HTTP sink's
    "spool_write_errors", "spool_dropped_points", "failed_attempts", "replayed_points",
})
#: An exporter health counter (and their sum over every exporter) is at most this (a BIGINT).
MAX_COUNTER = 2**63 - 1


def text_problem(value, max_len: int = MAX_TEXT_LEN) -> str:
    """Why a string field is refused, or ``""`` when it is fine."""
    if type(value) is not str:
        return "must be a string"
    if len(value) > max_len:
        return f"must be at most {max_len} characters"
    if "\x00" in value:
        # PostgreSQL text cannot hold NUL; refused on both databases alike.
        return "must not contain NUL characters"
    return ""


def metric_name_problem(name) -> str:
    """Why the server refuses a metric name, or ``""`` when it is fine."""
    if type(name) is str and not name:
        return "must not be empty"
    return text_problem(name, MAX_NAME_LEN)
