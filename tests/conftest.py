import os
import pathlib

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SUBSET = SHARED / "data" / "speech_commands_subset"
RESAMPLE_REFERENCE = SHARED / "testdata" / "resample_reference.npz"


@pytest.fixture(scope="session")
def subset_root():
    if not SUBSET.is_dir():
        pytest.skip(f"real Speech Commands subset not found at {SUBSET}")
    return SUBSET
