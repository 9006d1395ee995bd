import os

# Quiet TensorFlow's C++ start-up chatter in test output; errors still show.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")
# Quick mode (core/quick.py) is for the docs' commands in CI; a test that wants it sets it itself.
os.environ.pop("CNN_CLASSROOM_QUICK", None)


import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def image_cache(tmp_path_factory):
    """Folder sources cache their decoded images (imagesets.cache): in a temporary folder, not the user's
    cache; subprocesses inherit it through the environment."""
    from imagesets.cache import CACHE_ENV

    before = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(tmp_path_factory.mktemp("image-cache"))
    yield os.environ[CACHE_ENV]
    if before is None:
        os.environ.pop(CACHE_ENV, None)
    else:
        os.environ[CACHE_ENV] = before


# Seconds each test file took (summed from `pytest --durations=0`, AMD EPYC family 26 model 2), largest first.  The
# suite runs a file at a time on each of two workers (--dist loadfile), handed out in collection order
# (--no-loadscope-reorder:
# xdist's own order is by number of tests, which left the one-test files that train for a minute or two to the end,
# one worker finishing them while the other idled).  Longest first keeps both busy to the end.  Files not listed
# run after these, in their usual order; the numbers only need to be roughly right.
FILE_SECONDS = {
    "test_train.py": 200, "test_zoo.py": 197, "test_search.py": 174, "test_tutorials.py": 130,
    "test_server_http.py": 120, "test_lpft.py": 117, "test_tfserving_compat.py": 110, "test_faults.py": 102,
    "test_insight.py": 87, "test_reliability.py": 77, "test_transfer_cli.py": 69, "test_transfer.py": 68,
    "test_server_retrain.py": 52, "test_distribute.py": 41, "test_formats.py": 30, "test_server_page.py": 26,
    "test_augment_training.py": 25, "test_budget.py": 24, "test_zoo_resnet.py": 23, "test_batchnorm.py": 21,
    "test_audit.py": 20, "test_docs.py": 14, "test_augment.py": 14, "test_explain.py": 13,
}


def pytest_collection_modifyitems(config, items):
    def seconds(item):
        return FILE_SECONDS.get(os.path.basename(str(item.fspath)), 0)

    items.sort(key=seconds, reverse=True)  # stable: a file's tests keep their order
