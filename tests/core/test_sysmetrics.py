"""System metrics: the guide's names, and the GPUs this process can see.

This machine has no GPU.  The first test uses the real nvidia-ml-py against no driver
(what every CPU node sees).  The others give nvidia-ml-py / amdsmi a stand-in machine
with four GPUs -- the functions the sampler calls, with the types those libraries return
(nvidia-ml-py 12: ``c_nvmlUtilization_t.gpu`` in percent, ``c_nvmlMemory_t.used`` in
bytes, UUIDs as ``str``; amdsmi 6: ``gfx_activity`` in percent, ``vram_used`` in MB) --
to check which device each ``_primus_gpu_<i>_*`` name reports.
"""

import sys
import types

import pytest

from primus_lens_wandb_exporter.core import sysmetrics

pynvml = pytest.importorskip("pynvml")

UUIDS = [f"GPU-{c * 8}-0000-0000-0000-000000000000" for c in "abcd"]


def test_without_a_gpu_driver_cpu_and_memory_are_still_sampled(monkeypatch):
    monkeypatch.setattr(sysmetrics, "current", {})
    with pytest.raises(pynvml.NVMLError):
        sysmetrics.NvidiaSource()
    sampler = sysmetrics.SystemSampler()
    assert sampler._init_gpu() is None
    sample = sampler.sample_once()
    assert set(sample) == {"_primus_sys_cpu_percent", "_primus_sys_memory_percent"}
    assert all(isinstance(v, float) for v in sample.values())


@pytest.fixture
def four_nvidia_gpus(monkeypatch):
    util = {i: 10.0 * (i + 1) for i in range(4)}          # device i: (i + 1) * 10 % busy
    used = {i: (i + 1) * 1024 ** 3 for i in range(4)}     # device i: (i + 1) GiB used
    monkeypatch.setattr(pynvml, "nvmlInit", lambda: None)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetCount", lambda: 4)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetHandleByIndex", lambda i: i)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetUUID", lambda h: UUIDS[h])
    monkeypatch.setattr(pynvml, "nvmlDeviceGetUtilizationRates",
                        lambda h: pynvml.c_nvmlUtilization_t(gpu=int(util[h]), memory=0))
    monkeypatch.setattr(pynvml, "nvmlDeviceGetMemoryInfo",
                        lambda h: pynvml.c_nvmlMemory_t(total=80 * 1024 ** 3, free=0, used=used[h]))


@pytest.mark.parametrize("visible, devices", [
    (None, [0, 1, 2, 3]),
    ("2,0", [2, 0]),
    ("GPU-dddd,1", [3, 1]),          # UUID prefixes, as CUDA accepts them
    ("1,7,2", [1]),                  # CUDA stops at the first invalid entry
    ("", []),                        # no device visible
])
def test_nvidia_names_follow_cuda_visible_devices(four_nvidia_gpus, monkeypatch, visible, devices):
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    out = {}
    sysmetrics.NvidiaSource().sample(out)
    expected = {}
    for i, device in enumerate(devices):
        expected[f"_primus_gpu_{i}_util"] = 10.0 * (device + 1)
        expected[f"_primus_gpu_{i}_mem_used_mb"] = (device + 1) * 1024.0
    assert out == expected


def test_the_sampler_merges_gpu_values_under_the_guides_names(four_nvidia_gpus, monkeypatch):
    monkeypatch.setattr(sysmetrics, "current", {})  # restored after the test
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    sampler = sysmetrics.SystemSampler()
    sampler._gpu = sampler._init_gpu()
    sample = sampler.sample_once()
    assert sample["_primus_gpu_0_util"] == 40.0 and sample["_primus_gpu_0_mem_used_mb"] == 4096.0
    assert "_primus_gpu_1_util" not in sample and sampler.errors == 0
    assert sysmetrics.current is sample  # what the wandb patch merges into logged data


def test_amd_names_follow_rocr_then_hip_visible_devices(monkeypatch):
    handles = [f"handle-{i}" for i in range(4)]
    amdsmi = types.ModuleType("amdsmi")
    amdsmi.amdsmi_init = lambda *a: None
    amdsmi.amdsmi_get_processor_handles = lambda: list(handles)
    amdsmi.amdsmi_get_gpu_activity = lambda h: {"gfx_activity": 5 * (handles.index(h) + 1), "umc_activity": 0,
                                                "mm_activity": 0}
    amdsmi.amdsmi_get_gpu_vram_usage = lambda h: {"vram_total": 196_592, "vram_used": 100 * (handles.index(h) + 1)}
    monkeypatch.setitem(sys.modules, "amdsmi", amdsmi)
    monkeypatch.setenv("ROCR_VISIBLE_DEVICES", "3,1,2")
    monkeypatch.setenv("HIP_VISIBLE_DEVICES", "1")  # indexes into what ROCR left: device 1 of [3, 1, 2]
    out = {}
    sysmetrics.AmdSource().sample(out)
    assert out == {"_primus_gpu_0_util": 10.0, "_primus_gpu_0_mem_used_mb": 200.0}
