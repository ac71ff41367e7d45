"""Who is logging: pod, workload, and this process's place in the distributed job."""

import os
import re
import socket
import sys
from dataclasses import dataclass
from typing import Mapping, Optional, Tuple

# Kubernetes pod-name shapes, most specific first. Each pattern's group 1 is the workload.
# The table in docs/identity.md lists a tested example for every row.
# Kubernetes random suffixes use this alphabet (k8s.io/apimachinery rand.SafeEncodeString): no vowels, no 0/1/3.
_S = "[bcdfghjklmnpqrstvwxz2456789]"

_POD_PATTERNS = (
    # PyTorchJob / MPIJob / TFJob replicas: <job>-master-0, <job>-worker-3, <job>-launcher-abcde
    ("kubeflow", re.compile(r"^(.+?)-(?:master|worker|launcher|chief|ps|evaluator)-(?:\d+|%s{5})$" % _S)),
    # Deployment: <name>-<replicaset hash 5-10>-<pod suffix 5>
    ("deployment", re.compile(r"^(.+)-%s{6,10}-%s{5}$" % (_S, _S))),
    # Indexed Job: <job>-<index>-<suffix 5>
    ("indexed-job", re.compile(r"^(.+)-\d+-%s{5}$" % _S)),
    # Job: <job>-<suffix 5>; an all-digit tail is an ordinal, not a suffix
    ("job", re.compile(r"^(.+)-(?!\d{5}$)%s{5}$" % _S)),
    # StatefulSet: <name>-<ordinal>
    ("statefulset", re.compile(r"^(.+)-\d+$")),
)


def parse_workload_uid(pod_name: str) -> Optional[str]:
    """The workload a pod belongs to, from the pod's name (``None`` when it has no shape)."""
    name = (pod_name or "").strip()
    if not name:
        return None
    for _kind, pattern in _POD_PATTERNS:
        match = pattern.match(name)
        if match and match.group(1):
            return match.group(1)
    return name


@dataclass(frozen=True)
class Identity:
    """Pod and workload of this process (ranks are resolved separately, they can change)."""

    pod_name: str
    pod_uid: str
    namespace: str
    workload_uid: str
    pod_name_from_env: bool
    workload_from_env: bool


# A tail that looks like a random suffix (5 letters/digits after an index, or with a digit in
# it) but that no controller made: a hand-made name such as trial-job-0-abcde.  A bare pod
# named like llama-train is left alone: its name is its workload.
_LOOKS_LIKE_SUFFIX = re.compile(r"^(.+?)-(?:\d+-([a-z0-9]{5})|((?=[a-z]*\d)[a-z0-9]{5}))$")


def pod_name_problem(identity: "Identity") -> Optional[str]:
    """Why POD_NAME gave no workload and what to set, for a name whose tail looks like a
    random suffix but is not one (None otherwise, or when WORKLOAD_UID is set)."""
    name = identity.pod_name
    match = _LOOKS_LIKE_SUFFIX.match(name or "")
    if identity.workload_from_env or identity.workload_uid != name or not match:
        return None
    tail = match.group(2) or match.group(3)
    if tail.isdigit():
        return None
    bad = sorted(set(tail) - set(_S[1:-1]))
    return (f"POD_NAME {name!r} matches no Kubernetes pod-name shape: its last part {tail!r} is not a "
            f"Kubernetes random suffix (those never contain {', '.join(repr(c) for c in bad)}; only "
            f"{_S[1:-1]}), so the whole pod name is used as the workload and each pod would be its own; "
            f"set WORKLOAD_UID to the workload's name (e.g. WORKLOAD_UID={match.group(1)})")


