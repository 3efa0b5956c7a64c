#!/usr/bin/env python3
"""Build the training image here, with whichever engine this machine has (`make image`, `make image-gpu`).

Engine: Docker when `docker info` answers, else daemonless buildah + podman (installed with apt-get
when missing and we are root). For buildah/podman every file lives under a work folder in the repo
(default build/containers/, ignored by git): containers.conf (runtime runc: crun fails on some cgroup
layouts; nofile/nproc ulimits: the engine's defaults are refused in some sandboxes), storage.conf
(graphroot and runroot) and TMPDIR (buildah otherwise fills /var/tmp).

Base image: --base IMAGE if given; else python:3.11-slim-bookworm when a registry answers; else a
local one, made once and kept: a debootstrap of Debian bookworm (minbase with python3, venv, pip,
the Python headers and ca-certificates) from the mirror in this machine's apt sources, with this
machine's extra CA certificates trusted (pip inside the build must reach PyPI through them), imported
as localhost/model-lib-base:bookworm.

Then the library wheel is built, a minimal build context is staged (requirements.txt,
constraints.txt, docker/dist/, docker/job_init.py), and the image is built as
model-lib:<cpu|gpu>-<git short commit>, reusing cached layers (buildah --layers).

Exit status: 0 built; 77 cannot build here (no engine and no way to install one, too little disk):
the reason is printed, and the container tests skip with it; 1 a step failed.

Standard library only: it runs before any virtualenv exists.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CANNOT = 77  # the automake convention for "skipped": nothing is wrong, this machine cannot do it
LOCAL_BASE = "localhost/model-lib-base:bookworm"
REGISTRY_BASE = "docker.io/library/python:3.11-slim-bookworm"
SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "python3-pip", "python-is-python3", "ca-certificates", "libpython3.11-dev")
ENGINE_PACKAGES = ("buildah", "podman", "runc", "debootstrap", "uidmap", "fuse-overlayfs")
LOCAL_MODE_NETWORK = "sagemaker-local"  # the network the SageMaker SDK's compose file names (reused by name)
# podman network backend -> the package that gives its networks DNS (network aliases), and its binary's paths.
DNS_PLUGINS = {
    "cni": (
        "golang-github-containernetworking-plugin-dnsname",
        ("/usr/lib/cni/dnsname", "/usr/libexec/cni/dnsname", "/usr/local/lib/cni/dnsname", "/opt/cni/bin/dnsname"),
    ),
    "netavark": ("aardvark-dns", ("/usr/lib/podman/aardvark-dns", "/usr/libexec/podman/aardvark-dns")),
}
DEFAULT_MIRROR = "http://deb.debian.org/debian"
EXTRA_CA_DIR = Path("/usr/local/share/ca-certificates")
GPU_TF_PACKAGE = "tensorflow[and-cuda]"
JAX_PACKAGES = {"cpu": "jax==0.10.2", "gpu": "jax[cuda12]==0.10.2"}  # as constraints.txt pins jax
ENGINE_ENV = ("CONTAINERS_CONF", "CONTAINERS_STORAGE_CONF", "TMPDIR")  # what the engine's commands need set
BASE_ENV = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8")


class CannotBuild(Exception):
    """This machine cannot build the image (exit status 77); the message says why."""


def log(message: str) -> None:
    print(f"[build-image {time.strftime('%H:%M:%S')}] {message}", flush=True)


def run(command: Sequence[str], env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``command`` (echoed first), output passing through; raise CalledProcessError on failure."""
    log("$ " + " ".join(command))
    return subprocess.run(list(command), env=dict(env) if env is not None else None, check=True, text=True)


