"""`python -m curation.viewer --corpus CORPUS --out DIR [--predictions FILE]`: write the corpus viewer page."""

from __future__ import annotations

import sys
from pathlib import Path

from curation.corpus.shards import CorpusError
from curation.viewer.page_data import (
    ViewerConfig,
    corpus_page_data,
    question_ids_of,
    read_predictions,
)
from curation.viewer.render import write_page
from schemas.cli import (
    ArgumentParser,
    UsageError,
    add_cli_flags,
    add_corpus_argument,
    corpus_of,
    run_cli,
)


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, argv, known=(CorpusError,))


def _main(argv: list[str]) -> int:
    parser = ArgumentParser(prog="python -m curation.viewer", description=__doc__.splitlines()[0])
    add_corpus_argument(parser)
    parser.add_argument("--out", type=Path, required=True, help="folder to write index.html into")
    parser.add_argument("--predictions", type=Path, default=None,
                        help="an `eval` prediction JSONL to lay against the references")
    parser.add_argument("--max-videos", type=int, default=ViewerConfig().max_videos)
    add_cli_flags(parser)
    args = parser.parse_args(argv)
    corpus = corpus_of(args, parser)
    if args.predictions is not None and not args.predictions.is_file():
        raise UsageError(f"no such prediction file: {args.predictions}", "give an `eval --out` JSONL")
    page = corpus_page_data(corpus, args.out, ViewerConfig(max_videos=args.max_videos))
    if args.predictions is not None:
        page["predictions"] = read_predictions(args.predictions, question_ids_of(page))
        counts = page["predictions"]["skip_counts"]
        if counts or page["predictions"]["unmatched_questions"]:
            print(f"predictions: skipped {counts or 'none'}; "
                  f"{len(page['predictions']['unmatched_questions'])} question id(s) not in this corpus",
                  file=sys.stderr)
    path = write_page(page, args.out)
    c = page["corpus"]
    listed = f" (list: first {c['videos_shown']} of {c['videos_total']} by id)" if c["videos_shown"] < c["videos_total"] else ""
    print(f"{path}: {c['videos']} videos, {c['dialogues']} dialogues, {c['quarantined']} quarantined items{listed}; "
          "open it in a browser")
    return 0

if __name__ == "__main__":
    sys.exit(main())
