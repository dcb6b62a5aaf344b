"""
The metadata definitions catalog (Glance's metadefs) driven by unmodified OpenStack clients
against imaged started by twistd (``--auth none``): ``imaged-manage metadefs load`` of Glance's
shipped definitions into the running daemon's database, the ``glance md-*`` commands, the
glanceclient library, openstacksdk's ``metadef_*`` calls and ``openstack image metadef ...``
with ``-f json``.  Expected answers are Glance 33's, its error messages among them.  Each
``glance``/``openstack`` command is the venv's script run in a process of its own, forked from
a launcher that has imported the clients once (``_launcher``): a hundred commands in seconds.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from imaged.metadefs.files import SHIPPED
from imaged.testing import TwistdDaemon

BIN = os.path.dirname(sys.executable)
GLANCE = os.path.join(BIN, "glance")
OPENSTACK = os.path.join(BIN, "openstack")
MANAGE = os.path.join(BIN, "imaged-manage")

pytestmark = [
    pytest.mark.servers,
    pytest.mark.skipif(
        not (os.path.exists(GLANCE) and os.path.exists(OPENSTACK)),
        reason="the [clients] extra is not installed",
    ),
]

PROJECT = "demo-project"
#: Every namespace a test here makes starts so; the rest of the catalog is Glance's.
OURS = "Test::"


def _definitions() -> dict[str, dict[str, Any]]:
    found = {}
    for path in sorted(Path(SHIPPED).glob("*.json")):
        document = json.loads(path.read_text("utf-8"))
        found[document["namespace"]] = document
    return found


#: Glance's shipped definition files, by namespace.
DEFINITIONS = _definitions()


def _associated(resource_type: str) -> set[str]:
    return {name for name, document in DEFINITIONS.items()
            if any(a["name"] == resource_type
                   for a in document.get("resource_type_associations", ()))}


def _launcher() -> None:
    """
    The client launcher (run as ``python -c``): it imports what the clients import, then for
    each ``[script, args]`` line on stdin forks a child that runs ``script`` (the venv's
    ``glance`` or ``openstack``) as ``__main__`` with ``args``, stdin from /dev/null and its
    own stdout and stderr, and answers ``[exit code, stdout, stderr]`` as a JSON line.
    """
    import importlib
    import json
    import os
    import runpy
    import signal
    import sys
    import tempfile
    import traceback
    from importlib.metadata import distributions

    for module in ("glanceclient.shell", "glanceclient.v2.client", "glanceclient.v2.shell",
                   "openstackclient.shell", "openstack.connection"):
        importlib.import_module(module)
    for entry in (e for dist in distributions() for e in dist.entry_points):
        if entry.group.startswith(("openstack.", "keystoneauth1.plugin")):
            try:  # the plugins the openstack CLI loads on every run
                importlib.import_module(entry.module)
            except Exception:
                pass
    try:  # and the distribution of every module, which cliff reads for every parser
        importlib.import_module("cliff.command")._get_distributions_by_modules()
    except Exception:
        pass
    replies = os.fdopen(os.dup(1), "w")
    for line in sys.stdin:
        script, args = json.loads(line)
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            sys.stdout.flush()
            sys.stderr.flush()
            child = os.fork()
            if child == 0:
                signal.alarm(120)
                os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
                os.dup2(out.fileno(), 1)
                os.dup2(err.fileno(), 2)
                sys.argv = [script, *args]
                code = 0
                try:
                    runpy.run_path(script, run_name="__main__")
                except SystemExit as e:  # as the interpreter exits on it
                    if isinstance(e.code, str):
                        print(e.code, file=sys.stderr)
                        code = 1
                    else:
                        code = e.code or 0
                except BaseException:
                    traceback.print_exc()
                    code = 1
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
            _, status = os.waitpid(child, 0)
            out.seek(0)
            err.seek(0)
            answer = [os.waitstatus_to_exitcode(status), out.read().decode(), err.read().decode()]
        replies.write(json.dumps(answer) + "\n")
        replies.flush()


class Deployment:
    """imaged under twistd, its data directory, and the client launcher pointed at it."""

    def __init__(self, daemon: TwistdDaemon, data_dir: str) -> None:
        self.daemon = daemon
        self.url = daemon.url
        self.data_dir = data_dir
        self._log = open(os.path.join(daemon.workdir, "launcher.log"), "w")
        self._launcher = subprocess.Popen(
            [sys.executable, "-c", inspect.getsource(_launcher) + "\n_launcher()\n"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True,
            env=_env(), cwd=daemon.workdir,
        )

    def client(self, script: str, *args: str, check: bool = True
               ) -> subprocess.CompletedProcess[str]:
        """Run the client ``script`` with ``args``, as ``run`` runs a command."""
        assert self._launcher.stdin is not None and self._launcher.stdout is not None
        self._launcher.stdin.write(json.dumps([script, args]) + "\n")
        self._launcher.stdin.flush()
        answer = self._launcher.stdout.readline()
        if not answer:
            raise RuntimeError("the client launcher died: see launcher.log")
        code, out, err = json.loads(answer)
        if check and code != 0:
            raise AssertionError(f"{[script, *args]} failed:\n{out}\n{err}")
        return subprocess.CompletedProcess([script, *args], code, out, err)

    def close(self) -> None:
        assert self._launcher.stdin is not None
        self._launcher.stdin.close()
        self._launcher.wait(timeout=30)
        self._log.close()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    workdir = tmp_path_factory.mktemp("metadef-clients")
    data_dir = str(workdir / "imaged-data")
    started = TwistdDaemon(str(workdir), args=[
        "--auth", "none", "--default-project", PROJECT, "--data-dir", data_dir,
    ]).start()
    deployment = Deployment(started, data_dir)
    yield deployment
    deployment.close()
    started.stop()


@pytest.fixture(scope="module")
def loaded(daemon: Deployment) -> str:
    """What ``imaged-manage metadefs load`` printed, loading into the running daemon's
    embedded SQLite database (WAL: the daemon keeps serving while another process writes)."""
    return manage(daemon, "metadefs", "load").stdout


@pytest.fixture(scope="module")
def library(daemon: Deployment) -> Any:
    """glanceclient as a library: quick set-up and clean-up around the commands under test."""
    from glanceclient import Client

    return Client(endpoint=daemon.url + "/v2", token="no-keystone")


def _env() -> dict[str, str]:
    # No OS_* from the machine may steer the clients.
    return {k: v for k, v in os.environ.items() if not k.startswith("OS_")}


def run(*command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, capture_output=True, text=True, env=_env(),
                            stdin=subprocess.DEVNULL, timeout=120, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"{command} failed:\n{result.stdout}\n{result.stderr}")
    return result


def manage(daemon: Deployment, *args: str) -> subprocess.CompletedProcess[str]:
    return run(MANAGE, "--data-dir", daemon.data_dir, *args)


def refused(result: subprocess.CompletedProcess[str], message: str) -> None:
    """A command that failed cleanly, saying ``message``."""
    assert result.returncode != 0, result.stdout
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def drop(library: Any, namespace: str) -> None:
    """Remove a namespace a test made, protected or not, if it is there."""
    from glanceclient import exc

    try:
        library.metadefs_namespace.update(namespace, protected=False)
        library.metadefs_namespace.delete(namespace)
    except exc.HTTPNotFound:
        pass


def make(library: Any, namespace: str, **attributes: Any) -> None:
    drop(library, namespace)
    library.metadefs_namespace.create(namespace=namespace, visibility="public", **attributes)


# -- the glance CLI --------------------------------------------------------------------------


def glance(daemon: Deployment, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return daemon.client(GLANCE, "--os-image-url", daemon.url, "--os-auth-token", "no-keystone",
                         *args, check=check)


def table(out: str) -> list[dict[str, str]]:
    """The rows of a table the glance CLI printed, by its header; a row whose first cell is
    empty continues the one above (a long value wrapped)."""
    rows: list[list[str]] = []
    for line in out.splitlines():
        if not line.startswith("|"):
            continue
        cells = [cell.strip() for cell in line.strip()[1:-1].split("|")]
        if len(rows) > 1 and not cells[0]:
            rows[-1] = [f"{old} {new}".strip() for old, new in zip(rows[-1], cells, strict=True)]
        else:
            rows.append(cells)
    if not rows:
        return []
    header, *body = rows
    return [dict(zip(header, row, strict=True)) for row in body]


def column(out: str, name: str = "name") -> list[str]:
    return [row[name] for row in table(out)]


def fields(out: str) -> dict[str, str]:
    """A Property/Value table (``*-show``, ``*-create``) as a dict."""
    return {row["Property"]: row["Value"] for row in table(out)}


def show(daemon: Deployment, command: str, *args: str) -> dict[str, str]:
    return fields(glance(daemon, command, *args, "--max-column-width", "1000").stdout)


def test_manage_loads_glances_definitions_into_the_running_daemon(
    daemon: Deployment, loaded: str, library: Any
) -> None:
    assert len(DEFINITIONS) == 33
    said = {line.removeprefix("loaded: ") for line in loaded.splitlines()
            if line.startswith("loaded: ")}
    assert said == set(DEFINITIONS)
    assert "metadefs load: 33 loaded, 0 merged, 0 skipped" in loaded

    # glanceclient pages by 20, then by 7: every namespace once.
    for paging in ((), ("--page-size", "7")):
        listed = column(glance(daemon, "md-namespace-list", *paging).stdout, "namespace")
        assert len(listed) == len(set(listed))
        assert {n for n in listed if not n.startswith(OURS)} == set(DEFINITIONS)
    for name in ("OS::Compute::Libvirt", "OS::Compute::Watchdog", "OS::Software::WebServers"):
        assert name in listed

    for_images = column(glance(daemon, "md-namespace-list", "--resource-types",
                               "OS::Glance::Image").stdout, "namespace")
    assert {n for n in for_images if not n.startswith(OURS)} == _associated("OS::Glance::Image")
    public = column(glance(daemon, "md-namespace-list", "--visibility", "public").stdout,
                    "namespace")
    assert {n for n in public if not n.startswith(OURS)} == {
        name for name, d in DEFINITIONS.items() if d.get("visibility") == "public"
    }

    types = column(glance(daemon, "md-resource-type-list").stdout)
    assert {t for t in types if not t.startswith(OURS)} == {
        "OS::Glance::Image", "OS::Cinder::Volume", "OS::Nova::Flavor", "OS::Nova::Server",
        "OS::Nova::Aggregate", "OS::Trove::Instance",
    }

    # The library's sorted, paged list (glanceclient offers sort by namespace or created_at).
    ordered = [n.namespace for n in library.metadefs_namespace.list(
        sort_key="namespace", sort_dir="asc", page_size=5)]
    assert ordered == sorted(ordered) and set(DEFINITIONS) <= set(ordered)

    again = manage(daemon, "metadefs", "load").stdout
    assert "metadefs load: 0 loaded, 0 merged, 33 skipped" in again


def test_glance_cli_shows_shipped_namespaces(daemon: Deployment, loaded: str) -> None:
    watchdog = DEFINITIONS["OS::Compute::Watchdog"]
    shown = show(daemon, "md-namespace-show", "OS::Compute::Watchdog")
    assert shown["namespace"] == "OS::Compute::Watchdog"
    assert shown["display_name"] == watchdog["display_name"] == "Watchdog Behavior"
    assert shown["description"] == watchdog["description"]
    assert (shown["visibility"], shown["protected"], shown["owner"]) == ("public", "True", "admin")
    assert json.loads(shown["properties"]) == ["watchdog_action"]
    assert set(json.loads(shown["resource_type_associations"])) == {
        "OS::Glance::Image", "OS::Cinder::Volume", "OS::Nova::Flavor"}

    # Asked for as a resource type sees it, property names carry the association's prefix.
    for resource_type, name in (("OS::Glance::Image", "hw_watchdog_action"),
                                ("OS::Nova::Flavor", "hw:watchdog_action")):
        shown = show(daemon, "md-namespace-show", "OS::Compute::Watchdog",
                     "--resource-type", resource_type)
        assert json.loads(shown["properties"]) == [name]
    libvirt = show(daemon, "md-namespace-show", "OS::Compute::Libvirt",
                   "--resource-type", "OS::Glance::Image")
    assert set(json.loads(libvirt["properties"])) == {
        "hw_" + name for name in DEFINITIONS["OS::Compute::Libvirt"]["properties"]}

    action = show(daemon, "md-property-show", "OS::Compute::Watchdog", "watchdog_action")
    assert (action["name"], action["title"], action["type"]) == (
        "watchdog_action", "Watchdog Action", "string")
    assert json.loads(action["enum"]) == ["disabled", "reset", "poweroff", "pause", "none"]

    associations = table(glance(daemon, "md-namespace-resource-type-list",
                                "OS::Compute::Watchdog").stdout)
    assert sorted((a["name"], a["prefix"], a["properties_target"]) for a in associations) == [
        ("OS::Cinder::Volume", "hw_", "image"), ("OS::Glance::Image", "hw_", ""),
        ("OS::Nova::Flavor", "hw:", ""),
    ]

    objects = column(glance(daemon, "md-object-list", "OS::Software::WebServers").stdout)
    assert sorted(objects) == ["Apache HTTP Server", "IIS", "Nginx"]
    port = show(daemon, "md-object-property-show", "OS::Software::WebServers",
                "Apache HTTP Server", "sw_webserver_apache_http_port")
    assert port["name"] == "sw_webserver_apache_http_port" and port["type"] == "integer"

    refused(glance(daemon, "md-namespace-delete", "OS::Compute::Watchdog", check=False),
            "HTTP 403 Forbidden: Metadata definition namespace OS::Compute::Watchdog is "
            "protected and cannot be deleted.")


def test_glance_cli_namespace_lifecycle(daemon: Deployment, library: Any) -> None:
    drop(library, "Test::CLI")
    drop(library, "Test::CLI2")
    made = fields(glance(daemon, "md-namespace-create", "Test::CLI", "--display-name",
                         "CLI namespace", "--description", "made by glance",
                         "--visibility", "public", "--protected", "True").stdout)
    assert made["namespace"] == "Test::CLI" and made["owner"] == PROJECT
    assert (made["display_name"], made["description"]) == ("CLI namespace", "made by glance")
    assert (made["visibility"], made["protected"]) == ("public", "True")
    assert made["schema"] == "/v2/schemas/metadefs/namespace"
    assert made["created_at"].endswith("Z")

    shown = show(daemon, "md-namespace-show", "Test::CLI")
    assert {k: shown[k] for k in made if k != "updated_at"} == {
        k: v for k, v in made.items() if k != "updated_at"}
    assert "Test::CLI" in column(glance(daemon, "md-namespace-list").stdout, "namespace")
    refused(glance(daemon, "md-namespace-create", "Test::CLI", check=False),
            "HTTP 409 Conflict: The metadata definition namespace=Test::CLI already exists.")

    updated = fields(glance(daemon, "md-namespace-update", "Test::CLI",
                            "--description", "changed").stdout)
    assert updated["description"] == "changed" and updated["display_name"] == "CLI namespace"
    renamed = fields(glance(daemon, "md-namespace-update", "Test::CLI",
                            "--namespace", "Test::CLI2").stdout)
    assert renamed["namespace"] == "Test::CLI2" and renamed["protected"] == "True"
    refused(glance(daemon, "md-namespace-show", "Test::CLI", check=False),
            "HTTP 404 Not Found: Metadata definition namespace=Test::CLI was not found.")

    refused(glance(daemon, "md-namespace-delete", "Test::CLI2", check=False),
            "HTTP 403 Forbidden: Metadata definition namespace Test::CLI2 is protected and "
            "cannot be deleted.")
    unprotected = fields(glance(daemon, "md-namespace-update", "Test::CLI2",
                                "--protected", "False").stdout)
    assert unprotected["protected"] == "False"
    glance(daemon, "md-namespace-delete", "Test::CLI2")
    refused(glance(daemon, "md-namespace-show", "Test::CLI2", check=False),
            "HTTP 404 Not Found: Metadata definition namespace=Test::CLI2 was not found.")


def test_glance_cli_import_with_content(daemon: Deployment, library: Any,
                                        tmp_path: Path) -> None:
    drop(library, "Test::Import")
    document = {
        "namespace": "Test::Import", "display_name": "Imported", "visibility": "public",
        "resource_type_associations": [{"name": "OS::Glance::Image", "prefix": "imp_"}],
        "properties": {"color": {"title": "Color", "type": "string", "enum": ["red", "blue"]}},
        "objects": [{"name": "Box", "required": ["size"],
                     "properties": {"size": {"title": "Size", "type": "integer"}}}],
        "tags": [{"name": "tag-a"}, {"name": "tag-b"}],
    }
    path = tmp_path / "namespace.json"
    path.write_text(json.dumps(document))
    made = fields(glance(daemon, "md-namespace-import", "--file", str(path)).stdout)
    assert json.loads(made["properties"]) == ["color"]
    assert json.loads(made["objects"]) == ["Box"]
    assert json.loads(made["resource_type_associations"]) == ["OS::Glance::Image"]
    assert json.loads(made["tags"]) == ["tag-b", "tag-a"]  # newest first, as Glance

    # An update replaces the namespace's attributes and leaves what it holds alone.
    updated = fields(glance(daemon, "md-namespace-update", "Test::Import",
                            "--description", "described").stdout)
    assert updated["description"] == "described" and updated["display_name"] == "Imported"
    assert json.loads(updated["objects"]) == ["Box"]
    prefixed = show(daemon, "md-namespace-show", "Test::Import",
                    "--resource-type", "OS::Glance::Image")
    assert json.loads(prefixed["properties"]) == ["imp_color"]
    box = show(daemon, "md-object-show", "Test::Import", "Box")
    assert json.loads(box["required"]) == ["size"] and json.loads(box["properties"]) == ["size"]
    drop(library, "Test::Import")


ENGINE = {
    "description": "An engine",
    "required": ["power"],
    "properties": {
        "power": {"title": "Power", "type": "integer", "minimum": 1},
        "fuel": {"title": "Fuel", "type": "string", "enum": ["gas", "diesel"]},
    },
}


def test_glance_cli_objects(daemon: Deployment, library: Any) -> None:
    make(library, "Test::Objects")
    ns = "Test::Objects"
    made = fields(glance(daemon, "md-object-create", ns, "--name", "Engine",
                         "--schema", json.dumps(ENGINE)).stdout)
    assert (made["name"], made["description"]) == ("Engine", "An engine")
    assert json.loads(made["required"]) == ["power"]
    assert sorted(json.loads(made["properties"])) == ["fuel", "power"]
    assert made["schema"] == "/v2/schemas/metadefs/object"

    listed = table(glance(daemon, "md-object-list", ns).stdout)
    assert listed == [{"name": "Engine", "description": "An engine"}]
    shown = show(daemon, "md-object-show", ns, "Engine")
    assert sorted(json.loads(shown["properties"])) == ["fuel", "power"]
    fuel = show(daemon, "md-object-property-show", ns, "Engine", "fuel")
    assert (fuel["name"], fuel["title"], fuel["type"]) == ("fuel", "Fuel", "string")
    assert json.loads(fuel["enum"]) == ["gas", "diesel"]
    refused(glance(daemon, "md-object-property-show", ns, "Engine", "nope", check=False),
            "Property nope not found in object Engine.")
    refused(glance(daemon, "md-object-create", ns, "--name", "Engine", "--schema", "{}",
                   check=False),
            "HTTP 409 Conflict: A metadata definition object with name=Engine already exists "
            f"in namespace={ns}.")

    # The update sends the object back whole, renamed and with the new description.
    moved = fields(glance(daemon, "md-object-update", ns, "Engine", "--name", "Motor",
                          "--schema", '{"description": "A motor"}').stdout)
    assert (moved["name"], moved["description"]) == ("Motor", "A motor")
    assert sorted(json.loads(moved["properties"])) == ["fuel", "power"]
    gone = glance(daemon, "md-object-show", ns, "Engine", check=False)
    refused(gone, "HTTP 404 Not Found")
    assert "Engine" in gone.stderr

    glance(daemon, "md-object-delete", ns, "Motor")
    assert table(glance(daemon, "md-object-list", ns).stdout) == []
    for name in ("Wheel", "Door"):
        glance(daemon, "md-object-create", ns, "--name", name, "--schema", "{}")
    assert sorted(column(glance(daemon, "md-object-list", ns).stdout)) == ["Door", "Wheel"]

    # A protected namespace keeps its objects: one by one, and all at once.
    library.metadefs_namespace.update(ns, protected=True)
    refused(glance(daemon, "md-object-delete", ns, "Door", check=False),
            "HTTP 403 Forbidden: Metadata definition object Door is protected and cannot be "
            "deleted.")
    refused(glance(daemon, "md-namespace-objects-delete", ns, check=False),
            f"HTTP 403 Forbidden: Metadata definition namespace {ns} is protected and cannot "
            "be deleted.")
    library.metadefs_namespace.update(ns, protected=False)
    glance(daemon, "md-namespace-objects-delete", ns)
    assert table(glance(daemon, "md-object-list", ns).stdout) == []
    drop(library, ns)


def test_glance_cli_properties(daemon: Deployment, library: Any) -> None:
    make(library, "Test::Properties")
    ns = "Test::Properties"
    made = fields(glance(daemon, "md-property-create", ns, "--name", "speed", "--title",
                         "Speed", "--type", "integer", "--schema",
                         '{"minimum": 0, "maximum": 100, "description": "How fast"}').stdout)
    assert (made["name"], made["title"], made["type"]) == ("speed", "Speed", "integer")
    assert (made["minimum"], made["maximum"], made["description"]) == ("0", "100", "How fast")
    glance(daemon, "md-property-create", ns, "--name", "mode", "--title", "Mode",
           "--type", "string", "--schema", '{"enum": ["a", "b"]}')
    assert table(glance(daemon, "md-property-list", ns).stdout) == [
        {"name": "mode", "title": "Mode", "type": "string"},
        {"name": "speed", "title": "Speed", "type": "integer"},
    ]
    shown = show(daemon, "md-property-show", ns, "mode")
    assert json.loads(shown["enum"]) == ["a", "b"]
    refused(glance(daemon, "md-property-create", ns, "--name", "mode", "--title", "Mode",
                   "--type", "string", "--schema", "{}", check=False),
            "HTTP 409 Conflict: A metadata definition property with name=mode already exists "
            f"in namespace={ns}.")

    # The update sends the property back whole, renamed, retitled, with a new maximum.
    moved = fields(glance(daemon, "md-property-update", ns, "speed", "--name", "velocity",
                          "--title", "Velocity", "--schema", '{"maximum": 200}').stdout)
    assert (moved["name"], moved["title"], moved["maximum"]) == ("velocity", "Velocity", "200")
    assert (moved["minimum"], moved["description"]) == ("0", "How fast")
    gone = glance(daemon, "md-property-show", ns, "speed", check=False)
    refused(gone, "HTTP 404 Not Found")
    assert "speed" in gone.stderr

    glance(daemon, "md-property-delete", ns, "velocity")
    assert column(glance(daemon, "md-property-list", ns).stdout) == ["mode"]

    library.metadefs_namespace.update(ns, protected=True)
    refused(glance(daemon, "md-property-delete", ns, "mode", check=False),
            "HTTP 403 Forbidden: Metadata definition property mode is protected and cannot be "
            "deleted.")
    refused(glance(daemon, "md-namespace-properties-delete", ns, check=False),
            f"HTTP 403 Forbidden: Metadata definition namespace {ns} is protected and cannot "
            "be deleted.")
    library.metadefs_namespace.update(ns, protected=False)
    glance(daemon, "md-namespace-properties-delete", ns)
    assert table(glance(daemon, "md-property-list", ns).stdout) == []
    drop(library, ns)


def test_glance_cli_tags(daemon: Deployment, library: Any) -> None:
    make(library, "Test::Tags")
    ns = "Test::Tags"
    made = fields(glance(daemon, "md-tag-create", ns, "--name", "alpha").stdout)
    assert made["name"] == "alpha" and made["created_at"].endswith("Z")
    assert fields(glance(daemon, "md-tag-show", ns, "alpha").stdout)["name"] == "alpha"
    refused(glance(daemon, "md-tag-create", ns, "--name", "alpha", check=False),
            f"HTTP 409 Conflict: A metadata tag with name=alpha already exists in namespace={ns}.")

    # Without --append the list replaces the namespace's tags; Glance lists the newest first.
    replaced = column(glance(daemon, "md-tag-create-multiple", ns, "--names",
                             "b1,b2,b3").stdout)
    assert replaced == ["b1", "b2", "b3"]
    assert column(glance(daemon, "md-tag-list", ns).stdout) == ["b3", "b2", "b1"]

    appended = glance(daemon, "md-tag-create-multiple", ns, "--names", "c1|c2", "--delim", "|",
                      "--append", check=False)
    if appended.returncode:
        # python-glanceclient 4.13 sends "X-Openstack-Append: True" as a bool, which its own
        # header encoding refuses: the request never leaves the client (the SDK's append is
        # tested below).
        assert "quote_from_bytes() expected bytes" in appended.stderr, appended.stderr
        assert column(glance(daemon, "md-tag-list", ns).stdout) == ["b3", "b2", "b1"]
    else:
        assert column(glance(daemon, "md-tag-list", ns).stdout) == [
            "c2", "c1", "b3", "b2", "b1"]

    renamed = fields(glance(daemon, "md-tag-update", ns, "b2", "--name", "b9").stdout)
    assert renamed["name"] == "b9"
    assert sorted(column(glance(daemon, "md-tag-list", ns).stdout))[:3] == ["b1", "b3", "b9"]
    gone = glance(daemon, "md-tag-show", ns, "b2", check=False)
    refused(gone, "HTTP 404 Not Found")
    assert "b2" in gone.stderr
    refused(glance(daemon, "md-tag-update", ns, "b9", "--name", "b1", check=False),
            f"HTTP 409 Conflict: A metadata tag with name=b1 already exists in namespace={ns}.")

    glance(daemon, "md-tag-delete", ns, "b9")
    assert "b9" not in column(glance(daemon, "md-tag-list", ns).stdout)
    refused(glance(daemon, "md-tag-delete", ns, "b9", check=False), "HTTP 404 Not Found")

    # A protected namespace keeps its tags: one by one, and all at once.
    library.metadefs_namespace.update(ns, protected=True)
    refused(glance(daemon, "md-tag-delete", ns, "b1", check=False),
            "HTTP 403 Forbidden: Metadata definition tag b1 is protected and cannot be deleted.")
    refused(glance(daemon, "md-namespace-tags-delete", ns, check=False),
            f"HTTP 403 Forbidden: Metadata definition namespace {ns} is protected and cannot "
            "be deleted.")
    library.metadefs_namespace.update(ns, protected=False)
    glance(daemon, "md-namespace-tags-delete", ns)
    assert table(glance(daemon, "md-tag-list", ns).stdout) == []
    drop(library, ns)


def test_glance_cli_resource_type_associations(daemon: Deployment, library: Any) -> None:
    make(library, "Test::Types")
    ns = "Test::Types"
    library.metadefs_property.create(ns, name="color", title="Color", type="string")
    made = fields(glance(daemon, "md-resource-type-associate", ns, "--name",
                         "OS::Glance::Image", "--prefix", "tt_",
                         "--properties-target", "image").stdout)
    assert (made["name"], made["prefix"], made["properties_target"]) == (
        "OS::Glance::Image", "tt_", "image")
    glance(daemon, "md-resource-type-associate", ns, "--name", "Test::Brand::New")
    refused(glance(daemon, "md-resource-type-associate", ns, "--name", "OS::Glance::Image",
                   check=False),
            "HTTP 409 Conflict: The metadata definition resource-type association of "
            f"resource-type=OS::Glance::Image to namespace={ns} already exists.")

    associations = table(glance(daemon, "md-namespace-resource-type-list", ns).stdout)
    assert sorted((a["name"], a["prefix"], a["properties_target"]) for a in associations) == [
        ("OS::Glance::Image", "tt_", "image"), ("Test::Brand::New", "", "")]
    # Associating with a resource type nobody knew makes it one (as Glance).
    assert "Test::Brand::New" in column(glance(daemon, "md-resource-type-list").stdout)
    assert column(glance(daemon, "md-namespace-list", "--resource-types",
                         "Test::Brand::New").stdout, "namespace") == [ns]
    shown = show(daemon, "md-namespace-show", ns, "--resource-type", "OS::Glance::Image")
    assert json.loads(shown["properties"]) == ["tt_color"]

    glance(daemon, "md-resource-type-deassociate", ns, "Test::Brand::New")
    assert column(glance(daemon, "md-namespace-resource-type-list", ns).stdout) == [
        "OS::Glance::Image"]
    refused(glance(daemon, "md-resource-type-deassociate", ns, "Test::Brand::New", check=False),
            "HTTP 404 Not Found: Failed to find resource type Test::Brand::New to delete")
    drop(library, ns)


@pytest.mark.parametrize(("command", "message"), [
    pytest.param(("md-namespace-show", "No::Such"),
                 "Metadata definition namespace=No::Such was not found.", id="namespace-show"),
    pytest.param(("md-object-list", "No::Such"),
                 "Metadata definition namespace=No::Such was not found.", id="object-list"),
    pytest.param(("md-object-show", "OS::Compute::Watchdog", "nope"),
                 "Could not find metadata object nope", id="object-show"),
    pytest.param(("md-property-show", "OS::Compute::Watchdog", "nope"),
                 "Could not find property nope", id="property-show"),
    pytest.param(("md-tag-show", "OS::Compute::Watchdog", "nope"),
                 "Could not find metadata tag nope", id="tag-show"),
    pytest.param(("md-property-list", "No::Such"), "Namespace No::Such not found",
                 id="property-list"),
    pytest.param(("md-tag-list", "No::Such"), "Namespace No::Such not found",
                 id="tag-list"),
    pytest.param(("md-namespace-resource-type-list", "No::Such"), "Namespace No::Such not found",
                 id="namespace-resource-type-list"),
    pytest.param(("md-namespace-delete", "No::Such"), "Namespace No::Such not found",
                 id="namespace-delete"),
])
def test_glance_cli_not_found_messages(daemon: Deployment, loaded: str,
                                       command: tuple[str, ...], message: str) -> None:
    """Glance 33's words for what is not there (its answers captured from a real Glance)."""
    refused(glance(daemon, *command, check=False), f"HTTP 404 Not Found: {message}")


