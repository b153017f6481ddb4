# The image of the motionfit-gpu Kubernetes work pool (deploy/kubernetes-gpu-job-template.json): motionfit
# installed, editable, at /opt/motionfit, where the deployments' pull step (MOTIONFIT_HOME) runs them from.
# The base is PyTorch's CUDA runtime image of the torch that constraints.txt pins, its tag written after the
# pytorch/pytorch naming scheme: --build-arg BASE_IMAGE=... picks a 2.14 tag that the nodes' driver runs.
ARG BASE_IMAGE=pytorch/pytorch:2.14.1-cuda12.8-cudnn9-runtime
FROM ${BASE_IMAGE}

ENV MOTIONFIT_HOME=/opt/motionfit \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1
WORKDIR /opt/motionfit
COPY . .

# constraints.txt pins the CPU machines' torch and torchvision; the install pins the base's CUDA builds
# instead, so that pip keeps them (or fails) rather than replacing them with CPU wheels. Editable, because a
# flow run loads flows/pipeline.py from this tree, whose motionfit/ folder would shadow an installed copy.
RUN python -m pip list --format=freeze | grep -E '^(torch|torchvision)==' > /tmp/base-torch.txt \
    && grep -v -E '^(torch|torchvision)==' constraints.txt | cat - /tmp/base-torch.txt >/tmp/constraints.txt \
    && python -m pip install --no-cache-dir -c /tmp/constraints.txt -e ".[dask,kubernetes]" \
    && python -c "import torch; assert torch.version.cuda, 'torch without CUDA'" \
    && rm /tmp/base-torch.txt /tmp/constraints.txt
