"""A real Google Cloud Storage emulator for tests: ``gcp-storage-emulator`` served in-process.

The emulator's HTTP request handler and in-memory storage are served by a plain
``http.server.HTTPServer`` bound to ``127.0.0.1`` on a port the OS picks (port 0), so there is
no free-port race and nothing listens beyond loopback. While it runs, ``gs://`` URIs opened
through fsspec (gcsfs) talk to it and never to Google:

* ``STORAGE_EMULATOR_HOST=http://127.0.0.1:PORT`` — gcsfs (and google-cloud-storage) send every
  JSON-API request there;
* ``fsspec.config.conf["gs"|"gcs"] = {"token": "anon", "endpoint_url": ...}`` — no credential
  lookup (no gcloud files, no GCE metadata server); the endpoint is also part of the fsspec
  instance-cache key, so an instance made for an earlier server is never reused;
* ``NO_GCE_CHECK=true`` and ``GCE_METADATA_HOST``/``GCE_METADATA_IP`` pointed at a closed local
  port — should anything still try google-auth's metadata server, it fails at once instead of
  waiting on a network timeout;
* ``gs``/``gcs`` are registered to gcsfs's core ``GCSFileSystem``. gcsfs >= 2025 defaults to
  ``ExtendedGcsFileSystem``, which first asks the gRPC Storage Control API for each bucket's
  layout (zonal / hierarchical namespace). The emulator speaks only the JSON API, so that lookup
  would retry for 60 s on every operation before falling back to the same JSON-API code path
  used here. ``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false`` does the same for fresh processes.

Everything changed is restored by :meth:`GcsEmulator.stop`.

Usage::

    with GcsEmulator() as emu:
        bucket = emu.create_bucket("my-bucket")  # "gs://my-bucket"
        with fileio.open_file(bucket + "/x.txt", "wb") as f:
            f.write(b"...")
        assert emu.object_bytes("my-bucket", "x.txt") == b"..."
"""

from __future__ import annotations

import http.server
import importlib
import logging
import os
import sys
import threading
from functools import partial
from typing import Any

from gcp_storage_emulator.handlers import buckets as _buckets
from gcp_storage_emulator.server import RequestHandler as _EmulatorRequestHandler
from gcp_storage_emulator.storage import Storage as _Storage

HOST = "127.0.0.1"
_PROTOCOLS = ("gs", "gcs")
_DEAD_METADATA = "127.0.0.1:9"  # discard port, nothing listens: connection refused at once


class _CountingHandler(_EmulatorRequestHandler):
    """The emulator's handler, plus a log of (method, path, Range header, body bytes sent)."""

    def handle_one_request(self) -> None:
        self._recorded = False
        self.command = None
        try:
            super().handle_one_request()
        finally:
            self._record(0)

    def send_header(self, keyword: str, value: str) -> None:
        # The emulator sends Content-Length (the whole body) last, just before the body: record
        # the request now, before the client can see the response.
        if keyword.lower() == "content-length":
            self._record(int(value))
        super().send_header(keyword, value)

    def _record(self, sent: int) -> None:
        if self._recorded or not self.command:  # no command: client closed without a request
            return
        self._recorded = True
        self.server.record(self.command, self.path, self.headers.get("Range"), sent)


class _Server(http.server.HTTPServer):
    # Single-threaded on purpose: the emulator's storage has no locks. Requests queue on the
    # listening socket instead (each is answered in milliseconds).
    request_queue_size = 128

    def __init__(self, storage: _Storage):
        super().__init__((HOST, 0), partial(_CountingHandler, storage))
        self.log: list[tuple[str, str, str | None, int]] = []
        self._log_lock = threading.Lock()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # gcsfs races an object GET against a prefix listing (info) and drops the loser's
        # connection: a client hanging up is normal, anything else is printed as usual.
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return
        super().handle_error(request, client_address)

    def record(self, method: str, path: str, range_header: str | None, sent: int) -> None:
        with self._log_lock:
            self.log.append((method, path, range_header, sent))


