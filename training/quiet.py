"""Start TensorFlow without its C++ start-up chatter on the terminal.

TensorFlow 2.21 prints oneDNN/CUDA notices through absl before its own log
level applies, so ``TF_CPP_MIN_LOG_LEVEL`` alone cannot hide them.  For the
command-line tools we silence file descriptor 2 while TensorFlow loads and
finds its devices; if that fails, whatever it printed is shown.
"""

from __future__ import annotations

import os
import sys
import tempfile


def import_tensorflow():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if os.environ.get("CNN_CLASSROOM_TF_LOGS"):  # for debugging start-up problems
        import tensorflow as tf

        return tf
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    return tf
