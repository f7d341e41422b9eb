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
