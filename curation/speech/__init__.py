"""Speech to segments for videos without source text: the audio track on the video's clock, VAD and
faster-whisper with word timestamps, sentences as `Segment`s, the transcript cache, and the rule that
routes a video to ASR or to captions (with its reason)."""
