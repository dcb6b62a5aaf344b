"""
imaged embedded in other Twisted programs: its service tree as a child of a host
application, and the API mounted over a custom ``IImageService`` (both from ``examples/``).
"""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest
import pytest_twisted
import treq
from twisted.application.service import IService, MultiService, Service
from twisted.internet import reactor
from zope.interface.verify import verifyObject

from imaged.api import APIConfig, IImageService, routes
from imaged.tap import Options, makeService
from imaged.testing import memory_image_service

from .conftest import Client

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
sys.path.insert(0, str(EXAMPLES))


@pytest_twisted.ensureDeferred
async def test_imaged_runs_as_a_child_of_a_host_application(tmp_path: Path) -> None:
    host = MultiService()
    Service().setServiceParent(host)  # the host's own service
    imaged = makeService(Options.from_mapping({
        "listen": "tcp:0:interface=127.0.0.1",
        "data-dir": str(tmp_path),
        "image-size-cap": 1000,
    }), reactor)
    imaged.setServiceParent(host)
    host.startService()
    try:
        listener = next(s for s in imaged if getattr(s, "description", "").startswith("tcp:"))
        port = await listener._waitingForPort
        url = f"http://127.0.0.1:{port.getHost().port}"
        created = await treq.post(f"{url}/v2/images", json={"name": "embedded"})
        assert created.code == 201
        image = json.loads(await treq.content(created))
        too_big = await treq.put(f"{url}/v2/images/{image['id']}/file", data=b"x" * 1001,
                                 headers={"Content-Type": "application/octet-stream"})
        assert too_big.code == 413  # the mapping's cap, not the default
        await treq.content(too_big)
    finally:
        await host.stopService()
    assert (tmp_path / "imaged.sqlite").exists()


def test_the_embedding_example_builds_its_tree(tmp_path: Path) -> None:
    namespace = runpy.run_path(str(EXAMPLES / "embedded.py"))
    application = namespace["application"]
    host = IService(application)
    children = list(next(iter(host)))  # the host MultiService: a heartbeat and imaged
    assert len(children) == 2


def test_bad_settings_name_the_key() -> None:
    from twisted.python.usage import UsageError

    with pytest.raises(UsageError, match="settings: unknown option 'port'"):
        Options.from_mapping({"port": 9292})


def test_routes_over_a_custom_image_service() -> None:
    from readonly_mirror import ReadOnlyImages, mirror_resource  # type: ignore[import-not-found]

    source = memory_image_service()
    writer = Client(routes(APIConfig(image_service=source)).resource())
    image = writer.create(name="original", visibility="public")
    assert verifyObject(IImageService, ReadOnlyImages(source))

    mirror = Client(mirror_resource(source))
    shown = mirror.get(f"/v2/images/{image['id']}")
    assert shown.code == 200 and shown.json()["name"] == "original"
    assert [i["id"] for i in mirror.get("/v2/images").json()["images"]] == [image["id"]]
    refused = mirror.post("/v2/images", json={"name": "new"},
                          headers={"Accept": "application/json"})
    assert refused.code == 403 and "read-only mirror" in refused.body.decode()
    assert mirror.delete(f"/v2/images/{image['id']}").code == 403
    assert writer.get(f"/v2/images/{image['id']}").code == 200
