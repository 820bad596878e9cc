"""Client of the remote FLUX.2 text encoder: prompt strings in, prompt embeddings out.

The endpoint (``POST {"prompt": [...]}`` with ``Authorization: Bearer <HF token>``) answers with a
``torch.save``'d bfloat16 tensor of shape ``(len(prompts), 512, 15360)``. Its bytes come from outside,
so they are treated as hostile:

* the body is streamed under a hard byte cap (``max_bytes``) and one total deadline (``timeout_s``)
  that covers connect, headers and every read, so a server that stalls mid-body cannot hold the job;
* it is loaded with ``torch.load(..., weights_only=True, map_location="cpu")``: a pickle that names
  any callable outside torch's tensor allow-list is refused by the unpickler and never executed;
* the result must be a plain strided ``torch.Tensor`` (not a dict or list), of shape
  ``(len(prompts), *expected_shape_tail)``, with finite values;
* dtype: bfloat16 is what the endpoint sends. float16 and float32 are accepted and cast to bfloat16
  (they hold the same values at least as precisely, and the transformer runs in bfloat16); any other
  dtype is refused.

Every failure (HTTP status, timeout, oversized body, refused pickle, wrong shape) raises
``TextEncoderUnavailable`` with a message that says which. HTTP goes through ``http.client`` from the
standard library, honouring ``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY`` as urllib does.
"""

from __future__ import annotations

import http.client
import io
import ipaddress
import json
import logging
import socket
import ssl
import time
import urllib.parse
import urllib.request
from typing import Sequence

import torch

from .errors import TextEncoderUnavailable

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
_ACCEPTED_DTYPES = (torch.bfloat16, torch.float16, torch.float32)
_STATUS_HINTS = {
    401: "the HF token was rejected (check HF_TOKEN and its access to FLUX.2 [dev])",
    403: "the HF token may not use this endpoint (accept the FLUX.2 [dev] licence on the hub)",
    429: "rate limited",
    503: "the endpoint is paused or overloaded",
}


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Deadline:
    def __init__(self, timeout_s: float):
        self.timeout_s = timeout_s
        self.end = time.monotonic() + timeout_s

    def remaining(self) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            raise TextEncoderUnavailable(f"remote text encoder did not answer within {self.timeout_s:g} s")
        return left


def _connection(url: urllib.parse.SplitResult, timeout: float) -> tuple[http.client.HTTPConnection, str]:
    """A connection for ``url`` (through the environment's proxy unless bypassed) and the request target."""
    host = url.hostname or ""
    port = url.port or (443 if url.scheme == "https" else 80)
    target = urllib.parse.urlunsplit(("", "", url.path or "/", url.query, ""))
    proxy = None
    if not _is_loopback(host) and not urllib.request.proxy_bypass(host):
        proxy = urllib.request.getproxies().get(url.scheme)
    if proxy:
        p = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        if url.scheme == "https":
            conn = http.client.HTTPSConnection(p.hostname, p.port or 80, timeout=timeout, context=ssl.create_default_context())
            conn.set_tunnel(host, port)
            return conn, target
        # a plain-http proxy takes the absolute URL as the request target
        return http.client.HTTPConnection(p.hostname, p.port or 80, timeout=timeout), urllib.parse.urlunsplit(url)
    if url.scheme == "https":
        return http.client.HTTPSConnection(host, port, timeout=timeout, context=ssl.create_default_context()), target
    return http.client.HTTPConnection(host, port, timeout=timeout), target


