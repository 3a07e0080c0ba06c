"""Run build-corpus with an output disk that fills up after N result files (a fault-test shim).

    python -m tests.full_disk N --config CONFIG

The refusal is injected at the result writer, the first write of every video's output, as the
`OSError(ENOSPC)` a full disk raises there.
"""

from __future__ import annotations

import errno
import sys
import threading

import flows.build_corpus as build
from curation.corpus import results
from flows.stopping import exit_process


def main() -> int:
    allowed = int(sys.argv[1])
    real = results.write_result
    lock = threading.Lock()
    written = [0]

    def write_result(results_dir, result):
        with lock:
            if written[0] >= allowed:
                raise OSError(errno.ENOSPC, "No space left on device", str(results_dir))
            written[0] += 1
        return real(results_dir, result)

    build.write_result = write_result
    return build.main(sys.argv[2:])


if __name__ == "__main__":
    exit_process(main())  # as `python -m flows.build_corpus` ends
