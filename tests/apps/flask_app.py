"""A tiny Flask app for tests/app_servers.rs: it records which handler ran.

Every handler appends one JSON line to the file named by $APP_LOG and answers the same JSON:
{"handler", "method", "path", "script_name", "scheme", "host", "raw_uri", "probe"} -- `path`
is PATH_INFO (what Flask routed on), `scheme` wsgi.url_scheme (gunicorn sets it from
X-Forwarded-Proto and kin sent by a peer in forwarded_allow_ips), `probe` the request's X-Probe
header, which the test sets to tell its requests apart.

The app trusts two request headers the way many real Flask apps do, through middleware copied
from Flask's own documentation and snippets: X-Script-Name (the "ReverseProxied" snippet) and
X-HTTP-Method-Override (the "HTTPMethodOverrideMiddleware" pattern). gunicorn additionally
takes a SCRIPT_NAME header as the script name when the peer is in forwarded_allow_ips
(127.0.0.1 by default). A proxy in front must never let a client's copy of those reach it.

Served by gunicorn (`gunicorn flask_app:app`) or by werkzeug's development server
(`python flask_app.py PORT`).
"""

import json
import os
import sys
import threading

from flask import Flask, jsonify, request

app = Flask(__name__)

LOG = os.environ.get("APP_LOG", os.devnull)
_lock = threading.Lock()

METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]


def ran(handler):
    env = request.environ
    entry = {
        "handler": handler,
        "method": request.method,
        "path": request.path,
        "script_name": env.get("SCRIPT_NAME", ""),
        "scheme": request.scheme,
        "host": request.host,
        "raw_uri": env.get("RAW_URI", env.get("REQUEST_URI", "")),
        "probe": request.headers.get("X-Probe", ""),
    }
    with _lock, open(LOG, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")
    return jsonify(entry)


@app.route("/", methods=METHODS)
def root():
    return ran("root")


@app.route("/public", methods=METHODS)
@app.route("/public/<path:rest>", methods=METHODS)
def public(rest=""):
    return ran("public")


@app.route("/admin", methods=METHODS)
@app.route("/admin/<path:rest>", methods=METHODS)
def admin(rest=""):
    return ran("admin")


@app.route("/files", methods=METHODS)
@app.route("/files/<path:rest>", methods=METHODS)
def files(rest=""):
    return ran("files")


class ReverseProxied:
    """The widely copied Flask snippet: the app is mounted under X-Script-Name."""

    def __init__(self, wsgi_app):
        self.app = wsgi_app

    def __call__(self, environ, start_response):
        script_name = environ.get("HTTP_X_SCRIPT_NAME", "")
        if script_name:
            environ["SCRIPT_NAME"] = script_name
            path_info = environ["PATH_INFO"]
            if path_info.startswith(script_name):
                environ["PATH_INFO"] = path_info[len(script_name):]
        return self.app(environ, start_response)


class HTTPMethodOverrideMiddleware:
    """Flask's documented pattern for clients that can only send GET and POST."""

    allowed_methods = frozenset(METHODS)
    bodyless_methods = frozenset(["GET", "HEAD", "OPTIONS", "DELETE"])

    def __init__(self, wsgi_app):
        self.app = wsgi_app

    def __call__(self, environ, start_response):
        method = environ.get("HTTP_X_HTTP_METHOD_OVERRIDE", "").upper()
        if method in self.allowed_methods:
            environ["REQUEST_METHOD"] = method
        if method in self.bodyless_methods:
            environ["CONTENT_LENGTH"] = "0"
        return self.app(environ, start_response)


app.wsgi_app = HTTPMethodOverrideMiddleware(ReverseProxied(app.wsgi_app))

if __name__ == "__main__":
    from werkzeug.serving import run_simple

    run_simple("127.0.0.1", int(sys.argv[1]), app, threaded=True)
