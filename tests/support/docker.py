"""A real Docker daemon for the container tests, and the images they need, made without any
registry.

The daemon is Debian's `dockerd`, started by the tests on a private socket and data root and
stopped by its pid; the host's iptables rules (dockerd rewrites them) are saved before and
restored after. Base images come from `debootstrap --variant=minbase bookworm` imported with
`docker import`: a Python base for the embedgate image, and a base with Debian's postgresql,
redis-server and nginx for look-alikes of the official images (`tests/docker/`). The embedgate
image is built the air-gapped way: `make wheelhouse`, then `docker build --network=none`.

The data root (EMBEDGATE_TEST_DOCKER_ROOT, default /var/tmp/embedgate-test-docker) keeps
images between runs on a developer's machine: a base image that exists is not made again, and
the embedgate build reuses Docker's layer cache. On a fresh CI machine everything is made once
per run. Needs root (dockerd, debootstrap); a missing tool is a failure, not a skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PYTHON_BASE = "embedgate-ci/python:3.11-bookworm"
SERVICES_BASE = "embedgate-ci/services:bookworm"
SERVICE_IMAGES = {
    "postgres": "embedgate-ci/postgres:bookworm",
    "redis": "embedgate-ci/redis:bookworm",
    "nginx": "embedgate-ci/nginx:bookworm",
}
IMAGE = "embedgate:latest"
MIRROR = os.environ.get("EMBEDGATE_DEBIAN_MIRROR", "http://deb.debian.org/debian")
PACKAGES = {
    PYTHON_BASE: ["python3", "python3-venv"],
    SERVICES_BASE: ["postgresql", "redis-server", "redis-tools", "nginx-light"],
}


@dataclass
class Docker:
    """The CLI pointed at the test daemon."""

    host: str  # unix:///…/docker.sock

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "DOCKER_HOST": self.host}

    def run(
        self, *args: str, timeout: float = 600, check: bool = True, stdin: bytes | None = None
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            ["docker", *args],
            env=self.env,
            input=stdin.decode() if stdin is not None else None,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)}: exit {done.returncode}\n{done.stderr}")
        return done

    def answers(self) -> bool:
        try:
            return self.run("version", check=False, timeout=10).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def has_image(self, tag: str) -> bool:
        return self.run("image", "inspect", tag, check=False).returncode == 0

    def image_size(self, tag: str) -> int:
        return int(self.run("image", "inspect", "--format", "{{.Size}}", tag).stdout)


def _require(*tools: str) -> None:
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        raise RuntimeError(
            f"the container tests need {missing}: run scripts/install-system-deps.sh"
        )
    if os.geteuid() != 0:
        raise RuntimeError("the container tests start dockerd and debootstrap: run them as root")


@contextmanager
def docker_daemon() -> Iterator[Docker]:
    """dockerd on a private socket; stopped (SIGTERM, then SIGKILL) and the host's iptables
    rules and bridges put back afterwards."""
    _require("dockerd", "docker", "iptables-save", "iptables-restore", "debootstrap")
    root = Path(os.environ.get("EMBEDGATE_TEST_DOCKER_ROOT", "/var/tmp/embedgate-test-docker"))
    root.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="embedgate-dockerd-", dir="/run"))  # short socket path
    _stop_stale_daemon(root / "dockerd.owner")  # a run killed before its teardown
    rules = subprocess.run(["iptables-save"], capture_output=True, check=True).stdout
    links = set(os.listdir("/sys/class/net"))
    socket = run_dir / "docker.sock"
    log = (root / "dockerd.log").open("ab")
    daemon = subprocess.Popen(
        [
            "dockerd",
            f"--data-root={root / 'data'}",
            f"--exec-root={run_dir / 'exec'}",
            f"--pidfile={run_dir / 'dockerd.pid'}",
            f"--host=unix://{socket}",
            "--storage-driver=overlay2",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    (root / "dockerd.owner").write_text(str(daemon.pid))
    docker = Docker(f"unix://{socket}")
    try:
        deadline = time.monotonic() + 60
        while not docker.answers():
            if daemon.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dockerd did not start; see {root / 'dockerd.log'}")
            time.sleep(0.5)
        yield docker
    finally:
        daemon.terminate()
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
        log.close()
        _unmount_under(run_dir, root)  # dockerd leaves its netns and data-root mounts
        subprocess.run(["iptables-restore"], input=rules, check=False)
        for link in set(os.listdir("/sys/class/net")) - links:  # docker0, br-…, veth…
            subprocess.run(["ip", "link", "delete", link], capture_output=True, check=False)
        shutil.rmtree(run_dir, ignore_errors=True)


def _stop_stale_daemon(owner: Path) -> None:
    """The dockerd an earlier, killed test run left on this data root: it would hold the
    root's lock. Its rules were that run's to restore; they are left as they are. A dockerd
    whose test process still lives belongs to a run going on now (another pytest, or another
    xdist worker): stopping it would break that run's build halfway, so this one refuses."""
    try:
        pid = int(owner.read_text())
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            is_dockerd = cmdline.read().split(b"\0")[0].endswith(b"dockerd")
        parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return
    if is_dockerd and parent not in (0, 1) and Path(f"/proc/{parent}").exists():
        raise RuntimeError(
            f"the test dockerd {pid} on {owner.parent} belongs to the live test process "
            f"{parent}: run the container tests in one worker (xdist_group) and one run at a time"
        )
    if is_dockerd:
        os.kill(pid, 15)
        deadline = time.monotonic() + 30
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.2)