# -- openstacksdk ---------------------------------------------------------------------------


def test_openstacksdk_namespaces_and_resource_types(daemon: Deployment, loaded: str) -> None:
    import openstack as sdk
    from openstack import exceptions

    conn = sdk.connection.Connection(auth_type="none", auth={"endpoint": daemon.url})
    listed = [n.namespace for n in conn.image.metadef_namespaces()]  # follows "next" links
    assert len(listed) == len(set(listed))
    assert {n for n in listed if not n.startswith(OURS)} == set(DEFINITIONS)
    for_flavors = {n.namespace for n in conn.image.metadef_namespaces(
        resource_types="OS::Nova::Flavor", visibility="public")}
    assert {n for n in for_flavors if not n.startswith(OURS)} == _associated("OS::Nova::Flavor")

    watchdog = conn.image.get_metadef_namespace("OS::Compute::Watchdog")
    assert (watchdog.display_name, watchdog.is_protected, watchdog.visibility, watchdog.owner) \
        == ("Watchdog Behavior", True, "public", "admin")
    assert {(a["name"], a["prefix"]) for a in watchdog.resource_type_associations} == {
        ("OS::Glance::Image", "hw_"), ("OS::Cinder::Volume", "hw_"), ("OS::Nova::Flavor", "hw:")}
    action = conn.image.get_metadef_property("watchdog_action", "OS::Compute::Watchdog")
    assert action.enum == ["disabled", "reset", "poweroff", "pause", "none"]
    with pytest.raises(exceptions.ForbiddenException) as forbidden:
        conn.image.delete_metadef_namespace("OS::Compute::Watchdog")
    assert "is protected and cannot be deleted" in str(forbidden.value.details)
    assert {t.name for t in conn.image.metadef_resource_types()} >= {
        "OS::Glance::Image", "OS::Cinder::Volume", "OS::Nova::Flavor"}

    ns = "Test::SDK"
    conn.image.delete_metadef_namespace(ns)  # ignore_missing: nothing left from a past run
    made = conn.image.create_metadef_namespace(
        namespace=ns, display_name="SDK namespace", description="made by the SDK",
        visibility="public", protected=True)
    assert (made.namespace, made.display_name, made.description) == (
        ns, "SDK namespace", "made by the SDK")
    assert (made.visibility, made.is_protected, made.owner) == ("public", True, PROJECT)
    assert made.created_at and made.updated_at
    with pytest.raises(exceptions.ConflictException):
        conn.image.create_metadef_namespace(namespace=ns)

    # Glance's PUT replaces every attribute: what the SDK does not send is cleared.
    updated = conn.image.update_metadef_namespace(ns, description="changed", protected=False)
    assert (updated.namespace, updated.description, updated.is_protected) == (
        ns, "changed", False)
    fetched = conn.image.get_metadef_namespace(ns)
    assert (fetched.description, fetched.display_name, fetched.visibility) == (
        "changed", None, "private")

    association = conn.image.create_metadef_resource_type_association(
        ns, name="OS::Glance::Image", prefix="sdk_", properties_target="image")
    assert (association.name, association.prefix, association.properties_target) == (
        "OS::Glance::Image", "sdk_", "image")
    conn.image.create_metadef_resource_type_association(ns, name="OS::Nova::Flavor")
    assert sorted((a.name, a.prefix) for a in conn.image.metadef_resource_type_associations(ns)) \
        == [("OS::Glance::Image", "sdk_"), ("OS::Nova::Flavor", None)]
    conn.image.delete_metadef_resource_type_association("OS::Nova::Flavor", ns)
    assert [a.name for a in conn.image.metadef_resource_type_associations(ns)] == [
        "OS::Glance::Image"]
    with pytest.raises(exceptions.NotFoundException):
        conn.image.delete_metadef_resource_type_association("OS::Nova::Flavor", ns,
                                                            ignore_missing=False)

    # Tags: one at a time, a replacing list, an appended list (newest first, as Glance).
    conn.image.add_tag_to_metadef_namespace(ns, "t1")
    assert [t["name"] for t in conn.image.get_metadef_namespace(ns).tags] == ["t1"]
    resource = conn.image.get_metadef_namespace(ns)
    resource.set_tags(conn.image, ["a", "b"])
    assert [t["name"] for t in conn.image.get_metadef_namespace(ns).tags] == ["b", "a"]
    resource.set_tags(conn.image, ["c"], append=True)
    resource.fetch_tags(conn.image)
    assert [t["name"] for t in resource.tags] == ["c", "b", "a"]
    conn.image.remove_tag_from_metadef_namespace(ns, "b")
    assert [t["name"] for t in conn.image.get_metadef_namespace(ns).tags] == ["c", "a"]
    conn.image.remove_tags_from_metadef_namespace(ns)
    # (A namespace without tags has no "tags", as Glance's, and the SDK's resource then shows
    # the list its add_tag appended to: ask for the tags themselves.)
    resource.fetch_tags(conn.image)
    assert resource.tags == []

    conn.image.delete_metadef_namespace(ns)
    with pytest.raises(exceptions.NotFoundException):
        conn.image.get_metadef_namespace(ns)
    with pytest.raises(exceptions.NotFoundException):
        conn.image.delete_metadef_namespace(ns, ignore_missing=False)


