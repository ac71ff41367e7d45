"""MetricBatch: the points of one (data source, run, rank), ready for the wire."""

import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Dict, List

from ..identity import Identity


@dataclass
class MetricBatch:
    """Points of one (data source, run, rank), ready for the wire (``to_payload``)."""

    source: str
    run_id: str
    rank: int
    local_rank: int
    node_rank: int
    world_size: int
    points: List[Dict[str, Any]]
    identity: Identity
    batch_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created: float = field(default_factory=time.time)
    #: The recorder's part of the SPEC's ``exporter`` counters (sinks add their own).
    exporter: Dict[str, int] = field(default_factory=dict)

    def to_payload(self) -> Dict[str, Any]:
        ident = self.identity
        return {
            "source": self.source,
            "workload_uid": ident.workload_uid,
            "pod_uid": ident.pod_uid,
            "pod_name": ident.pod_name,
            "namespace": ident.namespace,
            "run_id": self.run_id,
            "rank": self.rank,
            "local_rank": self.local_rank,
            "node_rank": self.node_rank,
            "world_size": self.world_size,
            "timestamp": self.created,
            "batch_id": self.batch_id,
            "metrics": self.points,
            "exporter": dict(self.exporter),
        }
