"""Looking at training with the person who runs it.

Training a network is an empirical loop: train, look at the curves, decide
whether the model under- or over-fits, change one thing, train again.  This
package does the looking:

* ``diagnose``: a verdict on a run's learning curves (under-fitting,
  over-fitting, "collect more data", diverging, good fit), the numbers behind
  it and the ``train.py`` flags that act on it.  Every run prints it and
  stores it in ``metrics.json``.
* ``lr_finder``: the exponential learning-rate sweep (``train.py find-lr``)
  and a rate the next run can use.
* ``mistakes``: the most confidently wrong test images and the most confused
  class pairs (``mistakes.png`` in every run directory).
* ``compare``: several models or option sets on the same data and seed, one
  table and one plot (``train.py compare``).
* ``ensemble``: several runs' exports averaged into one SavedModel
  (``train.py ensemble``).
"""

from insight.diagnose import diagnose

__all__ = ["diagnose"]
