"""The corpus viewer: a static, offline HTML page over a built corpus, read through its
`index.json`, where each video plays with its scenes, segments, questions and reference answers
on a timeline, the quarantine can be browsed with its reasons, and `eval` predictions can be laid
against the references. `python -m curation.viewer CORPUS --out DIR`."""
