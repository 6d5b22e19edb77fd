"""Pick the Data Docs files worth storing and make their bytes repeatable.

GX's site builder copies ~4 MB of static assets (fonts, animated GIFs of its tutorial) into every site; the
pages only reference the favicon locally (styles and scripts come from CDNs when a browser opens them). So we
store the HTML pages plus the local files they reference, not the whole folder: a few hundred kB per hour.

GX stamps each page with the build time (a cache-busting ``?d=`` query on the logo URL), random UUIDs in
collapsible-section ids, and the validation page with the wall-clock batch load time (``ge_load_time``). All
are rewritten (the query dropped, each UUID numbered by first appearance, the load time replaced by a note)
so a rerun of an interval writes the same bytes; the run time GX shows is the interval end. If a GX upgrade
adds another varying value, only the Data Docs bytes would differ between reruns; the data objects and the
quality report do not depend on them.
"""

from __future__ import annotations

import mimetypes
import re
from pathlib import Path, PurePosixPath

_BUILD_STAMP = re.compile(r"\?d=\d{8}T\d{6}\.\d{6}Z")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_LOAD_TIME = re.compile(r"(ge_load_time</span>.{0,400}?<span[^>]*>)\d{8}T\d{6}\.\d{6}Z", re.DOTALL)
_LOCAL_REF = re.compile(r"""(?:href|src)=["']([^"'#?]+)["']""")


def normalize_html(text: str) -> str:
    text = _BUILD_STAMP.sub("", text)
    text = _LOAD_TIME.sub(r"\1(wall clock, not recorded)", text)
    numbers: dict[str, str] = {}

    def _number(match: re.Match[str]) -> str:
        return numbers.setdefault(match.group(0), f"id{len(numbers) + 1:04d}")

    return _UUID.sub(_number, text)


def _local_refs(page: PurePosixPath, html: str) -> set[PurePosixPath]:
    refs = set()
    for ref in _LOCAL_REF.findall(html):
        if "://" in ref or ref.startswith(("mailto:", "/", "data:")):
            continue
        parts: list[str] = []
        for part in (*page.parent.parts, *PurePosixPath(ref).parts):
            if part == "..":
                if not parts:
                    break
                parts.pop()
            elif part != ".":
                parts.append(part)
        else:
            refs.add(PurePosixPath(*parts))
    return refs


def collect_site(root: Path) -> dict[str, bytes]:
    """Relative path -> bytes of the pages and the local files they reference, sorted by path."""
    files: dict[str, bytes] = {}
    referenced: set[PurePosixPath] = set()
    for path in sorted(root.rglob("*.html")):
        rel = PurePosixPath(path.relative_to(root).as_posix())
        html = normalize_html(path.read_text(encoding="utf-8"))
        files[str(rel)] = html.encode("utf-8")
        referenced |= _local_refs(rel, html)
    for rel in sorted(referenced):
        path = root / rel
        if str(rel) not in files and path.is_file():
            files[str(rel)] = path.read_bytes()
    return dict(sorted(files.items()))


def content_type(name: str) -> str:
    return mimetypes.guess_type(name)[0] or "application/octet-stream"
