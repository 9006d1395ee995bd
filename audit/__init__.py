"""Auditing a dataset before trusting it: wrong labels, copies, leaks across the split, unusable images.

At 5 to 50 photos a class, one wrong label or one photo filed under two
classes is 2 to 20% of a class, and a copy that lands in both the training
and the test split inflates every score a run reports.  The audit, in the
order it runs (``audit.run.audit``):

1. **Load** the dataset exactly as ``train.py`` splits it (same seed and
   shares), each image with its file.
2. **Out-of-sample probabilities** (``audit.probabilities``): K-fold, the
   toolkit's linear probe on backbone features; offline and without
   pretrained weights, a small zoo network trained on the other folds
   provides them.
3. **Likely mislabeled** (``audit.confident``): confident learning
   through cleanlab, ranked by the given label's out-of-sample probability,
   each with its suggested class.
4. **Copies** (``audit.duplicates``): exact (bytes, pixels), near
   (perceptual hashes through imagehash, ``imagesets.perceptual``, with
   thumbnails; one image's centre registered on another for cropped copies;
   backbone features with thumbnails), and groups found in more than one
   split: leaks.
5. **Unusable images** (``audit.quality``) and the class balance.
6. **What to leave out**, and the report (``audit.report``): a JSON that
   ``train.py --exclude`` reads, a page with each finding's images side by
   side, and a screen of summary with the next command.

The audit reads; it never changes, moves or deletes a file.  The cheap part
(exact copies, copies across the split, and near copies by perceptual hashes
for the split to keep together) runs in every folder scan
(``imagesets.copies``, ``imagesets.perceptual``).

    python train.py audit folder:photos --json audit.json
    python train.py --dataset folder:photos --exclude audit.json
"""

__all__ = ["audit"]


def __getattr__(name: str):
    # Imported on first use (PEP 562), so that ``train.py audit --help`` starts no TensorFlow.
    if name == "audit":
        from audit.run import audit

        return audit
    raise AttributeError(f"module 'audit' has no attribute {name!r}")