def test_openstacksdk_objects_and_properties(daemon: Deployment) -> None:
    import openstack as sdk
    from openstack import exceptions

    conn = sdk.connection.Connection(auth_type="none", auth={"endpoint": daemon.url})
    ns = "Test::SDKContent"
    conn.image.delete_metadef_namespace(ns)
    conn.image.create_metadef_namespace(namespace=ns, visibility="public")

    made = conn.image.create_metadef_object(ns, name="Engine", **ENGINE)
    assert (made.name, made.description, made.required, made.namespace_name) == (
        "Engine", "An engine", ["power"], ns)
    assert made.properties["fuel"] == {"title": "Fuel", "type": "string",
                                       "enum": ["gas", "diesel"]}
    conn.image.create_metadef_object(ns, name="Wheel")
    assert sorted(o.name for o in conn.image.metadef_objects(ns)) == ["Engine", "Wheel"]
    fetched = conn.image.get_metadef_object("Engine", ns)
    assert fetched.properties["power"]["minimum"] == 1
    with pytest.raises(exceptions.ConflictException):
        conn.image.create_metadef_object(ns, name="Engine")
    # The SDK sends only the attributes given, and Glance's PUT wants a name.
    updated = conn.image.update_metadef_object("Engine", ns, name="Motor",
                                               description="A motor", required=[])
    assert (updated.name, updated.description, updated.required) == ("Motor", "A motor", [])
    assert conn.image.get_metadef_object("Motor", ns).description == "A motor"
    with pytest.raises(exceptions.NotFoundException):
        conn.image.get_metadef_object("Engine", ns)
    conn.image.delete_metadef_object("Motor", ns)
    assert [o.name for o in conn.image.metadef_objects(ns)] == ["Wheel"]
    conn.image.delete_all_metadef_objects(ns)
    assert list(conn.image.metadef_objects(ns)) == []

    cores = conn.image.create_metadef_property(ns, name="cores", title="Cores",
                                               type="integer", minimum=1, maximum=64)
    assert (cores.name, cores.title, cores.type, cores.minimum, cores.maximum) == (
        "cores", "Cores", "integer", 1, 64)
    conn.image.create_metadef_property(ns, name="arch", title="Arch", type="string",
                                       enum=["x86_64", "aarch64"])
    assert sorted((p.name, p.type) for p in conn.image.metadef_properties(ns)) == [
        ("arch", "string"), ("cores", "integer")]
    arch = conn.image.get_metadef_property("arch", ns)
    assert (arch.title, arch.enum, arch.namespace_name) == ("Arch", ["x86_64", "aarch64"], ns)
    updated_cores = conn.image.update_metadef_property(
        "cores", ns, name="cores", title="CPU cores", type="integer", maximum=128)
    assert (updated_cores.title, updated_cores.maximum) == ("CPU cores", 128)
    assert conn.image.get_metadef_property("cores", ns).minimum is None  # PUT replaces
    conn.image.delete_metadef_property("cores", ns)
    assert [p.name for p in conn.image.metadef_properties(ns)] == ["arch"]
    with pytest.raises(exceptions.NotFoundException):
        conn.image.delete_metadef_property("cores", ns, ignore_missing=False)
    conn.image.delete_all_metadef_properties(ns)
    assert list(conn.image.metadef_properties(ns)) == []
    conn.image.delete_metadef_namespace(ns)


