import os

os.environ.setdefault("MPLBACKEND", "Agg")

# Property tests draw their examples from a seed derived from each test's name, so a CI run is reproducible and a
# failure found once is found again; HYPOTHESIS_PROFILE=explore draws fresh random examples (as hypothesis does by
# default) to search for new failures locally.
from hypothesis import settings  # noqa: E402

settings.register_profile("gradlab", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "gradlab"))
