"""The GPU work pool's base job template, rendered by prefect-kubernetes as its worker does for each
deployment of the pool in prefect.yaml."""

from __future__ import annotations

import asyncio
import copy
import json
import shlex
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.objects import Flow, FlowRun
from prefect.client.schemas.responses import DeploymentResponse
from prefect.server.schemas.actions import validate_base_job_template
from prefect.utilities.schema_tools import validate

worker = pytest.importorskip("prefect_kubernetes.worker")

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE: dict[str, Any] = json.loads((ROOT / "deploy" / "kubernetes-gpu-job-template.json").read_text())
GPU_DEPLOYMENTS: list[dict[str, Any]] = [
    deployment
    for deployment in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]
    if deployment["work_pool"]["name"] == "motionfit-gpu"
]
FLOW_RUN_COMMAND = "prefect flow-run execute"


def from_template(template: dict[str, Any], job_variables: dict[str, Any]) -> Any:
    """KubernetesWorkerJobConfiguration.from_template_and_values, with a client it never needs to reach (the
    template references no block and no variable)."""

    async def build() -> Any:
        async with PrefectClient(api="http://127.0.0.1:9/api") as client:
            return await worker.KubernetesWorkerJobConfiguration.from_template_and_values(
                template, job_variables, client=client
            )

    return asyncio.run(build())


def prepared(deployment: dict[str, Any]) -> Any:
    """The job configuration the worker submits for a flow run of the deployment."""
    job_variables = deployment["work_pool"]["job_variables"]
    flow = Flow(id=uuid.uuid4(), name="motionfit")
    api_deployment = DeploymentResponse(
        id=uuid.uuid4(), name=deployment["name"], flow_id=flow.id, job_variables=job_variables
    )
    flow_run = FlowRun(id=uuid.uuid4(), name="gentle-otter", flow_id=flow.id, deployment_id=api_deployment.id)
    configuration = from_template(TEMPLATE, job_variables)
    configuration.prepare_for_flow_run(flow_run=flow_run, deployment=api_deployment, flow=flow)
    return configuration


def test_the_gpu_pool_has_deployments() -> None:
    assert GPU_DEPLOYMENTS


def test_template_passes_the_servers_checks() -> None:
    validate_base_job_template(TEMPLATE)
    for deployment in GPU_DEPLOYMENTS:
        validate(
            deployment["work_pool"]["job_variables"],
            TEMPLATE["variables"],
            raise_on_error=True,
            preprocess=True,
            ignore_required=True,
        )


@pytest.mark.parametrize("deployment", GPU_DEPLOYMENTS, ids=lambda deployment: deployment["name"])
def test_each_gpu_deployment_renders_a_complete_job(deployment: dict[str, Any]) -> None:
    job_variables = deployment["work_pool"]["job_variables"]
    configuration = prepared(deployment)
    manifest = configuration.job_manifest
    pod = manifest["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    variables = TEMPLATE["variables"]["properties"]

    assert manifest["kind"] == "Job" and manifest["spec"]["backoffLimit"] == 0
    assert container["image"] == job_variables.get("image", variables["image"]["default"])
    gpus = job_variables.get("gpu_count", variables["gpu_count"]["default"])
    assert container["resources"]["requests"]["nvidia.com/gpu"] == gpus
    assert container["resources"]["limits"]["nvidia.com/gpu"] == gpus
    assert configuration.command == FLOW_RUN_COMMAND
    assert container["args"] == shlex.split(FLOW_RUN_COMMAND)
    env = {item["name"]: item["value"] for item in container["env"]}
    assert env["PREFECT__FLOW_RUN_ID"] == manifest["metadata"]["labels"]["prefect.io/flow-run-id"]
    assert env["PREFECT__DEPLOYMENT_NAME"] == deployment["name"]
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
    assert {"name": "dshm", "emptyDir": {"medium": "Memory"}} in pod["volumes"]
    assert pod["nodeSelector"] == variables["node_selector"]["default"]
    assert pod["tolerations"] == variables["tolerations"]["default"]
    assert manifest["metadata"]["generateName"] == "gentle-otter-"
    type(configuration).model_validate(configuration.model_dump())


def test_without_job_variables_the_defaults_apply() -> None:
    (container,) = from_template(TEMPLATE, {}).job_manifest["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "motionfit:latest"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_job_variables_override_the_defaults_and_env_merges_with_prefects() -> None:
    job_variables = {"image": "registry/motionfit:1", "gpu_count": 2, "env": {"TZ": "UTC"}}
    configuration = prepared({"name": "custom", "work_pool": {"job_variables": job_variables}})
    (container,) = configuration.job_manifest["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "registry/motionfit:1"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 2
    env = {item["name"]: item["value"] for item in container["env"]}
    assert env["TZ"] == "UTC" and "PREFECT__FLOW_RUN_ID" in env


@pytest.mark.parametrize(
    "path", [("spec", "template"), ("spec", "template", "spec", "parallelism")], ids=["pod", "parallelism"]
)
def test_an_incomplete_template_is_rejected(path: tuple[str, ...]) -> None:
    template = copy.deepcopy(TEMPLATE)
    parent = template["job_configuration"]["job_manifest"]
    for key in path[:-1]:
        parent = parent[key]
    del parent[path[-1]]
    with pytest.raises(ValueError, match="missing required attributes"):
        from_template(template, {"gpu_count": 1})
