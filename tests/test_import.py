import subprocess
import sys

HEAVY = ("triton", "cupy", "cuml", "faiss", "numba")


def _run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                          text=True).stdout


def test_import_is_light_and_silent():
    out = _run(
        "import sys, interestflow\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r} + ('torch',)))\n")
    assert out.strip() == "[]"


def test_public_api_does_not_import_gpu_stacks_or_start_cuda():
    out = _run(
        "import sys, interestflow\n"
        "interestflow.Encoder, interestflow.KMeans, interestflow.InterestEngine\n"
        "import torch\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}),"
        " torch.cuda.is_initialized())\n")
    assert out.strip() == "[] False"


def test_import_prints_nothing():
    r = subprocess.run([sys.executable, "-c", "import interestflow"], capture_output=True,
                       text=True, check=True)
    assert r.stdout == "" and r.stderr == ""


def test_unknown_attribute():
    import interestflow
    try:
        interestflow.NoSuchThing
    except AttributeError as exc:
        assert "NoSuchThing" in str(exc)
    else:
        raise AssertionError("expected AttributeError")


def test_checkout_root_on_sys_path_does_not_shadow_the_pypi_kernels_package():
    """From the root of a checkout (``python -c``, ``python -m``), the folder ``kernels/``
    would shadow the PyPI package ``kernels`` that transformers imports: it hands the name
    over, and ``interestflow.kernels`` still works beside it."""
    import importlib.metadata
    from pathlib import Path

    import pytest

    try:
        importlib.metadata.distribution("kernels")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("the PyPI package 'kernels' is not installed: nothing to shadow")
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c",
         "import kernels, interestflow.kernels as ik\n"
         "print(kernels.__file__)\n"
         "print(ik.__name__, callable(ik.cosine_topk))\n"],
        cwd=root, check=True, capture_output=True, text=True).stdout.split("\n")
    assert Path(out[0]).resolve().parent != (root / "kernels").resolve()
    assert out[1] == "interestflow.kernels True"
