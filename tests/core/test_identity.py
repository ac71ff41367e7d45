"""Pod, workload and rank identity (docs/identity.md holds the same table)."""

import pytest

from primus_lens_wandb_exporter.core.identity import load_identity, parse_workload_uid, resolve_ranks

POD_NAMES = [
    # (controller, pod name, workload)
    ("Job", "bert-pretrain-x7k2q", "bert-pretrain"),
    ("indexed Job", "bert-pretrain-3-x7k2q", "bert-pretrain"),
    ("StatefulSet", "training-pod-0", "training-pod"),
    ("Deployment", "lens-api-5d9c7b6f8-x2x9z", "lens-api"),
    ("PyTorchJob master", "llama-sft-master-0", "llama-sft"),
    ("PyTorchJob worker", "llama-sft-worker-12", "llama-sft"),
    ("MPIJob launcher", "gpt-moe-launcher-bcd2f", "gpt-moe"),
    ("MPIJob worker", "gpt-moe-worker-3", "gpt-moe"),
    ("bare pod", "jupyter-notebook-pod", "jupyter-notebook-pod"),
]


@pytest.mark.parametrize("controller,pod,workload", POD_NAMES, ids=[p[0] for p in POD_NAMES])
def test_workload_uid_is_parsed_from_the_pod_name(controller, pod, workload):
    assert parse_workload_uid(pod) == workload


def test_workload_uid_env_wins_and_pod_name_falls_back_to_host_name():
    ident = load_identity({"POD_NAME": "training-pod-0", "WORKLOAD_UID": "my-training-workload-12345"})
    assert ident.workload_uid == "my-training-workload-12345" and ident.pod_name_from_env
    ident = load_identity({"HOSTNAME": "trainbox"})
    assert ident.pod_name == "trainbox" and not ident.pod_name_from_env and ident.workload_uid == "trainbox"


@pytest.mark.parametrize("env,expected", [
    ({"RANK": "3", "LOCAL_RANK": "1", "NODE_RANK": "1", "WORLD_SIZE": "8"}, (3, 1, 1, 8)),
    ({"RANK": "5", "LOCAL_RANK": "1", "GROUP_RANK": "2", "WORLD_SIZE": "8"}, (5, 1, 2, 8)),
    ({"SLURM_PROCID": "9", "SLURM_LOCALID": "1", "SLURM_NODEID": "4", "SLURM_NTASKS": "16"}, (9, 1, 4, 16)),
    ({"OMPI_COMM_WORLD_RANK": "2", "OMPI_COMM_WORLD_LOCAL_RANK": "0", "OMPI_COMM_WORLD_NODE_RANK": "1",
      "OMPI_COMM_WORLD_SIZE": "4"}, (2, 0, 1, 4)),
    ({"RANK": "x"}, (0, 0, 0, 1)),
    ({}, (0, 0, 0, 1)),
])
def test_ranks_come_from_launcher_variables(env, expected):
    r = resolve_ranks(env)
    assert (r.rank, r.local_rank, r.node_rank, r.world_size) == expected


@pytest.mark.parametrize("env,expected", [
    # Issue 10 item 9: without RANK, the node and local ranks still count (each has its own default).
    ({"NODE_RANK": "1", "LOCAL_RANK": "2"}, (0, 2, 1, 1)),
    ({"LOCAL_RANK": "3", "WORLD_SIZE": "8"}, (0, 3, 0, 8)),
    ({"GROUP_RANK": "2"}, (0, 0, 2, 1)),
    # A field no torchrun variable sets comes from the next launcher that sets it.
    ({"RANK": "4", "SLURM_LOCALID": "1", "SLURM_NODEID": "2"}, (4, 1, 2, 1)),
])
def test_each_rank_variable_is_read_on_its_own(env, expected):
    r = resolve_ranks(env)
    assert (r.rank, r.local_rank, r.node_rank, r.world_size) == expected


def test_a_pod_name_with_a_made_up_suffix_is_explained_by_the_training_process(tmp_path):
    # The warning the user sees in the job's log, not only in `doctor`: why the workload is the
    # whole pod name, and what to set.
    from helpers.exporter import exporter_env, run_python

    env = exporter_env(None, tmp_path, "unused", pod_name="trial-job-0-abcde", WANDB_MODE="disabled",
                       PRIMUS_LENS_WANDB_API_REPORTING="false")
    del env["WORKLOAD_UID"]
    proc = run_python("import wandb\nwandb.init(project='p')\nwandb.log({'x': 1.0})\nwandb.finish()\n", env)
    lines = [line for line in proc.stderr.splitlines() if "trial-job-0-abcde" in line]
    assert len(lines) == 1 and "WORKLOAD_UID=trial-job" in lines[0], proc.stderr[-2000:]
