"""The ``docker run`` command line of a process declared with ``<proc>.docker=<image>``.

``request.docker`` holds ``image``, ``sudo`` (BioMAJ 3's ``docker.sudo``, decided by the
manager), ``workdir`` (the release directory; default ``request.cwd``) and ``volumes``, a list
of ``[host, container]`` or ``[host, container, mode]`` (``ro`` for dependency banks). The
result is::

    [sudo] docker run --rm --user <uid>:<gid> -w <workdir> -v host:container[:mode] ...
        -e K=V ... <image> <exe> <args...>          # shell_expand: <image> /bin/sh -c "<exe> <args>"

Differences with BioMAJ 3's ``DockerProcess``, which writes a temporary script doing
``docker pull`` then ``docker run ... bash -c "groupadd; useradd; <cmd>; chown -R uid:gid"``:

* no script and no shell on the host: the command list is executed directly;
* the container runs as the biomaj user (``--user``) instead of creating that user inside it
  and chowning the release directory afterwards, so files written to the mounted directories
  belong to the biomaj user even when the process fails half way, and images without
  ``useradd`` or ``bash`` work;
* no explicit ``docker pull``: ``docker run`` pulls an image that is missing; pin image tags
  to get a new version;
* PATH and HOME are not passed (the image has its own), every other variable is (``-e K=V``).

``docker`` and ``sudo`` are looked up on the PATH of ``request.env``, as the process itself
would be.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

__all__ = ["docker_command", "find_program"]

#: variables the container keeps its own values of
NOT_PASSED = frozenset({"PATH", "HOME"})


def find_program(name: str, env: dict[str, str], cwd: str = "") -> str | None:
    """Where ``exec`` would find ``name`` with the PATH of ``env`` in ``cwd``, or None.

    A name with a ``/`` is taken relative to ``cwd``; relative PATH entries too (the child
    runs in ``cwd``). Without PATH in ``env``, the system default path is searched.
    """
    base = cwd or os.getcwd()
    if "/" in name:
        path = os.path.join(base, name)
        return path if os.path.isfile(path) and os.access(path, os.X_OK) else None
    search = env.get("PATH", os.defpath)
    dirs = [os.path.join(base, entry) for entry in search.split(os.pathsep)]
    return shutil.which(name, path=os.pathsep.join(dirs))


def _volume(spec: Any) -> str:
    if not isinstance(spec, (list, tuple)) or len(spec) not in (2, 3) or not all(isinstance(s, str) for s in spec):
        raise ValueError(f"docker volume must be [host, container] or [host, container, mode], got {spec!r}")
    host, container, *mode = spec
    if not host or not container:
        raise ValueError(f"docker volume needs a host and a container path, got {spec!r}")
    return f"{host}:{container}" + (f":{mode[0]}" if mode and mode[0] else "")


def docker_command(request: Any) -> list[str]:
    """The argv running ``request`` (a ProcessRequest with ``docker`` set) in a container.

    Raises ValueError when ``request.docker`` is malformed.
    """
    docker = request.docker
    if not isinstance(docker, dict):
        raise ValueError("docker must be a mapping with at least an image")
    image = docker.get("image")
    if not image or not isinstance(image, str):
        raise ValueError("docker: no image given")
    env = request.env
    workdir = docker.get("workdir") or request.cwd
    argv: list[str] = []
    if docker.get("sudo"):
        argv.append(find_program("sudo", env, request.cwd) or "sudo")
    argv += [find_program("docker", env, request.cwd) or "docker", "run", "--rm", "--user", f"{os.getuid()}:{os.getgid()}"]
    if workdir:
        argv += ["-w", workdir]
    for spec in docker.get("volumes") or []:
        argv += ["-v", _volume(spec)]
    for key, value in env.items():
        if key not in NOT_PASSED:
            argv += ["-e", f"{key}={value}"]
    argv.append(image)
    if request.shell_expand:
        argv += ["/bin/sh", "-c", " ".join([request.exe, *request.args])]
    else:
        argv += [request.exe, *request.args]
    return argv
