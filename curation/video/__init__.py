"""Video stages: acquire (local, HTTP, fsspec, YouTube), probe and admit, scene cuts, frame timeline.
Owns the one frame decoder (`curation.video.frames.decode_frames`) that captions and the trainer use."""