def test_openstacksdk_schemas(daemon: Deployment) -> None:
    import openstack as sdk

    conn = sdk.connection.Connection(auth_type="none", auth={"endpoint": daemon.url})
    namespace = conn.image.get_metadef_namespace_schema()
    assert namespace.name == "namespace" and namespace.required == ["namespace"]
    assert namespace.properties["visibility"]["enum"] == ["public", "private"]
    assert {"display_name", "protected", "resource_type_associations", "properties",
            "objects", "tags", "self", "schema"} <= set(namespace.properties)
    prop = conn.image.get_metadef_property_schema()
    assert prop.name == "property" and set(prop.required) == {"name", "title", "type"}
    assert "stringArray" in prop.definitions
    obj = conn.image.get_metadef_object_schema()
    assert obj.name == "object" and obj.required == ["name"]
    tag = conn.image.get_metadef_tag_schema()
    assert tag.name == "tag" and "name" in tag.properties
    resource_type = conn.image.get_metadef_resource_type_schema()
    assert resource_type.name == "resource_type_association"
    assert {"name", "prefix", "properties_target"} <= set(resource_type.properties)
    for schema, key in ((conn.image.get_metadef_namespaces_schema(), "namespaces"),
                        (conn.image.get_metadef_objects_schema(), "objects"),
                        (conn.image.get_metadef_properties_schema(), "properties"),
                        (conn.image.get_metadef_tags_schema(), "tags"),
                        (conn.image.get_metadef_resource_types_schema(),
                         "resource_type_associations")):
        assert key in schema.properties, (schema.name, sorted(schema.properties))


