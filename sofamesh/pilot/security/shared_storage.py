"""Security storage that Pilot replicas share: the CA's root and key, the token signing key and the
revocation list as values in etcd (``EtcdStorage``) or znodes in ZooKeeper (``ZookeeperStorage``),
so every replica signs with one root and accepts the tokens any of them issued.

``create`` is the store's own create-if-absent (an etcd transaction comparing the key's
``create_revision`` with 0; a ZooKeeper ``create``), so replicas starting together end up with one
root: the first write wins and the others read it. ``update`` (the revocation list) is the store's
compare-and-set: an etcd transaction on the key's ``mod_revision`` as read, a ZooKeeper ``set``
with the node's version as read (``create`` when there was none), retried on a conflict, so two
replicas revoking at once keep both revocations. Blobs are read and written at start-up and on
a token revocation, never per request, so the calls are synchronous. Anyone who can read the store
can read the CA key: give the store the protection the key deserves (etcd auth and TLS, ZooKeeper
ACLs), as Istio asks of the Kubernetes Secret holding ``cacerts``.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
from kazoo.client import KazooClient
from kazoo.exceptions import BadVersionError, KazooException, NodeExistsError, NoNodeError
from kazoo.protocol.states import ZnodeStat

from sofamesh.core.errors import ConfigError, PluginError
from sofamesh.pilot.options import check_options
from sofamesh.pilot.security.storage import UPDATE_TRIES, Changes, DirStorage, SecretStorage, check_changes


def _check_name(name: str) -> str:
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"bad blob name {name!r}")
    return name


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class EtcdStorage:
    """Blobs as values under ``<prefix><name>`` in etcd v3 (JSON gateway)."""

    def __init__(self, endpoint: str, prefix: str = "/sofamesh/security/", timeout_s: float = 5.0) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.prefix = prefix if prefix.endswith("/") else prefix + "/"
        self._timeout = timeout_s

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            resp = httpx.post(self.endpoint + path, json=body, timeout=self._timeout)
            resp.raise_for_status()
            data: dict[str, Any] = resp.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise PluginError(f"security storage {self.describe()}: {path}: {exc}") from exc
        return data

    def _key(self, name: str) -> str:
        return _b64((self.prefix + _check_name(name)).encode())

    def read(self, name: str) -> bytes | None:
        kvs = self._post("/v3/kv/range", {"key": self._key(name)}).get("kvs", [])
        return base64.b64decode(kvs[0].get("value", "")) if kvs else None

    def write(self, name: str, data: bytes, *, private: bool = False) -> None:
        self._post("/v3/kv/put", {"key": self._key(name), "value": _b64(data)})

    def create(self, name: str, data: bytes, *, private: bool = False) -> bool:
        key = self._key(name)
        done = self._post(
            "/v3/kv/txn",
            {
                "compare": [{"key": key, "target": "CREATE", "result": "EQUAL", "create_revision": "0"}],
                "success": [{"request_put": {"key": key, "value": _b64(data)}}],
            },
        )
        return bool(done.get("succeeded", False))

    def update(self, name: str, change: Callable[[bytes | None], bytes], *, private: bool = False) -> bytes:
        key = self._key(name)
        for _ in range(UPDATE_TRIES):
            kvs = self._post("/v3/kv/range", {"key": key}).get("kvs", [])
            current = base64.b64decode(kvs[0].get("value", "")) if kvs else None
            revision = str(kvs[0].get("mod_revision", "0")) if kvs else "0"  # an absent key compares as 0
            data = change(current)
            done = self._post(
                "/v3/kv/txn",
                {
                    "compare": [{"key": key, "target": "MOD", "result": "EQUAL", "mod_revision": revision}],
                    "success": [{"request_put": {"key": key, "value": _b64(data)}}],
                },
            )
            if done.get("succeeded", False):
                return data
        raise PluginError(f"security storage {self.describe()}: {name} kept changing: {UPDATE_TRIES} tries")

    def update_many(self, names: Sequence[str], change: Changes, *, private: bool = False) -> Mapping[str, bytes]:
        """One transaction: every blob's ``mod_revision`` as read (0: absent), then the puts."""
        for _ in range(UPDATE_TRIES):
            current: dict[str, bytes | None] = {}
            compare = []
            for name in names:
                key = self._key(name)
                kvs = self._post("/v3/kv/range", {"key": key}).get("kvs", [])
                current[name] = base64.b64decode(kvs[0].get("value", "")) if kvs else None
                revision = str(kvs[0].get("mod_revision", "0")) if kvs else "0"
                compare.append({"key": key, "target": "MOD", "result": "EQUAL", "mod_revision": revision})
            written = change(current)
            check_changes(names, written)
            puts = [{"request_put": {"key": self._key(n), "value": _b64(d)}} for n, d in written.items()]
            if self._post("/v3/kv/txn", {"compare": compare, "success": puts}).get("succeeded", False):
                return written
        raise PluginError(f"security storage {self.describe()}: {', '.join(names)} kept changing: {UPDATE_TRIES} tries")

    def describe(self) -> str:
        return f"etcd {self.endpoint}{self.prefix}"


