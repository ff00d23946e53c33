"""The review app's routes (Flask): pages, frames, regions, queued actions, apply.

Every request passes access.check_request first. Pages and assets come from this package (templates/,
static/): nothing is fetched from elsewhere, so the app works air-gapped. Files are addressed by video id,
never by path, and only outputs the tables name are read (folder.py), so no URL reaches outside the output
folder. Errors name the problem, never a path outside it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from flask import Flask, Response, abort, jsonify, redirect, render_template, request
from werkzeug.exceptions import HTTPException

from anonray.config import ReviewConfig
from anonray.corrections.spec import LABELS, CorrectionsError
from anonray.review_app.access import TOKEN_HEADER, check_request, cookie_name
from anonray.review_app.folder import ReviewFolder, review_queue
from anonray.store.output_lock import OutputLocked

log = logging.getLogger("anonray")

MAX_SIDE = 1280
"""Frames are sent scaled to this long side at most (the page maps its coordinates back)."""


def create_app(output_dir: Path, token: str, hosts: set[str], reviewer: str | None = None,
               review: ReviewConfig | None = None) -> Flask:
    """The app over one output folder; ``hosts``: the Host header values it answers (access.allowed_hosts)."""
    folder = ReviewFolder(output_dir)
    app = Flask(__name__, static_folder="static", template_folder="templates")
    app.config.update(MAX_CONTENT_LENGTH=64 * 1024)
    install_access(app, token, hosts)
    context = {"token": token, "token_header": TOKEN_HEADER, "reviewer": reviewer or "", "labels": LABELS}
    add_pages(app, folder, review or ReviewConfig(), context)
    add_api(app, folder, reviewer)
    return app


def install_access(app: Flask, token: str, hosts: set[str]) -> None:
    """Every request checked (access.py) before any route; the cookie and the safety headers on every answer;
    an unexpected error logged by its class and route only (its message may hold a path), answered 500."""
    cookie = cookie_name(hosts)

    @app.errorhandler(Exception)
    def _error(err: Exception) -> Response | HTTPException:
        if isinstance(err, HTTPException):
            return err
        log.error("review app: %s on %s", type(err).__name__, request.url_rule.rule if request.url_rule else "?")
        return Response("internal error (see the log)\n", status=500, mimetype="text/plain")

    @app.before_request
    def _guard() -> Response | None:
        verdict = check_request(method=request.method, host_header=request.headers.get("Host"),
                                query_token=request.args.get("token"), cookie_token=request.cookies.get(cookie),
                                headers=request.headers, token=token, hosts=hosts)
        if verdict.status != 200:
            return Response(verdict.reason + "\n", status=verdict.status, mimetype="text/plain")
        if verdict.set_cookie and request.method in ("GET", "HEAD"):  # the cookie, and the token out of the URL
            rest = [(k, v) for k, v in request.args.items(multi=True) if k != "token"]
            answer = redirect(request.path + (f"?{urlencode(rest)}" if rest else ""), code=303)
            answer.set_cookie(cookie, token, httponly=True, samesite="Strict")
            return answer
        request.environ["anonray.set_cookie"] = verdict.set_cookie
        return None

    @app.after_request
    def _headers(response: Response) -> Response:
        if request.environ.get("anonray.set_cookie"):
            response.set_cookie(cookie, token, httponly=True, samesite="Strict")
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Content-Security-Policy"] = "default-src 'self'; img-src 'self'; frame-ancestors 'none'"
        return response


def add_pages(app: Flask, folder: ReviewFolder, cfg: ReviewConfig, context: dict[str, Any]) -> None:
    """The HTML pages: runs, files and the review queue; one file's frame viewer."""

    @app.get("/")
    def index() -> str:
        files = folder.files()
        return render_template("index.html", runs=folder.runs(), files=files, pending=folder.pending(),
                               queue=review_queue([f for f in files if f["status"] == "ok"], cfg), **context)

    @app.get("/file/<video_id>")
    def file_page(video_id: str) -> str:
        row = folder.current(video_id) or abort(404)
        return render_template("file.html", row=row, pending=folder.pending(),
                               regions_kept=folder.regions_kept(row), **context)


def add_api(app: Flask, folder: ReviewFolder, reviewer: str | None) -> None:
    """Frames and regions of a file's output; queued actions; apply."""

    @app.get("/api/file/<video_id>/frame/<int:index>.jpg")
    def frame(video_id: str, index: int) -> Response:
        row = folder.current(video_id) or abort(404)
        data = folder.frame_jpeg(row, index, MAX_SIDE) or abort(404)
        return Response(data, mimetype="image/jpeg")

    @app.get("/api/file/<video_id>/regions/<int:index>")
    def regions(video_id: str, index: int) -> Response:
        row = folder.current(video_id) or abort(404)
        return jsonify({"frame": index, "width": row["width"], "height": row["height"],
                        "regions": folder.regions(row, index)})

    @app.post("/api/pending")
    def add_pending() -> tuple[Response, int]:
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or not isinstance(body.get("entry"), dict):
            return jsonify({"error": "expected {reviewer, entry}"}), 400
        name = str(body.get("reviewer") or reviewer or "").strip()
        if not name:
            return jsonify({"error": "say who you are: the reviewer's name is required"}), 400
        try:
            added = folder.add_pending(name, body["entry"])
        except CorrectionsError as err:
            return jsonify({"error": str(err)}), 400
        return jsonify({"added": added, "pending": len(folder.pending())}), 200

    @app.post("/api/pending/clear")
    def clear_pending() -> Response:
        folder.clear_pending()
        return jsonify({"pending": 0})

    @app.post("/api/apply")
    def apply() -> tuple[Response, int]:
        try:
            summaries = folder.apply_pending()
        except (CorrectionsError, OutputLocked) as err:
            return jsonify({"error": str(err)}), 409
        return jsonify({"runs": [{"run_id": s.run_id, "corrected": s.corrected, "reviewed": s.reviewed,
                                  "failed": s.failed, "seconds": round(s.wall_seconds, 2)} for s in summaries]}), 200
