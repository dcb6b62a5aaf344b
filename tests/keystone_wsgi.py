"""
Serves Keystone's WSGI application on 127.0.0.1:PORT for the tests (run by Keystone's venv).

Keystone parses ``sys.argv`` with oslo.config when its application is built, so the port is
taken off the command line first; the configuration comes from ``OS_KEYSTONE_CONFIG_FILES``.
"""

import socketserver
import sys
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


class _ThreadedServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


def main() -> None:
    port = int(sys.argv[1])
    del sys.argv[1:]
    from keystone.wsgi.api import application

    server = make_server("127.0.0.1", port, application, _ThreadedServer, _Quiet)
    server.serve_forever()


if __name__ == "__main__":
    main()
