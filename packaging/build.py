#!/usr/bin/env python3
"""Build what task images install: wheel + sdist, a single-file executable, a .deb.

    python3 packaging/build.py [dist] [shiv] [deb] [vm]     (default: dist shiv deb)

Outputs in ``packaging/out/`` (gitignored):
- ``dist/cc_task-V-py3-none-any.whl`` and ``dist/cc_task-V.tar.gz`` (``python -m build``);
- ``cc-task.pyz``: a shiv executable with every dependency inside (pydantic-core is
  compiled, so a plain zipapp cannot carry it); runs on x86_64 Linux with any python3.11,
  no pip needed (``./cc-task.pyz --command 'echo hi'``). It unpacks itself once into
  ``~/.shiv`` (``SHIV_ROOT`` to change that);
- ``cc-task_V-1_amd64.deb``: cc-task and its dependencies under ``/opt/cc-task/lib``
  (``pip install --target`` for CPython 3.11, precompiled), ``/usr/bin/cc-task``, the stock
  hooks under ``/etc/cc-task/hooks``, the systemd unit ``/lib/systemd/system/cc-task.service``
  (not enabled: an image enables it with ``systemctl enable cc-task``);
- ``vm/``: the test VM (``packaging/vm/build_image.py``).

The build tools (build, shiv) live in a venv in ``packaging/cache/tools``; each output is
rebuilt only when the sources, hooks or packaging files change (a stamp keyed by their
hash). ``CC_TASK_PACKAGING_CACHE`` moves the cache.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE / "vm"))

import build_image  # noqa: E402
from build_image import LAUNCHER, PLATFORMS, log, precompile_tree, run  # noqa: E402

OUT = REPO / "packaging" / "out"
CACHE = Path(os.environ.get("CC_TASK_PACKAGING_CACHE") or REPO / "packaging" / "cache")
TOOLS = ["build>=1.0", "shiv>=1.0.4"]
EPOCH = build_image.EPOCH


def version() -> str:
    text = (REPO / "supervisor" / "__init__.py").read_text()
    match = re.search(r'^__version__ = "([^"]+)"', text, re.M)
    assert match, "no __version__ in supervisor/__init__.py"
    return match.group(1)


def inputs_hash() -> str:
    """Sources, hooks and packaging files: what the outputs are made of."""
    h = hashlib.sha256(build_image.source_hash().encode())
    for folder in (REPO / "hooks", HERE):
        for f in sorted(folder.glob("*" if folder == HERE else "**/*")):
            if f.is_file() and f.suffix in ("", ".py", ".service", ".md", ".sh"):
                mode = b"%o" % f.stat().st_mode  # chmod -x disables a hook
                h.update(str(f.relative_to(REPO)).encode() + mode + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def fresh(stamp: Path) -> bool:
    return stamp.exists() and stamp.read_text().strip() == inputs_hash()


def tools() -> Path:
    """A venv with the build tools, made once."""
    venv = CACHE / "tools"
    python = venv / "bin" / "python"
    if not (venv / ".complete").exists():
        log("making the tools venv (build, shiv)")
        shutil.rmtree(venv, ignore_errors=True)
        run([sys.executable, "-m", "venv", str(venv)])
        run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *TOOLS])
        (venv / ".complete").write_text("")
    return python


def dist() -> Path:
    """Wheel and sdist in ``out/dist``; returns the wheel."""
    out = OUT / "dist"
    stamp = out / ".stamp"
    wheel = out / f"cc_task-{version()}-py3-none-any.whl"
    if fresh(stamp) and wheel.exists():
        return wheel
    python = tools()
    shutil.rmtree(out, ignore_errors=True)
    log("python -m build (sdist, then the wheel from it)")
    env = dict(os.environ, SOURCE_DATE_EPOCH=str(EPOCH))
    with tempfile.TemporaryDirectory() as tmp:
        # Build from a copy: setuptools writes build/ and *.egg-info into the source tree.
        src = Path(tmp) / "src"
        shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
            ".git", ".venv", "packaging", "build", "dist", "*.egg-info", "__pycache__",
            ".*_cache", "bench"))
        run([str(python), "-m", "build", "--outdir", str(out), str(src)], env=env)
    stamp.write_text(inputs_hash() + "\n")
    return wheel


def shiv() -> Path:
    target = OUT / "cc-task.pyz"
    stamp = OUT / ".cc-task.pyz.stamp"
    if fresh(stamp) and target.exists():
        return target
    wheel = dist()
    python = tools()
    log("shiv: cc-task.pyz")
    env = dict(os.environ, SOURCE_DATE_EPOCH=str(EPOCH))
    run([str(python), "-m", "shiv", "--reproducible", "--compressed", "-c", "cc-task",
         "-p", "/usr/bin/env python3", "-o", str(target), "--disable-pip-version-check",
         "-q", f"{wheel}[metrics]"], env=env)
    stamp.write_text(inputs_hash() + "\n")
    return target


CONTROL = """\
Package: cc-task
Version: {version}
Architecture: amd64
Maintainer: cc-task maintainers <cc-task@localhost>
Depends: python3.11, bash
Recommends: python3
Section: admin
Priority: optional
Installed-Size: {size}
Description: start command of a Clever Cloud task VM
 cc-task loads the injected environment, validates CC_RUN_COMMAND, runs it under bash,
 streams every output line as a structured JSON record, enforces timeouts, forwards
 signals, reaps zombies as PID 1, runs hooks, reports the exit status (log, JSON file,
 Prometheus metrics), then shuts the machine down.
 .
 Its Python dependencies are installed under /opt/cc-task/lib, for CPython 3.11.
