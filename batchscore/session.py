"""Execution providers: CUDA when it really is active, the CPU otherwise, never silently the wrong one.

onnxruntime falls back to the CPU without a word when the CUDA provider cannot
load (no driver, no CUDA 13 or cuDNN 9 libraries): the provider actually running
is read back from the session after it is created.
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
import os
import sys

import onnxruntime as ort

from batchscore.errors import DeviceUnavailableError, ModelError
from batchscore.spec import Device

log = logging.getLogger("batchscore")
ort.set_default_logger_severity(3)


def _cuda_driver_missing() -> str | None:
    """Why CUDA cannot work here, or None when a driver library loads."""
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return f"this onnxruntime ({ort.__version__}) has no CUDA provider; install onnxruntime-gpu"
    lib = "nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1"
    try:
        ctypes.CDLL(lib)
    except OSError:
        return f"no NVIDIA driver found ({lib} does not load): no GPU on this machine"
    return None


def _preload_cuda_wheels() -> None:
    # onnxruntime-gpu[cuda,cudnn] ships CUDA and cuDNN as nvidia-* wheels; load them before the session.
    if importlib.util.find_spec("nvidia") is not None and hasattr(ort, "preload_dlls"):
        try:
            ort.preload_dlls()
        except Exception as exc:  # best effort: a system CUDA may still work
            log.debug("onnxruntime.preload_dlls() failed: %s", exc)


def _available_cores() -> int:
    """Cores this process may run on (taskset and cpusets respected where the OS tells)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _session_options(threads: int | None, severity: int) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or _available_cores()
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = severity
    # Spinning threads steal the core that reading and writing need.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


def create_session(
    source: str | bytes, path: str, *, device: Device, threads: int | None
) -> tuple[ort.InferenceSession, str]:
    cpu = ["CPUExecutionProvider"]
    reason = None
    if device in ("auto", "cuda"):
        reason = _cuda_driver_missing()
        if reason is None:
            _preload_cuda_wheels()
            session = _new_session(source, path, ["CUDAExecutionProvider", *cpu], _session_options(threads, 4))
            active = session.get_providers()[0]
            if active == "CUDAExecutionProvider":
                log.info("device: CUDA (onnxruntime %s)", ort.__version__)
                return session, active
            reason = "onnxruntime could not start the CUDA provider (CUDA 13 or cuDNN 9 libraries missing?)"
        if device == "cuda":
            msg = (
                f"--device cuda is unavailable: {reason}; install CUDA 13 and cuDNN 9 or "
                "pip install 'batchscore[cuda]', or use --device cpu"
            )
            raise DeviceUnavailableError(msg)
        log.info("device: CPU (CUDA not used: %s)", reason)
    session = _new_session(source, path, cpu, _session_options(threads, 3))
    return session, session.get_providers()[0]


def _new_session(
    source: str | bytes, path: str, providers: list[str], options: ort.SessionOptions
) -> ort.InferenceSession:
    try:
        return ort.InferenceSession(source, sess_options=options, providers=providers)
    except Exception as exc:  # onnxruntime raises Fail, InvalidGraph, NotImplemented...
        msg = (
            f"onnxruntime {ort.__version__} cannot load model {path}: {' '.join(str(exc).split())}; "
            "re-export it with an opset this onnxruntime supports"
        )
        raise ModelError(msg) from exc
