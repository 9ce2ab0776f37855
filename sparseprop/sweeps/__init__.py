"""Many runs: sweep bookkeeping around Hydra's multirun, and collecting run folders into tables."""
