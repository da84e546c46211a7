#!/usr/bin/env python3
"""Build the cc-task test VM: a Debian kernel and an initramfs whose PID 1 is cc-task.

    python3 packaging/vm/build_image.py [--out DIR] [--cache DIR] [--refresh]

Writes ``DIR/vmlinux`` (the uncompressed kernel, which boots about 4 s faster under TCG
than ``vmlinuz``), ``DIR/initramfs.cpio`` (uncompressed: 1 to 1.5 s faster than gzip) and
``DIR/image.json`` (what went in). Everything comes from Debian packages (``apt-get
download`` then ``dpkg-deb -x``) plus the project's wheel and its dependencies installed
with ``pip install --target`` for CPython 3.11, all precompiled to ``.pyc``.

Cached and reproducible:
- downloaded packages stay in ``CACHE/debs`` (their file names carry the version); a
  package already there is reused, never re-resolved, unless ``--refresh`` (``apt-get
  download`` always takes the newest security version, which would change the image);
- the Python dependencies are installed once per hash of ``pyproject.toml`` + sources;
- the cpio archive is written by this script with fixed owners and times, sorted entries
  and device nodes (no root needed), and ``.pyc`` files use unchecked hashes, so the same
  inputs give the same bytes; the image is rebuilt only when its inputs' hash changes.

Exit status 0 and the output directory's path on stdout.
"""

from __future__ import annotations

import argparse
import compileall
import glob
import hashlib
import json
import lzma
import os
import py_compile
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
PY = "3.11"

#: Debian packages of the image. The libraries are what python3.11's modules, bash and
#: the wheels link against (the build checks every ELF file's DT_NEEDED below).
PACKAGES = [
    "libc6", "libgcc-s1", "zlib1g", "libexpat1", "libffi8", "libbz2-1.0", "liblzma5",
    "libuuid1", "libtinfo6", "libcrypt1", "libssl3",
    "python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib",
    "busybox-static", "bash",
]
#: The systemd variant adds systemd and what it links against (no udev, no D-Bus).
SYSTEMD_PACKAGES = [
    "systemd", "libsystemd-shared", "libsystemd0", "libacl1", "libapparmor1", "libargon2-1",
    "libaudit1", "libblkid1", "libcap-ng0", "libcap2", "libcryptsetup12",
    "libdevmapper1.02.1", "libfdisk1", "libgcrypt20", "libgpg-error0", "libip4tc2",
    "libjson-c5", "libkmod2", "liblz4-1", "libmount1", "libp11-kit0", "libpam0g",
    "libpcre2-8-0", "libseccomp2", "libselinux1", "libudev1", "libzstd1",
]
#: Units of the systemd package that a task VM does not want (each would fail or wait).
SYSTEMD_MASKED = [
    "getty@.service", "serial-getty@.service", "console-getty.service",
    "systemd-logind.service", "systemd-networkd.service", "systemd-resolved.service",
    "systemd-timesyncd.service", "systemd-homed.service", "systemd-userdbd.service",
    "systemd-firstboot.service", "systemd-machine-id-commit.service",
    "systemd-pstore.service", "systemd-journal-catalog-update.service",
    "systemd-update-utmp.service", "systemd-update-utmp-runlevel.service",
    "systemd-tmpfiles-setup-dev.service", "systemd-binfmt.service", "systemd-sysusers.service",
    "systemd-hwdb-update.service", "systemd-random-seed.service", "systemd-boot-update.service",
    "dev-hugepages.mount", "dev-mqueue.mount", "sys-kernel-debug.mount",
    "sys-kernel-tracing.mount", "sys-kernel-config.mount", "sys-fs-fuse-connections.mount",
    "tmp.mount", "systemd-remount-fs.service", "e2scrub_reap.service", "apt-daily.timer",
    "apt-daily-upgrade.timer", "man-db.timer", "fstrim.timer", "e2scrub_all.timer",
]
KERNEL_META = "linux-image-amd64"
#: Python dependencies of the image: the launcher and its metrics extra.
EXTRAS = "metrics"
#: Wheel platform tags the image's glibc (2.36) runs (pip does not expand them itself).
PLATFORMS = ["manylinux_2_36_x86_64", "manylinux_2_34_x86_64", "manylinux_2_28_x86_64",
             "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux_2_5_x86_64",
             "manylinux1_x86_64"]

