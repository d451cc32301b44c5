"""``factcap serve``: check every option, then start the HTTP service."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from factcap.cli.common import FORMATTER, add_model_source, load_config, quiet_libraries

EXAMPLES = """examples:
  factcap serve                                                # tiny preset on 127.0.0.1:8000
  FACTCAP_API_KEY=... factcap serve --host 0.0.0.0 --preset small --data-root /data
  curl -H "Authorization: Bearer $FACTCAP_API_KEY" -F image=@cat.jpg http://127.0.0.1:8000/v1/captions
  factcap serve --image-url-host images.example.com            # chat image URLs from that host
"""


def add_parser(sub: Any) -> None:
    """Register ``serve`` on the top-level subparsers."""
    srv = sub.add_parser(
        "serve",
        help="serve captions over HTTP (FastAPI)",
        description="Serve the pipeline over HTTP: POST /v1/captions, /v1/scores, dataset jobs "
        "under --data-root, GET /healthz, and the OpenAI chat API (POST /v1/chat/completions, "
        "GET /v1/models; base URL http://HOST:PORT/v1). Set FACTCAP_API_KEY to require a key "
        "(needed off loopback); with a key, the API docs (/docs, /openapi.json) need it too.",
        epilog=EXAMPLES,
        formatter_class=FORMATTER,
    )
    srv.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    srv.add_argument("--port", type=int, default=8000, help="port, 1-65535 (default 8000)")
    add_model_source(srv)
    srv.add_argument(
        "--max-upload-mb", type=float, default=20, help="largest request body (default 20)"
    )
    srv.add_argument(
        "--queue-size", type=int, default=64, help="requests waiting at most; beyond: 429"
    )
    srv.add_argument(
        "--data-root", type=Path, help="folder dataset jobs may read (default: jobs off)"
    )
    srv.add_argument(
        "--jobs-dir", type=Path, help="where job results go (default: a temporary folder)"
    )
    srv.add_argument(
        "--image-url-host",
        action="append",
        default=[],
        metavar="HOST",
        help="fetch the chat route's http(s) image URLs from HOST ('*.example.com': its "
        "subdomains; repeat for more); default: image URLs are refused, data URLs only",
    )
    srv.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """The handler: validate the options (one line and exit 2 on a mistake), then serve.
    The service's log holds its requests, not the libraries' per-checkpoint loading bars."""
    quiet_libraries()
    from factcap.serve.options import ServeOptions

    options = ServeOptions(
        host=args.host,
        port=args.port,
        api_key=os.environ.get("FACTCAP_API_KEY") or None,
        max_upload_mb=args.max_upload_mb,
        queue_size=args.queue_size,
        data_root=args.data_root,
        jobs_dir=args.jobs_dir,
        image_url_hosts=tuple(args.image_url_host),
    ).checked()
    config = load_config(args)

    from factcap.serve.app import run as serve

    serve(
        options.host,
        options.port,
        config=config,
        api_key=options.api_key,
        max_upload_mb=options.max_upload_mb,
        queue_size=options.queue_size,
        data_root=options.data_root,
        jobs_dir=options.jobs_dir,
        image_url_hosts=options.image_url_hosts,
    )
    return 0
