"""Looking at training with the person who runs it.

Training a network is an empirical loop: train, look at the curves, decide
whether the model under- or over-fits, change one thing, train again.  This
package holds the tools that train and compare several runs:

* ``lr_finder``: the exponential learning-rate sweep (``train.py find-lr``)
  and a rate the next run can use.
* ``compare``: several models or option sets on the same data and seed, one
  table and one plot (``train.py compare``).
* ``ensemble``: several runs' exports averaged into one SavedModel
  (``train.py ensemble``).

Every single run already looks at itself: ``training.diagnose`` gives a
verdict on its learning curves and ``training.mistakes`` shows its most
confident mistakes; both sit below this package.
"""