#: Not needed in a task VM and large: pruned from the image.
PRUNE = [
    "usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale",
    "usr/share/lintian", "usr/share/bug", "usr/share/menu", "usr/share/bash-completion",
    "usr/lib/x86_64-linux-gnu/gconv", "usr/share/binfmts", "usr/share/gdb",
    f"usr/lib/python{PY}/test", f"usr/lib/python{PY}/idlelib",
    f"usr/lib/python{PY}/tkinter", f"usr/lib/python{PY}/turtledemo",
    f"usr/lib/python{PY}/lib2to3", f"usr/lib/python{PY}/ensurepip",
    f"usr/lib/python{PY}/pydoc_data", f"usr/lib/python{PY}/config-{PY}-x86_64-linux-gnu",
]
#: Files of the image that this folder provides: part of the image's hash.
OWN_FILES = ["init", "report-and-poweroff", "vm.env", "build_image.py", "../cc-task.service"]

#: Reproducible timestamps (SOURCE_DATE_EPOCH convention).
EPOCH = int(os.environ.get("SOURCE_DATE_EPOCH", "1700000000"))


def log(message: str) -> None:
    print(f"{Path(sys.argv[0]).stem}: {message}", file=sys.stderr, flush=True)


def run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run a tool; on failure, raise with its output (a build error must say why)."""
    proc = subprocess.run(argv, text=True, capture_output=True, **kwargs)  # type: ignore[call-overload]
    if proc.returncode != 0:
        raise SystemExit(f"build_image: {' '.join(argv)} failed ({proc.returncode}):\n"
                         f"{proc.stdout}{proc.stderr}")
    return proc  # type: ignore[no-any-return]


# -- Debian packages ------------------------------------------------------------------


def _apt(argv: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """apt-get/apt-cache, running ``apt-get update`` once if the lists are missing."""
    proc = subprocess.run(argv, text=True, capture_output=True, cwd=cwd)
    if proc.returncode != 0 and os.geteuid() == 0:
        log("apt failed, running apt-get update once: " + proc.stderr.strip()[-200:])
        run(["apt-get", "update", "-qq"])
        proc = subprocess.run(argv, text=True, capture_output=True, cwd=cwd)
    if proc.returncode != 0:
        raise SystemExit(f"build_image: {' '.join(argv)} failed:\n{proc.stderr}")
    return proc


def cached_deb(debs: Path, name: str) -> Path | None:
    found = sorted(debs.glob(f"{glob.escape(name)}_*_*.deb"))
    return found[-1] if found else None


def download(debs: Path, names: Iterable[str], refresh: bool) -> dict[str, Path]:
    """The .deb of each package, from the cache or ``apt-get download``."""
    debs.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    missing = []
    for name in names:
        deb = None if refresh else cached_deb(debs, name)
        if deb is None:
            missing.append(name)
        else:
            out[name] = deb
    if missing:
        log(f"apt-get download {' '.join(missing)}")
        with tempfile.TemporaryDirectory(dir=debs) as tmp:
            # apt drops privileges to _apt, which cannot write the folder: allow it.
            os.chmod(tmp, 0o777)
            _apt(["apt-get", "download", "-q", *missing], cwd=Path(tmp))
            for name in missing:
                for old in debs.glob(f"{glob.escape(name)}_*_*.deb"):
                    old.unlink()
                (new,) = Path(tmp).glob(f"{glob.escape(name)}_*_*.deb")
                dest = debs / new.name
                shutil.move(str(new), dest)
                out[name] = dest
    return out


def kernel_package(debs: Path, refresh: bool) -> str:
    """The versioned package ``linux-image-amd64`` depends on (e.g. linux-image-6.1.0-x)."""
    marker = debs / "linux-image-amd64.depends"
    if marker.exists() and not refresh:
        return marker.read_text().strip()
    deb = download(debs, [KERNEL_META], refresh)[KERNEL_META]
    depends = run(["dpkg-deb", "-f", str(deb), "Depends"]).stdout
    name = next(d.strip().split()[0] for d in depends.split(",")
                if d.strip().startswith("linux-image-"))
    marker.write_text(name + "\n")
    return name


def extract_vmlinux(vmlinuz: bytes) -> bytes:
    """The ELF kernel inside a bzImage whose payload is xz (the kernel's extract-vmlinux)."""
    magic = b"\xfd7zXZ\x00"
    start = vmlinuz.find(magic)
    while start != -1:
        try:
            data = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(vmlinuz[start:])
        except lzma.LZMAError:
            data = b""
        if data.startswith(b"\x7fELF"):
            return data
        start = vmlinuz.find(magic, start + 1)
    raise ValueError("no xz-compressed ELF payload in vmlinuz")


def build_kernel(cache: Path, refresh: bool) -> tuple[Path, str]:
    debs = cache / "debs"
    name = kernel_package(debs, refresh)
    deb = download(debs, [name], refresh)[name]
    version = deb.name.split("_")[1]
    dest = cache / "kernel" / f"{name}_{version}"
    vmlinux = dest / "vmlinux"
    if vmlinux.exists():
        return vmlinux, deb.name
    log(f"extracting the kernel from {deb.name}")
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest) as tmp:
        tar = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
        run(["tar", "-x", "-C", tmp, "--wildcards", "./boot/vmlinuz-*"], stdin=tar.stdout)
        tar.wait()
        (vmlinuz,) = Path(tmp).glob("boot/vmlinuz-*")
        raw = vmlinuz.read_bytes()
        try:
            kernel = extract_vmlinux(raw)
        except ValueError:
            log("no xz payload found: booting vmlinuz itself (slower)")
            kernel = raw
        tmpfile = dest / "vmlinux.tmp"
        tmpfile.write_bytes(kernel)
        tmpfile.rename(vmlinux)
    return vmlinux, deb.name


