"""Pytest fixtures: one real Girder 5 server per test session, a separate collection per test.

The server runs ``tests.girder.server`` (mongomock in place of MongoDB) in a subprocess on a free
loopback port. Tests mount as a non-admin user (``alice``) with an API key passed through an
environment variable, as a deployment would.
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import girder_client
import pytest

from tests.mounting import wait_for

KEY_ENV = "WTFS_TEST_GIRDER_KEY"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Girder:
    url: str
    admin: girder_client.GirderClient
    alice: girder_client.GirderClient
    bob: girder_client.GirderClient
    alice_key: str
    assets: Path
    private_storage: Path

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1].split("/")[0])


@contextlib.contextmanager
def running_girder(root: Path) -> Iterator[Girder]:
    """Girder 5 (+ the WholeTale plugin when installed) on a free loopback port, seeded with an
    admin, a filesystem assetstore, the plugin's storage settings, and users alice and bobby."""
    port = free_port()
    env = {**os.environ, "GIRDER_MONGO_URI": f"mongodb://127.0.0.1/wtfs_{uuid.uuid4().hex[:8]}"}
    log = open(root / "girder.log", "w")  # noqa: SIM115 - lives as long as the server
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.girder.server", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=Path(__file__).resolve().parents[2],
    )
    url = f"http://127.0.0.1:{port}/api/v1"
    try:

        def up() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    return True
            except OSError:
                return False

        wait_for(up, timeout=60, what="Girder to listen")
        admin = girder_client.GirderClient(apiUrl=url)
        admin.post("user", parameters=_user("admin", admin=True))
        admin.authenticate("admin", "password1")
        admin.post("assetstore", parameters={"name": "fs", "type": 0, "root": str(root / "assets")})
        for key in (
            "wholetale.homes_root",
            "wholetale.workspaces_root",
            "wholetale.versions_root",
            "wholetale.runs_root",
            "dm.private_storage_path",
        ):
            directory = root / key.split(".", 1)[1]
            directory.mkdir()
            admin.put("system/setting", parameters={"key": key, "value": str(directory)})
        clients = {}
        for login in ("alice", "bobby"):
            admin.post("user", parameters=_user(login))
            client = girder_client.GirderClient(apiUrl=url)
            client.authenticate(login, "password1")
            clients[login] = client
        key = clients["alice"].post("api_key", parameters={"name": "wtfs"})["key"]
        os.environ[KEY_ENV] = key
        yield Girder(
            url, admin, clients["alice"], clients["bobby"], key, root / "assets", root / "private_storage_path"
        )
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


@pytest.fixture(scope="session")
def girder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Girder]:
    with running_girder(tmp_path_factory.mktemp("girder")) as server:
        yield server


def _user(login: str, admin: bool = False) -> dict[str, Any]:
    return {
        "login": login,
        "email": f"{login}@example.org",
        "firstName": login,
        "lastName": "test",
        "password": "password1",
        "admin": str(admin).lower(),
    }


@dataclass
class Tree:
    """What a test seeded, by role: ids and the bytes each file should have."""

    collection: str
    ids: dict[str, Any] = field(default_factory=dict)
    content: dict[str, bytes] = field(default_factory=dict)


def upload(gc: girder_client.GirderClient, item_id: str, name: str, data: bytes) -> dict[str, Any]:
    result: dict[str, Any] = gc.uploadFile(item_id, io.BytesIO(data), name, len(data))
    return result