def _unmount_under(*dirs: Path) -> None:
    with open("/proc/self/mounts") as mounts:
        points = [line.split()[1] for line in mounts]
    for point in sorted(points, key=len, reverse=True):  # the deepest first
        if any(point == str(d) or point.startswith(f"{d}/") for d in dirs):
            subprocess.run(["umount", "--lazy", point], capture_output=True, check=False)


def _debootstrap(docker: Docker, tag: str, packages: Sequence[str]) -> None:
    """A minimal Debian 12 with `packages`, imported as `tag` (apt's caches left out)."""
    work = Path(tempfile.mkdtemp(prefix="embedgate-rootfs-", dir="/var/tmp"))
    try:
        rootfs = work / "rootfs"
        subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(packages)}",
                "bookworm",
                str(rootfs),
                MIRROR,
            ],
            check=True,
            capture_output=True,
            timeout=900,
        )
        tar = subprocess.Popen(
            [
                "tar",
                "-C",
                str(rootfs),
                "--exclude=./proc/*",
                "--exclude=./sys/*",
                "--exclude=./dev/*",
                "--exclude=./var/cache/apt/archives/*.deb",
                "--exclude=./var/lib/apt/lists/*",
                "-c",
                ".",
            ],
            stdout=subprocess.PIPE,
        )
        imported = subprocess.run(
            ["docker", "import", "-", tag],
            stdin=tar.stdout,
            env=docker.env,
            capture_output=True,
            timeout=600,
        )
        tar.wait()
        if imported.returncode != 0 or tar.returncode != 0:
            raise RuntimeError(f"docker import {tag}: {imported.stderr.decode()}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def base_images(docker: Docker) -> None:
    """The two Debian bases (made in parallel when missing) and the service look-alikes."""
    missing = [tag for tag in PACKAGES if not docker.has_image(tag)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        for future in [pool.submit(_debootstrap, docker, t, PACKAGES[t]) for t in missing]:
            future.result()
    for target, tag in SERVICE_IMAGES.items():
        docker.run(
            "build",
            "--network=none",
            f"--build-arg=BASE={SERVICES_BASE}",
            f"--target={target}",
            "-t",
            tag,
            "-f",
            str(REPO / "tests" / "docker" / "services.Dockerfile"),
            str(REPO / "tests" / "docker"),
        )


@dataclass(frozen=True)
class Build:
    wheelhouse_s: float
    build_s: float
    size_bytes: int


def build_embedgate(docker: Docker) -> Build:
    """`make wheelhouse` for the Python base, then `docker build --network=none`: the
    air-gapped build a user runs. The wheelhouse is made again when pyproject.toml changed."""
    started = time.monotonic()
    wheelhouse = REPO / "wheelhouse"
    made = wheelhouse / "PYTHON_VERSION"
    if not made.exists() or made.stat().st_mtime < (REPO / "pyproject.toml").stat().st_mtime:
        made_now = subprocess.run(
            ["make", "--no-print-directory", "wheelhouse", f"PYTHON_IMAGE={PYTHON_BASE}"],
            cwd=REPO,
            env=docker.env,
            capture_output=True,
            text=True,
            timeout=1200,
        )
        if made_now.returncode != 0:
            raise RuntimeError(f"make wheelhouse failed:\n{made_now.stderr[-4000:]}")
    wheels_done = time.monotonic()
    docker.run(
        "build",
        "--network=none",
        f"--build-arg=PYTHON_IMAGE={PYTHON_BASE}",
        "-t",
        IMAGE,
        str(REPO),
        timeout=1200,
    )
    return Build(wheels_done - started, time.monotonic() - wheels_done, docker.image_size(IMAGE))
