"""The benchmark of issue 8's figures (`python -m bench`, `scripts/bench`): scenarios driven
against the platform as the bench tunes it and as scripts/run starts it, each figure beside a
bare ceiling measured in the same run, and what each run made checked as it goes."""