class ZookeeperStorage:
    """Blobs as znodes ``<root>/<name>`` in ZooKeeper; one client for Pilot's lifetime."""

    def __init__(self, hosts: str, root: str = "/sofamesh/security", timeout_s: float = 10.0) -> None:
        self.hosts = hosts
        self.root = "/" + root.strip("/")
        self._timeout = timeout_s
        self._zk: KazooClient | None = None

    def _client(self) -> KazooClient:
        if self._zk is None:
            zk = KazooClient(hosts=self.hosts, timeout=self._timeout, command_retry={"max_tries": 3, "max_delay": 1.0})
            try:
                zk.start(self._timeout)
            except (KazooException, OSError) as exc:
                with contextlib.suppress(Exception):
                    zk.close()
                raise PluginError(f"security storage {self.describe()}: unreachable: {exc}") from exc
            self._zk = zk
        return self._zk

    def client(self) -> KazooClient:
        """The storage's connected client (started on first use), for a watch on ``root``."""
        return self._client()

    def _path(self, name: str) -> str:
        return f"{self.root}/{_check_name(name)}"

    def read(self, name: str) -> bytes | None:
        try:
            data, _stat = self._client().get(self._path(name))
        except NoNodeError:
            return None
        except KazooException as exc:
            raise PluginError(f"security storage {self.describe()}: cannot read {name}: {exc}") from exc
        return bytes(data)

    def write(self, name: str, data: bytes, *, private: bool = False) -> None:
        zk, path = self._client(), self._path(name)
        try:
            try:
                zk.set(path, data)
            except NoNodeError:
                try:
                    zk.create(path, data, makepath=True)
                except NodeExistsError:
                    zk.set(path, data)
        except KazooException as exc:
            raise PluginError(f"security storage {self.describe()}: cannot write {name}: {exc}") from exc

    def create(self, name: str, data: bytes, *, private: bool = False) -> bool:
        try:
            self._client().create(self._path(name), data, makepath=True)
        except NodeExistsError:
            return False
        except KazooException as exc:
            raise PluginError(f"security storage {self.describe()}: cannot create {name}: {exc}") from exc
        return True

    def update(self, name: str, change: Callable[[bytes | None], bytes], *, private: bool = False) -> bytes:
        zk, path = self._client(), self._path(name)
        try:
            for _ in range(UPDATE_TRIES):
                try:
                    current, stat = zk.get(path)
                except NoNodeError:
                    data = change(None)
                    try:
                        zk.create(path, data, makepath=True)
                    except NodeExistsError:
                        continue
                    return data
                data = change(bytes(current))
                try:
                    zk.set(path, data, version=stat.version)
                except (BadVersionError, NoNodeError):
                    continue
                return data
        except KazooException as exc:
            raise PluginError(f"security storage {self.describe()}: cannot update {name}: {exc}") from exc
        raise PluginError(f"security storage {self.describe()}: {name} kept changing: {UPDATE_TRIES} tries")

    def update_many(self, names: Sequence[str], change: Changes, *, private: bool = False) -> Mapping[str, bytes]:
        """One multi-operation: each blob's version as read checked (an absent one created and
        deleted again, which fails if it exists), then the writes."""
        zk = self._client()
        try:
            zk.ensure_path(self.root)
            for _ in range(UPDATE_TRIES):
                current: dict[str, bytes | None] = {}
                stats: dict[str, ZnodeStat | None] = {}
                for name in names:
                    try:
                        data, stats[name] = zk.get(self._path(name))
                        current[name] = bytes(data)
                    except NoNodeError:
                        current[name], stats[name] = None, None
                written = change(current)
                check_changes(names, written)
                tx = zk.transaction()
                for name in names:
                    path, stat = self._path(name), stats[name]
                    if stat is None:
                        tx.create(path, written.get(name, b""))
                        if name not in written:
                            tx.delete(path)
                    elif name in written:
                        tx.set_data(path, written[name], version=stat.version)
                    else:
                        tx.check(path, stat.version)
                if not any(isinstance(r, Exception) for r in tx.commit()):
                    return written
        except KazooException as exc:
            raise PluginError(f"security storage {self.describe()}: cannot update {', '.join(names)}: {exc}") from exc
        raise PluginError(f"security storage {self.describe()}: {', '.join(names)} kept changing: {UPDATE_TRIES} tries")

    def close(self) -> None:
        if self._zk is not None:
            zk, self._zk = self._zk, None
            with contextlib.suppress(Exception):
                zk.stop()
            with contextlib.suppress(Exception):
                zk.close()

    def describe(self) -> str:
        return f"zookeeper {self.hosts}{self.root}"


def security_storage(kind: str, options: Mapping[str, Any], data_dir: Path) -> SecretStorage:
    """The storage ``ca.storage`` names: ``dir`` (default: ``<data_dir>/security``), ``etcd``
    (``endpoint``, ``prefix``) or ``zookeeper`` (``hosts``, ``root``)."""
    what = f"security storage {kind!r}"
    if kind == "dir":
        opts = check_options(options, ("path",), "ca.storage.options", what)
        return DirStorage(Path(opts.get("path", data_dir / "security")))
    if kind == "etcd":
        opts = check_options(options, ("endpoint", "prefix"), "ca.storage.options", what)
        return EtcdStorage(
            str(opts.get("endpoint", "http://127.0.0.1:2379")), str(opts.get("prefix", "/sofamesh/security/"))
        )
    if kind == "zookeeper":
        opts = check_options(options, ("hosts", "root"), "ca.storage.options", what)
        return ZookeeperStorage(str(opts.get("hosts", "127.0.0.1:2181")), str(opts.get("root", "/sofamesh/security")))
    raise ConfigError("ca.storage.type", f"unknown storage {kind!r} (known: dir, etcd, zookeeper)")


__all__ = ["EtcdStorage", "ZookeeperStorage", "security_storage"]
