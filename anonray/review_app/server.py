"""``anonray review``: serve the review app on this machine with waitress, and say where to open it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from waitress.server import create_server

from anonray.config import ReviewConfig
from anonray.review_app.access import allowed_hosts, is_loopback, new_token
from anonray.review_app.app import create_app
from anonray.review_app.folder import ReviewFolder

log = logging.getLogger("anonray")


class ReviewRefused(RuntimeError):
    """The folder cannot be reviewed (named in the message)."""


def review_server(output_dir: Path, host: str = "127.0.0.1", port: int = 0, token: str | None = None,
                  reviewer: str | None = None, review: ReviewConfig | None = None):
    """A ready waitress server over the output folder (``port`` 0: a free one) and its token; ``.run()`` serves,
    ``.close()`` stops. The token is generated when not given."""
    token = token or new_token()
    server = create_server(lambda environ, start: app(environ, start), host=host, port=port, threads=4,
                           ident="anonray")
    bound_port = int(server.effective_port)
    app = create_app(output_dir, token, allowed_hosts(host, bound_port), reviewer, review)
    return server, token


def serve(output_dir: Path, host: str, port: int, token: str | None, reviewer: str | None,
          say: Callable[[str], None] = print) -> None:
    """Serve until interrupted, after printing the URL to open (with its token, like Jupyter's)."""
    folder = ReviewFolder(output_dir)
    uncorrectable, current = folder.uncorrectable(), folder.files()
    if current and len(uncorrectable) == len([f for f in current if f["status"] == "ok"]):
        raise ReviewRefused("no output of this folder kept its mask regions (review.keep_regions: false): "
                            "there is nothing to review and correct; run it again with review.keep_regions: true")
    if uncorrectable:
        say(f"warning: {len(uncorrectable)} output(s) cannot be corrected: their runs did not keep the mask regions "
            "(review.keep_regions: false)")
    server, token = review_server(output_dir, host, port, token, reviewer)
    if not is_loopback(host):
        say(f"warning: the review app listens on {host}, reachable from other machines; it shows anonymized "
            "footage and takes corrections to anyone holding the token")
    shown = f"[{host}]" if ":" in host else host
    say(f"anonray review: open http://{shown}:{server.effective_port}/?token={token}")
    say("  (Ctrl-C stops it)")
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