# -- Python packages -------------------------------------------------------------------


def source_hash() -> str:
    h = hashlib.sha256()
    files = [REPO / "pyproject.toml", *sorted((REPO / "supervisor").rglob("*.py"))]
    for f in files:
        h.update(str(f.relative_to(REPO)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def python_site(cache: Path) -> Path:
    """cc-task and its dependencies for CPython 3.11 on x86_64, as ``pip install --target``."""
    site = cache / "site" / source_hash()
    if (site / ".complete").exists():
        return site
    log("building the cc-task wheel and installing it with its dependencies")
    shutil.rmtree(site, ignore_errors=True)
    with tempfile.TemporaryDirectory() as tmp:
        run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", tmp, str(REPO)])
        (wheel,) = Path(tmp).glob("cc_task-*.whl")
        # Explicit platform and version: the wheels are for the image's python3.11,
        # whatever runs this script.
        run([sys.executable, "-m", "pip", "install", "-q", "--no-compile", "--target",
             str(site), "--python-version", PY, "--implementation", "cp", "--abi", "cp311",
             *[a for tag in PLATFORMS for a in ("--platform", tag)], "--only-binary=:all:",
             "--disable-pip-version-check", f"{wheel}[{EXTRAS}]"])
    scrub_site(site)
    (site / ".complete").write_text("")
    return site


def scrub_site(site: Path) -> None:
    """Drop what ``pip install --target`` leaves that depends on this build, not its inputs:
    scripts with this host's shebang, and ``direct_url.json`` (the wheel's temporary path)."""
    shutil.rmtree(site / "bin", ignore_errors=True)
    for url in site.glob("*.dist-info/direct_url.json"):
        url.unlink()
        record = url.parent / "RECORD"
        if record.exists():
            name = f"{url.parent.name}/direct_url.json,"
            lines = record.read_text().splitlines(keepends=True)
            record.write_text("".join(line for line in lines if not line.startswith(name)))


# -- the root file system --------------------------------------------------------------


def merge_tree(src: Path, dest: Path) -> None:
    """Copy ``src`` into ``dest`` with Debian's merged /usr (/bin -> usr/bin etc.)."""
    usrmerge = {"bin": "usr/bin", "sbin": "usr/sbin", "lib": "usr/lib", "lib64": "usr/lib64"}
    for top in os.listdir(src):
        target = dest / usrmerge.get(top, top)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(src / top, target, symlinks=True, dirs_exist_ok=True)


def elf_needed(path: Path) -> list[str]:
    out = subprocess.run(["readelf", "-d", str(path)], text=True, capture_output=True).stdout
    return [line.split("[", 1)[1].split("]", 1)[0] for line in out.splitlines()
            if "(NEEDED)" in line]


def check_libraries(root: Path) -> list[str]:
    """Every ELF file's needed libraries must be in the image's library folders."""
    if shutil.which("readelf") is None:
        log("readelf (binutils) is not installed: the libraries are not checked")
        return []
    libdirs = [root / "usr/lib/x86_64-linux-gnu", root / "usr/lib", root / "usr/lib64",
               root / "usr/lib/x86_64-linux-gnu/systemd"]  # systemd's RUNPATH
    problems = []
    for path in sorted(root.rglob("*")):
        if path.is_symlink() or not path.is_file():
            continue
        with open(path, "rb") as f:
            if f.read(4) != b"\x7fELF":
                continue
        for lib in elf_needed(path):
            if path.parent.name == "lib-dynload" or ".libs" in path.parent.name:
                here = [path.parent]
            else:
                here = []
            if not any((d / lib).exists() for d in [*libdirs, *here]):
                problems.append(f"{path.relative_to(root)} needs {lib}")
    return problems


def build_root(root: Path, debs: dict[str, Path], site: Path, systemd: bool = False) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for name, deb in sorted(debs.items()):
            dest = Path(tmp) / name
            run(["dpkg-deb", "-x", str(deb), str(dest)])
            merge_tree(dest, root)
    for top, target in (("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib"),
                        ("lib64", "usr/lib64")):
        (root / top).symlink_to(target)
    for rel in PRUNE:
        shutil.rmtree(root / rel, ignore_errors=True)
    # busybox provides the small tools (sh, mount, stty...); bash stays bash.
    busybox = root / "usr/bin/busybox"
    applets = run([str(busybox), "--list-full"]).stdout.split()
    for applet in applets:
        folder, _, name = applet.rpartition("/")
        link = root / {"bin": "usr/bin", "sbin": "usr/sbin"}.get(folder, folder) / name
        if not link.exists() and not link.is_symlink():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to("/usr/bin/busybox")
    (root / "usr/bin/python3").unlink(missing_ok=True)
    (root / "usr/bin/python3").symlink_to(f"python{PY}")
    # cc-task and its dependencies under /opt/cc-task, as the Debian package does.
    shutil.copytree(site, root / "opt/cc-task/lib", dirs_exist_ok=True)
    (root / "opt/cc-task/lib/.complete").unlink(missing_ok=True)
    launcher = root / "usr/bin/cc-task"
    launcher.write_text(LAUNCHER)
    launcher.chmod(0o755)
    (root / "init").write_bytes((HERE / "init").read_bytes())
    (root / "init").chmod(0o755)
    vmlib = root / "usr/lib/cc-task-vm"
    vmlib.mkdir(parents=True, exist_ok=True)
    shutil.copy(HERE / "report-and-poweroff", vmlib / "report-and-poweroff")
    (vmlib / "report-and-poweroff").chmod(0o755)
    etc = root / "etc/cc-task"
    etc.mkdir(parents=True, exist_ok=True)
    shutil.copy(HERE / "vm.env", etc / "vm.env")
    hooks = etc / "hooks"
    for phase in ("pre-run.d", "succeeded.d", "failed.d"):
        (hooks / phase).mkdir(parents=True, exist_ok=True)
    if (REPO / "hooks").is_dir():
        shutil.copytree(REPO / "hooks", hooks, dirs_exist_ok=True)
    for d in ("proc", "sys", "dev", "tmp", "run", "root", "mnt", "var/tmp"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n"
                                     "nobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\ntty:x:5:\nnogroup:x:65534:\n")
    (root / "etc/hostname").write_text("cc-task-vm\n")
    (root / "etc/hosts").write_text("127.0.0.1 localhost cc-task-vm\n")
    (root / "etc/ld.so.conf").write_text("/usr/lib/x86_64-linux-gnu\n/usr/local/lib\n")
    if systemd:
        setup_systemd(root)
    problems = check_libraries(root)
    # Some stdlib extension modules (readline, curses, sqlite, ssl, dbm, tk) are left out
    # on purpose; anything else missing is a build error.
    optional = {"_sqlite3", "_curses", "_curses_panel", "readline", "_dbm", "_gdbm",
                "_tkinter", "nis"}
    dynload = f"usr/lib/python{PY}/lib-dynload/"
    fatal = [p for p in problems if not (p.startswith(dynload) and
                                         p[len(dynload):].split(".")[0] in optional)]
    if fatal:
        raise SystemExit("build_image: missing libraries:\n  " + "\n  ".join(fatal))
    precompile(root)


def setup_systemd(root: Path) -> None:
    """Boot systemd as PID 1 (``rdinit=/usr/lib/systemd/systemd``) with cc-task.service
    enabled exactly as the Debian package installs it."""
    system = root / "usr/lib/systemd/system"
    shutil.copy(HERE.parent / "cc-task.service", system / "cc-task.service")
    etc = root / "etc/systemd/system"
    wants = etc / "multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    (wants / "cc-task.service").symlink_to("/usr/lib/systemd/system/cc-task.service")
    (etc / "default.target").symlink_to("/usr/lib/systemd/system/multi-user.target")
    for unit in SYSTEMD_MASKED:
        (etc / unit).unlink(missing_ok=True)
        (etc / unit).symlink_to("/dev/null")
    (root / "etc/machine-id").write_text("")  # systemd makes a transient one
    (root / "etc/os-release").write_text('PRETTY_NAME="cc-task test VM (Debian 12)"\n'
                                         "ID=debian\nVERSION_ID=12\n")
    (root / "usr/sbin/init").unlink(missing_ok=True)
    (root / "usr/sbin/init").symlink_to("/usr/lib/systemd/systemd")
    (root / "var/log/journal").mkdir(parents=True, exist_ok=True)


LAUNCHER = f"""#!/usr/bin/python{PY} -I
# cc-task, installed under /opt/cc-task (-I: the task's PYTHON* variables stay the task's).
import sys
sys.path.insert(0, "/opt/cc-task/lib")
from supervisor.cli import main
sys.exit(main())
"""


def precompile(root: Path) -> None:
    """Compile every module of the image once, at build time (the packages ship no .pyc)."""
    for rel in (f"usr/lib/python{PY}", "opt/cc-task/lib"):
        if (root / rel).is_dir():
            precompile_tree(root / rel, "/" + rel)


def precompile_tree(folder: Path, ddir: str) -> None:
    """``.pyc`` for every module under ``folder``, which will be installed as ``ddir``.

    Unchecked-hash .pyc files: valid whatever the archive's timestamps, and reproducible.
    The recorded file names are the installed paths, not this build folder's.
    """
    if sys.version_info[:2] != (3, 11):
        raise SystemExit("build_image: run me with Python 3.11 (the .pyc must match the "
                         "image's python3.11)")
    mode = py_compile.PycInvalidationMode.UNCHECKED_HASH
    ok = compileall.compile_dir(str(folder), ddir=ddir, quiet=1, workers=0,
                                invalidation_mode=mode)
    if not ok:
        log(f"some modules of {ddir} did not compile (left as source)")


# -- cpio --------------------------------------------------------------------------------
# Written here rather than with cpio(1): device nodes and root ownership without being
# root, fixed timestamps and inode numbers, sorted entries: the same inputs give the same
# archive, byte for byte.


def _cpio_header(ino: int, mode: int, nlink: int, size: int, name: bytes,
                 rdev: tuple[int, int] = (0, 0)) -> bytes:
    fields = [ino, mode, 0, 0, nlink, EPOCH, size, 0, 0, rdev[0], rdev[1], len(name) + 1, 0]
    head = b"070701" + b"".join(b"%08X" % f for f in fields) + name + b"\0"
    return head + b"\0" * (-len(head) % 4)


class Cpio:
    """A newc (SVR4, no CRC) archive, the format the kernel unpacks as initramfs."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.ino = 1

    def add(self, name: str, mode: int, data: bytes = b"", nlink: int = 1,
            rdev: tuple[int, int] = (0, 0)) -> None:
        self.chunks.append(_cpio_header(self.ino, mode, nlink, len(data), name.encode(), rdev))
        self.chunks.append(data + b"\0" * (-len(data) % 4))
        self.ino += 1

    def add_tree(self, root: Path) -> None:
        entries = sorted(p for p in root.rglob("*"))
        for path in entries:
            rel = str(path.relative_to(root))
            st = path.lstat()
            perm = stat.S_IMODE(st.st_mode)
            if stat.S_ISLNK(st.st_mode):
                self.add(rel, stat.S_IFLNK | 0o777, os.readlink(path).encode())
            elif stat.S_ISDIR(st.st_mode):
                self.add(rel, stat.S_IFDIR | perm, nlink=2)
            elif stat.S_ISREG(st.st_mode):
                self.add(rel, stat.S_IFREG | perm, path.read_bytes())

    def finish(self) -> bytes:
        self.add("TRAILER!!!", 0)
        data = b"".join(self.chunks)
        return data + b"\0" * (-len(data) % 512)


def env_archive(files: dict[str, bytes]) -> bytes:
    """A small cpio archive to append to the image: the kernel unpacks both, in order."""
    c = Cpio()
    dirs = sorted({str(Path(n).parent) for n in files for _ in [0]} - {"."})
    seen: set[str] = set()
    for d in dirs:
        parts = Path(d).parts
        for i in range(1, len(parts) + 1):
            sub = "/".join(parts[:i])
            if sub not in seen:
                seen.add(sub)
                c.add(sub, stat.S_IFDIR | 0o755, nlink=2)
    for name, data in sorted(files.items()):
        c.add(name, stat.S_IFREG | 0o600, data)
    return c.finish()


# -- the whole image -------------------------------------------------------------------


def image_key(debs: dict[str, Path], kernel_deb: str, systemd: bool = False) -> str:
    h = hashlib.sha256(b"systemd\0" if systemd else b"")
    for name in sorted(debs):
        h.update(debs[name].name.encode() + b"\0")
    h.update(kernel_deb.encode() + b"\0" + source_hash().encode() + b"\0")
    for own in OWN_FILES:
        h.update((HERE / own).read_bytes())
    if (REPO / "hooks").is_dir():
        for hook in sorted((REPO / "hooks").rglob("*")):
            if hook.is_file():
                mode = b"%o" % hook.stat().st_mode  # chmod -x disables a hook
                h.update(str(hook.relative_to(REPO)).encode() + mode + hook.read_bytes())
    return h.hexdigest()[:16]


def build(out: Path, cache: Path, refresh: bool = False, systemd: bool = False) -> Path:
    """Build (or find up to date) ``out/vmlinux`` and ``out/initramfs.cpio``; with
    ``systemd``, ``out/initramfs-systemd.cpio`` (systemd as PID 1, cc-task.service)."""
    t0 = time.monotonic()
    vmlinux, kernel_deb = build_kernel(cache, refresh)
    debs = download(cache / "debs", PACKAGES + (SYSTEMD_PACKAGES if systemd else []), refresh)
    site = python_site(cache)
    key = image_key(debs, kernel_deb, systemd)
    suffix = "-systemd" if systemd else ""
    meta = out / f"image{suffix}.json"
    initramfs = out / f"initramfs{suffix}.cpio"
    if meta.exists() and initramfs.exists():
        try:
            if json.loads(meta.read_text()).get("key") == key:
                log(f"image {key} is up to date ({time.monotonic() - t0:.1f}s)")
                return out
        except ValueError:
            pass
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        build_root(root, debs, site, systemd)
        cpio = Cpio()
        cpio.add("dev", stat.S_IFDIR | 0o755, nlink=2)
        # The kernel opens /dev/console for PID 1 before /init runs (no devtmpfs yet).
        cpio.add("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1))
        cpio.add("dev/null", stat.S_IFCHR | 0o666, rdev=(1, 3))
        shutil.rmtree(root / "dev")
        cpio.add_tree(root)
        data = cpio.finish()
    tmpfile = initramfs.with_suffix(".tmp")
    tmpfile.write_bytes(data)
    tmpfile.rename(initramfs)
    shutil.copyfile(vmlinux, out / "vmlinux.tmp")
    (out / "vmlinux.tmp").rename(out / "vmlinux")
    meta.write_text(json.dumps({
        "key": key, "kernel": kernel_deb,
        "packages": sorted(d.name for d in debs.values()),
        "python": sorted(p.name for p in site.glob("*.dist-info")),
        "initramfs_bytes": len(data),
        "initramfs_sha256": hashlib.sha256(data).hexdigest(),
    }, indent=2) + "\n")
    log(f"image {key} built in {time.monotonic() - t0:.1f}s "
        f"(initramfs {len(data) / 1e6:.1f} MB)")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_cache = os.environ.get("CC_TASK_PACKAGING_CACHE") or str(REPO / "packaging/cache")
    p.add_argument("--out", default=str(REPO / "packaging/out/vm"))
    p.add_argument("--cache", default=default_cache)
    p.add_argument("--refresh", action="store_true",
                   help="re-resolve the Debian packages (newest versions)")
    p.add_argument("--systemd", action="store_true",
                   help="build initramfs-systemd.cpio: systemd as PID 1 runs cc-task.service")
    args = p.parse_args(argv)
    out = build(Path(args.out).resolve(), Path(args.cache).resolve(), args.refresh,
                args.systemd)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
