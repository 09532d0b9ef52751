# syntax=docker/dockerfile:1.7
# SCAIL-Preview 14B worker for RunPod serverless.
# Weights are not in the image: they are read from the network volume at /runpod-volume (SCAIL_MODEL_ROOT).
#
# PyTorch 2.14.1 built for CUDA 13.0 carries kernels for sm_75 .. sm_120: Ampere, Ada, Hopper and Blackwell
# (B200 and RTX 50xx). CUDA 13 needs an NVIDIA driver >= 580 on the host.
ARG BASE_IMAGE=pytorch/pytorch:2.14.1-cuda13.0-cudnn9-runtime
FROM ${BASE_IMAGE}

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    SCAIL_MODEL_ROOT=/runpod-volume

WORKDIR /app

# The base image's torch stays: the constraint makes pip fail rather than swap it for another build.
# Wheels only, so nothing is compiled and no build tools are needed in (or left in) the image.
COPY requirements.txt requirements-docker.txt requirements-cudnn.txt ./
RUN python -c "import torch, torchvision; print(f'torch=={torch.__version__}'); print(f'torchvision=={torchvision.__version__}')" \
        > /tmp/base-torch.txt \
    && pip install --no-cache-dir --only-binary=:all: -c /tmp/base-torch.txt -r requirements-docker.txt \
    && pip install --no-cache-dir --only-binary=:all: --no-deps -r requirements-cudnn.txt \
    && rm /tmp/base-torch.txt

COPY . .

# Fail the build, not a job, when the PyTorch build lacks kernels for one of the target GPUs.
RUN python -m worker.cuda_arch

# On RunPod this serves jobs; without RunPod's environment it runs ./test_input.json once.
# Local API instead: docker run --gpus all -p 8000:8000 -v VOLUME:/runpod-volume IMAGE \
#     python -u runpod_handler.py --rp_serve_api --rp_api_host 0.0.0.0 --rp_api_port 8000
EXPOSE 8000
CMD ["python", "-u", "runpod_handler.py"]
