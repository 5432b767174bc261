#!/usr/bin/env python3
"""A Fleet-only gateway: the one port of a deployment that other machines reach.

Flower 1.41 serves the Fleet, Control and Runtime APIs of a SuperLink on one
HTTP port, so a SuperLink whose port is reachable by the SuperNodes also lets
anyone who reaches it list, stop or submit runs (the Control API) and attach
a SuperExec (the Runtime API). Run the SuperLink on 127.0.0.1 instead and put
this gateway on the public address: it terminates TLS with the SuperLink's
certificate and forwards only ``POST /v1/fleet/*`` (what SuperNodes call) to
the SuperLink, unchanged (headers included, so SuperNode authentication
still signs and checks every request); every other path gets 404 and never
reaches the SuperLink.

    python scripts/fleet_gateway.py --listen 0.0.0.0:9092 \\
        --upstream https://127.0.0.1:9200 --ca certs/ca.crt \\
        --certfile certs/server.pem --keyfile certs/server.key

A reverse proxy does the same job (nginx: ``location /v1/fleet/ { proxy_pass
https://127.0.0.1:9200; }`` and nothing else); ``docs/deployment.md`` shows it.
Uses only packages Flower already installs (starlette, httpx, uvicorn).
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

FLEET_PREFIX = "/v1/fleet/"
# hop-by-hop headers (RFC 9110 7.6.1) and the ones httpx / uvicorn set themselves
_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
                  "trailer", "transfer-encoding", "upgrade", "host", "content-length"})


def make_app(upstream: str, ca: str | None) -> Starlette:
    """The gateway as an ASGI app forwarding Fleet API calls to ``upstream``."""
    client = httpx.AsyncClient(base_url=upstream, verify=ca if ca else True, timeout=None)

    async def forward(request: Request) -> Response:
        path = request.url.path
        if request.method != "POST" or not path.startswith(FLEET_PREFIX):
            return Response(b"only the Fleet API is served on this address\n", status_code=404)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        reply = await client.post(path, params=request.query_params, headers=headers,
                                  content=await request.body())
        return Response(reply.content, status_code=reply.status_code,
                        headers={k: v for k, v in reply.headers.items() if k.lower() not in _HOP})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await client.aclose()

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
    return Starlette(routes=[Route("/{path:path}", forward, methods=methods)], lifespan=lifespan)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--listen", required=True, help="host:port the SuperNodes connect to")
    p.add_argument("--upstream", required=True, help="the SuperLink, e.g. https://127.0.0.1:9200")
    p.add_argument("--ca", help="CA certificate to verify the SuperLink's (its TLS set-up)")
    p.add_argument("--certfile", help="certificate to serve (the SuperLink's)")
    p.add_argument("--keyfile", help="its private key")
    args = p.parse_args(argv)
    if bool(args.certfile) != bool(args.keyfile):
        raise SystemExit("--certfile and --keyfile go together")
    host, _, port = args.listen.rpartition(":")
    uvicorn.run(make_app(args.upstream, args.ca), host=host, port=int(port),
                ssl_certfile=args.certfile, ssl_keyfile=args.keyfile, log_level="warning")


if __name__ == "__main__":
    main()