class GcsEmulator:
    """An in-memory GCS emulator on ``127.0.0.1:<free port>``; see the module docstring."""

    def __init__(self, project_number: str = "1234"):
        self._storage = _Storage(use_memory_fs=True, project_number=project_number)
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self._saved_env: dict[str, str | None] = {}
        self._saved_conf: dict[str, Any] = {}
        self._saved_registry: dict[str, Any] = {}

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        if self._httpd is None:
            raise RuntimeError("emulator is not running")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> GcsEmulator:
        if self._httpd is not None:
            return self
        logging.getLogger("gcp_storage_emulator").setLevel(logging.CRITICAL)
        self._httpd = _Server(self._storage)  # binds now: a failure raises here, never hangs
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
            name="gcs-emulator", daemon=True,
        )
        self._thread.start()
        self._point_clients_here()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._restore_clients()
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> GcsEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- buckets and inspection --------------------------------------------------------------

    def create_bucket(self, name: str) -> str:
        """Create ``name`` (no-op when it exists); returns ``gs://name``."""
        _buckets.create_bucket(name, self._storage)
        return f"gs://{name}"

    def object_names(self, bucket: str) -> list[str]:
        """Object names in ``bucket``, read straight from the emulator's storage (not via gcsfs)."""
        files, _ = self._storage.get_file_list(bucket, None, None, None)
        return sorted(f["name"] for f in files)

    def object_bytes(self, bucket: str, name: str) -> bytes:
        return bytes(self._storage.get_file(bucket, name))

    @property
    def requests(self) -> list[tuple[str, str, str | None, int]]:
        """Served requests so far: (method, path, Range header or None, bytes sent)."""
        assert self._httpd is not None
        with self._httpd._log_lock:
            return list(self._httpd.log)

    def clear_requests(self) -> None:
        assert self._httpd is not None
        with self._httpd._log_lock:
            self._httpd.log.clear()

    # -- client configuration ----------------------------------------------------------------

    def _set_env(self, name: str, value: str) -> None:
        self._saved_env.setdefault(name, os.environ.get(name))
        os.environ[name] = value

    def _point_clients_here(self) -> None:
        import fsspec
        import fsspec.config
        import gcsfs.core

        self._set_env("STORAGE_EMULATOR_HOST", self.endpoint)
        self._set_env("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
        self._set_env("NO_GCE_CHECK", "true")
        self._set_env("GCE_METADATA_HOST", _DEAD_METADATA)
        self._set_env("GCE_METADATA_IP", _DEAD_METADATA)
        for proto in _PROTOCOLS:
            self._saved_conf[proto] = fsspec.config.conf.get(proto)
            fsspec.config.conf[proto] = {
                **(fsspec.config.conf.get(proto) or {}),
                "token": "anon",
                "project": "emulator-project",
                "endpoint_url": self.endpoint,
            }
            self._saved_registry[proto] = fsspec.registry.get(proto)
            fsspec.register_implementation(proto, gcsfs.core.GCSFileSystem, clobber=True)
        _clear_gcsfs_instances()

    def _restore_clients(self) -> None:
        import fsspec
        import fsspec.config

        registry_module = importlib.import_module("fsspec.registry")
        _clear_gcsfs_instances()
        for proto, saved in self._saved_conf.items():
            if saved is None:
                fsspec.config.conf.pop(proto, None)
            else:
                fsspec.config.conf[proto] = saved
        for proto, saved in self._saved_registry.items():
            if saved is None:
                registry_module._registry.pop(proto, None)  # back to the lazy known_implementations
            else:
                fsspec.register_implementation(proto, saved, clobber=True)
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_conf.clear()
        self._saved_registry.clear()
        self._saved_env.clear()


def _clear_gcsfs_instances() -> None:
    """Forget cached gcsfs instances (each class keeps its own cache), so the next use is fresh."""
    import gcsfs.core

    classes = {gcsfs.core.GCSFileSystem, *_subclasses(gcsfs.core.GCSFileSystem)}
    for cls in classes:
        cls.clear_instance_cache()


def _subclasses(cls: type) -> set[type]:
    out = set()
    for sub in cls.__subclasses__():
        out.add(sub)
        out |= _subclasses(sub)
    return out
