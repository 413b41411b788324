"""The library folders of the nvidia-* wheels that ``tensorflow[and-cuda]`` installs, for the loader.

TensorFlow does not always find the CUDA libraries of those wheels by itself (GPU silently not
used; tensorflow/tensorflow#63362, whose workaround is to put ``site-packages/nvidia/*/lib`` on
the loader path). deploy/Dockerfile runs this at build time:

    python deploy/cuda_libs.py > /etc/ld.so.conf.d/tensorflow-nvidia.conf && ldconfig
    python deploy/cuda_libs.py --check     # every folder is in the loader cache, or the build fails

The loader configuration rather than ``ENV LD_LIBRARY_PATH``: a Dockerfile ENV cannot take a value
computed in a RUN step, and ``ld.so.conf.d`` applies to every process in the image (the Flex
Template launcher, each SDK worker process, ``docker run``) whatever environment it is given.
"""

from __future__ import annotations

import glob
import os
import site
import subprocess
import sys


def nvidia_lib_dirs(site_dirs: list[str] | None = None) -> list[str]:
    """``<site-packages>/nvidia/<component>/lib`` folders that hold shared libraries, sorted."""
    roots = site_dirs if site_dirs is not None else site.getsitepackages()
    found = set()
    for root in roots:
        for lib in glob.glob(os.path.join(root, "nvidia", "*", "lib")):
            if glob.glob(os.path.join(lib, "lib*.so*")):
                found.add(os.path.realpath(lib))
    return sorted(found)


def missing_from_cache(dirs: list[str], ldconfig_output: str) -> list[str]:
    """The folders none of whose libraries ``ldconfig -p`` lists (``name (...) => /path``)."""
    cached = {os.path.dirname(line.rsplit("=>", 1)[1].strip()) for line in ldconfig_output.splitlines() if "=>" in line}
    cached = {os.path.realpath(d) for d in cached}
    return [d for d in dirs if os.path.realpath(d) not in cached]


def driver_stubs(dirs: list[str]) -> list[str]:
    """``libcuda.so*`` files in those folders: a stub there would shadow the real driver library."""
    return sorted(f for d in dirs for f in glob.glob(os.path.join(d, "libcuda.so*")))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    dirs = nvidia_lib_dirs()
    if not dirs:
        print("cuda_libs.py: no nvidia/*/lib folders in site-packages: is tensorflow[and-cuda] installed?", file=sys.stderr)
        return 1
    if args == ["--check"]:
        out = subprocess.run(["ldconfig", "-p"], check=True, capture_output=True, text=True).stdout
        missing = missing_from_cache(dirs, out)
        stubs = driver_stubs(dirs)
        if stubs:
            print(f"cuda_libs.py: driver stubs would shadow the GPU driver: {', '.join(stubs)}", file=sys.stderr)
            return 1
        if missing:
            print(f"cuda_libs.py: not in the loader cache (run ldconfig?): {', '.join(missing)}", file=sys.stderr)
            return 1
        print(f"cuda_libs.py: {len(dirs)} CUDA library folders in the loader cache")
        return 0
    if args:
        print("usage: cuda_libs.py [--check]", file=sys.stderr)
        return 2
    print("\n".join(dirs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
