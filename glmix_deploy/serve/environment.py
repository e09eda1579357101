"""What a real Triton server from the `nvidia-pytriton` wheel needs from this Python, and the two
traps it sets, handled here once for `serve` (PyTriton) and for plain `tritonserver` runs alike.

* The Python-backend stub (`triton_python_backend_stub`, one per Python minor version in the wheel)
  links `libpython3.X.so.1.0` and finds the system one first. Under another build of the same minor
  version (pyenv, conda, uv) the stub then mixes that library with this interpreter's standard
  library, and model initialisation fails with `'_thread.RLock' object has no attribute
  '_recursion_count'`. Fix: this interpreter's own library folder first on LD_LIBRARY_PATH.
* The stub's pybind11 was built against NumPy 1.x: under NumPy 2 it reads every tensor's bytes
  wrongly (inputs arrive as copies of their first element, outputs have zero bytes). Fix: the
  stubs run in a small environment whose `numpy<2` comes before this environment's packages; this
  process keeps its NumPy. It is prepared once with pip (`stub_python_env`) and cached.

Nothing here imports pytriton at module level: `require_pytriton` says how to install it.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from glmix_deploy.errors import MissingDependencyError

# The wheel pins numpy<2: its other dependencies come with the extra, the wheel on its own (pyproject.toml).
INSTALL_HINT = "pip install 'glmix-deploy[serve]' && pip install --no-deps --no-warn-conflicts 'nvidia-pytriton>=0.5'"
STUB_ENV_VAR = "GLMIX_DEPLOY_TRITON_STUB_ENV"  # a prepared Python environment with numpy<2 for the stubs
STUB_NUMPY = "numpy>=1.21,<2"


def require_pytriton():
    """The pytriton package, or MissingDependencyError (exit 2) with the install hint."""
    try:
        import pytriton
        from pytriton.triton import Triton  # noqa: F401 (the server module must import too)
    except ImportError as exc:
        raise MissingDependencyError(
            f"serving needs PyTriton (the nvidia-pytriton wheel ships the Triton server): {INSTALL_HINT} "
            f"({exc})") from exc
    return pytriton


def pytriton_root() -> Path:
    return Path(require_pytriton().__file__).resolve().parent


def tritonserver_binary() -> Path:
    binary = pytriton_root() / "tritonserver" / "bin" / "tritonserver"
    if not binary.is_file():
        raise MissingDependencyError(f"the nvidia-pytriton wheel has no tritonserver at {binary}; "
                                     f"reinstall it: {INSTALL_HINT}")
    return binary


def python_stub() -> Path:
    """The Python-backend stub built for this interpreter's minor version."""
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    stub = pytriton_root() / "tritonserver" / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise MissingDependencyError(f"the nvidia-pytriton wheel has no Python-backend stub for Python {version}")
    return stub