def _post(url: str, body: bytes, token: str, timeout_s: float, max_bytes: int) -> bytes:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TextEncoderUnavailable(f"remote text encoder URL {url!r} is not an http(s) URL")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        # The bearer token would cross the network in clear text.
        raise TextEncoderUnavailable("refusing to send the HF token over plain http to a non-loopback host")
    deadline = _Deadline(timeout_s)
    conn, path = _connection(parts, deadline.remaining())
    try:
        conn.connect()
        sock = conn.sock  # kept: conn.close() on a `Connection: close` reply drops conn.sock, not the socket
        conn.request(
            "POST",
            path,
            body=body,
            headers={
                "Authorization": f"Bearer {token}",
                "Content-Type": "application/json",
                "Accept": "application/octet-stream",
            },
        )
        sock.settimeout(deadline.remaining())
        resp = conn.getresponse()
        if resp.status != 200:
            sock.settimeout(min(deadline.remaining(), 2.0))
            try:
                detail = resp.read1(512).decode("utf-8", "replace").strip()
            except (OSError, http.client.HTTPException):
                detail = ""
            hint = _STATUS_HINTS.get(resp.status, "")
            raise TextEncoderUnavailable(
                f"remote text encoder answered HTTP {resp.status} {resp.reason}"
                + (f": {hint}" if hint else "")
                + (f" ({detail[:200]})" if detail else "")
            )
        declared = resp.getheader("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > max_bytes:
            raise TextEncoderUnavailable(f"remote text encoder body of {declared} bytes exceeds the cap of {max_bytes} bytes")
        buf = bytearray()
        while True:
            sock.settimeout(deadline.remaining())
            chunk = resp.read1(_CHUNK)
            if not chunk:
                break
            buf += chunk
            if len(buf) > max_bytes:
                raise TextEncoderUnavailable(f"remote text encoder body exceeds the cap of {max_bytes} bytes")
        deadline.remaining()  # a body that trickled in past the deadline still counts as too slow
        return bytes(buf)
    except (socket.timeout, TimeoutError):
        raise TextEncoderUnavailable(f"remote text encoder did not answer within {timeout_s:g} s") from None
    except (OSError, http.client.HTTPException) as exc:
        raise TextEncoderUnavailable(f"remote text encoder unreachable: {type(exc).__name__}: {exc}") from None
    finally:
        conn.close()


def load_embeds(body: bytes, batch: int, expected_shape_tail: tuple[int, ...]) -> torch.Tensor:
    """Load and check a serialised tensor received from outside (see the module docstring)."""
    try:
        obj = torch.load(io.BytesIO(body), weights_only=True, map_location="cpu")
    except Exception as exc:  # UnpicklingError for refused globals, RuntimeError for a broken archive, ...
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TextEncoderUnavailable(f"remote text encoder sent a body that is not a safe tensor file: {first_line[:300]}") from None
    if not isinstance(obj, torch.Tensor):
        raise TextEncoderUnavailable(f"remote text encoder sent a {type(obj).__name__}, expected a tensor")
    if obj.layout != torch.strided or obj.device.type != "cpu":
        raise TextEncoderUnavailable(f"remote text encoder sent a {obj.layout} tensor, expected a dense one")
    expected = (batch, *expected_shape_tail)
    if tuple(obj.shape) != expected:
        raise TextEncoderUnavailable(f"remote text encoder sent shape {tuple(obj.shape)}, expected {expected}")
    if obj.dtype not in _ACCEPTED_DTYPES:
        raise TextEncoderUnavailable(f"remote text encoder sent dtype {obj.dtype}, expected torch.bfloat16")
    if not bool(torch.isfinite(obj).all()):
        raise TextEncoderUnavailable("remote text encoder sent non-finite values")
    # A fresh contiguous copy: drops any larger storage the tensor was a view of.
    return obj.to(torch.bfloat16).contiguous().clone()


def fetch_prompt_embeds(
    prompts: Sequence[str],
    url: str,
    token: str | None,
    timeout_s: float,
    max_bytes: int,
    expected_shape_tail: tuple[int, int],
) -> torch.Tensor:
    """Embeddings for ``prompts`` from the remote encoder, as a CPU bfloat16 tensor (B, *tail)."""
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise ValueError("prompts must be a non-empty list of strings")
    if not token:
        raise TextEncoderUnavailable("the remote text encoder needs an HF token (HF_TOKEN is not set)")
    started = time.monotonic()
    body = _post(url, json.dumps({"prompt": list(prompts)}).encode("utf-8"), token, timeout_s, max_bytes)
    fetched = time.monotonic()
    embeds = load_embeds(body, len(prompts), tuple(expected_shape_tail))
    log.info(
        "remote text encoder: %d prompt(s), %d bytes, fetch %.0f ms, load %.0f ms",
        len(prompts), len(body), (fetched - started) * 1000, (time.monotonic() - fetched) * 1000,
    )
    return embeds
