"""Sandboxed ``bash`` and ``python`` for the agent: the reference's Docker sandbox, without Docker.

The reference gives its agent a shell and a Python interpreter in a container
without network. The opt-in ``+sandbox`` toolset offers the same two tools, run
under **bubblewrap** (``bwrap``, the distribution's ``bubblewrap`` package):

* new user, mount, PID, IPC, UTS, cgroup and network namespaces: no network (not
  even a route out), no view of the host's processes, all capabilities dropped;
* the system's ``/usr`` read-only (``/usr/local`` and the ctirealm package masked),
  a private ``/tmp``, and a throwaway working folder as ``/workspace`` that lives
  as long as the case's run, so files persist between calls as in a container;
  nothing of the repository, the telemetry store, labels, cases or rules is mounted;
* limits per call: wall-clock time (the whole process tree is killed), CPU
  seconds, address space and file size; output is cut to a bounded length.

Why bubblewrap: it is unprivileged (user namespaces), small, packaged by Debian,
Ubuntu, Fedora and Arch, and is what Flatpak isolates applications with. Docker
needs a daemon and root, firejail is a setuid program with a larger surface, and
nsjail is not packaged by Debian stable. Where ``bwrap`` is missing or the kernel
refuses namespaces, the tools answer "tool unavailable" with the reason, and the
rest of the run goes on.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import tempfile
import weakref
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

#: Per-call limits (the reference's container has similar ones: minutes, not hours).
TIME_LIMIT = 60.0
CPU_SECONDS = 60
MEMORY_BYTES = 1024 * 1024 * 1024
FILE_BYTES = 64 * 1024 * 1024
#: Output returned to the agent (stdout and stderr together), in characters.
OUTPUT_LIMIT = 16_000

INSTALL_HINT = "install the distribution's bubblewrap package (e.g. apt install bubblewrap)"


@dataclass(frozen=True)
class Limits:
    """What one call may use."""

    time: float = TIME_LIMIT
    cpu_seconds: int = CPU_SECONDS
    memory_bytes: int = MEMORY_BYTES
    file_bytes: int = FILE_BYTES
    output: int = OUTPUT_LIMIT


class SandboxUnavailable(RuntimeError):
    """bubblewrap is missing or cannot isolate here; the message says why and what to do."""


def _masked() -> list[str]:
    """Folders under ``/usr`` the sandbox must not show: local installs and this package."""
    masks = ["/usr/local"]
    package = Path(__file__).resolve().parents[1]
    if str(package).startswith("/usr/"):
        masks.append(str(package))
    return masks


def _command(workdir: Path, argv: list[str]) -> list[str]:
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise SandboxUnavailable(f"bubblewrap (bwrap) is not installed: {INSTALL_HINT}")
    command = [bwrap, "--ro-bind", "/usr", "/usr"]
    for masked in _masked():
        if Path(masked).is_dir():
            command += ["--tmpfs", masked]
    # Merged-/usr systems link /bin, /lib... into /usr; others have real folders.
    for top in ("bin", "sbin", "lib", "lib32", "lib64"):
        path = Path("/") / top
        if path.is_symlink():
            command += ["--symlink", os.readlink(path), f"/{top}"]
        elif path.is_dir():
            command += ["--ro-bind", str(path), f"/{top}"]
    command += [
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--tmpfs",
        "/tmp",
        "--bind",
        str(workdir),
        "/workspace",
        "--chdir",
        "/workspace",
        "--unshare-all",
        "--unshare-user",
        "--uid",
        "1000",
        "--gid",
        "1000",
        "--cap-drop",
        "ALL",
        "--die-with-parent",
        "--new-session",
        "--hostname",
        "sandbox",
        "--clearenv",
        "--setenv",
        "PATH",
        "/usr/bin:/bin",
        "--setenv",
        "HOME",
        "/workspace",
        "--setenv",
        "LANG",
        "C.UTF-8",
        "--setenv",
        "PYTHONDONTWRITEBYTECODE",
        "1",
        "--",
        *argv,
    ]
    return command


@lru_cache(maxsize=1)
def unavailable_reason() -> str | None:
    """None when the sandbox works on this machine, else why not (checked once per process)."""
    probe = Path(tempfile.mkdtemp(prefix="ctirealm-sandbox-probe-"))
    try:
        done = subprocess.run(
            _command(probe, ["/bin/sh", "-c", "exit 0"]),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except SandboxUnavailable as exc:
        return str(exc)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bubblewrap could not start: {exc}"
    finally:
        shutil.rmtree(probe, ignore_errors=True)
    if done.returncode != 0:
        return (
            "bubblewrap cannot create the sandbox's namespaces here "
            f"({done.stderr.strip()[:300] or f'exit {done.returncode}'}); enable unprivileged "
            "user namespaces or run where they are allowed"
        )
    return None


class Sandbox:
    """One case's sandbox: a working folder kept across calls, removed with the object."""

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self.workdir = Path(tempfile.mkdtemp(prefix="ctirealm-sandbox-"))
        self._cleanup = weakref.finalize(self, shutil.rmtree, str(self.workdir), True)

    def close(self) -> None:
        """Remove the working folder now."""
        self._cleanup()

    def bash(self, cmd: str) -> str:
        """Run *cmd* with bash; the combined output and, when not 0, the exit status."""
        return self._run(["/bin/bash", "--noprofile", "--norc", "-s"], cmd)

    def python(self, code: str) -> str:
        """Run *code* with the system's Python 3; the combined output and the exit status."""
        return self._run(["/usr/bin/python3", "-I", "-"], code)

    def _run(self, argv: list[str], stdin: str) -> str:
        reason = unavailable_reason()
        if reason:
            raise SandboxUnavailable(f"tool unavailable: {reason}")
        limits = self.limits

        def limit() -> None:  # in the child, before bwrap starts: inherited by everything in it
            # SIGXCPU at the soft limit (a message the agent understands), SIGKILL a second on.
            resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 1))
            resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
            resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_bytes, limits.file_bytes))
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

        process = subprocess.Popen(
            _command(self.workdir, argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            preexec_fn=limit,
            start_new_session=True,
        )
        try:
            out, _ = process.communicate(stdin.encode("utf-8", "replace"), timeout=limits.time)
        except subprocess.TimeoutExpired:
            _kill(process)
            out, _ = process.communicate()
            return _cut(out, limits.output) + (
                f"\n[stopped: the call exceeded the time limit of {limits.time:g} s]"
            )
        text = _cut(out, limits.output)
        if process.returncode == 0:
            return text
        # bwrap reports a command killed by signal N as status 128 + N, as shells do.
        signum = -process.returncode if process.returncode < 0 else process.returncode - 128
        if signum in signal.valid_signals():
            name = signal.Signals(signum).name
            why = (
                " (CPU time limit)"
                if name == "SIGXCPU"
                else " (file size limit)"
                if name == "SIGXFSZ"
                else ""
            )
            return f"{text}\n[killed by {name}{why}]"
        return f"{text}\n[exit status {process.returncode}]"


def _kill(process: subprocess.Popen[bytes]) -> None:
    """The whole process tree: bwrap leads its own session, and its PID namespace dies with it."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _cut(data: bytes, limit: int) -> str:
    text = data.decode("utf-8", "replace")
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n[output cut at {limit} of {len(text)} characters]"


__all__ = ["Limits", "Sandbox", "SandboxUnavailable", "unavailable_reason"]
