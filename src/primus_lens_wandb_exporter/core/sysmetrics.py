"""System metrics (``PRIMUS_LENS_WANDB_ENHANCE_METRICS=true``), sampled off the training thread.

A daemon thread samples every few seconds and swaps in a new dict; the wandb patch
merges the latest dict into each logged row under the user guide's names:
``_primus_sys_cpu_percent``, ``_primus_sys_memory_percent``, ``_primus_gpu_<i>_util``,
``_primus_gpu_<i>_mem_used_mb``.  ``<i>`` is the index *as this process sees it*
(after ``CUDA_VISIBLE_DEVICES`` / ``ROCR_VISIBLE_DEVICES`` / ``HIP_VISIBLE_DEVICES``).
"""

import os
import threading
from typing import Dict, List, Optional

from .log import get_logger

#: The latest sample; replaced atomically, read by the wandb patch (no lock needed).
current: Dict[str, float] = {}


def _visible(var_value: Optional[str]) -> Optional[List[str]]:
    if var_value is None:
        return None
    return [v.strip() for v in var_value.split(",") if v.strip()]


class NvidiaSource:
    """NVML through nvidia-ml-py, mapped to this process's visible devices by UUID/index."""

    def __init__(self):
        import pynvml  # nvidia-ml-py

        pynvml.nvmlInit()
        self.nvml = pynvml
        count = pynvml.nvmlDeviceGetCount()
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        visible = _visible(os.environ.get("CUDA_VISIBLE_DEVICES"))
        if visible is None:
            self.handles = handles
        else:
            by_uuid = {}
            for h in handles:
                uuid = pynvml.nvmlDeviceGetUUID(h)
                by_uuid[uuid.decode() if isinstance(uuid, bytes) else uuid] = h
            chosen = []
            for item in visible:
                if item.isdigit() and int(item) < count:
                    chosen.append(handles[int(item)])
                else:
                    match = [h for u, h in by_uuid.items() if u == item or u.startswith(item)]
                    if match:
                        chosen.append(match[0])
                    else:
                        break  # CUDA stops at the first invalid entry
            self.handles = chosen

    def sample(self, out):
        for i, h in enumerate(self.handles):
            out[f"_primus_gpu_{i}_util"] = float(self.nvml.nvmlDeviceGetUtilizationRates(h).gpu)
            out[f"_primus_gpu_{i}_mem_used_mb"] = self.nvml.nvmlDeviceGetMemoryInfo(h).used / (1024 * 1024)


class AmdSource:
    """ROCm through amdsmi, honouring ROCR_VISIBLE_DEVICES then HIP_VISIBLE_DEVICES."""

    def __init__(self):
        import amdsmi

        amdsmi.amdsmi_init()
        self.amdsmi = amdsmi
        handles = list(amdsmi.amdsmi_get_processor_handles())
        for var in ("ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES"):
            visible = _visible(os.environ.get(var))
            if visible is not None:
                handles = [handles[int(v)] for v in visible if v.isdigit() and int(v) < len(handles)]
        self.handles = handles

    def sample(self, out):
        for i, h in enumerate(self.handles):
            out[f"_primus_gpu_{i}_util"] = float(self.amdsmi.amdsmi_get_gpu_activity(h)["gfx_activity"])
            out[f"_primus_gpu_{i}_mem_used_mb"] = float(self.amdsmi.amdsmi_get_gpu_vram_usage(h)["vram_used"])


class SystemSampler:
    """Samples CPU/memory with psutil and GPUs when their libraries are present."""

    def __init__(self, interval: float = 5.0):
        self.interval = interval
        self.errors = 0
        self._stop = threading.Event()
        self._gpu = None
        self._thread = None

    def start(self):
        self._thread = threading.Thread(target=self._loop, name="primus-lens-sysmetrics", daemon=True)
        self._thread.start()

    def stop(self):
        self._stop.set()

    def _init_gpu(self):
        for source in (NvidiaSource, AmdSource):
            try:
                gpu = source()
                if gpu.handles:
                    return gpu
            except Exception as exc:  # amdsmi can fail with errors other than ImportError
                get_logger().debug("GPU telemetry via %s unavailable: %r", source.__name__, exc)
        return None

    def sample_once(self) -> Dict[str, float]:
        import psutil

        global current
        out = {"_primus_sys_cpu_percent": float(psutil.cpu_percent(interval=None)),
               "_primus_sys_memory_percent": float(psutil.virtual_memory().percent)}
        if self._gpu is not None:
            try:
                self._gpu.sample(out)
            except Exception as exc:
                self.errors += 1
                get_logger().debug("GPU sample failed: %r", exc)
        current = out
        return out

    def _loop(self):
        try:
            import psutil

            psutil.cpu_percent(interval=None)  # prime the counter
            self._gpu = self._init_gpu()
            self._stop.wait(0.2)
        except Exception as exc:
            self.errors += 1
            get_logger().warning("system metrics unavailable: %r", exc)
            return
        while not self._stop.is_set():
            try:
                self.sample_once()
            except Exception as exc:
                self.errors += 1
                get_logger().debug("system sample failed: %r", exc)
            self._stop.wait(self.interval)

    def latest(self) -> Dict[str, float]:
        return current
