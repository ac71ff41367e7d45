"""Every install path serves a working UI (issue 15 item 9).

A wheel, an sdist or ``pip install git+...`` built where there is no Node.js used to ship
no uPlot and no Swagger UI: the server then showed "run npm ci" instead of charts.  The
build hook (``hatch_build.py``) now takes the exact tarball ``package-lock.json`` pins from
the npm registry and checks its integrity hash.  These tests build the real package from a
clean export of the checkout (no ``node_modules/``) with ``npm`` off ``PATH``.
"""

import hashlib
import os
import shutil
import subprocess
import sys
import urllib.request
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VENDOR = "primus_lens_wandb_exporter/server/ui/vendor"


def _registry_reachable():
    try:
        urllib.request.urlopen("https://registry.npmjs.org/uplot", timeout=10).close()
        return True
    except Exception:
        return False


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not _registry_reachable(), reason="the npm registry (registry.npmjs.org) is not reachable"),
]


def _export(dest: Path) -> Path:
    """The committed tree only (what a git URL or an sdist holds): no node_modules/, no vendor/."""
    dest.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True, check=True).stdout
    for name in filter(None, archive.decode().split("\0")):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest / name)
    assert not (dest / "node_modules").exists()
    return dest


def _no_npm_env(tmp_path: Path) -> dict:
    """PATH with this Python only: no npm, no node."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("python", "python3"):
        os.symlink(sys.executable, bin_dir / name)
    env = dict(os.environ, PATH=str(bin_dir))
    assert shutil.which("npm", path=env["PATH"]) is None
    return env


def _expected(package: str, path: str) -> str:
    """sha256 of the file as ``npm ci`` put it in node_modules/ (the reference copy)."""
    return hashlib.sha256((ROOT / "node_modules" / package / path).read_bytes()).hexdigest()


def test_a_wheel_built_from_the_sdist_without_npm_ships_the_ui_packages(tmp_path):
    src = _export(tmp_path / "src")
    out = tmp_path / "dist"
    # `python -m build DIR`: the sdist first, then the wheel from that sdist -- as pip does for
    # an sdist from PyPI, and as `pip install git+...` does from the clone.
    proc = subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(src)],
                          env=_no_npm_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "no npm here; took https://" in proc.stdout + proc.stderr
    wheel = next(out.glob("*.whl"))
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        files = {n[len(VENDOR) + 1:]: hashlib.sha256(z.read(n)).hexdigest() for n in names if n.startswith(VENDOR)}
    wanted = {"uplot": ("dist/uPlot.iife.min.js", "dist/uPlot.min.css", "package.json"),
              "swagger-ui-dist": ("swagger-ui-bundle.js", "swagger-ui.css", "package.json")}
    for package, paths in wanted.items():
        for path in paths:
            assert files.get(f"{package}/{path}") == _expected(package, path), (package, path, sorted(files))
    assert "primus_lens_wandb_exporter.pth" in names


def _see_this_environments_packages(venv: Path) -> None:
    """Let ``venv`` import the server's dependencies from the environment running the tests.

    ``--system-site-packages`` shows the base interpreter's packages, not this environment's
    (``make test`` runs in ``.venv``): on a machine whose base Python lacks starlette the
    installed server could not be imported.  A path file adds this environment's
    site-packages as plain directories, so their own ``.pth`` files (this checkout's
    editable install among them) are not processed: the package still comes from ``venv``'s
    install of the export."""
    import sysconfig

    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip()
    ours = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (Path(site) / "zz_test_environment.pth").write_text("".join(f"{p}\n" for p in ours))


def test_an_editable_install_without_npm_fills_the_source_vendor_directory(tmp_path):
    src = _export(tmp_path / "src")
    env = _no_npm_env(tmp_path)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    _see_this_environments_packages(venv)
    proc = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "-e", str(src)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    vendor = src / "src" / VENDOR
    for package, path in (("uplot", "dist/uPlot.iife.min.js"), ("swagger-ui-dist", "swagger-ui-bundle.js")):
        assert hashlib.sha256((vendor / package / path).read_bytes()).hexdigest() == _expected(package, path)
    # the installed server finds them (its vendor/ is that directory: the package is the source tree)
    check = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "from primus_lens_wandb_exporter.server.ui import NPM_PACKAGES\n"
                            "print(all(p.root() is not None for p in NPM_PACKAGES))"],
                           env=env, capture_output=True, text=True, cwd=str(tmp_path), timeout=120)
    assert check.stdout.strip() == "True", check.stdout + check.stderr
