"""Upload a built corpus (shards, index, card, figures) to a Hugging Face dataset repo.

What goes up: `index.json`, `README.md`, the shards the index lists and the figures the card
shows (`card_figures`; a file someone else left in `figures/`, such as a QA notebook's frame strip,
is not ours to publish). What never goes up unless asked: `videos/` (the video bytes are the sources' work, under their licences, not ours to
redistribute; the `videos` table keeps each `sha256` and source URL so users can fetch and
verify them; `include_videos=True` is for corpora whose every video allows redistribution), `work/`
(per-video result files: a build cache, not data) and `llm_cache/` (raw LLM responses, a cache).

Resumable: before uploading, the remote state of every planned path is read (`get_paths_info`);
a file whose content is already there (LFS sha256 for LFS files, git blob sha1 for small ones) is
skipped. The rest go up in commits of at most `files_per_commit` files, shards first and
`index.json` + `README.md` in the last commit, so a broken connection loses at most one commit's
worth and the Hub never shows an index or card that names files not there yet.

The token is never logged, never put in a report, and scrubbed from every error this module
raises (`HubPushError`); the original exception is not chained, because its request object
carries the Authorization header.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from curation.hashing import sha256_file

logger = logging.getLogger(__name__)

REPO_TYPE = "dataset"
TOP_FILES = ("index.json", "README.md")
TREES = ("data", "figures")
VIDEOS_DIR = "videos"
FILES_PER_COMMIT = 50  # our choice: one lost commit costs at most ~50 shards of re-upload
PATHS_INFO_BATCH = 500  # paths per paths-info request (the Hub pages large answers)
TOKEN_PATTERN = re.compile(r"hf_[A-Za-z0-9]{20,}")  # Hub user tokens: hf_ + 34 letters and digits
FIGURE_LINK = re.compile(r"\]\((figures/[^)\s]+)\)")  # a Markdown link or image into figures/


@dataclass(frozen=True)
class UploadItem:
    path_in_repo: str
    local_path: Path
    sha256: str
    bytes: int


@dataclass
class PushReport:
    uploaded: list[str] = field(default_factory=list)  # in a dry run: what would be uploaded
    skipped_same: list[str] = field(default_factory=list)
    bytes: int = 0
    dry_run: bool = False
    remote_checked: bool = True  # False: a dry run that could not read the repo (counts all as new)
    commits: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)  # stale data/figures files (a dry run: would delete)

    def markdown(self, repo_id: str) -> str:
        verb = "would upload" if self.dry_run else "uploaded"
        lines = [f"# push-to-hub: `{repo_id}`", "",
                 f"- {verb}: {len(self.uploaded)} files, {self.bytes} bytes",
                 f"- already on the Hub (same content): {len(self.skipped_same)} files"]
        if not self.remote_checked:
            lines.append("- the repo could not be read (missing or unreachable): every file counted as new")
        lines += ["", "| file | action |", "|---|---|"]
        lines += [f"| `{p}` | {verb} |" for p in self.uploaded]
        lines += [f"| `{p}` | same on the Hub |" for p in self.skipped_same]
        lines += [f"| `{p}` | {'would delete' if self.dry_run else 'deleted'} (not in this build) |"
                  for p in self.deleted]
        return "\n".join(lines) + "\n"


class HubPushError(RuntimeError):
    """A Hub request failed; the message is scrubbed of tokens."""


def git_blob_sha1(path: Path) -> str:
    """The git object id the Hub reports for a small (non-LFS) file."""
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def card_figures(corpus_root: str | Path) -> list[str]:
    """The figures the card shows (`![...](figures/NAME.png)`), as paths relative to the corpus."""
    root = Path(corpus_root)
    card = root / "README.md"
    if not card.is_file():
        return []
    links = FIGURE_LINK.findall(card.read_text(encoding="utf-8"))
    return sorted({link for link in links if (root / link).is_file()})


def _files_under(root: Path, folder: str) -> Iterator[Path]:
    base = root / folder
    if base.is_dir():
        # Hidden files are temp names of an unfinished write (shards.py's `.tmp-`): never ours to send.
        yield from (p for p in sorted(base.rglob("*")) if p.is_file() and not any(
            part.startswith(".") for part in p.relative_to(root).parts))


def _order(path_in_repo: str) -> tuple[int, str]:
    # data first, figures next, index and card last (the card names the shards).
    rank = {"data": 0, "figures": 1, VIDEOS_DIR: 2}.get(path_in_repo.split("/", 1)[0], 3)
    return (rank, TOP_FILES.index(path_in_repo) if path_in_repo in TOP_FILES else 0, path_in_repo)


def plan_upload(corpus_root: str | Path, include_videos: bool = False) -> list[UploadItem]:
    """Every file to publish, in upload order, with its sha256 and size."""
    root = Path(corpus_root)
    if not (root / "index.json").is_file():
        raise FileNotFoundError(f"{root}: no index.json; build the corpus first")
    # Shards are hashed once already, in the index; a file whose size disagrees is hashed again.
    indexed = {s["path"]: s for s in json.loads((root / "index.json").read_text()).get("shards", [])}
    paths = [root / name for name in TOP_FILES if (root / name).is_file()]
    paths += [root / rel for rel in sorted(indexed)] + [root / rel for rel in card_figures(root)]
    if include_videos:
        paths.extend(_files_under(root, VIDEOS_DIR))
    items = []
    for path in paths:
        rel, size = path.relative_to(root).as_posix(), path.stat().st_size
        entry = indexed.get(rel, {})
        sha256 = entry["sha256"] if entry.get("bytes") == size and entry.get("sha256") else sha256_file(path)
        items.append(UploadItem(rel, path, sha256, size))
    return sorted(items, key=lambda i: _order(i.path_in_repo))


def redact(text: str, token: str | None) -> str:
    if token:
        text = text.replace(token, "***")
    return TOKEN_PATTERN.sub("hf_***", text)


def _resolve_token(token: str | None) -> str | None:
    if token:
        return token
    from huggingface_hub import get_token  # HF_TOKEN, then the token `hf auth login` stored

    return get_token()


def _remote_same(api, repo_id: str, items: list[UploadItem], revision: str) -> set[str]:
    """Paths whose remote content equals the local file."""
    same: set[str] = set()
    by_path = {i.path_in_repo: i for i in items}
    paths = list(by_path)
    for start in range(0, len(paths), PATHS_INFO_BATCH):
        batch = paths[start: start + PATHS_INFO_BATCH]
        for info in api.get_paths_info(repo_id, batch, revision=revision, repo_type=REPO_TYPE):
            item = by_path.get(info.path)
            if item is None or not hasattr(info, "blob_id"):
                continue  # a folder, or a path we did not ask about
            if info.lfs is not None:
                if info.lfs.sha256 == item.sha256:
                    same.add(item.path_in_repo)
            elif info.size == item.bytes and info.blob_id == git_blob_sha1(item.local_path):
                same.add(item.path_in_repo)
    return same


def _remote_stale(api, repo_id: str, items: list[UploadItem], revision: str) -> list[str]:
    """Files under data/ and figures/ on the Hub that this build does not have (an older build's)."""
    from huggingface_hub.errors import EntryNotFoundError

    planned = {i.path_in_repo for i in items}
    stale: list[str] = []
    for folder in TREES:
        try:
            entries = list(api.list_repo_tree(repo_id, path_in_repo=folder, recursive=True,
                                              revision=revision, repo_type=REPO_TYPE))
        except EntryNotFoundError:
            continue
        stale += [e.path for e in entries if hasattr(e, "blob_id") and e.path not in planned]
    return sorted(stale)


def _chunks(items: list[UploadItem], size: int) -> Iterator[list[UploadItem]]:
    for start in range(0, len(items), size):
        yield items[start: start + size]


def push_corpus(corpus_root: str | Path, repo_id: str, *, token: str | None = None, private: bool = True,
                revision: str = "main", dry_run: bool = False, endpoint: str | None = None,
                include_videos: bool = False, files_per_commit: int = FILES_PER_COMMIT, delete_stale: bool = True,
                on_commit: Callable[[int, list[str]], None] | None = None) -> PushReport:
    """Create the dataset repo if needed and upload what `plan_upload` lists and the Hub lacks.

    `token=None` uses huggingface_hub's own lookup (HF_TOKEN, then the stored login). A dry run
    sends no write request: it reads the repo's state when it can and lists what would be sent.
    `delete_stale` removes files under data/ and figures/ that this build lacks (shard names carry
    their content hash, so a rebuild leaves the old ones behind and a glob would read both), in
    the same last commit that swaps in the new index and card.
    Any failure is raised as `HubPushError` with tokens scrubbed and no chained exception.
    """
    if files_per_commit < 1:
        raise ValueError("files_per_commit must be at least 1")
    items = plan_upload(corpus_root, include_videos=include_videos)
    secret = _resolve_token(token)
    report = PushReport(dry_run=dry_run)
    try:
        _push(items, repo_id, report, secret=secret, private=private, revision=revision, endpoint=endpoint,
              files_per_commit=files_per_commit, delete_stale=delete_stale, on_commit=on_commit)
        return report
    except Exception as error:  # every Hub/HTTP failure
        done = f" ({len(report.uploaded)} files committed before it; re-run to resume)" if report.uploaded else ""
        failure = HubPushError(redact(f"push to {repo_id} failed{done}: {type(error).__name__}: {error}", secret))
    # Raised outside the except block so that no __context__ keeps the original exception, whose
    # request object carries the Authorization header.
    raise failure


def _push(items: list[UploadItem], repo_id: str, report: PushReport, *, secret: str | None, private: bool,
          revision: str, endpoint: str | None, files_per_commit: int, delete_stale: bool,
          on_commit: Callable[[int, list[str]], None] | None) -> None:
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    api = HfApi(endpoint=endpoint, token=secret)
    if not report.dry_run:
        api.create_repo(repo_id, repo_type=REPO_TYPE, private=private, exist_ok=True)
        if revision != "main":
            api.create_branch(repo_id, branch=revision, repo_type=REPO_TYPE, exist_ok=True)
    try:
        same = _remote_same(api, repo_id, items, revision)
        report.deleted = _remote_stale(api, repo_id, items, revision) if delete_stale else []
    except Exception as error:  # a dry run goes on without the remote state; a push stops
        if not report.dry_run:
            raise
        if not isinstance(error, (RepositoryNotFoundError, RevisionNotFoundError)):
            first = str(error).splitlines()[0] if str(error) else ""
            logger.warning("dry run: could not read %s (%s: %s); counting every file as new", repo_id,
                           type(error).__name__, redact(first, secret))
        same, report.remote_checked = set(), False
    todo = [i for i in items if i.path_in_repo not in same]
    report.skipped_same = [i.path_in_repo for i in items if i.path_in_repo in same]
    if report.dry_run:
        report.uploaded = [i.path_in_repo for i in todo]
        report.bytes = sum(i.bytes for i in todo)
        return
    chunks = list(_chunks(todo, files_per_commit)) or ([[]] if report.deleted else [])
    for number, chunk in enumerate(chunks, start=1):
        operations = [CommitOperationAdd(path_in_repo=i.path_in_repo, path_or_fileobj=str(i.local_path))
                      for i in chunk]
        if number == len(chunks):
            operations += [CommitOperationDelete(path_in_repo=p) for p in report.deleted]
        info = api.create_commit(repo_id, operations, repo_type=REPO_TYPE, revision=revision,
                                 commit_message=f"Upload corpus ({number}/{len(chunks)}): {len(chunk)} files")
        report.uploaded.extend(i.path_in_repo for i in chunk)
        report.bytes += sum(i.bytes for i in chunk)
        report.commits.append(info.oid)
        logger.info("commit %d/%d: %d files", number, len(chunks), len(chunk))
        if on_commit:
            on_commit(number, [i.path_in_repo for i in chunk])
