"""Two fixes to kmock 0.8 internals that the emulator needs, kept in one place.

1. ``parse_path`` crashes on ``/api/v1/namespaces`` and reads ``/api/v1/namespaces/<name>`` as
   "a namespace, no resource": wrapped for these URLs (kmock's ``Request._parse`` looks the
   function up on its module, so replacing the module attribute is enough).
2. ``RawHandler._handle`` asks ``request in reaction_view`` for every reaction, which replays ALL
   requests served so far through the view's filters: O(requests) per request, quadratic over a
   run (~15 ms per request after a few hundred). :func:`dispatch` answers the same question for
   filter/priority chains by evaluating the criteria on the one request, and falls back to
   kmock's membership test for other views (slices, groups, exclusions).
"""

from __future__ import annotations

from typing import Any

import aiohttp.web
import kmock
from kmock._internal import dsl
from kmock._internal import parsing as _parsing

_kmock_parse_path = _parsing.parse_path


def _parse_path(path: str) -> _parsing.ParsedPath:
    parts = path.strip("/").split("/")
    subresource = parts[4:] in (["status"], ["finalize"])
    if parts[:3] == ["api", "v1", "namespaces"] and (len(parts) <= 4 or subresource):
        name = parts[3] if len(parts) > 3 else None
        return _parsing.ParsedPath("", "v1", "namespaces", None, name, "/".join(parts[4:]) or None)
    return _kmock_parse_path(path)


_parsing.parse_path = _parse_path


def _sees(view: Any, request: kmock.Request) -> bool:
    """Whether a reaction's view lets this request through; same answer as ``request in view``."""
    if isinstance(view, dsl.Root):
        return True  # a root sees every request it serves
    if type(view) is dsl.Filter:
        return bool(view.criteria(request)) and _sees(view._source, request)
    if type(view) is dsl.Priority:
        return _sees(view._source, request)
    return request in view


async def dispatch(root: kmock.RawHandler, request: kmock.Request) -> aiohttp.web.StreamResponse:
    """``RawHandler._handle`` with an O(1) membership test: the highest-priority matching reaction."""
    priorities = [payload.priorities for payload in root._payloads]
    width = max((len(priority) for priority in priorities), default=0)
    padded = [tuple(-p for p in priority) + (0,) * (width - len(priority)) for priority in priorities]
    for index in sorted(range(len(padded)), key=lambda i: padded[i]):
        payload = root._payloads[index]
        if payload._disabled.is_set() or not _sees(payload._source, request):
            continue
        try:
            return await payload(request)
        except kmock.ReactionMismatchError:  # mismatch or depletion, as in kmock
            payload._disabled.set()
        except NotImplementedError:  # matched, but nothing to respond with
            pass
    raise NotImplementedError("no reaction matches the request; add one, e.g. `emu.fallback << 404`")