# -- the openstack CLI -----------------------------------------------------------------------


def openstack(daemon: Deployment, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return daemon.client(OPENSTACK, "--os-auth-type", "none", "--os-endpoint", daemon.url,
                         "--os-image-api-version", "2", "image", "metadef", *args, check=check)


def osc(daemon: Deployment, *args: str) -> Any:
    return json.loads(openstack(daemon, *args, "-f", "json").stdout)


def test_openstack_cli_namespaces(daemon: Deployment, loaded: str, library: Any) -> None:
    ns = "Test::OSC"
    drop(library, ns)
    made = osc(daemon, "namespace", "create", ns, "--display-name", "OSC namespace",
               "--description", "made by osc", "--public", "--protected")
    assert (made["namespace"], made["display_name"], made["description"]) == (
        ns, "OSC namespace", "made by osc")
    assert (made["visibility"], made["protected"], made["owner"]) == ("public", True, PROJECT)

    listed = [row["namespace"] for row in osc(daemon, "namespace", "list")]
    assert ns in listed and set(DEFINITIONS) <= set(listed)
    for_images = {row["namespace"] for row in osc(daemon, "namespace", "list",
                                                  "--resource-types", "OS::Glance::Image")}
    assert {n for n in for_images if not n.startswith(OURS)} == _associated("OS::Glance::Image")

    refused(openstack(daemon, "namespace", "delete", ns, check=False),
            f"403 Forbidden: Metadata definition namespace {ns} is protected and cannot be "
            "deleted.")
    openstack(daemon, "namespace", "set", ns, "--description", "changed", "--private",
              "--unprotected", "--tag", "x1", "--tag", "x2")
    shown = osc(daemon, "namespace", "show", ns)
    assert (shown["description"], shown["visibility"], shown["protected"]) == (
        "changed", "private", False)
    assert [t["name"] for t in shown["tags"]] == ["x2", "x1"]
    openstack(daemon, "namespace", "unset", ns, "--tag", "x1")
    assert [t["name"] for t in osc(daemon, "namespace", "show", ns)["tags"]] == ["x2"]
    openstack(daemon, "namespace", "set", ns, "--tag", "x3")
    openstack(daemon, "namespace", "unset", ns, "--all-tags")
    assert osc(daemon, "namespace", "show", ns)["tags"] == []

    openstack(daemon, "namespace", "delete", ns)
    refused(openstack(daemon, "namespace", "show", ns, check=False),
            f"404 Not Found: Metadata definition namespace={ns} was not found.")


def test_openstack_cli_objects_properties_resource_types(
    daemon: Deployment, loaded: str, library: Any
) -> None:
    ns = "Test::OSCContent"
    make(library, ns)
    types = {row["Name"] for row in osc(daemon, "resource", "type", "list")}
    assert {"OS::Glance::Image", "OS::Nova::Flavor", "OS::Trove::Instance"} <= types

    association = osc(daemon, "resource", "type", "association", "create", ns,
                      "OS::Glance::Image", "--properties-target", "image")
    assert (association["name"], association["properties_target"]) == (
        "OS::Glance::Image", "image")
    assert osc(daemon, "resource", "type", "association", "list", ns) == [
        {"Name": "OS::Glance::Image"}]
    openstack(daemon, "resource", "type", "association", "delete", ns, "OS::Glance::Image")
    assert [a.name for a in library.metadefs_resource_type.get(ns)] == []

    made = osc(daemon, "object", "create", "--namespace", ns, "Crate")
    assert (made["name"], made["namespace_name"]) == ("Crate", ns)
    assert osc(daemon, "object", "list", ns) == [{"name": "Crate", "description": None}]
    assert osc(daemon, "object", "show", ns, "Crate")["name"] == "Crate"
    openstack(daemon, "object", "update", ns, "Crate", "--name", "Box")
    assert osc(daemon, "object", "show", ns, "Box")["name"] == "Box"
    port = osc(daemon, "object", "property", "show", "OS::Software::WebServers",
               "Apache HTTP Server", "sw_webserver_apache_http_port")
    assert port["name"] == "sw_webserver_apache_http_port" and port["type"] == "integer"
    openstack(daemon, "object", "delete", ns, "Box")
    assert osc(daemon, "object", "list", ns) == []

    made = osc(daemon, "property", "create", "--name", "p1", "--title", "P1", "--type",
               "string", "--schema", '{"enum": ["x", "y"], "description": "pp"}', ns)
    assert made == {"name": "p1", "title": "P1", "type": "string", "enum": ["x", "y"],
                    "description": "pp"}
    assert osc(daemon, "property", "list", ns) == [{"name": "p1", "title": "P1",
                                                    "type": "string"}]
    # "set" shows the property, then sends it back whole with the changes.
    openstack(daemon, "property", "set", "--title", "P one", "--schema",
              '{"enum": ["x", "y", "z"]}', ns, "p1")
    shown = osc(daemon, "property", "show", ns, "p1")
    assert (shown["title"], shown["enum"], shown["description"]) == (
        "P one", ["x", "y", "z"], "pp")
    openstack(daemon, "property", "delete", ns, "p1")
    assert osc(daemon, "property", "list", ns) == []
    refused(openstack(daemon, "property", "delete", ns, "p1", check=False),
            "404 Not Found")
    drop(library, ns)


def test_clients_are_real(daemon: Deployment) -> None:
    """The suites above drive the installed clients, not stand-ins."""
    assert os.access(GLANCE, os.X_OK) and os.access(OPENSTACK, os.X_OK)
    assert os.access(MANAGE, os.X_OK)
    assert "imaged listening" in daemon.daemon.log()
