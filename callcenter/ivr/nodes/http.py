"""``http``: call a CRM or webhook with a templated URL and JSON body; store response fields."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from callcenter.ivr.expr import lookup, render_value
from callcenter.ivr.nodes.base import RunContext
from callcenter.ivr.schema import HttpNode
from callcenter.ivr.services import HttpError


def _render_body(value: Any, ctx: RunContext) -> Any:
    if isinstance(value, str):
        return render_value(value, ctx.vars)
    if isinstance(value, dict):
        return {k: _render_body(v, ctx) for k, v in value.items()}
    if isinstance(value, list):
        return [_render_body(v, ctx) for v in value]
    return value


async def run(node: HttpNode, ctx: RunContext) -> str | None:
    # a caller's input must not change the URL's shape: substituted values are percent-encoded
    url = ctx.render(node.url, escape=lambda s: quote(s, safe=""))
    headers = {k: ctx.render(v) for k, v in node.headers.items()}
    body = _render_body(node.body, ctx) if node.body is not None else None
    error = ""
    try:
        response = await ctx.services.http.request(
            node.method, url, json=body, headers=headers, timeout_s=node.timeout_s
        )
    except HttpError as exc:
        error = str(exc)
        status = None
    else:
        status = response.status
        if 200 <= status < 300:
            for name, path in node.store.items():
                ctx.vars[name] = lookup({"": response.json}, ["", *path.split(".")] if path else [""])
        else:
            error = f"{node.method} {url}: HTTP {status}"
    if node.status_into is not None:
        ctx.vars[node.status_into] = status
    ctx.vars["http_error"] = error
    if error:
        ctx.warn(error)
        if node.on_error is not None:
            return node.on_error
    return node.next
