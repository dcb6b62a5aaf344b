"""
Streamed uploads over a real loopback socket with treq: while the store is slow the client is
made to wait, and the server holds a bounded amount of the body.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from typing import Any

import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.task import deferLater

from imaged.api import APIConfig, ImageService, routes
from imaged.store.sql import SQLMetadataStore
from imaged.streams import CHUNK, HIGH_WATER
from imaged.web.site import make_site
from imaged.web.streaming import BUFFER_LIMIT

from .test_streaming_wire import OWNER, HeldBlobStore

SIZE = 96 * 1024 * 1024


def sleep(seconds: float) -> Deferred[None]:
    return deferLater(reactor, seconds, lambda: None)


@pytest_twisted.ensureDeferred
async def test_slow_store_makes_the_client_wait_with_bounded_server_memory() -> None:
    blobs = HeldBlobStore()
    service = ImageService(SQLMetadataStore.in_memory(), blobs)
    api = routes(APIConfig(image_service=service))
    site = make_site(api.resource(), body_router=api.bodies)
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(site)
    base = f"http://127.0.0.1:{port.getHost().port}"
    try:
        created = await treq.post(
            f"{base}/v2/images",
            data=json.dumps({"disk_format": "raw", "container_format": "bare"}).encode(),
            headers=OWNER,
        )
        image_id = json.loads(await created.content())["id"]
        data = os.urandom(1024 * 1024) * (SIZE // (1024 * 1024))
        upload = treq.put(
            f"{base}/v2/images/{image_id}/file",
            data=io.BytesIO(data),
            headers={**OWNER, "Content-Type": "application/octet-stream"},
        )
        finished: list[Any] = []
        upload.addBoth(lambda result: finished.append(result) or result)
        # The client pushes as hard as it can while the store accepts nothing, until the
        # server has paused reading its socket (a condition, not a time, is waited for).
        deadline = reactor.seconds() + 30
        while not any(getattr(r.body_stream, "_socket_paused", False)
                      for r in api.bodies.in_progress):
            assert reactor.seconds() < deadline, "the socket was never paused"
            await sleep(0.01)
        in_store = len(blobs.pending) * CHUNK
        assert not finished  # the client is still sending: it was made to wait
        assert in_store <= HIGH_WATER + CHUNK
        # What the server holds of the body: chunks handed to the store plus the stream's
        # small buffer; far less than what the client has tried to send.
        assert blobs.landed == 0
        assert in_store + BUFFER_LIMIT + CHUNK < SIZE // 4
        blobs.hold = False
        while not finished:
            blobs.release()
            await sleep(0.01)
        blobs.release()
        response = await upload
        assert response.code == 204
        shown = await (await treq.get(f"{base}/v2/images/{image_id}", headers=OWNER)).json()
        assert shown["status"] == "active" and shown["size"] == SIZE
        assert shown["checksum"] == hashlib.md5(data).hexdigest()
        assert shown["os_hash_value"] == hashlib.sha512(data).hexdigest()
    finally:
        await port.stopListening()