def quiet(command: Sequence[str], env: Mapping[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``command`` capturing its output; never raise for its exit status."""
    return subprocess.run(
        list(command), env=dict(env) if env is not None else None, capture_output=True, text=True, timeout=timeout
    )


# ---- engine ----


def docker_answers() -> bool:
    """Return whether a Docker engine answers `docker info` (a CLI without a daemon, or podman
    behind podman-docker's `docker`, does not count)."""
    if shutil.which("docker") is None:
        return False
    try:
        if "podman" in quiet(["docker", "--version"], timeout=30).stdout.lower():
            return False  # podman-docker's `docker`: podman itself, without this script's configuration
        return quiet(["docker", "info"], timeout=30).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def missing_tools(need_base: bool) -> list[str]:
    tools = ["buildah", "podman", "runc"] + (["debootstrap"] if need_base else [])
    return [tool for tool in tools if shutil.which(tool) is None]


def install_engine(allow: bool) -> None:
    """Install buildah, podman, runc and debootstrap with apt-get (as root), or say why not.

    Raises:
        CannotBuild: if they cannot be installed here.
    """
    missing = missing_tools(need_base=True)
    if not missing:
        return
    what = ", ".join(missing)
    if not allow:
        raise CannotBuild(f"no Docker engine answers and {what} missing; --no-install forbids installing them")
    if os.geteuid() != 0:
        raise CannotBuild(f"no Docker engine answers and {what} missing; installing them needs root (apt-get)")
    if shutil.which("apt-get") is None:
        raise CannotBuild(f"no Docker engine answers and {what} missing; no apt-get here to install them")
    log(f"{what} missing: installing {' '.join(ENGINE_PACKAGES)} with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        run(["apt-get", "update"], env)
        run(["apt-get", "install", "-y", "--no-install-recommends", *ENGINE_PACKAGES], env)
    except subprocess.CalledProcessError as exc:
        raise CannotBuild(f"apt-get could not install {' '.join(ENGINE_PACKAGES)} (exit {exc.returncode})") from None
    still = missing_tools(need_base=True)
    if still:
        raise CannotBuild(f"{', '.join(still)} still missing after apt-get install")


def compose_command() -> list[str] | None:
    """Return the compose command the SageMaker SDK would use (`docker compose`, else `docker-compose`), or None."""
    if shutil.which("docker") is not None and quiet(["docker", "compose", "version"]).returncode == 0:
        return ["docker", "compose"]
    return ["docker-compose"] if shutil.which("docker-compose") is not None else None


def apt_install(packages: Sequence[str], what: str) -> None:
    """Install ``packages`` with apt-get (updating the lists only if the first try fails).

    Raises:
        CannotBuild: if apt-get cannot install them.
    """
    log(f"{what}: installing {' '.join(packages)} with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        run(["apt-get", "install", "-y", "--no-install-recommends", *packages], env)
    except subprocess.CalledProcessError:
        try:
            run(["apt-get", "update"], env)
            run(["apt-get", "install", "-y", "--no-install-recommends", *packages], env)
        except subprocess.CalledProcessError as exc:
            raise CannotBuild(f"apt-get could not install {' '.join(packages)} (exit {exc.returncode})") from None


def network_backend(env: Mapping[str, str]) -> str:
    """Return podman's network backend ("cni" or "netavark"; "" if podman does not say)."""
    done = quiet(["podman", "info", "--format", "{{.Host.NetworkBackend}}"], env)
    return done.stdout.strip() if done.returncode == 0 else ""


def missing_dns_plugin(env: Mapping[str, str]) -> str | None:
    """Return the package that gives podman's network backend its DNS, if that is missing, else None."""
    package, paths = DNS_PLUGINS.get(network_backend(env), ("", ()))
    return package if package and not any(Path(path).is_file() for path in paths) else None


def network_without_dns(env: Mapping[str, str], name: str = LOCAL_MODE_NETWORK) -> bool:
    """Return whether podman has a network ``name`` that resolves no names (False if there is none)."""
    done = quiet(["podman", "network", "inspect", name], env)
    if done.returncode != 0:
        return False  # no such network: compose creates it, with DNS once the plugin is there
    inspected = json.loads(done.stdout or "[]")
    return bool(inspected) and not inspected[0].get("dns_enabled", False)


def install_local_mode_tools(allow: bool, engine: str, env: Mapping[str, str]) -> None:
    """Make sure the SDK's local mode has what it calls: a `docker` CLI and a compose command
    (apt-get: podman-docker, docker-compose; Debian's docker-compose is compose v1), and, with
    podman, network-alias DNS on the compose network LOCAL_MODE_NETWORK (the dnsname CNI plugin, or
    aardvark-dns under netavark), removing that network where it was made without DNS.

    Raises:
        CannotBuild: if they are missing and cannot be installed here.
        RuntimeError: if the network without DNS cannot be removed (a container still uses it).
    """
    packages = ([] if shutil.which("docker") else ["podman-docker"]) + ([] if compose_command() else ["docker-compose"])
    dns = missing_dns_plugin(env) if engine == "podman" else None
    packages += [dns] if dns else []
    if packages:
        if not allow or os.geteuid() != 0 or shutil.which("apt-get") is None:
            why = "--no-install" if not allow else ("not root" if os.geteuid() != 0 else "no apt-get")
            raise CannotBuild(f"SDK local mode needs {' and '.join(packages)} ({why}: not installing them)")
        apt_install(packages, "SDK local mode")
        if dns and missing_dns_plugin(env):
            raise CannotBuild(f"{dns} installed, but podman's network backend still has no DNS plugin")
    # The SDK's compose file reaches the job's container by a network alias, through the network's DNS;
    # compose reuses the network by name, so one made before the plugin never gets DNS: make it again.
    if engine == "podman" and network_without_dns(env):
        log(f"the podman network {LOCAL_MODE_NETWORK} has no DNS (made before the plugin): removing it")
        try:
            run(["podman", "network", "rm", LOCAL_MODE_NETWORK], env)
        except subprocess.CalledProcessError:
            raise RuntimeError(
                f"podman network {LOCAL_MODE_NETWORK} has no DNS and could not be removed (containers on it?)"
            ) from None


def write_podman_config(work: Path) -> dict[str, str]:
    """Write containers.conf and storage.conf under ``work``; return the environment that uses them."""
    for sub in ("storage", "run", "tmp"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    containers_conf = work / "containers.conf"
    containers_conf.write_text(
        "# Written by docker/build_image.py.\n"
        "[containers]\n"
        "# The engine's default ulimits are refused in some sandboxes.\n"
        'default_ulimits = ["nofile=20000:20000", "nproc=30000:30000"]\n'
        "[engine]\n"
        "# crun fails on some cgroup layouts; runc works on all we met.\n"
        'runtime = "runc"\n'
        'cgroup_manager = "cgroupfs"\n'
        'events_logger = "file"\n',
        encoding="utf-8",
    )
    storage_conf = work / "storage.conf"
    storage_conf.write_text(
        "# Written by docker/build_image.py: images and containers under the repo's work folder.\n"
        "[storage]\n"
        'driver = "overlay"\n'
        f'graphroot = "{work / "storage"}"\n'
        f'runroot = "{work / "run"}"\n',
        encoding="utf-8",
    )
    return {"CONTAINERS_CONF": str(containers_conf), "CONTAINERS_STORAGE_CONF": str(storage_conf), "TMPDIR": str(work / "tmp")}


# ---- base image ----


def registry_answers(timeout: float = 10) -> bool:
    """Return whether Docker Hub's registry answers as a registry (a proxy's error page does not count)."""
    try:
        with urllib.request.urlopen("https://registry-1.docker.io/v2/", timeout=timeout) as response:
            headers = response.headers
    except urllib.error.HTTPError as exc:  # a registry answers 401 to an anonymous /v2/
        headers = exc.headers
    except (OSError, ValueError):
        return False
    return headers.get("Docker-Distribution-Api-Version") is not None


def image_exists(engine: str, image: str, env: Mapping[str, str]) -> bool:
    return quiet([engine, "image", "inspect", image], env).returncode == 0


def apt_mirror() -> str:
    """Return the Debian mirror of this machine's apt sources (deb822 or one-line), else deb.debian.org."""
    deb822 = Path("/etc/apt/sources.list.d/debian.sources")
    texts = [deb822.read_text(encoding="utf-8")] if deb822.is_file() else []
    for path in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*.list"))]:
        if path.is_file():
            texts.append(path.read_text(encoding="utf-8"))
    for text in texts:
        for stanza in re.split(r"\n\s*\n", text):
            uris = re.search(r"^URIs:\s*(\S+)", stanza, re.MULTILINE)
            suites = re.search(r"^Suites:\s*(.+)$", stanza, re.MULTILINE)
            if uris and suites and SUITE in suites.group(1).split() and "security" not in uris.group(1):
                return uris.group(1)
        for line in text.splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "deb" and parts[2] == SUITE and not parts[1].startswith("["):
                return parts[1]
    return DEFAULT_MIRROR


def make_local_base(engine: str, work: Path, env: Mapping[str, str]) -> None:
    """Debootstrap bookworm, trust this machine's extra CAs in it, import it as LOCAL_BASE."""
    rootfs = work / f"rootfs-{SUITE}"
    if rootfs.exists():
        shutil.rmtree(rootfs)
    mirror = apt_mirror()
    log(f"no registry answers: making the base image {LOCAL_BASE} with debootstrap from {mirror} (once; a few minutes)")
    try:
        run(["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", SUITE, str(rootfs), mirror])
        extra = sorted(EXTRA_CA_DIR.glob("*.crt")) if EXTRA_CA_DIR.is_dir() else []
        if extra:
            log(f"trusting this machine's extra CA certificates in the base: {', '.join(p.name for p in extra)}")
            for certificate in extra:
                shutil.copy2(certificate, rootfs / EXTRA_CA_DIR.relative_to("/") / certificate.name)
            run(["chroot", str(rootfs), "update-ca-certificates"])
        for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for path in (rootfs / leftover).glob("*"):
                if path.is_file():
                    path.unlink()
        changes = [arg for pair in BASE_ENV for arg in ("--change", f"ENV {pair}")] + ["--change", 'CMD ["/bin/bash"]']
        log(f"$ tar -C {rootfs} -c . | {engine} import {' '.join(changes)} - {LOCAL_BASE}")
        tar = subprocess.Popen(["tar", "--numeric-owner", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run([engine, "import", *changes, "-", LOCAL_BASE], stdin=tar.stdout, env=dict(env), check=False)
        assert tar.stdout is not None
        tar.stdout.close()
        if tar.wait() != 0 or imported.returncode != 0:
            raise subprocess.CalledProcessError(imported.returncode or tar.returncode, f"{engine} import")
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)


def choose_base(engine: str, work: Path, env: Mapping[str, str], requested: str | None, local: bool) -> str:
    if requested:
        return requested
    if not local and registry_answers():
        log(f"a registry answers: base {REGISTRY_BASE}")
        return REGISTRY_BASE
    if image_exists(engine, LOCAL_BASE, env):
        log(f"base {LOCAL_BASE} (made earlier; `{engine} rmi {LOCAL_BASE}` to make it again)")
        return LOCAL_BASE
    if shutil.which("debootstrap") is None:
        raise CannotBuild("no registry answers and debootstrap is missing to make a local base image")
    if os.geteuid() != 0:
        raise CannotBuild("no registry answers, and making a local base image (debootstrap, chroot) needs root")
    make_local_base(engine, work, env)
    return LOCAL_BASE


# ---- build ----


def git_short(repo: Path) -> str:
    done = quiet(["git", "-C", str(repo), "rev-parse", "--short=7", "HEAD"])
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else "dev"


def free_gib(path: Path) -> float:
    path.mkdir(parents=True, exist_ok=True)
    return shutil.disk_usage(path).free / 2**30


def build_wheel(repo: Path) -> Path:
    """Build the library wheel into docker/dist/ (the folder the Dockerfile copies); return it."""
    dist = repo / "docker" / "dist"
    dist.mkdir(parents=True, exist_ok=True)
    for old in dist.glob("model_lib-*.whl"):
        old.unlink()
    # Fixed timestamps: the same sources make the same wheel, so the engine's layer cache holds.
    env = {**os.environ, "SOURCE_DATE_EPOCH": "315532800"}
    run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(dist), str(repo)], env)
    wheels = sorted(dist.glob("model_lib-*.whl"))
    if len(wheels) != 1:
        raise RuntimeError(f"expected one model_lib wheel in {dist}, found {[w.name for w in wheels]}")
    return wheels[0]


def stage_context(repo: Path, work: Path, wheel: Path) -> Path:
    """Copy what the Dockerfile COPYs into a small context folder (not the repo: data, venvs, stores)."""
    context = work / "context"
    shutil.rmtree(context, ignore_errors=True)
    (context / "docker" / "dist").mkdir(parents=True)
    for name in ("requirements.txt", "constraints.txt"):
        shutil.copy2(repo / name, context / name)
    shutil.copy2(wheel, context / "docker" / "dist" / wheel.name)
    shutil.copy2(repo / "docker" / "job_init.py", context / "docker" / "job_init.py")
    return context


def image_size(engine: str, image: str, env: Mapping[str, str]) -> int:
    done = quiet([engine, "image", "inspect", "--format", "{{.Size}}", image], env)
    return int(done.stdout.strip()) if done.returncode == 0 and done.stdout.strip().isdigit() else -1


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="docker/build_image.py",
        description="Build the model-lib training image here (docker, else buildah/podman), tagged model-lib:<cpu|gpu>-<commit>.",
        epilog="Exit status 77: this machine cannot build it (the reason is printed). See docker/README.md.",
    )
    parser.add_argument("--gpu", action="store_true", help=f"the GPU image (TF_PACKAGE={GPU_TF_PACKAGE}); default CPU")
    parser.add_argument(
        "--jax", action="store_true", help="add jax (multi-instance jobs train on the JAX backend); tag <cpu|gpu>-jax-<commit>"
    )
    parser.add_argument("--tag", help="image tag (default <cpu|gpu>[-jax]-<git short commit>)")
    parser.add_argument("--base", help="base image (default: python:3.11-slim-bookworm if a registry answers, else a local one)")
    parser.add_argument(
        "--local-base", action="store_true", help="use (or make) the local debootstrap base even if a registry answers"
    )
    parser.add_argument(
        "--engine", choices=("auto", "docker", "podman"), default="auto", help="default: docker if it answers, else podman"
    )
    parser.add_argument("--work", type=Path, default=REPO / "build" / "containers", help="work folder (default build/containers)")
    parser.add_argument("--no-install", action="store_true", help="never install buildah/podman with apt-get")
    parser.add_argument("--no-cache", action="store_true", help="build every layer again (default: reuse cached layers)")
    parser.add_argument(
        "--min-free-gib",
        type=float,
        help="free disk needed in the work folder (default 15; 30 with --gpu: measured peaks 12 and 27)",
    )
    parser.add_argument("--check", action="store_true", help="only check (and install) the engine; exit 0 or 77")
    parser.add_argument(
        "--local-mode-tools",
        action="store_true",
        help="with --check: also a docker CLI, docker compose/docker-compose and (podman) network DNS for the SDK's local mode",
    )
    parser.add_argument("--json", type=Path, help="write engine, image, environment, seconds and size to this file")
    parser.add_argument("--print-env", action="store_true", help="print the exports that point podman/buildah at the work folder")
    return parser.parse_args(argv)


def prepare_engine(args: argparse.Namespace) -> tuple[str, dict[str, str]]:
    """Return the engine ("docker" or "podman") and the environment to run it with.

    Raises:
        CannotBuild: if no engine can be had here.
    """
    if args.engine in ("auto", "docker") and docker_answers():
        log("engine: docker (a daemon answers `docker info`)")
        return "docker", dict(os.environ)
    if args.engine == "docker":
        raise CannotBuild("--engine docker, but no Docker engine answers `docker info`")
    install_engine(allow=not args.no_install)
    extra = write_podman_config(args.work.resolve())
    log(f"engine: buildah + podman, storage in {args.work} (CONTAINERS_CONF, CONTAINERS_STORAGE_CONF, TMPDIR set)")
    return "podman", {**os.environ, **extra}


def build(args: argparse.Namespace) -> dict[str, object]:
    kind = "gpu" if args.gpu else "cpu"
    work = args.work.resolve()
    free, need = free_gib(work), args.min_free_gib or (30.0 if args.gpu else 15.0)
    if free < need:
        raise CannotBuild(f"{free:.1f} GiB free in {work}; the {kind} build needs ~{need:.0f} GiB (--min-free-gib)")
    log(f"{free:.1f} GiB free in {work}")
    engine, env = prepare_engine(args)
    if args.check:
        checked: dict[str, object] = {"engine": engine, "env": {k: env[k] for k in ENGINE_ENV if k in env}}
        if args.local_mode_tools:
            install_local_mode_tools(not args.no_install, engine, env)
            checked["network"] = LOCAL_MODE_NETWORK
        return checked
    started = time.monotonic()
    base = choose_base(engine, work, env, args.base, args.local_base)
    base_seconds = time.monotonic() - started
    wheel = build_wheel(REPO)
    context = stage_context(REPO, work, wheel)
    variant = f"{kind}-jax" if args.jax else kind
    tag = f"model-lib:{args.tag or f'{variant}-{git_short(REPO)}'}"
    build_args = ["--build-arg", f"BASE={base}"] + (["--build-arg", f"TF_PACKAGE={GPU_TF_PACKAGE}"] if args.gpu else [])
    if args.jax:
        build_args += ["--build-arg", f"JAX_PACKAGE={JAX_PACKAGES[kind]}"]
    dockerfile = str(REPO / "docker" / "Dockerfile")
    cache = ["--no-cache"] if args.no_cache else ([] if engine == "docker" else ["--layers"])
    if engine == "docker":
        command = ["docker", "build", *cache, *build_args, "-f", dockerfile, "-t", tag, str(context)]
    else:
        # Docker format: the OCI format has no HEALTHCHECK (and SageMaker runs Docker images).
        command = ["buildah", "bud", "--format", "docker", *cache, *build_args, "-f", dockerfile, "-t", tag, str(context)]
    log(f"building {tag} ({kind}) on {base}")
    image_started = time.monotonic()
    run(command, env)
    seconds = time.monotonic() - image_started
    full = tag if engine == "docker" else f"localhost/{tag}"
    size = image_size(engine, full, env)
    shutil.rmtree(context, ignore_errors=True)
    log(f"built {full} in {seconds:.0f} s (base {base_seconds:.0f} s before it); size {size / 1e9:.2f} GB ({size} bytes)")
    log(f"run it as SageMaker does: {engine} run --rm --network none --hostname algo-1 -v <folder>:/opt/ml {full} train")
    return {
        "engine": engine,
        "image": full,
        "base": base,
        "kind": kind,
        "seconds": round(seconds, 1),
        "base_seconds": round(base_seconds, 1),
        "size_bytes": size,
        "env": {k: env[k] for k in ENGINE_ENV if k in env},
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.print_env:
        work = args.work.resolve()
        for name, value in write_podman_config(work).items():
            print(f"export {name}={value}")
        return 0
    try:
        result = build(args)
    except CannotBuild as exc:
        print(f"build-image: cannot build here: {exc}", file=sys.stderr)
        if args.json:
            args.json.write_text(json.dumps({"cannot": str(exc)}), encoding="utf-8")
        return CANNOT
    except (subprocess.CalledProcessError, RuntimeError, OSError) as exc:
        print(f"build-image: failed: {exc}", file=sys.stderr)
        return 1
    if args.json:
        args.json.write_text(json.dumps(result, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
