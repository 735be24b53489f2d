"""Complete a foreign-architecture Debian root from a native one, without running it.

    python3 .ci/foreign_root.py NATIVE_ROOT FOREIGN_ROOT

NATIVE_ROOT is a configured root (debootstrap'd, say for amd64). FOREIGN_ROOT holds the
same packages for another architecture, only extracted (`mmdebstrap --variant=extract
--skip=cleanup/apt/cache`: their .debs are still in var/cache/apt/archives) and never
configured: configuring them means running dpkg and every maintainer script under QEMU,
about 5 minutes on 2 cores. What configuring adds does not depend on the architecture,
so it is taken from the native root:

- the files no package ships, which maintainer scripts and debootstrap made (passwd and
  group, the alternatives' links, the CA bundle, byte code, ...), copied where the foreign
  root has nothing at that path;
- dpkg's database, with each architecture-specific package's entry made from its foreign
  .deb: its control fields, maintainer scripts, md5sums and file list. Architecture `all`
  packages are the same files on every architecture, so their entries stay as they are.

What does depend on the architecture, the dynamic linker's cache, is left to the caller
(one `ldconfig` under QEMU). Every package must be in both roots: a difference is an error.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

DPKG = Path("var/lib/dpkg")
# Not copied from the native root: made again for the foreign architecture (ld.so.cache),
# or what only the build of the native root left behind.
# The root exported from a container also holds Docker's marker file.
SKIP = ("etc/ld.so.cache", "var/cache/apt/archives", ".dockerenv", "proc", "sys", "dev")


def paragraphs(text: str) -> list[str]:
    return [p.strip("\n") for p in text.split("\n\n") if p.strip()]


def field(paragraph: str, name: str) -> str:
    found = re.search(rf"^{name}: (.*)$", paragraph, re.M)
    return found.group(1) if found else ""


def continued(paragraph: str, name: str) -> str:
    """A field with its continuation lines (Conffiles), or ''."""
    found = re.search(rf"^{name}:.*(?:\n .*)*", paragraph, re.M)
    return found.group(0) if found else ""


def owned(root: Path) -> set[str]:
    """Every path a package's file list names, relative to the root."""
    paths: set[str] = set()
    for listing in (root / DPKG / "info").glob("*.list"):
        paths.update(line.lstrip("/") for line in listing.read_text().splitlines())
    return paths


def copy_generated(native: Path, foreign: Path) -> int:
    """Copy what no package ships from ``native`` into ``foreign``, where it has nothing."""
    shipped = owned(native)
    copied = 0
    for directory, dirs, files in os.walk(native):
        rel_dir = Path(directory).relative_to(native)
        if str(rel_dir) == ".":
            dirs[:] = [d for d in dirs if d not in SKIP]
        for name in [*dirs, *files]:
            rel = (rel_dir / name).as_posix()
            if rel.startswith(str(DPKG)) or any(rel == s or rel.startswith(s + "/") for s in SKIP):
                continue
            source, target = native / rel, foreign / rel
            if rel in shipped or target.exists() or target.is_symlink():
                continue
            if name.endswith(".pyc") and rel_dir.name == "__pycache__":
                module = rel_dir.parent / (name.split(".", 1)[0] + ".py")
                if not (foreign / module).exists():
                    continue  # a native-only module (_sysconfigdata__x86_64-linux-gnu)
            if source.is_dir() and not source.is_symlink():
                target.mkdir(parents=True)
                shutil.copystat(source, target)
                os.chown(target, source.lstat().st_uid, source.lstat().st_gid)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target, follow_symlinks=False)
                os.chown(
                    target, source.lstat().st_uid, source.lstat().st_gid, follow_symlinks=False
                )
            copied += 1
    return copied


def deb_members(deb: Path) -> tuple[str, dict[str, bytes], list[str]]:
    """A .deb's control paragraph, its other control members, and the paths it ships."""
    control = subprocess.run(["dpkg-deb", "--ctrl-tarfile", deb], capture_output=True, check=True)
    members: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(control.stdout)) as archive:
        for member in archive.getmembers():
            handle = archive.extractfile(member) if member.isfile() else None
            if handle is not None:
                members[member.name.removeprefix("./")] = handle.read()
    data = subprocess.run(["dpkg-deb", "--fsys-tarfile", deb], capture_output=True, check=True)
    paths = []
    with tarfile.open(fileobj=io.BytesIO(data.stdout)) as archive:
        for member in archive.getmembers():
            name = member.name.removeprefix(".").rstrip("/")
            paths.append(name or "/.")
    return members.pop("control").decode(), members, paths