def prepare_backend_directory(target: Path) -> Path:
    """A Triton backend directory with the wheel's Python backend and this Python's stub beside it
    (what PyTriton does in its workspace; a plain `tritonserver` run needs it too)."""
    source = pytriton_root() / "tritonserver" / "backends"
    target = Path(target)
    shutil.copytree(source, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(python_stub(), target / "python" / "triton_python_backend_stub")
    return target


def libpython_dir() -> Path | None:
    """This interpreter's shared-library folder when it has its own libpython (None: static build)."""
    if not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        return None
    libdir = sysconfig.get_config_var("LIBDIR")
    name = sysconfig.get_config_var("LDLIBRARY") or ""
    if libdir and (Path(libdir) / name).exists():
        return Path(libdir)
    return None


def check_libpython() -> None:
    """Refuse up front what would fail at model load: a Python without a shared libpython."""
    if libpython_dir() is None:
        raise MissingDependencyError(
            f"{sys.executable} is a static Python build (no libpython{sys.version_info[0]}.{sys.version_info[1]}"
            ".so); Triton's Python-backend stub embeds libpython and would load a different build's. Use a "
            "Python built with --enable-shared (pyenv: PYTHON_CONFIGURE_OPTS=--enable-shared) or the system "
            "python3 for the virtual environment")


def numpy_major() -> int:
    import numpy

    return int(numpy.__version__.split(".")[0])


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "glmix-deploy"


def _site_packages() -> str:
    return sysconfig.get_paths()["purelib"]


def stub_python_env(*, note=None) -> Path:
    """The Python environment (its bin/python3 first on PATH) that the Python-backend stubs run in.

    Under NumPy 1 it is this one. Under NumPy 2 it is a small virtual environment in the user cache,
    made once: this interpreter, `numpy<2` in its own site-packages, then this environment's
    site-packages (added by a .pth file, so onnxruntime, OpenVINO, pyzmq and glmix_deploy resolve
    as here). $GLMIX_DEPLOY_TRITON_STUB_ENV names a prepared one instead. (The stub's embedded
    Python ignores PYTHONPATH, so a path entry could not do this.)"""
    if numpy_major() < 2:
        return Path(sys.prefix)
    given = os.environ.get(STUB_ENV_VAR)
    if given:
        if not (Path(given) / "bin" / "python3").exists():
            raise MissingDependencyError(f"${STUB_ENV_VAR}={given} is not a Python environment (no bin/python3)")
        return Path(given)
    tag = hashlib.sha256(sys.prefix.encode()).hexdigest()[:10]
    folder = _cache_root() / f"triton-stub-env-py{sys.version_info[0]}{sys.version_info[1]}-{tag}"
    if (folder / ".complete").is_file():
        return folder
    # One preparer at a time (parallel test workers, two `serve` runs): the others wait, then use it.
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        lock = open(folder.with_name(folder.name + ".lock"), "w")  # held (and closed) by the `with` below
    except OSError as exc:
        raise MissingDependencyError(f"cannot prepare the stub environment in {folder.parent}: {exc}") from exc
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / ".complete").is_file():
            _prepare_stub_env(folder, note)
    return folder


def _prepare_stub_env(folder: Path, note) -> None:
    if note:
        note(f"preparing a {STUB_NUMPY} environment for Triton's Python-backend stub in {folder} (once)")
    work = folder.with_name(folder.name + f".tmp{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(work)], check=True,
                       capture_output=True, text=True)
        site = Path(subprocess.run([str(work / "bin" / "python3"), "-c",
                                    "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                   check=True, capture_output=True, text=True).stdout.strip())
        pip = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
               "--target", str(site), STUB_NUMPY]
        done = subprocess.run(pip, capture_output=True, text=True)
        if done.returncode != 0:
            tail = (done.stderr.strip().splitlines() or ["pip failed"])[-1]
            raise MissingDependencyError(
                f"Triton's Python-backend stub needs {STUB_NUMPY} (this environment has NumPy {numpy_major()}.x) "
                f"and pip could not fetch it ({tail}); install nvidia-pytriton's own requirements "
                f"({INSTALL_HINT} brings numpy<2) or point ${STUB_ENV_VAR} at an environment with numpy<2")
        (site / "glmix_deploy_main_env.pth").write_text(
            f"import site; site.addsitedir({_site_packages()!r})\n")
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(work, ignore_errors=True)
        raise MissingDependencyError(f"cannot prepare the stub environment in {work}: "
                                     f"{(exc.stderr or '').strip() or exc}") from exc
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    (work / ".complete").write_text(STUB_NUMPY + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(work, folder)


def server_environment(base: dict[str, str] | None = None, *, note=None) -> dict[str, str]:
    """The environment for a plain `tritonserver` and its Python-backend stubs (both traps handled)."""
    check_libpython()
    env = dict(os.environ if base is None else base)
    libdir = str(libpython_dir())
    # The wheel's own shared libraries (the stub links its libcudart through a relative RPATH that a
    # copied stub loses), after this Python's libpython.
    wheel_libs = pytriton_root().parent / "nvidia_pytriton.libs"
    parts = [libdir] + ([str(wheel_libs)] if wheel_libs.is_dir() else [])
    parts += [p for p in env.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p and p not in parts]
    env["LD_LIBRARY_PATH"] = os.pathsep.join(parts)
    # The stub finds its Python prefix (and so site-packages) through `python3` on PATH.
    env["PATH"] = os.pathsep.join([str(stub_python_env(note=note) / "bin"), env.get("PATH", "")])
    return env