"""


def deb() -> Path:
    ver = version()
    target = OUT / f"cc-task_{ver}-1_amd64.deb"
    stamp = OUT / ".deb.stamp"
    if fresh(stamp) and target.exists():
        return target
    wheel = dist()
    log(f"dpkg-deb: {target.name}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        lib = root / "opt/cc-task/lib"
        run([sys.executable, "-m", "pip", "install", "-q", "--no-compile", "--target", str(lib),
             "--python-version", build_image.PY, "--implementation", "cp", "--abi", "cp311",
             *[a for tag in PLATFORMS for a in ("--platform", tag)], "--only-binary=:all:",
             "--disable-pip-version-check", f"{wheel}[metrics]"])
        build_image.scrub_site(lib)
        precompile_tree(lib, "/opt/cc-task/lib")
        launcher = root / "usr/bin/cc-task"
        launcher.parent.mkdir(parents=True)
        launcher.write_text(LAUNCHER)
        launcher.chmod(0o755)
        hooks = root / "etc/cc-task/hooks"
        for phase in ("pre-run.d", "succeeded.d", "failed.d"):
            (hooks / phase).mkdir(parents=True)
        if (REPO / "hooks").is_dir():
            shutil.copytree(REPO / "hooks", hooks, dirs_exist_ok=True)
        unit = root / "lib/systemd/system/cc-task.service"
        unit.parent.mkdir(parents=True)
        shutil.copy(HERE / "cc-task.service", unit)
        doc = root / "usr/share/doc/cc-task"
        doc.mkdir(parents=True)
        for name in ("README.md", "docs/deploy.md"):
            if (REPO / name).exists():
                shutil.copy(REPO / name, doc / Path(name).name)
        (doc / "copyright").write_text("cc-task, MIT license; bundled Python packages keep "
                                       "their own licenses (see /opt/cc-task/lib/*.dist-info).\n")
        size = sum(f.stat().st_size for f in root.rglob("*") if f.is_file()) // 1024
        debian = root / "DEBIAN"
        debian.mkdir()
        (debian / "control").write_text(CONTROL.format(version=f"{ver}-1", size=size))
        conffiles = sorted("/" + str(f.relative_to(root)) for f in (root / "etc").rglob("*")
                           if f.is_file())
        (debian / "conffiles").write_text("".join(c + "\n" for c in conffiles))
        for path in [root, *root.rglob("*")]:
            if path.is_dir():
                path.chmod(0o755)
            elif path.is_file() and not path.is_symlink():
                path.chmod(0o755 if path.stat().st_mode & 0o111 else 0o644)
            os.utime(path, (EPOCH, EPOCH), follow_symlinks=False)
        env = dict(os.environ, SOURCE_DATE_EPOCH=str(EPOCH))
        run(["dpkg-deb", "--root-owner-group", "-Zxz", "--build", str(root), str(target)],
            env=env)
    stamp.write_text(inputs_hash() + "\n")
    return target


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("targets", nargs="*", metavar="{dist,shiv,deb,vm}")
    args = p.parse_args(argv)
    targets = args.targets or ["dist", "shiv", "deb"]
    for name in targets:
        if name not in ("dist", "shiv", "deb", "vm"):
            p.error(f"unknown target {name!r}")
    OUT.mkdir(parents=True, exist_ok=True)
    for name in targets:
        started = time.monotonic()
        if name == "vm":
            result = build_image.build(OUT / "vm", CACHE)
        else:
            result = {"dist": dist, "shiv": shiv, "deb": deb}[name]()
        log(f"{name}: {result} ({time.monotonic() - started:.1f}s)")
        print(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