def seed(g: Girder, http_base: str, local_file: Path, remote: bytes) -> Tree:
    """A public collection with nested folders, >50 items, multi-file, empty, phys_path and linkUrl
    items, duplicate names, and a private item of another user."""
    gc = g.admin
    tree = Tree(gc.createCollection(f"c-{uuid.uuid4().hex[:8]}", public=True)["_id"])
    top = gc.createFolder(tree.collection, "top", parentType="collection", public=True)
    tree.ids["top"] = top["_id"]
    nested = gc.createFolder(top["_id"], "nested")
    deeper = gc.createFolder(nested["_id"], "deeper")
    deep = gc.createItem(deeper["_id"], "deep.txt")
    tree.content["top/nested/deeper/deep.txt"] = b"deep down\n"
    upload(gc, deep["_id"], "deep.txt", b"deep down\n")
    many = gc.createFolder(top["_id"], "many")
    for i in range(60):
        item = gc.createItem(many["_id"], f"f{i:02d}.txt")
        upload(gc, item["_id"], f"f{i:02d}.txt", f"file {i}\n".encode())
    multi = gc.createItem(top["_id"], "multi")
    for name in ("a.txt", "b.txt"):
        upload(gc, multi["_id"], name, name.encode() * 100)
        tree.content[f"top/multi/{name}"] = name.encode() * 100
    gc.createItem(top["_id"], "empty")
    tree.content["top/empty"] = b""
    big = os.urandom(3_000_000)
    big_item = gc.createItem(top["_id"], "big.bin")
    upload(gc, big_item["_id"], "big.bin", big)
    tree.ids["big"] = big_item["_id"]
    tree.content["top/big.bin"] = big
    phys_http = gc.createItem(top["_id"], "phys-http.bin")
    gc.addMetadataToItem(phys_http["_id"], {"phys_path": f"{http_base}/phys.bin", "size": len(remote)})
    tree.content["top/phys-http.bin"] = remote
    phys_local = gc.createItem(top["_id"], "phys-local.bin")
    gc.addMetadataToItem(phys_local["_id"], {"phys_path": str(local_file), "size": local_file.stat().st_size})
    tree.content["top/phys-local.bin"] = local_file.read_bytes()
    link = gc.createItem(top["_id"], "link.bin")
    gc.post("file", parameters={"parentType": "item", "parentId": link["_id"], "name": "link.bin",
                                 "linkUrl": f"{http_base}/phys.bin", "size": len(remote)})  # fmt: skip
    tree.content["top/link.bin"] = remote
    # Girder keeps folder and item names unique among siblings, but not the files of an item
    twins = gc.createItem(top["_id"], "twins")
    tree.ids["twins"] = [upload(gc, twins["_id"], "x.txt", f"twin {i}".encode())["_id"] for i in range(2)]
    bob_home = g.bob.createFolder(
        g.bob.get("user/me")["_id"], f"private-{uuid.uuid4().hex[:6]}", parentType="user", public=False
    )
    private = g.bob.createItem(bob_home["_id"], "secret.txt")
    upload(g.bob, private["_id"], "secret.txt", b"bob only")
    tree.ids["private"] = private["_id"]
    single = gc.createItem(nested["_id"], "single.csv")
    upload(gc, single["_id"], "single.csv", b"a,b\n1,2\n")
    tree.ids["single"] = single["_id"]
    tree.content["single"] = b"a,b\n1,2\n"
    return tree


class DroppingProxy:
    """A TCP proxy in front of Girder that can drop one download midway and be switched off,
    so tests can cut the connection or make Girder unreachable without losing its in-memory DB."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = int(self.sock.getsockname()[1])
        self.drop_after: int | None = None  # bytes of one response before cutting it
        self.sent_to_client = 0
        self.online = True
        self.silent = False  # connections accepted, requests swallowed: a stopped (SIGSTOP) server
        self.held: list[socket.socket] = []
        self.connections: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def set_online(self, online: bool) -> None:
        """Offline: refuse new connections and cut the open ones, as a stopped server would."""
        self.online = online
        if not online:
            for conn in self.connections:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
            self.connections.clear()

    def set_silent(self, silent: bool) -> None:
        """Silent: accept connections and take requests, answer none (a stopped server's kernel
        still accepts); back: the connections held meanwhile are closed."""
        self.silent = silent
        if not silent:
            for conn in self.held:
                conn.close()
            self.held.clear()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            if self.silent:
                self.held.append(client)
                continue
            if not self.online:
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            self.connections += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, True), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, to_client: bool) -> None:
        sent = 0
        try:
            while data := src.recv(65536):
                if self.silent and not to_client:
                    continue  # a request swallowed: never answered
                if to_client and self.drop_after is not None and sent + len(data) > self.drop_after:
                    dst.sendall(data[: self.drop_after - sent])
                    self.sent_to_client += self.drop_after - sent
                    self.drop_after = None
                    break
                dst.sendall(data)
                sent += len(data)
                if to_client:
                    self.sent_to_client += len(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def close(self) -> None:
        self.sock.close()