def rewrite_database(native: Path, foreign: Path) -> int:
    """dpkg's database of ``native``, its architecture-specific entries from ``foreign``'s
    .debs; returns how many entries were rewritten."""
    target = foreign / DPKG
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(native / DPKG, target, symlinks=True)
    info = target / "info"
    status = {field(p, "Package"): p for p in paragraphs((target / "status").read_text())}
    debs = {}
    for deb in sorted((foreign / "var/cache/apt/archives").glob("*.deb")):
        name = deb.name.split("_", 1)[0]
        debs[name] = deb
    missing = sorted(set(status) ^ set(debs))
    if missing:
        raise SystemExit(f"foreign_root: not in both roots: {', '.join(missing)}")
    rewritten = 0
    for name, deb in debs.items():
        control, members, paths = deb_members(deb)
        architecture = field(control, "Architecture")
        if architecture == "all":
            continue
        old = status[name]
        qualified = f"{name}:{architecture}" if field(control, "Multi-Arch") == "same" else name
        for stale in info.iterdir():
            # PACKAGE[:ARCH].MEMBER: package names may hold dots, member names do not.
            if stale.name.rsplit(".", 1)[0].split(":", 1)[0] == name:
                stale.unlink()
        for member, content in members.items():
            (info / f"{qualified}.{member}").write_bytes(content)
            if member in ("preinst", "postinst", "prerm", "postrm", "config"):
                (info / f"{qualified}.{member}").chmod(0o755)
        (info / f"{qualified}.list").write_text("".join(f"{p}\n" for p in paths))
        lines = control.rstrip("\n").splitlines()
        # dpkg's status holds the control fields after Package and Status, then Conffiles
        # (hashes of the configuration files, the same on every architecture).
        entry = [lines[0], field_line(old, "Status"), *lines[1:]]
        listed = members.get("conffiles", b"").decode().split()
        if listed:  # as dpkg records them: the md5 of each as the package ships it
            hashes = [f" {path} {md5(foreign / path.lstrip('/'))}" for path in listed]
            entry.append("\n".join(["Conffiles:", *hashes]))
        status[name] = "\n".join(entry)
        rewritten += 1
    text = "\n\n".join(status.values()) + "\n"
    (target / "status").write_text(text)
    (target / "status-old").write_text(text)
    (target / "arch-native").write_text(architecture_of(debs) + "\n")
    return rewritten


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def libc_paths(root: Path) -> tuple[str, str]:
    """A root's multiarch triplet (x86_64-linux-gnu) and its dynamic loader's path outside
    /usr (/lib64/ld-linux-x86-64.so.2), from libc6's file list."""
    found_triplet = found_loader = ""
    for listing in (root / DPKG / "info").glob("libc6*.list"):
        for line in listing.read_text().splitlines():
            libc = re.fullmatch(r"/usr/lib/([^/]+)/libc\.so\.6", line)
            loader = re.fullmatch(r"/usr(/lib(?:64)?/ld[^/]*\.so\.\d+)", line)
            found_triplet = libc.group(1) if libc else found_triplet
            found_loader = loader.group(1) if loader else found_loader
    if not (found_triplet and found_loader):
        raise SystemExit(f"foreign_root: no libc.so.6 or ld.so in libc6's file list in {root}")
    return found_triplet, found_loader


def rewrite_diversions(native: Path, foreign: Path) -> None:
    """The native diversions, for the foreign architecture's paths. The packages' preinst
    scripts make them to guard library paths over /usr-merge: the native triplet and
    dynamic loader become the foreign ones (/lib64/ld-linux-x86-64.so.2 of amd64 is
    /lib/ld-linux-aarch64.so.1 on arm64)."""
    text = (native / DPKG / "diversions").read_text()
    for ours, theirs in zip(libc_paths(native), libc_paths(foreign), strict=True):
        text = text.replace(ours, theirs)
    (foreign / DPKG / "diversions").write_text(text)


def field_line(paragraph: str, name: str) -> str:
    return f"{name}: {field(paragraph, name)}"


def architecture_of(debs: dict[str, Path]) -> str:
    done = subprocess.run(
        ["dpkg-deb", "-f", debs["dpkg"], "Architecture"], capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def main(native: Path, foreign: Path) -> None:
    rewritten = rewrite_database(native, foreign)
    rewrite_diversions(native, foreign)
    copied = copy_generated(native, foreign)
    shutil.rmtree(foreign / "var/cache/apt/archives", ignore_errors=True)
    (foreign / "var/cache/apt/archives/partial").mkdir(parents=True)
    print(f"foreign_root: {rewritten} package entries rewritten, {copied} generated paths copied")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    main(Path(sys.argv[1]), Path(sys.argv[2]))