def load_identity(environ: Mapping[str, str] = os.environ) -> Identity:
    pod_name = environ.get("POD_NAME", "").strip()
    from_env = bool(pod_name)
    if not pod_name:
        pod_name = environ.get("HOSTNAME", "").strip() or socket.gethostname()
    workload = environ.get("WORKLOAD_UID", "").strip()
    workload_from_env = bool(workload)
    if not workload:
        workload = parse_workload_uid(pod_name) or pod_name
    return Identity(
        pod_name=pod_name,
        pod_uid=environ.get("POD_UID", "").strip(),
        namespace=environ.get("POD_NAMESPACE", "").strip() or "default",
        workload_uid=workload,
        pod_name_from_env=from_env,
        workload_from_env=workload_from_env,
    )


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    local_rank: int = 0
    node_rank: int = 0
    world_size: int = 1
    source: str = "default"


# (rank, local_rank, node_rank, world_size) variables of each launcher, in order of trust.
_RANK_SOURCES = (
    # torchrun exports GROUP_RANK as the node rank; NODE_RANK is the guide's variable.
    ("env", "RANK", "LOCAL_RANK", ("NODE_RANK", "GROUP_RANK"), "WORLD_SIZE"),
    ("slurm", "SLURM_PROCID", "SLURM_LOCALID", "SLURM_NODEID", "SLURM_NTASKS"),
    ("openmpi", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_NODE_RANK", "OMPI_COMM_WORLD_SIZE"),
    ("mpich", "PMI_RANK", "MPI_LOCALRANKID", None, "PMI_SIZE"),
)
# The value of a field no launcher sets (the user guide's table: each variable its own default).
_DEFAULTS = (0, 0, 0, 1)


def _int(environ, name):
    if not name:
        return None
    if isinstance(name, tuple):
        for one in name:
            value = _int(environ, one)
            if value is not None:
                return value
        return None
    raw = environ.get(name)
    if raw is None:
        return None
    try:
        return int(raw.strip())
    except ValueError:
        return None


def resolve_ranks(environ: Mapping[str, str] = os.environ) -> Ranks:
    """Ranks from ``torch.distributed`` when it is initialised, else launcher variables.

    Each field is read on its own (the guide gives each variable its own default):
    ``NODE_RANK=1 LOCAL_RANK=2`` without ``RANK`` is node 1, local rank 2, rank 0 -- not
    all four defaults, which made every rank of a node write the same JSONL file.  A field
    comes from the most trusted launcher that sets it.  Never imports torch:
    ``torch.distributed`` is consulted only if the user imported it.
    """
    values = list(_DEFAULTS)
    found = [None, None, None, None]
    source = "default"
    for name, *variables in _RANK_SOURCES:
        for index, variable in enumerate(variables):
            if found[index] is not None:
                continue
            value = _int(environ, variable)
            if value is not None:
                found[index] = value
                values[index] = value
                if index == 0 or source == "default":
                    source = name  # where the rank came from, else the first field found
    ranks = Ranks(values[0], values[1], values[2], values[3], source)
    from_dist = dist_rank_world()
    if from_dist is not None:
        ranks = Ranks(from_dist[0], ranks.local_rank, ranks.node_rank, from_dist[1], "torch.distributed")
    return ranks


def _initialized_dist():
    dist = sys.modules.get("torch.distributed")
    if dist is None:
        return None
    try:
        return dist if dist.is_available() and dist.is_initialized() else None
    except Exception:  # a half-imported torch: as if not initialised
        return None


def dist_rank_world() -> Optional[Tuple[int, int]]:
    """THE rank resolver: ``(rank, world_size)`` from ``torch.distributed`` when the user
    imported and initialised it, else ``None``.  Never imports torch; never raises."""
    dist = _initialized_dist()
    if dist is None:
        return None
    try:
        return int(dist.get_rank()), int(dist.get_world_size())
    except Exception:  # torch.distributed refused (destroyed group ...): callers fall back
        return None


def dist_backend() -> Optional[str]:
    """The initialised process group's backend (``"gloo"``, ``"nccl"`` ...), else ``None``."""
    dist = _initialized_dist()
    if dist is None:
        return None
    try:
        return str(dist.get_backend())
    except Exception:  # as dist_rank_world
        return None
