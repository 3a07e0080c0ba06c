"""Write the viewer page: `index.html` with the page data embedded as inert JSON, next to the
package's `viewer.js` and `viewer.css`. No CDN and no network: the page opens from `file://`.

The data goes inside `<script type="application/json">`, which the browser never runs; `<`, `>`
and `&` are written as JSON escapes so no text can close that element, and the script reads it
with `JSON.parse` and puts every string on screen through `textContent`.
"""

from __future__ import annotations

import html
import json
import shutil
from importlib import resources
from pathlib import Path
from typing import Any

ASSETS = ("viewer.js", "viewer.css")
PAGE_NAME = "index.html"


def embed_json(data: Any) -> str:
    text = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def write_page(page: dict[str, Any], out_dir: str | Path) -> Path:
    """Write `index.html` and its assets into `out_dir`; returns the page's path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    static = resources.files("curation.viewer") / "static"
    for name in ASSETS:
        with resources.as_file(static / name) as source:
            shutil.copyfile(source, out / name)
    template = (static / "page.html").read_text(encoding="utf-8")
    title = html.escape(f"{page['corpus']['name']} - corpus viewer")
    text = template.replace("@@TITLE@@", title).replace("@@DATA@@", embed_json(page))
    path = out / PAGE_NAME
    tmp = out / f".tmp-{PAGE_NAME}"
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path
